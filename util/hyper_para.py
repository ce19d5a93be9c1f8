"""Command line of train.py, with the per-stage defaults (docs/training.md).

Options left at None take their stage's value (STAGE_DEFAULTS); every one
of them can be given explicitly instead.
"""
import argparse
import os

from util.cli import HelpFormatter, add_device_args, add_launcher_args

STAGE_DEFAULTS = {
    0: {'batch_size': 14, 'iterations': 160000, 'steps': [250000]},  # static images, single object
    1: {'batch_size': 8, 'iterations': 250000, 'steps': [450000]},   # BL30K, two objects
    2: {'batch_size': 8, 'iterations': 150000, 'steps': [70000]},    # DAVIS + YouTube-VOS, two objects
}

# Optimiser settings that a resumed run takes from its checkpoint unless given (model/resume.py).
OPTIMISER_DEFAULTS = {'lr': 2e-5, 'weight_decay': 1e-7, 'gamma': 0.1}

# Frame-gap curriculum switch points (fractions of the epochs) of the video stages, as published.
SKIP_FRACTIONS = {1: [0.1, 0.2, 0.3, 0.4, 0.8, 1.0], 2: [0.1, 0.2, 0.3, 0.4, 0.7, 0.9]}

# The published training subsets, shipped with the code (one video per line).
SUBSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'datasets', 'subsets')

# name[:repeat] of the static image sets under --static_root; BIG and HRSOD are small sets, seen 5x.
STATIC_SETS = 'fss,DUTS-TR,DUTS-TE,ecssd,BIG_small:5,HRSOD_small:5'


