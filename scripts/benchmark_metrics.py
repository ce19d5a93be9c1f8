"""Benchmark of util/davis_metrics against a straightforward single-process evaluation.

Run from the repository root:

    python scripts/benchmark_metrics.py            # data derived from ../shared DAVIS-2016 sample
    python scripts/benchmark_metrics.py --davis ROOT --results DIR --set 2017/val

Without --davis it builds a 3-object DAVIS-2017-style copy of the DAVIS-2016 sample
(blackswan, car-shadow at 854x480; each annotation split into three objects, with a void
band) and perturbed results (shifts, erosion/dilation, a dropped object, spurious blobs)
in a temporary folder. It prints seconds per 100 evaluated frames of the reference below
and of ``evaluate_davis`` (default workers = all cores, and workers=1), their ratio, and
checks that every number is identical.

This file also holds the reference implementation the tests compare against: it follows
the protocol literally (full-image boundary maps and dilations, one object and one frame
at a time) and shares no code with util/davis_metrics.py.
"""
import argparse
import math
import os
import resource
import shutil
import sys
import tempfile
import time
import warnings

import cv2
import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

SAMPLE = os.path.join(os.path.dirname(REPO), 'shared', 'data', 'DAVIS-2016-sample')


# ----------------------------------------------------------------------------------------
# Reference implementation (straightforward, single process)
# ----------------------------------------------------------------------------------------

def ref_boundary(mask):
    """Boundary map: differs from the right, lower or lower-right neighbour."""
    seg = np.asarray(mask).astype(bool)
    right = np.zeros_like(seg)
    right[:, :-1] = seg[:, 1:]
    below = np.zeros_like(seg)
    below[:-1, :] = seg[1:, :]
    diag = np.zeros_like(seg)
    diag[:-1, :-1] = seg[1:, 1:]
    b = (seg != right) | (seg != below) | (seg != diag)
    b[-1, :] = seg[-1, :] != right[-1, :]   # last row: right neighbour only
    b[:, -1] = seg[:, -1] != below[:, -1]   # last column: lower neighbour only
    b[-1, -1] = False
    return b


def ref_disk(r):
    return np.array([[1 if x * x + y * y <= r * r else 0 for x in range(-r, r + 1)]
                     for y in range(-r, r + 1)], dtype=np.uint8)


def ref_j(gt, res, void=None):
    gt, res = np.asarray(gt).astype(bool), np.asarray(res).astype(bool)
    keep = np.ones_like(gt) if void is None else ~np.asarray(void).astype(bool)
    inter = np.sum(gt & res & keep)
    union = np.sum((gt | res) & keep)
    return 1.0 if union == 0 else inter / union


def ref_f(gt, res, void=None):
    gt, res = np.asarray(gt).astype(bool), np.asarray(res).astype(bool)
    if void is not None:
        gt = gt & ~void
        res = res & ~void
    h, w = gt.shape
    r = int(math.ceil(0.008 * math.sqrt(h * h + w * w)))
    kernel = ref_disk(r)
    bg, bp = ref_boundary(gt), ref_boundary(res)
    dil_g = cv2.dilate(bg.astype(np.uint8), kernel)
    dil_p = cv2.dilate(bp.astype(np.uint8), kernel)
    n_g, n_p = int(bg.sum()), int(bp.sum())
    if n_p == 0 and n_g > 0:
        precision, recall = 1.0, 0.0
    elif n_p > 0 and n_g == 0:
        precision, recall = 0.0, 1.0
    elif n_p == 0 and n_g == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = int(np.sum(bp & (dil_g > 0))) / n_p
        recall = int(np.sum(bg & (dil_p > 0))) / n_g
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def ref_stats(values):
    values = np.asarray(values, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)  # nanmean of an empty/all-nan bin
        mean = np.nanmean(values)
        recall = np.nanmean(values > 0.5)
        e = [int(v) for v in np.round(np.linspace(1, len(values), 5) + 1e-10) - 1]
        decay = np.nanmean(values[e[0]:e[1] + 1]) - np.nanmean(values[e[3]:e[4] + 1])
    return float(mean), float(recall), float(decay)


