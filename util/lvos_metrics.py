"""LVOS semi-supervised evaluation (J, F, V; seen / unseen), our own implementation.

The protocol of the official LVOS evaluation (lvos-evaluation, Hong et al.):
* Objects and frames come from ``<split>_meta.json`` (util/lvos_meta.py): object k of a
  video is scored on its annotated frames ``s+5, ..., e-5`` - every one but the first
  (where it is given) and the last - on the binary masks ``result == id`` and
  ``ground truth == id`` (no void). An object is named ``<video>_<rank>`` with rank its
  1-based position in the metadata.
* J and F per frame are the DAVIS ones (util/davis_metrics.py, used as they are); per
  object: mean, recall and decay as DAVIS, and V = sqrt(round(sum((m - JF_t)^2) / N, 4))
  over the N scored frames with JF_t = (J_t + F_t) / 2 and m their mean (the official
  tool rounds to 4 decimals before the square root).
* A video is *unseen* when its name is in the unseen list (the official
  ``unseen_videos.txt``, shipped as datasets/lvos/unseen_videos.txt). J-seen is the mean
  of the per-object J-Means of seen videos (unseen, F and V alike); J = (J-seen +
  J-unseen) / 2, F and V alike; J&F = (J-seen + J-unseen + F-seen + F-unseen) / 4. With
  no seen or no unseen object these are NaN, as in the official tool.

Differences from the official tool, none of them in the numbers: every frame is read once
for all its objects, the frames are scored by a process pool (default: all cores), a
missing result is one error naming the first missing file before any scoring (the
official tool exits silently), and the CSVs keep 9 decimals (the official rounds to 3).
"""
import os
import sys
import warnings
from dataclasses import dataclass

import numpy as np

from util.davis_metrics import (CSV_FLOAT_FORMAT, DavisEvalError, _CHUNK_FRAMES, _lut_apply, _progress_bar,
                                _read_labels, _score_labels, boundary_radius, db_statistics, disk, run_in_order, write_csv_files)
from util.errors import UserInputError
from util.lvos_meta import ANNOTATION_STEP, frame_name, read_lvos_meta

DEFAULT_UNSEEN_LIST = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                   'datasets', 'lvos', 'unseen_videos.txt')
GLOBAL_COLUMNS = ('J&F-Mean', 'J-Mean', 'J-seen-Mean', 'J-unseen-Mean', 'F-Mean', 'F-seen-Mean', 'F-unseen-Mean',
                  'V-Mean', 'V-seen-Mean', 'V-unseen-Mean')
SEQUENCE_COLUMNS = ('Sequence', 'J-Mean', 'F-Mean', 'V-Mean')


def v_statistic(j, f):
    """V of one object: the spread of its per-frame (J+F)/2, rounded as the official tool does."""
    jf = (np.asarray(j, np.float64) + np.asarray(f, np.float64)) / 2
    return float(np.sqrt(np.round(np.sum((jf.mean() - jf) ** 2) / jf.size, 4)))


@dataclass
class LVOSObjectResult:
    video: str
    rank: int
    object_id: int
    unseen: bool
    j: np.ndarray    # per scored frame
    f: np.ndarray

    def __post_init__(self):
        self.j_mean, self.j_recall, self.j_decay = db_statistics(self.j)
        self.f_mean, self.f_recall, self.f_decay = db_statistics(self.f)
        self.v = v_statistic(self.j, self.f)

    @property
    def name(self):
        return f'{self.video}_{self.rank}'


@dataclass
class LVOSEvaluation:
    split: str
    unseen_list: str
    global_metrics: dict   # GLOBAL_COLUMNS -> float
    objects: list          # LVOSObjectResult, videos by name, objects in metadata order

    def missing_group(self):
        """'seen' or 'unseen' when no object of that group was scored (its means are NaN), else None."""
        for group, unseen in (('unseen', True), ('seen', False)):
            if not any(o.unseen == unseen for o in self.objects):
                return group
        return None


def read_unseen_list(path=None):
    path = DEFAULT_UNSEEN_LIST if path is None else path
    try:
        with open(path) as f:
            return {line.strip() for line in f if line.strip()}
    except OSError as e:
        raise UserInputError(f'{path}: cannot read the unseen-video list ({e.strerror})') from None


def results_folder(results_dir):
    """The folder holding <video>/<frame>.png: `results_dir` itself, or its Annotations/ (the layout
    of eval_lvos.py and of the server zip)."""
    if not os.path.isdir(results_dir):
        raise DavisEvalError(f'{results_dir}: results folder not found')
    annotations = os.path.join(results_dir, 'Annotations')
    return annotations if os.path.isdir(annotations) else results_dir


