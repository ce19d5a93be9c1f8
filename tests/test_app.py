"""app.py's page logic without a browser: choosing a video, marks, errors (tests/test_app_page.py drives the page)."""
import zipfile

import numpy as np
import pytest

import app
from util.errors import UserInputError
from util.palette import DAVIS_PALETTE

LIMITS = app.Limits(max_frames=100, max_upload_mb=50)


def choose(tmp_path, path, name='clip', limits=LIMITS):
    return app.open_choice(str(path), name, str(tmp_path / 'session'), limits)


def test_the_sample_is_a_video_to_mark(tmp_path):
    video = choose(tmp_path, app.SAMPLE, 'judo.mp4')
    assert (video.size, video.num_frames, video.fps) == ((480, 854), 16, 25)
    assert app.read_frame(video, 15).shape == (480, 854, 3)


@pytest.mark.parametrize('file, content, message', [
    ('notes.txt', b'hello', r'^notes.txt: not a video \(.mp4, .mov, .avi\) or a zip of frames$'),
    ('holiday.mp4', b'not a video', r'^holiday.mp4: cannot read this video'),
    ('frames.zip', b'not a zip', r'^frames.zip: not a readable zip file'),
])
def test_bad_uploads_are_one_message_naming_the_upload(tmp_path, file, content, message):
    path = tmp_path / 'upload' / file
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(UserInputError, match=message):
        choose(tmp_path, path, file)


def test_limits_name_the_upload(tmp_path):
    with pytest.raises(UserInputError, match=r'^judo.mp4: 16 frames, more than the limit of 10$'):
        choose(tmp_path, app.SAMPLE, 'judo.mp4', app.Limits(max_frames=10, max_upload_mb=50))
    with pytest.raises(UserInputError, match=r'^judo.mp4: 0 MB, more than the limit of 0 MB$'):
        choose(tmp_path, app.SAMPLE, 'judo.mp4', app.Limits(max_frames=100, max_upload_mb=0))
    bomb = tmp_path / 'bomb.zip'
    with zipfile.ZipFile(bomb, 'w', zipfile.ZIP_DEFLATED) as archive:
        for i in range(2):
            archive.writestr(f'{i:05d}.jpg', bytes(3 << 20))
    with pytest.raises(UserInputError, match=r'^frames.zip: refused: unpacks to 6 MB, more than the limit of 4 MB$'):
        choose(tmp_path, bomb, 'frames.zip', app.Limits(max_frames=100, max_upload_mb=1))
    assert not (tmp_path / 'session' / 'frames').exists()


def test_a_zip_of_frames_is_a_video(tmp_path):
    import cv2
    archive_path = tmp_path / 'frames.zip'
    with zipfile.ZipFile(archive_path, 'w') as archive:
        for i in range(3):
            archive.writestr(f'clip/{i}.png', cv2.imencode('.png', np.full((24, 32, 3), i * 50, np.uint8))[1].tobytes())
    video = choose(tmp_path, archive_path, 'frames.zip')
    assert (video.size, video.num_frames, video.fps) == ((24, 32), 3, app.FOLDER_FPS)
    assert app.read_frame(video, 2)[0, 0, 0] == 100


def layer_with(strokes, size=(48, 64)):
    """An RGBA drawing layer: {object id: (y0, y1, x0, x1)} painted in the object's palette colour."""
    layer = np.zeros((*size, 4), np.uint8)
    for k, (y0, y1, x0, x1) in strokes.items():
        layer[y0:y1, x0:x1, :3] = DAVIS_PALETTE[k]
        layer[y0:y1, x0:x1, 3] = 255
    return layer


def test_each_brush_colour_is_one_object():
    strokes = app.strokes_by_object(layer_with({1: (0, 4, 0, 4), 3: (10, 12, 10, 20)}))
    assert sorted(strokes) == [1, 3]
    assert strokes[1].sum() == 16 and strokes[3].sum() == 20


def test_brush_box_undo_and_clear_of_marks(tmp_path):
    video = choose(tmp_path, app.SAMPLE, 'judo.mp4')
    layer = layer_with({2: (100, 300, 300, 301)}, video.size)
    app.add_marks(video, 0, layer_with({1: (10, 20, 10, 20)}, video.size), 'brush')
    assert (video.marks[0] == 1).sum() == 100
    with pytest.raises(UserInputError, match='less than 2x2'):     # a stroke 1 pixel wide is no box
        app.add_marks(video, 0, layer, 'box')
    app.add_marks(video, 5, layer_with({2: (100, 300, 250, 400)}, video.size), 'box')
    assert set(np.unique(video.marks[5])) == {0, 2}
    ys, xs = np.nonzero(video.marks[5])
    assert ys.min() >= 100 and ys.max() < 300 and xs.min() >= 250 and xs.max() < 400
    assert app.marks_summary(video) == 'Marked: frame 0: object 1; frame 5: object 2'
    app.undo(video)
    assert list(video.marks) == [0]
    app.clear(video)
    assert video.marks == {}
    app.undo(video)         # takes back the whole Clear
    assert list(video.marks) == [0] and (video.marks[0] == 1).sum() == 100
    with pytest.raises(UserInputError, match='nothing drawn'):
        app.add_marks(video, 0, np.zeros((*video.size, 4), np.uint8), 'brush')


def test_segmenting_without_marks_is_refused(tmp_path):
    video = choose(tmp_path, app.SAMPLE, 'judo.mp4')
    with pytest.raises(UserInputError, match='^judo.mp4: no object marked'):
        next(app.segment(video, None, 96, str(tmp_path / 'out'), 100))
