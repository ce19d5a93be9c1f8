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
videos are skipped and a video in progress goes on from its last saved state
(--resume_every), so an interrupted run resumes where it stopped. See docs/lvos.md.
"""
import argparse
import os

from datasets.lvos_test_dataset import LVOSTestDataset
from pipeline.flags import (add_dataset_args, add_engine_args, add_model_arg, add_resize_arg, add_run_args, run_options,
                            run_setup)
from pipeline.youtube import segment_youtube
from util.cli import HelpFormatter
from util.distributed import is_main_process
from util.errors import report_skipped, run_cli
from util.submission import write_submission_zip


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument('--lvos', default='data/LVOS/valid',
                        help='LVOS split folder (JPEGImages/, Annotations/, <split>_meta.json)')
    parser.add_argument('--output', required=True, help='folder for Annotations/<video>/<frame>.png; on the test '
                                                        'split the zip is written next to it as <output>.zip')
    add_model_arg(parser)
    add_resize_arg(parser)
    # LVOS annotates every 5th frame and objects enter late, as YouTube-VOS: its published preset
    add_engine_args(parser, 'youtube')
    parser.add_argument('--evaluate', action='store_true',
                        help='score the results (J, F, V, seen / unseen) when the split has its ground truth')
    parser.add_argument('--unseen_list', default=None,
                        help='with --evaluate: video names counted as unseen (default: the official list)')
    add_run_args(parser, '<output>/memory_log/<video>.csv and .png (not in the zip)')
    add_dataset_args(parser)
    args = parser.parse_args(argv)
    if args.unseen_list and not args.evaluate:
        parser.error('--unseen_list applies to --evaluate')
    return args


def main(argv=None):
    args = parse_args(argv)
    output = os.path.normpath(args.output)
    dataset = LVOSTestDataset(args.lvos)
    log_folder = os.path.join(output, 'memory_log') if args.save_memory_log else None
    # every frame from the first entry on is written (LVOSVideo.written_frames); objects join mid-video
    expected, skipped = segment_youtube(dataset, run_options(args, 'youtube', None if args.size <= 0 else args.size),
                                        run_setup(args, os.path.join(output, 'Annotations'), fixed_shapes=False),
                                        log_folder)
    if not is_main_process():
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
    run_cli(main)
