"""A distributed sampler whose epoch order is a pure function of (seed, epoch) and can resume mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Dataset, DistributedSampler


class ResumableDistributedSampler(DistributedSampler):
    """:class:`torch.utils.data.DistributedSampler` that can skip the batches an interrupted epoch already ran.

    The order of epoch ``e`` depends only on ``seed`` and ``e`` (``set_epoch``), so a resumed run
    sees exactly the samples the uninterrupted run would have seen. With one process
    (``num_replicas=1, rank=0``) it is a seeded shuffling sampler.
    """

    def __init__(
        self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.start_index = 0

    def set_start_index(self, index: int) -> None:
        """Skip the first ``index`` samples of this replica's share of the current epoch (once)."""
        self.start_index = max(0, int(index))

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())[self.start_index :]
        self.start_index = 0
        return iter(indices)

    def __len__(self) -> int:
        return self.num_samples - self.start_index
