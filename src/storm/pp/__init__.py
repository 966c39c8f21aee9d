"""Preprocessing: H&E tiling around spots and tissue grids for H&E-only slides (``st.pp``)."""

from ._tileset import TileBatch, TileSet
from ._tiling import tile
from ._tissue import tissue_grid

__all__ = ["TileBatch", "TileSet", "tile", "tissue_grid"]
