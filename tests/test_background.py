"""Frames read ahead and results written behind: order, bounded queues, errors, early stops."""
import threading
import time

import pytest

from util.background import BackgroundWriter, prefetch


def test_prefetch_keeps_order_and_stays_a_bounded_distance_ahead():
    produced = []

    def source():
        for i in range(20):
            produced.append(i)
            yield i

    seen = []
    for item in prefetch(source(), depth=2):
        time.sleep(0.01)   # a slow consumer: the producer must wait, not run away
        # at most `depth` queued + the one being handed over + the one the producer holds
        assert len(produced) - len(seen) <= 4
        seen.append(item)
    assert seen == list(range(20))


def test_prefetch_raises_the_producers_error_after_the_items_before_it():
    def source():
        yield 1
        yield 2
        raise ValueError('frame 3 is unreadable')

    seen = []
    with pytest.raises(ValueError, match='frame 3 is unreadable'):
        for item in prefetch(source()):
            seen.append(item)
    assert seen == [1, 2]


def test_closing_the_consumer_stops_the_producer():
    stopped = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            stopped.set()

    stream = prefetch(endless(), depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    before = {t.name for t in threading.enumerate()}
    assert 'prefetch' in before
    stream.close()
    assert 'prefetch' not in {t.name for t in threading.enumerate()}


def test_writer_runs_every_job_in_order_before_the_block_ends():
    done = []
    with BackgroundWriter(depth=2) as writer:
        for i in range(10):
            writer.submit(lambda i: (time.sleep(0.005), done.append(i)), i)
    assert done == list(range(10))


def test_writer_error_is_raised_by_the_next_submit_or_at_the_end():
    def fail():
        raise OSError(28, 'No space left on device')

    with pytest.raises(OSError, match='No space left'):
        with BackgroundWriter() as writer:
            writer.submit(fail)
    ran = []
    with pytest.raises(OSError, match='No space left'):
        with BackgroundWriter() as writer:
            writer.submit(fail)
            time.sleep(0.1)
            writer.submit(ran.append, 'never')   # raises: the failure stops the stream of writes
    assert ran == []


def test_writer_drops_waiting_jobs_when_the_block_fails():
    gate = threading.Event()
    ran = []
    with pytest.raises(KeyError):
        with BackgroundWriter(depth=8) as writer:
            writer.submit(gate.wait)
            for i in range(5):
                writer.submit(ran.append, i)
            threading.Timer(0.3, gate.set).start()  # the first job ends after the block has failed
            raise KeyError('the engine failed')
    assert ran == []


def test_wait_returns_once_every_job_so_far_has_run_and_raises_a_jobs_error():
    done = []

    def slow(i):
        time.sleep(0.02)
        done.append(i)

    with BackgroundWriter() as writer:
        for i in range(3):
            writer.submit(slow, i)
        writer.wait()
        assert done == [0, 1, 2]   # what a saved resume state may count on
        writer.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            writer.wait()
        writer.error = None   # handled here; the block may end normally
