"""DAVIS semi-supervised evaluation (region J, boundary F, J&F), our own implementation.

It reproduces the numbers of the official DAVIS challenge tool (davis2017-evaluation,
semi-supervised task) on the same masks; the protocol is described in README "Evaluation (J&F)".

Protocol, as the official tool applies it
-----------------------------------------
* Sequences: ``<davis_root>/ImageSets/<year>/<split>.txt``; ground truth
  ``<davis_root>/Annotations/480p/<seq>/*.png`` (sorted by name); results
  ``<results_dir>/<seq>/<frame>.png`` with the same frame names.
* Frames: every annotated frame except the first and the last.
* Objects: ids ``1..K`` where K is the largest id in the first ground-truth frame
  (after void 255 is set to 0). Ids above K in later ground-truth frames are
  background. A result containing an id above K is an error; objects the result never
  mentions are empty masks.
* Void (255) in the ground truth: the official *semi-supervised* evaluation sets it to
  background and does **not** exclude it (it passes no void mask to J and F; only its
  unsupervised task does). That is our default. ``exclude_void=True`` gives the variant
  where the result's pixels on void are ignored (J over non-void pixels, F on masks
  multiplied by not-void) - not what the official semi-supervised numbers use.
* ``single_object`` (DAVIS-2016 binary 0/255 masks): every pixel > 0 is object 1 in
  both ground truth and results; there is no void.
* J = |P∩G| / |P∪G|, 1 on an empty union.
* F: boundary maps (a pixel is on the boundary when it differs from its right, lower or
  lower-right neighbour; last row: right neighbour only; last column: lower only;
  bottom-right pixel never), radius r = ceil(0.008·sqrt(h²+w²)), dilation by the disk
  {x²+y² <= r²}; precision = |B(P) ∧ dil(B(G))| / |B(P)|,
  recall = |B(G) ∧ dil(B(P))| / |B(G)|, with (P, R) = (1, 0) when only B(P) is empty,
  (0, 1) when only B(G) is empty, (1, 1) when both are; F = 2PR/(P+R), 0 when P+R = 0.
* Per object: mean, recall (fraction of frames > 0.5), decay (mean of the first minus the
  last of four overlapping bins); nan-aware like the official. Global numbers are plain
  means over all objects of all sequences; J&F-Mean = (J-Mean + F-Mean) / 2.

Speed: per frame, one pass over each label map finds the boundary pixels of all objects
at once; each object's two boundary sets are dilated (cv2.dilate, uint8) only inside the
bounding box of their points, which is exact because the dilation of a point set never
depends on pixels outside it (cv2's constant border adds nothing). Sequences are cut
into chunks of consecutive frames that a process pool scores in parallel.

CSV names: ``global_results-<year>-<split>.csv`` and
``per-sequence_results-<year>-<split>.csv`` (e.g. ``global_results-2017-val.csv``); the
official tool writes ``global_results-val.csv``, which would collide between DAVIS 2016
and 2017, so the year is part of our names.
"""
import contextlib
import csv
import math
import multiprocessing
import os
import sys
import warnings
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from util.errors import UserInputError

VOID_LABEL = 255
BOUND_TH = 0.008
GLOBAL_COLUMNS = ('J&F-Mean', 'J-Mean', 'J-Recall', 'J-Decay', 'F-Mean', 'F-Recall', 'F-Decay')
SEQUENCE_COLUMNS = ('Sequence', 'J-Mean', 'F-Mean')
CSV_FLOAT_FORMAT = '%.9f'
_CHUNK_FRAMES = 16  # frames per parallel work item


class DavisEvalError(UserInputError):
    """Bad evaluation input; the message is one line naming the first offending file/folder."""


# ----------------------------------------------------------------------------------------
# Per-frame metrics
# ----------------------------------------------------------------------------------------

def boundary_radius(height, width, bound_th=BOUND_TH):
    """Dilation radius in pixels: ceil(bound_th * sqrt(h² + w²)) (8 at 854x480)."""
    return int(math.ceil(bound_th * math.sqrt(height * height + width * width)))


