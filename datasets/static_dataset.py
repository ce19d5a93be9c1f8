"""Still images with a foreground mask, turned into three-frame 'videos' for stage 0.

Two layouts, detected per file: the flat one of DUTS/ECSSD/BIG/HRSOD

    <root>/x.jpg, <root>/x.png

and the class folders of FSS-1000

    <root>/<class>/x.jpg, <root>/<class>/x.png

Each sample is three random views of one image sharing zoom, flip and colour (docs/training.md).
The mask's non-zero pixels are the object.
"""
import glob
import os

import torch
from torch.utils.data import Dataset

from datasets.transforms import StaticTransform, normalise, to_tensors
from util.errors import UserInputError
from util.image_io import read_binary_mask, read_rgb

NUM_FRAMES = 3
# Redraws of a sample whose first view lost the object (the memory would hold nothing).
VIEW_ATTEMPTS = 5


def find_image_mask_pairs(root):
    """Sorted (x.jpg, x.png) pairs directly in `root` and one folder below it."""
    jpgs = glob.glob(os.path.join(glob.escape(root), '*.jpg')) + \
        glob.glob(os.path.join(glob.escape(root), '*', '*.jpg'))
    pairs = [(jpg, jpg[:-len('.jpg')] + '.png') for jpg in sorted(jpgs)]
    return [(jpg, png) for jpg, png in pairs if os.path.isfile(png)]


class StaticDataset(Dataset):
    def __init__(self, root, size=384):
        if not os.path.isdir(root):
            raise UserInputError(f'{root}: static image folder not found')
        self.root = root
        self.pairs = find_image_mask_pairs(root)
        if not self.pairs:
            raise UserInputError(f'{root}: no x.jpg + x.png pairs found (expected <root>/x.jpg or '
                                 '<root>/<class>/x.jpg with the mask x.png beside it)')
        self.transform = StaticTransform(size)

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, idx):
        jpg, png = self.pairs[idx]
        image, mask = to_tensors(read_rgb(jpg), read_binary_mask(png))
        if image.shape[-2:] != mask.shape[-2:]:
            raise UserInputError(f'{png}: mask size {tuple(mask.shape)} differs from the image\'s '
                                 f'{tuple(image.shape[-2:])}')
        for _ in range(VIEW_ATTEMPTS):
            images, masks = self.transform(image, mask, NUM_FRAMES)
            if masks[0].any():
                break
        masks = masks.long()                                      # (T,H,W) 0/1
        # If the first view still shows no object (an empty mask file), nothing can be tracked:
        # the sample trains background only and selector 0 keeps it out of the quality loss.
        present = int(masks[0].any())
        masks = masks * present
        return {
            'rgb': normalise(images),
            'masks': masks.unsqueeze(1).float(),                  # (T,1,H,W): one object
            'cls_gt': masks,
            'selector': torch.tensor([float(present)]),
            'name': os.path.relpath(jpg, self.root),
        }
