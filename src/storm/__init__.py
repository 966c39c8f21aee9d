"""storm: a histology + spatial transcriptomics foundation model for scverse.

``import storm as st`` mirrors scanpy: :mod:`storm.pp` prepares (tiling, tissue grid), :mod:`storm.tl` computes,
:mod:`storm.pl` plots, :mod:`storm.io` reads and resolves spatial data, :mod:`storm.datasets` loads example data.
Importing storm is light: torch, timm and spatialdata are imported only by the functions that need them.
"""

from __future__ import annotations

import sys

from . import datasets, io, pl, pp, tl
from ._settings import settings
from ._version import __version__

sys.modules.update({f"{__name__}.{m}": globals()[m] for m in ["datasets", "io", "pl", "pp", "tl"]})

__all__ = ["__version__", "datasets", "io", "pl", "pp", "settings", "tl"]
