"""--resume_every: a killed run started again goes on from its last saved state, byte for byte."""
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import eval_davis_2016
import pipeline.video
from conftest import REPO
from test_eval_davis_cli import VIDEOS, run_cli as run_eval_cli
from test_memory_log import small_davis  # noqa: F401 - the fixture, shrunk DAVIS frames
from test_segment_video import save_palette_png, write_noise_frames

FRAMES = 16


def tree(folder):
    """{relative path: bytes} of every file below `folder`."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


def segment_video_cmd(frames, mask, out, checkpoint):
    return [sys.executable, 'segment_video.py', '--video', str(frames), '--mask', str(mask), '--output', str(out),
            '--model', str(checkpoint), '--device', 'cpu', '--resume_every', '3', '--mem_freq', '2',
            '--save_memory_log']


@pytest.fixture
def noise_video(tmp_path):
    frames = write_noise_frames(tmp_path / 'frames', FRAMES)
    mask = save_palette_png(tmp_path / 'mask.png', np.pad(np.full((20, 30), 4, np.uint8), ((20, 24), (30, 36))))
    return frames, mask


def test_sigkilled_segment_video_resumes_from_its_last_state_byte_identical(noise_video, synthetic_checkpoint,
                                                                            tmp_path):
    frames, mask = noise_video
    whole, killed = tmp_path / 'whole', tmp_path / 'killed'
    subprocess.run(segment_video_cmd(frames, mask, whole, synthetic_checkpoint), cwd=REPO, check=True,
                   capture_output=True)

    state = killed / '.masks.partial.state'
    run = subprocess.Popen(segment_video_cmd(frames, mask, killed, synthetic_checkpoint), cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not state.exists():   # the first state is saved after 3 frames
        assert run.poll() is None, 'the run ended before saving a state'
        time.sleep(0.01)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert not (killed / 'masks').exists() and state.is_file()

    again = subprocess.run(segment_video_cmd(frames, mask, killed, synthetic_checkpoint), cwd=REPO,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    saved = int(re.search(r'resuming after frame (\d+)', again.stdout).group(1))
    assert saved % 3 == 2 and saved < FRAMES - 1   # states are saved every 3 frames, never at the last
    assert f'\n{FRAMES - saved - 1} frames in ' in again.stdout   # only the frames after the saved state
    assert tree(killed) == tree(whole)   # masks, overlay.mp4 and the memory log
    assert not list(killed.glob('.*'))   # no state or partial folder left


def test_eval_davis_resumes_a_video_that_failed_after_a_saved_state(small_davis, synthetic_checkpoint,  # noqa: F811
                                                                    tmp_path, monkeypatch, capsys, failing_on_call):
    argv = ['--model', synthetic_checkpoint, '--davis', small_davis, '--device', 'cpu', '--resume_every', 1]
    code, err = run_eval_cli(eval_davis_2016, argv + ['--output', tmp_path / 'whole'], capsys)
    assert code == 0, err

    # the disk fills up at the 5th mask (car-shadow's 2nd frame), after the state of its 1st frame
    out = tmp_path / 'out'
    real_write = pipeline.video.write_palette_png
    monkeypatch.setattr(pipeline.video, 'write_palette_png', failing_on_call(real_write, 5))
    code, err = run_eval_cli(eval_davis_2016, argv + ['--output', out], capsys)
    assert code == 2 and 'disk full' in err
    assert sorted(p.name for p in out.iterdir()) == ['.car-shadow.partial', '.car-shadow.partial.state',
                                                     'blackswan', 'qdmn_settings.json']
    monkeypatch.setattr(pipeline.video, 'write_palette_png', real_write)
    code, err = run_eval_cli(eval_davis_2016, argv + ['--output', out], capsys)
    assert code == 0, err
    assert tree(out) == tree(tmp_path / 'whole')
    assert sorted(p.name for p in out.iterdir()) == sorted([*VIDEOS, 'qdmn_settings.json'])
