"""Training augmentations: what the frames of a sample share, crop scales, mask-image alignment."""
import numpy as np
import pytest
import torch
from PIL import Image

from datasets.transforms import MEAN_COLOUR, StaticTransform, VideoTransform, affine, affine_matrix, to_tensors


def square_scene(h=120, w=160, side=40, offset=(0, -20)):
    """White square (left of centre by default) on black; the image is the mask."""
    mask = np.zeros((h, w), np.uint8)
    top, left = h // 2 - side // 2 + offset[0], w // 2 - side // 2 + offset[1]
    mask[top:top + side, left:left + side] = 1
    return np.repeat(mask[..., None] * 255, 3, axis=2), mask


def centroid(binary):
    points = torch.nonzero(binary).float()
    return points.mean(0) if len(points) else None


def frames_of(rgb, mask, count=3):
    image, labels = to_tensors(rgb, mask)
    return [image] * count, [labels] * count


def test_video_transform_shares_crop_flip_and_colour():
    """Without the per-frame affine and jitter the three frames come out identical: crop, flip,
    colour jitter and grayscale are drawn once per sample. Across samples they vary."""
    torch.manual_seed(0)
    transform = VideoTransform(64, degrees=0, shear=0)
    transform.frame_jitter = lambda image: image
    rgb, mask = square_scene()
    rgb[:, :, 0] = np.linspace(0, 255, rgb.shape[1]).astype(np.uint8)   # colour, so grayscale shows
    sides, areas, grey = set(), [], 0
    for _ in range(40):
        images, masks = transform(*frames_of(rgb, mask))
        assert images.shape == (3, 3, 64, 64) and images.dtype == torch.uint8 and masks.shape == (3, 64, 64)
        assert torch.equal(images[0], images[1]) and torch.equal(images[0], images[2])
        assert torch.equal(masks[0], masks[1]) and torch.equal(masks[0], masks[2])
        if masks[0].any():
            sides.add(bool(centroid(masks[0])[1] < 32))
            areas.append(int(masks[0].sum()))
        grey += int(torch.equal(images[0, 0], images[0, 1]) and torch.equal(images[0, 1], images[0, 2]))
    assert sides == {True, False}                    # both flips occur
    assert max(areas) > 1.5 * min(areas)             # the crop scale varies across samples
    assert grey < 10                                 # grayscale p 0.05


def test_video_transform_draws_affine_and_jitter_per_frame():
    torch.manual_seed(1)
    rgb, mask = square_scene()
    transform = VideoTransform(64)
    differing_masks = 0
    for _ in range(10):
        _, masks = transform(*frames_of(rgb, mask))
        differing_masks += int(not torch.equal(masks[0], masks[1]) and not torch.equal(masks[1], masks[2]))
    assert differing_masks >= 9                      # rotation/shear drawn per frame

    transform = VideoTransform(64, degrees=0, shear=0)  # geometry shared: only the light jitter differs
    for _ in range(5):
        images, masks = transform(*frames_of(rgb, mask))
        assert torch.equal(masks[0], masks[1])
        differences = (images[0].float() - images[1].float()).abs()
        assert differences.max() > 0 and differences.mean() < 8


def test_crop_scale_ranges():
    """RandomResizedCrop boxes cover 36-100 % of the frame (BL30K 25-100 %), aspect ratio 3/4..4/3."""
    torch.manual_seed(0)
    frame = torch.zeros(3, 480, 854, dtype=torch.uint8)
    for low in (0.36, 0.25):
        transform = VideoTransform(384, crop_scale=(low, 1.0))
        fractions = []
        for _ in range(1000):
            top, left, h, w = transform.crop_box(frame)
            assert 0 <= top and top + h <= 480 and 0 <= left and left + w <= 854
            assert 3 / 4 - 0.02 <= w / h <= 4 / 3 + 0.02
            fractions.append(h * w / (480 * 854))
        assert low - 0.01 <= min(fractions) < low + 0.03 and max(fractions) > 0.5


