"""Label maps: object ids, the void label, and the sizes frames and labels are processed at."""
import numpy as np
import torch
import torch.nn.functional as F

VOID = 255            # DAVIS and YouTube-VOS mark ambiguous pixels 255: unlabelled, not an object
MAX_OBJECT_ID = 254   # object ids are 1..254 (0 is background)


def object_ids(labels):
    """The object ids of a label map, ascending (the order the engines number their objects in)."""
    return [int(i) for i in np.unique(labels) if i != 0]


def clear_void(labels):
    """uint8 label map with the void label turned into background."""
    return np.where(labels == VOID, 0, labels).astype(np.uint8)


def processing_size(h, w, short=480):
    """(h, w) scaled so the short side is `short`, aspect kept, long side rounded; None keeps it."""
    if short is None:
        return h, w
    scale = short / min(h, w)
    return (short, int(w * scale + 0.5)) if h <= w else (int(h * scale + 0.5), short)


def resize_labels(labels, size):
    """Nearest-neighbour resize of an HxW label map to size=(h, w)."""
    if tuple(size) == labels.shape:
        return labels
    x = torch.from_numpy(np.ascontiguousarray(labels))[None, None].float()
    return F.interpolate(x, size=tuple(size), mode='nearest')[0, 0].to(torch.uint8).numpy()


def reduced_short_side(size, short):
    """The short side to process a (h, w) video at when it may only shrink to `short` (<= 0: never)."""
    return None if short <= 0 or min(size) <= short else short
