"""LVOS scorer (util/lvos_metrics.py, scripts/evaluate_lvos.py) against hand-computed J, F, V."""
import csv
import math
import shutil

import numpy as np
import pytest
from lvos_tree import square, write_results, write_split

from scripts import evaluate_lvos as evaluate_lvos_cli
from util.errors import UserInputError
from util.davis_metrics import f_measure, jaccard
from util.lvos_metrics import DEFAULT_UNSEEN_LIST, evaluate_lvos, print_results, v_statistic

SHAPE = (20, 20)   # boundary radius 1
A = square(SHAPE, 2, 5, 2, 5)          # object 3's square, and its shifts (tests/test_davis_metrics.py):
A1 = square(SHAPE, 2, 5, 3, 6)         # one pixel: J 12/20, F 1
A2 = square(SHAPE, 2, 5, 4, 7)         # two pixels: J 1/3, F 0.625
B = square(SHAPE, 10, 13, 10, 13)      # object 7's square
EMPTY = np.zeros(SHAPE, np.uint8)
UNSEEN = 'R3UJGYwy'                    # on the official unseen list


def ids(*parts):
    """Label map of (mask, id) pairs."""
    out = np.zeros(SHAPE, np.uint8)
    for mask, i in parts:
        out[mask > 0] = i
    return out


def seen_gt(number):
    """Object 3 on frames 0-25 but gone (left the scene) on 20; object 7 enters on 15, to 30."""
    parts = [(A, 3)] if number <= 25 and number != 20 else []
    parts += [(B, 7)] if 15 <= number <= 30 else []
    return ids(*parts)


def unseen_gt(number):
    return ids((A, 1)) if 5 <= number <= 15 else None


SEEN_RESULTS = {
    0: ids((B, 3)),                      # object 3's first frame: not scored
    5: ids((A, 3), (B, 9)),              # an id the metadata does not have: ignored
    10: ids((A1, 3), (B, 7)),            # object 7 before it enters: not scored
    15: ids((A2, 3), (B, 7)),            # object 7's first frame: not scored
    20: ids((B, 7)),                     # object 3 left, and the result has nothing of it
    25: ids((A, 3)),                     # object 7 missed
    30: EMPTY,                           # object 7's last frame: not scored
}


@pytest.fixture
def split(tmp_path):
    """valid/ with a seen video (two objects, one entering late) and an unseen one; perfect-where-
    hand-chosen results in res/."""
    split_dir, results = tmp_path / 'valid', tmp_path / 'res'
    write_split(split_dir, {'seenA': (8, {3: (0, 6), 7: (15, 4)}, seen_gt),
                            UNSEEN: (4, {1: (5, 3)}, unseen_gt)}, SHAPE, frames=False)
    write_results(results, 'seenA', SEEN_RESULTS)
    write_results(results, UNSEEN, {5: ids((A, 1)), 10: ids((A1, 1)), 15: EMPTY})
    return split_dir, results


def v_by_hand(j, f):
    jf = [(a + b) / 2 for a, b in zip(j, f)]
    m = sum(jf) / len(jf)
    return math.sqrt(round(sum((m - x) ** 2 for x in jf) / len(jf), 4))


def test_hand_computed_objects_and_means(split):
    ev = evaluate_lvos(*split, workers=1, progress=False)
    by_name = {o.name: o for o in ev.objects}
    assert list(by_name) == ['R3UJGYwy_1', 'seenA_1', 'seenA_2']   # videos by name, objects by metadata rank
    obj3, obj7, unseen = by_name['seenA_1'], by_name['seenA_2'], by_name['R3UJGYwy_1']
    # object 3: frames 5, 10, 15, 20 (0 and 25 are its first and last)
    np.testing.assert_allclose(obj3.j, [1, 0.6, 1 / 3, 1], rtol=0, atol=1e-15)
    np.testing.assert_allclose(obj3.f, [1, 1, 0.625, 1], rtol=0, atol=1e-15)
    # object 7: frames 20, 25 (15 and 30 are its first and last)
    np.testing.assert_array_equal(obj7.j, [1, 0])
    np.testing.assert_array_equal(obj7.f, [1, 0])
    np.testing.assert_allclose(unseen.j, [0.6], atol=1e-15)
    assert unseen.f.tolist() == [1.0] and not obj3.unseen and unseen.unseen
    v3 = v_by_hand(obj3.j.tolist(), obj3.f.tolist())
    assert obj3.v == pytest.approx(v3, abs=1e-15) and obj7.v == 0.5 and unseen.v == 0.0
    j_seen, f_seen = ((1 + 0.6 + 1 / 3 + 1) / 4 + 0.5) / 2, ((1 + 1 + 0.625 + 1) / 4 + 0.5) / 2
    g = ev.global_metrics
    assert g['J-seen-Mean'] == pytest.approx(j_seen, abs=1e-12) and g['J-unseen-Mean'] == pytest.approx(0.6)
    assert g['F-seen-Mean'] == pytest.approx(f_seen, abs=1e-12) and g['F-unseen-Mean'] == 1.0
    assert g['J-Mean'] == pytest.approx((j_seen + 0.6) / 2, abs=1e-12)
    assert g['J&F-Mean'] == pytest.approx((j_seen + 0.6 + f_seen + 1) / 4, abs=1e-12)
    assert g['V-seen-Mean'] == pytest.approx((v3 + 0.5) / 2, abs=1e-12) and g['V-unseen-Mean'] == 0.0
    assert g['V-Mean'] == pytest.approx((v3 + 0.5) / 4, abs=1e-12)


