"""Words that tell the truth: the duplicate-frame error names the files, the dead-quality-head warning
fits the --quality_fit mode, and data/ stays out of git."""
import subprocess
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
