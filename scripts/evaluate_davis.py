"""DAVIS semi-supervised J&F evaluation of a results folder (same numbers as the official tool).

    python scripts/evaluate_davis.py --davis ../DAVIS/2017/trainval --results output/d17 --set 2017/val
    python scripts/evaluate_davis.py --davis ../DAVIS/2016 --results output/d16 --set 2016/val --single_object

Prints the global table and the per-object table, and writes
global_results-<year>-<split>.csv and per-sequence_results-<year>-<split>.csv
(default: into the results folder). Bad input: one line on stderr, exit code 2.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from util.davis_metrics import evaluate_davis, print_results, write_csvs  # noqa: E402
from util.cli import HelpFormatter, add_scorer_args  # noqa: E402
from util.errors import run_main  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=HelpFormatter)
    parser.add_argument('--davis', required=True, help='DAVIS root (Annotations/480p, ImageSets/<year>)')
    parser.add_argument('--results', required=True, help='folder with <sequence>/<frame>.png')
    parser.add_argument('--set', default='2017/val', help='image set YEAR/SPLIT: 2016/val, 2017/val, '
                        '2017/test-dev, ... (default 2017/val)')
    parser.add_argument('--single_object', action='store_true',
                        help='DAVIS-2016 binary masks: every pixel > 0 is object 1')
    parser.add_argument('--exclude_void', action='store_true',
                        help='ignore result pixels on ground-truth void (255); NOT what the official '
                             'semi-supervised evaluation does')
    parser.add_argument('--sparse', action='store_true',
                        help='ground truth on some frames only (long videos): score every annotated frame '
                             'but the first')
    add_scorer_args(parser)
    args = parser.parse_args(argv)

    evaluation = evaluate_davis(args.davis, args.results, args.set, single_object=args.single_object,
                                workers=args.workers, progress=not args.no_progress,
                                exclude_void=args.exclude_void, sparse=args.sparse)
    print_results(evaluation, per_sequence=True)
    global_csv, seq_csv = write_csvs(evaluation, args.output or args.results)
    print(f'\nwrote {global_csv}\nwrote {seq_csv}')


if __name__ == '__main__':
    run_main(main)
