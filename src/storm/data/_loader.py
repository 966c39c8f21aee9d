"""The one niche loader of storm: batches read (ahead, on accelerators) and moved to the device, for tools and trainer."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from ..models import NicheBatch
    from ._niches import NicheDataset


def loader_workers(device: torch.device, num_workers: int | None = None) -> int:
    """Reader processes for a loader on ``device``: ``num_workers``, else 0 on the CPU and settings' elsewhere.

    On the CPU the model's kernels already use every core, and readers beside them slow both down (measured in
    ``docs/benchmarks.md``). On an accelerator, reading
    and cropping on the CPU overlap with the model.
    """
    from .._settings import settings

    if num_workers is not None:
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"`num_workers` must be a non-negative integer, got {num_workers!r}.")
        return num_workers
    return 0 if device.type == "cpu" else settings.num_workers


class NicheLoader:
    """Niche batches of ``dataset`` for the index lists of ``batches``, on ``device``.

    With ``num_workers=0`` each batch is read when asked for; otherwise a :class:`torch.utils.data.DataLoader` with
    that many worker processes reads ``prefetch`` batches per worker ahead (each worker decodes a slide's image once),
    into pinned memory when the device is a GPU, and batches are copied to the device asynchronously. The order of
    batches is the order of ``batches`` either way.

    Parameters
    ----------
    dataset
        The niches (:class:`~storm.data.NicheDataset`).
    batches
        Lists of global spot indices, one per batch (a :class:`~storm.data.NicheBatchSampler` or a list).
    device
        Where batches go.
    num_workers
        Reader processes; ``None`` follows :func:`loader_workers`.
    prefetch
        Batches each worker reads ahead.

    Examples
    --------
    >>> import storm as st
    >>> import torch
    >>> from storm.data import Corpus, NicheDataset, NicheLoader
    >>> dataset = NicheDataset(Corpus.from_sources(st.datasets.demo(), tile_px=32, niche_size=4))
    >>> batches = [list(range(0, 8)), list(range(8, 16))]
    >>> [b.n_niches for b in NicheLoader(dataset, batches, device=torch.device("cpu"))]
    [8, 8]
    """

    def __init__(
        self,
        dataset: NicheDataset,
        batches: Iterable[list[int]],
        *,
        device: torch.device,
        num_workers: int | None = None,
        prefetch: int = 2,
    ) -> None:
        self.dataset = dataset
        self.batches = batches
        self.device = device
        self.num_workers = loader_workers(device, num_workers)
        self.prefetch = int(prefetch)

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[NicheBatch]:
        if self.num_workers == 0:
            for indices in self.batches:
                yield self.dataset.get_batch(indices).to(self.device)
            return
        from torch.utils.data import DataLoader

        loader = DataLoader(
            self.dataset,
            batch_sampler=self.batches,
            collate_fn=_as_is,
            num_workers=self.num_workers,
            prefetch_factor=self.prefetch,
            pin_memory=self.device.type == "cuda",
        )
        for batch in loader:
            yield batch.to(self.device, non_blocking=True)


def _as_is(batch: NicheBatch) -> NicheBatch:
    """The collate of :class:`NicheLoader`: :meth:`NicheDataset.__getitems__` already returns a whole batch."""
    return batch