def disk(radius):
    """(2r+1)x(2r+1) uint8 structuring element {x² + y² <= r²}."""
    r = int(radius)
    c = np.arange(-r, r + 1)
    return ((c[:, None] ** 2 + c[None, :] ** 2) <= r * r).astype(np.uint8)


def _bbox(labels):
    """(y0, y1, x0, x1) of the non-zero pixels (end-exclusive), or None."""
    rows = np.flatnonzero(labels.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(labels.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _boundary_points(labels, num_objects, bbox=False):
    """Boundary pixels of every object of a label map.

    labels: 2-D uint8 array with values in 0..num_objects; bbox: its _bbox (computed when
    not given). Returns a list of ``num_objects`` sorted int64 arrays of flat indices
    (y * w + x). For object k a pixel is on the boundary when (label == k) differs between
    it and its right, lower or lower-right neighbour, i.e. when the labels differ and one
    of them is k.
    """
    h, w = labels.shape
    out = [np.empty(0, np.int64)] * num_objects
    if bbox is False:
        bbox = _bbox(labels)
    if num_objects == 0 or bbox is None:
        return out
    # Label changes only occur from one pixel up/left of the bounding box to its last
    # row/column. The crop keeps one more (background) row/column below/right when the image
    # has it; there the crop's own last-row/last-column rules compare background with
    # background, as the full image would, and where the crop reaches the image's edge they
    # are the image's rules.
    y0, y1 = max(bbox[0] - 1, 0), min(bbox[1] + 1, h)
    x0, x1 = max(bbox[2] - 1, 0), min(bbox[3] + 1, w)
    sub = labels[y0:y1, x0:x1]
    sh, sw = sub.shape
    change = np.zeros((sh, sw), bool)
    np.not_equal(sub[:, :-1], sub[:, 1:], out=change[:, :-1])   # right: not on the last column
    change[:-1, :] |= sub[:-1, :] != sub[1:, :]                 # below: not on the last row
    change[:-1, :-1] |= sub[:-1, :-1] != sub[1:, 1:]            # below-right: neither
    yy, xx = np.divmod(np.flatnonzero(change), sw)
    flat = (yy + y0) * w + (xx + x0)                            # sorted, unique
    if num_objects == 1:  # labels are 0/1: every change is on object 1's boundary
        return [flat.astype(np.int64, copy=False)]
    # Neighbour labels of the changed pixels; a missing neighbour (last row/column) is
    # clipped onto one that is already compared (or the pixel itself), adding nothing.
    xr = np.minimum(xx + 1, sw - 1)
    yb = np.minimum(yy + 1, sh - 1)
    near = np.stack([sub[yy, xx], sub[yy, xr], sub[yb, xx], sub[yb, xr]])
    return [flat[(near == k).any(axis=0)].astype(np.int64, copy=False)
            for k in range(1, num_objects + 1)]


def _boundary_f(gt_pts, res_pts, width, kernel):
    """F from two sorted flat boundary point sets (see the protocol in the module doc)."""
    n_gt, n_res = gt_pts.size, res_pts.size
    if n_res == 0 and n_gt > 0:
        precision, recall = 1, 0
    elif n_res > 0 and n_gt == 0:
        precision, recall = 0, 1
    elif n_res == 0 and n_gt == 0:
        precision, recall = 1, 1
    elif n_gt == n_res and np.array_equal(gt_pts, res_pts):
        precision, recall = 1.0, 1.0
    else:
        gy, gx = np.divmod(gt_pts, width)
        ry, rx = np.divmod(res_pts, width)
        y0 = min(gy[0], ry[0])  # flat indices are sorted, so y is sorted too
        y1 = max(gy[-1], ry[-1]) + 1
        x0 = min(gx.min(), rx.min())
        x1 = max(gx.max(), rx.max()) + 1
        gy -= y0
        gx -= x0
        ry -= y0
        rx -= x0
        shape = (int(y1 - y0), int(x1 - x0))
        canvas = np.zeros(shape, np.uint8)
        canvas[gy, gx] = 1
        gt_dil = cv2.dilate(canvas, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        canvas = np.zeros(shape, np.uint8)
        canvas[ry, rx] = 1
        res_dil = cv2.dilate(canvas, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        res_match = int(np.count_nonzero(gt_dil[ry, rx]))
        gt_match = int(np.count_nonzero(res_dil[gy, gx]))
        precision = res_match / float(n_res)
        recall = gt_match / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def _score_labels(gt, res, num_objects, kernel=None):
    """J and F of objects 1..K for two uint8 label maps with values in 0..K.

    kernel: the disk for this frame size (computed when None).
    """
    h, w = gt.shape
    if kernel is None:
        kernel = disk(boundary_radius(h, w))
    j = np.ones(num_objects)
    gt_box, res_box = _bbox(gt), _bbox(res)
    boxes = [b for b in (gt_box, res_box) if b is not None]
    if boxes:  # pixels outside both objects' boxes are background in both maps
        y0, y1 = min(b[0] for b in boxes), max(b[1] for b in boxes)
        x0, x1 = min(b[2] for b in boxes), max(b[3] for b in boxes)
        k1 = num_objects + 1
        codes = gt[y0:y1, x0:x1].astype(np.intp) * k1 + res[y0:y1, x0:x1]
        counts = np.bincount(codes.ravel(), minlength=k1 * k1).reshape(k1, k1)
        inter = np.diagonal(counts)[1:]
        union = counts.sum(axis=1)[1:] + counts.sum(axis=0)[1:] - inter
        nz = union > 0
        j[nz] = inter[nz] / union[nz]
    gt_b = _boundary_points(gt, num_objects, gt_box)
    res_b = _boundary_points(res, num_objects, res_box)
    f = np.array([_boundary_f(gt_b[i], res_b[i], w, kernel) for i in range(num_objects)])
    return j, f


def _as_labels(array, path=None):
    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        where = f'{path}: ' if path else ''
        raise DavisEvalError(f'{where}expected a single-channel integer label image, got shape '
                             f'{arr.shape} dtype {arr.dtype}')
    return arr


def _lut_apply(arr, table):
    """table[arr] for a uint8 array and a 256-entry uint8 table (cv2.LUT is the fast path)."""
    return cv2.LUT(arr, table).reshape(arr.shape)


def _positive(arr):
    """uint8 0/1 map of arr > 0."""
    mask = arr > 0
    return mask.view(np.uint8)


def prepare_frame(gt_raw, res_raw, num_objects, single_object=False, exclude_void=False,
                  res_path=None):
    """Raw ground-truth/result label arrays (as read from the PNGs) -> uint8 label maps in 0..K.

    Ground truth: void (255) and ids above K become 0 (single_object: > 0 becomes 1).
    Result: checked to hold no id above K (single_object: > 0 becomes 1); with exclude_void
    its pixels on ground-truth void become 0. Raises DavisEvalError on an id above K.
    """
    gt_raw = _as_labels(gt_raw)
    res_raw = _as_labels(res_raw, res_path)
    if single_object:
        return _positive(gt_raw), _positive(res_raw)
    top = int(res_raw.max()) if res_raw.size else 0
    if top > num_objects:
        where = f'{res_path}: ' if res_path else ''
        raise DavisEvalError(f'{where}contains object id {top} but the ground truth has only '
                             f'{num_objects} object(s) in its first frame')
    if res_raw.dtype != np.uint8 and res_raw.size and res_raw.min() < 0:
        res_raw = np.where(res_raw < 0, 0, res_raw)  # matches no object: background
    res = res_raw.astype(np.uint8, copy=False)
    if gt_raw.dtype == np.uint8:
        table = np.arange(256, dtype=np.uint8)
        table[num_objects + 1:] = 0  # also void (255): num_objects <= 254
        gt = _lut_apply(gt_raw, table)
    else:
        gt = np.where((gt_raw > num_objects) | (gt_raw < 0), 0, gt_raw).astype(np.uint8)
    if exclude_void:
        void = gt_raw == VOID_LABEL
        if void.any():
            res = np.where(void, 0, res).astype(np.uint8)
    return gt, res


def score_frame(gt_raw, res_raw, num_objects, single_object=False, exclude_void=False):
    """Per-object J and F (two float64 arrays of length K) of one frame.

    gt_raw/res_raw: 2-D integer label arrays as read from the annotation/result PNGs
    (void 255 in the ground truth); num_objects: K of the sequence (1 with single_object).
    """
    if single_object:
        num_objects = 1
    gt, res = prepare_frame(gt_raw, res_raw, num_objects, single_object, exclude_void)
    return _score_labels(gt, res, num_objects)


def seg2bmap(mask):
    """Boolean boundary map of a binary mask (the rule in the module docstring)."""
    m = (np.asarray(mask) > 0).astype(np.uint8)
    out = np.zeros(m.shape, bool)
    out.ravel()[_boundary_points(m, 1)[0]] = True
    return out


def jaccard(gt_mask, res_mask):
    """J of two binary masks (1.0 when both are empty)."""
    return float(score_frame(np.asarray(gt_mask) > 0, np.asarray(res_mask) > 0, 1, True)[0][0])


def f_measure(gt_mask, res_mask):
    """Boundary F of two binary masks, radius from their size."""
    return float(score_frame(np.asarray(gt_mask) > 0, np.asarray(res_mask) > 0, 1, True)[1][0])


def db_statistics(per_frame_values):
    """(mean, recall, decay) of one object's per-frame values, nan-aware like the official.

    recall = fraction of frames > 0.5; decay = mean(bin 0) - mean(bin 3) with edges
    e = round(linspace(1, n, 5) + 1e-10) - 1 and bin i = values[e_i : e_{i+1} + 1].
    (The official casts e to uint8, which only matters beyond 256 frames.)
    """
    values = np.asarray(per_frame_values, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', category=RuntimeWarning)
        mean = np.nanmean(values)
        recall = np.nanmean(values > 0.5)
        edges = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(np.int64)
        bins = [values[edges[i]:edges[i + 1] + 1] for i in range(4)]
        decay = np.nanmean(bins[0]) - np.nanmean(bins[3])
    return float(mean), float(recall), float(decay)


# ----------------------------------------------------------------------------------------
# Data layout, validation and per-sequence evaluation
# ----------------------------------------------------------------------------------------

@dataclass
class ObjectResult:
    sequence: str
    object_id: int
    j_mean: float
    j_recall: float
    j_decay: float
    f_mean: float
    f_recall: float
    f_decay: float

    @property
    def name(self):
        return f'{self.sequence}_{self.object_id}'


@dataclass
class SequenceResult:
    name: str
    frames: list          # evaluated frame names (without .png)
    j: np.ndarray         # (K, n_frames) per-frame J
    f: np.ndarray         # (K, n_frames) per-frame F
    objects: list = field(default_factory=list)  # ObjectResult per object 1..K


@dataclass
class DavisEvaluation:
    image_set: str                 # e.g. '2017/val'
    single_object: bool
    exclude_void: bool
    global_metrics: dict           # GLOBAL_COLUMNS -> float
    objects: list                  # ObjectResult, sequence order then object id
    sequences: list                # SequenceResult in ImageSets order


@dataclass
class _SequencePlan:
    name: str
    frames: list
    gt_paths: list
    res_paths: list
    num_objects: int


def parse_image_set(image_set):
    """'2017/val' -> ('2017', 'val')."""
    parts = str(image_set).strip('/').split('/')
    if len(parts) != 2 or not all(parts):
        raise DavisEvalError(f'image set {image_set!r}: expected YEAR/SPLIT, e.g. 2017/val, '
                             '2016/val')
    return parts[0], parts[1]


def csv_tag(image_set):
    """File-name tag of an image set: '2017/val' -> '2017-val'."""
    return '-'.join(parse_image_set(image_set))


def read_sequence_list(davis_root, image_set):
    year, split = parse_image_set(image_set)
    if not os.path.isdir(davis_root):
        raise DavisEvalError(f'{davis_root}: DAVIS root folder not found')
    path = os.path.join(davis_root, 'ImageSets', year, f'{split}.txt')
    if not os.path.isfile(path):
        raise DavisEvalError(f'{path}: sequence list not found (image set {image_set})')
    with open(path) as f:
        names = [line.strip() for line in f]
    names = [n for n in names if n]
    if not names:
        raise DavisEvalError(f'{path}: sequence list is empty')
    return names


def _header(path, what):
    """(size, number of bands, mode) of an image file, without decoding its pixels."""
    if not os.path.isfile(path):
        raise DavisEvalError(f'{path}: {what} not found')
    try:
        with Image.open(path) as img:
            return img.size, len(img.getbands()), img.mode
    except Exception as e:  # PIL raises several types for unreadable files
        raise DavisEvalError(f'{path}: cannot read {what} ({_one_line(e)})') from None


def _checked_header(path, what, expected_size=None):
    """Size of the single-channel image at `path`; DavisEvalError if it is not `expected_size`."""
    size, bands, mode = _header(path, what)
    if expected_size is not None and size != expected_size:
        raise DavisEvalError(f'{path}: size {size[0]}x{size[1]}, expected {expected_size[0]}x{expected_size[1]} '
                             'like the first annotation')
    if bands != 1:
        raise DavisEvalError(f'{path}: {mode} image with {bands} channels; expected a palette or grayscale PNG')
    return size


def _read_labels(path, what):
    try:
        with Image.open(path) as img:
            arr = np.array(img)
    except Exception as e:
        raise DavisEvalError(f'{path}: cannot read {what} ({_one_line(e)})') from None
    return _as_labels(arr, path)


def _one_line(err):
    return ' '.join(str(err).split())


BINARY_HINT = (' (binary 0/255 annotations, as in DAVIS-2016, are scored as one object: eval_davis_2016.py '
               '--evaluate, or single_object / scripts/evaluate_davis.py --single_object)')


def _ground_truth(davis_root, seq, single_object, sparse=False):
    """The ground-truth half of a sequence's plan, checkable before any result exists.

    Returns (scored frame names, their annotation paths, K, the first annotation's path). sparse: the ground truth
    annotates only some frames (long-video benchmarks); every annotated frame but the
    first is scored.
    """
    gt_dir = os.path.join(davis_root, 'Annotations', '480p', seq)
    if not os.path.isdir(gt_dir):
        raise DavisEvalError(f'{gt_dir}: ground-truth folder of sequence {seq!r} not found')
    names = sorted(n[:-4] for n in os.listdir(gt_dir) if n.endswith('.png'))
    img_dir = os.path.join(davis_root, 'JPEGImages', '480p', seq)
    if os.path.isdir(img_dir) and not sparse:
        n_img = sum(1 for n in os.listdir(img_dir) if n.endswith('.jpg'))
        if n_img > len(names):
            raise DavisEvalError(f'{gt_dir}: {len(names)} annotation(s) for {n_img} frames in '
                                 f'{img_dir} (ground truth incomplete, e.g. a test set; for sparse '
                                 'annotations use --sparse)')
    if len(names) < (2 if sparse else 3):
        raise DavisEvalError(f'{gt_dir}: {len(names)} annotated frame(s); the evaluation needs '
                             'at least 3 (first and last are not scored)')
    gt_paths = [os.path.join(gt_dir, n + '.png') for n in names]
    size0 = _checked_header(gt_paths[0], 'ground-truth annotation')
    scored = slice(1, None) if sparse else slice(1, -1)
    for gt_path in gt_paths[scored]:
        _checked_header(gt_path, 'ground-truth annotation', size0)
    if single_object:
        num_objects = 1
    else:
        first = _read_labels(gt_paths[0], 'ground-truth annotation')
        first = np.where(first == VOID_LABEL, 0, first)
        num_objects = int(first.max()) if first.size else 0
        warn_missing_ids(gt_paths[0], first, num_objects)
    return names[scored], gt_paths[scored], num_objects, gt_paths[0]


def check_ground_truth(davis_root, sequences, single_object=False, sparse=False):
    """Checks, before anything is segmented, what scoring the sequences will need of their ground truth
    (annotations present, enough of them, readable, one size, objects in the first one); raises
    DavisEvalError naming the first problem."""
    for seq in sequences:
        _, _, num_objects, first = _ground_truth(str(davis_root), seq, single_object, sparse)
        if num_objects == 0:
            binary = (_read_labels(first, 'ground-truth annotation') == VOID_LABEL).any()
            raise DavisEvalError(f'{first}: the first annotation has no object id to score'
                                 + (BINARY_HINT if binary else ''))


def _plan_sequence(davis_root, results_dir, seq, single_object, sparse=False):
    """Lists and validates one sequence's files (existence, size, one channel)."""
    frames, gt_paths, num_objects, _ = _ground_truth(davis_root, seq, single_object, sparse)
    res_dir = os.path.join(results_dir, seq)
    if not os.path.isdir(res_dir):
        raise DavisEvalError(f'{res_dir}: results folder of sequence {seq!r} not found')
    size0 = _checked_header(gt_paths[0], 'ground-truth annotation')
    res_paths = [os.path.join(res_dir, n + '.png') for n in frames]
    for res_path in res_paths:
        _checked_header(res_path, 'result mask (every annotated frame but the first and last needs one)', size0)
    return _SequencePlan(seq, frames, gt_paths, res_paths, num_objects)


def warn_missing_ids(path, labels, num_objects):
    """The official protocol scores ids 1..max of the first annotation: with ids 1 and 5, objects
    2-4 are empty in both ground truth and result and count as perfect. Keep the official numbers,
    but say so."""
    present = set(np.unique(labels).tolist())
    missing = [i for i in range(1, num_objects + 1) if i not in present]
    if missing:
        warnings.warn(f'{path}: object ids {sorted(present - {0})} are not contiguous; ids {missing} are absent '
                      'and count as perfectly segmented empty objects (as in the official evaluation)',
                      stacklevel=2)


def _score_chunk(task):
    """Worker: per-frame J/F of frames [start, stop) of one sequence."""
    plan, start, stop, single_object, exclude_void = task
    k = plan.num_objects
    n = stop - start
    j = np.zeros((k, n))
    f = np.zeros((k, n))
    kernel = None
    for i in range(n):
        gt_path, res_path = plan.gt_paths[start + i], plan.res_paths[start + i]
        gt_raw = _read_labels(gt_path, 'ground-truth annotation')
        res_raw = _read_labels(res_path, 'result mask')
        if gt_raw.shape != res_raw.shape:
            raise DavisEvalError(f'{res_path}: size {res_raw.shape[1]}x{res_raw.shape[0]}, ground '
                                 f'truth is {gt_raw.shape[1]}x{gt_raw.shape[0]}')
        if k == 0:
            if not single_object and res_raw.max() > 0:
                hint = BINARY_HINT if gt_raw.max() == VOID_LABEL else ''
                raise DavisEvalError(f'{res_path}: contains object id {int(res_raw.max())} but the '
                                     f'ground truth has no object in its first frame{hint}')
            continue
        gt, res = prepare_frame(gt_raw, res_raw, k, single_object, exclude_void, res_path)
        if kernel is None:
            kernel = disk(boundary_radius(*gt.shape))
        j[:, i], f[:, i] = _score_labels(gt, res, k, kernel)
    return plan.name, start, j, f


@contextlib.contextmanager
def _pool(workers):
    """A process pool; forked on Linux (fast: nothing to re-import).

    cv2's own thread pool must not be alive when the process forks: a child inherits its
    locks and condition variables mid-use and can hang in its first cv2 call that touches
    them (seen with cv2.setNumThreads). So cv2 runs single-threaded in this process while
    the pool exists (its threads are joined before the fork), and the children inherit that
    setting - the parallelism comes from the processes. Elsewhere: the platform's default
    start method (spawn), whose children start clean.
    """
    if not sys.platform.startswith('linux'):
        with multiprocessing.get_context().Pool(workers) as pool:
            yield pool
        return
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with multiprocessing.get_context('fork').Pool(workers) as pool:
            yield pool
    finally:
        cv2.setNumThreads(threads)


def _finish_sequence(plan, j, f):
    objects = []
    for i in range(plan.num_objects):
        jm, jr, jd = db_statistics(j[i])
        fm, fr, fd = db_statistics(f[i])
        objects.append(ObjectResult(plan.name, i + 1, jm, jr, jd, fm, fr, fd))
    return SequenceResult(plan.name, list(plan.frames), j, f, objects)


def evaluate_sequence(davis_root, results_dir, sequence, single_object=False, exclude_void=False):
    """Evaluates one sequence in this process; returns a SequenceResult."""
    plan = _plan_sequence(str(davis_root), str(results_dir), sequence, single_object)
    _, _, j, f = _score_chunk((plan, 0, len(plan.frames), single_object, exclude_void))
    return _finish_sequence(plan, j, f)


def evaluate_davis(davis_root, results_dir, image_set='2017/val', single_object=False,
                   workers=None, progress=True, *, exclude_void=False, sequences=None, sparse=False):
    """Official-equivalent DAVIS semi-supervised evaluation of a results folder.

    Arguments:
        davis_root: DAVIS folder with ``Annotations/480p/<seq>/*.png`` and
            ``ImageSets/<year>/<split>.txt`` (``JPEGImages/480p`` optional; when present
            it must not have more frames than the annotations).
        results_dir: folder with ``<seq>/<frame>.png`` (palette or grayscale label PNGs at
            the annotation size) for every annotated frame but the first and last.
        image_set: ``'<year>/<split>'``, e.g. ``'2017/val'``, ``'2016/val'``.
        single_object: DAVIS-2016 binary masks: every pixel > 0 is object 1 (no void).
        workers: processes for the frame chunks (default ``os.cpu_count()``; 1 = no pool).
        progress: show a progressbar2 bar on stderr.
        exclude_void: (keyword) ignore the result's pixels on ground-truth void (255); the
            official semi-supervised evaluation does not, so the default is False.
        sequences: (keyword) evaluate only these sequence names, in this order.
        sparse: (keyword) ground truth on some frames only (long-video benchmarks): every
            annotated frame but the first is scored, whatever the number of frames.

    Returns a DavisEvaluation: ``global_metrics`` (dict with the GLOBAL_COLUMNS keys,
    J&F-Mean first), ``objects`` (ObjectResult rows named ``<seq>_<id>`` with J/F mean,
    recall, decay), ``sequences`` (per-frame J/F arrays).

    Raises DavisEvalError (a util.errors.UserInputError) with a one-line message naming the
    first missing or inconsistent file before any scoring starts (or, for a result id above
    the ground truth's, the first offending result file).
    """
    davis_root, results_dir = str(davis_root), str(results_dir)
    names = list(sequences) if sequences is not None else read_sequence_list(davis_root, image_set)
    names = list(dict.fromkeys(names))  # a repeated name is evaluated once, like the official
    parse_image_set(image_set)
    if not os.path.isdir(results_dir):
        raise DavisEvalError(f'{results_dir}: results folder not found')
    plans = [_plan_sequence(davis_root, results_dir, s, single_object, sparse) for s in names]

    tasks = []
    for plan in plans:
        n = len(plan.frames)
        for start in range(0, n, _CHUNK_FRAMES):
            tasks.append((plan, start, min(start + _CHUNK_FRAMES, n), single_object, exclude_void))
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    workers = max(1, min(workers, len(tasks)))
    per_frame = {p.name: (np.zeros((p.num_objects, len(p.frames))),
                          np.zeros((p.num_objects, len(p.frames)))) for p in plans}
    total = sum(len(p.frames) for p in plans)
    bar = _progress_bar(total) if progress else None
    done = 0

    def collect(out):
        nonlocal done
        name, start, j, f = out
        per_frame[name][0][:, start:start + j.shape[1]] = j
        per_frame[name][1][:, start:start + f.shape[1]] = f
        done += j.shape[1]
        if bar is not None:
            bar.update(done)

    try:
        run_in_order(_score_chunk, tasks, workers, collect)
    finally:
        if bar is not None:
            bar.finish(dirty=done < total)

    seq_results = [_finish_sequence(p, *per_frame[p.name]) for p in plans]
    objects = [o for s in seq_results for o in s.objects]
    return DavisEvaluation(str(image_set), bool(single_object), bool(exclude_void),
                           global_metrics(objects), objects, seq_results)


def _progress_bar(total):
    import progressbar
    return progressbar.ProgressBar(max_value=max(total, 1), prefix='J&F ', fd=sys.stderr).start()


def global_metrics(objects):
    """GLOBAL_COLUMNS -> mean over all objects (np.mean, like the official)."""
    def mean(attr):
        return float(np.mean([getattr(o, attr) for o in objects])) if objects else float('nan')
    jm, fm = mean('j_mean'), mean('f_mean')
    return {'J&F-Mean': (jm + fm) / 2., 'J-Mean': jm, 'J-Recall': mean('j_recall'),
            'J-Decay': mean('j_decay'), 'F-Mean': fm, 'F-Recall': mean('f_recall'),
            'F-Decay': mean('f_decay')}


# ----------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------

def csv_paths(output_dir, image_set):
    tag = csv_tag(image_set)
    return (os.path.join(str(output_dir), f'global_results-{tag}.csv'),
            os.path.join(str(output_dir), f'per-sequence_results-{tag}.csv'))


def write_csvs(evaluation, output_dir):
    """Writes global_results-<year>-<split>.csv and per-sequence_results-<year>-<split>.csv.

    Columns as the official tool (J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay;
    Sequence,J-Mean,F-Mean with one row per object ``<seq>_<id>``), 9 decimals.
    Returns the two paths.
    """
    global_path, seq_path = csv_paths(output_dir, evaluation.image_set)
    rows_global = [GLOBAL_COLUMNS,
                   [CSV_FLOAT_FORMAT % evaluation.global_metrics[c] for c in GLOBAL_COLUMNS]]
    rows_seq = [SEQUENCE_COLUMNS]
    rows_seq += [[o.name, CSV_FLOAT_FORMAT % o.j_mean, CSV_FLOAT_FORMAT % o.f_mean]
                 for o in evaluation.objects]
    write_csv_files(output_dir, {global_path: rows_global, seq_path: rows_seq})
    return global_path, seq_path


def run_in_order(score, tasks, workers, collect):
    """collect(score(task)) for every task, in order (the first bad file is reported first), over
    `workers` processes (1: in this process)."""
    if workers == 1:
        for task in tasks:
            collect(score(task))
        return
    with _pool(workers) as pool:
        for out in pool.imap(score, tasks):
            collect(out)


def write_csv_files(output_dir, rows_by_path):
    """Writes each {path: rows} CSV into output_dir (created when missing); one error line on failure."""
    for path, rows in rows_by_path.items():
        try:
            os.makedirs(str(output_dir), exist_ok=True)
            with open(path, 'w', newline='') as f:
                csv.writer(f, lineterminator='\n').writerows(rows)
        except OSError as e:
            raise DavisEvalError(f'{path}: cannot write ({_one_line(e.strerror or e)})') from None


def format_global_table(evaluation, decimals=6):
    widths = [max(len(c), decimals + 3) for c in GLOBAL_COLUMNS]
    head = ' '.join(c.rjust(w) for c, w in zip(GLOBAL_COLUMNS, widths))
    row = ' '.join(f'{evaluation.global_metrics[c]:.{decimals}f}'.rjust(w)
                   for c, w in zip(GLOBAL_COLUMNS, widths))
    return head + '\n' + row


def format_sequence_table(evaluation, decimals=6):
    width = max([len('Sequence')] + [len(o.name) for o in evaluation.objects])
    lines = [f'{"Sequence".ljust(width)} {"J-Mean":>{decimals + 3}} {"F-Mean":>{decimals + 3}}']
    for o in evaluation.objects:
        lines.append(f'{o.name.ljust(width)} {o.j_mean:{decimals + 3}.{decimals}f} '
                     f'{o.f_mean:{decimals + 3}.{decimals}f}')
    return '\n'.join(lines)


def print_results(evaluation, per_sequence=False, file=None):
    """Prints the global table (and optionally the per-object table)."""
    file = sys.stdout if file is None else file
    mode = ' (single object)' if evaluation.single_object else ''
    print(f'---------- Global results for {evaluation.image_set}{mode} ----------', file=file)
    print(format_global_table(evaluation), file=file)
    if per_sequence:
        print(f'\n---------- Per-sequence results for {evaluation.image_set} ----------', file=file)
        print(format_sequence_table(evaluation), file=file)
