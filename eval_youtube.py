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
import time
import zipfile

import progressbar

from datasets.yv_test_dataset import YouTubeVOSTestDataset
from inference_core_yv import InferenceCoreYV, propagate_yv
from model.checkpoint import build_network
from util.cli import (HelpFormatter, add_device_args, add_memory_args, add_memory_log_arg, add_skip_bad_videos_arg,
                      autocast, memory_options, peak_memory, resolve_device)
from util.errors import check_each, report_skipped, run_main
from util.download import DEFAULT_MODEL, ensure_model
from util.image_io import write_palette_png
from util.memory_log import MemoryLog
from util.output import atomic_folder, check_writable, is_complete


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
    with atomic_folder(out_folder) as partial, autocast(device, amp):
        for t, label_map in propagate_yv(core, video.frames(device), video.labels, video.size):
            name = video.frame_names[t]
            if name in video.listed:
                write_palette_png(os.path.join(partial, name + '.png'), label_map, video.palette)
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
    device = resolve_device(args.device)
    output = os.path.normpath(args.output)
    annotations = os.path.join(output, 'Annotations')
    dataset = YouTubeVOSTestDataset(args.yv, args.split, size=None if args.size <= 0 else args.size)
    # every video is opened (annotations read and checked) before any compute: bad input fails fast
    def check(name):
        video = dataset.video(name)
        return written_frames(video), len(video.frame_names) - video.first_labelled

    checked, skipped = check_each(progressbar.progressbar(dataset.videos, prefix='checking videos '), check,
                                  args.skip_bad_videos)
    expected = {name: frames for name, (frames, _) in checked.items()}
    lengths = {name: length for name, (_, length) in checked.items()}
    todo = [v for v in checked if not is_complete(os.path.join(annotations, v), expected[v])]
    if len(todo) < len(checked):
        print(f'{len(checked) - len(todo)} of {len(checked)} videos already complete in {annotations}: skipped')
    check_writable(annotations)
    engine_args = dict(mem_freq=args.mem_freq, quality_thr=args.quality_thr, memory_thr=args.memory_thr,
                       **memory_options(args))
    done, elapsed = 0, 0.0
    log_folder = os.path.join(output, 'memory_log') if args.save_memory_log else None
    if todo:
        network = build_network(ensure_model(args.model), device)
        # `with`: the bar ends its line also on an error or Ctrl-C, so the message gets a line of its own
        with progressbar.ProgressBar(max_value=sum(lengths[v] for v in todo), prefix='{variables.video} ',
                                     variables={'video': '-'}, redirect_stdout=True) as bar:
            for name in todo:
                video = dataset.video(name)
                start = time.perf_counter()
                for _ in segment_video(network, video, os.path.join(annotations, name), device, args.amp,
                                       engine_args, log_folder):
                    done += 1
                    bar.update(done, video=name)
                elapsed += time.perf_counter() - start
        print(f'{len(todo)} videos, {done} frames in {elapsed:.1f} s: {done / max(elapsed, 1e-9):.2f} FPS; '
              f'{peak_memory(device)}')
    print(f'wrote {write_zip(output, expected)}')
    report_skipped(skipped)


if __name__ == '__main__':
    run_main(main)
