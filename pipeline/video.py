"""One video through the streaming pipeline: decode ahead, segment, write behind, resume mid-video.

    run = VideoRun(net, job, options)
    for frame in run:          # one Frame per frame of the video, as soon as it is done
        ...                    # close the iterator (or break and let it go) to cancel
    run.segmenter              # its memory, quality scores, summary

or run.run(progress=callback, cancel=event.is_set) with a callback per frame and a cancel check.

Frames are decoded one ahead in a thread and masks written behind in another
(util/background.py), with bounded queues: memory stays flat however long the
video is. The masks folder (and the overlay video) appear only once every
frame is written. With `resume_every` N, the engine state is saved every N
frames beside the partial folder, after every mask before it is on disk; a
killed run started again goes on after the last saved frame, and the finished
folder is byte-identical to an uninterrupted run's. The state file is removed
when the video is complete.
"""
import os
import time
from contextlib import ExitStack, closing, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Set, Tuple

import numpy as np

from qdmn import InputError, Segmenter
from util.background import BackgroundWriter, prefetch
from util.errors import UserInputError
from util.image_io import read_label_mask, write_palette_png
from util.iteration import with_last_flag
from util.output import atomic_folder, partial_folder
from util.overlay import Mp4Writer, blend, side_by_side
from util.palette import DAVIS_PALETTE

# Frames between two saved states by default: a minute or two of CPU work at 480p, a few seconds on a
# GPU; short videos (DAVIS: most under 100 frames) never pay for a state (docs/api.md).
RESUME_EVERY = 100


@dataclass(frozen=True)
class RunOptions:
    """How to segment: the engine preset and its overrides, the processing size, the run's extras."""
    preset: str = 'davis'
    overrides: Dict = field(default_factory=dict)   # Segmenter keyword overrides (top_k, mem_freq, ...)
    size: Optional[int] = None                      # processing short side (None: frames as they are)
    resume_every: int = RESUME_EVERY                # frames between saved states (0: no resuming)
    save_memory_log: bool = False

    def segmenter(self, net, num_objects=None, size=None):
        """A Segmenter with these settings; `size` replaces the options' (a per-video choice)."""
        return Segmenter(net, preset=self.preset, size=self.size if size is None else size,
                         num_objects=num_objects, memory_log=self.save_memory_log, **self.overrides)


@dataclass
class Overlay:
    """An mp4 of the masks over the frames, written beside the masks (complete or absent)."""
    path: str
    fps: float
    side_by_side: bool = False


@dataclass
class VideoJob:
    """One video to segment and where its outputs go.

    frames() opens the video: (frame name, HxWx3 uint8 RGB) in order, decoded on demand.
    labels: {frame index: HxW object ids at the frame size} of the labelled frames.
    written: the names of the frames whose masks are written (None: every frame).
    """
    name: str
    frames: Callable[[], Iterator[Tuple[str, np.ndarray]]]
    labels: Dict[int, np.ndarray]
    masks_dir: str
    frame_names: Optional[List[str]] = None   # every frame's name, when known in advance
    frame_count: Optional[int] = None       # how many frames (None: unknown; a video file's count may be off)
    written: Optional[Set[str]] = None
    palette: np.ndarray = field(default_factory=lambda: DAVIS_PALETTE)
    num_objects: Optional[int] = None       # all objects of the video, when known (the youtube protocol)
    size: Optional[int] = None              # processing short side for this video (None: the options')
    log_folder: Optional[str] = None        # with RunOptions.save_memory_log: <log_folder>/<log_name>.csv, .png
    log_name: Optional[str] = None
    log_title: Optional[str] = None         # the memory-log plot's title (default: log_name)
    overlay: Optional[Overlay] = None
    write_mask: Optional[Callable] = None   # write_mask(path, ids, palette); None: util.image_io.write_palette_png

    @property
    def state_path(self):
        return state_file(self.masks_dir)


class BadFrame(InputError):
    """A frame of the video could not be read while segmenting; `index` says which."""

    def __init__(self, message, index):
        super().__init__(message)
        self.index = index


class Cancelled(Exception):
    """VideoRun.run() stopped because cancel() said so."""


class Frame(NamedTuple):
    index: int
    name: str
    rgb: np.ndarray
    ids: Optional[np.ndarray]   # HxW uint8 object ids (None for frames an earlier run did, unless re-read)
    segmented: bool             # False: done by an earlier run (resumed)


def state_file(masks_dir):
    """Where the engine state of a video in progress is saved: beside its partial masks folder."""
    return partial_folder(masks_dir) + '.state'


