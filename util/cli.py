"""Shared command-line plumbing: device choice, autocast, clean error exits."""
import contextlib
import sys
import warnings

import torch

from util.errors import UserInputError


def add_device_args(parser):
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        help='cpu, cuda or cuda:N (default: cuda when available)')
    parser.add_argument('--amp', action='store_true', help='fp16 autocast (CUDA only)')


def resolve_device(name):
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise UserInputError(f'--device {name}: {e}') from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise UserInputError(f'--device {name}: CUDA is not available on this machine (use --device cpu)')
    return device


def autocast(device, enabled):
    """fp16 autocast on CUDA; a no-op elsewhere (CPU fp16 is slower and less accurate)."""
    if enabled and device.type != 'cuda':
        warnings.warn('--amp only applies on CUDA; running in fp32')
    if enabled and device.type == 'cuda':
        return torch.autocast('cuda', dtype=torch.float16)
    return contextlib.nullcontext()


def run_main(main):
    """Runs a CLI entry point, turning UserInputError into a one-line message and exit code 2."""
    try:
        main()
    except UserInputError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        sys.exit(130)