@dataclass
class _VideoPlan:
    name: str
    objects: list       # LVOSObject scored (at least one frame each)
    frames: list        # (frame number, gt path, result path, indices into objects) in frame order


def _plan_video(split_dir, results_dir, video, objects):
    """Lists one video's scored frames and checks every file exists (first missing: the error)."""
    scored = [o for o in objects if o.scored]
    for o in objects:
        if not o.scored:
            warnings.warn(f'{video}_{o.rank} (object {o.id} of video {video}) has {o.count} annotated frame(s): '
                          'nothing to score once the first and the last are left out; not counted')
    by_frame = {}
    for i, o in enumerate(scored):
        for number in o.scored:
            by_frame.setdefault(number, []).append(i)
    gt_dir = os.path.join(split_dir, 'Annotations', video)
    res_dir = os.path.join(results_dir, video)
    frames = [(n, os.path.join(gt_dir, frame_name(n) + '.png'), os.path.join(res_dir, frame_name(n) + '.png'),
               tuple(by_frame[n])) for n in sorted(by_frame)]
    for _, gt_path, _, _ in frames:
        if not os.path.isfile(gt_path):
            raise DavisEvalError(f'{gt_path}: ground-truth annotation not found (the metadata annotates '
                                 f'video {video} on this frame)')
    for _, _, res_path, _ in frames:
        if not os.path.isfile(res_path):
            raise DavisEvalError(f'{res_path}: result mask not found (every annotated frame of an object but '
                                 'its first and last needs one)')
    return _VideoPlan(video, scored, frames)


def _as_uint8_ids(arr):
    """Label ids as uint8; ids that cannot be an LVOS object (negative or above 255) become 0."""
    if arr.dtype == np.uint8:
        return arr
    return np.where((arr < 0) | (arr > 255), 0, arr).astype(np.uint8)


def _score_chunk(task):
    """Worker: per-frame J and F of every object scored on the frames of one chunk of a video.

    Each frame's ground truth and result are mapped to labels 1..m of the m objects scored
    there (every other id becomes background), so the DAVIS scorer's per-object maps are
    exactly `== id` of each.
    """
    video, objects, frames = task
    out, kernel, shape = [], None, None
    for number, gt_path, res_path, indices in frames:
        gt = _read_labels(gt_path, 'ground-truth annotation')
        res = _read_labels(res_path, 'result mask')
        if gt.shape != res.shape:
            raise DavisEvalError(f'{res_path}: size {res.shape[1]}x{res.shape[0]}, the ground truth is '
                                 f'{gt.shape[1]}x{gt.shape[0]}')
        table = np.zeros(256, np.uint8)
        for k, i in enumerate(indices, start=1):
            table[objects[i].id] = k
        if gt.shape != shape:
            shape, kernel = gt.shape, disk(boundary_radius(*gt.shape))
        j, f = _score_labels(_lut_apply(_as_uint8_ids(gt), table), _lut_apply(_as_uint8_ids(res), table),
                             len(indices), kernel)
        out.append((number, indices, j, f))
    return video, out


def evaluate_lvos(split_dir, results_dir, unseen_list=None, workers=None, progress=True, videos=None):
    """Official-equivalent LVOS semi-supervised evaluation of a results folder.

    split_dir: the LVOS split folder (Annotations/, <split>_meta.json); results_dir: a folder with
    <video>/<frame>.png, or with Annotations/<video>/<frame>.png; unseen_list: a file of video
    names, one a line (default: the official list); workers: processes (default: all cores);
    videos: score only these (default: every video of the metadata, as the official tool; the
    means of a subset are not comparable with published ones).
    Raises UserInputError (one line naming the first bad file) before any scoring on a missing
    file, and on the first result PNG of the wrong size when it is read.
    """
    split_dir, results_dir = str(split_dir), str(results_dir)
    split, meta = read_lvos_meta(split_dir)
    unseen = read_unseen_list(unseen_list)
    res_root = results_folder(results_dir)
    if videos is not None:
        unknown = sorted(set(videos) - set(meta))
        if unknown:
            raise UserInputError(f'video {unknown[0]} is not in the metadata of {split_dir}')
        meta = {v: objects for v, objects in meta.items() if v in set(videos)}
    plans = [_plan_video(split_dir, res_root, video, objects) for video, objects in meta.items()]

    tasks = [(p.name, p.objects, p.frames[i:i + _CHUNK_FRAMES]) for p in plans
             for i in range(0, len(p.frames), _CHUNK_FRAMES)]
    values = {p.name: [(np.zeros(o.count - 2), np.zeros(o.count - 2)) for o in p.objects] for p in plans}
    total = sum(len(p.frames) for p in plans)
    workers = max(1, min((os.cpu_count() or 1) if workers is None else int(workers), len(tasks) or 1))
    bar = _progress_bar(total) if progress else None
    done = 0

    def collect(out):
        nonlocal done
        video, frames = out
        for number, indices, j, f in frames:
            for k, i in enumerate(indices):
                position = (number - objects_of[video][i].start) // ANNOTATION_STEP - 1   # first one not scored
                values[video][i][0][position] = j[k]
                values[video][i][1][position] = f[k]
        done += len(frames)
        if bar is not None:
            bar.update(done)

    objects_of = {p.name: p.objects for p in plans}
    try:
        run_in_order(_score_chunk, tasks, workers, collect)
    finally:
        if bar is not None:
            bar.finish(dirty=done < total)

    objects = [LVOSObjectResult(p.name, o.rank, o.id, p.name in unseen, *values[p.name][i])
               for p in plans for i, o in enumerate(p.objects)]
    return LVOSEvaluation(split, unseen_list or DEFAULT_UNSEEN_LIST, global_metrics(objects), objects)


