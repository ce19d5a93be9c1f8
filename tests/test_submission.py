"""Server zips (util/submission.py) and eval_davis.py --split testdev writing one."""
import os
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

import eval_davis
from util.errors import UserInputError, run_main
from util.palette import DAVIS_PALETTE
from util.submission import write_submission_zip


def _png(path, labels):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.asarray(labels, np.uint8), mode='P')
    img.putpalette(DAVIS_PALETTE.reshape(-1).tolist())
    img.save(path)


def test_zip_layouts(tmp_path):
    out = tmp_path / 'out'
    for video in ('a', 'b'):
        for frame in ('00000', '00005'):
            _png(out / 'Annotations' / video / f'{frame}.png', np.full((4, 6), 1))
    _png(out / 'Annotations' / 'a' / 'stray.png', np.zeros((4, 6)))   # not listed: left out
    path = write_submission_zip(str(out), {'a': ['00000', '00005'], 'b': ['00005']}, root='Annotations')
    assert path == f'{out}.zip'
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == ['Annotations/a/00000.png', 'Annotations/a/00005.png',
                                        'Annotations/b/00005.png']
        assert z.read('Annotations/b/00005.png') == (out / 'Annotations' / 'b' / '00005.png').read_bytes()
    path = write_submission_zip(str(out / 'Annotations'), {'a': ['00000']})
    with zipfile.ZipFile(path) as z:
        assert z.namelist() == ['a/00000.png']


def test_zip_appears_whole_or_not_at_all(tmp_path):
    out = tmp_path / 'out'
    _png(out / 'a' / '00000.png', np.zeros((4, 6)))
    with pytest.raises(UserInputError, match=r'a/00001\.png: missing, so .*out\.zip was not written'):
        write_submission_zip(str(out), {'a': ['00000', '00001']})
    assert os.listdir(tmp_path) == ['out']   # no zip, no partial file


def _davis_testdev(root, videos=('seq1', 'seq2'), frames=3, shape=(48, 80)):
    rng = np.random.default_rng(0)
    for video in videos:
        for t in range(frames):
            jpg = root / 'JPEGImages' / '480p' / video / f'{t:05d}.jpg'
            jpg.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8)).save(jpg)
        first = np.zeros(shape, np.uint8)
        first[10:30, 10:40], first[30:45, 50:70] = 1, 2
        _png(root / 'Annotations' / '480p' / video / '00000.png', first)
    (root / 'ImageSets' / '2017').mkdir(parents=True)
    (root / 'ImageSets' / '2017' / 'test-dev.txt').write_text('\n'.join(videos) + '\n')


def test_eval_davis_testdev_writes_the_server_zip(tmp_path, synthetic_checkpoint, monkeypatch):
    _davis_testdev(tmp_path / 'DAVIS' / 'test-dev')
    out = tmp_path / 'out' / 'd17-testdev'
    monkeypatch.setattr(sys, 'argv', ['eval_davis.py', '--davis', str(tmp_path / 'DAVIS'), '--split', 'testdev',
                                      '--output', str(out), '--model', str(synthetic_checkpoint), '--device', 'cpu'])
    run_main(eval_davis.main)
    extracted = tmp_path / 'unzipped'
    with zipfile.ZipFile(f'{out}.zip') as z:
        z.extractall(extracted)
    assert sorted(os.listdir(extracted)) == ['seq1', 'seq2']   # sequence folders at the root
    for video in ('seq1', 'seq2'):
        assert sorted(os.listdir(extracted / video)) == ['00000.png', '00001.png', '00002.png']
        img = Image.open(extracted / video / '00001.png')
        assert img.mode == 'P' and img.size == (80, 48) and set(np.unique(np.asarray(img))) <= {0, 1, 2}
