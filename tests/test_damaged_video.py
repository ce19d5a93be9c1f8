"""A damaged video is an error naming the frame where decoding stops, never a silently shorter result,
and FFmpeg's own messages stay off the terminal for the whole decode."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import segment_video
from datasets.video_reader import open_video
from util.errors import UserInputError, run_main

REPO = Path(__file__).resolve().parents[1]
JUDO = REPO / 'samples' / 'judo.mp4'          # H.264, 16 frames


def damaged_copy(src, dst, zeroed=30_000):
    """A copy of `src` with `zeroed` bytes in the middle set to 0: what a bad disk or download leaves."""
    data = bytearray(src.read_bytes())
    middle = len(data) // 2
    data[middle:middle + zeroed] = bytes(zeroed)
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize('source, stops_at, count', [('judo', 10, 16), ('example', 53, 117)])
def test_reader_names_the_frame_where_decoding_stops(source, stops_at, count, shared_dir, tmp_path):
    src = JUDO if source == 'judo' else shared_dir / 'data' / 'examples' / 'example.mp4'   # example: MPEG-4 Part 2
    video = open_video(str(damaged_copy(src, tmp_path / 'damaged.mp4')))
    names = []
    with pytest.raises(UserInputError) as e:
        for name, _ in video:
            names.append(name)
    assert len(names) == stops_at
    assert str(e.value) == (f'{tmp_path / "damaged.mp4"}: cannot decode frame {stops_at} of the {count} the video '
                            'announces (damaged or truncated file)')


def test_an_intact_video_decodes_every_frame():
    assert len(list(open_video(str(JUDO)))) == 16


def test_ffmpeg_stays_silent_for_the_whole_decode(tmp_path):
    """FFmpeg prints thousands of decoder lines to fd 2 from its own thread; only our line may appear."""
    damaged = damaged_copy(JUDO, tmp_path / 'damaged.mp4')
    code = ('import sys; from datasets.video_reader import open_video; from util.errors import run_main; '
            'run_main(lambda: list(open_video(sys.argv[1])))')
    result = subprocess.run([sys.executable, '-c', code, str(damaged)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == (f'error: {damaged}: cannot decode frame 10 of the 16 the video announces '
                             '(damaged or truncated file)\n')


def test_segment_video_on_a_damaged_video_fails_and_leaves_nothing(synthetic_checkpoint, tmp_path, capsys):
    damaged = damaged_copy(JUDO, tmp_path / 'damaged.mp4')
    mask = REPO / 'samples' / 'judo_masks' / '00000.png'
    out = tmp_path / 'out'
    argv = ['--video', damaged, '--mask', mask, '--output', out, '--model', synthetic_checkpoint, '--size', 32,
            '--device', 'cpu']
    with pytest.raises(SystemExit) as e:
        run_main(lambda: segment_video.main([str(a) for a in argv]))
    assert e.value.code == 2
    stdout, err = capsys.readouterr()
    assert err.splitlines()[-1] == (f'error: {damaged}: cannot decode frame 10 of the 16 the video announces '
                                    '(damaged or truncated file)')
    assert 'wrote' not in stdout
    assert not out.exists()
