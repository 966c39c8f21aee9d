"""The one settings object of storm (``storm.settings``)."""

from __future__ import annotations

import os
from pathlib import Path

_DEVICES = ("auto", "cpu", "cuda", "mps")
_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_VERBOSITY = ("error", "warning", "info", "debug")
_ORIENTATIONS = (1, 8)


class StormSettings:
    """Global defaults used whenever a storm function receives ``None`` for the matching argument.

    Examples
    --------
    >>> import storm as st
    >>> st.settings.batch_size = 32
    >>> st.settings.batch_size
    32
    """

    def __init__(self) -> None:
        self._device = "auto"
        self._precision = "auto"
        self._batch_size = 64
        self._num_workers = min(4, os.cpu_count() or 1)
        self._tile_cache_mb = default_tile_cache_mb()
        self._orientations = 8
        #: Show progress bars (tqdm) for embedding, prediction and training.
        self.progress = True
        self.seed = 0
        self.cache_dir = Path(os.environ.get("STORM_CACHE_DIR", Path.home() / ".cache" / "storm"))
        env_data = os.environ.get("STORM_DATA_DIR")
        self.data_dir: Path | None = Path(env_data) if env_data else None

    @property
    def device(self) -> str:
        """Compute device: ``"auto"`` (GPU when present), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``."""
        return self._device

    @device.setter
    def device(self, value: str) -> None:
        if not isinstance(value, str) or value.split(":")[0] not in _DEVICES:
            raise ValueError(f"`device` must be one of {_DEVICES} (optionally 'cuda:N'), got {value!r}.")
        self._device = value

    @property
    def precision(self) -> str:
        """Inference precision: ``"auto"`` (bf16 autocast on GPUs that support it), ``"fp32"``, ``"bf16"``, ``"fp16"``."""
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        if value not in _PRECISIONS:
            raise ValueError(f"`precision` must be one of {_PRECISIONS}, got {value!r}.")
        self._precision = value

    @property
    def orientations(self) -> int:
        """How many orientations of each niche the model sees at inference: ``8`` (default) or ``1``.

        With ``8``, every niche goes through the model in the slide's eight orientations (four quarter-turns, mirrored
        or not: tiles and spot offsets together) and the outputs are averaged, so embeddings, predictions and domains
        are the same for a slide mirrored or turned by quarter-turns. ``1`` is one pass as the slide lies: several
        times faster, most with the H&E image, but the results then move a little with the slide's orientation (cost
        and effect: "Orientations" in ``docs/benchmarks.md``). A model reading a frozen pathology encoder's features turns
        the offsets only: the features are the encoder's, of each tile as it lies.
        """
        return self._orientations

    @orientations.setter
    def orientations(self, value: int) -> None:
        if isinstance(value, bool) or value not in _ORIENTATIONS:
            raise ValueError(f"`orientations` must be 8 (all flips and quarter-turns) or 1 (one pass), got {value!r}.")
        self._orientations = int(value)

    @property
    def batch_size(self) -> int:
        """Default number of spots (tiles) per batch."""
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self._batch_size = _positive_int("batch_size", value)

    @property
    def num_workers(self) -> int:
        """Background threads that read and resample tiles."""
        return self._num_workers

    @num_workers.setter
    def num_workers(self, value: int) -> None:
        self._num_workers = _positive_int("num_workers", value)

    @property
    def tile_cache_mb(self) -> int:
        """Memory budget (MiB) for decoded image pixels held while tiling; bounds memory whatever the slide size.

        Decoded images are kept within it, so tools run one after another on the same slides (``embed`` then
        ``predict_expression``, or a cohort embedded twice) decode each image once. The default is an eighth of the
        machine's memory, between 1 GiB and 8 GiB (3 GiB on a 24 GiB machine: five 9,300 x 9,900 px her2st sections).
        """
        return self._tile_cache_mb

    @tile_cache_mb.setter
    def tile_cache_mb(self, value: int) -> None:
        self._tile_cache_mb = _positive_int("tile_cache_mb", value)

    @property
    def verbosity(self) -> str:
        """What storm's log shows on stderr: ``"error"``, ``"warning"``, ``"info"`` (default) or ``"debug"``."""
        import logging

        from ._logging import logger

        return logging.getLevelName(logger.level).lower()

    @verbosity.setter
    def verbosity(self, value: str) -> None:
        import logging

        from ._logging import logger

        if value not in _VERBOSITY:
            raise ValueError(f"`verbosity` must be one of {_VERBOSITY}, got {value!r}.")
        logger.setLevel(getattr(logging, value.upper()))

    def __repr__(self) -> str:
        fields = [
            "device",
            "precision",
            "batch_size",
            "orientations",
            "num_workers",
            "tile_cache_mb",
            "progress",
            "verbosity",
            "seed",
            "cache_dir",
        ]
        return "StormSettings(" + ", ".join(f"{f}={getattr(self, f)!r}" for f in fields) + ")"


def default_tile_cache_mb() -> int:
    """An eighth of physical memory in MiB, clamped to 1,024-8,192 (1,024 where the platform does not say)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return 1024
    return int(min(max(total // 8 // 2**20, 1024), 8192))


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return value


settings = StormSettings()
