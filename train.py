"""Trains QDMN (docs/training.md) on one or more processes.

    torchrun --nproc_per_node=2 train.py --id s0-QDMN --stage 0
    python -m torch.distributed.launch --master_port 12345 --nproc_per_node=2 train.py --id s0-QDMN --stage 0
    torchrun --nproc_per_node=2 train.py --id s03-QDMN --stage 2 --load_network saves/s0-QDMN/s0-QDMN_160000.pth
    torchrun --nproc_per_node=2 train.py --id s0-QDMN --stage 0 --load_model saves/s0-QDMN/s0-QDMN_checkpoint.pth
    torchrun --nproc_per_node=2 --max_restarts=3 train.py --id s0-QDMN --stage 0 --resume   # preemptible
    python train.py ...            # one process, no launcher

Each process trains on its share of the batches (DistributedDataParallel:
NCCL on CUDA, gloo on CPU). Rank 0 decides where the run starts, logs and writes
<saves_root>/<id>/; the others wait for its saves. Faults (docs/training.md): a torchrun
restart continues from the latest checkpoint, SIGTERM saves one, saves are durable.
"""
import datetime
import os
import sys
from typing import NamedTuple

from util.errors import UserInputError, run_main
from util.hyper_para import parse_args

if __name__ == '__main__' and {'-h', '--help'} & set(sys.argv[1:]):
    run_main(parse_args)   # the help, at once: the imports below (torch, the model, the datasets) take seconds

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from datasets.training_data import TrainingData  # noqa: E402
from model.checkpoint import remove_stale_temp_files  # noqa: E402
from model.model import QDMNModel, imagenet_file, load_imagenet, load_start_network, read_checkpoint  # noqa: E402
from model.network import QDMN  # noqa: E402
from model.resume import append_start_record, checkpoint_to_resume, data_seed, resumed_settings  # noqa: E402
from util.device import configure_cuda  # noqa: E402
from util.distributed import Launch  # noqa: E402
from util.logger import TrainLogger  # noqa: E402
from util.termination import termination_requests  # noqa: E402


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
        self.job_store = self.save_group = None

    def init(self, para):
        """Joins the group (its collectives wait --dist_timeout for a peer), and a gloo group in which the
        others wait for rank 0's saves up to --save_timeout. Keeps the job's store: under torchrun it is
        the agent's, which outlives the restarts of the workers."""
        timeout = datetime.timedelta(seconds=para.dist_timeout) if para.dist_timeout else None
        if self.launched:
            store, _, _ = next(dist.rendezvous('env://', **({'timeout': timeout} if timeout else {})))
        else:  # a one-process group keeps a single code path (DDP needs a group)
            store = dist.HashStore()
        self.job_store = getattr(store, 'underlying_store', store)
        # Each attempt's own keys: a restarted group must not find the addresses of the killed one.
        attempt = dist.PrefixStore(f'attempt-{os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)}', self.job_store)
        dist.init_process_group(self.backend, store=attempt, rank=self.rank, world_size=self.world_size,
                                timeout=timeout)
        self.save_group = dist.new_group(backend='gloo', timeout=datetime.timedelta(seconds=para.save_timeout))

    def decide(self, plan):
        """plan() on rank 0 alone; every process gets its result (plain data: pickled). If it failed, rank 0
        raises the error and the others end quietly with its exit code (one message; no race on the decision)."""
        outcome = [None]
        if self.is_main:
            try:
                outcome = [(plan(), None)]
            except Exception as e:
                outcome = [(None, 2 if isinstance(e, UserInputError) else 1)]
                dist.broadcast_object_list(outcome, src=0)
                raise
        dist.broadcast_object_list(outcome, src=0)
        result, failed = outcome[0]
        if failed:
            raise SystemExit(failed)
        return result

    def wait_for_save(self):
        dist.barrier(group=self.save_group)


class Start(NamedTuple):
    """Where this run starts, as rank 0 decided it."""
    checkpoint: str = None   # resumed from (None: fresh)
    it: int = 0
    imagenet: str = None     # ResNet weights of a fresh start
    settings: dict = {}      # the checkpoint's settings that this run takes (those not given now)
    schedule_changed: bool = False
    notes: tuple = ()        # lines to print


def claim_key(para):
    return f'qdmn-train/{os.path.abspath(para.run_dir)}'


def plan_start(para, ctx, loaded):
    """Rank 0: decides where the run starts, checks its data, and only then claims the run folder for this
    job (a typo in a flag leaves no folder behind). Its checkpoint and data are kept in `loaded`."""
    restarted = ctx.job_store.check([claim_key(para)])   # set by an earlier attempt of this job only
    path = checkpoint_to_resume(para, restarted)
    start = Start()
    if path is not None:
        checkpoint = loaded['checkpoint'] = read_checkpoint(path, para.stage)
        settings, schedule_changed, lines = resumed_settings(para, checkpoint, ctx.world_size)
        vars(para).update(settings)
        start = Start(path, checkpoint['it'], None, settings, schedule_changed, tuple(lines))
    loaded['data'] = TrainingData(para, ctx.rank, ctx.world_size, data_seed(para.seed, start.it))
    if path is None and not (para.load_network or para.no_imagenet):
        start = start._replace(imagenet=imagenet_file(para.imagenet))
    if not para.no_output:
        os.makedirs(para.run_dir, exist_ok=True)
        ctx.job_store.set(claim_key(para), 'claimed')
        removed = remove_stale_temp_files(para.run_dir)
        if removed:
            start = start._replace(notes=start.notes + (f'removed what killed saves left in {para.run_dir}: '
                                                        + ', '.join(removed),))
    return start


