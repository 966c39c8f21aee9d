"""Bounded-memory reads of windows from one dask-backed pyramid level."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ._image import to_rgb_uint8

if TYPE_CHECKING:
    import dask.array as da

Window = tuple[int, int, int, int]  # y0, y1, x0, x1 in pixels of the level; may reach past the borders


#: Decoded whole levels shared by every reader of the process, keyed by the dask array's name (a hash of its graph),
#: least recently used first; at most ``storm.settings.tile_cache_mb`` in all.
_DECODED: OrderedDict[str, np.ndarray] = OrderedDict()
_DECODED_LOCK = threading.Lock()


def decoded_level(name: str, budget_bytes: int, decode: Callable[[], np.ndarray]) -> np.ndarray:
    """The decoded pixels of level ``name``: from the process cache, else ``decode()`` and keep them within budget.

    Each slide image is decoded once per process, however many tile sets, tools or calls read it (``st.tl.embed``
    then ``st.tl.predict_expression`` on one slide decode its JPEG once).
    """
    with _DECODED_LOCK:
        if name in _DECODED:
            _DECODED.move_to_end(name)
            return _DECODED[name]
    pixels = decode()
    with _DECODED_LOCK:
        _DECODED[name] = pixels
        _DECODED.move_to_end(name)
        while sum(v.nbytes for v in _DECODED.values()) > budget_bytes and len(_DECODED) > 1:
            _DECODED.popitem(last=False)
    return pixels


class LevelReader:
    """Read RGB uint8 windows of a ``(c, y, x)`` dask array, padding with white past the borders.

    Every chunk converts with the same ``white`` (the value of full intensity, decided once for the whole image by
    :func:`storm.io.resolve`), so the tiles of an image do not depend on its chunking. A level that fits in
    ``budget_bytes`` is decoded once and kept; a larger one is read chunk by chunk through an LRU cache of at most
    ``budget_bytes``, so memory stays bounded whatever the slide size. All chunks a batch needs are computed in one dask
    call, so shared upstream work (e.g. decoding a JPEG) happens once.
    """

    def __init__(self, data: da.Array, budget_bytes: int, white: float) -> None:
        self.data = data.rechunk({0: -1}) if len(data.chunks[0]) > 1 else data
        self.budget_bytes = budget_bytes
        self.white = white
        self.height, self.width = int(data.shape[1]), int(data.shape[2])
        self.whole = data.nbytes <= budget_bytes
        self._y_edges = np.cumsum((0, *self.data.chunks[1]))
        self._x_edges = np.cumsum((0, *self.data.chunks[2]))
        self._chunks: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cached_bytes = 0
        self._full: np.ndarray | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_chunks=OrderedDict(), _cached_bytes=0, _full=None, _lock=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def cached_bytes(self) -> int:
        """Bytes of decoded pixels held now."""
        return self._full.nbytes if self._full is not None else self._cached_bytes

    def read_many(self, windows: list[Window]) -> list[np.ndarray]:
        """RGB uint8 ``(h, w, 3)`` pixels of each window."""
        if self.whole:
            full = self._load_full()
            return [self._crop(full, w) for w in windows]
        needed = sorted({key for w in windows for key in self._chunk_keys(w)})
        chunks = self._fetch(needed)
        return [self._assemble(w, chunks) for w in windows]

    def _load_full(self) -> np.ndarray:
        """The whole level as a (y, x, 3) buffer, decoded once per process (:func:`decoded_level`)."""
        if self._full is None:
            self._full = decoded_level(f"{self.data.name}/{self.white:g}", self.budget_bytes, self._decode_full)
        return self._full

    def _decode_full(self) -> np.ndarray:
        """Decode the whole level, converting chunk by chunk (no whole-image copies)."""
        import dask

        blocks = self.data.to_delayed().ravel()
        if len(blocks) == 1:
            return to_rgb_uint8(np.asarray(dask.compute(blocks[0], scheduler="threads")[0]), self.white)
        full = np.empty((self.height, self.width, 3), dtype=np.uint8)
        keys = [(i, j) for i in range(len(self._y_edges) - 1) for j in range(len(self._x_edges) - 1)]
        computed = list(dask.compute(*blocks, scheduler="threads"))
        for k, (i, j) in enumerate(keys):
            y0, x0 = int(self._y_edges[i]), int(self._x_edges[j])
            rgb = to_rgb_uint8(np.asarray(computed[k]), self.white)
            full[y0 : y0 + rgb.shape[0], x0 : x0 + rgb.shape[1]] = rgb
            computed[k] = None
        return full

    def _crop(self, full: np.ndarray, window: Window) -> np.ndarray:
        y0, y1, x0, x1 = window
        if y0 >= 0 and x0 >= 0 and y1 <= self.height and x1 <= self.width:
            return full[y0:y1, x0:x1]
        out = np.full((y1 - y0, x1 - x0, 3), 255, dtype=np.uint8)
        cy0, cy1, cx0, cx1 = max(y0, 0), min(y1, self.height), max(x0, 0), min(x1, self.width)
        if cy0 < cy1 and cx0 < cx1:
            out[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = full[cy0:cy1, cx0:cx1]
        return out

    def _chunk_keys(self, window: Window) -> list[tuple[int, int]]:
        y0, y1, x0, x1 = window
        y0, y1, x0, x1 = max(y0, 0), min(y1, self.height), max(x0, 0), min(x1, self.width)
        if y0 >= y1 or x0 >= x1:
            return []
        iy = range(np.searchsorted(self._y_edges, y0, "right") - 1, np.searchsorted(self._y_edges, y1, "left"))
        ix = range(np.searchsorted(self._x_edges, x0, "right") - 1, np.searchsorted(self._x_edges, x1, "left"))
        return [(i, j) for i in iy for j in ix]

    def _fetch(self, keys: list[tuple[int, int]]) -> dict[tuple[int, int], np.ndarray]:
        """The chunks for ``keys`` (held by the caller, so eviction by other threads cannot take them away)."""
        import dask

        with self._lock:
            found = {k: self._chunks[k] for k in keys if k in self._chunks}
            for k in found:
                self._chunks.move_to_end(k)
        missing = [k for k in keys if k not in found]
        if not missing:
            return found
        blocks = list(dask.compute(*[self.data.blocks[0, i, j] for i, j in missing], scheduler="synchronous"))
        with self._lock:
            for k, key in enumerate(missing):
                found[key] = self._chunks.get(key)
                if found[key] is None:
                    found[key] = self._chunks[key] = to_rgb_uint8(np.asarray(blocks[k]), self.white)
                    self._cached_bytes += found[key].nbytes
                blocks[k] = None  # release each decoded block as soon as it is converted
            while self._cached_bytes > self.budget_bytes and self._chunks:
                self._cached_bytes -= self._chunks.popitem(last=False)[1].nbytes
        return found

    def _assemble(self, window: Window, chunks: dict[tuple[int, int], np.ndarray]) -> np.ndarray:
        y0, y1, x0, x1 = window
        out = np.full((y1 - y0, x1 - x0, 3), 255, dtype=np.uint8)
        for i, j in self._chunk_keys(window):
            chunk = chunks[i, j]
            by0, bx0 = int(self._y_edges[i]), int(self._x_edges[j])
            cy0, cy1 = max(y0, by0), min(y1, by0 + chunk.shape[0])
            cx0, cx1 = max(x0, bx0), min(x1, bx0 + chunk.shape[1])
            out[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = chunk[cy0 - by0 : cy1 - by0, cx0 - bx0 : cx1 - bx0]
        return out
