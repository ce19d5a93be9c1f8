"""Progress bars of the command lines (on stderr; progressbar2)."""
import contextlib
import sys

import progressbar


def video_bar(total):
    """One video: frames done, frames/s and ETA (elapsed time when the length is unknown).

    fd is passed explicitly: progressbar2's default is the sys.stderr of import time.
    """
    rate = progressbar.FileTransferSpeed(format='%(scaled)5.1f %(prefix)sframes/s',
                                         inverse_format='%(scaled)5.1f s/frame')
    if total is None:
        widgets = [progressbar.Counter('%(value)d frames'), ' ', rate, ' ', progressbar.Timer()]
        return progressbar.ProgressBar(max_value=progressbar.UnknownLength, widgets=widgets, fd=sys.stderr)
    widgets = [progressbar.SimpleProgress(), ' ', progressbar.Bar(), ' ', rate, ' ', progressbar.ETA()]
    # a container's frame count can be off by a few: never fail on it
    return progressbar.ProgressBar(max_value=total, widgets=widgets, max_error=False, fd=sys.stderr)


def dataset_bar(world_size, total):
    """A bar over a process's videos; None-yielding when several processes each print a line per
    video instead (their bars would overwrite each other)."""
    if world_size > 1:
        return contextlib.nullcontext()
    # `with`: the bar ends its line also on an error or Ctrl-C, so the message gets a line of its own
    return progressbar.ProgressBar(max_value=max(total, 1), prefix='{variables.video} ',
                                   variables={'video': '-'}, redirect_stdout=True)
