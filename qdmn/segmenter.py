"""Segmenter: one video, frame by frame, from label maps with the caller's object ids."""
import os

import numpy as np
import torch

from inference_core import InferenceCore
from inference_core_yv import InferenceCoreYV
from inference_memory_bank import POLICIES, PRESETS, memory_summary
from model.memory_read import KM_SIGMA
from qdmn.network import as_network
from util.errors import UserInputError
from util.labels import MAX_OBJECT_ID, object_ids, processing_size, resize_labels
from util.memory_log import MemoryLog, decision_text
from util.output import atomic_file
from util.tensor_util import frame_to_tensor, probs_to_labels

ENGINES = {'davis': InferenceCore, 'youtube': InferenceCoreYV}
OVERRIDES = ('top_k', 'mem_freq', 'quality_thr', 'memory_thr', 'use_km', 'memory_policy')
STATE_FORMAT = 'qdmn-segmenter-1'


class InputError(UserInputError, ValueError):
    """Bad input to the API: a one-line message (a ValueError; the command lines print it as `error: ...`)."""


def engine_settings(preset='davis', **overrides):
    """The preset's settings with `overrides` (any of OVERRIDES) applied and checked.

    top_k None reads every memory pixel; use_km is the published kernelized read.
    """
    if preset not in PRESETS:
        raise InputError(f'preset {preset!r}: expected one of {", ".join(PRESETS)}')
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise TypeError(f'unknown setting(s) {", ".join(unknown)}; expected some of {", ".join(OVERRIDES)}')
    p = PRESETS[preset]
    settings = dict(top_k=p.top_k, mem_freq=p.mem_freq, quality_thr=p.quality_thr, memory_thr=p.memory_thr,
                    use_km=False, memory_policy='quality')
    settings.update(overrides)
    problems = [f'{name} {settings[name]!r}: expected an integer >= 1' for name in ('mem_freq', 'memory_thr')
                if not _positive_int(settings[name])]
    if settings['top_k'] is not None and not _positive_int(settings['top_k']):
        problems.append(f'top_k {settings["top_k"]!r}: expected an integer >= 1, or None for every memory pixel')
    if not isinstance(settings['quality_thr'], (int, float)) or isinstance(settings['quality_thr'], bool):
        problems.append(f'quality_thr {settings["quality_thr"]!r}: expected a number')
    if settings['memory_policy'] not in POLICIES:
        problems.append(f'memory_policy {settings["memory_policy"]!r}: expected one of {", ".join(POLICIES)}')
    if problems:
        raise InputError('; '.join(problems))
    settings['use_km'] = bool(settings['use_km'])
    return settings


def _positive_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


