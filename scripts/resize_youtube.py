"""Makes the 480p copy of YouTube-VOS train that stage-2 training reads.

    python scripts/resize_youtube.py --input ../YouTube/train --output ../YouTube/train_480p

Reads <input>/JPEGImages/<video>/*.jpg and <input>/Annotations/<video>/*.png
and writes the same tree under <output>: frames resized bicubic so the short
side is 480 px (JPEG quality 90), annotations resized nearest-neighbour with
their palette kept (ids unchanged). Files whose short side is already 480 px
or less are copied as they are. Videos are done in parallel; each video's
folder appears only once complete, so an interrupted run resumes where it
stopped.
"""
import argparse
import multiprocessing
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import progressbar  # noqa: E402
from PIL import Image  # noqa: E402

from util.errors import UserInputError, run_main  # noqa: E402
from util.image_io import open_image  # noqa: E402
from util.labels import processing_size  # noqa: E402

SUBFOLDERS = ('JPEGImages', 'Annotations')
JPEG_QUALITY = 90


def resize_file(src, dst, short):
    img = open_image(src)
    if min(img.size) <= short:
        shutil.copyfile(src, dst)
        return
    h, w = processing_size(img.height, img.width, short)
    if dst.lower().endswith('.png'):
        img.resize((w, h), Image.NEAREST).save(dst)   # a P image keeps its palette
    else:
        img.convert('RGB').resize((w, h), Image.BICUBIC).save(dst, quality=JPEG_QUALITY)


def resize_video(task):
    """Resizes one video folder into a hidden partial folder, then renames it into place."""
    src_dir, dst_dir, short = task
    partial = os.path.join(os.path.dirname(dst_dir), f'.{os.path.basename(dst_dir)}.partial')
    shutil.rmtree(partial, ignore_errors=True)   # left over from an interrupted run
    os.makedirs(partial)
    for name in sorted(os.listdir(src_dir)):
        if name.lower().endswith(('.jpg', '.jpeg', '.png')):
            resize_file(os.path.join(src_dir, name), os.path.join(partial, name), short)
    os.replace(partial, dst_dir)


def pending_videos(src_root, dst_root, short):
    """(src, dst, short) for every video folder not yet complete in dst_root."""
    tasks, done = [], 0
    for sub in SUBFOLDERS:
        src = os.path.join(src_root, sub)
        if not os.path.isdir(src):
            raise UserInputError(f'{src}: not found (expected <input>/JPEGImages and <input>/Annotations)')
        os.makedirs(os.path.join(dst_root, sub), exist_ok=True)
        for video in sorted(os.listdir(src)):
            if not os.path.isdir(os.path.join(src, video)):
                continue
            dst = os.path.join(dst_root, sub, video)
            if os.path.isdir(dst):
                done += 1
            else:
                tasks.append((os.path.join(src, video), dst, short))
    return tasks, done


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', required=True, help='YouTube-VOS train folder (JPEGImages/, Annotations/)')
    parser.add_argument('--output', required=True, help='folder for the resized copy')
    parser.add_argument('--size', type=int, default=480, help='short side in pixels (default 480)')
    parser.add_argument('--workers', type=int, default=os.cpu_count() or 1, help='processes (default: all cores)')
    args = parser.parse_args(argv)
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        raise UserInputError(f'{args.output}: output must differ from the input')
    tasks, done = pending_videos(args.input, args.output, args.size)
    if done:
        print(f'{done} video folders already complete in {args.output}: skipped')
    with multiprocessing.Pool(max(1, args.workers)) as pool:
        for _ in progressbar.progressbar(pool.imap_unordered(resize_video, tasks), max_value=len(tasks)):
            pass
    print(f'resized {len(tasks)} video folders into {args.output}')


if __name__ == '__main__':
    run_main(main)
