"""Training side of QDMN: the two-step propagation forward, the loss, the optimiser, checkpoints.

One training sample is three frames of a video (or three warps of one
image). Frame 0 is memorised with its ground truth, frame 1 is segmented
from that memory, memorised with its own prediction, and frame 2 is
segmented from both. The quality head scores the predictions of frames 1
and 2 and learns to predict their IoU with the ground truth.
"""
import math
import os
from collections import Counter, defaultdict

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from model.aggregate import aggregate_logits
from model.checkpoint import MEMORY_CONV1, atomic_save, load_file, load_network, read_state_dict
from model.losses import BootstrappedCE, intersection_union, quality_loss, quality_target
from model.resnet import IMAGENET_URL, imagenet_to_trunk
from util.device import autocast
from util.errors import UserInputError
from util.tensor_util import at_least_fp32


def memorize(net, frame, masks, activate_score=True):
    """Encodes one frame for every object of every sample.

    frame (B,3,H,W), masks (B,K,H,W) -> key (B*K,128,1,h,w), value (B*K,512,1,h,w), score (B,K).
    Each object's memory also sees the sum of the other objects' masks.
    """
    b, k = masks.shape[:2]
    others = masks.sum(1, keepdim=True) - masks
    key, value, score = net.encode_memory(frame.repeat_interleave(k, 0), masks.flatten(0, 1).unsqueeze(1),
                                          others.flatten(0, 1).unsqueeze(1), activate_score)
    return key, value, score.view(b, k)


def segment(net, query, prev_masks, mem_key, mem_value, selector):
    """Segments one query frame of every sample from the objects' memories.

    query = (f16, f8, f4) of the frame, prev_masks (B,K,H,W) gate the query
    (foreground = max over objects). Returns (background, objects) logits
    (B,K+1,H,W) and the aggregated object probabilities (B,K,H,W).
    """
    f16, f8, f4 = query
    b, k = selector.shape
    # The gate is detached, as published: no gradient reaches the previous prediction through it.
    _, qk, qv = net.query_key_value(f16, prev_masks.detach().max(1, keepdim=True)[0])
    # Objects are read one by one: every sample's query is repeated once per object.
    qk, qv, f8, f4 = (x.repeat_interleave(k, 0) for x in (qk, qv, f8, f4))
    logits = net.segment_logits(net.read(mem_key, mem_value, qk, qv), f8, f4)
    # A sample with one object still carries a second, empty slot: zero it before aggregating.
    prob = torch.sigmoid(at_least_fp32(logits)).view(b, k, *logits.shape[-2:]) * selector[:, :, None, None]
    agg_logits = aggregate_logits(prob, dim=1)
    return agg_logits, torch.softmax(agg_logits, dim=1)[:, 1:]


class TwoStepPropagation(nn.Module):
    """The whole training forward as one module call, so DDP sees one forward per iteration.

    activate_score=False returns the quality scores before the head's final
    ReLU, so the quality loss keeps a gradient when a score falls below 0
    (docs/training.md, "The quality head"); inference always applies the ReLU.
    """

    def __init__(self, network, activate_score=True):
        super().__init__()
        self.network = network
        self.activate_score = activate_score

    def forward(self, rgb, masks, selector):
        """rgb (B,3,3,H,W), masks (B,3,K,H,W) ground truth, selector (B,K) 1 where the object exists."""
        net = self.network
        b = rgb.shape[0]
        f16, f8, f4 = net.encode_query(rgb[:, 1:].flatten(0, 1))  # frame 0 is only memorised
        query = [tuple(f.view(b, 2, *f.shape[1:])[:, i] for f in (f16, f8, f4)) for i in range(2)]

        key0, value0, _ = memorize(net, rgb[:, 0], masks[:, 0])
        logits1, prob1 = segment(net, query[0], masks[:, 0], key0, value0, selector)
        key1, value1, score1 = memorize(net, rgb[:, 1], prob1, self.activate_score)
        logits2, prob2 = segment(net, query[1], prob1, torch.cat([key0, key1], 2),
                                 torch.cat([value0, value1], 2), selector)
        _, _, score2 = memorize(net, rgb[:, 2], prob2, self.activate_score)  # only its score is needed
        return {'logits': [logits1, logits2], 'prob': [prob1, prob2],
                'score': [at_least_fp32(score1), at_least_fp32(score2)]}


