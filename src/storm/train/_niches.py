"""Niche batches for pretraining and inference: a map-style dataset, a one-slide-per-batch sampler and the collate.

Use them together with a :class:`torch.utils.data.DataLoader`::

    dataset = NicheDataset(corpus, augment=Augment())
    sampler = NicheBatchSampler(dataset, batch_size=16, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_niches, num_workers=0)
    for epoch in range(n_epochs):
        sampler.set_epoch(epoch)
        for batch in loader:
            out = model(**batch)

The loader hands each batch's indices to :meth:`NicheDataset.__getitems__`, which reads the tiles of all spots of the
batch's niches once (neighbours overlap a lot), so the same code is efficient with ``num_workers=0`` and with worker
processes. Without a DataLoader, ``collate_niches(dataset.get_batch(indices))`` does the same in the calling process.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

if TYPE_CHECKING:
    from ._augment import Augment
    from ._corpus import Corpus

#: Keys of :func:`collate_niches`'s output, all keyword arguments of :meth:`storm.models.StormModel.forward`.
BATCH_KEYS = ("offsets_um", "images", "image_mask", "expression", "gene_index", "expression_mask", "spot_mask")


class NicheDataset(Dataset):
    """The niche of every spot of a corpus: a map-style torch ``Dataset`` over global spot indices.

    Item ``i`` is the niche of spot ``i`` (numbered slide after slide, see :attr:`Corpus.offsets`): the spot and its
    ``niche_size`` nearest spots in µm, as a dict of numpy arrays with S = ``niche_size + 1`` rows, the centre first:

    * ``offsets_um`` (S, 2) float32: ``(dx, dy)`` from the centre in µm, ``(0, 0)`` for the centre and padding;
    * ``tiles`` (S, H, W, 3) uint8 H&E tiles (absent for slides without an image);
    * ``image_mask`` (S,) bool: the spot is real and has a tile;
    * ``expression`` (S, G) float32 log1p(CP10k) over the slide's G genes in the vocabulary (zeros where missing);
    * ``expression_mask`` (S,) bool: the spot is real and has expression;
    * ``spot_mask`` (S,) bool: ``False`` pads niches of slides with fewer than S spots;
    * ``gene_index`` (G,) int64 vocabulary index of each expression column;
    * ``slide`` and ``index``: the slide number and the centre's global index.

    With ``augment``, each niche gets its own random flip/rotation and colour jitter, drawn from a generator seeded
    by ``(seed, epoch, index)``: the same item is the same in every run, worker and resume, and changes with
    :meth:`set_epoch` (which :meth:`NicheBatchSampler.set_epoch` calls).

    Parameters
    ----------
    corpus
        The slides (:meth:`Corpus.from_sources`).
    augment
        Augmentation applied to each niche (:class:`~storm.train.Augment`); ``None`` for none.
    seed
        Seed of the augmentation.
    read_tiles
        Read the tiles into the items (default). ``False`` leaves ``tiles`` out (``image_mask`` still says which spots
        have one), for callers that read each tile once and run the backbone on unique tiles, as inference does.

    Examples
    --------
    >>> import storm as st
    >>> from torch.utils.data import DataLoader
    >>> from storm.train import Augment, Corpus, NicheBatchSampler, NicheDataset, collate_niches
    >>> corpus = Corpus.from_sources([st.datasets.demo()], tile_px=32, niche_size=4)
    >>> dataset = NicheDataset(corpus, augment=Augment())
    >>> sampler = NicheBatchSampler(dataset, batch_size=8, seed=0)
    >>> loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_niches, num_workers=0)
    >>> sampler.set_epoch(0)
    >>> batch = next(iter(loader))  # model(**batch) runs on it
    >>> tuple(batch["images"].shape), tuple(batch["expression"].shape)
    ((8, 5, 32, 32, 3), (8, 5, 1000))
    """

    def __init__(
        self, corpus: Corpus, *, augment: Augment | None = None, seed: int = 0, read_tiles: bool = True
    ) -> None:
        self.corpus = corpus
        self.read_tiles = bool(read_tiles)
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return self.corpus.n_spots

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's augmentations (also called by :meth:`NicheBatchSampler.set_epoch`)."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= int(index) < n:
            raise IndexError(f"Niche index {index} out of range for a corpus of {n} spots.")
        return self.get_batch([int(index) % n])[0]

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> list[dict[str, Any]]:
        """The niches of ``indices``, reading each slide's tiles once for all unique spots of these niches.

        Parameters
        ----------
        indices
            Global spot indices (centres), e.g. one batch of :class:`NicheBatchSampler`.

        Returns
        -------
        One item dict per index (see the class description); pass the list to :func:`collate_niches`.
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        slide_of, spot_of = self.corpus.locate(indices)
        items: list[dict[str, Any] | None] = [None] * len(indices)
        for s in np.unique(slide_of):
            rows = np.flatnonzero(slide_of == s)
            for row, item in zip(rows, self._slide_items(int(s), spot_of[rows], indices[rows]), strict=True):
                items[row] = item
        return items  # type: ignore[return-value]

    __getitems__ = get_batch  # DataLoader calls this with a whole batch of indices (torch >= 2.0)

    def _slide_items(self, s: int, spots: np.ndarray, indices: np.ndarray) -> list[dict[str, Any]]:
        cs = self.corpus.slides[s]
        niches = cs.neighbours[spots]  # (b, S)
        valid = niches >= 0
        safe = np.maximum(niches, 0)
        offsets = cs.niche_offsets_um(spots)
        unique, inverse = np.unique(niches[valid], return_inverse=True)  # each spot of these niches once
        tiles = None
        if cs.tiles is not None and self.read_tiles:
            read = cs.tiles.read(unique)
            tiles = np.zeros((*niches.shape, *read.shape[1:]), dtype=np.uint8)
            tiles[valid] = read[inverse]
        n_genes = len(cs.gene_index)
        if cs.expression is not None:
            dense = cs.expression[unique].toarray()
            expression = np.zeros((*niches.shape, n_genes), dtype=np.float32)
            expression[valid] = dense[inverse]
            has_expression = cs.expression_mask[safe] & valid
        else:
            expression = np.zeros((*niches.shape, 0), dtype=np.float32)
            has_expression = np.zeros(niches.shape, dtype=bool)
        items = []
        for k, index in enumerate(indices):
            item: dict[str, Any] = {
                "offsets_um": offsets[k],
                "image_mask": valid[k] & cs.has_image,
                "expression": expression[k],
                "expression_mask": has_expression[k],
                "spot_mask": valid[k],
                "gene_index": cs.gene_index,
                "slide": s,
                "index": int(index),
            }
            if tiles is not None:
                item["tiles"] = tiles[k]
            if self.augment is not None:
                rng = np.random.default_rng([self.seed, self.epoch, int(index)])
                item = self.augment(item, rng)
            items.append(item)
        return items


