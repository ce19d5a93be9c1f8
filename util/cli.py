"""Shared command-line plumbing: help format, device and generic flags (the device itself: util/device.py;
the engine and run flag groups, whose defaults come from the presets: pipeline/flags.py)."""
import argparse
import importlib.util
import math

from util.errors import UserInputError


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's layout and shows every option's default (but "None", or a help that
    already says the default)."""

    def _get_help_string(self, action):
        if action.default is None or 'default' in (action.help or ''):
            return action.help
        return super()._get_help_string(action)


def add_device_args(parser):
    # default None, resolved by util.device.resolve_device: --help answers without importing torch
    parser.add_argument('--device', default=None, help='cpu, cuda or cuda:N (default: cuda when available)')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision: fp16 autocast on CUDA; bfloat16 convolutions on a CPU with native '
                             'bf16 (AVX512-BF16 or AMX), else fp32')


def add_launcher_args(parser):
    parser.add_argument('--local_rank', '--local-rank', type=int, default=None,
                        help='set by the legacy torch.distributed.launch (torchrun uses LOCAL_RANK)')


# Numeric flags: argparse type functions that refuse numbers nobody meant (--size -5, --top_k 0,
# --quality_thr nan) with one `error:` line (a UserInputError passes through argparse unchanged).

MIN_SIZE = 32   # two feature cells at the network's stride of 16: anything smaller segments nothing


def int_arg(flag, at_least, special=None, special_means=''):
    """Type of an integer flag: at least `at_least`, or the documented `special` value (e.g. -1: full size)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise UserInputError(f'{flag} {text}: not an integer') from None
        if value < at_least and value != special:
            allowed = f'an integer >= {at_least}' + ('' if special is None else f', or {special} ({special_means})')
            raise UserInputError(f'{flag} {text}: must be {allowed}')
        return value
    return parse


def float_arg(flag, low=-math.inf, high=math.inf):
    """Type of a float flag: a finite number in [low, high]."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise UserInputError(f'{flag} {text}: not a number') from None
        if not math.isfinite(value) or not low <= value <= high:
            bounds = ' and '.join(b for b in (f'>= {low}' if low > -math.inf else '',
                                              f'<= {high}' if high < math.inf else '') if b)
            raise UserInputError(f'{flag} {text}: must be a finite number' + (f' {bounds}' if bounds else ''))
        return value
    return parse


short_side_arg = int_arg('--size', MIN_SIZE, special=-1, special_means='full size')


def top_k_arg(text):
    """--top_k value: an integer >= 1, or "none" for a dense read of every memory pixel."""
    if text.lower() == 'none':
        return None
    try:
        value = int(text)
    except ValueError:
        raise UserInputError(f'--top_k {text}: not an integer or "none"') from None
    if value < 1:
        raise UserInputError(f'--top_k {text}: must be an integer >= 1, or "none" (read every memory pixel)')
    return value


def add_scorer_args(parser):
    """--workers, --output and --no_progress of the stand-alone scorers (scripts/evaluate_*.py)."""
    parser.add_argument('--workers', type=int_arg('--workers', 1), default=None,
                        help='processes (default: all cores)')
    parser.add_argument('--output', default=None, help='folder for the CSV files (default: --results)')
    parser.add_argument('--no_progress', action='store_true', help='no progress bar')


def add_skip_bad_videos_arg(parser):
    parser.add_argument('--skip_bad_videos', action='store_true',
                        help='segment the videos that pass the up-front checks, list the others at the end '
                             'and exit with code 2 (default: refuse to start while any video is bad)')


class _FlagNeedingMatplotlib(argparse.Action):
    """A store_true flag that checks at parse time, before any compute, that matplotlib is installed
    (it is imported only when the plot is drawn)."""

    def __init__(self, option_strings, dest, **kwargs):
        kwargs['default'] = False   # argparse passes default=None for an option without one
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if importlib.util.find_spec('matplotlib') is None:
            raise UserInputError(f'{option_string} needs matplotlib (pip install matplotlib==3.11.2)')
        setattr(namespace, self.dest, True)


def add_memory_log_arg(parser, where):
    parser.add_argument('--save_memory_log', action=_FlagNeedingMatplotlib,
                        help='write every frame\'s quality scores and memory decision as a CSV and a PNG plot '
                             f'to {where}, once the video is complete (see README)')

