"""Length-bucketed batching: less padding (faster epochs) while keeping batches random enough to train."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from bertkit.errors import ConfigError

__all__ = ["LengthBucketBatchSampler", "sorted_inference_batches", "restore_order"]


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Training batch sampler whose batches hold examples of similar length.

    Each epoch: shuffle all indices with ``np.random.default_rng(seed + epoch)``, cut them into chunks of
    ``batch_size * bucket_multiplier``, sort each chunk by length, cut the chunks into batches and shuffle
    the batch order. With ``shuffle=False`` the indices stay in input order (chunks are still sorted) and
    the batch order is kept. The result is deterministic for a given (seed, epoch); call
    :meth:`set_epoch` before each epoch.

    With several processes (DDP), process ``process_index`` gets batches ``process_index::num_processes``;
    the batch list is first padded by repeating batches from its start so that every rank sees the same
    number of batches.

    Args:
        lengths: Token length of each example.
        batch_size: Examples per batch.
        seed: Base seed.
        shuffle: Randomise the order (training); False gives a fixed order.
        drop_last: Drop the final incomplete batch.
        bucket_multiplier: Chunk size in batches; larger means less padding and less randomness.
        num_processes: Number of data-parallel processes.
        process_index: Rank of this process.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        bucket_multiplier: int = 50,
        num_processes: int = 1,
        process_index: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if bucket_multiplier < 1:
            raise ConfigError(f"bucket_multiplier must be >= 1, got {bucket_multiplier}")
        if num_processes < 1 or not 0 <= process_index < num_processes:
            raise ConfigError(f"process_index {process_index} must be in [0, num_processes={num_processes})")
        self.lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)  # [N]
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.bucket_multiplier = int(bucket_multiplier)
        self.num_processes = int(num_processes)
        self.process_index = int(process_index)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order :meth:`__iter__` yields."""
        self.epoch = int(epoch)

    def _num_global_batches(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __len__(self) -> int:
        return -(-self._num_global_batches() // self.num_processes)

    def _epoch_plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indices [N] in bucketed order, batch start offsets [nb + 1], batch order [nb]) of one epoch.

        Arrays, not lists of Python ints: on a million-row dataset the lists cost ~40 MB per epoch, the
        arrays 8 MB; batches become lists only as :meth:`__iter__` hands them out.
        """
        n = len(self.lengths)
        rng = np.random.default_rng(self.seed + epoch)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        chunk = self.batch_size * self.bucket_multiplier
        for start in range(0, n, chunk):  # sort each chunk by length, in place
            idx = order[start : start + chunk]
            order[start : start + chunk] = idx[np.argsort(self.lengths[idx], kind="stable")]
        # chunk is a multiple of batch_size, so only the very last batch can be short
        starts = np.arange(0, n, self.batch_size, dtype=np.int64)
        if self.drop_last and n % self.batch_size:
            starts = starts[:-1]
        bounds = np.append(starts, min(n, int(starts[-1]) + self.batch_size) if len(starts) else 0)
        batch_order = rng.permutation(len(starts)) if self.shuffle else np.arange(len(starts))
        return order, bounds, batch_order

    def global_batches(self, epoch: int | None = None) -> list[list[int]]:
        """All batches of an epoch for all processes (before DDP sharding)."""
        order, bounds, batch_order = self._epoch_plan(self.epoch if epoch is None else int(epoch))
        return [order[bounds[b] : bounds[b + 1]].tolist() for b in batch_order]

    def __iter__(self) -> Iterator[list[int]]:
        order, bounds, batch_order = self._epoch_plan(self.epoch)
        if self.num_processes > 1 and len(batch_order):
            total = len(self) * self.num_processes
            padded = np.resize(batch_order, total)  # repeats batches from the start to even the ranks
            batch_order = padded[self.process_index :: self.num_processes]
        for b in batch_order:
            yield order[bounds[b] : bounds[b + 1]].tolist()


def sorted_inference_batches(lengths: Sequence[int] | np.ndarray, batch_size: int) -> list[list[int]]:
    """Batches of indices sorted by length, longest first (minimal padding; OOM shows up on batch one).

    Args:
        lengths: Token length of each example.
        batch_size: Examples per batch.

    Returns:
        Lists of example indices; use :func:`restore_order` to put outputs back in input order.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    arr = np.asarray(lengths, dtype=np.int64).reshape(-1)
    order = np.argsort(-arr, kind="stable")
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def restore_order(batch_indices: list[list[int]], outputs: list[np.ndarray]) -> np.ndarray:
    """Undo the batch ordering: concatenate per-batch outputs and return them in original example order.

    Args:
        batch_indices: The index lists the batches were built from.
        outputs: One array per batch, first axis = batch size ([B, ...]).

    Returns:
        Array [N, ...] where row i is the output of example i.

    Raises:
        ConfigError: Batch and output counts/sizes differ or the indices are not a permutation of 0..N-1.
    """
    if len(batch_indices) != len(outputs):
        raise ConfigError(f"{len(batch_indices)} index batches but {len(outputs)} output batches")
    if not outputs:
        return np.zeros((0,), dtype=np.float32)
    for i, (idx, out) in enumerate(zip(batch_indices, outputs)):
        if len(idx) != len(out):
            raise ConfigError(f"batch {i} has {len(idx)} indices but {len(out)} outputs")
    flat_idx = np.concatenate([np.asarray(b, dtype=np.int64) for b in batch_indices])  # [N]
    flat_out = np.concatenate([np.asarray(o) for o in outputs], axis=0)  # [N, ...]
    n = len(flat_idx)
    if n and (flat_idx.min() < 0 or flat_idx.max() >= n or len(np.unique(flat_idx)) != n):
        raise ConfigError(
            "batch indices are not a permutation of 0..N-1; pass the batches used for inference"
        )
    result = np.empty_like(flat_out)
    result[flat_idx] = flat_out
    return result
