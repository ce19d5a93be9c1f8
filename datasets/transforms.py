"""Training augmentations (docs/training.md), on uint8 tensors, drawing only from torch's RNG.

Every geometric op takes the image and its label mask together and resamples
both on the same pixel-centred grid: the image bicubic, the mask with the
nearest neighbour *of the same sampling point*. (torchvision's nearest resize
picks the top-left neighbour instead, which moves a mask up to half a pixel
off its image.) Using torch's RNG only means one seed per DataLoader worker
fixes a sample.
"""
import math

import numpy as np
import torch
import torch.nn.functional as nnf
import torchvision.transforms as v1
import torchvision.transforms.v2 as v2
import torchvision.transforms.v2.functional as F
from kornia.geometry.transform import get_tps_transform, warp_image_tps
from torchvision import tv_tensors

from util.tensor_util import IMAGENET_MEAN, IMAGENET_STD

BICUBIC = v2.InterpolationMode.BICUBIC
NEAREST_EXACT = v2.InterpolationMode.NEAREST_EXACT  # samples the pixel holding the sampling point
# Pixels an affine warp uncovers get the mean colour (zero after normalisation) and background.
MEAN_COLOUR = tuple(round(255 * m) for m in IMAGENET_MEAN)
FILL = {tv_tensors.Image: MEAN_COLOUR, tv_tensors.Mask: 0}


def to_tensors(rgb, labels):
    """HxWx3 uint8 + HxW uint8 numpy -> (3,H,W) and (H,W) uint8 tensors sharing their memory."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1), torch.from_numpy(np.ascontiguousarray(labels))


def normalise(image):
    """uint8 (...,3,H,W) -> ImageNet-normalised float."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image.float() / 255 - mean) / std


def uniform(low, high):
    return low + (high - low) * float(torch.rand(()))


# --- geometry shared by image and mask --------------------------------------------------------

def resized_crop(image, mask, box, size):
    """The box (top, left, height, width) of image (...,3,H,W) and mask (...,H,W), resampled to size (h, w):
    image bicubic (antialiased when shrinking), mask nearest."""
    image = F.resized_crop(image.as_subclass(torch.Tensor), *box, list(size), interpolation=BICUBIC, antialias=True)
    mask = F.resized_crop(mask.as_subclass(torch.Tensor).unsqueeze(-3), *box, list(size),
                          interpolation=NEAREST_EXACT).squeeze(-3)
    return image, mask


def resize_short_side(image, mask, size):
    """Scales so that the shorter side is `size` pixels (the longer one rounded down, as torchvision)."""
    h, w = image.shape[-2:]
    out = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    return resized_crop(image, mask, (0, 0, h, w), out)


def affine_grid(angle, scale, shear, height, width):
    """grid_sample grid (1,H,W,2) of a rotation by `angle` degrees, zoom `scale` and x-shear `shear`
    degrees about the image centre (output size = input size)."""
    a, s = math.radians(angle), math.radians(shear)
    forward = scale * torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]],
                                   dtype=torch.float64) @ torch.tensor([[1, math.tan(s)], [0, 1]], dtype=torch.float64)
    # Output pixel centres -> source points, in grid_sample's [-1, 1] frame (x, y order).
    half = torch.tensor([width / 2, height / 2], dtype=torch.float64)
    theta = torch.linalg.inv(forward) * half[None, :] / half[:, None]
    theta = torch.cat([theta, torch.zeros(2, 1, dtype=torch.float64)], 1).float()
    return nnf.affine_grid(theta[None], [1, 1, height, width], align_corners=False)


def affine(image, mask, angle=0.0, scale=1.0, shear=0.0, interpolation='bicubic', fill=MEAN_COLOUR):
    """Warps image (...,3,H,W) and mask (...,H,W) uint8 on one grid: the image with `interpolation`,
    uncovered pixels `fill`; the mask nearest, uncovered pixels 0."""
    h, w = image.shape[-2:]
    grid = affine_grid(angle, scale, shear, h, w)
    frames = image.reshape(-1, 3, h, w)
    grids = grid.expand(frames.shape[0], -1, -1, -1)
    # Border padding keeps the bicubic kernel from pulling black into the edge pixels; what lies outside
    # the source (by the nearest-sample rule the mask uses) gets the fill colour.
    warped = nnf.grid_sample(frames.float(), grids, mode=interpolation, padding_mode='border', align_corners=False)
    inside = nnf.grid_sample(torch.ones(1, 1, h, w), grid, mode='nearest', align_corners=False) > 0.5
    warped = torch.where(inside, warped, torch.tensor(fill, dtype=warped.dtype).view(1, 3, 1, 1))
    labels = mask.reshape(-1, 1, h, w).float()
    warped_mask = nnf.grid_sample(labels, grid.expand(labels.shape[0], -1, -1, -1), mode='nearest', align_corners=False)
    return (warped.round_().clamp_(0, 255).to(torch.uint8).view(image.shape),
            warped_mask.to(mask.dtype).view(mask.shape))


def random_affine(image, mask, degrees, shear, scale=(1.0, 1.0), interpolation='bicubic'):
    """Rotation in ±degrees, zoom in `scale`, x-shear in ±shear degrees (torchvision's RandomAffine draws)."""
    return affine(image, mask, uniform(-degrees, degrees), uniform(*scale), uniform(-shear, shear), interpolation)


