"""LVOS split metadata: which objects each video has and on which frames they are annotated.

A split folder (e.g. ``valid/``) holds ``<split>_meta.json`` reading
``{"videos": {<video>: {"objects": {<id>: {"frame_range": {"start": s, "end": e,
"frame_nums": n}}}}}}``: object ``<id>`` is annotated on the frames numbered
``s, s+5, ..., s+5(n-1)`` (the last one is ``e``; ``e`` one step beyond is accepted too), frame ``f`` being the file
``<f as 8 digits>.jpg/.png``. Read by the inference reader (datasets/lvos_test_dataset.py)
and the scorer (util/lvos_metrics.py), so both agree on every object's frames.
"""
import json
import os
from dataclasses import dataclass

from util.errors import UserInputError

ANNOTATION_STEP = 5   # LVOS annotates every 5th frame of the 30 fps video (6 a second)


def frame_name(number):
    """Frame number -> file name stem: 5 -> '00000005'."""
    return f'{number:08d}'


@dataclass(frozen=True)
class LVOSObject:
    id: int      # label id in the annotation PNGs
    rank: int    # 1-based position in the metadata: the object is scored as <video>_<rank>
    start: int   # frame number of its first annotation (where it enters, given by its mask there)
    end: int     # frame number of its last annotation (as the metadata gives it)
    count: int   # frame_nums: how many frames annotate it

    @property
    def annotated(self):
        """Frame numbers carrying this object's annotation, first to last."""
        return [self.start + ANNOTATION_STEP * k for k in range(self.count)]

    @property
    def scored(self):
        """Frame numbers the evaluation scores: all annotated ones but the first and the last."""
        return self.annotated[1:-1]


def meta_path(split_dir):
    split = os.path.basename(os.path.normpath(split_dir))
    return os.path.join(split_dir, f'{split}_meta.json'), split


def _int_field(value, path, where):
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise UserInputError(f'{path}: {where} is {value!r}, not an integer')
    try:
        return int(value)
    except ValueError:
        raise UserInputError(f'{path}: {where} is {value!r}, not an integer') from None


def _read_object(path, video, key, rank, entry):
    where = f'video {video} object {key}'
    obj_id = _int_field(key, path, f'{where}: the id')
    if not 1 <= obj_id <= 254:
        raise UserInputError(f'{path}: {where}: id must be 1..254 (255 is void)')
    try:
        frame_range = entry['frame_range']
        start, end, count = (_int_field(frame_range[k], path, f'{where}: frame_range.{k}')
                             for k in ('start', 'end', 'frame_nums'))
    except (KeyError, TypeError):
        raise UserInputError(f'{path}: {where} has no frame_range with start, end and frame_nums') from None
    if start < 0 or count < 1:
        raise UserInputError(f'{path}: {where}: frame_range start {start}, frame_nums {count} '
                             '(need start >= 0 and frame_nums >= 1)')
    last = start + ANNOTATION_STEP * (count - 1)
    # end is the last annotated frame; one step further is accepted too, as the official tool
    # walks range(start, end, 5) and so also reads it as an exclusive bound
    if end not in (last, last + ANNOTATION_STEP):
        raise UserInputError(f'{path}: {where}: frame_nums {count} annotations every {ANNOTATION_STEP} frames '
                             f'from {start} end at frame {last}, but end is {end}')
    return LVOSObject(obj_id, rank, start, end, count)


def read_lvos_meta(split_dir):
    """-> (split name, {video: [LVOSObject in metadata order]}) with videos sorted by name.

    Raises UserInputError (one line naming the file) when the file is missing or malformed.
    """
    if not os.path.isdir(split_dir):
        raise UserInputError(f'{split_dir}: LVOS split folder not found')
    path, split = meta_path(split_dir)
    if not os.path.isfile(path):
        raise UserInputError(f'{path}: LVOS metadata not found (a split folder <split>/ holds <split>_meta.json)')
    try:
        with open(path) as f:
            videos = json.load(f)['videos']
        items = sorted(videos.items())
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserInputError(f'{path}: not an LVOS metadata file ({type(e).__name__}: {e})') from None
    if not items:
        raise UserInputError(f'{path}: no videos')
    meta = {}
    for video, entry in items:
        objects = entry.get('objects') if isinstance(entry, dict) else None
        if not isinstance(objects, dict) or not objects:
            raise UserInputError(f'{path}: video {video} lists no objects')
        meta[video] = [_read_object(path, video, key, rank, obj)
                       for rank, (key, obj) in enumerate(objects.items(), start=1)]
        ids = [o.id for o in meta[video]]
        if len(set(ids)) != len(ids):
            raise UserInputError(f'{path}: video {video} lists an object id twice ({ids})')
    return split, meta
