"""Segments your own video from an annotated first frame (or several annotated frames).

    python segment_video.py --video clip.mp4 --mask first_frame.png --output out/

--video is a video file (mp4, avi, mov, ...) or a folder of frames. The mask is
a palette PNG (one index per object, 255 = unlabelled) or a binary PNG (0/255)
at the video's size; without one, --box x0,y0,x1,y1 (once per object) makes it
with OpenCV's GrabCut. With --mask_dir, <frame>.png files annotate several frames
(frame names are the image stems of a folder, 00000, 00001, ... for a video
file); objects may first appear on any of them, as in YouTube-VOS, and frames
before the first annotation get empty masks. Writes <output>/masks/<frame>.png
at the video's own size and <output>/overlay.mp4. Everything streams frame by
frame: memory does not grow with the video's length, and a killed run started
again goes on from its last saved state (--resume_every).
"""
import argparse
import dataclasses
import os

from datasets.annotations import load_mask, load_mask_dir
from datasets.video_reader import FOLDER_FPS, open_video
from pipeline.flags import add_engine_args, add_model_arg, add_run_args, add_shrink_size_arg, run_options
from pipeline.progress import video_bar
from pipeline.video import Overlay, VideoJob, VideoRun, state_file
from qdmn import PRESETS, load_network
from qdmn.network import ensure_model
from util.cli import HelpFormatter, add_device_args, float_arg
from util.device import peak_memory, precision, resolve_device
from util.errors import UserInputError, run_cli
from util.grabcut import boxes_to_labels, parse_box
from util.labels import object_ids, processing_size, reduced_short_side
from util.output import check_writable, partial_folder
from util.palette import DAVIS_PALETTE
from util.run_settings import mask_settings, resume_or_refuse, write_settings


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument('--video', required=True, help='video file or folder of frames')
    annotation = parser.add_mutually_exclusive_group(required=True)
    annotation.add_argument('--mask', help="the first frame's annotation (PNG)")
    annotation.add_argument('--mask_dir', help='folder of <frame>.png annotations; objects may enter on any of them')
    annotation.add_argument('--box', action='append', type=parse_box, metavar='x0,y0,x1,y1',
                            help='a box around an object on the first frame, in pixels (repeatable: object k is '
                                 'the k-th box); OpenCV\'s GrabCut cuts the first mask out of it')
    parser.add_argument('--output', required=True, help='folder for masks/<frame>.png and overlay.mp4')
    add_model_arg(parser)
    add_shrink_size_arg(parser)
    parser.add_argument('--resize_mask', action='store_true',
                        help='resize masks of another size to the video size (nearest neighbour) instead of failing')
    parser.add_argument('--overwrite', action='store_true',
                        help='segment again even when --output already holds a complete result')
    parser.add_argument('--side_by_side', action='store_true', help='overlay.mp4 shows the frame next to the overlay')
    parser.add_argument('--fps', type=float_arg('--fps', low=0.1), help='frame rate of overlay.mp4 (default: the video\'s own, '
                                                  f'{FOLDER_FPS} for a frame folder)')
    add_engine_args(parser)
    add_run_args(parser, '<output>/memory_log.csv and .png')
    add_device_args(parser)
    return parser.parse_args(argv)


def check_output_path(folder):
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserInputError(f'{folder}: output path is a file, not a folder')
    check_writable(folder)   # read-only, or below a file: said before the model loads


def previous_run(folder):
    """'complete' when masks/ and overlay.mp4 exist (both appear only at the end of a run),
    'stopped' when an interrupted run left its hidden partial masks folder, else None."""
    if os.path.isdir(os.path.join(folder, 'masks')) and os.path.isfile(os.path.join(folder, 'overlay.mp4')):
        return 'complete'
    return 'stopped' if os.path.isdir(partial_folder(os.path.join(folder, 'masks'))) else None


def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    # every input check before the model is built (or downloaded)
    video = open_video(args.video)
    if args.mask:
        labels, palette = load_mask(args.mask, video.size, args.resize_mask)
        labels_by_index = {0: labels}
    elif args.box:
        labels_by_index, palette = {0: boxes_to_labels(next(iter(video))[1], args.box)}, None
    else:
        labels_by_index, palette = load_mask_dir(args.mask_dir, video, args.resize_mask)
    check_output_path(args.output)
    preset = args.preset or ('youtube' if args.mask_dir else 'davis')
    size = reduced_short_side(video.size, args.size)
    options = run_options(args, preset, size)
    # what makes the masks, recorded with them: a re-run resumes or is complete only with the same
    settings = mask_settings(ensure_model(args.model), precision(device, args.amp),
                             {**dataclasses.asdict(PRESETS[preset]), **options.overrides}, size)
    masks_dir = os.path.join(args.output, 'masks')
    state = previous_run(args.output)
    if resume_or_refuse(args.output, settings, state == 'complete', args.overwrite):
        print(f'{args.output}: already complete (masks/ and overlay.mp4); nothing to do (--overwrite to redo)')
        return
    if state == 'stopped' and not (args.resume_every and os.path.isfile(state_file(masks_dir))):
        print(f'{args.output}: an earlier run stopped before the end; starting over from the first frame '
              '(it saved no state to resume from)')

    # the published YouTube-VOS engine gates with all of the video's objects; the masks tell them all
    objects = {i for labels in labels_by_index.values() for i in object_ids(labels)}
    job = VideoJob('video', lambda: iter(video), labels_by_index, masks_dir, frame_count=video.num_frames,
                   palette=DAVIS_PALETTE if palette is None else palette,
                   num_objects=len(objects) if PRESETS[preset].protocol == 'youtube' else None,
                   log_folder=args.output, log_name='memory_log',
                   log_title=os.path.basename(os.path.normpath(args.video)),
                   overlay=Overlay(os.path.join(args.output, 'overlay.mp4'), args.fps or video.fps or FOLDER_FPS,
                                   args.side_by_side))
    net = load_network(args.model, device, args.amp, fixed_shapes=len(labels_by_index) == 1)
    run = VideoRun(net, job, options)
    h, w = processing_size(*video.size, size)
    s = run.segmenter.settings
    print(f'{args.video}: {video.size[1]}x{video.size[0]}, processing at {w}x{h} on {device} ({net.precision}); '
          f'preset {preset} (mem_freq {s["mem_freq"]}, quality_thr {s["quality_thr"]:g}, '
          f'memory_thr {s["memory_thr"]}, top_k {s["top_k"]})')
    with video_bar(video.num_frames) as bar:
        for frame in run:
            bar.update(frame.index + 1)
    print(f'{run.segmented} frames in {run.seconds:.1f} s ({run.segmented / max(run.seconds, 1e-9):.2f} frames/s), '
          f'{peak_memory(device)}')
    print(run.segmenter.memory_summary())
    write_settings(args.output, settings)
    print(f'wrote {masks_dir}/<frame>.png and {job.overlay.path}')
    if len(run.outputs) > 2:
        print('wrote ' + ' and '.join(run.outputs[2:]))


if __name__ == '__main__':
    run_cli(main)
