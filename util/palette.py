"""The DAVIS colour palette (identical to the PASCAL VOC colour map)."""
import numpy as np


def davis_palette():
    """Returns the 256x3 uint8 palette: index i gets the bits of i spread over R, G, B."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[i] = (r, g, b)
    return palette


DAVIS_PALETTE = davis_palette()
