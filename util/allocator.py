"""Keeping freed activation memory inside the process (glibc's malloc), for CPU inference.

Every frame allocates and frees the same activations, from a few MB to tens of MB. By
default glibc serves blocks above a (dynamic, at most 32 MB) threshold with
mmap and returns freed memory at the top of the heap to the system, so those
pages are faulted in again on every frame: 15 % of a 480p frame on a 2-core
CPU. Raising both thresholds keeps them, for about 100 MB more peak RSS at
480p (free blocks kept between frames).
"""
import ctypes
import sys

M_TRIM_THRESHOLD = -1   # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20   # blocks up to 32 MB (glibc's maximum) come from the heap and are reused
TRIM_THRESHOLD = 128 << 20  # up to 128 MB free at the top of the heap stay in the process


def keep_freed_activations():
    """Sets glibc's malloc thresholds for this process; returns False where that is not possible
    (not Linux, or a C library without mallopt), which only costs speed."""
    if not sys.platform.startswith('linux'):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already uses
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
