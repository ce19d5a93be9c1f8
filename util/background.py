"""I/O overlapped with compute: frames decoded ahead and results written behind, each in one thread.

Both queues are bounded, so memory stays flat however long the video is,
and every error of the background thread is raised in the calling thread.
"""
import queue
import threading

_END = object()
_POLL = 0.1  # seconds between checks of the stop flag while a queue is full


def _put(items, item, stop):
    """Puts `item` unless `stop` is set first; returns whether it was put."""
    while not stop.is_set():
        try:
            items.put(item, timeout=_POLL)
            return True
        except queue.Full:
            pass
    return False


def prefetch(iterable, depth=2):
    """Yields the items of `iterable`, which a background thread produces up to `depth` ahead.

    An exception of the producer is raised here, after the items before it.
    Closing this generator (the consumer stops early or fails) stops the producer.
    """
    items = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for item in iterable:
                if not _put(items, (item, None), stop):
                    return
            _put(items, (_END, None), stop)
        except BaseException as e:  # noqa: B036 - handed to the consumer, which raises it
            _put(items, (None, e), stop)
        finally:
            if hasattr(iterable, 'close'):  # a generator releases its file or decoder now, in this thread
                iterable.close()

    thread = threading.Thread(target=produce, name='prefetch', daemon=True)
    thread.start()
    try:
        while True:
            item, error = items.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        thread.join()


class BackgroundWriter:
    """Runs write jobs in order in one background thread, with at most `depth` of them waiting.

    Used as a context manager: leaving the block normally waits for every job
    and raises the first job's error, if any (so a folder written through it
    is complete before it is renamed); leaving it with an exception drops the
    jobs still waiting. After a failed job, the next submit() raises its error.
    """

    def __init__(self, depth=4):
        self.jobs = queue.Queue(maxsize=depth)
        self.error = None
        self.cancelled = False
        self.thread = threading.Thread(target=self._run, name='writer', daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def submit(self, fn, *args):
        self._raise_error()
        self.jobs.put((fn, args))

    def wait(self):
        """Blocks until every job submitted so far has run; raises the first job's error, if any."""
        self.jobs.join()
        self._raise_error()

    def _run(self):
        while True:
            job = self.jobs.get()
            try:
                if job is None:
                    return
                if self.error is None and not self.cancelled:
                    fn, args = job
                    try:
                        fn(*args)
                    except BaseException as e:  # noqa: B036 - raised in the caller's thread
                        self.error = e
            finally:
                self.jobs.task_done()

    def _raise_error(self):
        if self.error is not None:
            raise self.error

    def __exit__(self, exc_type, exc, tb):
        self.cancelled = exc_type is not None
        self.jobs.put(None)
        self.thread.join()
        if exc_type is None:
            self._raise_error()
        return False
