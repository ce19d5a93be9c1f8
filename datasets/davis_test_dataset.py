"""Streaming reader for the DAVIS-2016/2017 evaluation layout.

    <root>/JPEGImages/480p/<video>/00000.jpg ...
    <root>/Annotations/480p/<video>/00000.png   (first frame is all that is needed)
    <root>/ImageSets/<year>/<split>.txt

Frames are read one at a time, when the engine asks for them.
"""
import os

import numpy as np

from datasets.video_reader import IMAGE_EXTENSIONS
from util.errors import UserInputError
from util.image_io import open_image, read_label_mask, read_rgb
from util.labels import clear_void, object_ids


class DAVISVideo:
    def __init__(self, name, frame_paths, first_mask_path, single_object):
        self.name = name
        self.frame_paths = frame_paths
        self.first_mask_path = first_mask_path
        self.single_object = single_object

    def __len__(self):
        return len(self.frame_paths)

    @property
    def frame_names(self):
        return [os.path.splitext(os.path.basename(p))[0] for p in self.frame_paths]

    def first_annotation(self):
        """Returns (labels HxW uint8, object ids, palette) of the first frame, validated."""
        labels, palette = read_label_mask(self.first_mask_path)
        labels = clear_void(labels)
        if self.single_object:
            labels = (labels > 0).astype(np.uint8)
        objects = object_ids(labels)
        if not objects:
            raise UserInputError(f'{self.first_mask_path}: the first-frame annotation contains no object')
        return labels, objects, palette

    def check(self):
        """Validates what a run needs, before any compute: a readable first annotation with an
        object, at the size of the first frame. Returns (labels, objects) of that annotation."""
        labels, objects, _ = self.first_annotation()
        width, height = open_image(self.frame_paths[0]).size
        if labels.shape != (height, width):
            raise UserInputError(f'{self.first_mask_path}: annotation is {labels.shape[1]}x{labels.shape[0]} '
                                 f'but the frames are {width}x{height}')
        return labels, objects

    def frames(self, size=None):
        """Yields (name, HxWx3 uint8 RGB); every frame must have the first frame's size (or `size`)."""
        for name, path in zip(self.frame_names, self.frame_paths):
            rgb = read_rgb(path)
            if size is None:
                size = rgb.shape[:2]
            elif rgb.shape[:2] != tuple(size):
                raise UserInputError(f'{path}: frame is {rgb.shape[1]}x{rgb.shape[0]}, '
                                     f'expected {size[1]}x{size[0]} like the rest of the video')
            yield name, rgb


class DAVISTestDataset:
    def __init__(self, root, imset='2017/val.txt', resolution='480p', single_object=False):
        if not os.path.isdir(root):
            raise UserInputError(f'{root}: DAVIS root not found')
        self.image_dir = os.path.join(root, 'JPEGImages', resolution)
        self.mask_dir = os.path.join(root, 'Annotations', resolution)
        for folder in (self.image_dir, self.mask_dir):
            if not os.path.isdir(folder):
                raise UserInputError(f'{folder}: not found (expected the DAVIS layout under {root})')
        imset_path = imset if os.path.isabs(imset) else os.path.join(root, 'ImageSets', imset)
        if not os.path.isfile(imset_path):
            raise UserInputError(f'{imset_path}: image set not found')
        with open(imset_path) as f:
            self.videos = [line.strip() for line in f if line.strip()]
        if not self.videos:
            raise UserInputError(f'{imset_path}: image set lists no video')
        self.imset_path = imset_path
        self.single_object = single_object

    def __len__(self):
        return len(self.videos)

    def video(self, name):
        folder = os.path.join(self.image_dir, name)
        if not os.path.isdir(folder):
            raise UserInputError(f'{folder}: frames of video {name} (listed in {self.imset_path}) not found')
        frames = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not frames:
            raise UserInputError(f'{folder}: video {name} has no frames')
        first = os.path.splitext(frames[0])[0] + '.png'
        return DAVISVideo(name, [os.path.join(folder, f) for f in frames],
                          os.path.join(self.mask_dir, name, first), self.single_object)
