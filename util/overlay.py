"""Masks drawn on frames, and a streaming mp4 writer that only publishes complete files."""
import os

import cv2
import numpy as np

from util.errors import UserInputError
from util.palette import DAVIS_PALETTE


def blend(rgb, labels, alpha=0.5, palette=DAVIS_PALETTE):
    """HxWx3 uint8 frame with each object's pixels mixed with its palette colour (id k -> palette[k])."""
    out = rgb.copy()
    fg = labels > 0
    out[fg] = ((1 - alpha) * rgb[fg] + alpha * palette[labels[fg]]).round().astype(np.uint8)
    return out


def side_by_side(left, right):
    return np.concatenate([left, right], axis=1)


class Mp4Writer:
    """Writes RGB frames one by one to `path` (MPEG-4 Part 2, 'mp4v', unless another `fourcc` is given:
    'VP80' with a .webm path is VP8, which browsers play).

    'mp4v' is the codec OpenCV's pip wheels can always encode (they ship no
    H.264 encoder); VLC, ffmpeg and OpenCV play it, some browsers do not.
    Frames go to a temporary name that is renamed to `path` only when the
    writer closes without an error, so an interrupted run leaves no
    truncated video behind. Odd frame sizes are padded by one black
    row/column because the codec silently crops them to even sizes.
    """

    def __init__(self, path, fps, fourcc='mp4v'):
        self.path = path
        self.fps = fps
        self.fourcc = fourcc
        root, ext = os.path.splitext(path)
        self.tmp = f'{root}.partial{ext}'   # keeps the extension: OpenCV picks the container from it
        self.writer = None
        self.frames = 0

    def write(self, rgb):
        h, w = rgb.shape[:2]
        if self.writer is None:
            size = (w + w % 2, h + h % 2)
            self.writer = cv2.VideoWriter(self.tmp, cv2.VideoWriter_fourcc(*self.fourcc), self.fps, size)
            if not self.writer.isOpened():
                raise UserInputError(f'{self.tmp}: OpenCV cannot open an mp4 writer here')
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        self.writer.write(cv2.copyMakeBorder(bgr, 0, h % 2, 0, w % 2, cv2.BORDER_CONSTANT, value=0))
        self.frames += 1

    def close(self, complete=True):
        if self.writer is not None:
            self.writer.release()
        if complete and self.frames:
            os.replace(self.tmp, self.path)
        elif os.path.exists(self.tmp):
            os.remove(self.tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(complete=exc_type is None)
