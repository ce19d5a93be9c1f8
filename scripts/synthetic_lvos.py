"""Writes a synthetic LVOS split (and optionally results to score): for timing the scorer and
measuring eval_lvos.py's memory on long videos without the real dataset.

    python scripts/synthetic_lvos.py --output /tmp/lvos/valid --videos 14 --frames 285 --objects 2 \
        --size 720x1280 --results /tmp/lvos/res --no_frames
    python scripts/synthetic_lvos.py --output /tmp/lvos3000/valid --videos 1 --frames 3000 --size 64x112

Each object is an ellipse drifting across the frame, entering at a staggered frame and
annotated every 5th frame to the end; the results (with --results) are the annotations
shifted by a few pixels, with every 7th frame missed. Frames are noise JPEGs.
"""
import argparse
import json
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from util.lvos_meta import ANNOTATION_STEP, frame_name  # noqa: E402
from util.palette import DAVIS_PALETTE  # noqa: E402


def _save(path, labels):
    img = Image.fromarray(labels, mode='P')
    img.putpalette(DAVIS_PALETTE.reshape(-1).tolist())
    img.save(path)


def _ellipses(h, w, objects, t, frames, shift=0):
    """Label map of the objects present at frame index t (object k enters at k * frames // (2 * objects))."""
    yy, xx = np.ogrid[:h, :w]
    labels = np.zeros((h, w), np.uint8)
    for k in range(objects):
        if t < k * frames // (2 * objects):
            continue
        phase = 2 * np.pi * (t / max(frames, 1) + k / objects)
        cy, cx = h * (0.5 + 0.3 * np.sin(phase)), w * (0.5 + 0.3 * np.cos(phase)) + shift
        ry, rx = h / (6 + k), w / (8 + k)
        labels[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = k + 1
    return labels


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--output', required=True, help='split folder to create, e.g. /tmp/lvos/valid')
    parser.add_argument('--videos', type=int, default=2)
    parser.add_argument('--frames', type=int, default=100, help='frames per video (numbered 0, 5, 10, ...)')
    parser.add_argument('--objects', type=int, default=2, help='objects per video')
    parser.add_argument('--size', default='64x112', help='HxW')
    parser.add_argument('--results', default=None, help='also write results to score into this folder')
    parser.add_argument('--no_frames', action='store_true', help='no JPEGImages (the scorer does not read them)')
    args = parser.parse_args(argv)
    h, w = map(int, args.size.lower().split('x'))
    rng = np.random.default_rng(0)
    meta = {}
    for v in range(args.videos):
        video = f'synth{v:04d}'
        objects = {}
        for k in range(args.objects):
            start = k * args.frames // (2 * args.objects)
            objects[str(k + 1)] = {'frame_range': {'start': ANNOTATION_STEP * start,
                                                   'end': ANNOTATION_STEP * (args.frames - 1),
                                                   'frame_nums': args.frames - start}}
        meta[video] = {'objects': objects}
        folders = {'Annotations': os.path.join(args.output, 'Annotations', video)}
        if not args.no_frames:
            folders['JPEGImages'] = os.path.join(args.output, 'JPEGImages', video)
        if args.results:
            folders['results'] = os.path.join(args.results, video)
        for folder in folders.values():
            os.makedirs(folder, exist_ok=True)
        for t in range(args.frames):
            name = frame_name(ANNOTATION_STEP * t)
            _save(os.path.join(folders['Annotations'], name + '.png'), _ellipses(h, w, args.objects, t, args.frames))
            if 'JPEGImages' in folders:
                Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
                    os.path.join(folders['JPEGImages'], name + '.jpg'))
            if 'results' in folders:
                res = np.zeros((h, w), np.uint8) if t % 7 == 3 else \
                    _ellipses(h, w, args.objects, t, args.frames, shift=1 + t % 4)
                _save(os.path.join(folders['results'], name + '.png'), res)
    split = os.path.basename(os.path.normpath(args.output))
    with open(os.path.join(args.output, f'{split}_meta.json'), 'w') as f:
        json.dump({'videos': meta}, f)
    scored = sum(o['frame_range']['frame_nums'] - 2 for m in meta.values() for o in m['objects'].values())
    print(f'wrote {args.output}: {args.videos} videos, {args.videos * args.frames} frames, '
          f'{scored} scored object-frames')


if __name__ == '__main__':
    main()
