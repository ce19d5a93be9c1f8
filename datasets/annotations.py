"""Your own annotations for segment_video.py: one first-frame mask, or a folder of per-frame masks."""
import os

from util.errors import UserInputError
from util.image_io import read_label_mask
from util.labels import clear_void, resize_labels


def load_mask(path, video_size, resize):
    """Label map at the video size and the file's palette; refuses empty and (unless `resize`) mis-sized masks."""
    labels, palette = read_label_mask(path)
    labels = clear_void(labels)   # 255 = unlabelled, as in DAVIS/YouTube-VOS
    if labels.shape != tuple(video_size):
        if not resize:
            raise UserInputError(f'{path}: mask is {labels.shape[1]}x{labels.shape[0]} but the video is '
                                 f'{video_size[1]}x{video_size[0]} (pass --resize_mask to resize it)')
        labels = resize_labels(labels, video_size)
    if not labels.any():
        raise UserInputError(f'{path}: the mask contains no object (every pixel is 0)')
    return labels, palette


def load_mask_dir(folder, video, resize):
    """{frame index: label map} of every <frame>.png in `folder`, and the first mask's palette."""
    if not os.path.isdir(folder):
        raise UserInputError(f'{folder}: mask folder not found')
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith('.png'))
    if not files:
        raise UserInputError(f'{folder}: no <frame>.png annotation in this folder')
    masks = {}
    for file in files:
        name = os.path.splitext(file)[0]
        index = video.frame_index(name)
        if index is None:
            raise UserInputError(f'{os.path.join(folder, file)}: no frame of {video.path} is named {name!r} '
                                 f'(masks must be named like the frames: image stems, or 00000.png... for a video)')
        masks[index] = load_mask(os.path.join(folder, file), video.size, resize)
    first = min(masks)
    return {i: labels for i, (labels, _) in masks.items()}, masks[first][1]
