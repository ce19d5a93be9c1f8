"""Resuming a training run honestly: which checkpoint it continues, and its settings against the checkpoint's.

A run folder belongs to one job: a new job refuses an existing one unless --resume (or --load_model)
says it continues it; a torchrun restart of the job that claimed it continues it by itself. A setting
not given on the command line is the checkpoint's; one given that differs is honoured and named in a
line; another effective batch (batch per process x processes) is refused unless --allow_batch_change.
Every start of a run appends what it really used to <run>/starts.jsonl.
"""
import datetime
import json
import os
from collections import Counter

from util.errors import UserInputError

SCHEDULE = ('lr', 'steps', 'gamma', 'weight_decay')
STARTS = 'starts.jsonl'


def checkpoint_to_resume(para, restarted):
    """The checkpoint this run starts from (None: a fresh start). Decided by rank 0 before any process writes.

    restarted: an earlier attempt of this same job (a torchrun restart) claimed the run folder.
    """
    if para.no_output:
        return para.load_model
    if os.path.exists(para.run_dir) and not (restarted or para.resume or para.load_model):
        raise UserInputError(f'{para.run_dir}: a run with --id {para.id} exists; pick another --id, or continue it '
                             'with --resume')
    latest = os.path.join(para.run_dir, f'{para.id}_checkpoint.pth')
    if (restarted or para.resume) and os.path.isfile(latest):
        return latest
    return para.load_model   # killed before its first checkpoint: from the start again


def trained_with(checkpoint):
    """The lr schedule a checkpoint was trained with (from its optimiser and scheduler, ours and the published
    ones) and, in ours, its batch per process and number of processes."""
    scheduler, group = checkpoint['scheduler'], checkpoint['optimizer']['param_groups'][0]
    settings = {'lr': scheduler['base_lrs'][0], 'steps': sorted(Counter(scheduler['milestones']).elements()),
                'gamma': scheduler['gamma'], 'weight_decay': group['weight_decay']}
    settings.update(checkpoint.get('run', {}))
    return settings


def resumed_settings(para, checkpoint, world_size):
    """Settles a resumed run's settings: returns ({setting: the checkpoint's value} for those not given now,
    whether a given lr schedule differs from the checkpoint's, lines to print)."""
    before = trained_with(checkpoint)
    taken, changed = {}, []
    for key in (*SCHEDULE, 'batch_size'):
        if key not in before:   # the published checkpoints do not record their batch
            continue
        if key not in para.given:
            taken[key] = before[key]
        elif getattr(para, key) != before[key]:
            changed.append(f'--{key} {show(getattr(para, key))} (the checkpoint\'s {show(before[key])})')
    lines = [f'resumed with ' + ', '.join(changed) + ': given now, honoured'] if changed else []
    if 'world_size' in before:
        batch = taken.get('batch_size', para.batch_size)
        old, new = before['batch_size'] * before['world_size'], batch * world_size
        if old != new:
            text = (f'an effective batch of {new} ({batch} per process x {world_size}) instead of the checkpoint\'s '
                    f'{old} ({before["batch_size"]} x {before["world_size"]})')
            if not para.allow_batch_change:
                keep = f'--batch_size {old // world_size} keeps it, ' if old % world_size == 0 else ''
                raise UserInputError(f'{checkpoint["path"]}: resuming with {text}: {keep}--allow_batch_change '
                                     'continues with the new one')
            lines.append(f'resumed with {text} (--allow_batch_change)')
    schedule_changed = any(key in para.given and getattr(para, key) != before[key] for key in SCHEDULE)
    return taken, schedule_changed, lines


def show(value):
    return ','.join(map(str, value)) if isinstance(value, list) else f'{value:g}' if isinstance(value, float) else value


def data_seed(seed, it):
    """Seed of the augmentation streams of a run (re)started at iteration `it`: a resumed run draws new
    augmentations instead of replaying those of its start."""
    return seed + 7919 * it


def append_start_record(para, it, world_size, checkpoint_path, seed, notes):
    """One line of <run>/starts.jsonl: what this start of the run really uses."""
    record = {'time': datetime.datetime.now().astimezone().isoformat(timespec='seconds'), 'iteration': it,
              'from': checkpoint_path, 'world_size': world_size, 'batch_size': para.batch_size,
              'effective_batch': para.batch_size * world_size, 'iterations': para.iterations,
              **{key: getattr(para, key) for key in SCHEDULE}, 'data_seed': seed,
              'torchrun_restart': int(os.environ.get('TORCHELASTIC_RESTART_COUNT', 0)), 'notes': notes}
    with open(os.path.join(para.run_dir, STARTS), 'a') as f:
        f.write(json.dumps(record) + '\n')
