"""A generic training loop that runs unchanged on one process or under ``torch.distributed`` DDP.

Under DDP (``torch.distributed`` initialised, gloo on CPU or NCCL on GPU) :func:`fit` wraps the model in
``DistributedDataParallel`` and gives each of the ``W`` ranks ``batch_size / W`` samples of every global
batch. DDP averages the gradients, so with a loss that is a mean over the batch each step equals a
single-process step on the combined batch (exactly, up to rounding, for fixed-step solvers).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset
from tqdm.auto import tqdm

Tensor = torch.Tensor
LossFn = Callable[[nn.Module, object], Tensor]

__all__ = ["FitResult", "fit", "launch_local_processes"]


@dataclass
class FitResult:
    """What :func:`fit` returns: the loss per step (averaged over ranks) and the number of steps run.

    Attributes:
        losses (list[float]): the loss of every step, averaged over the ranks.
        steps (int): steps run (fewer than asked when ``time_limit_s`` stopped the loop).

    Examples:
        >>> from pyode.nn import FitResult
        >>> FitResult(losses=[0.5, 0.25], steps=2)
        FitResult(losses=[0.5, 0.25], steps=2)
    """

    losses: list[float] = field(default_factory=list)
    steps: int = 0


def _distributed_context() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _wrap_for_ddp(model: nn.Module, world_size: int) -> nn.Module:
    if world_size == 1:
        return model
    device = next(model.parameters()).device
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def _make_loader(dataset: Dataset | Tensor, batch_size: int, rank: int, world_size: int,
                 shuffle: bool, seed: int) -> DataLoader:
    if isinstance(dataset, Tensor):
        dataset = TensorDataset(dataset)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if batch_size % world_size:
        raise ValueError(f"batch_size={batch_size} (the global batch) must be divisible by the "
                         f"world size {world_size}")
    if len(dataset) < batch_size:
        raise ValueError(f"dataset has {len(dataset)} samples, fewer than batch_size={batch_size}")
    # The same sampler on one process (num_replicas=1) makes the single-process batches exactly the
    # union of the ranks' batches: both cut the same seeded permutation into consecutive global batches.
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed,
                                 drop_last=True)
    return DataLoader(dataset, batch_size=batch_size // world_size, sampler=sampler, drop_last=True)


def _endless_batches(loader: DataLoader):
    """Batches of epoch 0, 1, 2, ...; each epoch reshuffled by the sampler with ``seed + epoch``."""
    epoch = 0
    while True:
        loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def _unpack(batch):
    return batch[0] if isinstance(batch, (list, tuple)) and len(batch) == 1 else batch


def _global_mean(loss: Tensor, world_size: int) -> float:
    value = loss.detach().clone()
    if world_size > 1:
        dist.all_reduce(value)
        value /= world_size
    return value.item()


def _out_of_time(start: float, time_limit_s: float | None, world_size: int) -> bool:
    if time_limit_s is None:
        return False
    flag = torch.tensor(float(time.perf_counter() - start > time_limit_s))
    if world_size > 1:
        dist.broadcast(flag, src=0)  # every rank must stop at the same step, or DDP would hang
    return bool(flag.item())


def fit(model: nn.Module, loss_fn: LossFn, dataset: Dataset | Tensor, optimizer: torch.optim.Optimizer, *,
        steps: int, batch_size: int, shuffle: bool = True, seed: int = 0,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, progress: bool | None = True,
        desc: str = "training", time_limit_s: float | None = None) -> FitResult:
    """Train ``model`` for ``steps`` optimiser steps; identical code on one process or under DDP.

    Args:
        model (nn.Module): the module; wrapped in ``DistributedDataParallel`` when torch.distributed is
            initialised.
        loss_fn (Callable[[nn.Module, object], Tensor]): ``loss_fn(model, batch) -> scalar``, a *mean*
            over the batch. It must call ``model(...)`` (its ``forward``), which is where DDP hooks in;
            ``batch`` is the tensor (or tuple of tensors) the dataset yields, ``(batch_size / world_size,
            ...)`` per rank.
        dataset (Dataset | Tensor): a ``Dataset`` or a tensor ``(n, ...)`` of samples.
        optimizer (torch.optim.Optimizer): built on ``model.parameters()``.
        steps (int): number of optimiser steps (epochs are re-shuffled with ``seed + epoch``).
        batch_size (int): the global batch size, divisible by the world size, at most ``len(dataset)``
            (a last incomplete batch of an epoch is dropped).
        shuffle (bool): reshuffle every epoch (default True).
        seed (int): seed of the shuffling (default 0).
        scheduler (LRScheduler | None): stepped after every optimiser step (default None).
        progress (bool | None): tqdm bar on rank 0, drawn only when stderr is a terminal (``None`` or
            ``True``, the default: tqdm's ``disable=None``), so logs and pipes get no carriage-return
            updates; ``False``: never.
        desc (str): the progress bar's label (default ``"training"``).
        time_limit_s (float | None): stop early once this many seconds have passed (rank 0's clock decides
            for all ranks); ``FitResult.steps`` tells how many steps ran (default None: no limit).

    Returns:
        FitResult: the loss of every step and the number of steps run.

    Raises:
        ValueError: a negative ``steps``, a ``batch_size`` that is not a positive int, not divisible by the
            world size, or larger than the dataset.

    Examples:
        Fit ``y = 2x`` with a linear model:

        >>> import torch
        >>> from pyode.nn import fit
        >>> model = torch.nn.Linear(1, 1)
        >>> data = torch.linspace(-1.0, 1.0, 32).unsqueeze(1)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> result = fit(model, lambda m, x: ((m(x) - 2 * x) ** 2).mean(), data, optimizer,
        ...              steps=20, batch_size=8, progress=False)
        >>> result.steps, len(result.losses), result.losses[-1] < result.losses[0]
        (20, 20, True)
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    rank, world_size = _distributed_context()
    loader = _make_loader(dataset, batch_size, rank, world_size, shuffle, seed)
    wrapped = _wrap_for_ddp(model, world_size)
    result = FitResult()
    bar = tqdm(total=steps, desc=desc, disable=True if rank != 0 or progress is False else None)
    start = time.perf_counter()
    for batch in itertools.islice(_endless_batches(loader), steps):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(wrapped, _unpack(batch))
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        result.losses.append(_global_mean(loss, world_size))
        result.steps += 1
        bar.update(1)
        bar.set_postfix(loss=f"{result.losses[-1]:.4f}")
        if _out_of_time(start, time_limit_s, world_size):
            break
    bar.close()
    return result


def _process_entry(rank: int, fn: Callable, world_size: int, rendezvous: str, args: tuple) -> None:
    torch.set_num_threads(1)  # W processes share the machine's cores
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world_size)
    try:
        fn(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


def launch_local_processes(fn: Callable, world_size: int, *args) -> None:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` CPU processes joined by a gloo group.

    ``fn`` must be importable (a module-level function), as ``torch.multiprocessing.spawn`` requires. The
    processes meet through a file in a fresh temporary folder, not a TCP port: a port found free here could
    be taken by another program before rank 0 binds it.

    Args:
        fn (Callable): ``fn(rank, world_size, *args)``, a module-level function.
        world_size (int): number of processes.
        *args: passed on to ``fn`` (picklable).

    Examples:
        In a script (``if __name__ == "__main__":``), with ``train`` a module-level function that calls
        :func:`fit`; each process starts a fresh interpreter, hence the skip here:

        >>> from pyode.nn import launch_local_processes
        >>> launch_local_processes(train, 2, "run-1")  # doctest: +SKIP
    """
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="pyode-ddp-") as folder:
        rendezvous = os.path.join(folder, "rendezvous")
        mp.spawn(_process_entry, args=(fn, world_size, rendezvous, args), nprocs=world_size, join=True)
