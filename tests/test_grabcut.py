"""Box -> mask by GrabCut (util/grabcut.py)."""
import numpy as np
import pytest
from PIL import Image

from util.errors import UserInputError
from util.grabcut import box_to_mask, boxes_to_labels, parse_box


def two_discs(h=96, w=128):
    """Grey noisy background with a red and a blue disc: what GrabCut should cut out."""
    rng = np.random.default_rng(0)
    rgb = (rng.normal(128, 8, (h, w, 3))).clip(0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:h, :w]
    rgb[(yy - 40) ** 2 + (xx - 35) ** 2 < 15 ** 2] = (200, 30, 30)
    rgb[(yy - 55) ** 2 + (xx - 95) ** 2 < 12 ** 2] = (30, 40, 210)
    return rgb


def test_mask_is_inside_the_box_and_follows_the_object():
    rgb = two_discs()
    mask = box_to_mask(rgb, (15, 20, 56, 61))
    assert mask.any()
    assert not mask[:20].any() and not mask[61:].any() and not mask[:, :15].any() and not mask[:, 56:].any()
    disc = (rgb == (200, 30, 30)).all(-1)
    assert (mask & disc).sum() / disc.sum() > 0.9        # the object is kept
    assert (mask & ~disc).sum() / mask.sum() < 0.1       # the background inside the box is not


def test_several_boxes_give_ids_one_to_k():
    rgb = two_discs()
    labels = boxes_to_labels(rgb, [(15, 20, 56, 61), (78, 38, 112, 72)])
    assert labels.dtype == np.uint8 and labels.shape == rgb.shape[:2]
    assert set(np.unique(labels)) == {0, 1, 2}
    assert labels[40, 35] == 1 and labels[55, 95] == 2


def test_a_flat_box_falls_back_to_the_box():
    rgb = np.full((40, 50, 3), 90, np.uint8)
    with pytest.warns(UserWarning, match='no object'):
        mask = box_to_mask(rgb, (10, 5, 30, 25))
    assert mask.sum() == 20 * 20 and mask[5:25, 10:30].all()


def test_box_parsing_and_refusals():
    assert parse_box('30,40,10,5') == (10, 5, 30, 40)
    with pytest.raises(UserInputError, match='four numbers'):
        parse_box('1,2,3')
    with pytest.raises(UserInputError, match='less than 2x2'):
        box_to_mask(two_discs(), (200, 200, 300, 300))


def test_segment_video_boxes_make_the_first_mask(tmp_path, synthetic_checkpoint):
    import segment_video
    from util.image_io import read_label_mask
    frames = tmp_path / 'frames'
    frames.mkdir()
    for i in range(3):
        Image.fromarray(np.roll(two_discs(), i, axis=1)).save(frames / f'{i:05d}.png')
    out = tmp_path / 'out'
    segment_video.main(['--video', str(frames), '--box', '15,20,56,61', '--box', '112,72,78,38', '--output', str(out),
                        '--model', str(synthetic_checkpoint), '--device', 'cpu', '--size', '-1'])
    first, _ = read_label_mask(out / 'masks' / '00000.png')
    assert set(np.unique(first)) == {0, 1, 2}
    ys, xs = np.nonzero(first == 1)
    assert ys.min() >= 20 and ys.max() < 61 and xs.min() >= 15 and xs.max() < 56
    ys, xs = np.nonzero(first == 2)
    assert ys.min() >= 38 and ys.max() < 72 and xs.min() >= 78 and xs.max() < 112
    assert sorted(p.name for p in (out / 'masks').iterdir()) == ['00000.png', '00001.png', '00002.png']


def test_segment_video_refuses_a_bad_box(tmp_path):
    import segment_video
    with pytest.raises(UserInputError, match='--box 1,2,3: expected four numbers'):
        segment_video.main(['--video', 'samples/judo.mp4', '--box', '1,2,3', '--output', str(tmp_path / 'o')])
