"""segment_video.py: a video file and a frame folder end to end, the bundled sample, every bad input."""
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import pipeline.video
import segment_video
from datasets.annotations import load_mask
from datasets.video_reader import natural_key, open_video
from inference_core_yv import InferenceCoreYV, propagate_yv
from pipeline.video import RunOptions, VideoJob, VideoRun
from qdmn import Network
from test_youtube import ScriptedNet
from util.errors import UserInputError, run_main
from util.image_io import read_rgb
from util.labels import processing_size, reduced_short_side
from util.overlay import Mp4Writer, blend
from util.palette import DAVIS_PALETTE
from util.tensor_util import frame_to_tensor

REPO = Path(__file__).resolve().parents[1]
SIZE = 120   # processing short side: the network costs seconds per frame on CPU at 480
LONG_SIZE = 64   # for the 117-frame video, whose test checks the pipeline, not the masks


def save_palette_png(path, labels):
    img = Image.fromarray(labels.astype(np.uint8), mode='P')
    img.putpalette(DAVIS_PALETTE.reshape(-1).tolist())
    img.save(path)
    return path


def run_cli(argv, capsys):
    """segment_video's main in-process, as the command line runs it; returns (exit code, stdout, stderr)."""
    code = 0
    try:
        run_main(lambda: segment_video.main([str(a) for a in argv]))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def count_video_frames(path):
    capture = cv2.VideoCapture(str(path))
    count, size = 0, None
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        count, size = count + 1, frame.shape[:2]
    capture.release()
    return count, size


@pytest.fixture(scope='module')
def example_mp4(shared_dir):
    return shared_dir / 'data' / 'examples' / 'example.mp4'


@pytest.fixture(scope='module')
def judo(shared_dir):
    return shared_dir / 'data' / 'examples' / 'images' / 'judo', shared_dir / 'data' / 'examples' / 'masks' / 'judo'


@pytest.mark.slow
def test_mp4_in_pngs_and_overlay_out_at_the_video_size(example_mp4, synthetic_checkpoint, tmp_path, capsys):
    labels = np.zeros((480, 640), np.uint8)
    labels[80:420, 200:440] = 3   # a non-contiguous id must come back as itself
    mask = save_palette_png(tmp_path / 'first.png', labels)
    out = tmp_path / 'out'
    code, stdout, err = run_cli(['--video', example_mp4, '--mask', mask, '--output', out, '--model',
                                 synthetic_checkpoint, '--size', LONG_SIZE, '--device', 'cpu'], capsys)
    assert code == 0, err
    pngs = sorted((out / 'masks').glob('*.png'))
    assert [p.stem for p in pngs] == [f'{i:05d}' for i in range(117)]
    for p in pngs[::10] + pngs[-1:]:
        img = Image.open(p)
        assert img.mode == 'P' and img.size == (640, 480)
        assert set(np.unique(np.asarray(img))) <= {0, 3}
    assert 3 in np.asarray(Image.open(pngs[0]))
    assert count_video_frames(out / 'overlay.mp4') == (117, (480, 640))
    assert not list(out.glob('*.partial*'))
    assert '117 frames' in stdout and 'frames/s' in stdout and 'peak RSS' in stdout and 'stored' in stdout


@pytest.mark.slow
def test_mask_dir_matches_the_youtube_engine(judo, inference_net, synthetic_checkpoint, tmp_path, capsys):
    """Objects entering at frames 0, 5, 8, 13; masks/judo/00005.png is 853 px wide, hence --resize_mask."""
    frames_dir, masks_dir = judo
    out = tmp_path / 'out'
    code, _, err = run_cli(['--video', frames_dir, '--mask_dir', masks_dir, '--resize_mask', '--output', out,
                            '--model', synthetic_checkpoint, '--size', SIZE, '--device', 'cpu'], capsys)
    assert code == 0, err

    # the same input straight through the engine: frames and masks resized by hand
    size = (SIZE, 214)   # 854x480 at short side 120
    assert processing_size(480, 854, reduced_short_side((480, 854), SIZE)) == size
    labels = {}
    for path in sorted(masks_dir.glob('*.png')):
        ids = torch.from_numpy(np.array(Image.open(path)))[None, None].float()
        ids = F.interpolate(ids, size=(480, 854), mode='nearest')   # --resize_mask
        labels[int(path.stem)] = F.interpolate(ids, size=size, mode='nearest')[0, 0].to(torch.uint8).numpy()
    frames = (frame_to_tensor(read_rgb(p), 'cpu', size) for p in sorted(frames_dir.glob('*.jpg')))
    core = InferenceCoreYV(inference_net, top_k=50, mem_freq=5, num_objects=4)
    expected = dict(propagate_yv(core, frames, labels, out_size=(480, 854)))

    written = sorted((out / 'masks').glob('*.png'))
    assert [p.stem for p in written] == [f'{i:05d}' for i in range(16)]
    for i, path in enumerate(written):
        np.testing.assert_array_equal(np.asarray(Image.open(path)), expected[i], err_msg=path.name)
    assert set(np.unique(expected[15])) <= {0, 1, 2, 3, 4}
    assert count_video_frames(out / 'overlay.mp4') == (16, (480, 854))