def random_flip(image, mask):
    if torch.rand(()) < 0.5:
        return image.flip(-1), mask.flip(-1)
    return image, mask


class RandomThinPlateSpline:
    """Thin-plate-spline warp of an image and its binary mask, applied with probability p.

    `points` control points are drawn uniformly over the image and moved by
    Gaussian noise of `sigma` image sizes, as the published augmentation.
    """

    def __init__(self, p=1 / 3, points=12, sigma=0.02):
        self.p, self.points, self.sigma = p, points, sigma

    def __call__(self, image, mask):
        if torch.rand(()) >= self.p:
            return image, mask
        # kornia's control points live in grid_sample's [-1, 1] frame: one image size is 2 units.
        src = torch.rand(1, self.points, 2) * 2 - 1
        dst = src + torch.randn(1, self.points, 2) * (2 * self.sigma)
        kernel_weights, affine_weights = get_tps_transform(dst, src)
        stacked = torch.cat([image.float(), mask.float().unsqueeze(0)], 0).unsqueeze(0)
        # Border padding: samples pulled from just outside repeat the edge, in image and mask alike.
        warped = warp_image_tps(stacked, src, kernel_weights, affine_weights, padding_mode='border')[0]
        image = warped[:3].round().clamp(0, 255).to(torch.uint8)
        return image, (warped[3] > 0.5).to(mask.dtype)


# --- the two pipelines ------------------------------------------------------------------------

class StaticTransform:
    """Three 'frames' from one still image, as published (docs/training.md).

    Drawn once per sample and shared by its frames: zoom, horizontal flip,
    colour jitter with hue and grayscale, so a sample never holds mirrored
    or differently zoomed copies. Per frame: a small affine (bicubic),
    resize and padded random crop, a light jitter, then the thin-plate-spline warp.
    """

    def __init__(self, size):
        self.size = size
        self.crop = v2.RandomCrop(size, pad_if_needed=True, fill=FILL)  # whole pixels: image and mask alike
        self.per_frame_jitter = v2.ColorJitter(0.1, 0.05, 0.05, 0)
        self.tps = RandomThinPlateSpline()
        self.shared_colour = v2.Compose([v2.ColorJitter(0.1, 0.05, 0.05, 0.05), v2.RandomGrayscale(0.05)])

    def __call__(self, image, mask, frames=3):
        """image (3,H,W) uint8, mask (H,W) -> images (T,3,size,size) uint8, masks (T,size,size)."""
        # The shared zoom only scales: bilinear is enough (the published code uses nearest here).
        image, mask = random_flip(*random_affine(image, mask, 0, 0, scale=(0.8, 1.5), interpolation='bilinear'))
        images, masks = [], []
        for _ in range(frames):
            view, view_mask = random_affine(image, mask, degrees=20, shear=10, scale=(0.9, 1.1))
            view, view_mask = self.crop(*(t(x) for t, x in zip((tv_tensors.Image, tv_tensors.Mask),
                                                                resize_short_side(view, view_mask, self.size))))
            view, view_mask = self.tps(self.per_frame_jitter(view).as_subclass(torch.Tensor),
                                       view_mask.as_subclass(torch.Tensor))
            images.append(view)
            masks.append(view_mask)
        # A batched tv_tensor gets one set of colour parameters for all its frames.
        return self.shared_colour(tv_tensors.Image(torch.stack(images))).as_subclass(torch.Tensor), torch.stack(masks)


class VideoTransform:
    """Crop, flip and colour shared by the frames of a sample; a small affine and jitter per frame."""

    def __init__(self, size, crop_scale=(0.36, 1.0), degrees=15, shear=10):
        self.size, self.crop_scale = size, crop_scale
        self.degrees, self.shear = degrees, shear
        self.shared_colour = v2.Compose([v2.ColorJitter(0.1, 0.03, 0.03, 0), v2.RandomGrayscale(0.05)])
        self.frame_jitter = v2.ColorJitter(0.01, 0.01, 0.01, 0)

    def crop_box(self, frame):
        """(top, left, height, width) of torchvision's RandomResizedCrop (aspect ratio 3/4..4/3)."""
        return v1.RandomResizedCrop.get_params(frame, list(self.crop_scale), [3 / 4, 4 / 3])

    def __call__(self, images, masks):
        """images: (3,H,W) uint8 frames, masks: (H,W) uint8 labels (sequences, or stacked tensors)
        -> (T,3,size,size), (T,size,size) uint8. Frames may be views into the decoded arrays:
        only the cropped pixels are ever copied or converted."""
        box = self.crop_box(images[0])
        cropped = [resized_crop(image, mask, box, (self.size, self.size)) for image, mask in zip(images, masks)]
        # Flipping after the crop gives the same distribution as before it, on fewer pixels.
        images, masks = random_flip(torch.stack([c[0] for c in cropped]), torch.stack([c[1] for c in cropped]))
        # A batched tv_tensor gets one set of random parameters for all its frames.
        images = self.shared_colour(tv_tensors.Image(images)).as_subclass(torch.Tensor)
        out_images, out_masks = [], []
        for image, mask in zip(images, masks):
            image, mask = random_affine(image, mask, self.degrees, self.shear)
            out_images.append(self.frame_jitter(tv_tensors.Image(image)).as_subclass(torch.Tensor))
            out_masks.append(mask)
        return torch.stack(out_images), torch.stack(out_masks)
