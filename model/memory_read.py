"""Space-time memory read: dot-product affinity, (top-k) softmax, weighted read-out."""
import math

import torch


def affinity(mem_key, query_key):
    """mem_key (B,Ck,T,H,W), query_key (B,Ck,H,W) -> (B, T*H*W, H*W) scaled dot products."""
    ck = mem_key.shape[1]
    mk = mem_key.flatten(2).transpose(1, 2)
    return torch.bmm(mk, query_key.flatten(2)) / math.sqrt(ck)


def read_dense(mem_key, mem_value, query_key):
    """Softmax over every memory pixel (training, and inference with top_k=None)."""
    weights = torch.softmax(affinity(mem_key, query_key), dim=1)
    return torch.bmm(mem_value.flatten(2), weights)


def read_top_k(mem_key, mem_value, query_key, top_k):
    """Keeps the k best memory pixels per query pixel and reads only those.

    Gathering the k values directly avoids the dense (T*H*W x H*W) product,
    which dominates the cost on CPU.
    """
    scores, index = torch.topk(affinity(mem_key, query_key), k=top_k, dim=1)           # (B, k, HW)
    weights = torch.softmax(scores, dim=1)
    values = mem_value.flatten(2)                              # (B, Cv, THW)
    out = values.new_zeros(values.shape[0], values.shape[1], index.shape[2])
    for j in range(top_k):  # k small gathers keep peak memory at one (Cv, HW) slice
        picked = torch.gather(values, 2, index[:, j:j + 1].expand(-1, values.shape[1], -1))
        out += picked * weights[:, j:j + 1]
    return out


def read_memory(mem_key, mem_value, query_key, query_value, top_k=None):
    """Returns the read value concatenated with the query value: (B, 2*Cv, H, W)."""
    memory_pixels = mem_key[0, 0].numel()
    if top_k is None or top_k >= memory_pixels:
        mem = read_dense(mem_key, mem_value, query_key)
    else:
        mem = read_top_k(mem_key, mem_value, query_key, top_k)
    return torch.cat([mem.view_as(query_value), query_value], 1)
