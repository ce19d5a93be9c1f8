"""Space-time memory read: dot-product affinity, (top-k) softmax, optional kernel, weighted read-out."""
import math
import warnings

import torch

from util.tensor_util import at_least_fp32

# Gaussian width (in 1/16-resolution pixels) of the published kernelized read (--use_km).
KM_SIGMA = 5.6


def affinity(mem_key, query_key):
    """mem_key (B,Ck,T,H,W), query_key (B,Ck,H,W) -> (B, T*H*W, H*W) scaled dot products."""
    ck = mem_key.shape[1]
    mk = mem_key.flatten(2).transpose(1, 2)
    return torch.bmm(mk, query_key.flatten(2)) / math.sqrt(ck)


def memory_kernel(aff, height, width, sigma):
    """Gaussian around the query position each memory pixel matches best: (B, T*H*W, H*W).

    Suppresses matches far from where a memory pixel's own best match is, so
    similar-looking objects elsewhere in the frame read less of it.
    """
    best = aff.argmax(2)                                       # (B, THW) best query pixel per memory pixel
    best_y, best_x = (best // width).float(), (best % width).float()
    ys = torch.arange(height, device=aff.device).float().repeat_interleave(width)
    xs = torch.arange(width, device=aff.device).float().repeat(height)
    dist2 = (ys - best_y[..., None]) ** 2 + (xs - best_x[..., None]) ** 2
    return torch.exp(-dist2 / (2 * sigma ** 2))


def memory_weights(mem_key, query_key, top_k, km_sigma):
    """Read weights of every query pixel: (weights (B,k,HW), memory indices (B,k,HW)) or dense (B,THW,HW), None.

    For the dense read (top_k None) and the kernelized one (its kernel needs
    every query pixel's affinity at once); the plain top-k read is blocked_top_k_read.
    """
    aff = affinity(mem_key, query_key)
    if km_sigma is None:
        return torch.softmax(aff, dim=1), None
    # Kernelized read: the Gaussian weighs exp(affinity) before the top-k, then the kept ones are renormalised.
    weighted = torch.exp(aff - aff.max(1, keepdim=True)[0]) * memory_kernel(aff, *query_key.shape[-2:], km_sigma)
    index = None
    if top_k is not None:
        weighted, index = torch.topk(weighted, k=top_k, dim=1)
    return weighted / weighted.sum(1, keepdim=True), index


def gather_read(mem_value, weights, index):
    """Weighted sum of the k picked memory values per query pixel.

    Gathering the k values directly avoids the dense (T*H*W x H*W) product,
    which dominates the cost on CPU.
    """
    values = mem_value.flatten(2)                              # (B, Cv, THW)
    out = values.new_zeros(values.shape[0], values.shape[1], index.shape[2])
    for j in range(index.shape[1]):  # k small gathers keep peak memory at one (Cv, HW) slice
        picked = torch.gather(values, 2, index[:, j:j + 1].expand(-1, values.shape[1], -1))
        out += picked * weights[:, j:j + 1]
    return out


# Query pixels per block of blocked_top_k_read on the CPU: as many as keep the block's affinities
# (block x memory pixels, fp32) near 8 MB, so that they stay in cache and memory does not grow with
# the frame size (431 pixels with 3 memory entries at 480p, 56 with 23).
AFFINITY_ELEMENTS = 2 ** 21
# On CUDA the blocks are as large as this fraction of the free device memory allows: a block is ~7
# kernel launches, and many small ones leave the GPU idle between launches.
CUDA_READ_MEMORY_FRACTION = 0.5


def read_block_size(device, query_pixels, memory_pixels, top_k, channels, budget=None):
    """Query pixels per block of blocked_top_k_read on `device`.

    CPU: the cache-sized block above. CUDA: every query pixel of the object at once
    where its working set fits `budget` bytes (default: CUDA_READ_MEMORY_FRACTION of
    the free device memory), else as many as fit.
    """
    if device.type != 'cuda':
        return max(1, AFFINITY_ELEMENTS // memory_pixels)
    if budget is None:
        budget = CUDA_READ_MEMORY_FRACTION * free_cuda_memory(device)
    # per query pixel: its fp32 affinity row, the top-k scores, weights and int64 indices,
    # the k gathered values and the read-out, in fp32
    per_pixel = 4 * memory_pixels + top_k * (4 + 4 + 8 + 4 * channels) + 4 * channels
    return int(max(1, min(query_pixels, budget // per_pixel)))


def free_cuda_memory(device):
    """Bytes the device has free, counting what PyTorch's allocator holds but does not use."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def weighted_sum(weights, index, values):
    """Per query pixel, the sum of its k picked memory values (rows of `values`, (THW, Cv)) times
    their weights: (n, k) weights and indices -> (n, Cv).

    On the CPU as a sparse (n x THW, k per row) times dense product, which reads each picked
    value where it is: gathering them first writes and reads back n x k x Cv floats (80 MB per
    480p frame), half the read's time. CUDA gathers, which its bandwidth makes cheap.
    """
    if values.device.type != 'cpu':
        return torch.bmm(weights.unsqueeze(1), values[index]).squeeze(1)
    n, k = index.shape
    rows = torch.arange(0, (n + 1) * k, k, device=index.device)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is plain
        warnings.simplefilter('ignore')
        sparse = torch.sparse_csr_tensor(rows, index.reshape(-1), weights.reshape(-1), (n, values.shape[0]))
    return sparse @ values


def blocked_top_k_read(mem_key, mem_value, query_key, top_k):
    """The top-k read, a block of query pixels at a time: (B, Cv, HW).

    Each query pixel's affinities to all memory pixels are a contiguous row
    here, so top-k and softmax run along rows, and no (T*H*W x H*W) affinity
    matrix is ever held: about 2x faster on CPU with a full memory (23 entries at 480p) than the dense layout.
    """
    b, ck = mem_key.shape[:2]
    keys = mem_key.flatten(2)                                    # (B, Ck, THW)
    queries = query_key.flatten(2).transpose(1, 2)               # (B, HW, Ck)
    values = mem_value.flatten(2).transpose(1, 2).contiguous()   # (B, THW, Cv): a picked value is one row
    out = values.new_empty(b, queries.shape[1], values.shape[2])
    block = read_block_size(mem_key.device, queries.shape[1], keys.shape[2], top_k, values.shape[2])
    for i in range(b):
        for start in range(0, queries.shape[1], block):
            rows = slice(start, start + block)
            aff = torch.mm(queries[i, rows], keys[i]).div_(math.sqrt(ck))
            scores, index = torch.topk(aff, k=top_k, dim=1)
            out[i, rows] = weighted_sum(torch.softmax(scores, dim=1), index, values[i])
    return out.transpose(1, 2)


def read_memory(mem_key, mem_value, query_key, query_value, top_k=None, km_sigma=None):
    """Returns the read value concatenated with the query value: (B, 2*Cv, H, W).

    top_k None reads every memory pixel (training, --no_top); km_sigma
    enables the kernelized read (--use_km). Always in fp32, also under
    autocast: bf16 affinities would change which memory pixels the top-k keeps.
    """
    with torch.autocast(mem_key.device.type, enabled=False):
        mem_key, mem_value, query_key = at_least_fp32(mem_key), at_least_fp32(mem_value), at_least_fp32(query_key)
        top_k = top_k if top_k is not None and top_k < mem_key[0, 0].numel() else None
        if top_k is not None and km_sigma is None:
            mem = blocked_top_k_read(mem_key, mem_value, query_key, top_k)
        else:
            weights, index = memory_weights(mem_key, query_key, top_k, km_sigma)
            mem = torch.bmm(mem_value.flatten(2), weights) if index is None else gather_read(mem_value, weights, index)
    return torch.cat([mem.view(query_value.shape).to(query_value.dtype), query_value], 1)