def initial_network(para, start, log):
    torch.manual_seed(para.seed)  # identical fresh initialisation on every rank
    network = QDMN(single_object=para.stage == 0)
    if para.load_network and start.checkpoint is None:   # (--resume: a checkpoint supersedes it)
        load_start_network(network, para.load_network)
        log.print(f'network weights from {para.load_network}')
    elif start.imagenet:
        load_imagenet(network, start.imagenet)
        log.print(f'ResNet trunks from ImageNet weights {start.imagenet}')
    elif start.checkpoint is None:
        log.print('WARNING: --no_imagenet: training from random weights (tests and debugging only)')
    return network


class Saver:
    """Rank 0 writes the resumable <id>_checkpoint.pth (first: a restart needs it) and, for a snapshot, the
    network <id>_<it>.pth; the other processes wait for it in a barrier of their own timeout."""

    def __init__(self, model, para, ctx, log, it):
        self.model, self.para, self.ctx, self.log = model, para, ctx, log
        self.writes = ctx.is_main and not para.no_output
        self.saved = {'checkpoint': it, 'snapshot': it}  # a resumed run has nothing new to save before its first step
        self.failed = False

    def __call__(self, it, snapshot):
        """Collective call; returns the paths written."""
        paths = self.write(it, snapshot) if self.writes else []
        self.ctx.wait_for_save()
        if paths:
            self.log.print(f'saved {" and ".join(paths)} at iteration {it}')
        return paths

    def write(self, it, snapshot=True):
        """Rank 0 alone: the files of iteration `it` not yet written (none after a failed save)."""
        prefix = os.path.join(self.para.run_dir, self.para.id)
        paths = []
        try:
            if not self.failed and self.saved['checkpoint'] != it:
                paths.append(f'{prefix}_checkpoint.pth')
                self.model.save_checkpoint(paths[-1], it, self.para.stage)
                self.saved['checkpoint'] = it
            if not self.failed and snapshot and self.saved['snapshot'] != it:
                paths.append(f'{prefix}_{it}.pth')
                self.model.save_network(paths[-1])
                self.saved['snapshot'] = it
        except BaseException:
            self.failed = True   # not tried again on the way out: the previous good files stay
            raise
        return paths


def train(para, ctx):
    ctx.init(para)
    loaded = {}
    start = Start(**ctx.decide(lambda: plan_start(para, ctx, loaded)._asdict()))
    if start.it >= para.iterations:
        if ctx.is_main:
            print(f'nothing to do: {start.checkpoint} is at iteration {start.it} of {para.iterations}')
        return
    vars(para).update(start.settings)
    checkpoint = loaded.pop('checkpoint', None) or (read_checkpoint(start.checkpoint, para.stage)
                                                    if start.checkpoint else None)
    seed = data_seed(para.seed, start.it)
    data = loaded.pop('data', None) or TrainingData(para, ctx.rank, ctx.world_size, seed)
    log = TrainLogger(None if para.no_output else para.run_dir, ctx.is_main, para.iterations)
    log.log_config(para)
    log.print(f'{ctx.world_size} process(es) on {ctx.device.type} ({ctx.backend}); {len(data.dataset)} samples, '
              f'{data.iterations_per_epoch} iterations per epoch, {data.total_epochs} epochs')
    for note in start.notes:
        log.print(note)

    model = QDMNModel(initial_network(para, start, log), para, ctx.device)
    it = 0
    if checkpoint is not None:
        it = model.load_checkpoint(checkpoint)
        if start.schedule_changed:
            model.follow_schedule(it)
        log.print(f'resumed {start.checkpoint} at iteration {it}')
        del checkpoint  # frees the loaded tensors (a second copy of the network and optimiser)
    if ctx.is_main and not para.no_output:
        append_start_record(para, it, ctx.world_size, start.checkpoint, seed, list(start.notes))
    torch.manual_seed(para.seed + it + 7919 * ctx.rank)  # augmentation draws when --num_workers 0
    save = Saver(model, para, ctx, log, it)

    model.train()
    log.start(it)
    # The curriculum and the sample order follow the iteration: a resumed epoch continues where it stopped.
    epoch, first_batch = divmod(it, data.iterations_per_epoch)
    with termination_requests() as termination:
        try:
            while it < para.iterations and not termination.agreed:
                loader, skips = data.epoch(epoch, first_batch)
                first_batch = 0
                if skips:
                    log.print(f'epoch {epoch}: max skip ' + ', '.join(f'{k} {v}' for k, v in skips.items()))
                for batch in loader:
                    out = model.do_pass(batch, it)
                    it += 1
                    if it % para.log_every == 0 or it == para.iterations:
                        log.report(it, model.report())
                    if it % para.image_every == 0:
                        log.images(it, batch, out)
                    if it % para.save_every == 0 or it % para.checkpoint_every == 0:
                        save(it, snapshot=it % para.save_every == 0)
                    if termination.agree() or it >= para.iterations:
                        break
                epoch += 1
            if termination.agreed:
                save(it, snapshot=False)
                log.print(f'training stopped by {termination.name} at iteration {it}'
                          + ('' if para.no_output else f': {para.run_dir} continues from it with --resume'))
                raise SystemExit(termination.exit_code)
        except BaseException as stop:
            # As published, a run that stops on an error or Ctrl-C keeps its progress (not with --debug),
            # also when a peer died (its collective fails here); rank 0 alone, without waiting for anyone.
            paths = save.write(it) if save.writes and not para.debug else None
            if paths:
                log.print(f'training stopped at iteration {it} ({type(stop).__name__}): saved {" and ".join(paths)}')
            raise
    save(it, snapshot=True)
    log.close()


def main():
    para = parse_args()
    ctx = Distributed(para)
    try:
        train(para, ctx)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == '__main__':
    run_main(main)
