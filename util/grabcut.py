"""Object masks from boxes, refined by OpenCV's GrabCut (Rother et al., SIGGRAPH 2004).

A box gives GrabCut its first guess: outside is background, inside is
probably foreground; a few iterations of colour models and graph cuts keep
the pixels that look like the object. The result never leaves the box.
"""
import warnings

import cv2
import numpy as np

from util.errors import UserInputError

ITERATIONS = 5


def parse_box(text):
    """'x0,y0,x1,y1' (pixels, any two opposite corners) -> (x0, y0, x1, y1) with x0 < x1, y0 < y1."""
    try:
        x0, y0, x1, y1 = (int(round(float(v))) for v in text.split(','))
    except ValueError:
        raise UserInputError(f'--box {text}: expected four numbers x0,y0,x1,y1') from None
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def clip_box(box, size):
    """The box within an image of size (h, w); refuses one that keeps less than 2x2 pixels."""
    h, w = size
    x0, y0, x1, y1 = box
    clipped = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if clipped[2] - clipped[0] < 2 or clipped[3] - clipped[1] < 2:
        raise UserInputError(f'box {",".join(map(str, box))} covers less than 2x2 pixels of the {w}x{h} frame')
    return clipped


def box_to_mask(rgb, box, iterations=ITERATIONS):
    """HxW bool mask of the object in `box` (x0, y0, x1, y1; x1, y1 exclusive) of the HxWx3 uint8 RGB image.

    Never empty: when GrabCut keeps nothing (a flat box, or a box with no
    background around it) the whole box is the mask, with a warning.
    """
    x0, y0, x1, y1 = clip_box(box, rgb.shape[:2])
    # GrabCut models the background from around the box: a margin of half the box is enough, and faster
    h, w = rgb.shape[:2]
    mx, my = (x1 - x0) // 2 + 1, (y1 - y0) // 2 + 1
    cx0, cy0, cx1, cy1 = max(0, x0 - mx), max(0, y0 - my), min(w, x1 + mx), min(h, y1 + my)
    crop = cv2.cvtColor(np.ascontiguousarray(rgb[cy0:cy1, cx0:cx1]), cv2.COLOR_RGB2BGR)
    labels = np.zeros(crop.shape[:2], np.uint8)
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    mask = np.zeros(rgb.shape[:2], bool)
    try:
        cv2.grabCut(crop, labels, (x0 - cx0, y0 - cy0, x1 - x0, y1 - y0), background, foreground, iterations,
                    cv2.GC_INIT_WITH_RECT)
        mask[cy0:cy1, cx0:cx1] = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    except cv2.error:  # e.g. no background sample when the box is the whole image
        pass
    inside = np.zeros(rgb.shape[:2], bool)
    inside[y0:y1, x0:x1] = True
    mask &= inside
    if not mask.any():
        warnings.warn(f'GrabCut found no object in box {x0},{y0},{x1},{y1}; the whole box is the mask')
        mask = inside
    return mask


def boxes_to_labels(rgb, boxes):
    """HxW uint8 label map: object k (1..len(boxes)) is the GrabCut mask of the k-th box.

    Where masks overlap the later box wins, as a later brush stroke would.
    """
    if len(boxes) > 254:
        raise UserInputError(f'{len(boxes)} boxes: at most 254 objects')
    labels = np.zeros(rgb.shape[:2], np.uint8)
    for k, box in enumerate(boxes, 1):
        labels[box_to_mask(rgb, box)] = k
    return labels
