"""eval_davis.py / eval_davis_2016.py end to end on real DAVIS frames, and every bad input."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import eval_davis
import eval_davis_2016
from pipeline.video import RunOptions
from util.errors import UserInputError, run_main
from util.palette import DAVIS_PALETTE

REPO = Path(eval_davis.__file__).resolve().parent

FRAMES = 3   # full-resolution frames per video: the network costs seconds per frame on CPU
VIDEOS = ('blackswan', 'car-shadow')


def make_davis(shared_dir, root, year, frames=FRAMES):
    """A DAVIS tree with the first frames of the sample videos.

    year 2016 keeps the binary 0/255 annotations; 2017 turns them into palette
    PNGs with two objects (left and right half of the foreground).
    """
    sample = shared_dir / 'data' / 'DAVIS-2016-sample'
    for video in VIDEOS:
        (root / 'JPEGImages' / '480p' / video).mkdir(parents=True)
        (root / 'Annotations' / '480p' / video).mkdir(parents=True)
        for i in range(frames):
            shutil.copy(sample / 'JPEGImages' / '480p' / video / f'{i:05d}.jpg', root / 'JPEGImages' / '480p' / video)
        mask_src = sample / 'Annotations' / '480p' / video / '00000.png'
        mask_dst = root / 'Annotations' / '480p' / video / '00000.png'
        if year == 2016:   # all annotations, so --evaluate can score the run
            for i in range(frames):
                shutil.copy(mask_src.with_name(f'{i:05d}.png'), mask_dst.with_name(f'{i:05d}.png'))
        else:
            fg = np.asarray(Image.open(mask_src)) > 127
            labels = fg.astype(np.uint8)
            labels[:, labels.shape[1] // 2:] *= 2
            img = Image.fromarray(labels, mode='P')
            img.putpalette(DAVIS_PALETTE.reshape(-1).tolist())
            img.save(mask_dst)
    (root / 'ImageSets' / str(year)).mkdir(parents=True)
    (root / 'ImageSets' / str(year) / 'val.txt').write_text('\n'.join(VIDEOS) + '\n')
    return root


def run_cli(module, argv, capsys):
    """Runs a CLI's main(argv) in-process as the command line does; returns (exit code, stderr)."""
    code = 0
    try:
        run_main(lambda: module.main([str(a) for a in argv]))
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def assert_palette_outputs(out, expected_ids):
    for video in VIDEOS:
        pngs = sorted((out / video).glob('*.png'))
        assert [p.name for p in pngs] == [f'{i:05d}.png' for i in range(FRAMES)]
        for p in pngs:
            img = Image.open(p)
            assert img.mode == 'P' and img.size == (854, 480)
            assert np.array_equal(np.asarray(img.getpalette()[:24]), DAVIS_PALETTE[:8].reshape(-1))
            assert set(np.unique(np.asarray(img))) <= expected_ids
        first = np.asarray(Image.open(pngs[0]))
        assert set(np.unique(first)) == expected_ids   # the given mask comes back unchanged


@pytest.mark.slow
def test_eval_davis_2016_writes_854x480_palette_pngs_and_resumes(shared_dir, synthetic_checkpoint, tmp_path):
    root = make_davis(shared_dir, tmp_path / 'DAVIS', 2016)
    out = tmp_path / 'out'
    cmd = [sys.executable, 'eval_davis_2016.py', '--model', synthetic_checkpoint, '--davis', root,
           '--output', out, '--device', 'cpu', '--evaluate']
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=True, cwd=REPO)
    assert f'2 videos, {2 * FRAMES} frames' in result.stdout and 'FPS' in result.stdout
    assert_palette_outputs(out, {0, 1})
    # --evaluate scored the middle frame of each video against the real annotations
    header, values = (out / 'global_results-2016-val.csv').read_text().splitlines()
    assert header.startswith('J&F-Mean,J-Mean') and 0 <= float(values.split(',')[1]) <= 1
    rows = (out / 'per-sequence_results-2016-val.csv').read_text().splitlines()
    assert [r.split(',')[0] for r in rows[1:]] == ['blackswan_1', 'car-shadow_1']
    again = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=True, cwd=REPO)
    assert '2 of 2 videos already complete' in again.stdout


