"""Evaluation faults (docs/faults.md): two jobs on one output, a bad frame mid-video, a stopped or killed
process, SIGTERM, the memory log at a kill; with 2 CPU processes where a process group is involved."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from PIL import Image

import eval_davis_2016
import pipeline.video
from test_distributed_eval import FRAMES, REPO, eval_2016, finish, free_port, run, small_davis
from test_eval_davis_cli import VIDEOS
from test_eval_davis_cli import run_cli as run_eval_cli
from test_memory_log import built_once, small_davis as small_davis_tree  # noqa: F401
from util.errors import UserInputError
from util.output import LOCK, atomic_folder, partial_folder

PEER_TIMEOUT = 3   # s: QDMN_PEER_TIMEOUT of the tests


def eval_cmd(root, out, checkpoint, *extra):
    return [sys.executable, 'eval_davis_2016.py', '--model', checkpoint, '--davis', root, '--output', out,
            '--device', 'cpu', *extra]


def clean_env(**extra):
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    for name in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        env.pop(name, None)
    return {**env, **extra}


def start(cmd, env):
    return subprocess.Popen([str(c) for c in cmd], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for(condition, what, seconds=120):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f'{what}: not within {seconds} s'
        time.sleep(0.02)


def errors(log):
    return [line for line in log.splitlines() if line.startswith('error: ')]


def shrink(*folders):
    """The images of `folders` at a quarter of the sample's resolution, as small_davis makes them."""
    for path in (p for folder in folders for p in folder.iterdir()):
        with Image.open(path) as img:
            small = img.resize((214, 120), Image.BILINEAR if path.suffix == '.jpg' else Image.NEAREST)
        small.save(path)


def full_size_davis(shared_dir, root, small=()):
    """The sample videos (FRAMES frames) at 480p, seconds per frame on CPU, except those in `small` (fast)."""
    small_davis(shared_dir, root)
    sample = shared_dir / 'data' / 'DAVIS-2016-sample'
    for video in set(VIDEOS) - set(small):
        for kind in ('JPEGImages', 'Annotations'):
            for path in (root / kind / '480p' / video).iterdir():
                shutil.copy(sample / kind / '480p' / video / path.name, path)
    return root


# 1. two jobs on one output

def test_a_second_job_on_an_output_in_use_refuses(shared_dir, synthetic_checkpoint, tmp_path):
    root, out = small_davis(shared_dir, tmp_path / 'DAVIS'), tmp_path / 'out'
    first = start(eval_cmd(root, out, synthetic_checkpoint), clean_env())
    try:
        wait_for(lambda: (out / LOCK).is_file() and (out / LOCK).read_text(), 'the first job\'s lock')
        os.kill(first.pid, signal.SIGSTOP)   # the first job is alive, somewhere in its run
        code, log = run(eval_cmd(root, out, synthetic_checkpoint), threads=1)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert code == 2 and len(errors(log)) == 1, log[-3000:]
    assert errors(log)[0].startswith(f'error: {out}: in use by another job (pid {first.pid} on {socket.gethostname()}, '
                                     'since ')
    code, log = finish(first)
    assert code == 0, log[-3000:]   # untouched by the second job: complete, no lock left
    assert all(len(list((out / v).iterdir())) == FRAMES for v in VIDEOS) and not (out / LOCK).exists()

    # a lock whose holder died (SIGKILL, a lost node) is taken over with a line saying so
    (out / LOCK).write_text('pid 4242 on gone-node, since 2026-01-01 00:00:00\n')
    code, log = run(eval_cmd(root, out, synthetic_checkpoint), threads=1)
    assert code == 0, log[-3000:]
    assert f'{out}: taking over the lock of a job that is gone (pid 4242 on gone-node' in log
    assert '2 of 2 videos already complete' in log and not (out / LOCK).exists()


def test_a_partial_folder_belongs_to_its_run(tmp_path):
    final = tmp_path / 'out' / 'video'
    with atomic_folder(str(final)) as partial:
        (tmp_path / 'out' / '.video.partial' / '00000.png').write_bytes(b'first run')
        with pytest.raises(UserInputError, match=r'\.video\.partial: being written by another running job'):
            with atomic_folder(str(final)):
                pass
        assert os.listdir(partial) == ['00000.png']   # neither emptied nor removed by the other run
    assert (final / '00000.png').read_bytes() == b'first run'

    # a dead run's partial folder (no lock on it) is reclaimed: emptied and reused
    dead = partial_folder(str(tmp_path / 'out' / 'other'))
    os.makedirs(dead)
    open(os.path.join(dead, 'stale.png'), 'wb').close()
    with atomic_folder(str(tmp_path / 'out' / 'other')) as partial:
        assert partial == dead and os.listdir(partial) == []


