"""YouTube-VOS: engine vs the golden judo clip, the reader, eval_youtube.py end to end."""
import json
import shutil
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import eval_youtube
from datasets.yv_test_dataset import YouTubeVOSTestDataset
from inference_core_yv import InferenceCoreYV, propagate_yv
from util.errors import UserInputError, run_main
from util.image_io import read_label_mask, read_rgb
from util.palette import DAVIS_PALETTE
from util.labels import processing_size
from util.tensor_util import frame_to_tensor

# judo's objects 1-4 renamed to non-contiguous ids, as YouTube-VOS has them
RENUMBER = {1: 2, 2: 5, 3: 7, 4: 9}
LUT = np.array([RENUMBER.get(i, 0) for i in range(256)], np.uint8)
PALETTE = np.roll(DAVIS_PALETTE, 1, axis=0)   # not the DAVIS one, to see the dataset's kept


@pytest.mark.slow
def test_engine_matches_golden_judo(inference_net, shared_dir):
    clip = shared_dir / 'reference' / 'golden' / 'judo'
    fixture = json.loads((shared_dir / 'reference' / 'golden' / 'fixture.json').read_text())
    golden = np.load(clip / 'golden.npz')
    spec = fixture['judo']
    labels = {i: read_label_mask(clip / 'masks' / f'{i:05d}.png')[0] for i in spec['labelled_frames']}
    paths = sorted((clip / 'frames').glob('*.png'))
    core = InferenceCoreYV(inference_net, top_k=fixture['top_k'], mem_freq=fixture['mem_freq'], quality_thr=0.75,
                           memory_thr=spec['memory_thr'], num_objects=len(spec['objects']))
    frames = (frame_to_tensor(read_rgb(p)) for p in paths)
    agreement, scores = [], []
    for t, label_map in propagate_yv(core, frames, labels):
        agreement.append((label_map == golden['masks'][t]).mean())
        if t < len(paths) - 1:   # the last frame is not encoded
            scores.append(float(core.last_scores.mean()))
    assert len(agreement) == len(paths)
    assert min(agreement) >= 0.99, np.round(agreement, 4)
    np.testing.assert_allclose(scores, golden['scores'], rtol=1e-3)
    assert core.objects == [1, 2, 3, 4]


# ---- a small YouTube-VOS tree -------------------------------------------------------------------

def _save_ids(path, ids, palette=PALETTE):
    img = Image.fromarray(ids.astype(np.uint8), mode='P')
    img.putpalette(palette.reshape(-1).tolist())
    img.save(path)


def build_tree(root, shared_dir, frames=range(16), listed_every=5, labelled=(0, 5, 8, 13), split='valid'):
    """judo as a YouTube-VOS video: all frames in all_frames, every 5th in the split, ids renumbered.

    masks/judo/00005.png is one pixel narrower than the frames (a defect of the
    source clip); it is padded with background here, since the reader rejects
    annotations whose size differs from their frame's.
    """
    src = shared_dir / 'data' / 'examples'
    all_dir = root / 'all_frames' / f'{split}_all_frames' / 'JPEGImages' / 'judo'
    split_dir = root / split / 'JPEGImages' / 'judo'
    ann_dir = root / split / 'Annotations' / 'judo'
    for d in (all_dir, split_dir, ann_dir):
        d.mkdir(parents=True)
    for t in frames:
        data = (src / 'images' / 'judo' / f'{t:05d}.jpg').read_bytes()
        (all_dir / f'{t:05d}.jpg').write_bytes(data)
        if t % listed_every == 0:
            (split_dir / f'{t:05d}.jpg').write_bytes(data)
    h, w = read_rgb(all_dir / f'{frames[0]:05d}.jpg').shape[:2]
    for t in labelled:
        ids, _ = read_label_mask(src / 'masks' / 'judo' / f'{t:05d}.png')
        ids = np.pad(ids, ((0, h - ids.shape[0]), (0, w - ids.shape[1])))
        _save_ids(ann_dir / f'{t:05d}.png', LUT[ids])
    return root


def run_eval(*argv):
    eval_youtube.main(list(map(str, argv)))


def test_processing_size():
    assert processing_size(480, 854) == (480, 854)
    assert processing_size(720, 1280) == (480, 853)
    assert processing_size(1280, 720) == (853, 480)
    assert processing_size(360, 640) == (480, 853)
    assert processing_size(100, 201, 48) == (48, 96)   # 96.48 rounds down
    assert processing_size(100, 203, 48) == (48, 97)   # 97.44


