"""The network ready for inference: load_network(), and the checkpoint check the s012 download uses."""
from dataclasses import dataclass

import torch

from model.checkpoint import load_network as load_state_dict_strictly, read_state_dict
from model.inference_mode import inference_network
from model.network import QDMN
from util.device import autocast, resolve_device
from util.download import DEFAULT_MODEL, ensure_model as ensure_file


@dataclass(frozen=True)
class Network:
    """A QDMN network optimised for inference on `device`, in `precision` ('fp32', 'fp16' or 'bf16')."""
    module: torch.nn.Module
    device: torch.device
    precision: str = 'fp32'

    def autocast(self):
        """The precision context its calls run in (fp16 autocast on CUDA; CPU bf16 is in the weights)."""
        return autocast(self.device, self.precision == 'fp16')


def verify_checkpoint(path):
    """Raises UserInputError unless `path` loads strictly into the multi-object QDMN."""
    load_state_dict_strictly(QDMN(single_object=False), read_state_dict(path), source=path)


def ensure_model(path=DEFAULT_MODEL):
    """`path`; the published s012 is downloaded there first when it is the default path and missing."""
    return ensure_file(path, verify_checkpoint)


def load_network(path=DEFAULT_MODEL, device='cpu', amp=False, fixed_shapes=True):
    """The checkpoint at `path` (s012 downloaded to the default path when missing) built for inference.

    device: 'cpu', 'cuda', 'cuda:N' or a torch.device. amp: fp16 on CUDA, bfloat16 convolutions on a
    CPU with native bf16 (else fp32, with a warning). fixed_shapes: every object is labelled on the
    first frame, so the shapes stay fixed through a video and CUDA may tune kernels per shape (pass
    False when objects join mid-video). Errors a user can fix raise UserInputError.
    """
    device = device if isinstance(device, torch.device) else resolve_device(device)
    module, precision = inference_network(ensure_model(path), device, amp, fixed_shapes=fixed_shapes)
    return Network(module, device, precision)


def as_network(net):
    """A Network for `net`: a Network as it is, or a bare QDMN module (fp32, on its parameters' device)."""
    if isinstance(net, Network):
        return net
    if isinstance(net, torch.nn.Module):
        return Network(net, next(net.parameters()).device)
    raise TypeError(f'expected a qdmn Network (load_network) or a QDMN module, got {type(net).__name__}')
