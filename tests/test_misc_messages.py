"""Words that tell the truth: the duplicate-frame error names the files, the dead-quality-head warning
fits the --quality_fit mode, and data/ stays out of git; a command line's quick exit loses nothing."""
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from datasets.video_reader import open_video
from util.errors import UserInputError
from util.logger import TrainLogger

REPO = Path(__file__).resolve().parents[1]


def test_duplicate_frame_names_error_shows_the_real_files(tmp_path):
    for name in ('a.jpg', 'a.png', 'b.png', 'c.jpg', 'c.png'):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / name)
    with pytest.raises(UserInputError) as e:
        open_video(str(tmp_path))
    assert str(e.value) == (f'{tmp_path}: 2 frame name(s) shared by several images (a.jpg and a.png; c.jpg and '
                            'c.png); their masks would overwrite each other')


@pytest.mark.parametrize('mode, meaning', [
    ('published', 'its final ReLU is dead and it no longer learns (docs/training.md, "The quality head"; '
                  '--quality_fit preactivation avoids this)'),
    ('preactivation', 'its output before the final ReLU is negative everywhere; the loss is fitted there, so the '
                      'head still learns and should recover (if it persists, the memory gate sees only zeros)'),
])
def test_dead_quality_head_warning_is_true_in_each_quality_fit_mode(mode, meaning, capsys):
    log = TrainLogger(None, True, 10)
    log.log_config(SimpleNamespace(quality_fit=mode))
    capsys.readouterr()
    log.report(5, {'zero_score_fraction': 1.0})
    log.report(6, {'zero_score_fraction': 1.0})   # said once
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if line.startswith('WARNING')] == [
        f'WARNING: the quality head scored every sample 0 in the window ending at iteration 5: {meaning}']


def test_data_folder_is_ignored_by_git():
    result = subprocess.run(['git', 'check-ignore', 'data/DAVIS/2017'], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == 'data/DAVIS/2017'


RUN_CLI = """
import atexit, sys, threading, time
sys.path.insert(0, {repo!r})
from util.errors import run_cli
atexit.register(lambda: print('atexit handler ran'))
def main():
    print('main done', end='')          # no newline: only a flush writes it
    if {thread}:
        def late():
            time.sleep(0.5)
            open({marker!r}, 'w').write('written')
        threading.Thread(target=late).start()
run_cli(main)
print('not reached when the quick exit is taken')
"""


@pytest.mark.parametrize('thread', [False, True])
def test_run_cli_exits_at_once_but_runs_atexit_flushes_and_waits_for_threads(tmp_path, thread):
    marker = tmp_path / 'written-by-thread'
    code = RUN_CLI.format(repo=str(REPO), thread=thread, marker=str(marker))
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('main done') and 'atexit handler ran' in result.stdout
    # a thread still running: the usual exit, which waits for it; none: the quick exit
    assert ('not reached' in result.stdout) == thread
    assert marker.exists() == thread