def test_v_rounds_to_four_decimals_before_the_square_root():
    # JF = 0.5 +- 0.00707: the mean square deviation 5e-5 rounds to 0.0001 -> V = 0.01, not 0.00707
    j = [0.5 + 0.00707107, 0.5 - 0.00707107]
    assert v_statistic(j, j) == pytest.approx(0.01, abs=1e-15)
    # 0.00004 rounds to 0: V is 0 although the values differ
    j = [0.5 + 0.0063, 0.5 - 0.0063]
    assert v_statistic(j, j) == 0.0
    assert v_statistic([1, 0.6, 1 / 3, 1], [1, 1, 0.625, 1]) == pytest.approx(math.sqrt(0.0453), abs=1e-15)


def test_pool_gives_the_same_numbers(split):
    one = evaluate_lvos(*split, workers=1, progress=False)
    two = evaluate_lvos(*split, workers=2, progress=False)
    assert one.global_metrics == two.global_metrics
    for a, b in zip(one.objects, two.objects):
        assert a.j.tolist() == b.j.tolist() and a.f.tolist() == b.f.tolist()


def test_long_range_decay_bins_and_results_under_annotations(tmp_path):
    """300 scored frames: the decay's bins stay right beyond 256 (the official uint8 edges would not)."""
    split_dir, results = tmp_path / 'valid', tmp_path / 'out'
    shape = (8, 8)
    obj = square(shape, 2, 4, 2, 4)
    write_split(split_dir, {'long': (302, {1: (0, 302)}, lambda n: obj)}, shape, frames=False)
    # perfect on the first 100 scored frames (numbers 5..500), then missed; under Annotations/ as eval_lvos writes
    write_results(results / 'Annotations', 'long',
                  {5 * k: obj if k <= 100 else np.zeros(shape, np.uint8) for k in range(302)})
    (o,) = evaluate_lvos(split_dir, results, workers=2, progress=False).objects
    assert o.j.size == 300 and o.j_mean == pytest.approx(1 / 3) and o.j_decay == 1.0 and o.f_decay == 1.0
    assert o.v == pytest.approx(math.sqrt(round(2 / 9, 4)), abs=1e-15)


def test_only_seen_videos_give_nan_and_a_clear_line(split, tmp_path, capsys):
    split_dir, results = split
    only_seen = tmp_path / 'unseen.txt'
    only_seen.write_text('someOtherVideo\n')
    ev = evaluate_lvos(split_dir, results, only_seen, workers=1, progress=False)
    assert math.isnan(ev.global_metrics['J-unseen-Mean']) and math.isnan(ev.global_metrics['J&F-Mean'])
    assert not math.isnan(ev.global_metrics['J-seen-Mean'])
    print_results(ev)
    assert 'note: no unseen video in valid' in capsys.readouterr().out


def test_cli_writes_the_official_csvs(split, tmp_path, capsys):
    split_dir, results = split
    unseen = tmp_path / 'list.txt'
    unseen.write_text('seenA\n')   # replaces the official list: now only seenA is unseen
    evaluate_lvos_cli.main(['--lvos', str(split_dir), '--results', str(results), '--unseen_list', str(unseen),
                            '--workers', '1', '--no_progress'])
    out = capsys.readouterr().out
    assert 'Global results for valid' in out and 'seenA_2' in out
    rows = list(csv.reader((results / 'global_results-valid.csv').open()))
    assert rows[0] == ['J&F-Mean', 'J-Mean', 'J-seen-Mean', 'J-unseen-Mean', 'F-Mean', 'F-seen-Mean',
                       'F-unseen-Mean', 'V-Mean', 'V-seen-Mean', 'V-unseen-Mean']
    values = dict(zip(rows[0], map(float, rows[1])))
    assert values['J-seen-Mean'] == pytest.approx(0.6, abs=1e-9)           # R3UJGYwy is seen now
    assert values['V-unseen-Mean'] == pytest.approx((math.sqrt(0.0453) + 0.5) / 2, abs=1e-9)
    seq = list(csv.reader((results / 'per-sequence_results-valid.csv').open()))
    assert seq[0] == ['Sequence', 'J-Mean', 'F-Mean', 'V-Mean']
    assert [r[0] for r in seq[1:]] == ['R3UJGYwy_1', 'seenA_1', 'seenA_2']
    assert seq[3][1:] == ['0.500000000', '0.500000000', '0.500000000']