@pytest.mark.slow
def test_eval_davis_2017_multi_object(shared_dir, synthetic_checkpoint, tmp_path, capsys):
    make_davis(shared_dir, tmp_path / 'DAVIS' / 'trainval', 2017)
    out = tmp_path / 'out'
    (out / 'car-shadow').mkdir(parents=True)   # an incomplete earlier run is redone, not skipped
    code, err = run_cli(eval_davis, ['--model', synthetic_checkpoint, '--davis', tmp_path / 'DAVIS',
                                     '--split', 'val', '--output', out, '--device', 'cpu'], capsys)
    assert code == 0, err
    assert_palette_outputs(out, {0, 1, 2})
    assert not list(out.glob('.*partial'))


def test_published_flags_and_default_root(shared_dir, synthetic_checkpoint, tmp_path, monkeypatch, capsys):
    """The published command line: data/DAVIS/2017 by default, --no_top and --use_km reach the engine."""
    from model.memory_read import KM_SIGMA
    make_davis(shared_dir, tmp_path / 'data' / 'DAVIS' / '2017' / 'trainval', 2017, frames=2)
    monkeypatch.chdir(tmp_path)
    segmenters = []
    make = RunOptions.segmenter

    def recording(options, *args):
        segmenters.append(make(options, *args))
        return segmenters[-1]

    monkeypatch.setattr(RunOptions, 'segmenter', recording)
    code, err = run_cli(eval_davis, ['--model', synthetic_checkpoint, '--output', 'out', '--no_top', '--use_km',
                                     '--memory_policy', 'recent', '--device', 'cpu'], capsys)
    assert code == 0, err
    engines = [s.engine for s in segmenters]
    assert len(engines) == 2 and all(e.top_k is None and e.km_sigma == KM_SIGMA for e in engines)
    assert all(e.bank.policy == 'recent' and e.bank.capacity == 20 for e in engines)
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == [*VIDEOS, 'qdmn_settings.json']   # + settings


@pytest.fixture
def small_davis(shared_dir, tmp_path):
    return make_davis(shared_dir, tmp_path / 'DAVIS', 2016, frames=2)


def corrupt_first_mask_empty(root):
    path = root / 'Annotations' / '480p' / 'blackswan' / '00000.png'
    Image.fromarray(np.zeros((480, 854), np.uint8)).save(path)


def corrupt_mask_size(root):
    path = root / 'Annotations' / '480p' / 'blackswan' / '00000.png'
    Image.fromarray(np.pad(np.full((120, 427), 255, np.uint8), ((0, 120), (0, 0)))).save(path)   # binary 0/255


def corrupt_frame_size(root):
    path = root / 'JPEGImages' / '480p' / 'blackswan' / '00001.jpg'
    Image.open(path).resize((427, 240)).save(path)


def corrupt_frame_file(root):
    (root / 'JPEGImages' / '480p' / 'blackswan' / '00001.jpg').write_bytes(b'\xff\xd8 truncated jpeg')


BAD_INPUTS = [
    ('missing root', lambda root: shutil.rmtree(root), 'DAVIS root not found'),
    ('missing image set', lambda root: (root / 'ImageSets' / '2016' / 'val.txt').unlink(), 'image set not found'),
    ('no frames', lambda root: [p.unlink() for p in (root / 'JPEGImages' / '480p' / 'blackswan').glob('*')],
     'video blackswan has no frames'),
    ('first mask missing', lambda root: (root / 'Annotations' / '480p' / 'blackswan' / '00000.png').unlink(),
     'blackswan/00000.png: file not found'),
    ('first mask empty', corrupt_first_mask_empty, 'annotation contains no object'),
    ('mask size', corrupt_mask_size, 'annotation is 427x240 but the frames are 854x480'),
    ('frame sizes differ', corrupt_frame_size, '00001.jpg: frame is 427x240, expected 854x480'),
    ('corrupt frame', corrupt_frame_file, '00001.jpg: cannot read image'),
]