# 2. one bad frame mid-video

def test_a_bad_frame_mid_video_skips_that_video_alone(shared_dir, synthetic_checkpoint, tmp_path):
    root, out = small_davis(shared_dir, tmp_path / 'DAVIS'), tmp_path / 'out'
    # the up-front check reads the first frame only: this one fails while blackswan is segmented
    (root / 'JPEGImages' / '480p' / 'blackswan' / '00001.jpg').write_bytes(b'\xff\xd8 truncated jpeg')
    code, log = eval_2016(root, out, synthetic_checkpoint, extra=['--skip_bad_videos'])
    assert code == 2
    assert len(errors(log)) == 1 and errors(log)[0].startswith(
        f'error: 1 video(s) skipped (--skip_bad_videos): blackswan: frame 1: '
        f'{root}/JPEGImages/480p/blackswan/00001.jpg: cannot read image'), log[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ['car-shadow', 'qdmn_settings.json']   # the other one goes on
    assert len(list((out / 'car-shadow').iterdir())) == FRAMES


def test_a_bad_frame_on_one_rank_ends_the_job_after_the_others_current_video(shared_dir, synthetic_checkpoint,
                                                                             tmp_path):
    # car-shadow (40 quick frames, the 10th truncated) to rank 0, blackswan (3 frames, seconds each) to rank 1:
    # rank 0 fails after rank 1 started blackswan and before it finished it
    root, out = full_size_davis(shared_dir, tmp_path / 'DAVIS', small=['car-shadow']), tmp_path / 'out'
    frames = root / 'JPEGImages' / '480p' / 'car-shadow'
    for i in range(FRAMES, 40):
        shutil.copy(frames / '00000.jpg', frames / f'{i:05d}.jpg')
    (frames / '00010.jpg').write_bytes(b'\xff\xd8 truncated jpeg')
    code, log = eval_2016(root, out, synthetic_checkpoint, processes=2)
    assert code != 0 and len(errors(log)) == 2, log[-3000:]   # torchrun exits with 1 on any failure
    assert all('car-shadow: frame 10: ' in line for line in errors(log))
    assert len(list((out / 'blackswan').iterdir())) == FRAMES   # kept: rank 1 finished it before stopping
    assert not (out / 'car-shadow').exists() and not list(out.glob('.*'))


# 3. a stopped process, a busy one

def spawn_ranks(cmd, world_size, **env):
    """The processes of a job started as the legacy launcher does (rank 0 hosts the store): their Popens."""
    port = free_port()
    return [start(cmd, clean_env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                                 LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port),
                                 **env))
            for rank in range(world_size)]


