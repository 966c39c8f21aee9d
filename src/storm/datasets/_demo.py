"""The demo slide shipped with storm: a crop of her2st section C2 (see ``data/demo/README.md``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._build import build_sdata, categorical, fit_um_per_px, grid_um, image_from_file

if TYPE_CHECKING:
    from spatialdata import SpatialData

DEMO_DIR = Path(__file__).parent / "data" / "demo"


def demo() -> SpatialData:
    """A small real slide bundled with storm: works offline, loads in well under a second.

    151 spots of her2st section C2 (HER2+ breast cancer, legacy Spatial Transcriptomics: 100 µm spots, 200 µm
    apart; Andersson et al., Nat Commun 12, 6012 (2021), doi:10.1038/s41467-021-26271-2) with a full-resolution
    H&E crop (4,672 x 3,238 px, ~0.69 µm/px) and raw counts of the 1,000 genes with the highest total count in the
    crop. ``python scripts/make_demo.py`` rebuilds it; ``data/demo/README.md`` says where each file comes from.

    Returns
    -------
    SpatialData laid out like :func:`storm.datasets.her2st`: image ``"he"`` (RGB uint8 pyramid, lazy), circles
    ``"spots"`` (centres in pixels of the crop, 100 µm diameter) and table ``"table"`` (raw counts as float32 CSR,
    ``obs``: ``section``, ``array_x``, ``array_y``, categorical ``cluster``), all in coordinate system ``"global"``;
    ``uns["spatial"]["demo"]`` holds ``microns_per_pixel`` (fitted from the spot pitch) and ``platform="st"``.

    Examples
    --------
    >>> import storm as st
    >>> sdata = st.datasets.demo()
    >>> sdata["table"].shape
    (151, 1000)
    >>> round(sdata["table"].uns["spatial"]["demo"]["scalefactors"]["microns_per_pixel"], 2)
    0.69
    """
    import pandas as pd

    if not (DEMO_DIR / "he.jpg").exists():
        raise FileNotFoundError(
            f"The demo files are missing from {DEMO_DIR}; reinstall storm, or rebuild them with "
            "`python scripts/make_demo.py` from a source checkout."
        )
    meta = json.loads((DEMO_DIR / "meta.json").read_text())
    spots = pd.read_csv(DEMO_DIR / "spots.csv", dtype={"spot": str, "cluster": str})
    with np.load(DEMO_DIR / "counts.npz", allow_pickle=False) as npz:
        from scipy import sparse

        counts = sparse.csr_matrix((npz["data"], npz["indices"], npz["indptr"]), shape=tuple(npz["shape"]))
        spot_names = npz["spots"].astype(str)
        genes = npz["genes"].astype(str)
    if not np.array_equal(spot_names, spots["spot"].to_numpy(dtype=str)):
        raise ValueError(
            f"{DEMO_DIR}: counts.npz and spots.csv list different spots; rebuild with scripts/make_demo.py."
        )

    section = str(meta["section"])
    obs = pd.DataFrame(index=pd.Index([f"{section}_{s}" for s in spot_names]))
    obs["section"] = pd.Categorical([section] * len(obs))
    obs["array_x"] = spots["array_x"].to_numpy(dtype=int)
    obs["array_y"] = spots["array_y"].to_numpy(dtype=int)
    obs["cluster"] = categorical(spots["cluster"])
    xy = spots[["pixel_x", "pixel_y"]].to_numpy(dtype=float)
    um_per_px = fit_um_per_px(grid_um("st", obs["array_x"], obs["array_y"]), xy)
    x0, y0, x1, y1 = (int(v) for v in meta["crop_box_xyxy"])
    metadata = {
        "section": section,
        "source": f"{meta['source']} ({meta['image']}); {meta['citation']}",
        "crop_box_xyxy": f"{x0},{y0},{x1},{y1}",
    }
    return build_sdata(
        counts=counts,
        obs=obs,
        var=pd.DataFrame(index=pd.Index(genes)),
        xy_px=xy,
        platform="st",
        um_per_px=um_per_px,
        library_id="demo",
        metadata=metadata,
        image=image_from_file(DEMO_DIR / "he.jpg"),
    )
