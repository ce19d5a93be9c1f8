"""Segments your own video from an annotated first frame (or several annotated frames).

    python segment_video.py --video clip.mp4 --mask first_frame.png --output out/

--video is a video file (mp4, avi, mov, ...) or a folder of frames. The mask is
a palette PNG (one index per object, 255 = unlabelled) or a binary PNG (0/255)
at the video's size. With --mask_dir, <frame>.png files annotate several frames
(frame names are the image stems of a folder, 00000, 00001, ... for a video
file); objects may first appear on any of them, as in YouTube-VOS, and frames
before the first annotation get empty masks. Writes <output>/masks/<frame>.png
at the video's own size and <output>/overlay.mp4. Everything streams frame by
frame: memory does not grow with the video's length.
"""
import argparse
import itertools
import os
import sys
import time
from contextlib import closing

import numpy as np
import progressbar

from datasets.video_reader import open_video
from datasets.yv_test_dataset import VOID, processing_size as yv_processing_size, resize_labels
from inference_core import InferenceCore, propagate
from inference_core_yv import InferenceCoreYV, propagate_yv
from inference_memory_bank import memory_summary
from model.inference_mode import inference_network
from util.background import BackgroundWriter, prefetch
from util.cli import (HelpFormatter, add_device_args, add_memory_args, add_memory_log_arg, autocast,
                      memory_options, peak_memory, resolve_device)
from qdmn.network import ensure_model
from util.download import DEFAULT_MODEL
from util.errors import UserInputError, run_main
from util.image_io import read_label_mask, write_palette_png
from util.memory_log import MemoryLog
from util.overlay import Mp4Writer, blend, side_by_side
from util.output import atomic_folder, partial_folder
from util.palette import DAVIS_PALETTE
from util.tensor_util import frame_to_tensor, labels_to_masks

FOLDER_FPS = 25  # a frame folder carries no frame rate


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument('--video', required=True, help='video file or folder of frames')
    annotation = parser.add_mutually_exclusive_group(required=True)
    annotation.add_argument('--mask', help="the first frame's annotation (PNG)")
    annotation.add_argument('--mask_dir', help='folder of <frame>.png annotations; objects may enter on any of them')
    parser.add_argument('--output', required=True, help='folder for masks/<frame>.png and overlay.mp4')
    parser.add_argument('--model', default=DEFAULT_MODEL,
                        help='checkpoint (s012 is downloaded to the default path when missing)')
    parser.add_argument('--size', type=int, default=480,
                        help='process at this short side when the video is larger (-1: full size); '
                             'masks are written at the video size')
    parser.add_argument('--resize_mask', action='store_true',
                        help='resize masks of another size to the video size (nearest neighbour) instead of failing')
    parser.add_argument('--overwrite', action='store_true',
                        help='segment again even when --output already holds a complete result')
    parser.add_argument('--side_by_side', action='store_true', help='overlay.mp4 shows the frame next to the overlay')
    parser.add_argument('--fps', type=float, help='frame rate of overlay.mp4 (default: the video\'s own, '
                                                  f'{FOLDER_FPS} for a frame folder)')
    add_memory_args(parser)
    parser.add_argument('--mem_freq', type=int, default=5, help='minimum frame gap between stored memory frames')
    add_memory_log_arg(parser, '<output>/memory_log.csv and .png')
    add_device_args(parser)
    return parser.parse_args(argv)


def processing_size(video_size, short_side):
    """(h, w) to run the network at: the short side reduced to `short_side`, never enlarged (-1: as is)."""
    keep = short_side <= 0 or min(video_size) <= short_side
    return yv_processing_size(*video_size, None if keep else short_side)


def load_mask(path, video_size, resize):
    """Label map at the video size and the file's palette; refuses empty and (unless `resize`) mis-sized masks."""
    labels, palette = read_label_mask(path)
    labels = np.where(labels == VOID, 0, labels).astype(np.uint8)  # 255 = unlabelled, as in DAVIS/YouTube-VOS
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


def check_output_path(folder):
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserInputError(f'{folder}: output path is a file, not a folder')


def previous_run(folder):
    """'complete' when masks/ and overlay.mp4 exist (both appear only at the end of a run),
    'stopped' when an interrupted run left its hidden partial masks folder, else None."""
    if os.path.isdir(os.path.join(folder, 'masks')) and os.path.isfile(os.path.join(folder, 'overlay.mp4')):
        return 'complete'
    return 'stopped' if os.path.isdir(partial_folder(os.path.join(folder, 'masks'))) else None


def decoded(video, device, size, start=0):
    """(name, rgb, tensor) per frame, decoded one ahead in a background thread while the network runs.

    The network-ready tensor is made from frame `start` on (None before: those frames are not segmented).
    """
    return prefetch((name, rgb, frame_to_tensor(rgb, device, size) if i >= start else None)
                    for i, (name, rgb) in enumerate(video))


def for_writing_and_engine(frames):
    """Two views of one (name, rgb, tensor) stream: (name, rgb) for writing, tensors for the engine.

    itertools.tee buffers only what one view is ahead of the other (the
    engine's one-frame look-ahead), so the stream stays frame by frame.
    """
    for_writing, for_engine = itertools.tee(frames)
    return ((name, rgb) for name, rgb, _ in for_writing), (tensor for _, _, tensor in for_engine)


def mask_objects(labels):
    """The ids in a label map, in the order the DAVIS engine numbers its objects."""
    return [int(o) for o in np.unique(labels) if o != 0]


