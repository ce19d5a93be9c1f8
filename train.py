"""Trains QDMN (docs/training.md) on one or more processes.

    torchrun --nproc_per_node=2 train.py --id s0-QDMN --stage 0
    python -m torch.distributed.launch --master_port 12345 --nproc_per_node=2 train.py --id s0-QDMN --stage 0
    torchrun --nproc_per_node=2 train.py --id s03-QDMN --stage 2 --load_network saves/s0-QDMN/s0-QDMN_160000.pth
    torchrun --nproc_per_node=2 train.py --id s0-QDMN --stage 0 --load_model saves/s0-QDMN/s0-QDMN_checkpoint.pth
    python train.py ...            # one process, no launcher

Each process trains on its share of the batches (DistributedDataParallel:
NCCL on CUDA, gloo on CPU). Rank 0 logs and writes <saves_root>/<id>/.
"""
import os
import sys

from util.errors import UserInputError, run_main
from util.hyper_para import parse_args

if __name__ == '__main__' and {'-h', '--help'} & set(sys.argv[1:]):
    run_main(parse_args)   # the help, at once: the imports below (torch, the model, the datasets) take seconds

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from datasets.training_data import TrainingData  # noqa: E402
from model.model import QDMNModel, imagenet_file, load_imagenet, load_start_network, read_checkpoint  # noqa: E402
from model.network import QDMN  # noqa: E402
from util.device import configure_cuda  # noqa: E402
from util.distributed import Launch  # noqa: E402
from util.logger import TrainLogger  # noqa: E402


class Distributed(Launch):
    """This process of the training job, its device, and its process group (NCCL on CUDA, gloo on CPU).

    On CUDA the group also has a gloo backend for CPU tensors: NCCL alone rejects
    any collective on a CPU tensor ("No backend type associated with device type cpu").
    """

    def __init__(self, para):
        super().__init__(para.local_rank)
        self.device = self.device_for(para.device)
        self.backend = 'cpu:gloo,cuda:nccl' if self.device.type == 'cuda' else 'gloo'
        configure_cuda(self.device, para.amp, fixed_shapes=True)   # every batch has the same crop size

    def init(self):
        if self.launched:
            dist.init_process_group(self.backend, init_method='env://')
        else:  # a one-process group keeps a single code path (DDP needs a group)
            dist.init_process_group(self.backend, store=dist.HashStore(), rank=0, world_size=1)


def check_run_folder(para):
    if para.no_output:
        return
    if os.path.exists(para.run_dir) and not para.load_model:
        raise UserInputError(f'{para.run_dir}: a run with --id {para.id} exists; pick another --id, or resume '
                             f'it with --load_model {os.path.join(para.run_dir, para.id + "_checkpoint.pth")}')


def starting_weights(para):
    """Validates the weight source before any process starts work; returns (checkpoint, imagenet path)."""
    if para.load_model:
        return read_checkpoint(para.load_model, para.stage), None
    if para.load_network or para.no_imagenet:
        return None, None
    return None, imagenet_file(para.imagenet)


def initial_network(para, imagenet, log):
    torch.manual_seed(para.seed)  # identical fresh initialisation on every rank
    network = QDMN(single_object=para.stage == 0)
    if para.load_network:
        load_start_network(network, para.load_network)
        log.print(f'network weights from {para.load_network}')
    elif imagenet:
        load_imagenet(network, imagenet)
        log.print(f'ResNet trunks from ImageNet weights {imagenet}')
    elif not para.load_model:
        log.print('WARNING: --no_imagenet: training from random weights (tests and debugging only)')
    return network


class Saver:
    """Writes <id>_<it>.pth and <id>_checkpoint.pth, once per iteration; returns the two paths (None if
    this iteration is already saved)."""

    def __init__(self, model, para, it):
        self.model, self.para = model, para
        self.last = it  # a resumed run has nothing new to save before its first step

    def __call__(self, it):
        if self.last == it:
            return None
        prefix = os.path.join(self.para.run_dir, self.para.id)
        paths = f'{prefix}_{it}.pth', f'{prefix}_checkpoint.pth'
        self.model.save_network(paths[0])
        self.model.save_checkpoint(paths[1], it, self.para.stage)
        self.last = it
        return paths


def train(para, ctx):
    data = TrainingData(para, ctx.rank, ctx.world_size)
    checkpoint, imagenet = starting_weights(para)
    if checkpoint is not None and checkpoint['it'] >= para.iterations:
        if ctx.is_main:
            print(f'nothing to do: {para.load_model} is at iteration {checkpoint["it"]} of {para.iterations}')
        return
    ctx.init()
    if ctx.is_main and not para.no_output:
        os.makedirs(para.run_dir, exist_ok=bool(para.load_model))
    log = TrainLogger(None if para.no_output else para.run_dir, ctx.is_main, para.iterations)
    log.log_config(para)
    log.print(f'{ctx.world_size} process(es) on {ctx.device.type} ({ctx.backend}); {len(data.dataset)} samples, '
              f'{data.iterations_per_epoch} iterations per epoch, {data.total_epochs} epochs')

    model = QDMNModel(initial_network(para, imagenet, log), para, ctx.device)
    it = 0
    if checkpoint is not None:
        it = model.load_checkpoint(checkpoint)
        log.print(f'resumed {para.load_model} at iteration {it}')
        del checkpoint  # frees the loaded tensors (a second copy of the network and optimiser)
    torch.manual_seed(para.seed + it + 7919 * ctx.rank)  # augmentation draws when --num_workers 0
    save = Saver(model, para, it) if ctx.is_main and not para.no_output else None

    model.train()
    log.start(it)
    epoch = it // data.iterations_per_epoch  # the curriculum position follows the iteration
    try:
        while it < para.iterations:
            loader, skips = data.epoch(epoch)
            if skips:
                log.print(f'epoch {epoch}: max skip ' + ', '.join(f'{k} {v}' for k, v in skips.items()))
            for batch in loader:
                out = model.do_pass(batch, it)
                it += 1
                if it % para.log_every == 0 or it == para.iterations:
                    log.report(it, model.report())
                if it % para.image_every == 0:
                    log.images(it, batch, out)
                if save and it % para.save_every == 0:
                    save(it)
                if it >= para.iterations:
                    break
            epoch += 1
    except BaseException as stop:
        # As published, a run that stops on an error or Ctrl-C keeps its progress (not with --debug).
        paths = save(it) if save and not para.debug else None
        if paths:
            log.print(f'training stopped at iteration {it} ({type(stop).__name__}): saved {paths[0]} and {paths[1]}')
        raise
    if save:
        save(it)
        log.print(f'saved {para.run_dir} at iteration {it}')
    log.close()


def main():
    para = parse_args()
    ctx = Distributed(para)
    check_run_folder(para)
    try:
        train(para, ctx)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == '__main__':
    run_main(main)
