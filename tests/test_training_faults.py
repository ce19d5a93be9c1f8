"""Training under the faults of a cluster (issue 26, items 5-8): torchrun restarts, SIGTERM and a peer's
death, saves that fail or take long, and resumes with other settings.

The multi-process runs start train.py with torchrun (two gloo processes) on four tiny static images
at 32x32; a wrapper script (slow_saves) makes the first save slow without touching train.py.
"""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model.checkpoint import atomic_save, remove_stale_temp_files
from model.model import QDMNModel, read_checkpoint
from model.network import QDMN
from model.resume import resumed_settings, trained_with
from util.errors import UserInputError
from util.hyper_para import parse_args

from test_training import REPO, TRAIN, free_port, reported, write_static
from test_training_checkpoints import run_train

WAIT = 240   # seconds a multi-process run may take on a loaded 2-core machine


@pytest.fixture
def stage0(tmp_path):
    write_static(tmp_path / 'static' / 'one', nested=False, count=4)
    return ['--stage', 0, '--no_imagenet', '--static_root', tmp_path / 'static', '--static_sets', 'one',
            '-b', 1, '--size', 32, '--num_workers', 0, '--device', 'cpu', '--log_every', 1,
            '--image_every', 1000, '--saves_root', tmp_path / 'saves']


def start_torchrun(args, log_path, cwd, restarts=0, script=TRAIN):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}
    for name in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'):
        env.pop(name, None)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--max_restarts={restarts}',
           f'--master_port={free_port()}', str(script)] + [str(a) for a in args]
    log = open(log_path, 'w')
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_until(condition, what, timeout=WAIT):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f'timed out waiting for {what}'
        time.sleep(0.1)


def worker_pid(agent, rank):
    """The pid of torchrun's worker of `rank` (a child of the agent, RANK in its environment)."""
    for child in Path(f'/proc/{agent.pid}/task/{agent.pid}/children').read_text().split():
        environ = Path(f'/proc/{child}/environ').read_bytes().split(b'\0')
        if f'RANK={rank}'.encode() in environ:
            return int(child)
    raise AssertionError(f'no worker of rank {rank}')


def finish(agent, log_path):
    try:
        agent.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        agent.kill()
        raise
    return agent.returncode, Path(log_path).read_text()


def starts(folder):
    return [json.loads(line) for line in (folder / 'starts.jsonl').read_text().splitlines()]


# --- 5. a torchrun restart resumes by itself ---------------------------------------------------

def test_torchrun_restart_resumes_from_the_latest_checkpoint(stage0, tmp_path, monkeypatch, capsys):
    """torchrun --max_restarts=1 on a fresh run; rank 1 is killed after the first resumable checkpoint
    (every 2 iterations, no network snapshot before the end): rank 0 saves where it stopped, and
    the restarted workers continue from that checkpoint without being told to."""
    folder = tmp_path / 'saves' / 'el'
    log_path = tmp_path / 'log.txt'
    agent = start_torchrun(['--id', 'el', '-i', 4, '--checkpoint_every', 2, '--save_every', 100] + stage0,
                           log_path, tmp_path, restarts=1)
    wait_until((folder / 'el_checkpoint.pth').is_file, 'the first checkpoint')
    os.kill(worker_pid(agent, 1), signal.SIGKILL)
    code, log = finish(agent, log_path)
    assert code == 0, log[-3000:]

    stopped = [line for line in log.splitlines() if line.startswith('training stopped at iteration')]
    assert len(stopped) == 1, log[-3000:]   # rank 0, on its peer's death
    at = int(stopped[0].split()[4])
    assert 'saved' in stopped[0] and str(folder / f'el_{at}.pth') in stopped[0]   # the checkpoint is saved first
    assert f'resumed {folder / "el_checkpoint.pth"} at iteration {at}' in log
    assert [it for it, _ in reported(log)][-1] == 4
    assert read_checkpoint(str(folder / 'el_checkpoint.pth'), stage=0)['it'] == 4
    # the resumable checkpoint every 2 iterations; the network only when stopped and at the end
    assert sorted(p.name for p in folder.glob('*.pth')) == sorted({'el_checkpoint.pth', f'el_{at}.pth', 'el_4.pth'})
    first, second = starts(folder)
    assert (first['iteration'], first['torchrun_restart'], first['from']) == (0, 0, None)
    assert (second['iteration'], second['torchrun_restart']) == (at, 1)
    assert second['data_seed'] != first['data_seed']

    # Another job with the same --id refuses in one line, before it writes anything.
    code, out = run_train(['--id', 'el', '-i', 5] + stage0, monkeypatch, capsys)
    assert code == 2 and out.strip().splitlines() == [
        f'error: {folder}: a run with --id el exists; pick another --id, or continue it with --resume']
    assert len(starts(folder)) == 2


# --- 6. SIGTERM (preemption) saves the resumable checkpoint -----------------------------------

