"""Segments YouTube-VOS valid or test with QDMN; writes the evaluation server's zip.

    python eval_youtube.py --yv data/YouTube --split valid --output output/yv-valid

Every frame of <yv>/all_frames/<split>_all_frames/JPEGImages is processed
when that release is present (else <yv>/<split>/JPEGImages), at 480 px on the
short side. Written: <output>/Annotations/<video>/<frame>.png with the
original label ids and the dataset's palette, at the original size, for the
frames <yv>/<split>/JPEGImages lists, from each video's first annotation on;
then <output>.zip with Annotations/ at its root, ready for upload. Complete
videos are skipped, so an interrupted run resumes where it stopped.
"""
import argparse
import os
import zipfile
from contextlib import closing

import progressbar

from datasets.yv_test_dataset import YouTubeVOSTestDataset
from inference_core_yv import InferenceCoreYV, propagate_yv
from model.inference_mode import inference_network
from util.background import BackgroundWriter, prefetch
from util.cli import (HelpFormatter, add_device_args, add_memory_args, add_memory_log_arg, add_skip_bad_videos_arg,
                      autocast, memory_options)
from util.distributed import add_launcher_args, eval_processes
from util.errors import check_each, report_skipped, run_main
from qdmn.network import ensure_model
from util.download import DEFAULT_MODEL
from util.image_io import write_palette_png
from util.memory_log import MemoryLog
from util.output import atomic_folder, check_writable, is_complete
from util.video_runs import segment_share


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument('--yv', default='data/YouTube', help='YouTube-VOS root (holding valid/, test/, all_frames/)')
    parser.add_argument('--split', choices=['valid', 'test'], default='valid')
    parser.add_argument('--output', required=True, help='folder for Annotations/<video>/<frame>.png; '
                                                        'the zip is written next to it as <output>.zip')
    parser.add_argument('--model', default=DEFAULT_MODEL,
                        help='checkpoint (s012 is downloaded to the default path when missing)')
    parser.add_argument('--size', type=int, default=480,
                        help='short side frames are processed at (-1: original size)')
    add_memory_args(parser)
    parser.add_argument('--mem_freq', type=int, default=5, help='minimum frame gap between stored memory frames')
    # The published YouTube-VOS settings: its videos are shorter, sparser (every 5th frame scored) and
    # show more objects, so a smaller memory and a laxer gate than DAVIS's 20 / 0.8 work best there.
    parser.add_argument('--memory_thr', type=int, default=10,
                        help='capacity of the propagated memory of each pass (published for YouTube-VOS; DAVIS: 20)')
    parser.add_argument('--quality_thr', type=float, default=0.75,
                        help='relative quality a frame needs to be stored (published for YouTube-VOS; DAVIS: 0.8)')
    add_memory_log_arg(parser, '<output>/memory_log/<video>.csv and .png (not in the zip)')
    add_skip_bad_videos_arg(parser)
    add_device_args(parser)
    add_launcher_args(parser)
    return parser.parse_args(argv)


def written_frames(video):
    """Names of the frames the server scores and we write: listed ones from the first annotation on."""
    return [n for n in video.frame_names[video.first_labelled:] if n in video.listed]


def segment_video(network, video, out_folder, device, amp, engine_args, log_folder=None):
    """Segments one video; yields each processed frame's name. out_folder only appears once complete.

    With log_folder, the video's memory log goes there once the video is complete.
    """
    memory_log = MemoryLog(first_frame=video.first_labelled) if log_folder else None
    core = InferenceCoreYV(network, num_objects=len(video.objects()), memory_log=memory_log, **engine_args)
    # frames are decoded one ahead and PNGs written behind, in threads, while the network runs
    with atomic_folder(out_folder) as partial, autocast(device, amp), BackgroundWriter() as writer, \
            closing(prefetch(video.frames(device))) as frames:
        for t, label_map in propagate_yv(core, frames, video.labels, video.size):
            name = video.frame_names[t]
            if name in video.listed:
                writer.submit(write_palette_png, os.path.join(partial, name + '.png'), label_map, video.palette)
            yield name
    if memory_log is not None:
        memory_log.write(log_folder, video.name, video.frame_names)


def write_zip(output, expected):
    """<output>.zip with Annotations/<video>/<frame>.png; written under a temp name, then renamed."""
    path = output + '.zip'
    tmp = path + '.partial'
    with zipfile.ZipFile(tmp, 'w', zipfile.ZIP_STORED) as z:   # PNGs are compressed already
        for video, frames in expected.items():
            for f in frames:
                arcname = f'Annotations/{video}/{f}.png'
                z.write(os.path.join(output, arcname), arcname)
    os.replace(tmp, path)
    return path


def main(argv=None):
    args = parse_args(argv)
    output = os.path.normpath(args.output)
    annotations = os.path.join(output, 'Annotations')
    dataset = YouTubeVOSTestDataset(args.yv, args.split, size=None if args.size <= 0 else args.size)

    def prepare():   # rank 0 only; the other processes wait for its result
        # every video is opened (annotations read and checked) before any compute: bad input fails fast
        def check(name):
            video = dataset.video(name)
            return written_frames(video), len(video.frame_names) - video.first_labelled

        checked, skipped = check_each(progressbar.progressbar(dataset.videos, prefix='checking videos '), check,
                                      args.skip_bad_videos)
        expected = {name: frames for name, (frames, _) in checked.items()}
        todo = {name: length for name, (frames, length) in checked.items()
                if not is_complete(os.path.join(annotations, name), frames)}
        if len(todo) < len(checked):
            print(f'{len(checked) - len(todo)} of {len(checked)} videos already complete in {annotations}: skipped')
        check_writable(annotations)
        return expected, todo, skipped, ensure_model(args.model) if todo else None

    engine_args = dict(mem_freq=args.mem_freq, quality_thr=args.quality_thr, memory_thr=args.memory_thr,
                       **memory_options(args))
    log_folder = os.path.join(output, 'memory_log') if args.save_memory_log else None
    with eval_processes(args.device, args.local_rank) as group:
        def segment(network, name):
            return segment_video(network, dataset.video(name), os.path.join(annotations, name), group.device,
                                 args.amp, engine_args, log_folder)

        expected, todo, skipped, model = group.on_main(prepare)
        if todo:
            segment_share(group, todo, lambda: inference_network(model, group.device, args.amp), segment)
    if not group.is_main:
        return   # rank 0 writes the zip and reports for every process
    print(f'wrote {write_zip(output, expected)}')
    report_skipped(skipped)


if __name__ == '__main__':
    run_main(main)