@pytest.mark.slow
def test_eval_youtube_writes_listed_frames_with_original_ids(tmp_path, shared_dir, synthetic_checkpoint):
    # frames 3..15 of judo, objects entering on 5, 8, 13 as ids 5, 7, 9; listed: 5, 10, 15
    root = build_tree(tmp_path / 'yv', shared_dir, frames=range(3, 16), labelled=(5, 8, 13))
    out = tmp_path / 'out' / 'valid'
    run_eval('--yv', root, '--split', 'valid', '--output', out, '--model', synthetic_checkpoint,
             '--device', 'cpu', '--size', 64)
    with zipfile.ZipFile(f'{out}.zip') as z:
        names = sorted(z.namelist())
        assert names == ['Annotations/judo/00005.png', 'Annotations/judo/00010.png', 'Annotations/judo/00015.png']
        for name in names:
            with z.open(name) as f:
                img = Image.open(f)
                img.load()
            assert img.mode == 'P' and img.size == (854, 480)
            assert set(np.unique(np.asarray(img))) <= {0, 5, 7, 9}
            assert np.array_equal(np.asarray(img.getpalette()[:768], np.uint8).reshape(256, 3), PALETTE)
    # frame 5 carries the given mask of object 5 (where it does not overlap nothing else exists yet)
    given = read_label_mask(root / 'valid' / 'Annotations' / 'judo' / '00005.png')[0]
    written = read_label_mask(out / 'Annotations' / 'judo' / '00005.png')[0]
    assert ((written == 5) == (given == 5)).mean() > 0.97   # 64-px processing blurs the edge
    # resuming skips the complete video (its files are left as they are)
    before = (out / 'Annotations' / 'judo' / '00010.png').stat().st_mtime_ns
    run_eval('--yv', root, '--split', 'valid', '--output', out, '--model', synthetic_checkpoint,
             '--device', 'cpu', '--size', 64)
    assert (out / 'Annotations' / 'judo' / '00010.png').stat().st_mtime_ns == before


def test_reader_streams_frames(tmp_path, shared_dir):
    root = build_tree(tmp_path / 'yv', shared_dir, frames=range(6), labelled=(0, 5))
    video = YouTubeVOSTestDataset(root, 'valid').video('judo')
    assert video.size == (480, 854)
    assert video.frame_names == [f'{t:05d}' for t in range(6)]
    assert video.listed == {'00000', '00005'} and video.written_frames == ['00000', '00005']
    assert sorted(video.labels) == [0, 5] and video.objects() == [2, 5]
    assert video.labels[5].shape == (480, 854) and set(np.unique(video.labels[5])) == {0, 5}
    name, rgb = next(video.frames())
    assert name == '00000' and rgb.shape == (480, 854, 3) and rgb.dtype == np.uint8


def test_reader_without_all_frames_uses_split_frames(tmp_path, shared_dir):
    root = build_tree(tmp_path / 'yv', shared_dir, frames=range(11), labelled=(0, 5))
    shutil.rmtree(root / 'all_frames')
    video = YouTubeVOSTestDataset(root, 'valid').video('judo')
    assert video.frame_names == ['00000', '00005', '00010'] and sorted(video.labels) == [0, 1]


# ---- bad input ------------------------------------------------------------------------------------

@pytest.fixture
def tree(tmp_path, shared_dir):
    return build_tree(tmp_path / 'yv', shared_dir, frames=range(6), labelled=(0, 5))


def _open(root):
    return YouTubeVOSTestDataset(root, 'valid').video('judo')


def test_missing_root_or_split(tmp_path, tree):
    with pytest.raises(UserInputError, match='root not found'):
        YouTubeVOSTestDataset(tmp_path / 'nowhere', 'valid')
    with pytest.raises(UserInputError, match='split "test" not found'):
        YouTubeVOSTestDataset(tree, 'test')


def test_first_annotation_without_object(tree):
    _save_ids(tree / 'valid' / 'Annotations' / 'judo' / '00000.png', np.zeros((480, 854)))
    with pytest.raises(UserInputError, match='00000.png: first annotation of video judo has no object'):
        _open(tree)


def test_label_above_255(tree):
    path = tree / 'valid' / 'Annotations' / 'judo' / '00005.png'
    Image.fromarray(np.full((480, 854), 300, np.uint16)).save(path)
    with pytest.raises(UserInputError, match='00005.png: label id 300 above 255'):
        _open(tree)


def test_label_255_is_void(tree):
    path = tree / 'valid' / 'Annotations' / 'judo' / '00005.png'
    ids = read_label_mask(path)[0]
    ids[:10] = 255
    _save_ids(path, ids)
    with pytest.warns(UserWarning, match='label 255 treated as void'):
        video = _open(tree)
    assert video.objects() == [2, 5]


def test_annotation_size_differs_from_frame(tree, shared_dir):
    # the source clip's own defect: masks/judo/00005.png is 853x480 while the frames are 854x480
    (tree / 'valid' / 'Annotations' / 'judo' / '00005.png').write_bytes(
        (shared_dir / 'data' / 'examples' / 'masks' / 'judo' / '00005.png').read_bytes())
    with pytest.raises(UserInputError, match='00005.png: annotation is 853x480 but the frames are 854x480'):
        _open(tree)