@pytest.mark.slow
def test_bundled_sample_main_command(synthetic_checkpoint, tmp_path):
    """README's main-job command on samples/, with the synthetic weights and a CPU-friendly size."""
    out = tmp_path / 'judo'
    cmd = [sys.executable, 'segment_video.py', '--video', 'samples/judo.mp4', '--mask', 'samples/judo_masks/00000.png',
           '--output', out, '--model', synthetic_checkpoint, '--size', SIZE, '--device', 'cpu', '--side_by_side']
    result = subprocess.run([str(c) for c in cmd], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len(list((out / 'masks').glob('*.png'))) == 16
    assert count_video_frames(out / 'overlay.mp4') == (16, (480, 2 * 854))
    assert '16 frames' in result.stdout


class CountingVideo:
    """A 40-frame video that records how many frames have been decoded."""

    def __init__(self):
        self.decoded = 0

    def __iter__(self):
        for i in range(40):
            self.decoded += 1
            yield f'{i:05d}', np.full((16, 16, 3), i, np.uint8)


class LeftHalfNet(ScriptedNet):
    """Every object reads as 'left half of the frame'."""

    @staticmethod
    def segment(readout, f8, f4):
        logits = torch.full((readout.shape[0], 1) + f8.shape[-2:], -9.0)
        logits[..., :8] = 9.0
        return logits


# the look-ahead of the last-frame check, plus what the decoding thread holds: its queue and the frame in hand
AHEAD = 1 + 2 + 1


@pytest.mark.parametrize('labelled', [0, 10])
def test_pipeline_streams_frame_by_frame_and_frames_before_the_first_labels_are_empty(tmp_path, labelled):
    video, labels = CountingVideo(), np.zeros((16, 16), np.uint8)
    labels[:, :8] = 5
    job = VideoJob('counting', lambda: iter(video), {labelled: labels}, str(tmp_path / 'masks'), frame_count=40)
    net = Network(LeftHalfNet([1.0] * 40), torch.device('cpu'))
    run = VideoRun(net, job, RunOptions(preset='youtube', resume_every=0))
    for k, frame in enumerate(run):
        time.sleep(0.002)   # a consumer slower than decoding: the thread must wait, not run ahead
        assert video.decoded <= k + 1 + AHEAD
        assert frame.index == k and frame.name == f'{k:05d}' and frame.rgb[0, 0, 0] == k
        assert not frame.ids.any() if k < labelled else (frame.ids[:, :8] == 5).all() and not frame.ids[:, 8:].any()
    assert k == 39 and run.segmented == 40
    assert len(list((tmp_path / 'masks').glob('*.png'))) == 40


def test_pipeline_reports_progress_and_cancels_leaving_nothing(tmp_path):
    labels = np.zeros((16, 16), np.uint8)
    labels[:, :8] = 2
    job = VideoJob('counting', lambda: iter(CountingVideo()), {0: labels}, str(tmp_path / 'out' / 'masks'))
    run = VideoRun(Network(LeftHalfNet([1.0] * 40), torch.device('cpu')), job, RunOptions(resume_every=4))
    seen = []
    with pytest.raises(pipeline.video.Cancelled, match='cancelled after frame 9'):
        run.run(progress=lambda frame: seen.append(frame.index), cancel=lambda: len(seen) == 10)
    assert seen == list(range(10)) and run.segmented == 10
    # a cancelled run leaves its state (saved after frame 7) and partial folder, and the next one resumes
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['.masks.partial', '.masks.partial.state']
    again = VideoRun(Network(LeftHalfNet([1.0] * 40), torch.device('cpu')), job, RunOptions(resume_every=4),
                     report=seen.append).run()
    assert again.resumed_at == 8 and again.segmented == 32 and 'resuming after frame 7' in seen[-1]
    assert len(list((tmp_path / 'out' / 'masks').glob('*.png'))) == 40


def test_help_is_clean():
    result = subprocess.run([sys.executable, 'segment_video.py', '--help'], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == ''
    for option in ('--video', '--mask', '--mask_dir', '--output', '--model', '--size', '--resize_mask',
                   '--side_by_side', '--device', '--amp', '--top_k', '--mem_freq'):
        assert option in result.stdout


def write_noise_frames(folder, count, size=(64, 96)):
    """`count` frames of seeded noise, 00000.png on."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f'{i:05d}.png')
    return folder


def write_frames(folder, sizes):
    folder.mkdir()
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(folder / f'{i:05d}.png')
    return folder


def bad_inputs(tmp, example_mp4):
    """name -> (argv without --model/--device, expected message fragment)."""
    broken = tmp / 'broken.mp4'
    broken.write_text('not a video')
    mask = save_palette_png(tmp / 'mask.png', np.pad(np.ones((10, 10), np.uint8), ((0, 470), (0, 630))))
    small = save_palette_png(tmp / 'small.png', np.ones((240, 320), np.uint8))
    empty = save_palette_png(tmp / 'empty.png', np.zeros((480, 640), np.uint8))
    one_frame = write_frames(tmp / 'one', [(480, 640)])
    one_frame_mp4 = tmp / 'one.mp4'
    with Mp4Writer(str(one_frame_mp4), 25) as writer:
        writer.write(np.zeros((480, 640, 3), np.uint8))
    a_file = tmp / 'out.txt'
    a_file.write_text('')
    unknown = tmp / 'unknown_masks'
    unknown.mkdir()
    save_palette_png(unknown / 'frame_7.png', np.ones((480, 640), np.uint8))
    return {
        'unreadable video': (['--video', broken, '--mask', mask], 'cannot read this video'),
        'missing video': (['--video', tmp / 'nowhere.mp4', '--mask', mask], 'no such video'),
        'mask size': (['--video', example_mp4, '--mask', small], 'pass --resize_mask'),
        'empty mask': (['--video', example_mp4, '--mask', empty], 'no object'),
        'one-frame folder': (['--video', one_frame, '--mask', mask], 'at least 2 images'),
        'one-frame video': (['--video', one_frame_mp4, '--mask', mask], 'fewer than 2 frames'),
        'output is a file': (['--video', example_mp4, '--mask', mask, '--output', a_file], 'is a file'),
        'mask for no frame': (['--video', example_mp4, '--mask_dir', unknown], "named 'frame_7'"),
    }


@pytest.mark.parametrize('case', ['unreadable video', 'missing video', 'mask size', 'empty mask', 'one-frame folder',
                                  'one-frame video', 'output is a file', 'mask for no frame'])
def test_bad_input_is_one_line_error(case, example_mp4, synthetic_checkpoint, tmp_path, capsys):
    argv, message = bad_inputs(tmp_path, example_mp4)[case]
    if '--output' not in argv:
        argv += ['--output', tmp_path / 'out']
    code, _, err = run_cli(argv + ['--model', synthetic_checkpoint, '--device', 'cpu'], capsys)
    assert code == 2
    assert err.startswith('error: ') and err.count('\n') == 1 and message in err, err


def test_unreadable_video_is_one_line_also_at_the_file_descriptor_level(tmp_path):
    """FFmpeg writes "moov atom not found" to fd 2 itself; only our error line may reach the user."""
    broken = tmp_path / 'broken.mp4'
    broken.write_text('not a video')
    mask = save_palette_png(tmp_path / 'mask.png', np.ones((480, 640), np.uint8))
    result = subprocess.run([sys.executable, 'segment_video.py', '--video', str(broken), '--mask', str(mask),
                             '--output', str(tmp_path / 'out'), '--device', 'cpu'],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == f'error: {broken}: cannot read this video (not a format OpenCV can decode)\n'


def test_resize_mask_accepts_another_size(example_mp4, tmp_path):
    small = save_palette_png(tmp_path / 'small.png', np.pad(np.full((120, 160), 2, np.uint8), ((0, 120), (0, 160))))
    labels, _ = load_mask(str(small), (480, 640), resize=True)
    assert labels.shape == (480, 640) and labels[:240, :320].all() and not labels[240:, 320:].any()


def test_folder_frames_of_different_sizes_fail_naming_the_file(tmp_path):
    video = open_video(str(write_frames(tmp_path / 'frames', [(48, 64), (48, 64), (50, 64)])))
    with pytest.raises(UserInputError, match='00002.png: frame is 64x50 but the first frame is 64x48'):
        list(video)


def test_frame_folder_is_in_natural_order_and_named_by_stems(tmp_path):
    folder = tmp_path / 'frames'
    folder.mkdir()
    for name in ('f10', 'f2', 'f1'):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / f'{name}.jpg')
    (folder / 'notes.txt').write_text('not a frame')
    video = open_video(str(folder))
    assert [name for name, _ in video] == ['f1', 'f2', 'f10']
    assert video.frame_index('f10') == 2 and video.frame_index('f3') is None
    assert sorted(['a10', 'a9'], key=natural_key) == ['a9', 'a10']


def test_video_file_probe(example_mp4):
    video = open_video(str(example_mp4))
    assert video.size == (480, 640) and video.fps == 25 and video.num_frames == 117
    assert video.frame_index('00116') == 116 and video.frame_index('00117') is None and video.frame_index('7') is None


def test_processing_size_reduces_never_enlarges():
    def size(video, short):
        return processing_size(*video, reduced_short_side(video, short))
    assert size((720, 1280), 480) == (480, 853)
    assert size((480, 854), 480) == (480, 854)
    assert size((360, 640), 480) == (360, 640)
    assert size((1080, 1920), -1) == (1080, 1920)


def test_blend_uses_the_davis_colour_of_each_id():
    rgb = np.full((2, 2, 3), 100, np.uint8)
    labels = np.array([[0, 1], [2, 0]], np.uint8)
    out = blend(rgb, labels, alpha=0.5)
    assert (out[0, 0] == 100).all() and (out[1, 1] == 100).all()
    np.testing.assert_array_equal(out[0, 1], np.round((100 + DAVIS_PALETTE[1].astype(float)) / 2))
    np.testing.assert_array_equal(out[1, 0], np.round((100 + DAVIS_PALETTE[2].astype(float)) / 2))


def test_mp4_writer_pads_odd_sizes_and_publishes_only_complete_files(tmp_path):
    path = tmp_path / 'v.mp4'
    with Mp4Writer(str(path), 10) as writer:
        for _ in range(3):
            writer.write(np.zeros((31, 45, 3), np.uint8))
    assert count_video_frames(path) == (3, (32, 46))

    failed = tmp_path / 'failed.mp4'
    with pytest.raises(RuntimeError):
        with Mp4Writer(str(failed), 10) as writer:
            writer.write(np.zeros((32, 32, 3), np.uint8))
            raise RuntimeError('interrupted')
    assert list(tmp_path.iterdir()) == [path]


def test_output_is_complete_or_absent_and_a_rerun_says_what_it_does(synthetic_checkpoint, tmp_path, capsys,
                                                                       monkeypatch, failing_on_call):
    frames = write_noise_frames(tmp_path / 'frames', 4)
    mask = save_palette_png(tmp_path / 'mask.png', np.pad(np.ones((20, 30), np.uint8), ((20, 24), (30, 36))))
    out = tmp_path / 'out'
    argv = ['--video', frames, '--mask', mask, '--output', out, '--model', synthetic_checkpoint, '--device', 'cpu']

    # a failure after two frames leaves nothing that looks finished
    real_write = pipeline.video.write_palette_png
    monkeypatch.setattr(pipeline.video, 'write_palette_png', failing_on_call(real_write, 3))
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and 'disk full' in err
    assert not out.exists()
    monkeypatch.setattr(pipeline.video, 'write_palette_png', real_write)

    # a killed run leaves its hidden partial folder: the next run says it starts over, then completes
    (out / '.masks.partial').mkdir(parents=True)
    (out / '.masks.partial' / '00000.png').write_bytes(b'')
    code, stdout, _ = run_cli(argv, capsys)
    assert code == 0 and 'stopped before the end; starting over' in stdout
    assert sorted(p.name for p in (out / 'masks').iterdir()) == [f'{i:05d}.png' for i in range(4)]
    assert sorted(p.name for p in out.iterdir()) == ['masks', 'overlay.mp4']

    code, stdout, _ = run_cli(argv, capsys)
    assert code == 0 and 'already complete' in stdout and 'nothing to do' in stdout
    code, stdout, _ = run_cli(argv + ['--overwrite'], capsys)
    assert code == 0 and 'wrote' in stdout
