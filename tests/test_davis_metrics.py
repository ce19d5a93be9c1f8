"""DAVIS J&F evaluation (util/davis_metrics.py): hand-computed cases, the protocol's corner
cases, and the real DAVIS-2016 sample against the straightforward reference implementation
kept in scripts/benchmark_metrics.py."""
import csv
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from util import davis_metrics as dm
from util.davis_metrics import DavisEvalError, db_statistics, evaluate_davis, f_measure, jaccard
from util.errors import UserInputError
from util.palette import DAVIS_PALETTE

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get('QDMN_SHARED', Path(__file__).resolve().parents[1].parent / 'shared'))
SAMPLE = SHARED / 'data' / 'DAVIS-2016-sample'


def _load_reference():
    spec = importlib.util.spec_from_file_location('benchmark_metrics',
                                                  REPO / 'scripts' / 'benchmark_metrics.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ref = _load_reference()


def square(h, w, y0, y1, x0, x1, value=1):
    """Label map with [y0, y1] x [x0, x1] (inclusive) set to value."""
    m = np.zeros((h, w), np.uint8)
    m[y0:y1 + 1, x0:x1 + 1] = value
    return m


def save_palette(path, labels):
    img = Image.fromarray(np.asarray(labels, np.uint8), mode='P')
    img.putpalette(DAVIS_PALETTE.reshape(-1).tolist())
    img.save(path)


def save_grey(path, labels):
    Image.fromarray(np.asarray(labels, np.uint8), mode='L').save(path)


def rows_of(evaluation):
    return ref.module_rows(evaluation)


# ----------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------

def test_radius_and_disk():
    assert dm.boundary_radius(480, 854) == 8          # ceil(7.84)
    assert dm.boundary_radius(20, 20) == 1            # ceil(0.23)
    assert dm.boundary_radius(100, 100) == 2          # ceil(1.13)
    assert dm.disk(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    d8 = dm.disk(8)
    assert d8.shape == (17, 17) and d8.dtype == np.uint8
    assert d8.sum() == sum(1 for y in range(-8, 9) for x in range(-8, 9) if x * x + y * y <= 64)
    assert d8[8, 0] == 1 and d8[0, 8] == 1 and d8[1, 1] == 0    # (7,7): 98 > 64


def test_boundary_of_square_is_ring_shifted_up_left():
    b = dm.seg2bmap(square(20, 20, 2, 5, 2, 5))
    ring = np.zeros((20, 20), bool)
    ring[1:6, 1:6] = True
    ring[2:5, 2:5] = False            # perimeter of rows 1..5 x cols 1..5
    assert b.sum() == 16
    np.testing.assert_array_equal(b, ring)


def test_boundary_image_edges():
    full = np.ones((6, 7), np.uint8)
    assert not dm.seg2bmap(full).any()                  # no neighbour differs
    corner = np.zeros((6, 7), np.uint8)
    corner[-1, -1] = 1                                  # bottom-right pixel: never a boundary,
    expected = np.zeros((6, 7), bool)                   # but its left and upper neighbours are
    expected[-1, -2] = expected[-2, -1] = expected[-2, -2] = True
    np.testing.assert_array_equal(dm.seg2bmap(corner), expected)
    last_row = np.zeros((6, 7), np.uint8)
    last_row[-1, 3] = 1                                 # last row: right neighbour only
    got = dm.seg2bmap(last_row)
    assert got[-1, 2] and got[-1, 3] and got[-2, 2] and got[-2, 3] and got.sum() == 4


def test_boundaries_match_reference_on_random_label_maps():
    rng = np.random.default_rng(0)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 15, size=2))
        k = int(rng.integers(1, 5))
        if rng.random() < 0.5:
            lab = rng.integers(0, k + 1, (h, w)).astype(np.uint8)
        else:
            lab = np.zeros((h, w), np.uint8)
            for _ in range(3):
                y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
                lab[y0:y0 + int(rng.integers(1, h + 1)), x0:x0 + int(rng.integers(1, w + 1))] = \
                    rng.integers(0, k + 1)
        points = dm._boundary_points(lab, k)
        for obj in range(1, k + 1):
            np.testing.assert_array_equal(points[obj - 1], np.flatnonzero(ref.ref_boundary(lab == obj)))


# ----------------------------------------------------------------------------------------
# Hand-computed J and F
# ----------------------------------------------------------------------------------------

