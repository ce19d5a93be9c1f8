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


def test_a_resumed_evaluation_never_mixes_settings(tmp_path, capsys, recwarn):
    import eval_davis_2016
    from util.errors import run_main
    root = tmp_path / 'DAVIS'
    for t, name in enumerate(('a', 'b')):
        gt, jpg = root / 'Annotations' / '480p' / name, root / 'JPEGImages' / '480p' / name
        gt.mkdir(parents=True)
        jpg.mkdir(parents=True)
        labels = np.zeros((64, 64), np.uint8)
        labels[16:48, 16:48] = 255
        for i in range(3):
            Image.fromarray(labels).save(gt / f'{i:05d}.png')
            Image.fromarray(np.full((64, 64, 3), 60 * i + t, np.uint8)).save(jpg / f'{i:05d}.jpg')
    (root / 'ImageSets' / '2016').mkdir(parents=True)
    (root / 'ImageSets' / '2016' / 'val.txt').write_text('a\nb\n')
    out = tmp_path / 'out'
    argv = ['--davis', root, '--output', out, '--model', 'synthetic', '--device', 'cpu']

    def run(extra):
        try:
            run_main(lambda: eval_davis_2016.main([str(a) for a in argv + extra]))
        except SystemExit as e:
            return e.code, capsys.readouterr().err
        return 0, capsys.readouterr().err

    assert run([])[0] == 0
    assert run([])[0] == 0   # the same settings: complete, nothing to do
    code, err = run(['--quality_thr', '0.5'])
    assert code == 2
    assert err.splitlines()[-1] == (f'error: {out}: holds results made with other settings (quality_thr 0.8 -> 0.5); '
                                    'use another --output (or delete it to start over)')
