"""One exception type for every problem a user can fix, and the CLI wrapper that reports it."""
import sys
import warnings


class UserInputError(Exception):
    """Raised with a one-line message naming the file and the problem; CLIs print it and exit 2."""


def run_main(main):
    """Runs a CLI entry point, turning UserInputError into a one-line message and exit code 2.

    Warnings print as one `warning: ...` line too, without Python's file and source line.
    """
    warnings.formatwarning = lambda message, *args, **kwargs: f'warning: {message}\n'
    try:
        main()
    except UserInputError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        sys.exit(130)