def test_one_pixel_shift_small_image():
    g = square(20, 20, 2, 5, 2, 5)           # 4x4 square, r = 1
    p = square(20, 20, 2, 5, 3, 6)           # shifted right by one pixel
    assert jaccard(g, p) == pytest.approx(12 / 20, abs=1e-15)
    assert f_measure(g, p) == 1.0            # every boundary pixel has a 4-neighbour match


def test_two_pixel_shift_small_image():
    g = square(20, 20, 2, 5, 2, 5)
    p = square(20, 20, 2, 5, 4, 7)
    # J: overlap 4x2 = 8, union 24. F (r=1, cross): 6 of the 16 boundary pixels of each
    # ring are farther than one 4-step from the other ring -> P = R = 10/16.
    assert jaccard(g, p) == pytest.approx(1 / 3, abs=1e-15)
    assert f_measure(g, p) == pytest.approx(0.625, abs=1e-15)


def test_three_pixel_shift_radius_two():
    g = square(100, 100, 20, 39, 20, 39)     # 20x20 square, r = 2
    p = square(100, 100, 20, 39, 23, 42)
    # J = 20*17 / (800 - 340). Boundary rings are 21x21 perimeters (80 px); of the result's
    # ring, top and bottom rows match 20 of 21 pixels, its left column 4 of 19 (2 near each
    # corner), its right column none: 44/80; recall is the mirror image.
    assert jaccard(g, p) == pytest.approx(17 / 23, abs=1e-15)
    assert f_measure(g, p) == pytest.approx(0.55, abs=1e-15)
    assert f_measure(g, p) == ref.ref_f(g, p) and jaccard(g, p) == ref.ref_j(g, p)


def test_empty_and_full_masks():
    z = np.zeros((30, 40), np.uint8)
    s = square(30, 40, 5, 10, 5, 10)
    full = np.ones((30, 40), np.uint8)
    assert jaccard(z, z) == 1.0 and f_measure(z, z) == 1.0        # empty union; P = R = 1
    assert jaccard(s, z) == 0.0 and f_measure(s, z) == 0.0        # empty result: P=1, R=0
    assert jaccard(z, s) == 0.0 and f_measure(z, s) == 0.0        # empty GT: P=0, R=1
    assert jaccard(full, full) == 1.0 and f_measure(full, full) == 1.0   # no boundary at all
    half = full.copy()
    half[:, 20:] = 0
    assert jaccard(full, half) == 0.5 and f_measure(full, half) == 0.0   # B(G) empty


def test_void_is_background_like_official_and_excluded_on_request():
    gt = square(20, 20, 2, 5, 2, 5)
    gt[10:14, 10:14] = 255                       # void square
    res = square(20, 20, 2, 5, 2, 5)
    res[10:14, 10:14] = 1                        # the result also claims the void square
    j, f = dm.score_frame(gt, res, 1)
    # official semi-supervised: void is background -> 16 extra false-positive pixels;
    # the second ring (rows/cols 9..13) is far from the first: P = 16/32, R = 1
    assert j[0] == 0.5 and f[0] == pytest.approx(2 / 3, abs=1e-15)
    j, f = dm.score_frame(gt, res, 1, exclude_void=True)
    assert j[0] == 1.0 and f[0] == 1.0
    j, f = dm.score_frame(gt, square(20, 20, 2, 5, 2, 5), 1, exclude_void=False)
    assert j[0] == 1.0 and f[0] == 1.0           # void alone changes nothing


def test_multi_object_frame_and_ids_above_k():
    gt = square(30, 30, 2, 9, 2, 9, 1) + square(30, 30, 15, 24, 15, 24, 2)
    gt[0:2, 25:30] = 3                           # id 3 was not in the first frame: background
    res = square(30, 30, 2, 9, 2, 9, 2) + square(30, 30, 15, 24, 15, 24, 1)   # ids swapped
    j, f = dm.score_frame(gt, res, 2)
    assert j.tolist() == [0.0, 0.0]
    j, f = dm.score_frame(gt, gt.clip(0, 2) * (gt < 3), 2)
    assert j.tolist() == [1.0, 1.0] and f.tolist() == [1.0, 1.0]
    res_missing = np.where(gt == 1, 1, 0)        # object 2 never predicted -> empty mask
    j, f = dm.score_frame(gt, res_missing, 2)
    assert j.tolist() == [1.0, 0.0] and f.tolist() == [1.0, 0.0]
    with pytest.raises(DavisEvalError, match='object id 3'):
        dm.score_frame(gt, np.where(gt == 3, 3, 0), 2)
    j, f = dm.score_frame(gt, (gt > 0) * 255, 7, single_object=True)   # 255 is object 1 here
    assert j.tolist() == [1.0] and f.tolist() == [1.0]


