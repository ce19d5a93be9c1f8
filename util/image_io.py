"""Reading frames and masks, writing palette PNGs atomically, all with clear errors."""
import os

import numpy as np
from PIL import Image

from util.errors import UserInputError
from util.output import atomic_file
from util.palette import DAVIS_PALETTE


def open_image(path):
    """Opens and fully decodes an image, or raises UserInputError naming the file."""
    if not os.path.isfile(path):
        raise UserInputError(f'{path}: file not found')
    try:
        img = Image.open(path)
        img.load()
    except Exception as e:  # PIL raises many types for truncated/corrupt files
        raise UserInputError(f'{path}: cannot read image ({e})') from None
    return img


def read_rgb(path):
    """HxWx3 uint8 RGB."""
    return np.array(open_image(path).convert("RGB"))


def read_label_mask(path):
    """HxW uint8 label map from a palette PNG (indices) or a binary/grey PNG (0/255 -> 0/1).

    Returns (labels, palette) where palette is the file's own (256x3) or None.
    """
    img = open_image(path)
    if img.mode == 'P':
        palette = np.asarray(img.getpalette() or [], dtype=np.uint8)
        palette = np.pad(palette, (0, 768 - len(palette)))[:768].reshape(256, 3)
        return np.array(img), palette
    if img.mode not in ('1', 'L', 'I', 'I;16', 'RGB', 'RGBA', 'LA'):
        raise UserInputError(f'{path}: unsupported mask mode {img.mode}')
    grey = np.asarray(img.convert('L'))
    if grey.max() > 1:
        return (grey > 127).astype(np.uint8), None  # binary 0/255 annotation
    return grey.astype(np.uint8), None


def write_palette_png(path, labels, palette=DAVIS_PALETTE):
    """Writes a uint8 label map as a palette PNG; the file appears whole or not at all."""
    img = Image.fromarray(labels.astype(np.uint8), mode='P')
    img.putpalette(np.asarray(palette, dtype=np.uint8).reshape(-1).tolist())
    with atomic_file(path) as tmp:
        img.save(tmp, format='PNG')