def _read(path):
    with Image.open(path) as img:
        return np.array(img).astype(np.int64)


def ref_evaluate(davis_root, results_dir, image_set='2017/val', single_object=False,
                 exclude_void=False):
    """Returns {'objects': [(name, JM, JR, JD, FM, FR, FD)], 'global': {column: value}}."""
    year, split = image_set.split('/')
    with open(os.path.join(davis_root, 'ImageSets', year, split + '.txt')) as f:
        seqs = [s.strip() for s in f if s.strip()]
    rows = []
    for seq in seqs:
        gt_dir = os.path.join(davis_root, 'Annotations', '480p', seq)
        names = sorted(n[:-4] for n in os.listdir(gt_dir) if n.endswith('.png'))
        gts = [_read(os.path.join(gt_dir, n + '.png')) for n in names]
        if single_object:
            k = 1
        else:
            first = gts[0].copy()
            first[first == 255] = 0
            k = int(first.max())
        frames = names[1:-1]
        res = [_read(os.path.join(results_dir, seq, n + '.png')) for n in frames]
        if not single_object and max(int(r.max()) for r in res) > k:
            raise ValueError(f'{seq}: result id above the ground truth')
        j = np.zeros((k, len(frames)))
        f = np.zeros((k, len(frames)))
        for t in range(len(frames)):
            g_raw, r_raw = gts[t + 1], res[t]
            void = None
            if not single_object:
                void = g_raw == 255
                g_raw = np.where(void, 0, g_raw)
            for obj in range(1, k + 1):
                if single_object:
                    g, r = g_raw > 0, r_raw > 0
                else:
                    g, r = g_raw == obj, r_raw == obj
                v = void if exclude_void else None
                j[obj - 1, t] = ref_j(g, r, v)
                f[obj - 1, t] = ref_f(g, r, v)
        for obj in range(k):
            rows.append((f'{seq}_{obj + 1}',) + ref_stats(j[obj]) + ref_stats(f[obj]))
    cols = np.array([r[1:] for r in rows])
    jm, jr, jd, fm, fr, fd = (float(np.mean(cols[:, i])) for i in range(6))
    return {'objects': rows,
            'global': {'J&F-Mean': (jm + fm) / 2., 'J-Mean': jm, 'J-Recall': jr, 'J-Decay': jd,
                       'F-Mean': fm, 'F-Recall': fr, 'F-Decay': fd}}


def module_rows(evaluation):
    """The same tuple rows from a util.davis_metrics.DavisEvaluation."""
    return [(o.name, o.j_mean, o.j_recall, o.j_decay, o.f_mean, o.f_recall, o.f_decay)
            for o in evaluation.objects]


def max_difference(ref, evaluation):
    """Largest absolute difference over all per-object and global numbers (inf on a mismatch)."""
    rows = module_rows(evaluation)
    if [r[0] for r in rows] != [r[0] for r in ref['objects']]:
        return float('inf')
    diffs = [0.0]
    for a, b in zip(ref['objects'], rows):
        for x, y in zip(a[1:], b[1:]):
            if math.isnan(x) or math.isnan(y):
                diffs.append(0.0 if math.isnan(x) and math.isnan(y) else float('inf'))
            else:
                diffs.append(abs(x - y))
    for key, value in ref['global'].items():
        diffs.append(abs(value - evaluation.global_metrics[key]))
    return max(diffs)


# ----------------------------------------------------------------------------------------
# Benchmark data
# ----------------------------------------------------------------------------------------

def _palette():
    from util.palette import DAVIS_PALETTE
    return DAVIS_PALETTE.reshape(-1).tolist()


def save_labels(path, labels):
    img = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode='P')
    img.putpalette(_palette())
    img.save(path)


