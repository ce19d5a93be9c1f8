"""Segments DAVIS-2016 val (one object per video) with QDMN; writes palette PNGs.

    python eval_davis_2016.py --model saves/s012.pth --davis data/DAVIS/2016 --output output/d16-val

Accepts the binary 0/255 annotations of DAVIS-2016 and the palette ones of
DAVIS-2017 (every object merged into one). The image set defaults to
`<davis>/ImageSets/2016/val.txt`. Complete videos are skipped on a re-run and
a video in progress goes on from its last saved state (--resume_every).
"""
import argparse

from datasets.davis_test_dataset import DAVISTestDataset
from pipeline.davis import evaluate_outputs, segment_davis
from pipeline.flags import add_davis_args, parse_davis_args, run_options, run_setup
from util.cli import HelpFormatter
from util.davis_metrics import check_ground_truth
from util.distributed import is_main_process
from util.errors import report_skipped, run_cli


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument('--davis', default='data/DAVIS/2016', help='DAVIS-2016 root (or a DAVIS-2017 trainval root)')
    parser.add_argument('--imset', default='2016/val.txt', help='image set, relative to <davis>/ImageSets or absolute')
    add_davis_args(parser)
    args = parse_davis_args(parser, argv)
    dataset = DAVISTestDataset(args.davis, imset=args.imset, single_object=True)
    if args.evaluate:   # what scoring needs, before anything is segmented
        check_ground_truth(args.davis, dataset.videos, single_object=True, sparse=args.sparse)
    skipped = segment_davis(dataset, run_options(args, 'davis'), run_setup(args, args.output))
    if not is_main_process():
        return   # rank 0 evaluates and reports for every process
    if args.evaluate:
        evaluate_outputs(args.davis, args.output, '2016/val', single_object=True,
                         sequences=[v for v in dataset.videos if v not in skipped], sparse=args.sparse)
    report_skipped(skipped)


if __name__ == '__main__':
    run_cli(main)
