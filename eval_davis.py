"""Segments DAVIS-2017 val or test-dev with QDMN; writes palette PNGs for the evaluation server.

    python eval_davis.py --model saves/s012.pth --davis data/DAVIS/2017 --split val --output output/d17-val

`--davis` may point at the folder holding `trainval/` and `test-dev/` (as
DAVIS ships them) or directly at one of them. Videos whose outputs are
complete are skipped, so an interrupted run resumes where it stopped.
"""
import argparse
import os
import time

import numpy as np
import progressbar

from datasets.davis_test_dataset import DAVISTestDataset
from inference_core import InferenceCore, propagate
from model.checkpoint import build_network
from util.cli import (HelpFormatter, add_device_args, add_memory_args, add_memory_log_arg, add_skip_bad_videos_arg,
                      autocast, memory_options, peak_memory, resolve_device)
from util.download import DEFAULT_MODEL, ensure_model
from util.errors import check_each, report_skipped, run_main
from util.image_io import write_palette_png
from util.memory_log import MemoryLog
from util.output import atomic_folder, check_writable, is_complete
from util.tensor_util import frame_to_tensor, labels_to_masks


def add_common_args(parser):
    parser.add_argument('--model', default=DEFAULT_MODEL,
                        help='checkpoint (s012 is downloaded to the default path when missing)')
    parser.add_argument('--output', required=True, help='folder for <video>/<frame>.png')
    add_memory_args(parser)
    parser.add_argument('--mem_freq', type=int, default=5, help='minimum frame gap between stored memory frames')
    parser.add_argument('--memory_thr', type=int, default=20, help='capacity of the propagated memory')
    parser.add_argument('--quality_thr', type=float, default=0.8, help='relative quality a frame needs to be stored')
    parser.add_argument('--evaluate', action='store_true', help='score the results with J&F when ground truth exists')
    add_memory_log_arg(parser, '<output>/memory_log/<video>.csv and .png')
    add_skip_bad_videos_arg(parser)
    add_device_args(parser)


def segment_video(network, video, out_folder, device, amp, engine_args, log_folder=None):
    """Segments one DAVIS video into out_folder; the folder only appears once every frame is written.

    With log_folder, the video's memory log goes there once the video is complete.
    """
    labels, objects = video.check()
    # index k of the engine's output is the k-th object of the first frame
    to_label = np.array([0] + objects, dtype=np.uint8)
    memory_log = MemoryLog(objects) if log_folder else None
    core = InferenceCore(network, memory_log=memory_log, **engine_args)
    tensors = (frame_to_tensor(rgb, device) for rgb in video.frames())
    with atomic_folder(out_folder) as partial, autocast(device, amp):
        outputs = propagate(core, tensors, labels_to_masks(labels, objects, device))
        for name, index_map in zip(video.frame_names, outputs):
            write_palette_png(os.path.join(partial, name + '.png'), to_label[index_map])
            yield name
    if memory_log is not None:
        memory_log.write(log_folder, video.name, video.frame_names)


def segment_dataset(dataset, args):
    """Runs every video of `dataset` not yet complete in args.output; prints time and FPS.

    Returns {video: problem} of the videos skipped with --skip_bad_videos.
    """
    device = resolve_device(args.device)
    def check(name):
        video = dataset.video(name)
        video.check()
        return video

    videos, skipped = check_each(dataset.videos, check, args.skip_bad_videos)
    videos = list(videos.values())
    check_writable(args.output)
    engine_args = dict(mem_freq=args.mem_freq, quality_thr=args.quality_thr, memory_thr=args.memory_thr,
                       **memory_options(args))
    todo = [v for v in videos if not is_complete(os.path.join(args.output, v.name), v.frame_names)]
    if len(todo) < len(videos):
        print(f'{len(videos) - len(todo)} of {len(videos)} videos already complete in {args.output}: skipped')
    if not todo:
        return skipped
    network = build_network(ensure_model(args.model), device)
    total = sum(len(v) for v in todo)
    log_folder = os.path.join(args.output, 'memory_log') if args.save_memory_log else None
    done, start = 0, time.perf_counter()
    # `with`: the bar ends its line also on an error or Ctrl-C, so the message gets a line of its own
    with progressbar.ProgressBar(max_value=max(total, 1), prefix='{variables.video} ',
                                 variables={'video': '-'}, redirect_stdout=True) as bar:
        for video in todo:
            for _ in segment_video(network, video, os.path.join(args.output, video.name), device, args.amp,
                                   engine_args, log_folder):
                done += 1
                bar.update(done, video=video.name)
    elapsed = time.perf_counter() - start
    print(f'{len(todo)} videos, {done} frames in {elapsed:.1f} s: {done / max(elapsed, 1e-9):.2f} FPS; '
          f'{peak_memory(device)}')
    return skipped


def evaluate_outputs(davis_root, output, image_set, single_object, sequences):
    """Scores what was just written (J&F, official protocol); CSVs go next to the masks."""
    from util.davis_metrics import evaluate_davis, print_results, write_csvs
    evaluation = evaluate_davis(davis_root, output, image_set, single_object, sequences=sequences)
    print_results(evaluation)
    print('wrote ' + ' and '.join(write_csvs(evaluation, output)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument('--davis', default='data/DAVIS/2017',
                        help='DAVIS-2017 root: the folder holding trainval/ and test-dev/, or one of them')
    parser.add_argument('--split', choices=['val', 'testdev'], default='val')
    add_common_args(parser)
    args = parser.parse_args()
    sub = 'trainval' if args.split == 'val' else 'test-dev'
    root = os.path.join(args.davis, sub) if os.path.isdir(os.path.join(args.davis, sub)) else args.davis
    imset = '2017/val.txt' if args.split == 'val' else '2017/test-dev.txt'
    dataset = DAVISTestDataset(root, imset=imset)
    skipped = segment_dataset(dataset, args)
    if args.evaluate and args.split == 'testdev':
        print('--evaluate: test-dev has no public ground truth; submit the masks to the evaluation server')
    elif args.evaluate:
        evaluate_outputs(root, args.output, '2017/val', single_object=False,
                         sequences=[v for v in dataset.videos if v not in skipped])
    report_skipped(skipped)


if __name__ == '__main__':
    run_main(main)
