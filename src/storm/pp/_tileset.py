"""A lazy, indexable set of H&E tiles centred on spots (torch ``Dataset``-compatible)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .._settings import settings
from ._reader import LevelReader, Window

if TYPE_CHECKING:
    from ..io import Slide


@dataclass(frozen=True)
class TileBatch:
    """One batch of tiles.

    Attributes
    ----------
    tiles
        ``(n, tile_px, tile_px, 3)`` RGB uint8.
    index
        Positions of these spots in the tile set (and in ``TileSet.obs_names``).
    padded
        Whether each tile reaches past the image border (those pixels are white).
    """

    tiles: np.ndarray
    index: np.ndarray
    padded: np.ndarray


class TileSet:
    """Tiles of ``tile_px`` pixels covering ``tile_um`` microns, centred on each spot of a slide.

    Geometry only: pixels are read on access from the pyramid level closest to the target resolution (the coarsest
    level at least as fine as it) and resampled exactly to it with an antialiased bilinear filter. ``ts[i]`` is the
    ``(tile_px, tile_px, 3)`` uint8 tile of spot ``i``; :meth:`batches` streams batches with background prefetch.
    Build it with :func:`storm.pp.tile`.

    Examples
    --------
    >>> import storm as st
    >>> ts = st.pp.tile(st.datasets.demo())
    >>> ts[0].shape, ts[0].dtype.name
    ((224, 224, 3), 'uint8')
    """

    def __init__(self, slide: Slide, *, tile_px: int, tile_um: float) -> None:
        if not slide.has_image:
            raise ValueError(
                f"Slide has no image that shares a coordinate system with spots {slide.keys.get('shapes_key')!r}; "
                "tiling needs the H&E image (pass `image_key=`)."
            )
        _check_tile_fits(slide, tile_um)
        self.obs_names = slide.obs_names
        self.tile_px = tile_px
        self.tile_um = tile_um
        self.target_um_per_px = tile_um / tile_px
        self.level = slide.choose_level(self.target_um_per_px)
        self.level_um_per_px = slide.level_um_per_px(self.level)
        self.um_per_px = slide.um_per_px
        self.um_per_px_source = slide.um_per_px_source
        self.keys = dict(slide.keys)
        level = slide.levels[self.level]
        self._reader = LevelReader(level.data, settings.tile_cache_mb * 2**20, level.white)
        self._recent: OrderedDict[int, np.ndarray] = OrderedDict()
        self._recent_lock = threading.Lock()
        sy, sx = level.px_to_level0
        # Pixel-edge coordinates of the level: level-0 pixel index p has its centre at p + 0.5.
        self.centers_level = np.column_stack([(slide.spot_xy_px[:, 0] + 0.5) / sx, (slide.spot_xy_px[:, 1] + 0.5) / sy])
        self.centers_px = slide.spot_xy_px.copy()
        self._half = np.array([tile_um / 2 / self.level_um_per_px[1], tile_um / 2 / self.level_um_per_px[0]])
        self._margin = int(np.ceil(max(1.0, 2 * self._half.max() / tile_px))) + 1
        self.boxes = np.column_stack([self.centers_level - self._half, self.centers_level + self._half])
        h, w = level.shape_yx
        self.padded = (self.boxes[:, 0] < 0) | (self.boxes[:, 1] < 0) | (self.boxes[:, 2] > w) | (self.boxes[:, 3] > h)

    def __len__(self) -> int:
        return len(self.obs_names)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_recent=OrderedDict(), _recent_lock=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._recent_lock = threading.Lock()

    def __getitem__(self, i: int) -> np.ndarray:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"Tile index {i} out of range for {n} spots.")
        return self.read(np.array([i % n]))[0]

    def __repr__(self) -> str:
        return (
            f"TileSet({len(self)} spots, {self.tile_px} px / {self.tile_um:g} µm tiles, level {self.level}, "
            f"{int(self.padded.sum())} padded)"
        )

    def read(self, index: np.ndarray) -> np.ndarray:
        """Tiles of the spots at positions ``index``, ``(len(index), tile_px, tile_px, 3)`` uint8.

        The most recent tiles (up to a sixteenth of ``storm.settings.tile_cache_mb``) are kept: batches of neighbouring
        niches in raster order share many spots, and each is cut and resampled once.
        """
        index = np.asarray(index, dtype=int)
        out = np.empty((len(index), self.tile_px, self.tile_px, 3), dtype=np.uint8)
        with self._recent_lock:
            hits = [k for k, i in enumerate(index) if int(i) in self._recent]
            for k in hits:
                out[k] = self._recent[int(index[k])]
                self._recent.move_to_end(int(index[k]))
        todo = np.setdiff1d(np.arange(len(index)), hits, assume_unique=True)
        if len(todo):
            out[todo] = self._cut(index[todo])
            with self._recent_lock:
                for k in todo:
                    self._recent[int(index[k])] = out[k]
                limit = max(1, settings.tile_cache_mb * 2**20 // 16 // out[0].nbytes)
                while len(self._recent) > limit:
                    self._recent.popitem(last=False)
        return out

    def _cut(self, index: np.ndarray) -> np.ndarray:
        """Read, crop and resample the tiles of ``index``."""
        windows = [self._window(i) for i in index]
        pixels = self._reader.read_many(windows)
        out = np.empty((len(index), self.tile_px, self.tile_px, 3), dtype=np.uint8)
        size = (self.tile_px, self.tile_px)
        for k, (i, win, px) in enumerate(zip(index, windows, pixels, strict=True)):
            x0, y0, x1, y1 = self.boxes[i]
            box = (x0 - win[2], y0 - win[0], x1 - win[2], y1 - win[0])
            out[k] = np.asarray(Image.fromarray(px).resize(size, Image.Resampling.BILINEAR, box=box))
        return out

    def _window(self, i: int) -> Window:
        x0, y0, x1, y1 = self.boxes[i]
        m = self._margin
        return int(np.floor(y0)) - m, int(np.ceil(y1)) + m, int(np.floor(x0)) - m, int(np.ceil(x1)) + m

    def raster_order(self) -> np.ndarray:
        """Spot positions sorted by rows of image chunks, then by x: the order that reads each chunk once."""
        band = max(self._reader.data.chunks[1][0], 1)
        rows = np.floor(self.centers_level[:, 1] / band)
        return np.lexsort((self.centers_level[:, 0], rows))

    def batches(
        self,
        batch_size: int | None = None,
        *,
        order: str = "raster",
        prefetch: int = 2,
        num_workers: int | None = None,
    ) -> Iterator[TileBatch]:
        """Stream tiles in batches, reading the next batches in background threads.

        Parameters
        ----------
        batch_size
            Tiles per batch; defaults to ``storm.settings.batch_size``.
        order
            ``"raster"`` (image order: each chunk read once, bounded memory) or ``"table"`` (spot order).
        prefetch
            Batches read ahead of the one being consumed.
        num_workers
            Reader threads; defaults to ``storm.settings.num_workers``.

        Yields
        ------
        :class:`~storm.pp.TileBatch` with the tiles, their positions in the tile set and their padding flags.

        Examples
        --------
        >>> import storm as st
        >>> ts = st.pp.tile(st.datasets.demo())
        >>> sum(len(b.index) for b in ts.batches(32)) == len(ts)
        True
        """
        batch_size = settings.batch_size if batch_size is None else batch_size
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        if order not in ("raster", "table"):
            raise ValueError(f"`order` must be 'raster' or 'table', got {order!r}.")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
            raise ValueError(f"`prefetch` must be a non-negative integer, got {prefetch!r}.")
        workers = settings.num_workers if num_workers is None else num_workers
        positions = self.raster_order() if order == "raster" else np.arange(len(self))
        chunks = [positions[i : i + batch_size] for i in range(0, len(positions), batch_size)]
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="storm-tiles") as pool:
            pending = [pool.submit(self.read, c) for c in chunks[: prefetch + 1]]
            for k, idx in enumerate(chunks):
                tiles = pending[k].result()
                nxt = k + prefetch + 1
                if nxt < len(chunks):
                    pending.append(pool.submit(self.read, chunks[nxt]))
                pending[k] = None
                yield TileBatch(tiles=tiles, index=idx, padded=self.padded[idx])

    def geometry(self) -> dict[str, Any]:
        """Plain-data description of the tiling, as stored in ``uns["storm"]["tiles"]``."""
        out = {k: v for k, v in self.keys.items() if v is not None}
        out.update(
            tile_px=int(self.tile_px),
            tile_um=float(self.tile_um),
            target_um_per_px=float(self.target_um_per_px),
            level=int(self.level),
            level_um_per_px=[float(v) for v in self.level_um_per_px],
            um_per_px=float(self.um_per_px),
            um_per_px_source=self.um_per_px_source,
            n_spots=len(self),
            n_padded=int(self.padded.sum()),
        )
        return out


def _check_tile_fits(slide: Slide, tile_um: float) -> None:
    """Refuse tiles larger than the whole image, before any pixel buffer is allocated for them."""
    h, w = slide.levels[0].shape_yx
    w_um, h_um = slide.extent_um
    if tile_um > max(h_um, w_um):
        raise ValueError(
            f"`tile_um={tile_um:g}` µm is larger than the whole image {slide.keys.get('image_key')!r} ({w_um:.4g} x "
            f"{h_um:.4g} µm: {w} x {h} px at {slide.um_per_px:.4g} µm/px). Pass a `tile_um` smaller than the image "
            "(112 µm by default), or check the image scale (`um_per_px=`)."
        )
