"""Masks drawn on frames, and a streaming mp4 writer that only publishes complete files."""
import os

import util.ffmpeg_quiet  # noqa: F401  (before OpenCV first uses FFmpeg)
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
        """Publishes the video when `complete` and it reads back whole; else removes it.

        OpenCV's writer reports no failed write (a full disk leaves a truncated,
        unplayable file), so the finished file is read back: the container must
        announce every frame written and its last frame must decode.
        """
        if self.writer is not None:
            self.writer.release()
        problem = self.read_back_problem() if complete and self.frames else None
        if complete and self.frames and problem is None:
            try:
                os.replace(self.tmp, self.path)
                return
            except OSError as e:
                problem = e.strerror
        if os.path.exists(self.tmp):
            os.remove(self.tmp)
        if problem is not None:
            raise UserInputError(f'{self.path}: cannot write the video ({problem}); nothing of it was kept')

    def read_back_problem(self):
        """None when the written file holds every frame, else what is wrong with it."""
        if not os.path.isfile(self.tmp):
            return 'no file was written'
        capture = cv2.VideoCapture(self.tmp)
        try:
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
            capture.set(cv2.CAP_PROP_POS_FRAMES, self.frames - 1)
            last_readable = count == self.frames and capture.read()[0]
        finally:
            capture.release()
        if last_readable:
            return None
        if hasattr(os, 'statvfs'):   # Unix
            stats = os.statvfs(os.path.dirname(os.path.abspath(self.tmp)))
            if stats.f_bavail * stats.f_frsize < 2**20:
                return 'no space left on the device'
        return f'it reads back as {count} of {self.frames} frames'

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(complete=exc_type is None)