def test_random_frames_match_reference_exactly():
    rng = np.random.default_rng(1)
    for _ in range(25):
        h, w = int(rng.integers(60, 240)), int(rng.integers(60, 320))
        k = int(rng.integers(1, 4))
        gt = np.zeros((h, w), np.uint8)
        for obj in range(1, k + 1):
            cv2.circle(gt, (int(rng.integers(0, w)), int(rng.integers(0, h))),
                       int(rng.integers(3, 60)), obj, -1)
        gt[rng.random((h, w)) < 0.002] = 255
        res = np.roll(gt, (int(rng.integers(-5, 6)), int(rng.integers(-5, 6))), axis=(0, 1))
        res = np.where(res == 255, 0, res)
        res = cv2.erode(res, np.ones((3, 3), np.uint8)) if rng.random() < 0.5 else res
        for exclude_void in (False, True):
            j, f = dm.score_frame(gt, res, k, exclude_void=exclude_void)
            void = gt == 255
            for obj in range(1, k + 1):
                v = void if exclude_void else None
                assert j[obj - 1] == ref.ref_j(gt == obj, res == obj, v)
                assert f[obj - 1] == ref.ref_f(gt == obj, res == obj, v)


# ----------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------

def test_statistics_hand_made():
    m, r, d = db_statistics([1, 1, 1, 1, 0, 0, 0, 0, 0])     # n=9: edges 0,2,4,6,8
    assert (m, r, d) == (pytest.approx(4 / 9), pytest.approx(4 / 9), 1.0)
    # n=7: linspace = 1, 2.5, 4, 5.5, 7; the +1e-10 rounds 2.5 up -> edges 0,2,3,5,6, so
    # bin 0 = values[0:3] (0.8) and bin 3 = values[5:7] (0.35); banker's rounding would give 0.5
    m, r, d = db_statistics([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    assert m == pytest.approx(0.6) and r == pytest.approx(4 / 7) and d == pytest.approx(0.45)
    assert db_statistics([0.5, 0.5]) == (0.5, 0.0, 0.0)          # recall is strictly > 0.5
    assert db_statistics([0.7]) == (pytest.approx(0.7), 1.0, 0.0)
    m, r, d = db_statistics([np.nan, 1.0, 0.0, 1.0, 0.0])        # nan-aware means
    assert m == 0.5 and r == pytest.approx(2 / 5)                # nan > 0.5 is False
    assert d == pytest.approx(1.0 - 0.5)                         # bins [nan,1] and [1,0]
    for n in range(1, 60):
        values = np.random.default_rng(n).random(n)
        assert db_statistics(values) == ref.ref_stats(values)


def _mini_dataset(root, first_last_results=False):
    """9 frames of 20x20, K = 2: object 1 correct on 3 frames then lost; object 2 only in
    the first ground-truth frame and never predicted; id 3 appears later in the GT."""
    davis, results = root / 'DAVIS', root / 'res'
    (davis / 'ImageSets' / '2017').mkdir(parents=True)
    (davis / 'ImageSets' / '2017' / 'val.txt').write_text('mini\n')
    gt_dir, res_dir = davis / 'Annotations' / '480p' / 'mini', results / 'mini'
    gt_dir.mkdir(parents=True)
    res_dir.mkdir(parents=True)
    obj1 = square(20, 20, 2, 7, 2, 7)
    for t in range(9):
        gt = obj1.copy()
        if t == 0:
            gt[12:16, 12:16] = 2
        if t == 4:
            gt[15:18, 0:3] = 3
        save_palette(gt_dir / f'{t:05d}.png', gt)
        if 1 <= t <= 7:
            save_palette(res_dir / f'{t:05d}.png', obj1 if t <= 3 else np.zeros_like(obj1))
        elif first_last_results:  # never read: an out-of-range id there is no error
            save_palette(res_dir / f'{t:05d}.png', np.full_like(obj1, 9))
    return davis, results


def test_sequence_statistics_end_to_end(tmp_path):
    davis, results = _mini_dataset(tmp_path)        # no result for the first/last frames
    ev = evaluate_davis(davis, results, '2017/val', workers=1, progress=False)
    assert [o.name for o in ev.objects] == ['mini_1', 'mini_2']
    assert ev.sequences[0].frames == [f'{t:05d}' for t in range(1, 8)]
    o1, o2 = ev.objects
    np.testing.assert_array_equal(ev.sequences[0].j[0], [1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(ev.sequences[0].f[0], [1, 1, 1, 0, 0, 0, 0])
    assert (o1.j_mean, o1.j_recall, o1.j_decay) == (pytest.approx(3 / 7), pytest.approx(3 / 7), 1.0)
    assert (o1.f_mean, o1.f_recall, o1.f_decay) == (pytest.approx(3 / 7), pytest.approx(3 / 7), 1.0)
    assert (o2.j_mean, o2.j_recall, o2.j_decay, o2.f_mean) == (1.0, 1.0, 0.0, 1.0)  # empty union
    g = ev.global_metrics
    assert g['J-Mean'] == pytest.approx(5 / 7) and g['J-Decay'] == pytest.approx(0.5)
    assert g['J&F-Mean'] == pytest.approx(5 / 7)
    assert list(g) == list(dm.GLOBAL_COLUMNS)
    davis2, results2 = _mini_dataset(tmp_path / 'with_first_last', first_last_results=True)
    ev2 = evaluate_davis(davis2, results2, '2017/val', workers=1, progress=False)
    assert rows_of(ev2) == rows_of(ev)


# ----------------------------------------------------------------------------------------
# Real annotations (DAVIS-2016 sample)
# ----------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def perturbed_2016(tmp_path_factory):
    """Single-object results: blackswan shifted by (4, -10) as 0/255 grey PNGs, car-shadow
    eroded (9x9) and shifted by (-6, 9) as palette 0/1 PNGs."""
    out = tmp_path_factory.mktemp('res2016')
    for seq, writer in (('blackswan', save_grey), ('car-shadow', save_palette)):
        (out / seq).mkdir()
        for path in sorted((SAMPLE / 'Annotations' / '480p' / seq).glob('*.png')):
            m = (np.array(Image.open(path)) > 0).astype(np.uint8)
            if seq == 'blackswan':
                shifted = np.zeros_like(m)
                shifted[4:, :-10] = m[:-4, 10:]
                writer(out / seq / path.name, shifted * 255)
            else:
                m = cv2.erode(m, np.ones((9, 9), np.uint8))
                writer(out / seq / path.name, np.roll(m, (-6, 9), axis=(0, 1)))
    return out


def test_ground_truth_against_itself_is_perfect():
    ev = evaluate_davis(SAMPLE, SAMPLE / 'Annotations' / '480p', '2016/val', single_object=True,
                        workers=2, progress=False)
    assert [o.name for o in ev.objects] == ['blackswan_1', 'car-shadow_1']
    assert [len(s.frames) for s in ev.sequences] == [48, 38]
    for o in ev.objects:
        assert (o.j_mean, o.j_recall, o.j_decay, o.f_mean, o.f_recall, o.f_decay) == (1, 1, 0, 1, 1, 0)
    assert ev.global_metrics['J&F-Mean'] == 1.0


def test_perturbed_results_match_reference(perturbed_2016):
    expected = ref.ref_evaluate(str(SAMPLE), str(perturbed_2016), '2016/val', single_object=True)
    one = evaluate_davis(SAMPLE, perturbed_2016, '2016/val', single_object=True, workers=1,
                         progress=False)
    two = evaluate_davis(SAMPLE, perturbed_2016, '2016/val', single_object=True, workers=2,
                         progress=False)
    assert ref.max_difference(expected, one) <= 1e-12
    assert rows_of(one) == rows_of(two) and one.global_metrics == two.global_metrics
    for o in one.objects:
        assert 0.3 < o.j_mean < 0.99 and 0.1 < o.f_mean < 0.99


def test_multi_object_with_void_matches_reference(tmp_path):
    davis, results = ref.make_benchmark_data(str(SAMPLE), str(tmp_path))
    official = evaluate_davis(davis, results, '2017/val', workers=2, progress=False)
    excluded = evaluate_davis(davis, results, '2017/val', workers=2, progress=False,
                              exclude_void=True)
    assert [o.name for o in official.objects] == [f'{s}_{k}' for s in ('blackswan', 'car-shadow')
                                                  for k in (1, 2, 3)]
    assert ref.max_difference(ref.ref_evaluate(davis, results, '2017/val'), official) <= 1e-12
    assert ref.max_difference(ref.ref_evaluate(davis, results, '2017/val', exclude_void=True),
                              excluded) <= 1e-12
    assert official.global_metrics['J-Mean'] < excluded.global_metrics['J-Mean']   # void matters


def test_pool_survives_busy_cv2_threads(perturbed_2016, tmp_path):
    """Forking while cv2's thread pool is alive used to hang the workers; run it in a
    subprocess (own session, killed as a group on timeout) with that pool freshly used."""
    code = (f'import sys; sys.path.insert(0, {str(REPO)!r})\n'
            'import numpy as np, cv2\n'
            'from util.davis_metrics import evaluate_davis\n'
            'before = cv2.getNumThreads()\n'
            'big = np.zeros((3000, 3000), np.uint8)\n'
            'for _ in range(2):\n'
            '    for _ in range(3):\n'
            '        cv2.dilate(big, np.ones((9, 9), np.uint8))\n'
            f'    ev = evaluate_davis({str(SAMPLE)!r}, {str(perturbed_2016)!r}, "2016/val",\n'
            '                        single_object=True, workers=2, progress=False)\n'
            'print(ev.global_metrics["J&F-Mean"], before, cv2.getNumThreads())\n')
    log = tmp_path / 'log.txt'
    with open(log, 'w') as out:
        proc = subprocess.Popen([sys.executable, '-c', code], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            pytest.fail('evaluate_davis hung after cv2 used its thread pool')
    assert proc.returncode == 0, log.read_text()
    value, before, after = log.read_text().split()
    assert 0 < float(value) < 1 and before == after  # cv2's thread setting is restored


def test_csvs(perturbed_2016, tmp_path):
    ev = evaluate_davis(SAMPLE, perturbed_2016, '2016/val', single_object=True, progress=False)
    g_path, s_path = dm.write_csvs(ev, tmp_path / 'out')
    assert Path(g_path).name == 'global_results-2016-val.csv'
    assert Path(s_path).name == 'per-sequence_results-2016-val.csv'
    with open(g_path) as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(dm.GLOBAL_COLUMNS) and len(rows) == 2
    for col, text in zip(rows[0], rows[1]):
        assert len(text.split('.')[1]) >= 6
        assert float(text) == pytest.approx(ev.global_metrics[col], abs=1e-9)
    with open(s_path) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ['Sequence', 'J-Mean', 'F-Mean']
    assert [r[0] for r in rows[1:]] == ['blackswan_1', 'car-shadow_1']
    assert float(rows[2][2]) == pytest.approx(ev.objects[1].f_mean, abs=1e-9)


# ----------------------------------------------------------------------------------------
# Input validation and the CLI
# ----------------------------------------------------------------------------------------

@pytest.fixture
def broken_copy(perturbed_2016, tmp_path):
    dst = tmp_path / 'res'
    shutil.copytree(perturbed_2016, dst)
    return dst


def test_missing_frame_is_reported(broken_copy):
    (broken_copy / 'car-shadow' / '00007.png').unlink()
    (broken_copy / 'car-shadow' / '00020.png').unlink()
    with pytest.raises(DavisEvalError) as info:
        evaluate_davis(SAMPLE, broken_copy, '2016/val', single_object=True, progress=False)
    msg = str(info.value)
    assert '\n' not in msg and 'car-shadow/00007.png' in msg and 'not found' in msg
    assert isinstance(info.value, UserInputError)


def test_wrong_size_and_bad_files_are_reported(broken_copy):
    target = broken_copy / 'blackswan' / '00010.png'
    save_grey(target, np.zeros((240, 427), np.uint8))
    with pytest.raises(DavisEvalError, match=r'blackswan/00010\.png: size 427x240, expected 854x480 like the first annotation'):
        evaluate_davis(SAMPLE, broken_copy, '2016/val', single_object=True, progress=False)
    Image.new('RGB', (854, 480)).save(target)
    with pytest.raises(DavisEvalError, match=r'00010\.png: RGB image with 3 channels'):
        evaluate_davis(SAMPLE, broken_copy, '2016/val', single_object=True, progress=False)
    target.write_bytes(b'not a png')
    with pytest.raises(DavisEvalError, match=r'00010\.png: cannot read'):
        evaluate_davis(SAMPLE, broken_copy, '2016/val', single_object=True, progress=False)
    shutil.rmtree(broken_copy / 'blackswan')
    with pytest.raises(DavisEvalError, match='results folder of sequence'):
        evaluate_davis(SAMPLE, broken_copy, '2016/val', single_object=True, progress=False)
    with pytest.raises(DavisEvalError, match='2017/val.txt: sequence list not found'):
        evaluate_davis(SAMPLE, broken_copy, '2017/val', progress=False)


def test_non_contiguous_ids_warn_and_keep_official_numbers(tmp_path):
    """First annotation with ids 1 and 3: object 2 is absent, scores as a perfect empty object
    (as the official tool does), and the evaluation says so."""
    davis, results = _mini_dataset(tmp_path)
    first = davis / 'Annotations' / '480p' / 'mini' / '00000.png'
    gt = np.array(Image.open(first))
    gt[gt == 2] = 3
    save_palette(first, gt)
    with pytest.warns(UserWarning, match=r'00000\.png: object ids \[1, 3\] are not contiguous; ids \[2\] are absent'):
        ev = evaluate_davis(davis, results, '2017/val', workers=1, progress=False)
    assert [o.name for o in ev.objects] == ['mini_1', 'mini_2', 'mini_3']
    assert (ev.objects[1].j_mean, ev.objects[1].f_mean) == (1.0, 1.0)


def test_result_id_above_ground_truth(tmp_path):
    davis, results = _mini_dataset(tmp_path)
    save_palette(results / 'mini' / '00005.png', square(20, 20, 0, 3, 0, 3, 3))
    with pytest.raises(DavisEvalError, match=r'mini/00005\.png: contains object id 3 .* only 2'):
        evaluate_davis(davis, results, '2017/val', workers=2, progress=False)
    with pytest.raises(DavisEvalError, match='no object in its first frame.*single_object'):
        evaluate_davis(SAMPLE, SAMPLE / 'Annotations' / '480p', '2016/val', workers=1,
                       progress=False)


def test_cli(perturbed_2016, tmp_path):
    script = REPO / 'scripts' / 'evaluate_davis.py'
    run = subprocess.run([sys.executable, str(script), '--davis', str(SAMPLE), '--results',
                          str(perturbed_2016), '--set', '2016/val', '--single_object',
                          '--workers', '2', '--output', str(tmp_path), '--no_progress'],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert 'J&F-Mean' in run.stdout and 'car-shadow_1' in run.stdout
    assert (tmp_path / 'global_results-2016-val.csv').is_file()
    assert (tmp_path / 'per-sequence_results-2016-val.csv').is_file()
    bad = subprocess.run([sys.executable, str(script), '--davis', str(SAMPLE), '--results',
                          str(tmp_path / 'missing'), '--set', '2016/val', '--single_object'],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().count('\n') == 0 and bad.stderr.startswith('error: ')
    assert 'results folder not found' in bad.stderr


def test_decay_bins_stay_right_beyond_256_frames():
    """The official tool casts the bin edges to uint8: at 1000 frames its last bin would be empty.
    Here the first quarter (all 1) minus the last (all 0) is exactly 1."""
    values = [1.0] * 300 + [0.5] * 400 + [0.0] * 300
    mean, recall, decay = dm.db_statistics(values)
    assert decay == 1.0 and recall == 0.3 and mean == pytest.approx(0.5)


def test_sparse_ground_truth_scores_every_annotated_frame_but_the_first(tmp_path):
    """Long-video layout: 9 frames, annotations on 0, 4 and 8 only."""
    davis, results = tmp_path / 'DAVIS', tmp_path / 'res'
    (davis / 'ImageSets' / '2017').mkdir(parents=True)
    (davis / 'ImageSets' / '2017' / 'val.txt').write_text('long\n')
    for folder in (davis / 'JPEGImages' / '480p' / 'long', davis / 'Annotations' / '480p' / 'long', results / 'long'):
        folder.mkdir(parents=True)
    obj = square(20, 20, 2, 7, 2, 7)
    for t in range(9):
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(davis / 'JPEGImages' / '480p' / 'long' / f'{t:05d}.jpg')
        save_palette(results / 'long' / f'{t:05d}.png', obj if t < 6 else np.zeros_like(obj))
        if t % 4 == 0:
            save_palette(davis / 'Annotations' / '480p' / 'long' / f'{t:05d}.png', obj)
    with pytest.raises(DavisEvalError, match='ground truth incomplete.*--sparse'):
        evaluate_davis(davis, results, '2017/val', workers=1, progress=False)
    ev = evaluate_davis(davis, results, '2017/val', workers=1, progress=False, sparse=True)
    assert ev.sequences[0].frames == ['00004', '00008']
    np.testing.assert_array_equal(ev.sequences[0].j[0], [1, 0])