class Segmenter:
    """Segments one video, one frame per step(), in bounded memory (the paper's quality-aware memory).

        net = load_network()
        seg = Segmenter(net, preset='davis')
        for i, rgb in enumerate(frames):
            ids = seg.step(rgb, labels=first if i == 0 else None)

    net: load_network()'s Network (or a bare QDMN module, run in fp32 on its device).
    preset: 'davis' (mem_freq 5, quality_thr 0.8, memory_thr 20, top_k 50) or 'youtube' (5, 0.75,
      10, 50): the published settings and protocol of each benchmark (inference_memory_bank.PRESETS).
    size: the short side frames are processed at (None: as they are); outputs come back at the
      frames' own size.
    overrides: top_k (None: every memory pixel), mem_freq, quality_thr, memory_thr, use_km,
      memory_policy ('quality' or 'recent').
    num_objects: how many objects the video has in all, when known ('youtube' only: the published
      YouTube-VOS engine gates the query with all of them, also before they enter).
    memory_log: keep a util.memory_log.MemoryLog of every frame (`seg.memory_log`).

    The memory encoding of a frame is lazy: it runs when `quality` or `decision` is read, or at the
    next step(), so the last frame of a video is never encoded, as published; finish() marks it so
    in the memory log. state_dict() / load_state_dict() (and save() / load()) hold everything the
    next frame depends on: a video can go on in another process with byte-identical results.
    """

    def __init__(self, net, preset='davis', size=None, num_objects=None, memory_log=False, **overrides):
        self.net = as_network(net)
        self.settings = engine_settings(preset, **overrides)
        self.preset = PRESETS[preset]
        if size is not None and not _positive_int(size):
            raise InputError(f'size {size!r}: expected the short side in pixels (an integer >= 1) or None')
        if num_objects is not None and (self.preset.protocol != 'youtube' or not _positive_int(num_objects)):
            raise InputError(f'num_objects {num_objects!r}: a positive count, with the youtube preset only')
        self.size = size
        self.num_objects = num_objects
        self.keep_log = memory_log
        self.memory_log = None
        self.engine = None          # made at the first labelled frame
        self.frame_index = -1       # index of the last frame given to step()
        self.first_labelled = None  # index of the first labelled frame (frames before it are empty)
        self.frame_size = None      # (h, w) of the frames
        self.proc_size = None       # (h, w) they are processed at

    # ---- segmenting ----------------------------------------------------------------------------

    def step(self, rgb, labels=None):
        """Segments the next frame: rgb HxWx3 uint8 (numpy array or tensor); labels HxW ids
        (1..254, 0 = none) for the objects labelled on this frame, or None.

        Returns the HxW uint8 map of object ids at the frame's size. Frames before the first
        labelled one come back empty. Labels bring new objects or correct known ones; the
        memory follows the preset's protocol.
        """
        rgb = self._check_frame(rgb)
        labels = None if labels is None else self._check_labels(labels)
        self.frame_index += 1
        if self.engine is None:
            if labels is None:
                return np.zeros(self.frame_size, np.uint8)
            self._start(self.frame_index)
        with torch.no_grad(), self.net.autocast():
            self.engine.commit()   # the previous frame's memory, unless quality or decision already did it
            frame = frame_to_tensor(rgb, self.net.device, self.proc_size)
            prob = self.engine.segment(frame, None if labels is None else resize_labels(labels, self.proc_size))
            return self.engine.to_ids(probs_to_labels(prob, self.frame_size))

    def finish(self):
        """Ends the video: the last frame stays out of memory (as published) and the log says so."""
        if self.engine is not None:
            self.engine.skip_commit()

    @property
    def quality(self):
        """{object id: quality score} of this frame's memory encoding; None when it is not encoded."""
        if not self._commit():
            return None
        scores = self.engine.last_scores
        return None if scores is None else dict(zip(self.engine.objects, scores.float().tolist()))

    @property
    def decision(self):
        """What the memory did with this frame: 'first frame', 'labelled', 'stored', 'replaced <frame>',
        'not due', 'low quality'; 'not encoded' after finish(); None before the first labels."""
        if not self._commit():
            return None
        d = self.engine.last_decision
        if d is None:
            return 'not encoded'
        return decision_text(d.reason, None if d.evicted_frame is None else d.evicted_frame + self.first_labelled)

    @property
    def objects(self):
        """The object ids seen so far, in the order they entered."""
        return [] if self.engine is None else list(self.engine.objects)

    @property
    def bank(self):
        """The memory bank (inference_memory_bank.MemoryBank), None before the first labels."""
        return None if self.engine is None else self.engine.bank

    def memory_summary(self):
        """One line on the memory: what it did with the frames so far, and what it holds."""
        if self.engine is None:
            return 'memory: empty (no labelled frame yet)'
        return memory_summary(self.engine.decisions, self.engine.bank)

    def _commit(self):
        """Encodes the current frame if still pending; False when no frame has been segmented."""
        if self.engine is None or self.frame_index != self.first_labelled + self.engine.frame_idx:
            return False
        with torch.no_grad(), self.net.autocast():
            self.engine.commit()
        return True

    def _start(self, first_labelled):
        """The engine of the preset's protocol, its frame 0 being video frame `first_labelled`."""
        self.first_labelled = first_labelled
        if self.keep_log:
            self.memory_log = MemoryLog(first_frame=self.first_labelled)
        s = self.settings
        kwargs = dict(top_k=s['top_k'], mem_freq=s['mem_freq'], quality_thr=s['quality_thr'],
                      memory_thr=s['memory_thr'], km_sigma=KM_SIGMA if s['use_km'] else None,
                      memory_policy=s['memory_policy'], memory_log=self.memory_log)
        if self.num_objects is not None:
            kwargs['num_objects'] = self.num_objects
        self.engine = ENGINES[self.preset.protocol](self.net.module, **kwargs)

    # ---- input checks --------------------------------------------------------------------------

    def _check_frame(self, rgb):
        if torch.is_tensor(rgb):
            rgb = rgb.detach().cpu().numpy()
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8:
            raise InputError(f'frame {self.frame_index + 1}: expected uint8 RGB (0..255), got {rgb.dtype} '
                             '(a float image in 0..1: multiply by 255 and cast to uint8)')
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise InputError(f'frame {self.frame_index + 1}: expected an HxWx3 RGB array, got shape {rgb.shape}')
        if self.frame_size is None:
            self.frame_size = rgb.shape[:2]
            self.proc_size = processing_size(*self.frame_size, self.size)
        elif rgb.shape[:2] != self.frame_size:
            raise InputError(f'frame {self.frame_index + 1}: size {rgb.shape[1]}x{rgb.shape[0]}, but the video\'s '
                             f'frames are {self.frame_size[1]}x{self.frame_size[0]}')
        return rgb

    def _check_labels(self, labels):
        where = f'labels of frame {self.frame_index + 1}'
        if torch.is_tensor(labels):
            labels = labels.detach().cpu().numpy()
        labels = np.asarray(labels)
        if labels.dtype == bool:
            labels = labels.astype(np.uint8)
        if not np.issubdtype(labels.dtype, np.integer):
            raise InputError(f'{where}: expected integer object ids, got {labels.dtype}')
        if labels.shape != tuple(self.frame_size):
            raise InputError(f'{where}: shape {labels.shape}, expected the frame\'s {tuple(self.frame_size)}')
        if labels.min(initial=0) < 0 or labels.max(initial=0) > MAX_OBJECT_ID:
            raise InputError(f'{where}: object ids must be 1..{MAX_OBJECT_ID} (0 = background; clear the void '
                             f'label 255), found {int(labels.min())}..{int(labels.max())}')
        ids = object_ids(labels)
        if not ids:
            raise InputError(f'{where}: no object (every pixel is 0)')
        if self.num_objects is not None and len(set(ids) | set(self.objects)) > self.num_objects:
            raise InputError(f'{where}: more objects than num_objects={self.num_objects}')
        return labels.astype(np.uint8)

    # ---- state ---------------------------------------------------------------------------------

    def state_dict(self):
        """Everything the next frame depends on (memory, previous probabilities, counters, reference
        quality, pass state, memory log): tensors and plain types, so torch.load(weights_only=True)
        reads it back. Encodes the current frame's memory first if that is still pending."""
        engine = None
        if self.engine is not None:
            with torch.no_grad(), self.net.autocast():
                engine = self.engine.state_dict()
        return {'format': STATE_FORMAT, 'config': self._config(), 'frame_index': self.frame_index,
                'first_labelled': self.first_labelled,
                'frame_size': None if self.frame_size is None else list(self.frame_size),
                'engine': engine, 'memory_log': None if self.memory_log is None else self.memory_log.state_dict()}

    def load_state_dict(self, state):
        """Restores a state_dict() of a Segmenter made with the same preset and settings."""
        if not isinstance(state, dict) or state.get('format') != STATE_FORMAT:
            raise InputError('not a Segmenter state (expected the dict state_dict() returns)')
        if state['config'] != self._config():
            raise InputError(f'the state was saved with {state["config"]}, this Segmenter has {self._config()}')
        self.frame_index = state['frame_index']
        self.first_labelled = state['first_labelled']
        self.frame_size = None if state['frame_size'] is None else tuple(state['frame_size'])
        self.proc_size = None if self.frame_size is None else processing_size(*self.frame_size, self.size)
        self.engine = self.memory_log = None
        if state['engine'] is not None:
            self._start(state['first_labelled'])
            self.engine.load_state_dict(state['engine'], self.net.device)
            if self.memory_log is not None:
                self.memory_log.load_state_dict(state['memory_log'])

    def save(self, path):
        """Writes state_dict() to `path` atomically (complete or absent)."""
        with atomic_file(path) as tmp:
            torch.save(self.state_dict(), tmp)

    def load(self, path):
        """Restores the state save() wrote to `path`."""
        if not os.path.isfile(path):
            raise InputError(f'{path}: state file not found')
        try:
            state = torch.load(path, map_location=self.net.device, weights_only=True)
        except Exception:
            raise InputError(f'{path}: not a readable Segmenter state (truncated or another file)') from None
        self.load_state_dict(state)

    def _config(self):
        return {'preset': self.preset.name, **self.settings, 'size': self.size, 'num_objects': self.num_objects,
                'memory_log': bool(self.keep_log)}
