"""LVOS test-time reader (valid/test splits of LVOS v1/v2), one video at a time.

Layout of a split folder (e.g. data/LVOS/valid):
    JPEGImages/<video>/<frame>.jpg    the frames, 8-digit numbers (00000000, 00000005, ...)
    Annotations/<video>/<frame>.png   palette PNGs, one index per object
    <split>_meta.json                 every object's annotated frame range (util/lvos_meta.py)

As in YouTube-VOS, objects enter at different frames, each given by its mask on
its own first frame only: the label map fed at a frame holds the objects whose
range starts there and nothing else, even when that annotation shows other
objects (an object entering later, or one whose mask is not ours to use: the
valid split annotates every 5th frame of every object). Frames and labels are
read as YouTube-VOS's (datasets/yv_test_dataset.py): lazily, at their own size
(the Segmenter resizes them to the processing size).
"""
import os
import warnings

import numpy as np

from datasets.yv_test_dataset import YouTubeVOSVideo, _list, read_annotation
from util.errors import UserInputError
from util.image_io import open_image
from util.lvos_meta import frame_name, read_lvos_meta
from util.palette import DAVIS_PALETTE


class LVOSVideo(YouTubeVOSVideo):
    """One video: every frame of JPEGImages/<video> is processed and written.

    `labels` maps a frame's index in `frame_names` to the label map of the
    objects entering there; `entries` are the metadata's objects. Frame reading,
    the label queries and `written_frames` (every frame from the first entry on)
    are YouTube-VOS's.
    """

    def __init__(self, name, frame_dir, annotation_dir, entries):
        # not the parent's constructor: that one reads YouTube-VOS's layout (labels = every annotation)
        self.name = name
        self.frame_dir = frame_dir
        self.entries = entries
        self.frame_names = _list(frame_dir, '.jpg')
        if not self.frame_names:
            raise UserInputError(f'{frame_dir}: no .jpg frames')
        self.listed = set(self.frame_names)   # every frame is written
        with open_image(self.frame_path(0)) as first:
            self.size = (first.height, first.width)
        self._check_ranges()
        self.labels, self.palette = self._entry_labels(annotation_dir)

    def _check_ranges(self):
        present = self.listed
        for obj in self.entries:
            missing = [f for f in map(frame_name, obj.annotated) if f not in present]
            if missing:
                raise UserInputError(f'{os.path.join(self.frame_dir, missing[0])}.jpg: not found, but object '
                                     f'{obj.id} of video {self.name} is annotated from frame {obj.start} to '
                                     f'{obj.annotated[-1]} (range beyond the frames?)')

    def _entry_labels(self, folder):
        """{frame index: label map of the objects entering there}, the first annotation's palette."""
        index = {f: i for i, f in enumerate(self.frame_names)}
        labels, palette = {}, None
        for start in sorted({o.start for o in self.entries}):
            path = os.path.join(folder, frame_name(start) + '.png')
            ids, pal = read_annotation(path)
            if ids.shape != self.size:
                raise UserInputError(f'{path}: annotation is {ids.shape[1]}x{ids.shape[0]} but the frames '
                                     f'are {self.size[1]}x{self.size[0]}')
            entering = np.zeros_like(ids)
            for obj in (o for o in self.entries if o.start == start):
                mask = ids == obj.id
                if not mask.any():
                    raise UserInputError(f'{path}: object {obj.id} of video {self.name} enters on this frame '
                                         'but its mask here is empty')
                entering[mask] = obj.id
            labels[index[frame_name(start)]] = entering
            palette = pal if palette is None else palette
        return labels, DAVIS_PALETTE if palette is None else palette


class LVOSTestDataset:
    def __init__(self, split_dir):
        self.split, self.meta = read_lvos_meta(split_dir)
        self.image_dir = os.path.join(split_dir, 'JPEGImages')
        self.mask_dir = os.path.join(split_dir, 'Annotations')
        if not os.path.isdir(self.image_dir):
            raise UserInputError(f'{self.image_dir}: not found (an LVOS split folder holds JPEGImages/<video>/)')
        self.videos = list(self.meta)
        unlisted = sorted(set(os.listdir(self.image_dir)) - set(self.videos))
        if unlisted:
            warnings.warn(f'{self.image_dir}: {len(unlisted)} video folder(s) not in the metadata, not processed '
                          f'(e.g. {unlisted[0]})')

    def __len__(self):
        return len(self.videos)

    def video(self, name):
        frame_dir = os.path.join(self.image_dir, name)
        if not os.path.isdir(frame_dir):
            raise UserInputError(f'{frame_dir}: frames of video {name} (listed in the metadata) not found')
        return LVOSVideo(name, frame_dir, os.path.join(self.mask_dir, name), self.meta[name])
