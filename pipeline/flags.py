"""The flag groups every inference command line shares, and what they become (RunOptions, RunSetup)."""
from inference_memory_bank import PRESETS
from pipeline.runner import RunSetup
from pipeline.video import RESUME_EVERY, RunOptions
from util.cli import (add_device_args, add_launcher_args, add_memory_log_arg, add_skip_bad_videos_arg, float_arg,
                      int_arg, short_side_arg, top_k_arg)
from util.download import DEFAULT_MODEL


def add_model_arg(parser):
    parser.add_argument('--model', default=DEFAULT_MODEL,
                        help='checkpoint (s012 is downloaded to the default path when missing), or "synthetic": '
                             'random weights for an offline dry run, meaningless masks')


def add_shrink_size_arg(parser):
    """--size of the tools for your own videos (segment_video.py, app.py): frames only ever shrink."""
    parser.add_argument('--size', type=short_side_arg, default=480,
                        help='process at this short side when the video is larger (-1: full size); '
                             'masks are written at the video size')


def add_resize_arg(parser):
    """--size of the benchmark CLIs that process at 480p like the published code (eval_youtube, eval_lvos)."""
    parser.add_argument('--size', type=short_side_arg, default=480,
                        help='short side frames are processed at (-1: original size)')


def add_engine_args(parser, preset=None):
    """--top_k, --no_top, --use_km, --mem_freq, --memory_thr, --quality_thr, --memory_policy.

    With `preset` the defaults are that preset's; without, the command line chooses a preset
    (--preset) and the memory flags default to its values.
    """
    p = PRESETS[preset] if preset else None

    def default(name):
        return getattr(p, name) if p else None

    def preset_help(name):
        return '' if p else ' (default: the preset\'s, ' + ', '.join(
            f'{q.name} {getattr(q, name)}' for q in PRESETS.values()) + ')'

    if not p:
        parser.add_argument('--preset', choices=list(PRESETS),
                            help='published engine settings and protocol (default: davis with --mask, '
                                 'youtube with --mask_dir)')
    parser.add_argument('--top_k', type=top_k_arg, default=PRESETS['davis'].top_k,
                        help='memory pixels read per query pixel (or "none")')
    parser.add_argument('--no_top', action='store_true',
                        help='read every memory pixel (published flag; = --top_k none)')
    parser.add_argument('--use_km', action='store_true',
                        help='kernelized memory read (published flag): a Gaussian (sigma 5.6) around each memory '
                             'pixel\'s best-matching query position, applied before the top-k')
    parser.add_argument('--mem_freq', type=int_arg('--mem_freq', 1), default=default('mem_freq'),
                        help='minimum frame gap between stored memory frames' + preset_help('mem_freq'))
    parser.add_argument('--memory_thr', type=int_arg('--memory_thr', 0), default=default('memory_thr'),
                        help='capacity of the propagated memory; lower it to save memory on long videos'
                             + preset_help('memory_thr'))
    parser.add_argument('--quality_thr', type=float_arg('--quality_thr'), default=default('quality_thr'),
                        help='relative quality a frame needs to be stored' + preset_help('quality_thr'))
    parser.add_argument('--memory_policy', choices=['quality', 'recent'], default='quality',
                        help='quality: QDMN\'s quality-gated memory; recent: every due frame, oldest evicted '
                             '(the baseline of the paper\'s long-video comparison)')


def add_run_args(parser, log_where):
    """--save_memory_log and --resume_every."""
    add_memory_log_arg(parser, log_where)
    parser.add_argument('--resume_every', type=int_arg('--resume_every', 0), default=RESUME_EVERY,
                        help='save the engine state every N frames beside the partial output, so that a killed '
                             'run started again goes on from there (0: off; see docs/api.md)')


def add_dataset_args(parser):
    """The evaluation command lines': --skip_bad_videos, --device/--amp, torchrun's --local_rank."""
    add_skip_bad_videos_arg(parser)
    add_device_args(parser)
    add_launcher_args(parser)


def add_davis_args(parser):
    """Everything eval_davis.py and eval_davis_2016.py share after their dataset flags."""
    add_model_arg(parser)
    parser.add_argument('--output', required=True, help='folder for <video>/<frame>.png')
    add_engine_args(parser, 'davis')
    parser.add_argument('--evaluate', action='store_true', help='score the results with J&F when ground truth exists')
    parser.add_argument('--sparse', action='store_true', help='with --evaluate: ground truth on some frames only '
                        '(long videos): score every annotated frame but the first')
    add_run_args(parser, '<output>/memory_log/<video>.csv and .png')
    add_dataset_args(parser)


def parse_davis_args(parser, argv=None):
    args = parser.parse_args(argv)
    if args.sparse and not args.evaluate:
        parser.error('--sparse applies to --evaluate')
    return args


def run_options(args, preset, size=None):
    """RunOptions of the parsed engine and run flags, with the given preset."""
    overrides = {'top_k': None if args.no_top else args.top_k, 'use_km': args.use_km,
                 'memory_policy': args.memory_policy}
    overrides.update({name: getattr(args, name) for name in ('mem_freq', 'memory_thr', 'quality_thr')
                      if getattr(args, name) is not None})
    return RunOptions(preset=preset, overrides=overrides, size=size, resume_every=args.resume_every,
                      save_memory_log=args.save_memory_log)


def run_setup(args, output, fixed_shapes=True):
    """RunSetup of the parsed dataset flags; fixed_shapes: no object joins mid-video (qdmn.load_network)."""
    return RunSetup(model=args.model, device=args.device, amp=args.amp, output=output,
                    skip_bad_videos=args.skip_bad_videos, local_rank=args.local_rank, fixed_shapes=fixed_shapes)
