"""One exception type for every problem a user can fix, and the CLI wrappers that report it."""
import atexit
import os
import sys
import threading
import traceback
import warnings


class UserInputError(Exception):
    """Raised with a one-line message naming the file and the problem; CLIs print it and exit 2."""


def check_each(names, check, skip_bad, what='videos'):
    """Runs check(name) on every name (any iterable, e.g. wrapped in a progress bar) before any work starts.

    Returns ({name: result} of the good ones, {name: problem} of the bad ones).
    Unless skip_bad, any problem stops the run with all of them in one message.
    """
    results, problems = {}, {}
    for name in names:
        try:
            results[name] = check(name)
        except UserInputError as e:
            problems[name] = str(e)
    if problems and not skip_bad:
        raise UserInputError(f'{len(problems)} of {len(results) + len(problems)} {what} cannot be processed '
                             '(--skip_bad_videos runs the others): ' + '; '.join(problems.values()))
    return results, problems


def report_skipped(problems):
    """Ends a --skip_bad_videos run that skipped something: the list, and a non-zero exit."""
    if problems:
        raise UserInputError(f'{len(problems)} video(s) skipped (--skip_bad_videos): ' + '; '.join(problems.values()))


def print_error_line(message):
    """`error: message` on stderr in one write: with PYTHONUNBUFFERED, print() writes the text and
    its newline separately, and the lines of several processes sharing a terminal would run together."""
    sys.stderr.write(f'error: {message}\n')
    sys.stderr.flush()


def out_of_memory_line(error):
    """The one line for a run out of GPU memory (naming the options that need less), else None."""
    import torch
    if not isinstance(error, torch.OutOfMemoryError):
        return None
    from util.device import out_of_memory_message   # util.device imports this module
    return out_of_memory_message(error)


def print_error(error):
    """Prints a UserInputError (or a run out of GPU memory) as its one `error:` line and anything
    else with its traceback;
    returns the exit code (2 for bad input, 1 otherwise)."""
    if isinstance(error, UserInputError):
        print_error_line(error)
        return 2
    out_of_memory = out_of_memory_line(error)
    if out_of_memory:
        print_error_line(out_of_memory)
        return 1
    traceback.print_exception(error)
    return 1


def run_main(main):
    """Runs a CLI entry point, turning UserInputError into a one-line message and exit code 2
    (running out of GPU memory: a line naming the options that need less, exit code 1).

    Warnings print as one `warning: ...` line too, without Python's file and source line.
    """
    warnings.formatwarning = lambda message, *args, **kwargs: f'warning: {message}\n'
    try:
        main()
    except UserInputError as e:
        sys.exit(print_error(e))
    except Exception as e:
        if not out_of_memory_line(e):
            raise
        sys.exit(print_error(e))
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        sys.exit(130)


def run_cli(main):
    """run_main for a command line's __main__: once `main` has returned, the process ends at
    once (atexit handlers run, outputs flushed) instead of tearing the interpreter down, which
    with torch loaded takes about half a second, a twentieth of a 12-frame run (docs/performance.md).
    Not while another non-daemon thread runs: the interpreter would wait for it."""
    run_main(main)
    if all(t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