def collate_niches(items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack niche items of one slide into the keyword arguments of :meth:`storm.models.StormModel.forward`.

    Parameters
    ----------
    items
        Items of :class:`NicheDataset` (e.g. ``dataset.get_batch(indices)``), all from one slide, as
        :class:`NicheBatchSampler` makes them.

    Returns
    -------
    ``offsets_um`` (B, S, 2) float32, ``image_mask``, ``expression_mask``, ``spot_mask`` (B, S) bool; ``images``
    (B, S, H, W, 3) uint8 when the slide has an image; ``expression`` (B, S, G) float32 and ``gene_index`` (G,) int64
    when it has genes in the vocabulary. ``model(**batch)`` runs on it directly.

    Raises
    ------
    ValueError
        If the items come from slides with different genes, or only some have tiles.
    """
    if len(items) == 0:
        raise ValueError("Cannot collate an empty list of niches.")
    first = items[0]
    genes = first["gene_index"]
    for item in items[1:]:
        if not np.array_equal(item["gene_index"], genes):
            raise ValueError(
                f"Niches of one batch have different genes (slides {first.get('slide')} and {item.get('slide')}); "
                "batch niches of one slide at a time with NicheBatchSampler."
            )
    with_tiles = ["tiles" in item for item in items]
    if any(with_tiles) and not all(with_tiles):
        raise ValueError(
            "Only some niches of the batch have tiles; batch niches of one slide at a time with NicheBatchSampler."
        )

    def stack(key: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.asarray(item[key]) for item in items]))

    batch = {"offsets_um": stack("offsets_um").float()}
    if all(with_tiles):
        batch["images"] = stack("tiles")
    batch["image_mask"] = stack("image_mask").bool()
    if len(genes):
        batch["expression"] = stack("expression").float()
        batch["gene_index"] = torch.as_tensor(np.asarray(genes, dtype=np.int64))
    batch["expression_mask"] = stack("expression_mask").bool()
    batch["spot_mask"] = stack("spot_mask").bool()
    return batch


class NicheBatchSampler(Sampler[list[int]]):
    """Batches of spot indices, each from one slide, reshuffled per epoch, sharded across ranks, resumable.

    Each epoch, every slide's spots are shuffled and cut into batches (slides have different genes, so a batch never
    mixes slides); the batches of all slides are then shuffled together. The order depends only on ``(seed, epoch)``.
    Under DDP each of ``world_size`` ranks takes every ``world_size``-th batch; all ranks get the same number of
    batches (with ``drop_last=False`` the first batches are repeated to fill the last round, otherwise the remainder
    is dropped), so no rank waits on another.

    :meth:`state_dict` records the epoch and the batches already handed out in it; after :meth:`load_state_dict`
    the next iteration (after ``set_epoch`` with the same epoch, or none) continues with exactly the next batch.
    With DataLoader worker processes the sampler runs ahead of the batches consumed; pass the number consumed to
    :meth:`state_dict` then.

    Parameters
    ----------
    dataset
        A :class:`~storm.train.NicheDataset` (or a :class:`~storm.train.Corpus`).
    batch_size
        Niches per batch (per rank).
    shuffle
        Shuffle spots within slides and batches across slides; otherwise slide by slide, in spot order.
    seed
        Seed of the order.
    drop_last
        Drop each slide's last, incomplete batch (and, across ranks, the batches that do not fill a round).
    rank, world_size
        This process's rank and the number of processes (DDP).
    repeats
        Times each slide's spots are visited per epoch, one count per slide (default 1 each): oversamples rare
        slides, e.g. the few slides with H&E in a corpus dominated by expression-only slides (each visit is
        shuffled anew).
    """

    def __init__(
        self,
        dataset: NicheDataset | Corpus,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        repeats: Sequence[int] | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        if isinstance(world_size, bool) or not isinstance(world_size, int | np.integer) or world_size < 1:
            raise ValueError(f"`world_size` must be a positive integer, got {world_size!r}.")
        if isinstance(rank, bool) or not isinstance(rank, int | np.integer) or not 0 <= rank < world_size:
            raise ValueError(f"`rank` must be an integer from 0 to world_size - 1 ({world_size - 1}), got {rank!r}.")
        self.dataset = dataset if isinstance(dataset, NicheDataset) else None
        corpus = dataset.corpus if isinstance(dataset, NicheDataset) else dataset
        self.offsets = np.asarray(corpus.offsets, dtype=np.int64)
        n_slides = len(self.offsets) - 1
        self.repeats = [1] * n_slides if repeats is None else [int(r) for r in repeats]
        if len(self.repeats) != n_slides or any(r < 0 for r in self.repeats):
            raise ValueError(
                f"`repeats` must give one non-negative count per slide ({n_slides}), got {list(repeats or [])!r}."
            )
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0
        self._resume_at = 0  # batches of `epoch` to skip at the next iteration
        self._handed_out = 0  # batches of `epoch` handed out so far

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` (and the dataset's augmentations of that epoch).

        A position restored by :meth:`load_state_dict` is kept when ``epoch`` is the restored epoch.
        """
        epoch = int(epoch)
        if epoch != self.epoch:
            self.epoch = epoch
            self._resume_at = 0
            self._handed_out = 0
        if self.dataset is not None:
            self.dataset.set_epoch(epoch)

    def batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """All batches of this rank for ``epoch`` (default: the current one), from the start of the epoch."""
        epoch = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([self.seed, epoch])
        out: list[np.ndarray] = []
        for start, stop, repeat in zip(self.offsets[:-1], self.offsets[1:], self.repeats, strict=True):
            for _ in range(repeat):
                spots = np.arange(start, stop, dtype=np.int64)
                if self.shuffle:
                    spots = rng.permutation(spots)
                for k in range(0, len(spots), self.batch_size):
                    chunk = spots[k : k + self.batch_size]
                    if len(chunk) == self.batch_size or not self.drop_last:
                        out.append(chunk)
        if self.shuffle:
            out = [out[i] for i in rng.permutation(len(out))]
        if self.world_size > 1 and out:
            if self.drop_last:
                out = out[: len(out) // self.world_size * self.world_size]
            else:
                out = out + [out[i % len(out)] for i in range(-len(out) % self.world_size)]
            out = out[self.rank :: self.world_size]
        return out

    def __len__(self) -> int:
        n_batches = 0
        for start, stop, repeat in zip(self.offsets[:-1], self.offsets[1:], self.repeats, strict=True):
            n = int(stop - start)
            n_batches += repeat * (n // self.batch_size if self.drop_last else -(-n // self.batch_size))
        if self.world_size > 1:
            n_batches = n_batches // self.world_size if self.drop_last else -(-n_batches // self.world_size)
        return n_batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches()
        start, self._resume_at = self._resume_at, 0
        self._handed_out = start
        for batch in batches[start:]:
            self._handed_out += 1
            yield batch.tolist()

    def state_dict(self, consumed: int | None = None) -> dict[str, int | bool]:
        """Position in the epoch as plain data (safe for ``torch.load(weights_only=True)``).

        Parameters
        ----------
        consumed
            Batches of the current epoch already consumed; default: those handed out by the iterator (exact with
            ``num_workers=0`` or when iterating the sampler directly).
        """
        position = self._handed_out if consumed is None else int(consumed)
        return {
            "epoch": self.epoch,
            "position": position,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "n_spots": int(self.offsets[-1]),
            "repeats": list(self.repeats),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`: the next iteration starts at the next batch of the saved epoch."""
        mine = self.state_dict()
        changed = [
            f"{k}={state[k]!r} (now {mine[k]!r})"
            for k in ("seed", "batch_size", "world_size", "shuffle", "drop_last", "n_spots", "repeats")
            if k in state and state[k] != mine[k]
        ]
        if changed:
            raise ValueError(
                "Cannot resume the niche order exactly: the sampler was saved with " + ", ".join(changed) + "; "
                "resume with the same corpus and settings, or start a new run."
            )
        self.set_epoch(int(state["epoch"]))
        self._resume_at = self._handed_out = int(state["position"])