class VideoRun:
    """Iterating segments the video (see the module docstring); then `segmented` (frames segmented
    by this run), `resumed_at` (first frame it segmented), `seconds`, `outputs` (paths written)."""

    def __init__(self, net, job, options, report=print):
        self.net, self.job, self.options, self.report = net, job, options, report
        self.segmenter = options.segmenter(net, job.num_objects, job.size)
        self.segmented = 0
        self.resumed_at = 0
        self.seconds = 0.0
        self.outputs = []

    def __iter__(self):
        job, seg = self.job, self.segmenter
        start = self._restore() if self.options.resume_every else self._discard_state()
        self.resumed_at = start
        names = []
        started = time.perf_counter()
        with ExitStack() as stack:
            partial = stack.enter_context(atomic_folder(job.masks_dir, resume=start > 0,
                                                        keep_on_error=lambda: os.path.isfile(job.state_path)))
            overlay = stack.enter_context(self._overlay())
            writer = stack.enter_context(BackgroundWriter())
            frames = stack.enter_context(closing(prefetch(job.frames())))
            for (name, rgb), is_last in with_last_flag(self._read(frames)):
                index = len(names)
                names.append(name)
                done_before = index < start
                ids = self._saved_mask(partial, name) if done_before else seg.step(rgb, job.labels.get(index))
                if not done_before and (job.written is None or name in job.written):
                    writer.submit(job.write_mask or write_palette_png, os.path.join(partial, name + '.png'), ids,
                                  job.palette)
                if overlay is not None:
                    writer.submit(self._write_overlay, overlay, rgb, ids)
                if not done_before:
                    self.segmented += 1
                    self.seconds = time.perf_counter() - started
                    if self.options.resume_every and not is_last and self.segmented % self.options.resume_every == 0:
                        writer.wait()   # the state may only say "done" of masks on disk
                        seg.save(job.state_path)
                yield Frame(index, name, rgb, ids, not done_before)
            if len(names) <= start:
                raise InputError(f'{job.name}: {len(names)} frames, but the saved state is at frame {start - 1} '
                                 f'(another video?); delete {job.state_path} to start it over')
            seg.finish()
            # before the masks are in place: a complete masks folder always has its log beside it
            logs = [] if seg.memory_log is None else [*seg.memory_log.write(job.log_folder, job.log_name, names,
                                                                            job.log_title)]
        self._discard_state()
        self.seconds = time.perf_counter() - started
        self.outputs = [job.masks_dir] + ([job.overlay.path] if job.overlay else []) + logs

    def run(self, progress=None, cancel=None):
        """Runs the whole video: progress(frame) after every Frame; when cancel() is true after a
        frame, stops and raises Cancelled (the partial output is removed unless a saved state keeps
        it for resuming). Returns self."""
        with closing(iter(self)) as frames:
            for frame in frames:
                if progress is not None:
                    progress(frame)
                if cancel is not None and cancel():
                    raise Cancelled(f'{self.job.name}: cancelled after frame {frame.index}')
        return self

    def _read(self, frames):
        """The frames, an unreadable one raised as BadFrame with its index."""
        index = 0
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                return
            except UserInputError as e:
                raise BadFrame(str(e), index) from None
            yield frame
            index += 1

    def _restore(self):
        """Loads the state an interrupted run saved; returns the first frame left to segment (0: none)."""
        path = self.job.state_path
        if not os.path.isfile(path) or not os.path.isdir(partial_folder(self.job.masks_dir)):
            return self._discard_state()
        try:
            self.segmenter.load(path)
        except InputError as e:
            self.report(f'{self.job.name}: {e}; starting over from the first frame')
            return self._discard_state()
        start = self.segmenter.frame_index + 1
        self.report(f'{self.job.name}: resuming after frame {start - 1} '
                    f'(an earlier run saved its state there: {path})')
        return start

    def _discard_state(self):
        if os.path.isfile(self.job.state_path):
            os.remove(self.job.state_path)
        return 0

    def _saved_mask(self, partial, name):
        """The mask an earlier run wrote (only the overlay needs it again); None when not written."""
        path = os.path.join(partial, name + '.png')
        written = self.job.written is None or name in self.job.written
        if not written:
            return None
        if not os.path.isfile(path):
            raise InputError(f'{path}: missing, though the saved state says it was written; delete '
                             f'{self.job.state_path} to start the video over')
        return read_label_mask(path)[0] if self.job.overlay is not None else None

    def _overlay(self):
        return nullcontext() if self.job.overlay is None else Mp4Writer(self.job.overlay.path, self.job.overlay.fps)

    def _write_overlay(self, mp4, rgb, ids):
        overlay = blend(rgb, ids)
        mp4.write(side_by_side(rgb, overlay) if self.job.overlay.side_by_side else overlay)

