"""Streaming frame sources for segment_video.py: a video file or a folder of frames.

Iterating decodes one frame at a time, so memory does not depend on the
video's length. Opening only probes the source (readable, at least two
frames, frame size), so bad input fails before a model is loaded.
"""
import contextlib
import os
import re
import sys

import util.ffmpeg_quiet  # noqa: F401  (before OpenCV first uses FFmpeg)
import cv2
from PIL import Image

from util.errors import UserInputError
from util.image_io import read_rgb

FOLDER_FPS = 25  # a frame folder carries no frame rate: the rate its overlay videos play at
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')


def open_video(path):
    """A VideoFile or FrameFolder for `path`; both yield (name, HxWx3 uint8 RGB) frames."""
    if os.path.isdir(path):
        return FrameFolder(path)
    if os.path.isfile(path):
        return VideoFile(path)
    raise UserInputError(f'{path}: no such video file or frame folder')


def natural_key(name):
    """Sorts 'f2' before 'f10', as frame numbers without zero padding expect."""
    return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', name)]


@contextlib.contextmanager
def native_stderr_silenced():
    """Sends what C libraries write to file descriptor 2 to /dev/null for the block, so an
    unreadable video gives our one `error:` line only. Python's own sys.stderr is untouched."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, 'w') as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class VideoFile:
    """Any container/codec OpenCV's FFmpeg backend decodes (mp4, avi, mov, ...).

    Frames are named 00000, 00001, ... in decoding order. The frame count is
    the container's: a decoder that stops before it has met a damaged or
    truncated file, which is an error (never a silently shorter result).
    """

    def __init__(self, path):
        self.path = path
        with native_stderr_silenced():  # FFmpeg prints its own lines ("moov atom not found") to fd 2
            capture = cv2.VideoCapture(path)
        try:
            if not capture.isOpened():
                raise UserInputError(f'{path}: cannot read this video (not a format OpenCV can decode)')
            ok, first = capture.read()
            if not ok:
                raise UserInputError(f'{path}: cannot read this video (no decodable frame)')
            if not capture.read()[0]:
                raise UserInputError(f'{path}: the video has fewer than 2 frames; nothing to propagate')
            self.fps = capture.get(cv2.CAP_PROP_FPS) or None
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            capture.release()
        self.size = first.shape[:2]
        self.num_frames = count if count >= 2 else None

    @staticmethod
    def frame_name(index):
        return f'{index:05d}'

    def frame_index(self, name):
        """Index of the frame called `name`, or None when no frame is named so."""
        if not name.isdigit() or self.frame_name(int(name)) != name:
            return None
        index = int(name)
        return index if self.num_frames is None or index < self.num_frames else None

    def __iter__(self):
        capture = cv2.VideoCapture(self.path)
        index = 0
        try:
            while True:
                try:
                    ok, bgr = capture.read()
                except cv2.error as e:
                    raise UserInputError(f'{self.path}: cannot decode frame {index} ({str(e).strip().splitlines()[-1]})'
                                         ) from None
                if not ok:
                    break
                yield self.frame_name(index), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                index += 1
        finally:
            capture.release()
        if self.num_frames is not None and index < self.num_frames:
            raise UserInputError(f'{self.path}: cannot decode frame {index} of the {self.num_frames} the video '
                                 'announces (damaged or truncated file)')


class FrameFolder:
    """The images of one folder in natural order, named by their file stems.

    A folder carries no frame rate, so fps is None.
    """

    def __init__(self, path):
        self.path = path
        files = sorted((f for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS)), key=natural_key)
        if len(files) < 2:
            raise UserInputError(f'{path}: a frame folder needs at least 2 images ({", ".join(IMAGE_EXTENSIONS)}), '
                                 f'found {len(files)}')
        self.files = [os.path.join(path, f) for f in files]
        self.names = [os.path.splitext(f)[0] for f in files]
        by_name = {}
        for file, name in zip(files, self.names):
            by_name.setdefault(name, []).append(file)
        shared = [sorted(group) for group in by_name.values() if len(group) > 1]
        if shared:
            examples = '; '.join(' and '.join(group) for group in shared[:3]) + ('; ...' if len(shared) > 3 else '')
            raise UserInputError(f'{path}: {len(shared)} frame name(s) shared by several images ({examples}); '
                                 f'their masks would overwrite each other')
        self._index = {name: i for i, name in enumerate(self.names)}
        self.fps = None
        self.num_frames = len(files)
        try:
            with Image.open(self.files[0]) as img:
                width, height = img.size
        except Exception as e:  # PIL raises many types for unreadable files
            raise UserInputError(f'{self.files[0]}: cannot read image ({e})') from None
        self.size = (height, width)

    def frame_index(self, name):
        return self._index.get(name)

    def __iter__(self):
        for file, name in zip(self.files, self.names):
            rgb = read_rgb(file)
            if rgb.shape[:2] != self.size:
                raise UserInputError(f'{file}: frame is {rgb.shape[1]}x{rgb.shape[0]} but the first frame is '
                                     f'{self.size[1]}x{self.size[0]}; all frames must have one size')
            yield name, rgb
