"""Makes an N-times longer video from a DAVIS-layout sequence, for long-video tests.

    python scripts/expand_long_video.py --davis data/DAVIS/2016 --video blackswan --times 20 --output data/long

The sequence plays forward, backward, forward, ... (the turning frame is not
repeated: 0..T-1, T-2..0, 1..T-1, ...), frames and annotations alike, as
the long-video literature builds its 3x sets. The result is a DAVIS tree
(JPEGImages/480p, Annotations/480p, ImageSets/2016 and 2017/val.txt) that
eval_davis*.py and scripts/evaluate_davis.py read; `--annotate_every K`
keeps only every K-th annotation (evaluate with --sparse), `--height`
shrinks the frames for quick CPU runs.
"""
import argparse
import os
import sys

from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from util.errors import UserInputError, run_main  # noqa: E402
from util.image_io import open_image  # noqa: E402


def ping_pong(length, total):
    """Source indices of a forward-backward-forward... play of `length` frames, `total` long."""
    if length < 2:
        raise UserInputError(f'a video needs at least 2 frames to be played back and forth, not {length}')
    cycle = list(range(length)) + list(range(length - 2, 0, -1))
    return [cycle[i % len(cycle)] for i in range(total)]


def resized(img, height, resample):
    if height is None or img.height == height:
        return img
    return img.resize((round(img.width * height / img.height), height), resample)


def expand(davis, video, times, output, height=None, annotate_every=1):
    frame_dir = os.path.join(davis, 'JPEGImages', '480p', video)
    mask_dir = os.path.join(davis, 'Annotations', '480p', video)
    if not os.path.isdir(frame_dir):
        raise UserInputError(f'{frame_dir}: frames of video {video} not found')
    frames = sorted(f[:-4] for f in os.listdir(frame_dir) if f.endswith('.jpg'))
    missing = [f for f in frames if not os.path.isfile(os.path.join(mask_dir, f + '.png'))]
    if missing:
        raise UserInputError(f'{mask_dir}: no annotation for frame(s) {missing[:3]}; every frame needs one')
    name = f'{video}_x{times}'
    out_frames = os.path.join(output, 'JPEGImages', '480p', name)
    out_masks = os.path.join(output, 'Annotations', '480p', name)
    os.makedirs(out_frames, exist_ok=True)
    os.makedirs(out_masks, exist_ok=True)
    order = ping_pong(len(frames), times * len(frames))
    for t, src in enumerate(order):
        stem = frames[src]
        rgb = resized(open_image(os.path.join(frame_dir, stem + '.jpg')), height, Image.BICUBIC)
        rgb.convert('RGB').save(os.path.join(out_frames, f'{t:05d}.jpg'), quality=95)
        if t % annotate_every == 0 or t == len(order) - 1:
            mask = resized(open_image(os.path.join(mask_dir, stem + '.png')), height, Image.NEAREST)
            mask.save(os.path.join(out_masks, f'{t:05d}.png'))
    for year in ('2016', '2017'):
        imset = os.path.join(output, 'ImageSets', year, 'val.txt')
        os.makedirs(os.path.dirname(imset), exist_ok=True)
        listed = open(imset).read().split() if os.path.isfile(imset) else []
        if name not in listed:
            with open(imset, 'a') as f:
                f.write(name + '\n')
    return name, len(order)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--davis', required=True, help='DAVIS root of the source sequence')
    parser.add_argument('--video', required=True, help='sequence name')
    parser.add_argument('--times', type=int, default=3, help='length multiplier (default 3)')
    parser.add_argument('--output', required=True, help='DAVIS root to write into')
    parser.add_argument('--height', type=int, help='resize frames and annotations to this height')
    parser.add_argument('--annotate_every', type=int, default=1,
                        help='keep every K-th annotation (and the last); evaluate with --sparse (default 1: all)')
    args = parser.parse_args(argv)
    if args.times < 1 or args.annotate_every < 1:
        parser.error('--times and --annotate_every must be >= 1')
    name, length = expand(args.davis, args.video, args.times, args.output, args.height, args.annotate_every)
    print(f'wrote {name}: {length} frames into {args.output}')


if __name__ == '__main__':
    run_main(main)
