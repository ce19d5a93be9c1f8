"""The settings that change the masks, recorded with an output, so that a re-run into the same output
resumes (or says "complete") only when its settings are the same.

Recorded: the checkpoint's identity, the processing size, the engine flags and the precision.
A record is written with util.output.atomic_file: it is complete or absent.
"""
import hashlib
import json
import os

from util.errors import UserInputError
from util.output import atomic_file

RECORD = 'qdmn_settings.json'
SAMPLE = 2**20   # bytes hashed at each end of a checkpoint


def checkpoint_identity(path):
    """'synthetic', or the file's name with a fingerprint of its size and first and last MiB.

    The ends of a checkpoint hold the first and last tensors, which differ between any two
    trainings or iterations; hashing them keeps the check instant for a 400 MB file, and a copy
    of a checkpoint under another name or folder has the same fingerprint.
    """
    if not os.path.isfile(path):
        return os.path.basename(path)   # 'synthetic' (util.download.SYNTHETIC_MODEL)
    size = os.path.getsize(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, 'rb') as f:
        digest.update(f.read(SAMPLE))
        f.seek(max(size - SAMPLE, 0))
        digest.update(f.read(SAMPLE))
    return f'{os.path.basename(path)} ({digest.hexdigest()[:12]})'


def mask_settings(checkpoint, precision, engine_args, size=None):
    """The record of a run: checkpoint identity, precision ('fp32', 'fp16', 'bf16'), the engine's keyword
    arguments (top_k, mem_freq, ...) and the processing size (None: the dataset's own)."""
    settings = {'checkpoint': checkpoint_identity(checkpoint), 'precision': precision, 'size': size}
    settings.update(engine_args)
    return settings


def recorded_settings(folder):
    """The record in `folder`, None when there is none."""
    path = os.path.join(folder, RECORD)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict):
        raise UserInputError(f'{path}: unreadable settings record (delete it, or use another --output)')
    return record


def differences(old, new):
    """'name old -> new' for every setting that differs, in a stable order."""
    return [f'{k} {old.get(k)} -> {new.get(k)}' for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def check_same_settings(folder, settings, results_exist, remedy):
    """Raises UserInputError when `folder` holds results made with other settings than `settings`.

    results_exist: whether `folder` holds results that would be kept (complete videos); results
    without a record are refused too, since nothing says how they were made. remedy: what to do
    instead, e.g. 'use --overwrite or another --output'.
    """
    old = recorded_settings(folder)
    if old is None:
        if results_exist:
            raise UserInputError(f'{folder}: holds results without a record of their settings ({RECORD}); '
                                 f'{remedy}')
        return
    changed = differences(old, settings)
    if changed:
        raise UserInputError(f'{folder}: holds results made with other settings ({"; ".join(changed)}); {remedy}')


def write_settings(folder, settings):
    """Records `settings` in `folder` (created if needed)."""
    os.makedirs(folder, exist_ok=True)
    with atomic_file(os.path.join(folder, RECORD)) as tmp:
        with open(tmp, 'w') as f:
            json.dump(settings, f, indent=1, sort_keys=True)
            f.write('\n')


def resume_or_refuse(folder, settings, complete, overwrite):
    """For an output that one run makes whole (segment_video.py): True when `folder` is already complete
    with these settings (nothing to do). Refuses complete results made otherwise unless `overwrite`,
    which forgets their record: a run stopped before its end then leaves no record claiming them."""
    if overwrite:
        forget_settings(folder)
        return False
    if complete:
        check_same_settings(folder, settings, results_exist=True, remedy='use --overwrite or another --output')
        return True
    return False


def forget_if_alone(folder, remove_folder):
    """After a failed run: removes the record when it is all `folder` holds (no result was made), and the
    folder too when `remove_folder` (the run created it), so that nothing is left behind."""
    if os.path.isdir(folder) and os.listdir(folder) == [RECORD]:
        os.remove(os.path.join(folder, RECORD))
        if remove_folder:
            os.rmdir(folder)


def forget_settings(folder):
    """Removes the record (an --overwrite run, before it replaces the results)."""
    path = os.path.join(folder, RECORD)
    if os.path.exists(path):
        os.remove(path)
