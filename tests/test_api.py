"""The public API (qdmn): golden clips through Segmenter, exact state save/restore, bad input."""
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, SHARED
from qdmn import InputError, Segmenter, load_network
from test_davis_engine import run_golden
from util.image_io import read_label_mask, read_rgb

GOLDEN = SHARED / 'reference' / 'golden'
JUDO = SHARED / 'data' / 'examples'


def golden_clip(clip):
    fixture = json.loads((GOLDEN / 'fixture.json').read_text())
    paths = sorted((GOLDEN / clip / 'frames').glob('*.png'))[:fixture[clip]['frames']]
    labelled = fixture[clip].get('labelled_frames', [0])
    labels = {i: read_label_mask(str(GOLDEN / clip / 'masks' / f'{i:05d}.png'))[0] for i in labelled}
    return [read_rgb(str(p)) for p in paths], labels, np.load(GOLDEN / clip / 'golden.npz')


def test_davis_preset_reproduces_golden_blackswan_and_the_engine(inference_net, shared_dir):
    frames, labels, golden = golden_clip('blackswan')
    seg = Segmenter(inference_net, preset='davis')
    masks, scores = [], []
    for i, rgb in enumerate(frames):
        masks.append(seg.step(rgb, labels=labels.get(i)))
        if i < len(frames) - 1:
            scores.append(seg.quality[1])
    seg.finish()
    masks = np.stack(masks)
    agreement = (masks == golden['masks']).reshape(len(masks), -1).mean(1)
    assert agreement.min() >= 0.99, agreement
    np.testing.assert_allclose(scores, golden['scores'][:, 0], rtol=1e-3)
    assert seg.bank.frames() == [0, 5, 10, 15, 20, 25, 28] and seg.decision == 'not encoded'
    # the same masks as the engine driven directly (the golden test's own run, ids 1 = engine index 1)
    engine_masks, _, _, _ = run_golden(inference_net, GOLDEN, 'blackswan')
    np.testing.assert_array_equal(masks, engine_masks)


@pytest.mark.slow
def test_youtube_preset_reproduces_golden_judo(inference_net, shared_dir):
    frames, labels, golden = golden_clip('judo')
    seg = Segmenter(inference_net, preset='youtube', num_objects=4)
    agreement, scores = [], []
    for i, rgb in enumerate(frames):
        agreement.append((seg.step(rgb, labels=labels.get(i)) == golden['masks'][i]).mean())
        if i < len(frames) - 1:
            scores.append(np.mean(list(seg.quality.values())))
    assert min(agreement) >= 0.99, np.round(agreement, 4)
    np.testing.assert_allclose(scores, golden['scores'], rtol=1e-3)
    assert seg.objects == [1, 2, 3, 4]


# ---- exact state save and restore ------------------------------------------------------------------

def judo_input(count=12):
    """judo frames and its labels (objects entering on frames 0, 5, 8), small enough to be quick."""
    frames = [read_rgb(str(JUDO / 'images' / 'judo' / f'{t:05d}.jpg')) for t in range(count)]
    labels = {}
    for t in (0, 5, 8):
        ids = read_label_mask(str(JUDO / 'masks' / 'judo' / f'{t:05d}.png'))[0]
        ids = np.pad(ids, ((0, 480 - ids.shape[0]), (0, 854 - ids.shape[1])))   # 00005.png is 853 px wide
        labels[t] = ids if t else (ids == 1).astype(np.uint8) * 3   # a DAVIS first frame: object id 3
    return frames, labels


# both presets with a small memory, so the saved state holds stored, evicted and temporary entries
SETTINGS = {'davis': dict(size=48, mem_freq=1, memory_thr=2, quality_thr=-1.0, memory_log=True),
            'youtube': dict(size=48, mem_freq=1, memory_thr=1, quality_thr=-1.0, num_objects=4, memory_log=True)}

