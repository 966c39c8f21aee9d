"""Niche batches for pretraining and inference: a map-style dataset and a one-slide-per-batch sampler.

:class:`NicheLoader` (``storm.data``) puts them together for the trainer and for every ``st.tl`` tool::

    dataset = NicheDataset(corpus, augment=Augment())
    sampler = NicheBatchSampler(dataset, batch_size=16, seed=0)
    for batch in NicheLoader(dataset, sampler, device=device):
        out = model(**batch)

Each batch is one :class:`~storm.models.NicheBatch`: the tiles of all spots of the batch's niches are read once
(neighbours overlap a lot) and the backbone runs once per distinct tile.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..models import NicheBatch

if TYPE_CHECKING:
    from ._augment import Augment
    from ._corpus import Corpus
    from ._crops import TissueCrops


class NicheDataset(Dataset):
    """The niche of every spot of a corpus: a map-style torch ``Dataset`` over global spot indices.

    The niche of spot ``i`` (numbered slide after slide, see :attr:`Corpus.offsets`) is the spot and its
    ``niche_size`` nearest spots in µm, S = ``niche_size + 1`` slots with the centre first. :meth:`get_batch` turns
    the indices of one batch (all of one slide, as :class:`NicheBatchSampler` makes them) into a
    :class:`~storm.models.NicheBatch` holding each distinct tile once; ``dataset[i]`` is the batch of one niche.

    With ``augment``, each batch gets one random flip/rotation and colour jitter for all its tiles and offsets (so a
    tile shared by two niches is augmented once, and neighbouring tiles keep looking like parts of one slide), drawn
    from a generator seeded by ``(seed, epoch, first index)``: the same batch is the same in every run, worker and
    resume, and changes with :meth:`set_epoch` (which :meth:`NicheBatchSampler.set_epoch` calls).

    Parameters
    ----------
    corpus
        The slides (:meth:`Corpus.from_sources`).
    augment
        Augmentation of each batch (:class:`~storm.data.Augment`); ``None`` for none.
    seed
        Seed of the augmentation.
    read_tiles
        Read the tiles (default). ``False`` leaves ``tiles`` out (``image_mask`` still says which spots have one),
        for expression-only passes.
    crops
        Draw each batch's ``views`` of random crops over its slide's tissue (:class:`~storm.data.TissueCrops`), for
        the image branch's self-supervised objective; ``None`` (default) for none.

    Examples
    --------
    >>> import storm as st
    >>> from storm.data import Augment, Corpus, NicheBatchSampler, NicheDataset
    >>> corpus = Corpus.from_sources([st.datasets.demo()], tile_px=32, niche_size=4)
    >>> dataset = NicheDataset(corpus, augment=Augment())
    >>> batch = dataset.get_batch(NicheBatchSampler(dataset, batch_size=8, seed=0).batches()[0])
    >>> tuple(batch.tile_index.shape), batch.tiles.shape[0] <= 8 * 5, tuple(batch.expression.shape)
    ((8, 5), True, (8, 5, 1000))
    """

    def __init__(
        self,
        corpus: Corpus,
        *,
        augment: Augment | None = None,
        seed: int = 0,
        read_tiles: bool = True,
        crops: TissueCrops | None = None,
    ) -> None:
        self.corpus = corpus
        self.crops = crops
        self.read_tiles = bool(read_tiles)
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return self.corpus.n_spots

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's augmentations (also called by :meth:`NicheBatchSampler.set_epoch`)."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> NicheBatch:
        n = len(self)
        if not -n <= int(index) < n:
            raise IndexError(f"Niche index {index} out of range for a corpus of {n} spots.")
        return self.get_batch([int(index) % n])

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> NicheBatch:
        """The niches of ``indices`` (all of one slide), each distinct tile read once.

        Parameters
        ----------
        indices
            Global spot indices (centres) of one slide, e.g. one batch of :class:`NicheBatchSampler`.

        Returns
        -------
        The batch; ``model(**batch)`` runs on it.
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) == 0:
            raise ValueError("Cannot build a batch of 0 niches.")
        slide_of, spot_of = self.corpus.locate(indices)
        if (slide_of != slide_of[0]).any():
            raise ValueError(
                f"The niches of one batch come from slides {sorted(set(slide_of.tolist()))}; slides have different "
                "genes, so batch niches of one slide at a time (NicheBatchSampler does)."
            )
        return self._slide_batch(int(slide_of[0]), spot_of, indices)

    __getitems__ = get_batch  # DataLoader calls this with a whole batch of indices (torch >= 2.0)

    def _slide_batch(self, s: int, spots: np.ndarray, indices: np.ndarray) -> NicheBatch:
        cs = self.corpus.slides[s]
        niches = cs.neighbours[spots]  # (b, S)
        valid = niches >= 0
        offsets = cs.niche_offsets_um(spots)
        unique, inverse = np.unique(niches[valid], return_inverse=True)  # each spot of these niches once
        tiles = features = tile_index = None
        if cs.has_image and self.read_tiles:
            if cs.features is not None:
                features = torch.from_numpy(np.ascontiguousarray(cs.features[unique]))
            else:
                tiles = cs.tiles.read(unique)
            tile_index = np.full(niches.shape, -1, dtype=np.int64)
            tile_index[valid] = inverse
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, int(indices[0])])
            out = self.augment({"offsets_um": offsets, **({} if tiles is None else {"tiles": tiles})}, rng)
            offsets, tiles = out["offsets_um"], out.get("tiles")
        expression = gene_index = gene_mean = gene_std = components = component_scale = None
        has_expression = np.zeros(niches.shape, dtype=bool)
        if cs.expression is not None:
            safe = np.maximum(niches, 0)
            # densifying every slot's sparse row directly is ~4x faster than densifying the distinct rows and copying
            expression = cs.expression[safe.ravel()].toarray().reshape(*niches.shape, -1)
            expression[~valid] = 0.0
            has_expression = cs.expression_mask[safe] & valid
            gene_index = torch.as_tensor(np.asarray(cs.gene_index, dtype=np.int64))
            gene_mean, gene_std = torch.from_numpy(cs.gene_mean), torch.from_numpy(cs.gene_std)
            components, component_scale = torch.from_numpy(cs.gene_components), torch.from_numpy(cs.component_scale)
        return NicheBatch(
            offsets_um=torch.from_numpy(np.ascontiguousarray(offsets, dtype=np.float32)),
            spot_mask=torch.from_numpy(valid),
            image_mask=torch.from_numpy(valid & cs.has_image),
            expression_mask=torch.from_numpy(has_expression),
            tiles=None if tiles is None else torch.from_numpy(np.ascontiguousarray(tiles)),
            features=features,
            tile_index=None if tile_index is None else torch.from_numpy(tile_index),
            expression=None if expression is None else torch.from_numpy(expression),
            gene_index=gene_index,
            gene_mean=gene_mean,
            gene_std=gene_std,
            gene_components=components,
            component_scale=component_scale,
            views=self._views(cs, indices),
            index=torch.from_numpy(indices.copy()),
            slide=s,
        )

    def _views(self, cs: Any, indices: np.ndarray) -> torch.Tensor | None:
        """The batch's crop views (seeded like the augmentation), for slides whose tiles the model reads."""
        if self.crops is None or cs.tiles is None:
            return None
        views = self.crops(cs.slide, np.random.default_rng([self.seed, self.epoch, int(indices[0]), 1]))
        return torch.from_numpy(views)


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
        A :class:`~storm.data.NicheDataset` (or a :class:`~storm.data.Corpus`).
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
