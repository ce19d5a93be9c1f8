"""scripts/expand_long_video.py: a forward-backward long video in the DAVIS layout."""
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

from conftest import REPO, SHARED


def test_expand_plays_back_and_forth_with_sparse_annotations(tmp_path):
    source = tmp_path / 'src'
    for sub in ('JPEGImages', 'Annotations'):
        (source / sub / '480p' / 'car-shadow').mkdir(parents=True)
    sample = SHARED / 'data' / 'DAVIS-2016-sample'
    for t in range(5):
        shutil.copy(sample / 'JPEGImages' / '480p' / 'car-shadow' / f'{t:05d}.jpg',
                    source / 'JPEGImages' / '480p' / 'car-shadow')
        shutil.copy(sample / 'Annotations' / '480p' / 'car-shadow' / f'{t:05d}.png',
                    source / 'Annotations' / '480p' / 'car-shadow')
    out = tmp_path / 'long'
    cmd = [sys.executable, 'scripts/expand_long_video.py', '--davis', source, '--video', 'car-shadow',
           '--times', 3, '--output', out, '--height', 120, '--annotate_every', 4]
    for _ in range(2):   # a second run rewrites the same tree and lists the video once
        result = subprocess.run([str(c) for c in cmd], cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    assert 'car-shadow_x3: 15 frames' in result.stdout
    frames = sorted((out / 'JPEGImages' / '480p' / 'car-shadow_x3').iterdir())
    assert len(frames) == 15 and Image.open(frames[0]).size == (214, 120)
    masks = {p.stem: np.asarray(Image.open(p)) for p in (out / 'Annotations' / '480p' / 'car-shadow_x3').iterdir()}
    assert sorted(masks) == ['00000', '00004', '00008', '00012', '00014']
    src = [np.asarray(Image.open(sample / 'Annotations' / '480p' / 'car-shadow' / f'{t:05d}.png')
                      .resize((214, 120), Image.NEAREST)) for t in range(5)]
    order = [0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3, 4, 3, 2]   # the turning frames are not repeated
    for t in (0, 4, 8, 12, 14):
        assert np.array_equal(masks[f'{t:05d}'], src[order[t]])
    for year in ('2016', '2017'):
        assert (out / 'ImageSets' / year / 'val.txt').read_text() == 'car-shadow_x3\n'
