"""LVOS semi-supervised evaluation of a results folder: J, F, V, seen / unseen (the official numbers).

    python scripts/evaluate_lvos.py --lvos data/LVOS/valid --results output/lvos-valid

--results holds <video>/<frame>.png, or Annotations/<video>/<frame>.png as eval_lvos.py
writes it. Prints the global and per-object tables and writes global_results-<split>.csv
and per-sequence_results-<split>.csv (default: into the results folder). Bad input: one
line on stderr, exit code 2. See docs/lvos.md.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from util.cli import HelpFormatter, add_scorer_args  # noqa: E402
from util.errors import run_main  # noqa: E402
from util.lvos_metrics import DEFAULT_UNSEEN_LIST, evaluate_lvos, print_results, write_csvs  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=HelpFormatter)
    parser.add_argument('--lvos', required=True, help='LVOS split folder (Annotations/, <split>_meta.json)')
    parser.add_argument('--results', required=True, help='folder with [Annotations/]<video>/<frame>.png')
    parser.add_argument('--unseen_list', default=None,
                        help=f'video names counted as unseen, one a line (default: the official list, '
                             f'{os.path.relpath(DEFAULT_UNSEEN_LIST)})')
    add_scorer_args(parser)
    args = parser.parse_args(argv)

    evaluation = evaluate_lvos(args.lvos, args.results, args.unseen_list, workers=args.workers,
                               progress=not args.no_progress)
    print_results(evaluation)
    global_csv, seq_csv = write_csvs(evaluation, args.output or args.results)
    print(f'\nwrote {global_csv}\nwrote {seq_csv}')


if __name__ == '__main__':
    run_main(main)