def training_loss(out, data, it, bootstrapped_ce, quality_weight):
    """Per predicted frame: bootstrapped CE + quality_weight * MSE(score, IoU target), as published.

    Returns the total loss (tensor) and detached statistics for logging
    (sums, so they can be added over iterations and ranks).
    """
    present = data['selector'] > 0.5   # counted by multiplying, not indexing: no wait for the GPU
    total, stats = 0, defaultdict(float)
    for i, (logits, prob, score) in enumerate(zip(out['logits'], out['prob'], out['score']), start=1):
        ce, p = bootstrapped_ce.batch(logits, data['cls_gt'][:, i], data['selector'], it)
        target = quality_target(prob, data['masks'][:, i])
        q_loss = quality_loss(score, target)
        total = total + ce + quality_weight * q_loss
        stats[f'ce_{i}'] = ce.detach()
        stats[f'quality_{i}'] = q_loss.detach()
        inter, union = intersection_union(prob.detach() > 0.5, data['masks'][:, i] > 0.5)
        stats['intersection'] += (inter * present).sum()
        stats['union'] += (union * present).sum()
        add_agreement_sums(stats, score.detach().mean(1), target)
        stats['p'] = torch.tensor(p)
    stats['loss'] = total.detach()
    return total, dict(stats)


def add_agreement_sums(stats, score, target):
    """Sums from which the report derives the score-vs-IoU agreement (Pearson r, mean |score - IoU|)."""
    score, target = score.double(), target.double()
    stats['n'] += score.numel()
    stats['s'] += score.sum()
    stats['t'] += target.sum()
    stats['ss'] += (score * score).sum()
    stats['tt'] += (target * target).sum()
    stats['st'] += (score * target).sum()
    stats['abs_err'] += (score - target).abs().sum()
    stats['zero_scores'] += (score <= 0).sum()  # what the deployed head (ReLU) scores 0


def agreement(sums):
    """Pearson r (nan when either side is constant), mean |score - IoU|, mean score, fraction of zero scores."""
    n = max(sums['n'], 1)
    cov = sums['st'] / n - sums['s'] * sums['t'] / n ** 2
    var_s = sums['ss'] / n - (sums['s'] / n) ** 2
    var_t = sums['tt'] / n - (sums['t'] / n) ** 2
    r = cov / math.sqrt(var_s * var_t) if var_s > 1e-12 and var_t > 1e-12 else float('nan')
    return {'score_iou_r': r, 'score_iou_abs_err': sums['abs_err'] / n, 'mean_score': sums['s'] / n,
            'mean_target': sums['t'] / n, 'zero_score_fraction': sums['zero_scores'] / n}


# Statistics reported as ratios of sums rather than per-iteration means.
SUMMED = ('intersection', 'union', 'n', 's', 't', 'ss', 'tt', 'st', 'abs_err', 'zero_scores')