def segment_from_first_mask(core, frames, labels, device, size, video_size):
    """DAVIS engine from frame 0; yields (name, rgb, label map with the mask's ids) per frame."""
    objects = mask_objects(labels)
    to_label = np.array([0] + objects, dtype=np.uint8)  # engine index k -> k-th object's id
    for_writing, tensors = for_writing_and_engine(frames)
    results = propagate(core, tensors, labels_to_masks(labels, objects, device, size), video_size)
    for (name, rgb), index_map in zip(for_writing, results):
        yield name, rgb, to_label[index_map]


def segment_from_masks(core, frames, labels_by_index, size, video_size):
    """YouTube-VOS engine; yields (name, rgb, label map with the masks' ids) per frame.

    Frames before the first annotation have nothing to segment: they get an
    empty mask and are not passed to the engine (so nothing is buffered).
    """
    first = min(labels_by_index)
    for name, rgb, _ in itertools.islice(frames, first):
        yield name, rgb, np.zeros(rgb.shape[:2], np.uint8)
    labels = {i - first: resize_labels(lab, size) for i, lab in labels_by_index.items()}
    for_writing, tensors = for_writing_and_engine(frames)
    for (name, rgb), (_, label_map) in zip(for_writing, propagate_yv(core, tensors, labels, video_size)):
        yield name, rgb, label_map


def progress_bar(total):
    """Frames done, frames/s and ETA (elapsed time when the container does not tell the length).

    fd is passed explicitly: progressbar2's default is the sys.stderr of import time.
    """
    rate = progressbar.FileTransferSpeed(format='%(scaled)5.1f %(prefix)sframes/s',
                                         inverse_format='%(scaled)5.1f s/frame')
    if total is None:
        widgets = [progressbar.Counter('%(value)d frames'), ' ', rate, ' ', progressbar.Timer()]
        return progressbar.ProgressBar(max_value=progressbar.UnknownLength, widgets=widgets, fd=sys.stderr)
    widgets = [progressbar.SimpleProgress(), ' ', progressbar.Bar(), ' ', rate, ' ', progressbar.ETA()]
    # a container's frame count can be off by a few: never fail on it
    return progressbar.ProgressBar(max_value=total, widgets=widgets, max_error=False, fd=sys.stderr)


def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    # every input check before the model is built (or downloaded)
    video = open_video(args.video)
    if args.mask:
        labels, palette = load_mask(args.mask, video.size, args.resize_mask)
    else:
        labels_by_index, palette = load_mask_dir(args.mask_dir, video, args.resize_mask)
    check_output_path(args.output)
    state = previous_run(args.output)
    if state == 'complete' and not args.overwrite:
        print(f'{args.output}: already complete (masks/ and overlay.mp4); nothing to do (--overwrite to redo)')
        return
    if state == 'stopped':
        # the memory of frame t depends on every earlier frame: a propagation cannot pick up mid-video
        print(f'{args.output}: an earlier run stopped before the end; starting over from the first frame')
    network, mode = inference_network(ensure_model(args.model), device, args.amp)
    masks_dir = os.path.join(args.output, 'masks')

    size = processing_size(video.size, args.size)
    if args.mask:
        memory_log = MemoryLog(mask_objects(labels)) if args.save_memory_log else None
        core = InferenceCore(network, mem_freq=args.mem_freq, memory_log=memory_log, **memory_options(args))
        first = 0
    else:
        # the published engine gates with all of the video's objects; the mask folder tells them all
        num_objects = len({int(i) for labels in labels_by_index.values() for i in np.unique(labels) if i})
        memory_log = MemoryLog(first_frame=min(labels_by_index)) if args.save_memory_log else None
        core = InferenceCoreYV(network, mem_freq=args.mem_freq, num_objects=num_objects, memory_log=memory_log,
                               **memory_options(args))
        first = min(labels_by_index)
    palette = DAVIS_PALETTE if palette is None else palette
    fps = args.fps or video.fps or FOLDER_FPS

    print(f'{args.video}: {video.size[1]}x{video.size[0]}, processing at {size[1]}x{size[0]} on {device} ({mode})')
    done, start, frame_names = 0, time.perf_counter(), []
    # masks/ and overlay.mp4 appear only when every frame is written: complete or absent;
    # frames are decoded ahead and outputs written behind, in threads, while the network runs
    with atomic_folder(masks_dir) as partial, autocast(device, args.amp), progress_bar(video.num_frames) as bar, \
            Mp4Writer(os.path.join(args.output, 'overlay.mp4'), fps) as mp4, BackgroundWriter() as writer, \
            closing(decoded(video, device, size, first)) as frames:
        def write_outputs(name, rgb, label_map):
            write_palette_png(os.path.join(partial, name + '.png'), label_map, palette)
            overlay = blend(rgb, label_map)
            mp4.write(side_by_side(rgb, overlay) if args.side_by_side else overlay)

        if args.mask:
            results = segment_from_first_mask(core, frames, labels, device, size, video.size)
        else:
            results = segment_from_masks(core, frames, labels_by_index, size, video.size)
        for name, rgb, label_map in results:
            writer.submit(write_outputs, name, rgb, label_map)
            if memory_log is not None:
                frame_names.append(name)
            done += 1
            bar.update(done)
    elapsed = time.perf_counter() - start
    print(f'{done} frames in {elapsed:.1f} s ({done / max(elapsed, 1e-9):.2f} frames/s), {peak_memory(device)}')
    print(memory_summary(core.decisions, core.bank))
    print(f'wrote {masks_dir}/<frame>.png and {mp4.path}')
    if memory_log is not None:
        print('wrote ' + ' and '.join(memory_log.write(args.output, 'memory_log', frame_names)))


if __name__ == '__main__':
    run_main(main)