def int_list(text):
    try:
        return [int(x) for x in text.split(',') if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected comma-separated integers, got {text!r}') from None


def float_list(text):
    try:
        return [float(x) for x in text.split(',') if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected comma-separated numbers, got {text!r}') from None


def build_parser():
    p = argparse.ArgumentParser(description='Train QDMN (stage 0: static images, 1: BL30K, 2: DAVIS + YouTube-VOS).',
                                formatter_class=HelpFormatter)
    run = p.add_argument_group('run')
    run.add_argument('--id', required=True, help='run name; weights and logs go to <saves_root>/<id>/ '
                                                '(NULL: no logging and no saves, as published)')
    run.add_argument('--stage', type=int, choices=sorted(STAGE_DEFAULTS), required=True)
    run.add_argument('--saves_root', default='saves', help='parent folder of the run folders (default: saves)')
    run.add_argument('--load_network', help='start from these network weights (a single-object network is '
                                            'widened to two objects for stages 1 and 2)')
    run.add_argument('--load_model', help='resume from <id>_checkpoint.pth (iteration, network, optimiser, scheduler)')
    run.add_argument('--resume', action='store_true',
                     help='continue <saves_root>/<id>/ from its latest <id>_checkpoint.pth, or start it (from '
                          '--load_model if given) while it has none: the same command line for the first '
                          'submission and every re-submission of a preemptible job (docs/training.md)')
    run.add_argument('--imagenet', help='torchvision ResNet-50 ImageNet weights (resnet50-19c8e357.pth) for a '
                                        'fresh start; default: torchvision\'s cache')
    run.add_argument('--no_imagenet', action='store_true',
                     help='FOR TESTS AND DEBUGGING ONLY: start a fresh run from random weights')
    run.add_argument('--seed', type=int, default=14159265, help='initialisation and data order; '
                     'augmentation streams are derived per rank and worker')
    add_launcher_args(run)
    add_device_args(p)

    opt = p.add_argument_group('optimisation (None = the stage default)')
    opt.add_argument('-b', '--batch_size', type=int,
                     help='samples per process (per GPU); stage 0: 14, 1 and 2: 8 (resumed: the checkpoint\'s)')
    opt.add_argument('-i', '--iterations', type=int, help='total iterations; stage 0: 160k, 1: 250k, 2: 150k')
    opt.add_argument('--steps', type=int_list, nargs='+',
                     help='iterations at which lr drops by --gamma; stage 0: 250000, 1: 450000, 2: 70000 '
                          '(resumed: the checkpoint\'s)')
    opt.add_argument('--lr', type=float, help='learning rate (Adam); default 2e-5 (resumed: the checkpoint\'s)')
    opt.add_argument('--weight_decay', type=float, help='Adam weight decay; default 1e-7 (resumed: the checkpoint\'s)')
    opt.add_argument('--gamma', type=float,
                     help='lr factor at each of --steps; default 0.1 (resumed: the checkpoint\'s)')
    opt.add_argument('--allow_batch_change', action='store_true',
                     help='resume with another effective batch (--batch_size x processes) than the checkpoint\'s; '
                          'refused without it')
    opt.add_argument('--bootstrap_start', type=int, default=20000, help='plain CE before this iteration')
    opt.add_argument('--bootstrap_end', type=int, default=70000,
                     help='the hardest-pixel fraction reaches --bootstrap_p here')
    opt.add_argument('--bootstrap_p', type=float, default=0.15,
                     help='fraction of hardest pixels the bootstrapped CE keeps at the end')
    opt.add_argument('--quality_weight', type=float, default=1.0, help='weight of the quality-score MSE')
    opt.add_argument('--quality_fit', choices=['preactivation', 'published'], default='preactivation',
                     help='preactivation: fit the IoU target on the quality head\'s output before its final ReLU, '
                          'so the head keeps learning (default); published: fit the ReLU output, whose head dies '
                          'early (docs/training.md). The saved network is the same architecture either way.')

    data = p.add_argument_group('data')
    data.add_argument('--size', type=int, default=384, help='square crop size (a multiple of 16)')
    data.add_argument('--num_workers', type=int, default=min(8, os.cpu_count() or 1),
                      help='data loader workers per process (default: 8, at most the number of cores)')
    data.add_argument('--static_root', default='data/static',
                      help='stage 0: folder of the image sets (<set>/x.jpg+x.png or <set>/<class>/x.jpg+x.png)')
    data.add_argument('--static_sets', default=STATIC_SETS,
                      help=f'name[:repeat] folders of --static_root used in stage 0 (default: {STATIC_SETS})')
    data.add_argument('--bl_root', '--bl30k_root', dest='bl30k_root', default='data/BL30K',
                      help='stage 1: JPEGImages/<video>/, Annotations/<video>/')
    data.add_argument('--davis_root', default='data/DAVIS',
                      help='stage 2: DAVIS root holding 2017/trainval/ (or that folder itself) with '
                           'JPEGImages/480p/<video>/, Annotations/480p/<video>/')
    data.add_argument('--davis_subset', default=os.path.join(SUBSETS, 'davis_subset.txt'),
                      help='file listing the DAVIS training videos (default: the published 60 train videos; '
                           '"all": every video under the root)')
    data.add_argument('--davis_repeat', type=int, default=5, help='DAVIS is seen this many times per epoch; 0 = unused')
    data.add_argument('--yv_root', default='data/YouTube',
                      help='stage 2: YouTube-VOS root holding train_480p/ (or that folder itself) with '
                           'JPEGImages/<video>/, Annotations/<video>/')
    data.add_argument('--yv_subset', default=os.path.join(SUBSETS, 'yv_subset.txt'),
                      help='file listing the YouTube-VOS training videos (default: the published 3,464; '
                           '"all": every video under the root)')
    data.add_argument('--yv_repeat', type=int, default=1, help='0 = do not use YouTube-VOS')

    skip = p.add_argument_group('frame-gap curriculum (max skip per phase, in 25-fps frames)')
    skip.add_argument('--skip_fractions', type=float_list,
                      help='fractions of the epochs at which the next max skip applies '
                           '(stage 1: 0.1,0.2,0.3,0.4,0.8,1.0; stage 2: 0.1,0.2,0.3,0.4,0.7,0.9)')
    skip.add_argument('--initial_skip', type=int, default=5, help='max skip before the first fraction')
    skip.add_argument('--davis_skips', type=int_list, default=[10, 15, 25, 10, 5, 1],
                      help='max frame skip of DAVIS clips, one per --skip_fractions entry')
    skip.add_argument('--yv_skips', type=int_list, default=[10, 15, 20, 25, 10, 5],
                      help='divided by 5 on YouTube-VOS, whose training frames are 5 apart')
    skip.add_argument('--bl30k_skips', type=int_list, default=[10, 15, 20, 25, 10, 5],
                      help='max frame skip of BL30K clips, one per --skip_fractions entry')

    log = p.add_argument_group('logging and saving')
    log.add_argument('--log_every', type=int, default=100, help='iterations between scalar reports')
    log.add_argument('--image_every', type=int, default=1000, help='iterations between sample images')
    log.add_argument('--debug', action='store_true', help='report and write sample images every iteration')
    log.add_argument('--save_every', type=int, default=50000,
                     help='iterations between network snapshots <id>_<it>.pth (420 MB; also at the end)')
    log.add_argument('--checkpoint_every', type=int, default=5000,
                     help='iterations between saves of the resumable <id>_checkpoint.pth (1.25 GB, replaced each '
                          'time; also with every snapshot and on SIGTERM)')

    faults = p.add_argument_group('timeouts (seconds; docs/training.md, "Running on a cluster with preemption")')
    faults.add_argument('--dist_timeout', type=float,
                        help='how long a process waits for the others in a collective before failing '
                             '(default: torch\'s, 10 min with NCCL, 30 min with gloo)')
    faults.add_argument('--save_timeout', type=float, default=3600,
                        help='how long the other processes wait for rank 0 to write a checkpoint (default: 3600)')
    return p


def parse_args(argv=None):
    para = build_parser().parse_args(argv)
    # What was given on the command line: on resume, the rest comes from the checkpoint (model/resume.py).
    para.given = sorted(k for k in ('batch_size', 'steps', *OPTIMISER_DEFAULTS) if getattr(para, k) is not None)
    if para.steps is not None:  # published: --steps 70000 80000; ours: --steps 70000,80000
        para.steps = [step for group in para.steps for step in group]
    for key, value in {**STAGE_DEFAULTS[para.stage], **OPTIMISER_DEFAULTS}.items():
        if getattr(para, key) is None:
            setattr(para, key, value)
    if para.skip_fractions is None:
        para.skip_fractions = SKIP_FRACTIONS.get(para.stage, SKIP_FRACTIONS[2])
    if para.debug:
        para.log_every = para.image_every = 1
    para.davis_subset, para.yv_subset = (None if s == 'all' else s for s in (para.davis_subset, para.yv_subset))
    checks = [
        (para.size % 16 == 0 and para.size > 0, f'--size {para.size}: must be a positive multiple of 16'),
        (para.batch_size > 0, '--batch_size must be positive'),
        (para.iterations > 0, '--iterations must be positive'),
        (min(para.log_every, para.image_every, para.save_every, para.checkpoint_every) > 0,
         'the --*_every intervals must be positive'),
        ((para.dist_timeout is None or para.dist_timeout > 0) and para.save_timeout > 0,
         'the timeouts must be positive'),
        (not (para.load_network and para.load_model), 'give --load_network or --load_model, not both'),
    ]
    for skips in (para.davis_skips, para.yv_skips, para.bl30k_skips):
        checks.append((len(skips) == len(para.skip_fractions),
                       'each --*_skips list needs one value per --skip_fractions entry'))
    for ok, message in checks:
        if not ok:
            build_parser().error(message)
    if para.device is None:   # resolved after parsing: --help answers without importing torch
        from util.device import default_device
        para.device = default_device()
    para.no_output = para.id == 'NULL'
    para.run_dir = os.path.join(para.saves_root, para.id)
    return para
