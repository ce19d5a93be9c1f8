"""A full disk: every output is checked when it is closed (the mp4 writer's included); a failed write is
one `error:` line and nothing of it is kept as complete."""
import errno
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import segment_video
from util.errors import UserInputError, run_main
from util.image_io import write_palette_png
from util.output import atomic_folder
from util.overlay import Mp4Writer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def small_disk(tmp_path):
    """A 120 KB tmpfs: a file system that really fills up (needs root, as in the CI container)."""
    mount_point = tmp_path / 'disk'
    mount_point.mkdir()
    mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=120k', 'tmpfs', str(mount_point)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip('cannot mount a tmpfs here (not root); the simulated full-disk tests below still run')
    yield mount_point
    subprocess.run(['umount', str(mount_point)], check=True)


def test_segment_video_on_a_full_disk_is_one_line_and_leaves_nothing(small_disk, synthetic_checkpoint, capsys):
    out = small_disk / 'out'
    argv = ['--video', REPO / 'samples' / 'judo.mp4', '--mask', REPO / 'samples' / 'judo_masks' / '00000.png',
            '--output', out, '--model', synthetic_checkpoint, '--size', 32, '--device', 'cpu']
    with pytest.raises(SystemExit) as e:
        run_main(lambda: segment_video.main([str(a) for a in argv]))
    assert e.value.code == 2
    stdout, err = capsys.readouterr()
    assert err.splitlines()[-1] == (f'error: {out / "overlay.mp4"}: cannot write the video (no space left on the '
                                    'device); nothing of it was kept')
    assert 'wrote' not in stdout
    assert list(small_disk.iterdir()) == []


def test_mp4_writer_on_a_full_disk_keeps_nothing(small_disk):
    path = small_disk / 'v.mp4'
    rng = np.random.default_rng(0)
    with pytest.raises(UserInputError) as e:
        with Mp4Writer(str(path), 10) as writer:
            for _ in range(40):
                writer.write(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))   # noise: ~10 KB a frame
    assert str(e.value) == f'{path}: cannot write the video (no space left on the device); nothing of it was kept'
    assert list(small_disk.iterdir()) == []


def test_a_truncated_mp4_is_never_published(tmp_path, monkeypatch):
    """Simulated: the writer's file loses its end (a failed write), which OpenCV does not report."""
    path = tmp_path / 'v.mp4'
    writer = Mp4Writer(str(path), 10)
    for _ in range(5):
        writer.write(np.full((32, 32, 3), 128, np.uint8))
    writer.writer.release()
    tmp = Path(writer.tmp)
    tmp.write_bytes(tmp.read_bytes()[:tmp.stat().st_size // 2])
    monkeypatch.setattr(writer, 'writer', None)   # released above
    with pytest.raises(UserInputError) as e:
        writer.close()
    assert str(e.value).startswith(f'{path}: cannot write the video (')
    assert str(e.value).endswith('); nothing of it was kept')
    assert list(tmp_path.iterdir()) == []


def test_a_failed_png_write_is_one_line_and_leaves_no_file(tmp_path, monkeypatch):
    def no_space(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b'\x89PNG partial')
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(Image.Image, 'save', no_space)
    path = tmp_path / 'm.png'
    with pytest.raises(UserInputError) as e:
        write_palette_png(str(path), np.zeros((4, 4), np.uint8))
    assert str(e.value) == f'{path}: cannot write (No space left on device); nothing of it was kept'
    assert list(tmp_path.iterdir()) == []


def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path):
    a_file = tmp_path / 'file'
    a_file.write_text('')
    with pytest.raises(UserInputError) as e:
        with atomic_folder(str(a_file / 'masks')):
            pass
    assert str(e.value) == f'{a_file / "masks"}: cannot write (Not a directory); nothing of it was kept'
