"""The loop of the evaluation CLIs: this process's share of the videos, its progress, and the totals."""
import contextlib
import time
from typing import NamedTuple

import progressbar

from util.device import peak_memory


class ShareReport(NamedTuple):
    videos: int
    frames: int
    seconds: float   # segmenting, after the network is loaded
    memory: str
    precision: str   # fp32, fp16 or bf16 (util.device.precision)


def segment_share(group, lengths, load_network, segment):
    """Segments this process's share of the videos `lengths` ({video: frames to process}).

    load_network() returns (network, precision); segment(network, video) is a generator
    yielding once per processed frame (closed early if another process fails).
    Rank 0 prints the totals of every process.
    """
    names = group.share(lengths)
    start = time.perf_counter()
    reports = group.together(lambda: _segment(group, names, lengths, load_network, segment))
    if group.is_main:
        print_totals(reports, time.perf_counter() - start)


def _segment(group, names, lengths, load_network, segment):
    if not names:
        return ShareReport(0, 0, 0.0, peak_memory(group.device), '-')
    network, precision = load_network()
    done, start = 0, time.perf_counter()
    with _progress_bar(group, sum(lengths[n] for n in names)) as bar:
        for name in names:
            video_start, video_done = time.perf_counter(), done
            with contextlib.closing(segment(network, name)) as frames:
                for _ in frames:
                    done += 1
                    if bar is not None:
                        bar.update(done, video=name)
                    if group.failed_elsewhere():
                        return None   # the job ends with the other process's error
            if bar is None:
                print(f'[rank {group.rank}] {name}: {done - video_done} frames in '
                      f'{time.perf_counter() - video_start:.1f} s', flush=True)
    return ShareReport(len(names), done, time.perf_counter() - start, peak_memory(group.device), precision)


def _progress_bar(group, total):
    """A bar for a single process; several processes each print a line per video instead
    (their bars would overwrite each other)."""
    if group.world_size > 1:
        return contextlib.nullcontext()
    # `with`: the bar ends its line also on an error or Ctrl-C, so the message gets a line of its own
    return progressbar.ProgressBar(max_value=max(total, 1), prefix='{variables.video} ',
                                   variables={'video': '-'}, redirect_stdout=True)


def print_totals(reports, wall_seconds):
    def line(r):
        return (f'{r.videos} videos, {r.frames} frames in {r.seconds:.1f} s: '
                f'{r.frames / max(r.seconds, 1e-9):.2f} FPS ({r.precision}); {r.memory}')

    if len(reports) == 1:
        print(line(reports[0]))
        return
    for rank, report in enumerate(reports):
        print(f'rank {rank}: {line(report)}')
    frames = sum(r.frames for r in reports)
    print(f'{sum(r.videos for r in reports)} videos, {frames} frames in {wall_seconds:.1f} s on '
          f'{len(reports)} processes: {frames / max(wall_seconds, 1e-9):.2f} FPS', flush=True)