def global_metrics(objects):
    """GLOBAL_COLUMNS -> value; a group without objects gives NaN (as the official tool's np.mean)."""
    def mean(attr, unseen):
        values = [getattr(o, attr) for o in objects if o.unseen == unseen]
        return float(np.mean(values)) if values else float('nan')

    g = {}
    for letter, attr in (('J', 'j_mean'), ('F', 'f_mean'), ('V', 'v')):
        g[f'{letter}-seen-Mean'], g[f'{letter}-unseen-Mean'] = mean(attr, False), mean(attr, True)
        g[f'{letter}-Mean'] = (g[f'{letter}-seen-Mean'] + g[f'{letter}-unseen-Mean']) / 2
    g['J&F-Mean'] = (g['J-Mean'] + g['F-Mean']) / 2
    return {c: g[c] for c in GLOBAL_COLUMNS}


def csv_paths(output_dir, split):
    return (os.path.join(str(output_dir), f'global_results-{split}.csv'),
            os.path.join(str(output_dir), f'per-sequence_results-{split}.csv'))


def write_csvs(evaluation, output_dir):
    """global_results-<split>.csv and per-sequence_results-<split>.csv, the official names and columns
    (one row per object, <video>_<rank>), 9 decimals. Returns the two paths."""
    global_path, seq_path = csv_paths(output_dir, evaluation.split)
    rows_global = [GLOBAL_COLUMNS, [CSV_FLOAT_FORMAT % evaluation.global_metrics[c] for c in GLOBAL_COLUMNS]]
    rows_seq = [SEQUENCE_COLUMNS] + [[o.name] + [CSV_FLOAT_FORMAT % v for v in (o.j_mean, o.f_mean, o.v)]
                                     for o in evaluation.objects]
    write_csv_files(output_dir, {global_path: rows_global, seq_path: rows_seq})
    return global_path, seq_path


def _table(columns, rows, decimals=6):
    """Text table: names left-aligned, numbers right-aligned."""
    cells = [list(columns)] + [[v if isinstance(v, str) else f'{v:.{decimals}f}' for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    names = isinstance(rows[0][0], str)
    return '\n'.join(' '.join(c.ljust(w) if names and i == 0 else c.rjust(w)
                              for i, (c, w) in enumerate(zip(row, widths))) for row in cells)


def print_results(evaluation, per_sequence=True, file=None):
    """The global table, the per-object table, and a line when a group's means are NaN."""
    file = sys.stdout if file is None else file
    print(f'---------- Global results for {evaluation.split} ----------', file=file)
    print(_table(GLOBAL_COLUMNS, [[evaluation.global_metrics[c] for c in GLOBAL_COLUMNS]]), file=file)
    if per_sequence and evaluation.objects:
        print(f'\n---------- Per-object results for {evaluation.split} ----------', file=file)
        print(_table(SEQUENCE_COLUMNS, [(o.name, o.j_mean, o.f_mean, o.v) for o in evaluation.objects]), file=file)
    group = evaluation.missing_group()
    if group is not None:
        print(f'\nnote: no {group} video in {evaluation.split} (unseen list: {evaluation.unseen_list}): the '
              f'{group} means and J-Mean, F-Mean, J&F-Mean, V-Mean are NaN, as the official tool gives them',
              file=file)