@pytest.mark.parametrize('stopped', [1, 0], ids=['a rank', 'the rank hosting the store'])
def test_a_stopped_rank_is_named_after_the_timeout(shared_dir, synthetic_checkpoint, tmp_path, stopped):
    # blackswan to rank 0, car-shadow to rank 1: the stopped rank's video takes seconds per frame, the
    # other one's is quick; under the legacy launcher's protocol rank 0 hosts the store
    slow = VIDEOS[stopped]
    root, out = full_size_davis(shared_dir, tmp_path / 'DAVIS', small=[VIDEOS[1 - stopped]]), tmp_path / 'out'
    ranks = spawn_ranks(eval_cmd(root, out, synthetic_checkpoint), 2, QDMN_PEER_TIMEOUT=str(PEER_TIMEOUT))
    waiting = ranks[1 - stopped]
    try:
        wait_for(lambda: os.path.isdir(partial_folder(str(out / slow))), f'rank {stopped} segmenting')
        os.kill(ranks[stopped].pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        code, log = finish(waiting)
        waited = time.monotonic() - stopped_at
    finally:
        ranks[stopped].kill()
        finish(ranks[stopped])
    expected = (f'error: rank 1 stopped responding: no heartbeat for {PEER_TIMEOUT} s (frozen, stopped, cut off or '
                'dead); giving up (QDMN_PEER_TIMEOUT sets the wait)' if stopped == 1 else
                "error: rank 1: lost the job's key-value store at 127.0.0.1:")
    assert code == 1 and len(errors(log)) == 1 and errors(log)[0].startswith(expected), log[-3000:]
    assert waited < 30 + PEER_TIMEOUT
    if stopped == 1:   # rank 0 finished its video first (rank 1 may ask the stopped store before its own)
        assert len(list((out / 'blackswan').iterdir())) == FRAMES


def test_a_rank_without_videos_waits_for_a_busy_one_beyond_the_timeout(shared_dir, synthetic_checkpoint, tmp_path):
    # one video for two processes: rank 1 waits at the end for rank 0's seconds-per-frame video
    root, out = full_size_davis(shared_dir, tmp_path / 'DAVIS', small=['blackswan']), tmp_path / 'out'
    (root / 'ImageSets' / '2016' / 'val.txt').write_text('car-shadow\n')
    launcher = ['-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={free_port()}']
    proc = start([sys.executable, *launcher, *eval_cmd(root, out, synthetic_checkpoint)[1:]],
                 clean_env(QDMN_PEER_TIMEOUT='1'))
    code, log = finish(proc)
    assert code == 0, log[-3000:]
    seconds = float(log.split(f'[rank 0] car-shadow: {FRAMES} frames in ')[1].split(' s')[0])
    assert seconds > 1 and 'rank 1: 0 videos' in log


# 4. killed runs

def test_sigterm_removes_the_partial_folders(shared_dir, synthetic_checkpoint, tmp_path):
    root, out = full_size_davis(shared_dir, tmp_path / 'DAVIS'), tmp_path / 'out'
    proc = start(eval_cmd(root, out, synthetic_checkpoint), clean_env())
    wait_for(lambda: os.path.isdir(partial_folder(str(out / 'blackswan'))), 'segmenting')
    proc.terminate()
    code, log = finish(proc)
    assert code == 128 + signal.SIGTERM and len(errors(log)) == 1 and 'terminated (SIGTERM)' in errors(log)[0]
    assert 'Traceback' not in log and not list(out.glob('.*'))   # no partial folder, no lock


def worker_pids(launcher_pid):
    """{rank: pid} of torchrun's worker processes."""
    children = [int(pid) for task in os.listdir(f'/proc/{launcher_pid}/task')
                for pid in open(f'/proc/{launcher_pid}/task/{task}/children').read().split()]
    ranks = {}
    for pid in children:
        env = dict(item.split('=', 1) for item in open(f'/proc/{pid}/environ').read().split('\0') if '=' in item)
        if 'RANK' in env:
            ranks[int(env['RANK'])] = pid
    return ranks


def test_a_sigkilled_rank_ends_the_job_and_a_rerun_reclaims_its_partial_folder(shared_dir, synthetic_checkpoint,
                                                                                 tmp_path):
    root, out = full_size_davis(shared_dir, tmp_path / 'DAVIS'), tmp_path / 'out'
    launcher = ['-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={free_port()}']
    proc = start([sys.executable, *launcher, *eval_cmd(root, out, synthetic_checkpoint)[1:]], clean_env())
    wait_for(lambda: all(os.path.isdir(partial_folder(str(out / v))) for v in VIDEOS), 'both ranks segmenting')
    os.kill(worker_pids(proc.pid)[0], signal.SIGKILL)   # mid-video: its partial folder stays
    code, log = finish(proc)
    assert code != 0 and (out / '.blackswan.partial').is_dir()
    # rank 1, stopped by torchrun with SIGTERM mid-video, removed its own
    assert not (out / '.car-shadow.partial').exists() and 'error: terminated (SIGTERM)' in log, log[-3000:]

    for video in VIDEOS:   # a quick re-run
        shrink(root / 'JPEGImages' / '480p' / video, root / 'Annotations' / '480p' / video)
    code, log = eval_2016(root, out, synthetic_checkpoint, processes=2)
    assert code == 0, log[-3000:]
    assert all(len(list((out / v).iterdir())) == FRAMES for v in VIDEOS) and not list(out.glob('.*'))


def test_the_memory_log_is_in_place_before_the_masks(small_davis_tree, synthetic_checkpoint, built_once,  # noqa: F811
                                                     tmp_path, monkeypatch, capsys):
    out = tmp_path / 'out'
    real_replace, renamed = os.replace, []

    def replace(src, dst):   # a kill right after this rename must find the log already written
        if os.path.basename(src).endswith('.partial') and os.path.isdir(src):
            renamed.append(os.path.basename(dst))
            assert (out / 'memory_log' / f'{os.path.basename(dst)}.csv').is_file()
        real_replace(src, dst)

    monkeypatch.setattr(pipeline.video.os, 'replace', replace)
    code, err = run_eval_cli(eval_davis_2016, ['--model', synthetic_checkpoint, '--davis', small_davis_tree,
                                               '--device', 'cpu', '--output', out, '--save_memory_log'], capsys)
    assert code == 0, err
    assert sorted(renamed) == sorted(VIDEOS)


def test_failing_processes_removing_the_output_folder_do_not_mask_the_error(tmp_path):
    out = tmp_path / 'out'
    with pytest.raises(ValueError, match='the real error'):
        with atomic_folder(str(out / 'video')):
            shutil.rmtree(out)   # another process's cleanup removed the (empty) output folder first
            raise ValueError('the real error')
