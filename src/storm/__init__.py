"""storm: a histology + spatial transcriptomics foundation model for scverse.

``import storm as st`` mirrors scanpy: :mod:`storm.pp` prepares (tiling, tissue grid), :mod:`storm.tl` computes,
:mod:`storm.pl` plots, :mod:`storm.io` reads and resolves spatial data, :mod:`storm.datasets` loads example data;
:mod:`storm.models`, :mod:`storm.data` and :mod:`storm.train` (which need torch) are imported on first use, as
``st.models``. Importing storm is light: torch, timm and spatialdata are imported only by the functions that need them.
"""

from __future__ import annotations

import sys

from . import datasets, io, pl, pp, tl
from ._settings import settings
from ._version import __version__

sys.modules.update({f"{__name__}.{m}": globals()[m] for m in ["datasets", "io", "pl", "pp", "tl"]})

__all__ = ["__version__", "datasets", "io", "pl", "pp", "settings", "tl"]

#: Subpackages that import torch when loaded: reached as ``st.models`` on first use, not by ``import storm``.
_ON_FIRST_USE = ("data", "models", "train")


def __getattr__(name: str) -> object:
    if name in _ON_FIRST_USE:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_ON_FIRST_USE])
