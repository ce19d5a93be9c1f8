"""Box -> mask by GrabCut (util/grabcut.py)."""
import numpy as np
import pytest

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