def test_sigterm_to_torchrun_saves_the_resumable_checkpoint(stage0, tmp_path):
    """As a cluster preempting the job: SIGTERM to torchrun, which passes it to its workers. They agree
    on the iteration to stop at, and rank 0 saves the checkpoint (none was due for 1000 iterations)."""
    folder = tmp_path / 'saves' / 'pre'
    log_path = tmp_path / 'log.txt'
    agent = start_torchrun(['--id', 'pre', '-i', 1000, '--checkpoint_every', 1000] + stage0, log_path, tmp_path)
    wait_until(lambda: 'it 2/1000' in log_path.read_text(), 'iteration 2')
    agent.send_signal(signal.SIGTERM)
    code, log = finish(agent, log_path)
    assert code != 0
    stopped = [line for line in log.splitlines() if line.startswith('training stopped by SIGTERM')]
    assert len(stopped) == 1, log[-3000:]
    at = int(stopped[0].split()[6].rstrip(':'))
    assert at >= 2 and f'saved {folder / "pre_checkpoint.pth"} at iteration {at}' in log
    assert read_checkpoint(str(folder / 'pre_checkpoint.pth'), stage=0)['it'] == at
    assert not list(folder.glob('*.tmp*'))


# --- 7. durable saves ---------------------------------------------------------------------------

def test_save_failing_at_close_keeps_the_previous_checkpoint(stage0, tmp_path, monkeypatch, capsys):
    """The second checkpoint's data is refused at fsync (a quota, NFS): one line, the checkpoint of
    iteration 1 stays in place and loads. Before that, the temporary files of an earlier killed save
    (a dead pid) are removed at the start, a live process's are not."""
    folder = tmp_path / 'saves' / 'dur'
    folder.mkdir(parents=True)
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True,
                          text=True).stdout.strip()
    (folder / f'dur_checkpoint.pth.tmp{dead}').write_bytes(b'half a checkpoint')
    (folder / f'dur_checkpoint.pth.tmp{os.getpid()}x').write_bytes(b'')           # not a temporary file
    (folder / f'dur_9.pth.tmp{os.getppid()}').write_bytes(b'being written')       # a live process's

    real_fsync, checkpoints = os.fsync, []

    def fsync(fd):
        if os.readlink(f'/proc/self/fd/{fd}').endswith(f'dur_checkpoint.pth.tmp{os.getpid()}'):
            checkpoints.append(fd)
            if len(checkpoints) == 2:
                raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
        real_fsync(fd)
    monkeypatch.setattr(os, 'fsync', fsync)
    code, out = run_train(['--id', 'dur', '--resume', '-i', 4, '--checkpoint_every', 1] + stage0,
                          monkeypatch, capsys)
    assert code == 2
    assert f'removed what killed saves left in {folder}: dur_checkpoint.pth.tmp{dead}' in out
    errors = [line for line in out.splitlines() if line.startswith('error')]
    assert errors == [f'error: {folder / "dur_checkpoint.pth"}: cannot save (Disk quota exceeded); the previous '
                      'file, if any, is kept']
    assert read_checkpoint(str(folder / 'dur_checkpoint.pth'), stage=0)['it'] == 1
    assert sorted(p.name for p in folder.iterdir() if '.tmp' in p.name) == [
        f'dur_9.pth.tmp{os.getppid()}', f'dur_checkpoint.pth.tmp{os.getpid()}x']


