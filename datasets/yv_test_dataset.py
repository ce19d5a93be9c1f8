"""YouTube-VOS test-time reader (valid/test splits), one video at a time.

Layout:
    <root>/<split>/JPEGImages/<video>/<frame>.jpg   the frames the server scores (every 5th)
    <root>/<split>/Annotations/<video>/<frame>.png  first-appearance masks, original label ids
    <root>/<split>/meta.json                        optional, only used to warn about objects
                                                    that no annotation carries
    <root>/all_frames/<split>_all_frames/JPEGImages/<video>/<frame>.jpg
                                                    every frame; processed when present

Frames and annotations are read lazily, at their own size (the Segmenter
resizes them to the processing size: util.labels.processing_size).

Label ids: 1..254 are objects (kept as they are, gaps allowed); 255 is void,
as in DAVIS, and treated as unlabelled with a warning; ids above 255 (16-bit
PNGs) are an error. Every other defect that would silently lose an object is
a UserInputError naming the file.
"""
import json
import os
import warnings

import numpy as np

from util.errors import UserInputError
from util.image_io import open_image, read_rgb
from util.labels import VOID, clear_void, object_ids
from util.palette import DAVIS_PALETTE


def read_annotation(path):
    """A YouTube-VOS annotation -> (HxW uint8 ids with void cleared, 256x3 palette or None)."""
    img = open_image(path)
    palette = None
    if img.mode == 'P':
        palette = np.asarray(img.getpalette() or [], dtype=np.uint8)
        palette = np.pad(palette, (0, 768 - len(palette)))[:768].reshape(256, 3)
    elif img.mode not in ('L', 'I', 'I;16', 'I;16B'):
        raise UserInputError(f'{path}: annotation must be a palette or greyscale label PNG, not {img.mode}')
    ids = np.asarray(img)
    if ids.max(initial=0) > VOID:
        raise UserInputError(f'{path}: label id {int(ids.max())} above 255 (ids must fit in 8 bits)')
    ids = ids.astype(np.uint8)
    if (ids == VOID).any():
        warnings.warn(f'{path}: label 255 treated as void (unlabelled)')
        ids = clear_void(ids)
    return ids, palette


def _list(folder, ext):
    return sorted(os.path.splitext(f)[0] for f in os.listdir(folder) if f.lower().endswith(ext))


class YouTubeVOSVideo:
    """One video: frame names, its annotations, lazy frames.

    `frame_names` are all processed frames (all-frames release when present),
    `listed` the split's own frames (the ones to write), `labels` maps a
    frame's index in `frame_names` to its label map (at the frames' size).
    """

    def __init__(self, name, frame_dir, listed_dir, annotation_dir):
        self.name = name
        self.frame_dir = frame_dir
        self.frame_names = _list(frame_dir, '.jpg')
        self.listed = set(_list(listed_dir, '.jpg'))
        if not self.listed:
            raise UserInputError(f'{listed_dir}: no .jpg frames')
        missing = sorted(self.listed - set(self.frame_names))
        if missing:
            raise UserInputError(f'{frame_dir}: frame {missing[0]}.jpg is listed in the split '
                                 f'but missing here ({len(missing)} missing)')
        with open_image(self.frame_path(0)) as first:
            self.size = (first.height, first.width)   # original (h, w); outputs are written at it
        self.labels, self.palette = self._read_annotations(annotation_dir)

    def frame_path(self, i):
        return os.path.join(self.frame_dir, self.frame_names[i] + '.jpg')

    def _read_annotations(self, folder):
        names = _list(folder, '.png') if os.path.isdir(folder) else []
        if not names:
            raise UserInputError(f'{folder}: no annotation for video {self.name}')
        index = {f: i for i, f in enumerate(self.frame_names)}
        labels, palette = {}, None
        for n in names:
            path = os.path.join(folder, n + '.png')
            if n not in index:
                raise UserInputError(f'{path}: annotated frame {n}.jpg not found in {self.frame_dir}')
            ids, pal = read_annotation(path)
            if ids.shape != self.size:
                raise UserInputError(f'{path}: annotation is {ids.shape[1]}x{ids.shape[0]} but the frames '
                                     f'are {self.size[1]}x{self.size[0]}')
            if not labels:
                if not ids.any():
                    raise UserInputError(f'{path}: first annotation of video {self.name} has no object')
                palette = pal
            if ids.any():   # an empty later annotation labels nothing
                labels[index[n]] = ids
        return labels, DAVIS_PALETTE if palette is None else palette

    @property
    def first_labelled(self):
        return min(self.labels)

    def objects(self):
        return sorted({i for lab in self.labels.values() for i in object_ids(lab)})

    @property
    def written_frames(self):
        """Names of the frames the server scores and we write: listed ones from the first annotation on."""
        return [n for n in self.frame_names[self.first_labelled:] if n in self.listed]

    def frames(self):
        """Yields (name, HxWx3 uint8 RGB) of every frame, decoded on demand."""
        for i, name in enumerate(self.frame_names):
            rgb = read_rgb(self.frame_path(i))
            if rgb.shape[:2] != self.size:
                raise UserInputError(f'{self.frame_path(i)}: frame is {rgb.shape[1]}x{rgb.shape[0]}, '
                                     f'the video is {self.size[1]}x{self.size[0]}')
            yield name, rgb


class YouTubeVOSTestDataset:
    def __init__(self, root, split='valid'):
        split_dir = os.path.join(root, split)
        self.image_dir = os.path.join(split_dir, 'JPEGImages')
        self.mask_dir = os.path.join(split_dir, 'Annotations')
        if not os.path.isdir(root):
            raise UserInputError(f'{root}: YouTube-VOS root not found')
        if not os.path.isdir(self.image_dir):
            raise UserInputError(f'{self.image_dir}: split "{split}" not found (expected <root>/{split}/JPEGImages)')
        all_frames = os.path.join(root, 'all_frames', f'{split}_all_frames', 'JPEGImages')
        self.all_frames_dir = all_frames if os.path.isdir(all_frames) else None
        self.videos = sorted(v for v in os.listdir(self.image_dir)
                             if os.path.isdir(os.path.join(self.image_dir, v)))
        if not self.videos:
            raise UserInputError(f'{self.image_dir}: no video folders')
        self.meta = self._read_meta(os.path.join(split_dir, 'meta.json'))

    @staticmethod
    def _read_meta(path):
        if not os.path.isfile(path):
            return None
        try:
            with open(path) as f:
                return json.load(f)['videos']
        except (ValueError, KeyError, TypeError) as e:
            raise UserInputError(f'{path}: not a YouTube-VOS meta.json ({e})') from None

    def __len__(self):
        return len(self.videos)

    def video(self, name):
        frame_dir = os.path.join(self.all_frames_dir or self.image_dir, name)
        if not os.path.isdir(frame_dir):
            raise UserInputError(f'{frame_dir}: video {name} missing from the all-frames release')
        video = YouTubeVOSVideo(name, frame_dir, os.path.join(self.image_dir, name),
                                os.path.join(self.mask_dir, name))
        self._check_meta(video)
        return video

    def _check_meta(self, video):
        if self.meta is None or video.name not in self.meta:
            return
        expected = {int(k) for k in self.meta[video.name].get('objects', {})}
        absent = sorted(expected - set(video.objects()))
        if absent:
            warnings.warn(f'{video.name}: meta.json lists objects {absent} that no annotation carries; '
                          'they will be missing from the results')
