"""Segments an LVOS split (v1 or v2, valid or test) with QDMN; scores it, or zips it for the server.

    python eval_lvos.py --lvos data/LVOS/valid --output output/lvos-valid --evaluate
    python eval_lvos.py --lvos data/LVOS/test --output output/lvos-test

Every frame of <lvos>/JPEGImages/<video>/ is processed at 480 px on the short side
with the YouTube-VOS engine and memory preset: objects enter on their own first
frame (from <split>_meta.json), each given only by its mask there. Written:
<output>/Annotations/<video>/<frame>.png, palette PNGs named as the input frames, at
the original size, from the first object's entry on. --evaluate scores them (J, F,
V, seen / unseen; scripts/evaluate_lvos.py); the test split has no public ground
truth and gets <output>.zip with Annotations/ at its root for the server. Complete
videos are skipped, so an interrupted run resumes where it stopped. See docs/lvos.md.
"""
import argparse
import os
from contextlib import closing

import progressbar

from datasets.lvos_test_dataset import LVOSTestDataset
from inference_core_yv import InferenceCoreYV, propagate_yv
from model.inference_mode import inference_network
from util.background import BackgroundWriter, prefetch
from util.cli import (HelpFormatter, add_device_args, add_memory_args, add_memory_log_arg, add_skip_bad_videos_arg,
                      memory_options)
from util.device import autocast
from util.distributed import add_launcher_args, eval_processes
from util.download import DEFAULT_MODEL, ensure_model
from util.errors import check_each, report_skipped, run_main
from util.image_io import write_palette_png
from util.memory_log import MemoryLog
from util.output import atomic_folder, check_writable, is_complete
from util.submission import write_submission_zip
from util.video_runs import segment_share


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument('--lvos', default='data/LVOS/valid',
                        help='LVOS split folder (JPEGImages/, Annotations/, <split>_meta.json)')
    parser.add_argument('--output', required=True, help='folder for Annotations/<video>/<frame>.png; on the test '
                                                        'split the zip is written next to it as <output>.zip')
    parser.add_argument('--model', default=DEFAULT_MODEL,
                        help='checkpoint (s012 is downloaded to the default path when missing)')
    parser.add_argument('--size', type=int, default=480,
                        help='short side frames are processed at (-1: original size)')
    add_memory_args(parser)
    parser.add_argument('--mem_freq', type=int, default=5, help='minimum frame gap between stored memory frames')
    # LVOS annotates every 5th frame as YouTube-VOS does, and objects enter late as there: its published preset
    parser.add_argument('--memory_thr', type=int, default=10,
                        help='capacity of the propagated memory of each pass (YouTube-VOS preset; DAVIS: 20)')
    parser.add_argument('--quality_thr', type=float, default=0.75,
                        help='relative quality a frame needs to be stored (YouTube-VOS preset; DAVIS: 0.8)')
    parser.add_argument('--evaluate', action='store_true',
                        help='score the results (J, F, V, seen / unseen) when the split has its ground truth')
    parser.add_argument('--unseen_list', default=None,
                        help='with --evaluate: video names counted as unseen (default: the official list)')
    add_memory_log_arg(parser, '<output>/memory_log/<video>.csv and .png (not in the zip)')
    add_skip_bad_videos_arg(parser)
    add_device_args(parser)
    add_launcher_args(parser)
    args = parser.parse_args(argv)
    if args.unseen_list and not args.evaluate:
        parser.error('--unseen_list applies to --evaluate')
    return args


def written_frames(video):
    """Every frame from the first object's entry on (no object exists before it)."""
    return video.frame_names[video.first_labelled:]


def segment_video(network, video, out_folder, device, amp, engine_args, log_folder=None):
    """Segments one video; yields each processed frame's name. out_folder only appears once complete."""
    memory_log = MemoryLog(first_frame=video.first_labelled) if log_folder else None
    core = InferenceCoreYV(network, num_objects=len(video.objects()), memory_log=memory_log, **engine_args)
    with atomic_folder(out_folder) as partial, autocast(device, amp), BackgroundWriter() as writer, \
            closing(prefetch(video.frames(device))) as frames:
        for t, label_map in propagate_yv(core, frames, video.labels, video.size):
            name = video.frame_names[t]
            writer.submit(write_palette_png, os.path.join(partial, name + '.png'), label_map, video.palette)
            yield name
    if memory_log is not None:
        memory_log.write(log_folder, video.name, video.frame_names)


def main(argv=None):
    args = parse_args(argv)
    output = os.path.normpath(args.output)
    annotations = os.path.join(output, 'Annotations')
    dataset = LVOSTestDataset(args.lvos, size=None if args.size <= 0 else args.size)

    def prepare():   # rank 0 only; the other processes wait for its result
        # every video is opened (metadata, entry masks and frame ranges checked) before any compute
        checked, skipped = check_each(progressbar.progressbar(dataset.videos, prefix='checking videos '),
                                      lambda name: written_frames(dataset.video(name)), args.skip_bad_videos)
        todo = {name: len(frames) for name, frames in checked.items()
                if not is_complete(os.path.join(annotations, name), frames)}
        if len(todo) < len(checked):
            print(f'{len(checked) - len(todo)} of {len(checked)} videos already complete in {annotations}: skipped')
        check_writable(annotations)
        return checked, todo, skipped, ensure_model(args.model) if todo else None

    engine_args = dict(mem_freq=args.mem_freq, quality_thr=args.quality_thr, memory_thr=args.memory_thr,
                       **memory_options(args))
    log_folder = os.path.join(output, 'memory_log') if args.save_memory_log else None
    with eval_processes(args.device, args.local_rank) as group:
        def segment(network, name):
            return segment_video(network, dataset.video(name), os.path.join(annotations, name), group.device,
                                 args.amp, engine_args, log_folder)

        expected, todo, skipped, model = group.on_main(prepare)
        if todo:
            # the YouTube-VOS engine's shapes change as objects enter: no per-shape kernel tuning
            segment_share(group, todo, lambda: inference_network(model, group.device, args.amp, fixed_shapes=False),
                          segment)
    if not group.is_main:
        return   # rank 0 zips, scores and reports for every process
    if dataset.split == 'test':
        print(f'wrote {write_submission_zip(output, expected, root="Annotations")}')
        if args.evaluate:
            print('--evaluate: the LVOS test split has no public ground truth; submit the zip to the server')
    elif args.evaluate:
        evaluate(args, output, [v for v in dataset.videos if v not in skipped])
    report_skipped(skipped)


def evaluate(args, output, videos):
    """Scores the videos just written; the CSVs go next to Annotations/."""
    from util.lvos_metrics import evaluate_lvos, print_results, write_csvs
    evaluation = evaluate_lvos(args.lvos, output, args.unseen_list, videos=videos)
    print_results(evaluation)
    print('wrote ' + ' and '.join(write_csvs(evaluation, output)))


if __name__ == '__main__':
    run_main(main)