def split_objects(binary, n_objects=3):
    """Label map: the binary object cut into n vertical strips of its bounding box."""
    labels = np.zeros(binary.shape, np.uint8)
    ys, xs = np.nonzero(binary)
    if xs.size == 0:
        return labels
    x0, x1 = xs.min(), xs.max() + 1
    part = np.minimum((xs - x0) * n_objects // max(x1 - x0, 1), n_objects - 1)
    labels[ys, xs] = part + 1
    return labels


def perturb(labels, rng, n_objects):
    """A plausible imperfect result: per-object shift, erosion or dilation, dropouts, blobs."""
    out = np.zeros_like(labels)
    h, w = labels.shape
    for k in range(1, n_objects + 1):
        m = (labels == k).astype(np.uint8)
        op = rng.integers(0, 4)
        if op == 1:
            m = cv2.erode(m, np.ones((5, 5), np.uint8))
        elif op == 2:
            m = cv2.dilate(m, np.ones((7, 7), np.uint8))
        dy, dx = (int(v) for v in rng.integers(-6, 7, size=2))
        m = np.roll(m, (dy, dx), axis=(0, 1))
        if rng.random() < 0.1:
            m[:] = 0  # object lost on this frame
        out[m > 0] = k
    if rng.random() < 0.3:  # spurious blob of a random object
        y, x = int(rng.integers(0, h - 40)), int(rng.integers(0, w - 40))
        out[y:y + 30, x:x + 40] = int(rng.integers(1, n_objects + 1))
    return out


def make_benchmark_data(sample_root, out_root, n_objects=3, seed=0):
    """DAVIS-2017-style root + results folder derived from the DAVIS-2016 sample.

    Returns (davis_root, results_dir). Ground truth gets a 255 void band along each
    object's boundary on every fifth frame.
    """
    rng = np.random.default_rng(seed)
    davis = os.path.join(out_root, 'DAVIS')
    results = os.path.join(out_root, 'results')
    with open(os.path.join(sample_root, 'ImageSets', '2016', 'val.txt')) as f:
        seqs = [s.strip() for s in f if s.strip()]
    os.makedirs(os.path.join(davis, 'ImageSets', '2017'), exist_ok=True)
    with open(os.path.join(davis, 'ImageSets', '2017', 'val.txt'), 'w') as f:
        f.write('\n'.join(seqs) + '\n')
    for seq in seqs:
        src = os.path.join(sample_root, 'Annotations', '480p', seq)
        gt_dir = os.path.join(davis, 'Annotations', '480p', seq)
        res_dir = os.path.join(results, seq)
        os.makedirs(gt_dir, exist_ok=True)
        os.makedirs(res_dir, exist_ok=True)
        for i, name in enumerate(sorted(os.listdir(src))):
            with Image.open(os.path.join(src, name)) as img:
                binary = np.array(img) > 0
            labels = split_objects(binary, n_objects)
            gt = labels.copy()
            if i % 5 == 3:
                edge = cv2.morphologyEx(binary.astype(np.uint8), cv2.MORPH_GRADIENT,
                                        np.ones((3, 3), np.uint8)) > 0
                gt[edge] = 255
            save_labels(os.path.join(gt_dir, name), gt)
            save_labels(os.path.join(res_dir, name), perturb(labels, rng, n_objects))
    return davis, results


# ----------------------------------------------------------------------------------------
# Benchmark
# ----------------------------------------------------------------------------------------

def _cpu_seconds():
    """User+system CPU time of this process and its reaped children (the pool's workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _spin(n):
    total = 0
    for i in range(n):
        total += i * i
    return total


def _parallel_scaling(workers, n=1_500_000):
    """How much faster `workers` processes finish 2*workers equal CPU jobs than 1 process."""
    import multiprocessing
    t0 = time.perf_counter()
    for _ in range(2 * workers):
        _spin(n)
    serial = time.perf_counter() - t0
    with multiprocessing.get_context('fork').Pool(workers) as pool:
        t0 = time.perf_counter()
        pool.map(_spin, [n] * (2 * workers))
        parallel = time.perf_counter() - t0
    return serial / parallel


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--davis', help='DAVIS root (default: derived from the shared sample)')
    parser.add_argument('--results', help='results folder (with --davis)')
    parser.add_argument('--set', default='2017/val', help='image set with --davis (default 2017/val)')
    parser.add_argument('--single_object', action='store_true')
    parser.add_argument('--workers', type=int, default=None, help='default: all cores')
    parser.add_argument('--repeat', type=int, default=3, help='best of N runs (default 3)')
    args = parser.parse_args()

    from util.davis_metrics import evaluate_davis

    tmp = None
    try:
        if args.davis:
            if not args.results:
                parser.error('--davis needs --results')
            davis, results, image_set = args.davis, args.results, args.set
        else:
            if not os.path.isdir(SAMPLE):
                parser.error(f'{SAMPLE} not found; pass --davis and --results')
            tmp = tempfile.mkdtemp(prefix='davis_bench_')
            davis, results = make_benchmark_data(SAMPLE, tmp)
            image_set = '2017/val'

        def run_module(workers):
            return evaluate_davis(davis, results, image_set, single_object=args.single_object,
                                  workers=workers, progress=False)

        first = run_module(args.workers)  # warm-up (file cache) + frame count
        n_frames = sum(len(s.frames) for s in first.sequences)
        n_objects = len(first.objects)
        s0 = first.sequences[0]
        with Image.open(os.path.join(results, s0.name, s0.frames[0] + '.png')) as img:
            w, h = img.size
        workers = args.workers or os.cpu_count()
        runs = {'ref': lambda: ref_evaluate(davis, results, image_set, args.single_object),
                'one': lambda: run_module(1),
                'mod': lambda: run_module(args.workers)}
        wall = {k: float('inf') for k in runs}
        cpu = {k: float('inf') for k in runs}
        out = {}
        for _ in range(args.repeat):  # interleaved, so load changes hit all three alike
            for key, fn in runs.items():
                c0, t0 = _cpu_seconds(), time.perf_counter()
                out[key] = fn()
                wall[key] = min(wall[key], time.perf_counter() - t0)
                cpu[key] = min(cpu[key], _cpu_seconds() - c0)
        ref, one, mod = out['ref'], out['one'], out['mod']

        per100 = 100.0 / n_frames
        print(f'data: {n_frames} evaluated frames at {w}x{h}, {n_objects} objects, '
              f'{len(first.sequences)} sequences; best of {args.repeat} interleaved runs')
        print(f'{"":40s} {"wall s/100 frames":>18s} {"CPU s/100 frames":>17s} {"speed-up":>9s}')
        for key, label in (('ref', 'reference (straightforward, 1 process)'),
                           ('one', 'util.davis_metrics, workers=1'),
                           ('mod', f'util.davis_metrics, workers={workers} (default)'
                                   if args.workers is None else
                                   f'util.davis_metrics, workers={workers}')):
            print(f'{label:40s} {wall[key] * per100:18.3f} {cpu[key] * per100:17.3f} '
                  f'{wall["ref"] / wall[key]:8.2f}x')
        scaling = _parallel_scaling(workers)
        print(f'machine check: a pure-Python loop runs {scaling:.2f}x faster on {workers} '
              f'processes than on 1 right now' + ('' if scaling > 0.8 * workers else
                                                    ' (busy machine: the pool cannot scale)'))
        diff = max(max_difference(ref, one), max_difference(ref, mod))
        same = diff == 0.0
        print(f'numbers identical to the reference: {"yes" if same else "NO"} '
              f'(max abs difference {diff:.3g})')
        g = mod.global_metrics
        print('J&F-Mean %.6f  J-Mean %.6f  F-Mean %.6f' % (g['J&F-Mean'], g['J-Mean'], g['F-Mean']))
        if not same:
            sys.exit(1)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
