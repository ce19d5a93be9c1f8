"""Training augmentations of the published code (README "Training"), on uint8 tensors, drawing only from torch's RNG.

Geometric transforms always see the image and its label mask together
(torchvision's v2 API applies one set of parameters to every input and
resamples masks with nearest neighbours), so the two never drift apart.
Using torch's RNG only means one seed per DataLoader worker fixes a sample.
"""
import numpy as np
import PIL.Image
import torch
import torchvision.transforms.v2 as v2
from kornia.geometry.transform import get_tps_transform, warp_image_tps
from torchvision import tv_tensors

from util.tensor_util import IMAGENET_MEAN, IMAGENET_STD

BICUBIC = v2.InterpolationMode.BICUBIC
BILINEAR = v2.InterpolationMode.BILINEAR  # tensor affine warps support no bicubic
# Pixels an affine warp uncovers get the mean colour (zero after normalisation) and background.
FILL = {tv_tensors.Image: tuple(round(255 * m) for m in IMAGENET_MEAN), tv_tensors.Mask: 0}


def to_tensors(rgb, labels):
    """HxWx3 uint8 + HxW uint8 numpy -> tv_tensors Image (3,H,W) and Mask (H,W)."""
    image = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1))
    return image, tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(labels)))


def normalise(image):
    """uint8 (...,3,H,W) -> ImageNet-normalised float."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image.float() / 255 - mean) / std


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
        image = tv_tensors.Image(warped[:3].round().clamp(0, 255).to(torch.uint8))
        return image, tv_tensors.Mask((warped[3] > 0.5).to(mask.dtype))


class StaticTransform:
    """Three 'frames' from one still image, as published.

    Drawn once per sample and shared by its frames: zoom, horizontal flip,
    colour jitter with hue and grayscale, so a sample never holds mirrored
    or differently zoomed copies. Per frame: a small affine (bicubic, on the
    PIL image), resize and padded random crop, a light jitter, then the
    thin-plate-spline warp.
    """

    def __init__(self, size):
        fill = {PIL.Image.Image: FILL[tv_tensors.Image], tv_tensors.Image: FILL[tv_tensors.Image], tv_tensors.Mask: 0}
        self.shared_geometry = v2.Compose([
            v2.RandomAffine(degrees=0, scale=(0.8, 1.5), interpolation=BILINEAR, fill=fill),
            v2.RandomHorizontalFlip(),
        ])
        self.per_frame_geometry = v2.Compose([
            v2.ToPILImage(),  # tensors get no bicubic affine; PIL does
            v2.RandomAffine(degrees=20, scale=(0.9, 1.1), shear=10, interpolation=BICUBIC, fill=fill),
            v2.Resize(size, interpolation=BICUBIC),
            v2.RandomCrop(size, pad_if_needed=True, fill=fill),
            v2.PILToTensor(),
        ])
        self.per_frame_jitter = v2.ColorJitter(0.1, 0.05, 0.05, 0)
        self.tps = RandomThinPlateSpline()
        self.shared_colour = v2.Compose([v2.ColorJitter(0.1, 0.05, 0.05, 0.05), v2.RandomGrayscale(0.05)])

    def __call__(self, image, mask, frames=3):
        """image (3,H,W) uint8, mask (H,W) -> images (T,3,size,size) uint8, masks (T,size,size)."""
        image, mask = self.shared_geometry(image, mask)
        images, masks = [], []
        for _ in range(frames):
            view, view_mask = self.per_frame_geometry(image, mask)
            view, view_mask = self.tps(self.per_frame_jitter(tv_tensors.Image(view)), tv_tensors.Mask(view_mask))
            images.append(view)
            masks.append(view_mask)
        # A batched tv_tensor gets one set of colour parameters for all its frames.
        return self.shared_colour(tv_tensors.Image(torch.stack(images))), torch.stack(masks)


class VideoTransform:
    """Crop, flip and colour shared by the three frames of a sample, plus a small per-frame jitter."""

    def __init__(self, size, crop_scale=(0.36, 1.0)):
        self.sequence = v2.Compose([
            v2.RandomHorizontalFlip(),
            v2.RandomResizedCrop(size, scale=crop_scale, interpolation=BICUBIC, antialias=True),
            v2.ColorJitter(0.1, 0.03, 0.03, 0),
            v2.RandomGrayscale(0.05),
        ])
        self.affine = v2.RandomAffine(degrees=15, shear=10, interpolation=BILINEAR, fill=FILL)
        self.jitter = v2.ColorJitter(0.01, 0.01, 0.01, 0)

    def __call__(self, images, masks):
        """images (T,3,H,W) uint8, masks (T,H,W) uint8 labels -> same, at the crop size."""
        # A batched tv_tensor gets one set of random parameters for all its frames.
        images, masks = self.sequence(tv_tensors.Image(images), tv_tensors.Mask(masks))
        out_images, out_masks = [], []
        for image, mask in zip(images, masks):  # indexing drops the tv_tensor type: re-wrap
            image, mask = self.affine(tv_tensors.Image(image), tv_tensors.Mask(mask))
            out_images.append(self.jitter(image))
            out_masks.append(mask)
        return torch.stack(out_images), torch.stack(out_masks)

