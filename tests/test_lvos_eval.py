"""eval_lvos.py end to end on small synthetic LVOS splits: ids, every frame, scoring, the test zip, bad input."""
import csv
import os
import zipfile

import numpy as np
import pytest
from lvos_tree import square, write_split
from PIL import Image

import eval_lvos
from util.errors import run_main

SHAPE = (48, 80)
UNSEEN = 'R3UJGYwy'   # on the official unseen list


def gt_two(number):
    """Object 3 from frame 0; object 6 already visible on frame 5 but entering (metadata) on frame 15."""
    out = square(SHAPE, 5, 25, 5, 30, 3)
    if number >= 5:
        out[28:44, 45:75] = 6
    return out


def gt_one(number):
    return square(SHAPE, 10, 35, 20, 60, 1) if number >= 10 else np.zeros(SHAPE, np.uint8)


def make_split(root, split='valid'):
    split_dir = root / split
    write_split(split_dir, {'twoObj': (6, {3: (0, 6), 6: (15, 3)}, gt_two),
                            UNSEEN: (5, {1: (10, 3)}, gt_one)}, SHAPE)
    return split_dir


def run(split_dir, out, checkpoint, *extra):
    eval_lvos.main(['--lvos', str(split_dir), '--output', str(out), '--model', str(checkpoint), '--device', 'cpu',
                    '--size', '-1', *map(str, extra)])


def ids_of(path):
    return np.asarray(Image.open(path))


def test_every_frame_with_the_right_ids_then_scored_and_resumed(tmp_path, synthetic_checkpoint):
    split_dir = make_split(tmp_path)
    out = tmp_path / 'out'
    run(split_dir, out, synthetic_checkpoint, '--evaluate')
    two, one = out / 'Annotations' / 'twoObj', out / 'Annotations' / UNSEEN
    assert sorted(os.listdir(two)) == [f'{n:08d}.png' for n in range(0, 30, 5)]
    assert sorted(os.listdir(one)) == [f'{n:08d}.png' for n in range(10, 25, 5)]   # from its entry on
    for n in range(0, 30, 5):
        written = ids_of(two / f'{n:08d}.png')
        assert written.shape == SHAPE and set(np.unique(written)) <= ({0, 3} if n < 15 else {0, 3, 6})
    # on its entry frame an object is exactly its given mask (original size: nothing resized)
    np.testing.assert_array_equal(ids_of(two / '00000015.png') == 6, gt_two(15) == 6)
    np.testing.assert_array_equal(ids_of(one / '00000010.png') == 1, gt_one(10) == 1)
    assert Image.open(two / '00000000.png').mode == 'P'
    rows = list(csv.reader((out / 'per-sequence_results-valid.csv').open()))
    assert [r[0] for r in rows[1:]] == [f'{UNSEEN}_1', 'twoObj_1', 'twoObj_2']
    assert not (tmp_path / 'out.zip').exists()   # valid is scored here, not zipped
    # resuming skips the complete videos
    before = (two / '00000010.png').stat().st_mtime_ns
    run(split_dir, out, synthetic_checkpoint)
    assert (two / '00000010.png').stat().st_mtime_ns == before


def test_test_split_writes_the_server_zip(tmp_path, synthetic_checkpoint):
    split_dir = make_split(tmp_path, 'test')
    out = tmp_path / 'out' / 'lvos-test'
    run(split_dir, out, synthetic_checkpoint, '--size', 32, '--save_memory_log')
    extracted = tmp_path / 'unzipped'
    with zipfile.ZipFile(f'{out}.zip') as z:
        z.extractall(extracted)
    assert os.listdir(extracted) == ['Annotations']
    assert sorted(os.listdir(extracted / 'Annotations')) == [UNSEEN, 'twoObj']
    assert sorted(os.listdir(extracted / 'Annotations' / 'twoObj')) == [f'{n:08d}.png' for n in range(0, 30, 5)]
    assert Image.open(extracted / 'Annotations' / UNSEEN / '00000020.png').size == (80, 48)
    assert (out / 'memory_log' / 'twoObj.csv').is_file()


def test_bad_video_is_one_line_and_skip_bad_videos_runs_the_rest(tmp_path, synthetic_checkpoint, capsys):
    split_dir = make_split(tmp_path)
    Image.fromarray(np.zeros(SHAPE, np.uint8), mode='P').save(split_dir / 'Annotations' / UNSEEN / '00000010.png')
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: run(split_dir, tmp_path / 'o', synthetic_checkpoint))
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1
    assert f'object 1 of video {UNSEEN} enters on this frame but its mask here is empty' in errors[0]
    assert not (tmp_path / 'o').exists()
    with pytest.raises(SystemExit):
        run_main(lambda: run(split_dir, tmp_path / 'o', synthetic_checkpoint, '--skip_bad_videos', '--evaluate'))
    assert sorted(os.listdir(tmp_path / 'o' / 'Annotations')) == ['qdmn_settings.json', 'twoObj']
    rows = list(csv.reader((tmp_path / 'o' / 'per-sequence_results-valid.csv').open()))
    assert [r[0] for r in rows[1:]] == ['twoObj_1', 'twoObj_2']
