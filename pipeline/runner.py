"""The dataset runner of the evaluation command lines: check every video, share them among the
processes of a torchrun job, segment each through VideoRun, report progress and totals.

    skipped = run_videos(names, open_job, options, RunSetup(model, device, amp, ...))

open_job(name) opens one video and returns its VideoJob, raising UserInputError for a bad
video; it runs once per video on rank 0 before anything is segmented (all problems are
reported together), and again where the video is segmented.
"""
import contextlib
import dataclasses
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import NamedTuple, Optional

from pipeline.progress import dataset_bar
from pipeline.video import BadFrame, VideoRun
from qdmn import PRESETS
from qdmn.network import ensure_model, load_network
from util.device import peak_memory, precision
from util.distributed import Launch, eval_processes
from util.errors import UserInputError, check_each, print_error_line
from util.output import check_writable, is_complete, output_lock
from util.run_settings import check_same_settings, forget_if_alone, mask_settings, write_settings


@dataclass(frozen=True)
class RunSetup:
    """Where and how to run: the checkpoint, the device, the output root, the bad-video policy."""
    model: str
    device: str = 'cpu'
    amp: bool = False
    output: str = '.'
    skip_bad_videos: bool = False
    local_rank: Optional[int] = None   # the legacy torch.distributed.launch's --local_rank
    fixed_shapes: bool = True          # every object on the first frame (qdmn.load_network)


class ShareReport(NamedTuple):
    videos: int
    frames: int
    seconds: float   # segmenting, after the network is loaded
    memory: str
    precision: str   # fp32, fp16 or bf16
    failed: dict = {}   # {video: problem} of the videos with a bad frame, skipped (--skip_bad_videos)


def written_names(job):
    """The names of the frames whose masks `job` writes, in order."""
    return [n for n in job.frame_names if job.written is None or n in job.written]


def run_videos(names, open_job, options, setup, checking=lambda names: names):
    """Segments every video of `names` whose masks are not complete yet; returns
    ({video: names of the frames written} of the good videos, {video: problem} of the skipped ones).

    Under torchrun the processes share the videos: rank 0 checks them and fetches the model,
    every process segments its share, rank 0 prints the totals. checking(names) may wrap the
    names in a progress bar for the checks.
    """
    def prepare(group, held):   # rank 0 only; the other processes wait for its result
        def check(name):
            job = open_job(name)
            return written_names(job), job.frame_count, job.masks_dir

        checked, skipped = check_each(checking(names), check, setup.skip_bad_videos)
        check_writable(setup.output)
        held.enter_context(output_lock(setup.output))   # one job per output, until every process is done
        expected = {name: written for name, (written, _, _) in checked.items()}
        todo = {name: length for name, (written, length, masks_dir) in checked.items()
                if not is_complete(masks_dir, written)}
        model = ensure_model(setup.model) if todo else None
        # the settings that make the masks, recorded with them: a resumed run never mixes settings
        settings = mask_settings(model or setup.model, precision(group.device, setup.amp),
                                 {**dataclasses.asdict(PRESETS[options.preset]), **options.overrides}, options.size)
        check_same_settings(setup.output, settings, results_exist=False,
                            remedy='use another --output (or delete it to start over)')
        if todo:
            write_settings(setup.output, settings)
        if len(todo) < len(checked):
            print(f'{len(checked) - len(todo)} of {len(checked)} videos already complete in {setup.output}: skipped')
        return expected, todo, skipped, model

    created = not os.path.exists(setup.output)
    try:
        return _run(prepare, open_job, options, setup)
    except BaseException:
        if Launch(setup.local_rank).is_main:   # the one process that wrote the record
            forget_if_alone(setup.output, remove_folder=created)   # a run that made nothing leaves nothing
        raise


def _run(prepare, open_job, options, setup):
    with eval_processes(setup.device, setup.local_rank) as group, contextlib.ExitStack() as held:
        expected, todo, skipped, model = group.on_main(lambda: prepare(group, held))
        if todo:
            share = group.share(todo)
            start = time.perf_counter()
            reports = group.together(lambda: _segment(group, share, todo, open_job, options, model, setup))
            if group.is_main:
                print_totals(reports, time.perf_counter() - start)
                failed = {name: problem for r in reports for name, problem in r.failed.items()}
                expected = {name: written for name, written in expected.items() if name not in failed}
                skipped = {**skipped, **failed}
    return expected, skipped


def _segment(group, names, lengths, open_job, options, model, setup):
    if not names:
        return ShareReport(0, 0, 0.0, peak_memory(group.device), '-')
    net = load_network(model, group.device, setup.amp, setup.fixed_shapes)
    done, segmented, start = 0, 0, time.perf_counter()
    failed = {}   # {video: problem} of the videos with a bad frame (--skip_bad_videos)
    with dataset_bar(group.world_size, sum(lengths[n] for n in names)) as bar:
        for name in names:
            if group.failed_elsewhere():
                return None   # the job ends with the other process's error, the videos done so far kept
            run, done_before = VideoRun(net, open_job(name), options), done
            try:
                with sigterm_ends_the_run(), contextlib.closing(iter(run)) as frames:
                    for frame in frames:
                        done += 1
                        segmented += frame.segmented
                        if bar is not None:
                            bar.update(done, video=name)
            except BadFrame as e:
                problem = f'{name}: frame {e.index}: {e}'
                if not setup.skip_bad_videos:
                    raise UserInputError(problem) from None
                failed[name] = problem
                done = done_before + lengths[name]   # the bar goes on with the next video
                _print(group, bar, f'{problem}; skipped (--skip_bad_videos)')
                continue
            _print(group, bar, f'{name}: {run.segmented} frames in {run.seconds:.1f} s; '
                               f'{run.segmenter.memory_summary()}')
    return ShareReport(len(names) - len(failed), segmented, time.perf_counter() - start, peak_memory(group.device),
                       net.precision, failed)


def _print(group, bar, line):
    if bar is None:
        print(f'[rank {group.rank}] {line}', flush=True)
    else:
        print(line)


@contextlib.contextmanager
def sigterm_ends_the_run():
    """While a video is segmented, SIGTERM (torchrun stopping the job, a scheduler's preemption, kill)
    raises SystemExit in the main thread, so that its partial folder is removed (or kept with its saved
    state) as on any error; by default Python dies on SIGTERM without any cleanup. Elsewhere (waiting
    for the others, exiting after another process's error) there is nothing to clean up."""
    def terminate(signum, frame):
        print_error_line('terminated (SIGTERM): complete videos are kept, unfinished ones removed '
                         '(or kept with their saved state for a re-run to resume)')
        raise SystemExit(128 + signal.SIGTERM)

    if threading.current_thread() is not threading.main_thread():
        yield   # only the main thread may set a handler (the tests' in-process runs are main-thread ones)
        return
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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