def test_default_unseen_list_is_the_official_one(shared_dir):
    official = (shared_dir / 'reference' / 'lvos' / 'unseen_videos.txt').read_text().split()
    assert open(DEFAULT_UNSEEN_LIST).read().split() == official and UNSEEN in official


def test_missing_result_names_the_first_missing_file(split):
    split_dir, results = split
    (results / 'seenA' / '00000010.png').unlink()
    (results / 'seenA' / '00000025.png').unlink()
    with pytest.raises(UserInputError, match=r'seenA/00000010\.png: result mask not found'):
        evaluate_lvos(split_dir, results, workers=1, progress=False)


def test_unscored_frames_need_no_result(split):
    split_dir, results = split
    for number in (0, 30):   # first and last annotated frames of seenA's objects
        (results / 'seenA' / f'{number:08d}.png').unlink()
    assert len(evaluate_lvos(split_dir, results, workers=1, progress=False).objects) == 3


def test_wrong_size_result(split):
    split_dir, results = split
    write_results(results, 'seenA', {15: np.zeros((20, 21), np.uint8)})
    with pytest.raises(UserInputError, match=r'seenA/00000015\.png: size 21x20, the ground truth is 20x20'):
        evaluate_lvos(split_dir, results, workers=2, progress=False)


@pytest.mark.parametrize('mutate, message', [
    (lambda d: (d / 'valid_meta.json').unlink(), r'valid_meta\.json: LVOS metadata not found'),
    (lambda d: (d / 'valid_meta.json').write_text('{"videos": []}'), r'valid_meta\.json: not an LVOS metadata'),
    (lambda d: (d / 'valid_meta.json').write_text(
        '{"videos": {"v": {"objects": {"1": {"frame_range": {"start": 0, "end": 20, "frame_nums": 3}}}}}}'),
     r'frame_nums 3 annotations every 5 frames from 0 end at frame 10, but end is 20'),
    (lambda d: shutil.rmtree(d / 'Annotations' / 'seenA'), r'seenA/00000005\.png: ground-truth annotation not found'),
])
def test_bad_split_is_one_clear_error(split, mutate, message):
    split_dir, results = split
    mutate(split_dir)
    with pytest.raises(UserInputError, match=message):
        evaluate_lvos(split_dir, results, workers=1, progress=False)


def test_object_with_two_annotations_is_left_out_with_a_warning(tmp_path):
    split_dir, results = tmp_path / 'valid', tmp_path / 'res'
    write_split(split_dir, {'v': (4, {1: (0, 4), 2: (5, 2)}, lambda n: ids((A, 1), (B, 2)))}, SHAPE, frames=False)
    write_results(results, 'v', {5: ids((A, 1)), 10: ids((A, 1))})
    with pytest.warns(UserWarning, match='v_2 .* 2 annotated frame'):
        ev = evaluate_lvos(split_dir, results, workers=1, progress=False)
    assert [o.name for o in ev.objects] == ['v_1'] and ev.objects[0].j.tolist() == [1.0, 1.0]


def test_random_frames_match_the_binary_masks_scored_one_by_one(tmp_path):
    """Several objects on random blobs, void and stray ids: each object's J and F are DAVIS's on
    `== id` of the ground truth and the result, as the official tool computes them object by object."""
    rng = np.random.default_rng(1)
    shape = (36, 50)

    def blobs():
        labels = np.zeros(shape, np.uint8)
        for i in (2, 5, 9, 255):   # 9 is no object of the metadata, 255 void
            y, x = rng.integers(0, shape[0] - 10), rng.integers(0, shape[1] - 10)
            labels[y:y + rng.integers(3, 16), x:x + rng.integers(3, 20)] = i
        return labels

    frames = {n: blobs() for n in range(0, 40, 5)}
    write_split(tmp_path / 'valid', {'rand': (8, {5: (0, 8), 2: (10, 5)}, frames.get)}, shape, frames=False)
    results = {n: blobs() for n in frames}
    write_results(tmp_path / 'res', 'rand', results)
    obj5, obj2 = evaluate_lvos(tmp_path / 'valid', tmp_path / 'res', workers=1, progress=False).objects
    for obj, numbers in ((obj5, range(5, 35, 5)), (obj2, range(15, 30, 5))):
        assert obj.j.tolist() == [jaccard(frames[n] == obj.object_id, results[n] == obj.object_id) for n in numbers]
        assert obj.f.tolist() == [f_measure(frames[n] == obj.object_id, results[n] == obj.object_id)
                                  for n in numbers]
    assert 0 < obj5.j_mean < 1 and obj2.name == 'rand_2'
