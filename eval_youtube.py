"""Segments YouTube-VOS valid or test with QDMN; writes the evaluation server's zip.

    python eval_youtube.py --yv data/YouTube --split valid --output output/yv-valid

Every frame of <yv>/all_frames/<split>_all_frames/JPEGImages is processed
when that release is present (else <yv>/<split>/JPEGImages), at 480 px on the
short side. Written: <output>/Annotations/<video>/<frame>.png with the
original label ids and the dataset's palette, at the original size, for the
frames <yv>/<split>/JPEGImages lists, from each video's first annotation on;
then <output>.zip with Annotations/ at its root, ready for upload. Complete
videos are skipped and a video in progress goes on from its last saved state
(--resume_every), so an interrupted run resumes where it stopped.
"""
import argparse
import os

from datasets.yv_test_dataset import YouTubeVOSTestDataset
from pipeline.flags import (add_dataset_args, add_engine_args, add_model_arg, add_resize_arg, add_run_args, run_options,
                            run_setup)
from pipeline.youtube import segment_youtube
from util.cli import HelpFormatter
from util.distributed import is_main_process
from util.errors import report_skipped, run_cli
from util.submission import write_submission_zip


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument('--yv', default='data/YouTube', help='YouTube-VOS root (holding valid/, test/, all_frames/)')
    parser.add_argument('--split', choices=['valid', 'test'], default='valid', help='the release to segment')
    parser.add_argument('--output', required=True, help='folder for Annotations/<video>/<frame>.png; '
                                                        'the zip is written next to it as <output>.zip')
    add_model_arg(parser)
    add_resize_arg(parser)
    add_engine_args(parser, 'youtube')
    add_run_args(parser, '<output>/memory_log/<video>.csv and .png (not in the zip)')
    add_dataset_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    output = os.path.normpath(args.output)
    size = None if args.size <= 0 else args.size
    dataset = YouTubeVOSTestDataset(args.yv, args.split)
    log_folder = os.path.join(output, 'memory_log') if args.save_memory_log else None
    expected, skipped = segment_youtube(dataset, run_options(args, 'youtube', size),
                                        run_setup(args, os.path.join(output, 'Annotations'), fixed_shapes=False),
                                        log_folder)
    if not is_main_process():
        return   # rank 0 writes the zip and reports for every process
    print(f'wrote {write_submission_zip(output, expected, root="Annotations")}')
    report_skipped(skipped)


if __name__ == '__main__':
    run_cli(main)
