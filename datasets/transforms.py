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


def affine_matrix(angle=0.0, scale=1.0, shear=0.0, flip=False):
    """2x2 forward map (x, y) of a mirror (flip), then a zoom by `scale` and x-shear by `shear` degrees,
    then a rotation by `angle` degrees, all about the image centre."""
    a, s = math.radians(angle), math.radians(shear)
    rotation = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
    shearing = torch.tensor([[1, math.tan(s)], [0, 1]], dtype=torch.float64)
    mirror = torch.diag(torch.tensor([-1.0 if flip else 1.0, 1.0], dtype=torch.float64))
    return scale * rotation @ shearing @ mirror


def random_affine_matrix(degrees, shear, scale=(1.0, 1.0)):
    """Rotation in ±degrees, zoom in `scale`, x-shear in ±shear degrees (torchvision's RandomAffine draws)."""
    return affine_matrix(uniform(-degrees, degrees), uniform(*scale), uniform(-shear, shear))


def random_flip_matrix():
    return affine_matrix(flip=bool(torch.rand(()) < 0.5))


def affine(image, mask, matrix):
    """Warps image (...,3,H,W) and mask (...,H,W) uint8 by the forward map `matrix` on one grid of
    pixel centres: the image bicubic, uncovered pixels the mean colour; the mask nearest,
    uncovered pixels 0."""
    h, w = image.shape[-2:]
    # Output pixel centres -> source points, in grid_sample's [-1, 1] frame (x, y order).
    half = torch.tensor([w / 2, h / 2], dtype=torch.float64)
    theta = torch.linalg.inv(matrix) * half[None, :] / half[:, None]
    theta = torch.cat([theta, torch.zeros(2, 1, dtype=torch.float64)], 1).float()
    grid = nnf.affine_grid(theta[None], [1, 1, h, w], align_corners=False)
    frames = image.reshape(-1, 3, h, w)
    # Border padding keeps the bicubic kernel from pulling black into the edge pixels. A point is
    # uncovered when its nearest source pixel lies outside, i.e. outside [-1, 1): the rule the mask follows.
    warped = nnf.grid_sample(frames.float(), grid.expand(frames.shape[0], -1, -1, -1), mode='bicubic',
                             padding_mode='border', align_corners=False)
    inside = ((grid >= -1) & (grid < 1)).all(-1).unsqueeze(1)
    warped = torch.where(inside, warped, torch.tensor(MEAN_COLOUR, dtype=warped.dtype).view(1, 3, 1, 1))
    labels = mask.reshape(-1, 1, h, w).float()
    warped_mask = nnf.grid_sample(labels, grid.expand(labels.shape[0], -1, -1, -1), mode='nearest',
                                  align_corners=False)
    return (warped.round_().clamp_(0, 255).to(torch.uint8).view(image.shape),
            warped_mask.to(mask.dtype).view(mask.shape))


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
        shared = affine_matrix(scale=uniform(0.8, 1.5)) @ random_flip_matrix()
        images, masks = [], []
        for _ in range(frames):
            # The shared zoom and flip and this frame's affine in one bicubic warp (the published code
            # resamples twice, the zoom with nearest neighbours).
            view, view_mask = affine(image, mask, random_affine_matrix(20, 10, scale=(0.9, 1.1)) @ shared)
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
        images, masks = torch.stack([c[0] for c in cropped]), torch.stack([c[1] for c in cropped])
        # A batched tv_tensor gets one set of random parameters for all its frames.
        images = self.shared_colour(tv_tensors.Image(images)).as_subclass(torch.Tensor)
        # The shared flip rides on each frame's affine (after the crop: the same distribution as before it).
        flip = random_flip_matrix()
        out_images, out_masks = [], []
        for image, mask in zip(images, masks):
            image, mask = affine(image, mask, random_affine_matrix(self.degrees, self.shear) @ flip)
            out_images.append(self.frame_jitter(tv_tensors.Image(image)).as_subclass(torch.Tensor))
            out_masks.append(mask)
        return torch.stack(out_images), torch.stack(out_masks)
