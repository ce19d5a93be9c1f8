"""Output folders and files that are complete or absent, and owned by one job: what makes evaluation runs
resumable and safe to run beside each other."""
import contextlib
import fcntl
import os
import shutil
import socket
import tempfile
import time
import warnings

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
    The partial folder belongs to this run while the block runs (a lock on it): another run
    refuses it instead of writing into it or deleting it; one that died leaves it to be reclaimed.
    """
    partial = partial_folder(final)
    parent = os.path.dirname(final) or '.'
    created_parent = not os.path.isdir(parent)
    try:
        os.makedirs(partial, exist_ok=True)
    except OSError as e:
        raise write_error(final, e) from None
    with _owned(partial):
        if not resume:
            _empty(partial)

        def remove_partial():
            shutil.rmtree(partial, ignore_errors=True)
            if created_parent:   # leave no empty output folder behind; other processes may remove it too
                with contextlib.suppress(OSError):
                    os.rmdir(parent)

        try:
            yield partial
        except BaseException:
            if not keep_on_error():
                remove_partial()
            raise
        try:
            shutil.rmtree(final, ignore_errors=True)
            os.replace(partial, final)
        except OSError as e:
            remove_partial()
            raise write_error(final, e) from None


@contextlib.contextmanager
def _owned(partial):
    """Holds an exclusive lock on the folder `partial` (released by the system when the process dies)."""
    fd = os.open(partial, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserInputError(f'{partial}: being written by another running job (two jobs on one output?); '
                                 'nothing of it was touched') from None
        except OSError:
            pass   # a file system without locks: the output lock (output_lock) is all there is
        yield
    finally:
        os.close(fd)


def _empty(folder):
    """Removes what an earlier (dead) run left in `folder`."""
    for entry in os.scandir(folder):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(entry.path)


LOCK = '.qdmn.lock'


@contextlib.contextmanager
def output_lock(folder, report=print):
    """Holds <folder>/.qdmn.lock for the block (the folder is created if needed): one job per output.

    Raises UserInputError naming the holder when a live process holds it (on this or, through the
    file system's locks, another machine). A lock left by a dead process (killed with SIGKILL, a
    lost node) is taken over with a line saying so. The lock file is removed at the end.
    """
    created = not os.path.isdir(folder)
    path = os.path.join(folder, LOCK)
    try:
        os.makedirs(folder, exist_ok=True)
        fd = _locked_file(path, folder)
    except OSError as e:
        raise write_error(path, e) from None
    try:
        with os.fdopen(os.dup(fd), 'r+') as f:
            previous = f.read().strip()
            if previous:
                report(f'{folder}: taking over the lock of a job that is gone ({previous})')
            f.seek(0)
            f.truncate()
            f.write(f'pid {os.getpid()} on {socket.gethostname()}, since {time.strftime("%Y-%m-%d %H:%M:%S")}\n')
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(folder)   # only when the run left nothing in it


def _locked_file(path, folder):
    """An open descriptor of `path`, locked by this process."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with os.fdopen(fd) as f:
                holder = f.read().strip() or 'starting'
            raise UserInputError(f'{folder}: in use by another job ({holder}); wait for it to end or use '
                                 'another --output') from None
        except OSError as e:   # a file system without locks: nothing to hold
            warnings.warn(f'{path}: cannot lock ({e.strerror}); make sure no other job writes to {folder}')
            return fd
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)   # the holder removed the file as we locked it: lock the new one


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
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise write_error(path, e) from None
        raise


def write_error(path, error):
    """The UserInputError of an output that could not be written (a full disk, a read-only folder, ...)."""
    return UserInputError(f'{path}: cannot write ({error.strerror or error}); nothing of it was kept')
