"""Output folders and files that are complete or absent: what makes evaluation runs resumable."""
import contextlib
import os
import shutil
import tempfile

from util.errors import UserInputError


def check_writable(folder):
    """Checks that `folder` can be written (or created) without creating it, so a run that
    fails before its first output leaves no empty folder behind."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    try:
        if not os.path.isdir(existing):
            raise NotADirectoryError(20, f'{existing} is a file')
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise UserInputError(f'{folder}: output folder is not writable ({e.strerror})') from None


def is_complete(folder, frame_names):
    return os.path.isdir(folder) and all(
        os.path.isfile(os.path.join(folder, n + '.png')) for n in frame_names)


def partial_folder(final):
    """The hidden sibling that `atomic_folder` fills before renaming it to `final`."""
    return os.path.join(os.path.dirname(final), f'.{os.path.basename(final)}.partial')


@contextlib.contextmanager
def atomic_folder(final, resume=False, keep_on_error=lambda: False):
    """Yields a hidden sibling folder that replaces `final` when the block ends normally.

    On an error (or an abandoned generator) the partial folder is removed,
    so `final` is either complete or untouched; unless keep_on_error() says
    a later run can resume it. `resume` keeps what an earlier run left there.
    """
    partial = partial_folder(final)
    parent = os.path.dirname(final) or '.'
    created_parent = not os.path.isdir(parent)
    if not resume:
        shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial, exist_ok=True)
    try:
        yield partial
    except BaseException:
        if keep_on_error():
            raise
        shutil.rmtree(partial, ignore_errors=True)
        if created_parent and not os.listdir(parent):  # leave no empty output folder behind
            os.rmdir(parent)
        raise
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)


@contextlib.contextmanager
def atomic_file(path):
    """Yields a hidden temporary path beside `path` that replaces it when the block ends normally.

    On an error the temporary file is removed: `path` is complete or untouched. The caller
    creates the file (not mkstemp, whose files are private to the owner), so the umask applies.
    """
    tmp = os.path.join(os.path.dirname(path), f'.{os.path.basename(path)}.{os.getpid()}.partial')
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
