"""Example data: a small bundled demo, loaders for public datasets and synthetic slides (``st.datasets``).

The public-data loaders read local copies: pass ``path=`` or set ``storm.settings.data_dir`` (``$STORM_DATA_DIR``) to a
folder holding ``her2st/`` and ``dlpfc/``. Every loader returns a :class:`~spatialdata.SpatialData` with image ``"he"``,
spot circles ``"spots"`` and table ``"table"`` in the full-resolution pixel frame ``"global"``, with microns per pixel
in ``table.uns["spatial"][library_id]["scalefactors"]``, so :func:`storm.io.resolve` needs no extra arguments.
"""

from ._cohort import planted_cohort
from ._demo import demo
from ._dlpfc import dlpfc
from ._her2st import her2st
from ._her2st_clinical import her2st_clinical
from ._load import load
from ._synthetic import synthetic

__all__ = ["demo", "dlpfc", "her2st", "her2st_clinical", "load", "planted_cohort", "synthetic"]
