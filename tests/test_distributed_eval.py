"""Evaluation on several processes (torchrun, gloo on CPU): the split, the same outputs as one process,
and a failure on one process ending all of them."""
import os
import random
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from test_eval_davis_cli import REPO, VIDEOS, make_davis
from util.distributed import balanced_split

FRAMES = 3    # the fewest --evaluate scores (the first and last frames are not)
TIMEOUT = 240  # s: a hang fails the test instead of blocking the suite


def test_balanced_split_longest_first_to_the_least_loaded():
    # 50 -> 0, 40 -> 1, 30 -> 1 (40 < 50), 20 -> 0 (50 < 70), 10 -> 0 (70 = 70: the lower rank)
    assert balanced_split([10, 50, 30, 20, 40], 2) == [[0, 1, 3], [2, 4]]
    assert balanced_split([3, 3], 2) == [[0], [1]]
    assert balanced_split([7, 1, 4], 1) == [[0, 1, 2]]
    assert balanced_split([5], 3) == [[0], [], []]


def test_balanced_split_covers_every_video_once_and_balances():
    rng = random.Random(14)
    for _ in range(200):
        lengths = [rng.randint(1, 300) for _ in range(rng.randint(0, 40))]
        parts = rng.randint(1, 8)
        shares = balanced_split(lengths, parts)
        assert len(shares) == parts
        assert sorted(i for share in shares for i in share) == list(range(len(lengths)))
        loads = [sum(lengths[i] for i in share) for share in shares]
        # greedy longest-first: the busiest process ends at most one video after the idlest
        assert max(loads) - min(loads) <= max(lengths, default=0)
        assert shares == balanced_split(list(lengths), parts)   # the same split on every process


def small_davis(shared_dir, root):
    """The two sample videos, FRAMES frames each at a quarter of the resolution (214x120) to keep the runs short."""
    make_davis(shared_dir, root, 2016, frames=FRAMES)
    for path in root.glob('*/480p/*/*'):
        img = Image.open(path)
        img.resize((214, 120), Image.BILINEAR if path.suffix == '.jpg' else Image.NEAREST).save(path)
    return root


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run(cmd, threads=None):
    """Runs cmd in its own session; returns (exit code, stdout + stderr). On a timeout, kills the
    whole session (torchrun and its workers) and fails."""
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    for name in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT',
                 'OMP_NUM_THREADS'):
        env.pop(name, None)
    if threads:
        env['OMP_NUM_THREADS'] = str(threads)
    proc = subprocess.Popen([str(c) for c in cmd], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return finish(proc)


def finish(proc, timeout=TIMEOUT):
    """(exit code, output) of a started process; a hang kills its session and fails."""
    try:
        log, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f'no exit within {timeout} s (a hang?):\n{log[-3000:]}')
    return proc.returncode, log


def eval_2016(root, out, checkpoint, processes=1, extra=()):
    launcher = [sys.executable]
    if processes > 1:
        launcher += ['-m', 'torch.distributed.run', f'--nproc_per_node={processes}', f'--master_port={free_port()}']
    # one process: one thread, like each of two processes on 2 cores. The CPU kernels round
    # differently with another thread count (1 pixel in 400k on 2 of 16 frames of the sample)
    return run(launcher + ['eval_davis_2016.py', '--model', checkpoint, '--davis', root, '--output', out,
                           '--device', 'cpu', *extra], threads=1 if processes == 1 else None)


@pytest.mark.slow
def test_two_processes_write_what_one_writes(shared_dir, synthetic_checkpoint, tmp_path):
    root = small_davis(shared_dir, tmp_path / 'DAVIS')
    one, two = tmp_path / 'one', tmp_path / 'two'
    code, log = eval_2016(root, one, synthetic_checkpoint, extra=['--evaluate'])
    assert code == 0, log[-3000:]
    code, log = eval_2016(root, two, synthetic_checkpoint, processes=2, extra=['--evaluate'])
    assert code == 0, log[-3000:]
    # equal lengths: blackswan to rank 0, car-shadow to rank 1; only rank 0 sums up and evaluates
    assert f'[rank 0] blackswan: {FRAMES} frames' in log and f'[rank 1] car-shadow: {FRAMES} frames' in log
    assert f'rank 0: 1 videos, {FRAMES} frames' in log and f'rank 1: 1 videos, {FRAMES} frames' in log
    assert f'2 videos, {2 * FRAMES} frames in' in log and 'on 2 processes' in log
    assert log.count('Global results') == 1
    for video in VIDEOS:
        names = sorted(p.name for p in (one / video).iterdir())
        assert names == sorted(p.name for p in (two / video).iterdir()) and len(names) == FRAMES
        for name in names:
            assert (one / video / name).read_bytes() == (two / video / name).read_bytes(), f'{video}/{name}'
    for csv in ('global_results-2016-val.csv', 'per-sequence_results-2016-val.csv'):
        assert (one / csv).read_text() == (two / csv).read_text()

    # resume: the complete video is skipped, the other one is redone by rank 0 alone
    first = (two / 'car-shadow' / '00001.png').read_bytes()
    for png in (two / 'car-shadow').iterdir():
        png.unlink()
    code, log = eval_2016(root, two, synthetic_checkpoint, processes=2)
    assert code == 0, log[-3000:]
    assert log.count('1 of 2 videos already complete') == 1 and '[rank 0] car-shadow' in log
    assert 'rank 1: 0 videos' in log and (two / 'car-shadow' / '00001.png').read_bytes() == first


def empty_first_mask(root):
    Image.fromarray(np.zeros((120, 214), np.uint8)).save(root / 'Annotations' / '480p' / 'car-shadow' / '00000.png')


def unreadable_second_frame(root):
    (root / 'JPEGImages' / '480p' / 'car-shadow' / '00001.jpg').write_bytes(b'\xff\xd8 truncated jpeg')


@pytest.mark.parametrize('corrupt, failed_rank, message', [
    # found by rank 0's up-front check: the other process waits for it and must not hang
    (empty_first_mask, 0, 'annotation contains no object'),
    # found by rank 1 while segmenting car-shadow: rank 0 stops too (test_eval_faults.py: after blackswan)
    (unreadable_second_frame, 1, 'car-shadow: frame 1: '),
], ids=['up-front check', 'while segmenting'])
def test_a_failure_on_one_process_ends_both(shared_dir, synthetic_checkpoint, tmp_path, corrupt, failed_rank,
                                            message):
    root = small_davis(shared_dir, tmp_path / 'DAVIS')
    corrupt(root)
    out = tmp_path / 'out'
    code, log = eval_2016(root, out, synthetic_checkpoint, processes=2)
    assert code != 0
    errors = [line for line in log.splitlines() if line.startswith('error: ')]
    assert len(errors) == 2 and all(message in line for line in errors), log[-3000:]
    assert sum(line.startswith(f'error: stopped because rank {failed_rank} failed: ') for line in errors) == 1
    assert not (out / 'car-shadow').exists() and not list(out.glob('.*'))