class QDMNModel:
    """Optimisation of a QDMN network: DDP wrapper, Adam + MultiStepLR, logging, save/load."""

    def __init__(self, network, para, device):
        self.para = para
        self.device = device
        self.network = network.to(device)
        self.ddp = TwoStepPropagation(self.network, activate_score=para.quality_fit == 'published')
        if dist.is_initialized():  # train.py always has a group; notebooks and tests may not
            self.ddp = DistributedDataParallel(
                self.ddp, device_ids=[device.index] if device.type == 'cuda' else None,
                forward_sync_buffers=False,     # BatchNorm statistics are frozen: nothing to sync per step
                gradient_as_bucket_view=True)   # gradients live in the all-reduce buckets: no extra copy
        # fused: one pass over each parameter; on CPU ~10x faster than the per-op update, same result.
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=para.lr, weight_decay=para.weight_decay,
                                          fused=True)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, para.steps, para.gamma)
        self.scaler = torch.amp.GradScaler(device.type, enabled=para.amp and device.type == 'cuda')
        self.bootstrapped_ce = BootstrappedCE(para.bootstrap_start, para.bootstrap_end, para.bootstrap_p)
        self.window = defaultdict(float)  # statistics summed since the last report
        self.window_its = 0

    def train(self):
        # As in the published training, the network runs in eval mode: BatchNorm keeps its
        # (ImageNet) statistics, which batches of 8 small crops would only make worse.
        self.ddp.eval()
        return self

    def do_pass(self, data, it):
        """One optimisation step on a batch; returns the forward outputs (for sample images)."""
        data = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in data.items()}
        with autocast(self.device, self.para.amp):
            out = self.ddp(data['rgb'], data['masks'], data['selector'])
        loss, stats = training_loss(out, data, it, self.bootstrapped_ce, self.para.quality_weight)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        # Checked after backward, not before: reading the loss waits for the GPU to finish, and
        # backward is already queued by then; the optimiser step is still ahead.
        if not torch.isfinite(loss):
            raise FloatingPointError(f'loss is {loss.item()} at iteration {it}')
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        for k, v in stats.items():   # the device's statistics summed there: read only at the report
            on_device = torch.is_tensor(v) and v.device == self.device
            self.window[k] = self.window[k] + (v.double() if on_device else float(v))
        self.window_its += 1
        return out

    def report(self):
        """Averages the statistics since the last report over iterations and ranks (collective call).

        The sums are on the training device, which the process group's backend serves (NCCL on CUDA).
        """
        keys = sorted(self.window)
        values = [self.window[k] for k in keys] + [float(self.window_its)]
        sums = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=self.device) for v in values])
        if dist.is_initialized():
            dist.all_reduce(sums)
        values, its = dict(zip(keys, sums[:-1].tolist())), max(sums[-1].item(), 1)
        self.window.clear()
        self.window_its = 0
        scalars = {k: values[k] / its for k in keys if k not in SUMMED}
        scalars['iou'] = values['intersection'] / max(values['union'], 1)
        scalars.update(agreement(values))
        scalars['lr'] = self.scheduler.get_last_lr()[0]
        return scalars

    # --- saving and resuming -------------------------------------------------------------

    def save_network(self, path):
        atomic_save(self.network.state_dict(), path)

    def save_checkpoint(self, path, it, stage):
        """The resumable state, and the batch it was trained with (model/resume.py compares it on resume)."""
        world_size = dist.get_world_size() if dist.is_initialized() else 1
        atomic_save({
            'it': it,
            'stage': stage,
            'network': self.network.state_dict(),
            'optimizer': self.optimizer.state_dict(),
            'scheduler': self.scheduler.state_dict(),
            'scaler': self.scaler.state_dict(),
            'run': {'batch_size': self.para.batch_size, 'world_size': world_size},
        }, path)

    def load_checkpoint(self, checkpoint):
        """Restores network, optimiser, scheduler and scaler from `read_checkpoint`'s dict; returns the iteration."""
        load_network(self.network, checkpoint['network'], source=checkpoint['path'])
        optimizer = checkpoint['optimizer']
        if checkpoint['published']:
            optimizer = reindex_published_optimizer(optimizer, self.network, checkpoint['path'])
        self.optimizer.load_state_dict(optimizer)
        for group in self.optimizer.param_groups:  # a loaded group brings the saver's options: keep ours
            group.update(fused=True, foreach=None)
        self.scheduler.load_state_dict(checkpoint['scheduler'])
        if checkpoint.get('scaler'):
            self.scaler.load_state_dict(checkpoint['scaler'])
        return checkpoint['it']

    def follow_schedule(self, it):
        """After a resume with another --lr, --steps, --gamma or --weight_decay: the loaded optimiser and
        scheduler continue at iteration `it` as if the run had used them from the start."""
        p = self.para
        lr = p.lr * p.gamma ** sum(step <= it for step in p.steps)
        self.scheduler.base_lrs = [p.lr] * len(self.optimizer.param_groups)
        self.scheduler.milestones = Counter(p.steps)
        self.scheduler.gamma = p.gamma
        self.scheduler.last_epoch = it
        for group in self.optimizer.param_groups:
            group.update(lr=lr, initial_lr=p.lr, weight_decay=p.weight_decay)
        self.scheduler._last_lr = [lr] * len(self.optimizer.param_groups)


# The published network registers its modules in this order, so its optimiser state is indexed by
# parameters in this order (inside each module the order is the same as ours).
PUBLISHED_MODULE_ORDER = ('mask_rgb_encoder', 'rgb_encoder', 'kv_m_f16', 'kv_q_f16', 'decoder', 'aspp', 'score',
                          'concat_conv')


def reindex_published_optimizer(state_dict, network, path):
    """A published Adam state dict (one group, parameters in the published order) in our parameter order."""
    params = list(network.named_parameters())
    # Stable sort: the published position j holds our parameter published[j].
    published = sorted(range(len(params)), key=lambda i: PUBLISHED_MODULE_ORDER.index(params[i][0].split('.')[0]))
    groups = state_dict['param_groups']
    if len(groups) != 1 or len(groups[0]['params']) != len(params):
        raise UserInputError(f'{path}: optimiser state for {sum(len(g["params"]) for g in groups)} parameters in '
                             f'{len(groups)} group(s); QDMN has {len(params)} in one')
    state = {}
    for j, saved_id in enumerate(groups[0]['params']):
        if saved_id in state_dict['state']:
            ours = published[j]
            moments = state_dict['state'][saved_id]
            if moments['exp_avg'].shape != params[ours][1].shape:
                raise UserInputError(f'{path}: optimiser state of shape {tuple(moments["exp_avg"].shape)} at '
                                     f'{params[ours][0]} ({tuple(params[ours][1].shape)}): not a QDMN checkpoint')
            state[ours] = moments
    return {'state': state, 'param_groups': [{**groups[0], 'params': list(range(len(params)))}]}


