"""Reading spatial data and resolving image, spots, scale and coordinate systems (``st.io``)."""

from ._anndata import from_anndata
from ._resolve import resolve
from ._slide import ImageLevel, Slide
from ._to_anndata import to_anndata
from ._write import write_table

__all__ = ["ImageLevel", "Slide", "from_anndata", "resolve", "to_anndata", "write_table"]