@pytest.mark.parametrize('name, corrupt, message', BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_dataset_input_is_one_clear_line(small_davis, synthetic_checkpoint, tmp_path, capsys,
                                             name, corrupt, message):
    corrupt(small_davis)
    out = tmp_path / 'out'
    code, err = run_cli(eval_davis_2016, ['--model', synthetic_checkpoint, '--davis', small_davis,
                                          '--output', out, '--device', 'cpu'], capsys)
    assert code == 2
    assert err.startswith('error: ') and message in err and err.count('\n') == 1, err
    # nothing half-written, and no empty output folder: the run failed before finishing a video
    assert not out.exists()


def test_every_video_is_checked_before_the_model_loads(small_davis, tmp_path, capsys):
    corrupt_first_mask_empty(small_davis)
    (small_davis / 'Annotations' / '480p' / 'car-shadow' / '00000.png').unlink()
    out = tmp_path / 'out'
    # the checkpoint does not exist either: the videos are reported first, all of them, in one line
    code, err = run_cli(eval_davis_2016, ['--model', tmp_path / 'none.pth', '--davis', small_davis,
                                          '--output', out, '--device', 'cpu'], capsys)
    assert code == 2 and err.count('\n') == 1, err
    assert '2 of 2 videos cannot be processed' in err and 'contains no object' in err
    assert 'car-shadow/00000.png: file not found' in err and 'none.pth' not in err
    assert not out.exists()


def test_skip_bad_videos_runs_the_rest_and_fails_at_the_end(small_davis, synthetic_checkpoint, tmp_path,
                                                            capsys):
    corrupt_mask_size(small_davis)
    out = tmp_path / 'out'
    code, err = run_cli(eval_davis_2016, ['--model', synthetic_checkpoint, '--davis', small_davis, '--output', out,
                                          '--device', 'cpu', '--skip_bad_videos'], capsys)
    assert code == 2 and err.count('\n') == 1, err
    assert '1 video(s) skipped (--skip_bad_videos)' in err and 'annotation is 427x240' in err
    assert sorted(p.name for p in out.iterdir()) == ['car-shadow', 'qdmn_settings.json']
    assert len(list((out / 'car-shadow').glob('*.png'))) == 2


@pytest.mark.parametrize('checkpoint, message', [
    ('missing', 'checkpoint not found'),
    ('single_object_named_wrongly', 'does not match the QDMN architecture'),
])
def test_bad_checkpoint(small_davis, tmp_path, capsys, checkpoint, message):
    path = tmp_path / 'model.pth'
    if checkpoint != 'missing':
        import torch
        torch.save({'network': {'conv.weight': torch.zeros(1)}}, path)
    code, err = run_cli(eval_davis_2016, ['--model', path, '--davis', small_davis, '--output', tmp_path / 'o',
                                          '--device', 'cpu'], capsys)
    assert code == 2 and message in err and str(path) in err


@pytest.mark.parametrize('kind', ['directory', 'garbage', 'pickle'])
def test_checkpoint_that_is_not_one(tmp_path, kind):
    """One clear sentence per kind, never torch's advice to load with weights_only=False."""
    import datetime
    import pickle
    from model.checkpoint import read_state_dict
    path = tmp_path / 'model.pth'
    if kind == 'directory':
        path.mkdir()
    elif kind == 'garbage':
        path.write_text('not a checkpoint')
    else:
        path.write_bytes(pickle.dumps({'saved': datetime.date(2022, 10, 23)}))
    with pytest.raises(UserInputError) as info:
        read_state_dict(str(path))
    message = str(info.value)
    assert message.startswith(f'{path}: ') and 'weights_only' not in message and '\n' not in message
    assert {'directory': 'is a directory', 'garbage': 'not a PyTorch checkpoint',
            'pickle': 'not a PyTorch checkpoint'}[kind] in message


def test_output_not_writable(small_davis, synthetic_checkpoint, tmp_path, capsys):
    blocker = tmp_path / 'a_file'
    blocker.write_text('x')
    code, err = run_cli(eval_davis_2016, ['--model', synthetic_checkpoint, '--davis', small_davis,
                                          '--output', blocker / 'out', '--device', 'cpu'], capsys)
    assert code == 2 and 'output folder is not writable' in err


BAR_THEN_PROBLEM = """
import sys, progressbar
from pipeline.video import RunOptions
from util.errors import UserInputError, run_main

def main():
    with progressbar.ProgressBar(max_value=10, fd=sys.stderr, is_terminal=True, line_breaks=False,
                                 poll_interval=0) as bar:
        bar.update(3)
        raise {problem}

run_main(main)
"""


@pytest.mark.parametrize('problem, code, line', [('KeyboardInterrupt()', 130, 'interrupted'),
                                                 ("UserInputError('disk full')", 2, 'error: disk full')])
def test_messages_start_a_line_after_a_progress_bar(problem, code, line):
    """The CLIs drive their bars in `with` blocks: the bar ends its line (as on a terminal), and
    `interrupted` or the `error:` message stands on a line of its own."""
    result = subprocess.run([sys.executable, '-c', BAR_THEN_PROBLEM.format(problem=problem)], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == code
    assert '|' in result.stderr and result.stderr.endswith(f'\n{line}\n'), result.stderr