def read_checkpoint(path, stage):
    """Reads a resumable `<id>_checkpoint.pth`, ours or the published one, and checks it belongs to `stage`.

    Ours record their stage; the published ones (it, network, optimizer, scheduler) do not, so
    their network tells: single-object weights belong to stage 0, two-object ones to stages 1 and 2.
    """
    data = load_file(path)
    needed = ('it', 'network', 'optimizer', 'scheduler')
    if not isinstance(data, dict) or any(k not in data for k in needed) or not isinstance(data['network'], dict):
        raise UserInputError(f'{path}: not a resumable training checkpoint (needs {", ".join(needed)}); '
                             'to start a new run from network weights use --load_network')
    data['network'] = {k.removeprefix('module.'): v for k, v in data['network'].items()}
    data['published'] = 'stage' not in data
    if data['published']:
        conv1 = data['network'].get(MEMORY_CONV1)
        single = conv1 is not None and conv1.dim() == 4 and conv1.shape[1] == 4
        if single != (stage == 0):
            kind = 'single-object (stage 0)' if single else 'two-object (stage 1 or 2)'
            raise UserInputError(f'{path}: checkpoint of a {kind} network, cannot resume it as stage {stage} '
                                 f'(start stage {stage} from its weights with --load_network instead)')
    elif data['stage'] != stage:
        raise UserInputError(f'{path}: checkpoint of stage {data["stage"]}, cannot resume it as stage {stage} '
                             f'(start stage {stage} from its weights with --load_network instead)')
    data['path'] = path
    return data


# --- starting weights ----------------------------------------------------------------------

def imagenet_file(path=None):
    """The torchvision ResNet-50 weights: `path` if given, else torchvision's cache. Never downloads."""
    if path:
        if not os.path.isfile(path):
            raise UserInputError(f'{path}: ImageNet weights file not found (--imagenet)')
        return path
    cache = os.path.join(torch.hub.get_dir(), 'checkpoints')
    # The original release and torchvision's re-hosted copy of the same (V1) weights.
    for name in (os.path.basename(IMAGENET_URL), 'resnet50-0676ba61.pth'):
        if os.path.isfile(os.path.join(cache, name)):
            return os.path.join(cache, name)
    raise UserInputError(f'no ImageNet ResNet-50 weights for a fresh start: download {IMAGENET_URL} into '
                         f'{cache}/ or pass its path with --imagenet (or --load_network / --load_model)')


def load_imagenet(network, path):
    """Initialises both ResNet trunks from torchvision's ResNet-50 (conv biases and mask channels excepted)."""
    source = read_state_dict(path)
    conv1 = source.get('conv1.weight')
    if conv1 is None or tuple(conv1.shape) != (64, 3, 7, 7):
        raise UserInputError(f'{path}: not a torchvision ResNet-50 state dict (no 64x3x7x7 conv1.weight)')
    trunks = ((network.rgb_encoder, 'res2', 3), (network.mask_rgb_encoder, 'layer1', 5 - network.single_object))
    for trunk, layer1_name, channels in trunks:
        weights = imagenet_to_trunk(source, layer1_name, channels)
        conv_biases = {f'{name}.bias': torch.zeros_like(m.bias)
                       for name, m in trunk.named_modules() if isinstance(m, nn.Conv2d)}
        # torchvision's convolutions have no bias: ours start at zero, as published.
        missing, unexpected = trunk.load_state_dict({**conv_biases, **weights}, strict=False)
        # Old files lack num_batches_tracked.
        missing = [k for k in missing if not k.endswith('num_batches_tracked')]
        if missing or unexpected:
            raise UserInputError(f'{path}: not a torchvision ResNet-50 state dict '
                                 f'(missing {missing[:3]}, unexpected {unexpected[:3]})')


def widen_to_multi_object(state_dict):
    """Single-object weights -> two-object layout: mask_rgb_encoder.conv1 gets a 5th input channel
    (the other objects' mask), initialised orthogonally."""
    weight = state_dict[MEMORY_CONV1]
    extra = torch.empty(weight.shape[0], 1, *weight.shape[2:], dtype=weight.dtype)
    torch.nn.init.orthogonal_(extra)
    return {**state_dict, MEMORY_CONV1: torch.cat([weight, extra], 1)}


def load_start_network(network, path):
    """--load_network: weights of any stage; a single-object network is widened for stages 1 and 2."""
    state_dict = read_state_dict(path)
    conv1 = state_dict.get(MEMORY_CONV1)
    source_single = conv1 is not None and conv1.dim() == 4 and conv1.shape[1] == 4
    if source_single and not network.single_object:
        state_dict = widen_to_multi_object(state_dict)
    elif network.single_object and conv1 is not None and not source_single:
        raise UserInputError(f'{path}: a two-object network; stage 0 trains the single-object network '
                             '(start stage 1 or 2 from it instead)')
    load_network(network, state_dict, source=path)
