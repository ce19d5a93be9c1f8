"""--save_memory_log: the engines' record of every frame's quality and memory decision, as CSV and PNG."""
import csv
import os
import stat
import subprocess
import sys
import zipfile
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

import eval_davis_2016
import pipeline.video
import qdmn.network
import segment_video
from conftest import REPO
from inference_core import InferenceCore, propagate
from test_davis_engine import run_golden
from test_eval_davis_cli import VIDEOS, make_davis, run_cli
from test_segment_video import run_cli as run_segment_video, save_palette_png, write_noise_frames
from test_youtube import ScriptedNet, _labels, _run, build_tree, run_eval
from util.errors import UserInputError
from util.memory_log import MemoryLog

SIZE = 64   # processing short side of the CLI runs: they check the files, not the masks


def read_rows(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def frames_of(row):
    return [int(f) for f in row['memory'].split()]


def assert_png(path):
    with Image.open(path) as img:
        img.verify()   # a complete, valid PNG
    with Image.open(path) as img:
        assert img.format == 'PNG' and img.width >= 600


def assert_umask_mode(path):
    """Created like any other file (a mkstemp file would be readable by its owner only)."""
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_golden_blackswan_log_is_the_engines_record(network, shared_dir, tmp_path):
    _, _, golden, core = run_golden(network, shared_dir / 'reference' / 'golden', 'blackswan')
    names = [f'{i:05d}' for i in range(30)]
    csv_path, png_path = core.memory_log.write(tmp_path, 'blackswan', names)
    rows = read_rows(csv_path)
    assert list(rows[0]) == ['frame', 'name', 'score_1', 'quality', 'decision', 'memory']
    assert [r['frame'] for r in rows] == [str(i) for i in range(30)] and [r['name'] for r in rows] == names

    decisions = [r['decision'] for r in rows]
    assert decisions[0] == 'first frame' and decisions[-1] == 'not encoded'
    reasons = {'stored': 'stored', 'not due': 'not_due', 'low quality': 'low_quality'}
    assert {reasons[d]: n for d, n in Counter(decisions[1:-1]).items()} == \
        {r: n for r, n in core.decisions.items() if n}
    stored = [int(r['frame']) for r in rows if r['decision'] == 'stored']
    assert [0] + stored == core.bank.kept_frames() == [0, 5, 10, 15, 20, 25]
    assert frames_of(rows[-1]) == [0, 5, 10, 15, 20, 25] and core.bank.frames()[-1] == 28   # 28: temporary
    assert frames_of(rows[12]) == [0, 5, 10]   # the memory after each frame's decision

    # the scores are the published ones; the quality is each frame's over the first frame's
    scores = np.array([float(r['score_1']) for r in rows[:-1]])
    np.testing.assert_allclose(scores, golden['scores'][:, 0], rtol=1e-3)
    assert rows[-1]['score_1'] == rows[-1]['quality'] == rows[0]['quality'] == ''
    quality = np.array([float(r['quality']) for r in rows[1:-1]])
    np.testing.assert_allclose(quality, golden['scores'][1:, 0] / golden['scores'][0, 0], rtol=1e-3)
    assert_png(png_path)


@pytest.mark.parametrize('policy', ['quality', 'recent'])
def test_replaced_names_the_frame_really_evicted(network, policy, tmp_path):
    """Every due frame stored (mem_freq 1, no gate), capacity 2: the bank evicts from frame 4 on."""
    log = MemoryLog([4])
    core = InferenceCore(network, top_k=20, mem_freq=1, quality_thr=-1.0, memory_thr=2, memory_policy=policy,
                         memory_log=log)
    removed = {}   # what really left the bank at each offer, watched from outside the log
    offer = core.bank.offer

    def watched_offer(frame, *args):
        before = {e.frame for e in core.bank.stored}
        decision = offer(frame, *args)
        removed[frame] = before - {e.frame for e in core.bank.stored}
        return decision

    core.bank.offer = watched_offer
    g = torch.Generator().manual_seed(0)
    first = torch.zeros(1, 1, 32, 48)
    first[..., 8:24, 10:30] = 1
    list(propagate(core, (torch.randn(1, 3, 32, 48, generator=g) for _ in range(9)), first))

    rows = read_rows(log.write(tmp_path, 'synthetic', [f'f{i}' for i in range(9)])[0])
    assert rows[0]['decision'] == 'first frame' and rows[-1]['decision'] == 'not encoded'
    replaced = {}
    for prev, row in zip(rows, rows[1:-1]):
        frame, decision = int(row['frame']), row['decision'].split()
        assert decision[0] in ('stored', 'replaced') and frame in frames_of(row)
        if decision[0] == 'replaced':
            replaced[frame] = int(decision[1])
            assert removed[frame] == {replaced[frame]}
            assert replaced[frame] in frames_of(prev) and replaced[frame] not in frames_of(row)
        else:
            assert removed[frame] == set()
    assert sorted(replaced) == [4, 5, 6, 7] and len(replaced) == core.decisions['replaced']
    if policy == 'recent':   # the oldest stored frame goes first
        assert list(replaced.values()) == [1, 2, 3, 4]
    assert frames_of(rows[-1]) == core.bank.kept_frames()
    assert 'score_4' in rows[0] and log.gate == (-1.0 if policy == 'quality' else None)


def test_youtube_log_per_pass_with_labelled_frames_and_a_shifted_start(tmp_path):
    """Labels on engine frames 0 and 4 (video frames 10 and 14), capacity 1, every frame due."""
    log = MemoryLog(first_frame=10)
    # frame 13 evicts 11 (cost e^-2 + 1.0 against e^-1 + 0.9 for 12), frame 17 evicts 15 (e^-2 + 1.0 < e^-1 + 0.8)
    scores = [[1.0], [1.0], [0.9], [1.0], [1.0, 0.5], [1.0, 1.0], [0.8, 0.8], [1.0, 1.0]]
    core, _ = _run(ScriptedNet(scores), 9, {0: _labels(3), 4: _labels(3, 8)}, mem_freq=1, memory_thr=1,
                   memory_log=log)
    rows = read_rows(log.write(tmp_path, 'clip', {i: f'img{i}' for i in range(10, 19)})[0])
    assert [r['frame'] for r in rows] == [str(i) for i in range(10, 19)] and rows[0]['name'] == 'img10'
    assert [r['decision'] for r in rows] == ['labelled', 'stored', 'stored', 'replaced 11', 'labelled',
                                             'stored', 'stored', 'replaced 15', 'not encoded']
    # object 8 enters on frame 14; the quality restarts at 1 on each pass's first propagated frame
    assert [r['score_8'] for r in rows] == [''] * 4 + ['0.5', '1', '0.8', '1', '']
    assert [r['quality'] for r in rows] == ['', '1', '0.9', '1', '', '1', '0.8', '1', '']
    # frames 12 and 13, stored in the first pass, became permanent at frame 14
    assert frames_of(rows[3]) == [10, 12, 13] and frames_of(rows[-1]) == [10, 12, 13, 14, 16, 17]
    assert [f + 10 for f in core.bank.kept_frames()] == frames_of(rows[-1])


@pytest.fixture
def built_once(inference_net, monkeypatch):
    """The CLIs get the session's network instead of loading the checkpoint again (seconds per run)."""
    monkeypatch.setattr(qdmn.network, 'inference_network',
                        lambda path, device, amp=False, fixed_shapes=True: (inference_net, 'fp32'))


@pytest.fixture(scope='module')
def small_davis(shared_dir, tmp_path_factory):
    """The CLI tests' DAVIS-2016 tree (3 frames of each sample video) shrunk to 120 px high."""
    root = make_davis(shared_dir, tmp_path_factory.mktemp('davis') / 'DAVIS', 2016)
    for path in sorted(root.glob('*/480p/*/*')):
        with Image.open(path) as img:
            small = img.resize((214, 120), Image.NEAREST if path.suffix == '.png' else Image.BILINEAR)
        small.save(path)
    return root


def test_eval_davis_writes_logs_beside_the_masks_only_with_the_flag(small_davis, synthetic_checkpoint, built_once,
                                                                    tmp_path, capsys):
    out, plain = tmp_path / 'out', tmp_path / 'plain'
    argv = ['--model', synthetic_checkpoint, '--davis', small_davis, '--device', 'cpu', '--mem_freq', 1]
    code, err = run_cli(eval_davis_2016, argv + ['--output', out, '--save_memory_log'], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(VIDEOS + ('memory_log', 'qdmn_settings.json'))
    assert sorted(p.name for p in (out / 'memory_log').iterdir()) == \
        sorted(f'{v}.{ext}' for v in VIDEOS for ext in ('csv', 'png'))
    for video in VIDEOS:   # the folders to zip for the server hold masks only
        assert sorted(p.name for p in (out / video).iterdir()) == ['00000.png', '00001.png', '00002.png']
        rows = read_rows(out / 'memory_log' / f'{video}.csv')
        assert [r['decision'] for r in rows] == ['first frame', 'stored', 'not encoded']
        assert [frames_of(r) for r in rows] == [[0], [0, 1], [0, 1]] and rows[1]['name'] == '00001'
        assert_png(out / 'memory_log' / f'{video}.png')
        assert_umask_mode(out / 'memory_log' / f'{video}.csv')
        assert_umask_mode(out / 'memory_log' / f'{video}.png')
        assert_umask_mode(out / video / '00001.png')   # the masks too

    code, err = run_cli(eval_davis_2016, argv + ['--output', plain], capsys)
    assert code == 0, err
    assert sorted(p.name for p in plain.iterdir()) == sorted(VIDEOS + ('qdmn_settings.json',))   # no log


def test_matplotlib_is_imported_only_for_the_plot():
    script = ('import sys, eval_davis, eval_davis_2016, eval_youtube, segment_video, util.memory_log; '
              'assert "matplotlib" not in sys.modules')
    result = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_flag_without_matplotlib_is_one_clear_error(monkeypatch):
    import util.cli
    monkeypatch.setattr(util.cli.importlib.util, 'find_spec', lambda name: None)
    with pytest.raises(UserInputError, match=r'--save_memory_log needs matplotlib \(pip install'):
        segment_video.main(['--video', 'v.mp4', '--mask', 'm.png', '--output', 'o', '--save_memory_log'])


def test_eval_youtube_log_starts_at_the_first_annotation_and_stays_out_of_the_zip(tmp_path, shared_dir,
                                                                                 synthetic_checkpoint, built_once):
    # frames 3..9 of judo (indices 0..6), objects entering on frames 5 and 8 as ids 5 and 7
    root = build_tree(tmp_path / 'yv', shared_dir, frames=range(3, 10), labelled=(5, 8))
    out = tmp_path / 'out' / 'valid'
    run_eval('--yv', root, '--split', 'valid', '--output', out, '--model', synthetic_checkpoint,
             '--device', 'cpu', '--size', SIZE, '--mem_freq', 1, '--save_memory_log')
    rows = read_rows(out / 'memory_log' / 'judo.csv')
    assert [(r['frame'], r['name']) for r in rows] == [(str(i), f'{i + 3:05d}') for i in range(2, 7)]
    assert [r['decision'] for r in rows][::3] == ['labelled', 'labelled']
    assert rows[-1]['decision'] == 'not encoded'
    assert list(rows[0])[2:4] == ['score_5', 'score_7']
    assert [r['score_7'] != '' for r in rows] == [False] * 3 + [True, False]   # from its labelled frame on
    assert frames_of(rows[-1])[:1] + frames_of(rows[-1])[-1:] == [2, 5]   # labelled frames are permanent
    assert_png(out / 'memory_log' / 'judo.png')
    with zipfile.ZipFile(f'{out}.zip') as z:
        assert z.namelist() == ['Annotations/judo/00005.png']


def test_segment_video_log_beside_masks_and_none_after_a_failure(synthetic_checkpoint, built_once, tmp_path, capsys,
                                                                 monkeypatch, failing_on_call):
    frames = write_noise_frames(tmp_path / 'frames', 4)
    mask = save_palette_png(tmp_path / 'mask.png', np.pad(np.full((20, 30), 6, np.uint8), ((20, 24), (30, 36))))
    out = tmp_path / 'out'
    argv = ['--video', frames, '--mask', mask, '--output', out, '--model', synthetic_checkpoint, '--device', 'cpu',
            '--mem_freq', 2, '--save_memory_log']

    real_write = pipeline.video.write_palette_png
    monkeypatch.setattr(pipeline.video, 'write_palette_png', failing_on_call(real_write, 3))
    code, _, err = run_segment_video(argv, capsys)
    assert code == 2 and not out.exists()   # no log of an unfinished video
    monkeypatch.setattr(pipeline.video, 'write_palette_png', real_write)

    code, stdout, err = run_segment_video(argv, capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ['masks', 'memory_log.csv', 'memory_log.png', 'overlay.mp4',
                                                     'qdmn_settings.json']
    assert f'wrote {out / "memory_log.csv"} and {out / "memory_log.png"}' in stdout
    rows = read_rows(out / 'memory_log.csv')
    assert list(rows[0])[2] == 'score_6'   # named by the mask's own id
    assert [r['decision'] for r in rows][:2] + [rows[-1]['decision']] == ['first frame', 'not due', 'not encoded']
    assert_png(out / 'memory_log.png')
