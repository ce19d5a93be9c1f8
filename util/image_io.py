"""Reading frames and masks, writing palette PNGs atomically, all with clear errors."""
import os

import numpy as np
from PIL import Image

from util.errors import UserInputError
from util.labels import MAX_OBJECT_ID, VOID
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


INDEX_MODES = ('L', 'LA', 'I', 'I;16', 'I;16B', 'I;16L')


def read_label_mask(path):
    """HxW uint8 label map (0 background, 1..254 objects, 255 unlabelled) and the file's palette
    (256x3) or None, from a mask as people make them:

    * palette (P), greyscale (L, what cv2.imwrite gives) and 16-bit (I;16) index masks: ids by value;
      a mask holding exactly 0 and full white (255, or 65535 at 16 bits) is binary: one object, id 1
    * 1-bit masks: one object
    * colour (RGB, RGBA) masks: black (or transparent) is background, each other colour an object,
      numbered 1..k in colour order; the mapping is printed
    """
    img = open_image(path)
    if img.mode == 'P':
        palette = np.asarray(img.getpalette() or [], dtype=np.uint8)
        palette = np.pad(palette, (0, 768 - len(palette)))[:768].reshape(256, 3)
        return np.array(img), palette
    if img.mode == '1':
        return np.array(img).astype(np.uint8), None
    if img.mode in ('RGB', 'RGBA'):
        return colour_mask_ids(path, img), None
    if img.mode not in INDEX_MODES:
        raise UserInputError(f'{path}: unsupported mask mode {img.mode} (use a palette, greyscale, 16-bit '
                             'or RGB PNG)')
    values = np.array(img.getchannel('L') if img.mode == 'LA' else img)
    white = 255 if values.dtype == np.uint8 else 65535
    present = np.unique(values)
    if present.tolist() == [0, white]:
        return (values == white).astype(np.uint8), None
    if present[-1] > VOID:
        raise UserInputError(f'{path}: label id {int(present[-1])} above 255; a mask holds ids 1..{MAX_OBJECT_ID} '
                             f'({VOID} = unlabelled)')
    return values.astype(np.uint8), None


def check_has_object(path, labels):
    """Raises unless some pixel of the label map is an object (1..254), saying what its pixels are instead."""
    values = tuple(np.unique(labels).tolist())
    if any(0 < v < VOID for v in values):
        return
    what = {(0,): 'every pixel is 0, background', (VOID,): f'every pixel is {VOID}, unlabelled'}.get(
        values, f'every pixel is 0, background, or {VOID}, unlabelled')
    raise UserInputError(f'{path}: the mask contains no object ({what})')


def colour_mask_ids(path, img):
    """Ids 1..k for the distinct non-black colours of an RGB(A) mask, in colour order; prints the mapping."""
    rgb = np.array(img.convert('RGB'))
    if img.mode == 'RGBA':
        rgb[np.array(img.getchannel('A')) == 0] = 0   # transparent = background
    packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    colours, ids = np.unique(packed, return_inverse=True)
    if colours[0] != 0:          # no black pixel: ids still start at 1
        colours, ids = np.concatenate([[0], colours]), ids + 1
    objects = len(colours) - 1
    if objects > MAX_OBJECT_ID:
        raise UserInputError(f'{path}: colour mask with {objects} distinct colours, more than the {MAX_OBJECT_ID} '
                             'objects a mask can hold (blurred or JPEG-compressed edges? draw in flat colours)')
    print(f'{path}: colour mask, {objects} object(s): '
          + ', '.join(f'{i} = #{c:06x}' for i, c in enumerate(colours[1:].tolist(), start=1)))
    return ids.reshape(packed.shape).astype(np.uint8)


def read_binary_mask(path):
    """HxW uint8 0/1 foreground of a saliency-style mask (grey with soft edges: above half intensity;
    0/1 grey or palette: non-zero)."""
    img = open_image(path)
    if img.mode == 'P':
        return (np.array(img) > 0).astype(np.uint8)
    grey = np.asarray(img.convert('L'))
    return (grey > (127 if grey.max() > 1 else 0)).astype(np.uint8)


def write_palette_png(path, labels, palette=DAVIS_PALETTE):
    """Writes a uint8 label map as a palette PNG; the file appears whole or not at all."""
    img = Image.fromarray(labels.astype(np.uint8), mode='P')
    img.putpalette(np.asarray(palette, dtype=np.uint8).reshape(-1).tolist())
    with atomic_file(path) as tmp:
        img.save(tmp, format='PNG')
