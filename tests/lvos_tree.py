"""Small LVOS-layout split folders for the LVOS tests (reader, scorer, eval_lvos.py)."""
import json

import numpy as np
from PIL import Image

from util.palette import DAVIS_PALETTE


def square(shape, y0, y1, x0, x1, value=1):
    """Label map with rows y0..y1 and columns x0..x1 (inclusive) set to value."""
    m = np.zeros(shape, np.uint8)
    m[y0:y1 + 1, x0:x1 + 1] = value
    return m


def save_palette(path, labels):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.asarray(labels, np.uint8), mode='P')
    img.putpalette(DAVIS_PALETTE.reshape(-1).tolist())
    img.save(path)


def write_split(split_dir, videos, shape=(20, 20), frames=True):
    """Writes an LVOS split folder.

    videos: {video: (number of frames, {object id: (start, frame_nums)}, gt)} where gt(frame
    number) is the annotation's label map (None: no annotation file). Frames are numbered
    0, 5, 10, ...; with `frames`, JPEGImages gets a noise JPEG per frame.
    """
    rng = np.random.default_rng(0)
    meta = {}
    for video, (n_frames, objects, gt) in videos.items():
        meta[video] = {'objects': {str(i): {'frame_range': {'start': s, 'end': s + 5 * (n - 1), 'frame_nums': n}}
                                   for i, (s, n) in objects.items()}}
        for number in range(0, 5 * n_frames, 5):
            if frames:
                jpg = split_dir / 'JPEGImages' / video / f'{number:08d}.jpg'
                jpg.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8)).save(jpg)
            labels = gt(number)
            if labels is not None:
                save_palette(split_dir / 'Annotations' / video / f'{number:08d}.png', labels)
    (split_dir / f'{split_dir.name}_meta.json').write_text(json.dumps({'videos': meta}))


def write_results(results_dir, video, masks):
    """masks: {frame number: label map}."""
    for number, labels in masks.items():
        save_palette(results_dir / video / f'{number:08d}.png', labels)
