"""Downloads the published QDMN s012 checkpoint into saves/s012.pth and verifies it."""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from util.errors import run_main  # noqa: E402
from qdmn.network import verify_checkpoint  # noqa: E402
from util.download import DEFAULT_MODEL, download_s012  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--output', default=DEFAULT_MODEL, help=f'where to save it (default {DEFAULT_MODEL})')
    parser.add_argument('--force', action='store_true', help='download again even if the file exists')
    args = parser.parse_args()
    if os.path.isfile(args.output) and not args.force:
        print(f'{args.output} already exists (use --force to download again)')
        return
    print(f'saved and verified: {download_s012(verify_checkpoint, args.output)}')


if __name__ == '__main__':
    run_main(main)
