"""Output folders that are complete or absent: what makes evaluation runs resumable."""
import contextlib
import os
import shutil
import tempfile

from util.errors import UserInputError


def check_writable(folder):
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise UserInputError(f'{folder}: output folder is not writable ({e.strerror})') from None


def is_complete(folder, frame_names):
    return os.path.isdir(folder) and all(
        os.path.isfile(os.path.join(folder, n + '.png')) for n in frame_names)


@contextlib.contextmanager
def atomic_folder(final):
    """Yields a hidden sibling folder that replaces `final` when the block ends normally.

    On an error (or an abandoned generator) the partial folder is removed,
    so `final` is either complete or untouched.
    """
    partial = os.path.join(os.path.dirname(final), f'.{os.path.basename(final)}.partial')
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