def test_atomic_save_error_at_close_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / 'x.pth'
    atomic_save({'a': torch.ones(3)}, path)

    def failing_fsync(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    monkeypatch.setattr(os, 'fsync', failing_fsync)
    with pytest.raises(UserInputError, match=r'x.pth: cannot save \(Input/output error\)'):
        atomic_save({'a': torch.zeros(3)}, path)
    assert torch.equal(torch.load(path)['a'], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ['x.pth']
    assert remove_stale_temp_files(str(tmp_path)) == []


SLOW_SAVES = '''
import runpy, sys, time
sys.path.insert(0, {repo!r})
import model.model
save, saves = model.model.atomic_save, []
def slow_first_save(obj, path):
    saves.append(path)
    if len(saves) == 1:
        time.sleep({seconds})
    save(obj, path)
model.model.atomic_save = slow_first_save
sys.argv[0] = {train!r}
runpy.run_path({train!r}, run_name='__main__')
'''


def test_slow_save_outlasts_the_collective_timeout(stage0, tmp_path):
    """Rank 0's first save takes 12 s while collectives time out after 4 s: the other process waits
    for it in the save barrier (--save_timeout), not in the next iteration's all-reduce."""
    script = tmp_path / 'slow_saves.py'
    script.write_text(SLOW_SAVES.format(repo=str(REPO), train=TRAIN, seconds=12))
    log_path = tmp_path / 'log.txt'
    agent = start_torchrun(['--id', 'slow', '-i', 2, '--checkpoint_every', 1, '--dist_timeout', 4] + stage0,
                           log_path, tmp_path, script=script)
    code, log = finish(agent, log_path)
    assert code == 0, log[-3000:]
    assert [it for it, _ in reported(log)] == [1, 2]
    assert read_checkpoint(str(tmp_path / 'saves' / 'slow' / 'slow_checkpoint.pth'), stage=0)['it'] == 2


# --- 8. resume honesty ----------------------------------------------------------------------------

def tiny_checkpoint(lr=1e-4, steps=(3,), gamma=0.5, run=None):
    """The optimiser and scheduler parts of a checkpoint at iteration 4 (model/resume.py reads only these)."""
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([weight], lr=lr, weight_decay=1e-7)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(steps), gamma)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    return {'it': 4, 'optimizer': optimizer.state_dict(), 'scheduler': scheduler.state_dict(),
            'path': 'c.pth', **({'run': run} if run else {})}


def test_resume_takes_the_checkpoints_settings_unless_given():
    checkpoint = tiny_checkpoint(run={'batch_size': 4, 'world_size': 2})
    assert trained_with(checkpoint) == {'lr': 1e-4, 'steps': [3], 'gamma': 0.5, 'weight_decay': 1e-7,
                                        'batch_size': 4, 'world_size': 2}
    para = parse_args(['--id', 'x', '--stage', '2'])   # nothing given: all of it from the checkpoint
    assert resumed_settings(para, checkpoint, world_size=2) == (
        {'lr': 1e-4, 'steps': [3], 'gamma': 0.5, 'weight_decay': 1e-7, 'batch_size': 4}, False, [])

    para = parse_args(['--id', 'x', '--stage', '2', '--lr', '2e-4', '--steps', '6', '-b', '2'])
    taken, changed, lines = resumed_settings(para, checkpoint, world_size=4)   # 2 x 4 = 4 x 2
    assert taken == {'gamma': 0.5, 'weight_decay': 1e-7} and changed
    assert lines == ["resumed with --lr 0.0002 (the checkpoint's 0.0001), --steps 6 (the checkpoint's 3), "
                     "--batch_size 2 (the checkpoint's 4): given now, honoured"]

    # honoured: the optimiser continues at iteration 4 as if the run had used --lr 2e-4 --steps 6
    vars(para).update(taken)
    model = QDMNModel(QDMN(), para, torch.device('cpu'))
    model.follow_schedule(4)
    assert [g['lr'] for g in model.optimizer.param_groups] == [2e-4]
    for _ in range(2):   # iterations 5 and 6: the drop at 6
        model.optimizer.step()
        model.scheduler.step()
    assert model.scheduler.get_last_lr() == [pytest.approx(1e-4)]


def test_resume_on_another_world_size_refuses_a_new_effective_batch():
    checkpoint = tiny_checkpoint(run={'batch_size': 4, 'world_size': 2})
    para = parse_args(['--id', 'x', '--stage', '2'])
    with pytest.raises(UserInputError) as error:
        resumed_settings(para, checkpoint, world_size=4)
    assert str(error.value) == ("c.pth: resuming with an effective batch of 16 (4 per process x 4) instead of the "
                                "checkpoint's 8 (4 x 2): --batch_size 2 keeps it, --allow_batch_change continues "
                                "with the new one")
    para = parse_args(['--id', 'x', '--stage', '2', '--allow_batch_change'])
    _, _, lines = resumed_settings(para, checkpoint, world_size=4)
    assert lines == ["resumed with an effective batch of 16 (4 per process x 4) instead of the checkpoint's 8 "
                     "(4 x 2) (--allow_batch_change)"]


def test_resumed_run_records_what_it_used(stage0, tmp_path, monkeypatch, capsys):
    """A run at --lr 1e-4 resumed without --lr keeps 1e-4 (config.json says so) and records each start
    with its own data seed."""
    folder = tmp_path / 'saves' / 'hon'
    code, out = run_train(['--id', 'hon', '-i', 1, '--lr', 1e-4] + stage0, monkeypatch, capsys)
    assert code == 0, out
    code, out = run_train(['--id', 'hon', '-i', 2, '--resume'] + stage0, monkeypatch, capsys)
    assert code == 0, out
    assert f'resumed {folder / "hon_checkpoint.pth"} at iteration 1' in out
    assert 'random weights' not in out
    assert json.loads((folder / 'config.json').read_text())['lr'] == 1e-4
    final = read_checkpoint(str(folder / 'hon_checkpoint.pth'), stage=0)
    assert final['optimizer']['param_groups'][0]['lr'] == 1e-4
    assert final['run'] == {'batch_size': 1, 'world_size': 1}
    first, second = starts(folder)
    assert (first['lr'], second['lr'], second['iteration'], second['effective_batch']) == (1e-4, 1e-4, 1, 1)
    assert first['data_seed'] != second['data_seed']


def test_resumed_epoch_continues_the_same_sample_order(stage0):
    from datasets.training_data import TrainingData
    para = parse_args([str(a) for a in ['--id', 'x'] + stage0])
    data = TrainingData(para, rank=0, world_size=1)
    whole = list(data.epoch(3)[0].sampler)
    resumed = TrainingData(para, rank=0, world_size=1, data_seed=para.seed + 1)
    assert list(resumed.epoch(3, first_batch=1)[0].sampler) == whole[1:]
    assert len(resumed.epoch(3, first_batch=1)[0]) == len(whole) - 1
