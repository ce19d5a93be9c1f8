"""Iterating a stream with one item of look-ahead."""


def with_last_flag(iterable):
    """Yields (item, is_last) with one item of look-ahead."""
    it = iter(iterable)
    try:
        current = next(it)
    except StopIteration:
        return
    for nxt in it:
        yield current, False
        current = nxt
    yield current, True
