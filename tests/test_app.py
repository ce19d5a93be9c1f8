"""app.py's page logic without a browser: choosing a video, marks, errors (tests/test_app_page.py drives the page)."""
import os
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


@pytest.fixture(scope='module')
def api_network(synthetic_checkpoint):
    from qdmn import load_network
    return load_network(synthetic_checkpoint, device='cpu', amp=False)


@pytest.fixture
def small_video(tmp_path):
    """The sample's first 4 frames at 64x36, as an mp4 chosen on the page."""
    import cv2
    from util.overlay import Mp4Writer
    path = tmp_path / 'small.mp4'
    with Mp4Writer(str(path), 25) as writer:
        for i, (_, rgb) in enumerate(app.open_video(app.SAMPLE)):
            if i == 4:
                break
            writer.write(cv2.resize(rgb, (64, 36), interpolation=cv2.INTER_AREA))
    return choose(tmp_path, path, 'small.mp4')


def test_segment_writes_every_output_and_lists_the_lowest_quality_first(small_video, api_network, tmp_path):
    app.add_marks(small_video, 0, layer_with({1: (8, 28, 20, 44)}, small_video.size), 'brush')
    run = app.segment(small_video, api_network, -1, str(tmp_path / 'out'), 100)
    done = []
    while True:
        try:
            done.append(next(run))
        except StopIteration as finished:
            result = finished.value
            break
    assert done == [1, 2, 3, 4]
    with zipfile.ZipFile(result.masks_zip) as archive:
        assert archive.namelist() == [f'{i:05d}.png' for i in range(4)]
    assert [row[0] for row in result.timeline] == list(range(4))
    assert sum(q is not None for _, _, q, _ in result.timeline) >= 3     # every encoded frame has a quality
    assert sorted(os.path.basename(p) for p in result.memory_log) == ['memory_log.csv', 'memory_log.png']
    with open(result.memory_log[0]) as log:
        assert len(log.read().splitlines()) == 1 + 4                        # a header and one row per frame
    captions = [caption for _, caption in result.check_first]
    lowest = sorted((q, name) for _, name, q, _ in result.timeline if q is not None)
    assert [c.split(':')[0] for c in captions] == [f'frame {name}' for _, name in lowest]
    image, caption = app.result_frame(small_video, result.masks_dir, [row[1] for row in result.timeline], 2)
    assert image.shape == (36, 64, 3) and caption == 'frame 00002'
    for path in (result.overlay_mp4, result.overlay_webm):
        import cv2
        assert cv2.VideoCapture(path).get(cv2.CAP_PROP_FRAME_COUNT) == 4


def test_a_cancelled_run_leaves_no_output(small_video, api_network, tmp_path):
    app.add_marks(small_video, 0, layer_with({1: (8, 28, 20, 44)}, small_video.size), 'brush')
    out = tmp_path / 'out'
    run = app.segment(small_video, api_network, -1, str(out), 100)
    assert next(run) == 1
    run.close()     # what the page's Cancel does to the generator
    assert not (out / 'masks').exists() and not any(out.glob('overlay*')) and not (out / 'masks.zip').exists()


def test_segmentation_stops_at_the_frame_limit(small_video, api_network, tmp_path):
    app.add_marks(small_video, 0, layer_with({1: (8, 28, 20, 44)}, small_video.size), 'brush')
    with pytest.raises(UserInputError, match=r'^small.mp4: more frames than the limit of 2 \(the container said 4\)$'):
        list(app.segment(small_video, api_network, -1, str(tmp_path / 'out'), 2))
    assert not (tmp_path / 'out' / 'masks').exists()
