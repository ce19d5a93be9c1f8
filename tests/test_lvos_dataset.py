"""LVOS reader (datasets/lvos_test_dataset.py): entries from the metadata, up-front checks."""
import numpy as np
import pytest
from lvos_tree import square, write_split

from datasets.lvos_test_dataset import LVOSTestDataset
from util.errors import UserInputError

SHAPE = (20, 32)


def gt(number):
    """Object 2 from frame 0; object 5 visible from frame 5 but entering (by the metadata) on 10;
    object 4 entering on 10 too."""
    out = square(SHAPE, 1, 6, 1, 6, 2)
    if number >= 5:
        out[10:14, 10:14] = 5
    if number >= 10:
        out[15:18, 20:30] = 4
    return out


@pytest.fixture
def split(tmp_path):
    split_dir = tmp_path / 'valid'
    write_split(split_dir, {'vid': (6, {2: (0, 6), 5: (10, 4), 4: (10, 3)}, gt)}, SHAPE)
    return split_dir


def test_each_object_enters_on_its_own_frame_with_only_its_id(split):
    video = LVOSTestDataset(split).video('vid')
    assert video.frame_names == [f'{n:08d}' for n in range(0, 30, 5)]
    assert sorted(video.labels) == [0, 2]   # frames 00000000 and 00000010
    first, later = video.labels[0], video.labels[2]
    np.testing.assert_array_equal(first, square(SHAPE, 1, 6, 1, 6, 2))   # object 5 is visible, not entered
    assert set(np.unique(later)) == {0, 4, 5}                             # object 2 is not given again
    assert (later == 5).sum() == 16 and (later == 4).sum() == 30
    assert video.objects() == [2, 4, 5] and video.first_labelled == 0 and video.size == SHAPE


def test_frames_stream_with_their_names_and_every_frame_is_written(split):
    video = LVOSTestDataset(split).video('vid')
    name, rgb = next(video.frames())
    assert name == '00000000' and rgb.shape == (*SHAPE, 3)
    assert video.written_frames == video.frame_names


def test_late_first_object(tmp_path):
    write_split(tmp_path / 'valid', {'late': (5, {1: (10, 3)}, lambda n: square(SHAPE, 2, 8, 2, 8))}, SHAPE)
    video = LVOSTestDataset(tmp_path / 'valid').video('late')
    assert list(video.labels) == [2] and video.first_labelled == 2


@pytest.mark.parametrize('mutate, message', [
    (lambda d: (d / 'valid_meta.json').unlink(), r'valid_meta\.json: LVOS metadata not found'),
    (lambda d: (d / 'Annotations' / 'vid' / '00000010.png').unlink(), r'vid/00000010\.png: file not found'),
    (lambda d: (d / 'JPEGImages' / 'vid' / '00000020.jpg').unlink(),
     r'vid/00000020\.jpg: not found, but object 2 of video vid is annotated from frame 0 to 25'),
])
def test_bad_split_is_one_clear_error(split, mutate, message):
    mutate(split)
    with pytest.raises(UserInputError, match=message):
        LVOSTestDataset(split).video('vid')


def test_empty_first_mask(tmp_path):
    write_split(tmp_path / 'valid', {'vid': (6, {2: (0, 6), 7: (5, 3)}, gt)}, SHAPE)
    with pytest.raises(UserInputError, match=r'00000005\.png: object 7 of video vid enters on this frame but its '
                                             'mask here is empty'):
        LVOSTestDataset(tmp_path / 'valid').video('vid')


def test_range_beyond_the_frames(tmp_path):
    write_split(tmp_path / 'valid', {'vid': (6, {2: (0, 6), 4: (10, 5)}, gt)}, SHAPE)
    with pytest.raises(UserInputError, match=r'vid/00000030\.jpg: not found, but object 4 .* from frame 10 to 30'):
        LVOSTestDataset(tmp_path / 'valid').video('vid')


def test_video_folder_missing_and_unlisted_folder(split):
    (split / 'JPEGImages' / 'vid').rename(split / 'JPEGImages' / 'other')
    with pytest.warns(UserWarning, match='1 video folder.* not in the metadata'):
        dataset = LVOSTestDataset(split)
    with pytest.raises(UserInputError, match='frames of video vid .* not found'):
        dataset.video('vid')
