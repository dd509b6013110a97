"""The training data order, made resumable: which images each iteration sees, and their augmentation.

Every epoch ``e`` has its own permutation of the training set, drawn from a generator seeded by
``(seed, e)`` alone, and every position of that permutation its own augmentation seed drawn from
the same generator. So the batches of an epoch, and how each image is augmented (the random
horizontal flip), are a function of ``(seed, epoch, position)``: they do not depend on what ran
before, on ``num_workers``, or on the global RNGs the detector draws from (its random samplers).
A checkpoint stores ``(epoch, batches consumed in that epoch)``; resuming rebuilds the epoch's
permutation and skips the consumed batches, so the resumed run sees exactly the batches, flips
included, that the uninterrupted run would have seen (docs/resume.md).

In a data-parallel run the order is the same *global* batch order, whatever the number of
processes: rank ``r`` of ``W`` takes the ``r``-th contiguous slice of every global batch, so the
position ``(epoch, batches consumed)`` means the same on every rank and a run resumes with another
number of processes at the same place (docs/distributed.md).
"""

from __future__ import annotations

import contextlib
import random
import signal
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from rsdet.errors import TrainingError

#: Stored in checkpoints under "data"; bump when the order a given state denotes changes.
ORDER_VERSION = 1


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch's order; ``SeedSequence`` mixes (seed, epoch) into 64 well-spread bits."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch)]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class ResumableBatchSampler(Sampler):
    """Batches of ``(index, augmentation_seed)`` pairs for one epoch at a time, from a given batch on.

    ``set_epoch(epoch, start_batch)`` selects the epoch and how many of its batches to skip. With
    ``drop_last`` the incomplete final batch is left out, as ``DataLoader(drop_last=True)`` does.
    ``batch_size`` is the global batch; with ``world_size`` > 1 each batch handed out is this rank's
    contiguous slice of it (images ``[r·b, (r+1)·b)`` for ``b = batch_size / world_size``).
    """

    def __init__(self, dataset_len: int, batch_size: int, seed: int, *, drop_last: bool, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1, epoch_order: Callable[[int], Any] | None = None):
        if dataset_len < 1:
            raise TrainingError("the training split is empty; check dataset.train")
        self.dataset_len = int(dataset_len)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.shuffle = bool(shuffle)
        self.rank = int(rank)
        self.world_size = int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise TrainingError(f"rank {rank} is outside a world of {world_size} processes")
        self.epoch_order = epoch_order
        self.epoch = 0
        self.start_batch = 0

    @property
    def batches_per_epoch(self) -> int:
        full, rest = divmod(self.dataset_len, self.batch_size)
        return full if (self.drop_last or rest == 0) else full + 1

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise TrainingError(f"batch {start_batch} is outside epoch {epoch}, which has "
                                f"{self.batches_per_epoch} batches")
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    def epoch_batches(self, epoch: int) -> list[list[tuple[int, int]]]:
        """Every batch of ``epoch``, from the first."""
        g = epoch_generator(self.seed, epoch)
        if self.epoch_order is not None:
            order = self._fixed_length(torch.as_tensor(self.epoch_order(epoch), dtype=torch.long))
        elif self.shuffle:
            order = torch.randperm(self.dataset_len, generator=g)
        else:
            order = torch.arange(self.dataset_len)
        seeds = torch.randint(0, 2**62, (self.dataset_len,), generator=g)
        pairs = list(zip(order.tolist(), seeds.tolist()))
        n = self.batches_per_epoch
        return [pairs[b * self.batch_size:(b + 1) * self.batch_size] for b in range(n)]

    def _fixed_length(self, order: torch.Tensor) -> torch.Tensor:
        """An epoch order of another sampler (repeat-factor sampling: its length varies a little from
        epoch to epoch) cut or cyclically extended to ``dataset_len``, so that every epoch has the same
        number of batches and a position (epoch, batch) means the same thing on resume."""
        if order.numel() == 0:
            raise TrainingError("the epoch order is empty; check the training split and the sampler")
        if order.numel() >= self.dataset_len:
            return order[: self.dataset_len]
        return order.repeat(-(-self.dataset_len // order.numel()))[: self.dataset_len]

    def shard(self, batch: list) -> list:
        """This rank's contiguous slice of a global batch (an even split of a short final batch)."""
        if self.world_size == 1:
            return batch
        n, w, r = len(batch), self.world_size, self.rank
        return batch[r * n // w:(r + 1) * n // w]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.epoch_batches(self.epoch)[self.start_batch:]:
            yield self.shard(batch)

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch


@contextlib.contextmanager
def _seeded_global_rngs(seed: int):
    """Seed torch's, numpy's and Python's global RNGs for one sample, then put their states back
    (in the main process with ``num_workers=0`` they are also the detector's RNGs)."""
    saved = torch.get_rng_state(), np.random.get_state(), random.getstate()
    torch.default_generator.manual_seed(seed)  # the CPU generator only: CUDA's stays the detector's
    np.random.seed(seed & 0xFFFFFFFF)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(saved[0])
        np.random.set_state(saved[1])
        random.setstate(saved[2])


class SeededSamples(Dataset):
    """``dataset[index]`` with the global RNGs seeded by the sample's augmentation seed, so an
    augmentation that draws from them (``CocoDetectionDataset``'s flip uses ``torch.rand``) gives
    the same result in any worker, in any run."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with _seeded_global_rngs(int(seed)):
            return self.dataset[int(index)]


def _ignore_interrupts(worker_id: int) -> None:
    """Workers leave Ctrl-C to the training process, which stops at the next iteration boundary and
    still needs its workers until then (a terminal sends SIGINT to the whole process group)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class TrainLoader:
    """An endless stream of training batches that knows its position: ``(epoch, batches consumed in
    that epoch)``. ``state_dict()`` goes into checkpoints; ``load_state_dict`` continues from it.

    The position counts batches handed to the training loop, not batches the DataLoader's workers
    have prefetched, so it is exact with ``num_workers > 0`` too.
    """

    def __init__(self, dataset: Dataset, *, batch_size: int, seed: int, collate_fn: Callable,
                 num_workers: int = 0, drop_last: bool = True, rank: int = 0, world_size: int = 1,
                 pin_memory: bool = False, prefetch_factor: int | None = None, epoch_len: int | None = None,
                 epoch_order: Callable[[int], Any] | None = None):
        """``epoch_order(epoch)`` (optional) gives each epoch's dataset indices instead of a permutation
        (repeat-factor sampling, ``rsdet.data.sampling``), fitted to ``epoch_len`` images per epoch."""
        self.sampler = ResumableBatchSampler(int(epoch_len or len(dataset)), batch_size, seed,  # type: ignore[arg-type]
                                             drop_last=drop_last, rank=rank, world_size=world_size,
                                             epoch_order=epoch_order)
        num_workers = int(num_workers)
        self.loader = DataLoader(
            SeededSamples(dataset), batch_sampler=self.sampler, collate_fn=collate_fn, num_workers=num_workers,
            persistent_workers=num_workers > 0, worker_init_fn=_ignore_interrupts if num_workers > 0 else None,
            pin_memory=bool(pin_memory), prefetch_factor=prefetch_factor if num_workers > 0 else None,
            # the DataLoader draws its workers' base seed from this generator, not from the global RNG
            # (which the detector's samplers use); augmentation does not depend on that seed anyway
            generator=torch.Generator().manual_seed(int(seed)),
        )
        self.epoch = 0
        self.batch = 0

    @property
    def batches_per_epoch(self) -> int:
        return self.sampler.batches_per_epoch

    def state_dict(self) -> dict[str, Any]:
        s = self.sampler
        return {"version": ORDER_VERSION, "epoch": self.epoch, "batch": self.batch, "seed": s.seed,
                "batch_size": s.batch_size, "dataset_len": s.dataset_len, "drop_last": s.drop_last,
                "world_size": s.world_size}

    def load_state_dict(self, state: dict[str, Any], source: str = "the checkpoint") -> None:
        s = self.sampler
        mine = self.state_dict()
        changed = [f"{k} {state.get(k)!r} -> {mine[k]!r}" for k in ("version", "seed", "batch_size", "dataset_len",
                                                                     "drop_last") if state.get(k) != mine[k]]
        if changed:
            raise TrainingError(
                f"{source} was written with a different data order ({', '.join(changed)}); resuming would not "
                "see the batches the interrupted run would have seen. Resume with the run's own config "
                "(seed, schedule.batch_size, dataset) or start a new run without resume=...")
        epoch, batch = int(state["epoch"]), int(state["batch"])
        if batch == s.batches_per_epoch:  # the checkpoint was taken at the very end of an epoch
            epoch, batch = epoch + 1, 0
        self.epoch, self.batch = epoch, batch

    def seek_iteration(self, iteration: int) -> None:
        """Position after ``iteration`` batches from the start (for checkpoints without a stored position)."""
        self.epoch, self.batch = divmod(int(iteration), self.batches_per_epoch)

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        """Yield ``(epoch, batch)`` forever; the position advances as each batch is handed out."""
        while True:
            self.sampler.set_epoch(self.epoch, self.batch)
            for batch in self.loader:
                self.batch += 1
                yield self.epoch, batch
            self.epoch, self.batch = self.epoch + 1, 0