def test_bl30k_crops_down_to_a_quarter(tmp_path):
    from datasets.training_data import video_data
    from util.hyper_para import parse_args
    for folder in ('JPEGImages', 'Annotations'):
        (tmp_path / folder / 'v').mkdir(parents=True)
    rgb, mask = square_scene(48, 64, 16)
    for t in range(3):
        Image.fromarray(rgb).save(tmp_path / 'JPEGImages' / 'v' / f'{t:05d}.jpg')
        Image.fromarray(mask).save(tmp_path / 'Annotations' / 'v' / f'{t:05d}.png')
    datasets, _ = video_data(parse_args(['--id', 'x', '--stage', '1', '--bl_root', str(tmp_path)]))
    assert datasets[0].transform.crop_scale == (0.25, 1.0)
    datasets, _ = video_data(parse_args(['--id', 'x', '--stage', '2', '--davis_root', str(tmp_path),
                                         '--davis_subset', 'all', '--yv_repeat', '0']))
    assert datasets[0].transform.crop_scale == (0.36, 1.0)


def mean_offset(pairs):
    """Mean (dy, dx) between the image's object centroid and its mask's, over (image, mask) frames."""
    offsets = []
    for image, mask in pairs:
        # 170: above the mean-colour fill even after brightness jitter, below the jittered white
        from_image, from_mask = centroid(image.float().mean(0) > 170), centroid(mask > 0)
        if from_image is not None and from_mask is not None:
            offsets.append((from_image - from_mask).tolist())
    assert len(offsets) > 50
    return np.array(offsets).mean(0)


def test_video_masks_stay_on_their_images():
    """Crop (image bicubic, mask nearest) and the per-frame affine resample both on one grid:
    the mean centroid offset stays far below the half pixel of a top-left nearest resize."""
    torch.manual_seed(0)
    rgb, mask = square_scene(offset=(0, 0))
    transform = VideoTransform(64)
    pairs = [pair for _ in range(30) for pair in zip(*transform(*frames_of(rgb, mask)))]
    assert np.abs(mean_offset(pairs)).max() < 0.1, mean_offset(pairs)


def test_static_masks_stay_on_their_images():
    torch.manual_seed(0)
    rgb, mask = square_scene(offset=(0, 0))
    transform = StaticTransform(64)
    pairs = [pair for _ in range(30) for pair in zip(*transform(*to_tensors(rgb, mask), 3))]
    assert np.abs(mean_offset(pairs)).max() < 0.1, mean_offset(pairs)


def test_affine_fills_uncovered_pixels():
    """Image bicubic with the mean colour where the warp uncovers pixels, the mask 0 there; a
    quarter turn of a square image is exact (no fill, no interpolation)."""
    rgb, mask = square_scene(64, 64, 20, offset=(5, 3))
    image, labels = to_tensors(rgb, mask)
    turned, turned_mask = affine(image, labels, affine_matrix(angle=90))
    assert torch.equal(turned_mask, torch.rot90(labels, -1)) and torch.equal(turned, torch.rot90(image, -1, (1, 2)))
    image = torch.full((3, 64, 64), 255, dtype=torch.uint8)
    warped, warped_mask = affine(image, torch.ones(64, 64, dtype=torch.uint8), affine_matrix(angle=45))
    corner = warped[:, 0, 0]
    assert corner.tolist() == list(MEAN_COLOUR) and warped_mask[0, 0] == 0
    assert warped[:, 32, 32].tolist() == [255] * 3 and warped_mask[32, 32] == 1


@pytest.mark.parametrize('angle', [7.0, -12.0])
def test_affine_image_is_bicubic(angle):
    """The image goes through a bicubic kernel (overshoot at a hard edge, which bilinear never gives)."""
    image = torch.zeros(3, 64, 64, dtype=torch.uint8)
    image[:, :, 32:] = 200
    warped, _ = affine(image, torch.zeros(64, 64, dtype=torch.uint8), affine_matrix(angle=angle))
    inner = warped[:, 16:48, 16:48]
    assert inner.max() > 200