def test_listed_frame_missing_from_all_frames(tree):
    (tree / 'all_frames' / 'valid_all_frames' / 'JPEGImages' / 'judo' / '00005.jpg').unlink()
    with pytest.raises(UserInputError, match='frame 00005.jpg is listed in the split but missing'):
        _open(tree)


def test_cli_reports_bad_input_in_one_line(tmp_path, tree, synthetic_checkpoint, capsys):
    _save_ids(tree / 'valid' / 'Annotations' / 'judo' / '00000.png', np.zeros((480, 854)))
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: run_eval('--yv', tree, '--split', 'valid', '--output', tmp_path / 'o',
                                               '--model', synthetic_checkpoint, '--device', 'cpu'))
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1 and 'first annotation of video judo has no object' in errors[0]
    assert not (tmp_path / 'o.zip').exists()


def test_skip_bad_videos_writes_the_rest_and_fails_at_the_end(tmp_path, tree, synthetic_checkpoint, capsys):
    for sub in ('valid/JPEGImages', 'valid/Annotations', 'all_frames/valid_all_frames/JPEGImages'):
        shutil.copytree(tree / sub / 'judo', tree / sub / 'broken')
    _save_ids(tree / 'valid' / 'Annotations' / 'broken' / '00000.png', np.zeros((480, 854)))
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: run_eval('--yv', tree, '--split', 'valid', '--output', tmp_path / 'o', '--size', 96,
                                  '--model', synthetic_checkpoint, '--device', 'cpu', '--skip_bad_videos'))
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1 and '1 video(s) skipped' in errors[0] and 'video broken has no object' in errors[0]
    with zipfile.ZipFile(tmp_path / 'o.zip') as z:
        assert {name.split('/')[1] for name in z.namelist()} == {'judo'}


# ---- engine policy --------------------------------------------------------------------------------

class ScriptedNet:
    """Stand-in network: every object reads as probability 0.5, scores come from a script."""

    def __init__(self, scores):
        self.scores = iter(scores)
        self.encoded = []

    def encode_query(self, frame):
        return frame, frame, frame

    def query_key_value(self, f16, prev_fg):
        return f16, f16, f16

    @staticmethod
    def read(key, value, qk, qv, top_k, km_sigma=None):
        return key.new_zeros((1, 1) + qk.shape[-2:])

    @staticmethod
    def segment(readout, f8, f4):
        return torch.full((readout.shape[0], 1) + f8.shape[-2:], 0.5)

    def encode_memory(self, frame, masks):
        self.encoded.append(masks.shape[0])
        k = masks.shape[0]
        score = next(self.scores)  # one value for every object, or one per object
        score = torch.tensor(score, dtype=torch.float) if isinstance(score, list) else torch.full((k,), float(score))
        return torch.zeros(k, 1, 1, 1, 1), torch.zeros(k, 1, 1, 1, 1), score


def _run(net, num_frames, labels, **kw):
    core = InferenceCoreYV(net, **kw)
    frames = (torch.zeros(1, 3, 4, 4) for _ in range(num_frames))
    return core, list(propagate_yv(core, frames, labels))


def _labels(*ids):
    lab = np.zeros((4, 4), np.uint8)
    for i, obj in enumerate(ids):
        lab[i] = obj
    return lab


def test_objects_enter_late_and_keep_their_ids():
    net = ScriptedNet([1.0] * 20)
    core, out = _run(net, 8, {2: _labels(9), 5: _labels(9, 4)})
    assert [t for t, _ in out] == list(range(2, 8))   # nothing before the first labelled frame
    assert core.objects == [9, 4]
    # frame 5: labels win, row 0 is 9, row 1 is 4; other pixels tie at 0.5 (argmax takes the first)
    assert out[3][1][0].tolist() == [9] * 4 and out[3][1][1].tolist() == [4] * 4
    assert set(np.unique(out[-1][1])) <= {0, 9, 4}
    # encoded: frame 2 (1 object), 3, 4 (1), frame 5 labelled (2 objects), 6 (2); frame 7 is last
    assert net.encoded == [1, 1, 1, 2, 2]
    permanent = [(e.frame, e.objects) for e in core.bank.permanent]
    assert permanent == [(0, (9,)), (3, (9, 4))]


def test_quality_reference_restarts_with_each_labelled_frame():
    # frame 0 labelled; 1 sets the reference (2.0); 5 is due with 1.4/2.0 = 0.7 < 0.75: rejected;
    # frame 6 labelled; 7 sets a new reference (1.0); 11 is due with 0.8/1.0 > 0.75: stored
    scores = [5.0, 2.0, 2.0, 2.0, 2.0, 1.4, 9.0, 1.0, 1.0, 1.0, 1.0, 0.8]
    core, _ = _run(ScriptedNet(scores), 13, {0: _labels(1), 6: _labels(2)})
    assert core.decisions == {'stored': 1, 'replaced': 0, 'not_due': 8, 'low_quality': 1}
    assert [e.frame for e in core.bank.stored] == [11]


