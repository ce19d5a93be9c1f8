"""Three-frame training samples from annotated videos (DAVIS, YouTube-VOS, BL30K).

Layout (DAVIS keeps its frames one level deeper, in 480p/):

    <root>/JPEGImages[/480p]/<video>/<frame>.jpg
    <root>/Annotations[/480p]/<video>/<frame>.png   (palette indices or binary 0/255)

Only frames with an annotation are sampled. A sample is three frames in
order (the published clamped sampler), reversed half of the time, and up to two
objects of the first sampled frame (docs/training.md).
"""
import os

import torch
from torch.utils.data import Dataset

from datasets.transforms import VideoTransform, normalise, to_tensors
from util.errors import UserInputError
from util.image_io import read_label_mask, read_rgb
from util.labels import VOID

NUM_FRAMES = 3
# A sample needs an object in its first frame (it seeds the memory). Redraw frames and crop
# in the same video this many times, then in other random videos, then give up.
SAME_VIDEO_ATTEMPTS = 5
TOTAL_ATTEMPTS = 20


def vos_folders(root):
    """(frames folder, annotations folder) of a VOS dataset root, with or without 480p/."""
    images, annotations = os.path.join(root, 'JPEGImages'), os.path.join(root, 'Annotations')
    if os.path.isdir(os.path.join(images, '480p')):
        images, annotations = os.path.join(images, '480p'), os.path.join(annotations, '480p')
    if not os.path.isdir(images) or not os.path.isdir(annotations):
        raise UserInputError(f'{root}: expected JPEGImages/<video>/ and Annotations/<video>/ '
                             '(or JPEGImages/480p/ and Annotations/480p/ for DAVIS)')
    return images, annotations


def read_subset(path):
    """Video names, one per line (blank lines ignored)."""
    if not os.path.isfile(path):
        raise UserInputError(f'{path}: subset file not found')
    with open(path) as f:
        return {line.strip() for line in f if line.strip()}


def sample_frame_indices(num_frames, max_skip):
    """Three frame indices by the published QDMN clamped scheme; reversed with probability 0.5.

    Each next frame lies 1..max_skip after the previous one (the published
    loader's randint(1, jump + 1); STCN's own loader allows one frame more),
    clamped so the triplet stays inside the video; near the end two indices may coincide.
    """
    jump = min(num_frames, max_skip)
    start = int(torch.randint(0, num_frames - jump + 1, ()))
    second = min(start + int(torch.randint(1, jump + 1, ())), num_frames - jump, num_frames - 1)
    third = min(second + int(torch.randint(1, jump + 1, ())), num_frames - jump // 2, num_frames - 1)
    indices = [start, second, third]
    return indices[::-1] if torch.rand(()) < 0.5 else indices


def large_enough(labels, obj):
    """BL30K's small-object filter, as published: an object must cover more than 30x30 pixels of the
    first frame, or more than 10x10 there while staying under 20x20 in the two others."""
    first, *others = [int((frame == obj).sum()) for frame in labels]
    return first > 30 * 30 or (first > 10 * 10 and max(others) < 20 * 20)


def pick(values):
    return values[int(torch.randint(len(values), ()))]


class VOSDataset(Dataset):
    """`max_skip` is set by the curriculum; `skip_divisor` scales it for lower frame rates
    (YouTube-VOS annotates every 5th frame, so its gaps are divided by 5)."""

    def __init__(self, root, size=384, max_skip=5, skip_divisor=1, subset=None, crop_scale=(0.36, 1.0),
                 drop_small_objects=False):
        self.root = root
        self.drop_small_objects = drop_small_objects
        self.image_dir, self.mask_dir = vos_folders(root)
        self.max_skip = max_skip
        self.skip_divisor = skip_divisor
        self.transform = VideoTransform(size, crop_scale)
        names = sorted(os.listdir(self.image_dir))
        if subset is not None:
            wanted = read_subset(subset)
            names = [n for n in names if n in wanted]
        self.videos, self.frames = [], {}
        for name in names:
            frames = self.annotated_frames(name)
            if len(frames) >= NUM_FRAMES:  # shorter videos cannot give a sample
                self.videos.append(name)
                self.frames[name] = frames
        if not self.videos:
            raise UserInputError(f'{root}: no video with at least {NUM_FRAMES} annotated frames'
                                 + (f' among the videos listed in {subset}' if subset else ''))

    def annotated_frames(self, video):
        folder = os.path.join(self.image_dir, video)
        if not os.path.isdir(folder):
            return []
        stems = sorted(f[:-4] for f in os.listdir(folder) if f.lower().endswith('.jpg'))
        return [s for s in stems if os.path.isfile(os.path.join(self.mask_dir, video, s + '.png'))]

    def __len__(self):
        return len(self.videos)

    @property
    def effective_skip(self):
        return max(1, self.max_skip // self.skip_divisor)

    def read_frame(self, video, index):
        """(3,H,W) uint8 image and (H,W) labels of one annotated frame, views of the decoded arrays."""
        stem = self.frames[video][index]
        rgb = read_rgb(os.path.join(self.image_dir, video, stem + '.jpg'))
        labels, _ = read_label_mask(os.path.join(self.mask_dir, video, stem + '.png'))
        if rgb.shape[:2] != labels.shape:
            raise UserInputError(f'{os.path.join(self.mask_dir, video, stem)}.png: mask size '
                                 f'{labels.shape} differs from the frame\'s {rgb.shape[:2]}')
        return to_tensors(rgb, labels)

    def __getitem__(self, idx):
        decoded = {}  # (video, index) -> frame: a redraw in the same video decodes no frame twice
        for attempt in range(TOTAL_ATTEMPTS):
            video = self.videos[idx] if attempt < SAME_VIDEO_ATTEMPTS else pick(self.videos)
            indices = sample_frame_indices(len(self.frames[video]), self.effective_skip)
            for i in indices:
                if (video, i) not in decoded:
                    decoded[video, i] = self.read_frame(video, i)
            images, labels = self.transform([decoded[video, i][0] for i in indices],
                                            [decoded[video, i][1] for i in indices])
            objects = [int(o) for o in torch.unique(labels[0]) if o not in (0, VOID)]
            if self.drop_small_objects:
                objects = [o for o in objects if large_enough(labels, o)]
            if objects:
                break
            if attempt + 1 >= SAME_VIDEO_ATTEMPTS:  # other videos from now on
                decoded.clear()
        else:
            raise UserInputError(f'{self.root}: {TOTAL_ATTEMPTS} sampled frame triplets showed no object in '
                                 'their first frame; are the annotations empty?')
        target = pick(objects)
        rest = [o for o in objects if o != target]
        second = pick(rest) if rest else None
        second_mask = labels == second if second is not None else torch.zeros_like(labels, dtype=torch.bool)
        masks = torch.stack([labels == target, second_mask], 1)
        cls_gt = masks[:, 0].long() + 2 * masks[:, 1].long()
        return {
            'rgb': normalise(images),
            'masks': masks.float(),                                    # (T,2,H,W)
            'cls_gt': cls_gt,                                          # (T,H,W) 0 bg, 1, 2
            'selector': torch.tensor([1.0, float(second is not None)]),
            'name': video,
        }
