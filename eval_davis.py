"""Segments DAVIS-2017 val or test-dev with QDMN; writes palette PNGs for the evaluation server.

    python eval_davis.py --model saves/s012.pth --davis data/DAVIS/2017 --split val --output output/d17-val

`--davis` may point at the folder holding `trainval/` and `test-dev/` (as
DAVIS ships them) or directly at one of them. Videos whose outputs are
complete are skipped and a video in progress goes on from its last saved
state (--resume_every), so an interrupted run resumes where it stopped.
"""
import argparse
import os

from datasets.davis_test_dataset import DAVISTestDataset
from pipeline.davis import evaluate_outputs, segment_davis
from pipeline.flags import add_davis_args, parse_davis_args, run_options, run_setup
from util.cli import HelpFormatter
from util.davis_metrics import check_ground_truth
from util.distributed import is_main_process
from util.errors import report_skipped, run_cli
from util.submission import write_submission_zip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument('--davis', default='data/DAVIS/2017',
                        help='DAVIS-2017 root: the folder holding trainval/ and test-dev/, or one of them')
    parser.add_argument('--split', choices=['val', 'testdev'], default='val',
                        help='val (scored with --evaluate) or testdev (for the evaluation server)')
    add_davis_args(parser)
    args = parse_davis_args(parser, argv)
    sub = 'trainval' if args.split == 'val' else 'test-dev'
    root = os.path.join(args.davis, sub) if os.path.isdir(os.path.join(args.davis, sub)) else args.davis
    imset = '2017/val.txt' if args.split == 'val' else '2017/test-dev.txt'
    dataset = DAVISTestDataset(root, imset=imset)
    if args.evaluate and args.split == 'val':   # what scoring needs, before anything is segmented
        check_ground_truth(root, dataset.videos, single_object=False, sparse=args.sparse)
    skipped = segment_davis(dataset, run_options(args, 'davis'), run_setup(args, args.output))
    if not is_main_process():
        return   # rank 0 evaluates and reports for every process
    if args.split == 'testdev':   # the server reads <sequence>/<frame>.png at the zip's root
        frames = {v: dataset.video(v).frame_names for v in dataset.videos if v not in skipped}
        print(f'wrote {write_submission_zip(os.path.normpath(args.output), frames)}')
    if args.evaluate and args.split == 'testdev':
        print('--evaluate: test-dev has no public ground truth; submit the zip to the evaluation server')
    elif args.evaluate:
        evaluate_outputs(root, args.output, '2017/val', single_object=False,
                         sequences=[v for v in dataset.videos if v not in skipped], sparse=args.sparse)
    report_skipped(skipped)


if __name__ == '__main__':
    run_cli(main)