def test_capacity_evicts_old_low_quality_entries_never_labelled_frames():
    # stored every frame (mem_freq 1); capacity 2 -> the list holds at most 3 entries
    scores = [1.0, 1.0, 0.8, 0.9, 1.0, 1.0, 1.0]
    core, _ = _run(ScriptedNet(scores), 8, {0: _labels(1)}, mem_freq=1, memory_thr=2)
    assert [e.frame for e in core.bank.permanent] == [0]
    # frame 4 (order 4) costs e^-3+1.0 (frame 1), e^-2+0.8 (2), e^-1+0.9 (3): frame 2 goes;
    # frame 5 then drops frame 1 (e^-4+1.0), frame 6 drops frame 3 (e^-3+0.9)
    assert core.decisions == {'stored': 3, 'replaced': 3, 'not_due': 0, 'low_quality': 0}
    assert [e.frame for e in core.bank.stored] == [4, 5, 6]


def test_frame_quality_leaves_zero_scores_out():
    # frame 0 labelled (2 objects); frame 1 sets the reference 1.0; frame 5 scores [0.9, 0]:
    # as published its quality is 0.9 / 1.0 (the 0 is left out), not 0.45, so it is stored
    scores = [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [0.9, 0.0]]
    core, _ = _run(ScriptedNet(scores), 7, {0: _labels(1, 2)})
    assert [e.frame for e in core.bank.stored] == [5]
    assert core.bank.stored[0].quality == pytest.approx(0.9)


def test_labelled_frame_makes_the_previous_pass_permanent_and_restarts_capacity():
    # capacity 1 (at most 2 stored), every frame due; labels on frames 0 and 4
    core, _ = _run(ScriptedNet([1.0] * 9), 9, {0: _labels(1), 4: _labels(1, 2)}, mem_freq=1, memory_thr=1)
    # pass 1 stored 1, 2 and 3 (3 replaced one of them); at frame 4 its two stored frames became
    # permanent, then pass 2 stored 5, 6 and 7 within a fresh capacity
    permanent = [e.frame for e in core.bank.permanent]
    assert permanent[0] == 0 and permanent[-1] == 4 and len(permanent) == 4
    assert set(permanent[1:3]) < {1, 2, 3}
    assert len(core.bank.stored) == 2 and {e.frame for e in core.bank.stored} < {5, 6, 7}
    assert [e.order for e in core.bank.stored] != [] and max(e.order for e in core.bank.stored) == 3
    assert core.decisions == {'stored': 4, 'replaced': 2, 'not_due': 0, 'low_quality': 0}


# ---- the 480p training copy -------------------------------------------------------------------------

def test_resize_youtube_copy_is_smaller_keeps_ids_and_palette_and_resumes(tmp_path, shared_dir):
    from scripts import resize_youtube
    src, dst = tmp_path / 'train', tmp_path / 'train_small'
    for sub in ('JPEGImages', 'Annotations'):
        (src / sub / 'judo').mkdir(parents=True)
    for t in (0, 1):
        (src / 'JPEGImages' / 'judo' / f'{t:05d}.jpg').write_bytes(
            (shared_dir / 'data' / 'examples' / 'images' / 'judo' / f'{t:05d}.jpg').read_bytes())
    ids = read_label_mask(shared_dir / 'data' / 'examples' / 'masks' / 'judo' / '00000.png')[0]
    _save_ids(src / 'Annotations' / 'judo' / '00000.png', LUT[ids])
    argv = ['--input', str(src), '--output', str(dst), '--size', '240', '--workers', '2']
    resize_youtube.main(argv)
    assert sorted(p.name for p in (dst / 'JPEGImages' / 'judo').iterdir()) == ['00000.jpg', '00001.jpg']
    assert Image.open(dst / 'JPEGImages' / 'judo' / '00001.jpg').size == (427, 240)
    ann = Image.open(dst / 'Annotations' / 'judo' / '00000.png')
    assert ann.mode == 'P' and ann.size == (427, 240)
    assert set(np.unique(np.asarray(ann))) == {0, 2}
    assert np.array_equal(np.asarray(ann.getpalette()[:768], np.uint8).reshape(256, 3), PALETTE)
    before = (dst / 'JPEGImages' / 'judo' / '00000.jpg').stat().st_mtime_ns
    resize_youtube.main(argv)
    assert (dst / 'JPEGImages' / 'judo' / '00000.jpg').stat().st_mtime_ns == before
