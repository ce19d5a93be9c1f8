"""What scoring needs of the ground truth is checked before anything is segmented (util.davis_metrics)."""
import numpy as np
import pytest
from PIL import Image

from util.davis_metrics import DavisEvalError, check_ground_truth


def davis_tree(root, annotations, frames, binary=False):
    """One sequence 'v' of 16x16 frames with `annotations` ground-truth PNGs (palette ids 0/1, or 0/255)."""
    gt = root / 'Annotations' / '480p' / 'v'
    jpg = root / 'JPEGImages' / '480p' / 'v'
    gt.mkdir(parents=True)
    jpg.mkdir(parents=True)
    labels = np.zeros((16, 16), np.uint8)
    labels[4:12, 4:12] = 255 if binary else 1
    for t in range(annotations):
        Image.fromarray(labels).save(gt / f'{t:05d}.png')
    for t in range(frames):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(jpg / f'{t:05d}.jpg')
    return root


def test_binary_annotations_in_a_multi_object_evaluation_say_which_tool_scores_them(tmp_path):
    root = davis_tree(tmp_path, 4, 4, binary=True)
    with pytest.raises(DavisEvalError) as e:
        check_ground_truth(root, ['v'])
    assert str(e.value) == (f'{root / "Annotations" / "480p" / "v" / "00000.png"}: the first annotation has no '
                            'object id to score (binary 0/255 annotations, as in DAVIS-2016, are scored as one '
                            'object: eval_davis_2016.py --evaluate, or single_object / scripts/evaluate_davis.py '
                            '--single_object)')
    check_ground_truth(root, ['v'], single_object=True)


def test_sparse_ground_truth_is_found_before_segmenting(tmp_path):
    root = davis_tree(tmp_path, 3, 6)
    gt = root / 'Annotations' / '480p' / 'v'
    with pytest.raises(DavisEvalError) as e:
        check_ground_truth(root, ['v'])
    assert str(e.value) == (f'{gt}: 3 annotation(s) for 6 frames in {root / "JPEGImages" / "480p" / "v"} '
                            '(ground truth incomplete, e.g. a test set; for sparse annotations use --sparse)')
    check_ground_truth(root, ['v'], sparse=True)


def test_complete_multi_object_ground_truth_passes(tmp_path):
    check_ground_truth(davis_tree(tmp_path, 4, 4), ['v'])


def test_eval_davis_evaluate_on_binary_annotations_stops_before_the_model(tmp_path, capsys):
    import eval_davis
    from util.errors import run_main
    root = davis_tree(tmp_path / 'DAVIS', 4, 4, binary=True)
    (root / 'ImageSets' / '2017').mkdir(parents=True)
    (root / 'ImageSets' / '2017' / 'val.txt').write_text('v\n')
    out = tmp_path / 'out'
    argv = ['--davis', root, '--output', out, '--evaluate', '--model', tmp_path / 'never_loaded.pth', '--device', 'cpu']
    with pytest.raises(SystemExit) as e:
        run_main(lambda: eval_davis.main([str(a) for a in argv]))
    assert e.value.code == 2
    assert capsys.readouterr().err == (f'error: {root / "Annotations" / "480p" / "v" / "00000.png"}: the first '
                                       'annotation has no object id to score (binary 0/255 annotations, as in '
                                       'DAVIS-2016, are scored as one object: eval_davis_2016.py --evaluate, or '
                                       'single_object / scripts/evaluate_davis.py --single_object)\n')
    assert not out.exists()
