"""Segments DAVIS-2016 val (one object per video) with QDMN; writes palette PNGs.

    python eval_davis_2016.py --model saves/s012.pth --davis data/DAVIS/2016 --output output/d16-val

Accepts the binary 0/255 annotations of DAVIS-2016 and the palette ones of
DAVIS-2017 (every object merged into one). The image set defaults to
`<davis>/ImageSets/2016/val.txt`. Complete videos are skipped on a re-run.
"""
import argparse

from datasets.davis_test_dataset import DAVISTestDataset
from eval_davis import add_common_args, evaluate_outputs, segment_dataset
from util.cli import HelpFormatter
from util.distributed import is_main_process
from util.errors import report_skipped, run_main


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument('--davis', default='data/DAVIS/2016', help='DAVIS-2016 root (or a DAVIS-2017 trainval root)')
    parser.add_argument('--imset', default='2016/val.txt', help='image set, relative to <davis>/ImageSets or absolute')
    add_common_args(parser)
    args = parser.parse_args()
    if args.sparse and not args.evaluate:
        parser.error('--sparse applies to --evaluate')
    dataset = DAVISTestDataset(args.davis, imset=args.imset, single_object=True)
    skipped = segment_dataset(dataset, args)
    if not is_main_process():
        return   # rank 0 evaluates and reports for every process
    if args.evaluate:
        evaluate_outputs(args.davis, args.output, '2016/val', single_object=True,
                         sequences=[v for v in dataset.videos if v not in skipped], sparse=args.sparse)
    report_skipped(skipped)


if __name__ == '__main__':
    run_main(main)
