"""Segments DAVIS-2017 val or test-dev with QDMN; writes palette PNGs for the evaluation server.

    python eval_davis.py --model saves/s012.pth --davis data/DAVIS/2017 --split val --output output/d17-val

`--davis` may point at the folder holding `trainval/` and `test-dev/` (as
DAVIS ships them) or directly at one of them. Videos whose outputs are
complete are skipped, so an interrupted run resumes where it stopped.
"""
import argparse
import os
from contextlib import closing

import numpy as np

from datasets.davis_test_dataset import DAVISTestDataset
from inference_core import InferenceCore, propagate
from inference_memory_bank import memory_summary
from model.inference_mode import inference_network
from util.background import BackgroundWriter, prefetch
from util.cli import (HelpFormatter, add_device_args, add_memory_args, add_memory_log_arg, add_skip_bad_videos_arg,
                      autocast, memory_options)
from util.distributed import add_launcher_args, eval_processes, is_main_process
from qdmn.network import ensure_model
from util.download import DEFAULT_MODEL
from util.errors import check_each, report_skipped, run_main
from util.image_io import write_palette_png
from util.memory_log import MemoryLog
from util.output import atomic_folder, check_writable, is_complete
from util.tensor_util import frame_to_tensor, labels_to_masks
from util.video_runs import segment_share


def add_common_args(parser):
    parser.add_argument('--model', default=DEFAULT_MODEL,
                        help='checkpoint (s012 is downloaded to the default path when missing)')
    parser.add_argument('--output', required=True, help='folder for <video>/<frame>.png')
    add_memory_args(parser)
    parser.add_argument('--mem_freq', type=int, default=5, help='minimum frame gap between stored memory frames')
    parser.add_argument('--memory_thr', type=int, default=20, help='capacity of the propagated memory')
    parser.add_argument('--quality_thr', type=float, default=0.8, help='relative quality a frame needs to be stored')
    parser.add_argument('--evaluate', action='store_true', help='score the results with J&F when ground truth exists')
    parser.add_argument('--sparse', action='store_true', help='with --evaluate: ground truth on some frames only '
                        '(long videos): score every annotated frame but the first')
    add_memory_log_arg(parser, '<output>/memory_log/<video>.csv and .png')
    add_skip_bad_videos_arg(parser)
    add_device_args(parser)
    add_launcher_args(parser)


def segment_video(network, video, out_folder, device, amp, engine_args, log_folder=None):
    """Segments one DAVIS video into out_folder (it only appears once every frame is written), then prints a
    line on its memory. With log_folder, the video's memory log goes there once the video is complete."""
    labels, objects = video.check()
    # index k of the engine's output is the k-th object of the first frame
    to_label = np.array([0] + objects, dtype=np.uint8)
    memory_log = MemoryLog(objects) if log_folder else None
    core = InferenceCore(network, memory_log=memory_log, **engine_args)
    # frames are decoded one ahead and PNGs written behind, in threads, while the network runs
    with atomic_folder(out_folder) as partial, autocast(device, amp), BackgroundWriter() as writer, \
            closing(prefetch(frame_to_tensor(rgb, device) for rgb in video.frames())) as tensors:
        outputs = propagate(core, tensors, labels_to_masks(labels, objects, device))
        for name, index_map in zip(video.frame_names, outputs):
            writer.submit(write_palette_png, os.path.join(partial, name + '.png'), to_label[index_map])
            yield name
    print(f'{video.name}: {memory_summary(core.decisions, core.bank)}')
    if memory_log is not None:
        memory_log.write(log_folder, video.name, video.frame_names)


def segment_dataset(dataset, args):
    """Runs every video of `dataset` not yet complete in args.output; prints time and FPS.

    Under torchrun the processes share the videos: rank 0 checks them and
    fetches the model, every process segments its share, rank 0 prints the totals.
    Returns {video: problem} of the videos skipped with --skip_bad_videos.
    """
    def prepare():   # rank 0 only; the other processes wait for its result
        def check(name):
            video = dataset.video(name)
            video.check()
            return video

        videos, skipped = check_each(dataset.videos, check, args.skip_bad_videos)
        check_writable(args.output)
        todo = {v.name: len(v) for v in videos.values()
                if not is_complete(os.path.join(args.output, v.name), v.frame_names)}
        if len(todo) < len(videos):
            print(f'{len(videos) - len(todo)} of {len(videos)} videos already complete in {args.output}: skipped')
        return todo, skipped, ensure_model(args.model) if todo else None

    engine_args = dict(mem_freq=args.mem_freq, quality_thr=args.quality_thr, memory_thr=args.memory_thr,
                       **memory_options(args))
    log_folder = os.path.join(args.output, 'memory_log') if args.save_memory_log else None
    with eval_processes(args.device, args.local_rank) as group:
        def segment(network, name):
            return segment_video(network, dataset.video(name), os.path.join(args.output, name), group.device,
                                 args.amp, engine_args, log_folder)

        todo, skipped, model = group.on_main(prepare)
        if todo:
            segment_share(group, todo, lambda: inference_network(model, group.device, args.amp), segment)
    return skipped


def evaluate_outputs(davis_root, output, image_set, single_object, sequences, sparse=False):
    """Scores what was just written (J&F, official protocol); CSVs go next to the masks."""
    from util.davis_metrics import evaluate_davis, print_results, write_csvs
    evaluation = evaluate_davis(davis_root, output, image_set, single_object, sequences=sequences, sparse=sparse)
    print_results(evaluation)
    print('wrote ' + ' and '.join(write_csvs(evaluation, output)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument('--davis', default='data/DAVIS/2017',
                        help='DAVIS-2017 root: the folder holding trainval/ and test-dev/, or one of them')
    parser.add_argument('--split', choices=['val', 'testdev'], default='val')
    add_common_args(parser)
    args = parser.parse_args()
    if args.sparse and not args.evaluate:
        parser.error('--sparse applies to --evaluate')
    sub = 'trainval' if args.split == 'val' else 'test-dev'
    root = os.path.join(args.davis, sub) if os.path.isdir(os.path.join(args.davis, sub)) else args.davis
    imset = '2017/val.txt' if args.split == 'val' else '2017/test-dev.txt'
    dataset = DAVISTestDataset(root, imset=imset)
    skipped = segment_dataset(dataset, args)
    if not is_main_process():
        return   # rank 0 evaluates and reports for every process
    if args.evaluate and args.split == 'testdev':
        print('--evaluate: test-dev has no public ground truth; submit the masks to the evaluation server')
    elif args.evaluate:
        evaluate_outputs(root, args.output, '2017/val', single_object=False,
                         sequences=[v for v in dataset.videos if v not in skipped], sparse=args.sparse)
    report_skipped(skipped)


if __name__ == '__main__':
    run_main(main)