CONTINUE = """
import sys, numpy as np, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads({threads})
from qdmn import Segmenter, load_network
from test_api import SETTINGS, judo_input
preset, checkpoint, state, out, start = sys.argv[1:6]
frames, labels = judo_input()
seg = Segmenter(load_network(checkpoint, device='cpu'), preset=preset, **SETTINGS[preset])
seg.load(state)
masks = [seg.step(rgb, labels=labels.get(i) if preset == 'youtube' else None)
         for i, rgb in enumerate(frames) if i >= int(start)]
seg.finish()
np.savez(out, masks=np.stack(masks), log=np.array([r.decision for r in seg.memory_log.records]))
"""


def run_segmenter(seg, frames, labels, preset, start=0, stop=None):
    out = []
    for i, rgb in enumerate(frames[start:stop], start):
        out.append(seg.step(rgb, labels=labels.get(i) if preset == 'youtube' or i == 0 else None))
    return out


@pytest.mark.parametrize('preset', ['davis', 'youtube'])
def test_state_round_trip_in_a_new_process_is_byte_identical(preset, synthetic_checkpoint, tmp_path):
    net = load_network(synthetic_checkpoint, device='cpu')
    frames, labels = judo_input()
    whole = Segmenter(net, preset=preset, **SETTINGS[preset])
    expected = run_segmenter(whole, frames, labels, preset)
    whole.finish()

    k = 6   # mid-pass on YouTube-VOS: frame 5 labelled, frame 8 not yet
    first = Segmenter(net, preset=preset, **SETTINGS[preset])
    head = run_segmenter(first, frames, labels, preset, stop=k + 1)
    first.save(tmp_path / 'state.pt')
    assert first.bank.stored or first.bank.temporary   # there is memory to restore

    script = CONTINUE.format(tests=str(REPO / 'tests'), threads=torch.get_num_threads())
    result = subprocess.run([sys.executable, '-c', script, preset, str(synthetic_checkpoint),
                             str(tmp_path / 'state.pt'), str(tmp_path / 'rest.npz'), str(k + 1)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rest = np.load(tmp_path / 'rest.npz')
    np.testing.assert_array_equal(np.stack(head + list(rest['masks'])), np.stack(expected))
    assert list(rest['log']) == [r.decision for r in whole.memory_log.records]
    assert any(r.decision.startswith('replaced') for r in whole.memory_log.records)


def test_reading_quality_does_not_change_the_result(inference_net):
    """The memory encoding is lazy; reading quality only makes it happen earlier."""
    frames, labels = judo_input(6)
    plain, reading = Segmenter(inference_net, size=32), Segmenter(inference_net, size=32)
    for i, rgb in enumerate(frames):
        a = plain.step(rgb, labels=labels.get(i) if i == 0 else None)
        b = reading.step(rgb, labels=labels.get(i) if i == 0 else None)
        assert set(reading.quality) == {3} and reading.decision in ('first frame', 'not due', 'stored')
        np.testing.assert_array_equal(a, b)
    assert plain.bank.frames() == [0, 4] and reading.bank.frames() == [0, 5]   # the last frame waits
    assert set(plain.quality) == {3} and plain.bank.frames() == [0, 5]


# ---- input ---------------------------------------------------------------------------------------

def test_frames_before_the_first_labels_are_empty_and_ids_come_back(inference_net):
    seg = Segmenter(inference_net, preset='youtube', size=32)
    rgb = np.full((40, 60, 3), 90, np.uint8)
    assert not seg.step(rgb).any() and seg.quality is None and seg.decision is None
    labels = np.zeros((40, 60), np.uint8)
    labels[10:30, 20:40] = 200
    assert set(np.unique(seg.step(torch.from_numpy(rgb), labels=labels))) == {0, 200}
    assert seg.decision == 'labelled' and seg.objects == [200] and seg.first_labelled == 1


@pytest.mark.parametrize('case, message', [
    ('float image', 'expected uint8 RGB'),
    ('grey image', 'expected an HxWx3 RGB array'),
    ('frame size', 'but the video\'s frames are 60x40'),
    ('labels size', 'expected the frame\'s (40, 60)'),
    ('id above 254', 'object ids must be 1..254'),
    ('no object', 'no object (every pixel is 0)'),
    ('float labels', 'expected integer object ids'),
])
def test_bad_input_is_one_clear_error(inference_net, case, message):
    seg = Segmenter(inference_net, size=32)
    rgb, labels = np.zeros((40, 60, 3), np.uint8), np.ones((40, 60), np.uint8)
    if case == 'frame size':
        seg.step(rgb, labels)
    bad = {'float image': (rgb / 255.0, labels), 'grey image': (rgb[..., 0], labels),
           'frame size': (np.zeros((40, 61, 3), np.uint8), None), 'labels size': (rgb, labels[:, 1:]),
           'id above 254': (rgb, labels * 255), 'no object': (rgb, labels * 0),
           'float labels': (rgb, labels.astype(np.float32))}[case]
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        seg.step(*bad)
    assert isinstance(info.value, InputError) and '\n' not in str(info.value)


def test_presets_and_overrides(inference_net):
    seg = Segmenter(inference_net, preset='youtube', top_k=None, memory_policy='recent')
    assert seg.settings == dict(top_k=None, mem_freq=5, quality_thr=0.75, memory_thr=10, use_km=False,
                                memory_policy='recent')
    assert Segmenter(inference_net).settings['memory_thr'] == 20
    with pytest.raises(InputError, match="preset 'lvos'"):
        Segmenter(inference_net, preset='lvos')
    with pytest.raises(InputError, match='mem_freq 0'):
        Segmenter(inference_net, mem_freq=0)
    with pytest.raises(TypeError, match='unknown setting'):
        Segmenter(inference_net, memory_thresh=3)
    with pytest.raises(InputError, match='youtube preset only'):
        Segmenter(inference_net, num_objects=3)


def test_a_state_of_other_settings_is_refused(inference_net, tmp_path):
    seg = Segmenter(inference_net, size=32)
    labels = np.ones((40, 60), np.uint8)
    seg.step(np.zeros((40, 60, 3), np.uint8), labels)
    seg.save(tmp_path / 'state.pt')
    with pytest.raises(InputError, match='saved with'):
        Segmenter(inference_net, size=32, mem_freq=3).load(tmp_path / 'state.pt')
    (tmp_path / 'bad.pt').write_bytes(b'garbage')
    with pytest.raises(InputError, match='not a readable Segmenter state'):
        Segmenter(inference_net, size=32).load(tmp_path / 'bad.pt')


@pytest.mark.slow
def test_readme_notebook_example_writes_the_masks_of_segment_video(synthetic_checkpoint, tmp_path, monkeypatch):
    """The README's example, run as written (but the synthetic weights, a CPU-friendly size and a temp folder)."""
    import segment_video
    code = (REPO / 'README.md').read_text().split('## Python API')[1].split('```python\n')[1].split('```')[0]
    code = (code.replace("'saves/s012.pth'", repr(str(synthetic_checkpoint))).replace('size=None', 'size=120')
            .replace("'output/notebook", repr(str(tmp_path / 'notebook'))[:-1]))
    monkeypatch.chdir(REPO)
    exec(code, {})
    segment_video.main(['--video', 'samples/judo.mp4', '--mask', 'samples/judo_masks/00000.png', '--output',
                        str(tmp_path / 'cli'), '--model', str(synthetic_checkpoint), '--size', '120',
                        '--device', 'cpu'])
    written = sorted((tmp_path / 'notebook').iterdir())
    assert [p.name for p in written] == [f'{i:05d}.png' for i in range(16)]
    for path in written:
        assert path.read_bytes() == (tmp_path / 'cli' / 'masks' / path.name).read_bytes(), path.name
