"""scripts/expand_long_video.py: a forward-backward long video in the DAVIS layout, and scoring it."""
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import eval_davis_2016
from conftest import REPO, SHARED
from scripts import evaluate_davis, expand_long_video
from util.errors import run_main


def five_frame_source(root):
    """A DAVIS tree with the first 5 frames of the sample's car-shadow."""
    sample = SHARED / 'data' / 'DAVIS-2016-sample'
    for sub, ext in (('JPEGImages', 'jpg'), ('Annotations', 'png')):
        (root / sub / '480p' / 'car-shadow').mkdir(parents=True)
        for t in range(5):
            shutil.copy(sample / sub / '480p' / 'car-shadow' / f'{t:05d}.{ext}', root / sub / '480p' / 'car-shadow')
    return root


def test_expand_plays_back_and_forth_with_sparse_annotations(tmp_path):
    source = five_frame_source(tmp_path / 'src')
    sample = SHARED / 'data' / 'DAVIS-2016-sample'
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


def run(main, argv, capsys):
    """Runs a CLI's main(argv) in-process as its console entry point does; returns (exit code, stderr)."""
    try:
        run_main(lambda: main([str(a) for a in argv]))
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def test_eval_davis_2016_evaluate_sparse_matches_the_standalone_evaluation(synthetic_checkpoint, tmp_path, capsys):
    """A 10-frame expanded video annotated on frames 0, 3, 6 and 9, segmented and scored by the CLI."""
    long = tmp_path / 'long'
    expand_long_video.main(['--davis', str(five_frame_source(tmp_path / 'src')), '--video', 'car-shadow',
                            '--times', '2', '--output', str(long), '--height', '48', '--annotate_every', '3'])
    out = tmp_path / 'out'
    cli = ['--model', synthetic_checkpoint, '--davis', long, '--output', out, '--device', 'cpu', '--evaluate']
    # without --sparse the scoring's precondition fails up front: one line, nothing segmented
    code, err = run(eval_davis_2016.main, cli, capsys)
    assert code == 2 and err.count('\n') == 1, err
    assert err.startswith('error: ') and '4 annotation(s) for 10 frames' in err
    assert 'ground truth incomplete' in err and 'use --sparse' in err
    assert not out.exists()
    # with --sparse every frame is segmented and the annotated ones scored
    code, err = run(eval_davis_2016.main, cli + ['--sparse'], capsys)
    assert code == 0, err
    assert len(list((out / 'car-shadow_x2').glob('*.png'))) == 10
    standalone = tmp_path / 'standalone'
    code, err = run(evaluate_davis.main, ['--davis', long, '--results', out, '--set', '2016/val', '--single_object',
                                          '--sparse', '--output', standalone, '--no_progress'], capsys)
    assert code == 0, err
    for name in ('global_results-2016-val.csv', 'per-sequence_results-2016-val.csv'):
        assert (out / name).read_text() == (standalone / name).read_text()
    # the frames it scored: every annotation but the first, the last frame included
    from util.davis_metrics import evaluate_davis as evaluate
    evaluation = evaluate(long, out, '2016/val', single_object=True, workers=1, progress=False, sparse=True)
    assert evaluation.sequences[0].frames == ['00003', '00006', '00009']
    j_mean = float((out / 'global_results-2016-val.csv').read_text().splitlines()[1].split(',')[1])
    assert j_mean == pytest.approx(np.mean(evaluation.sequences[0].j), abs=1e-9)


def test_sparse_needs_evaluate(tmp_path, capsys):
    code, err = run(eval_davis_2016.main, ['--davis', tmp_path, '--output', tmp_path / 'out', '--sparse'], capsys)
    assert code == 2 and '--sparse applies to --evaluate' in err
