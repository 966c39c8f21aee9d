"""Human dorsolateral prefrontal cortex, 10x Visium, with manual cortical layers (Maynard et al., Nat Neurosci 2021)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from storm._logging import logger

from ._build import build_sdata, categorical, fit_um_per_px, grid_um, image_from_array, image_from_file, unique_names
from ._paths import dataset_dir

if TYPE_CHECKING:
    import pandas as pd
    from spatialdata import SpatialData

_HINT = "holding HumanPilot/10X/<sample>/ (positions, scalefactors, lowres images) and derived/dlpfc_<sample>.h5ad"
_SOURCE = (
    "spatialLIBD / github.com/LieberInstitute/HumanPilot; Maynard et al., Nat Neurosci 24, 425-436 (2021), "
    "doi:10.1038/s41593-020-00787-0"
)
#: Samples of the shared data folder; any other spatialLIBD sample whose files are present loads too.
SAMPLES = ("151507", "151508", "151509", "151510", "151669", "151670", "151671", "151672", "151673")
#: Space Ranger files a sample folder ``HumanPilot/10X/<sample>/`` needs when there is no ``derived/`` h5ad.
SPACERANGER_FILES = ("tissue_positions_list.txt", "scalefactors_json.json", "tissue_lowres_image.png")
LAYERS = ["L1", "L2", "L3", "L4", "L5", "L6", "WM"]
#: Space Ranger scale factors kept next to storm's (``spot_diameter_fullres`` is replaced by the true 55 µm spot).
_SPACERANGER_KEYS = ("tissue_hires_scalef", "tissue_lowres_scalef", "fiducial_diameter_fullres")


def dlpfc(sample: str = "151673", path: str | Path | None = None) -> SpatialData:
    """Load one section of the spatialLIBD human DLPFC Visium data set with its manual layer labels.

    Any spatialLIBD sample whose files are in the folder loads: with expression when ``derived/dlpfc_<sample>.h5ad``
    exists (in the shared data: ``"151673"``, raw counts of 5,000 highly variable genes, and ``"151510"``, 500 genes),
    otherwise positions, layers and the image only (``HumanPilot/10X/<sample>/`` with ``tissue_positions_list.txt``,
    ``scalefactors_json.json`` and ``tissue_lowres_image.png``; in the shared data 151507–151509 and 151669–151672),
    with an expression table of 0 genes. Layers come from ``HumanPilot/10X/barcode_level_layer_map.tsv`` when it lists
    the sample. The image is Space Ranger's 600-px lowres PNG
    (~16 µm/px), placed in the full-resolution frame with ``Scale(1 / tissue_lowres_scalef)``: enough for plots and
    spatial domains, too coarse for H&E tiling. Microns per pixel are fitted from the spot positions against the
    hexagonal Visium array (100 µm pitch).

    Parameters
    ----------
    sample
        spatialLIBD sample id (six digits, e.g. ``"151673"``) whose files are in the folder.
    path
        The dlpfc folder (containing ``HumanPilot/`` and ``derived/``), or a folder holding ``dlpfc/``. By default
        ``storm.settings.data_dir / "dlpfc"`` (``storm.settings.data_dir`` defaults to ``$STORM_DATA_DIR``).

    Returns
    -------
    SpatialData with image ``"he"`` (lowres RGB pyramid), shapes ``"spots"`` (55 µm circles at the spot centres in
    full-resolution pixels) and table ``"table"``: raw counts (float32 CSR), ``var_names`` = gene symbols (unique),
    ``var["gene_ids"]`` = Ensembl ids; ``obs``: ``section``, ``barcode``, ``array_x`` (``array_col``), ``array_y``
    (``array_row``), ``layer`` (categorical L1–L6, WM; missing where unlabelled); ``obsm["spatial"]``;
    ``uns["spatial"][sample]`` with ``microns_per_pixel``, ``spot_diameter_fullres`` (55 µm), the Space Ranger scale
    factors and ``metadata`` (``platform="visium"``).

    Examples
    --------
    >>> import storm as st
    >>> sdata = st.datasets.dlpfc("151673", path="../shared/data/dlpfc")  # doctest: +SKIP
    >>> sdata["table"].shape  # doctest: +SKIP
    (3639, 5000)
    """
    sample = str(sample)
    if not re.fullmatch(r"\d{6}", sample):
        raise ValueError(
            f"`sample={sample!r}` is not a spatialLIBD DLPFC sample id: use six digits, e.g. '151673' "
            f"(the shared data holds {list(SAMPLES)})."
        )
    root = dataset_dir("dlpfc", path, markers=["HumanPilot/10X", "derived"], hint=_HINT)
    found = available_samples(root)
    if sample not in found:
        raise ValueError(
            f"`sample={sample!r}` is not in {root}: samples found there: {found or 'none'}. A sample needs "
            f"derived/dlpfc_<sample>.h5ad or HumanPilot/10X/<sample>/ with {list(SPACERANGER_FILES)}."
        )
    h5ad = root / "derived" / f"dlpfc_{sample}.h5ad"
    if h5ad.exists():
        parts = _from_h5ad(h5ad, sample)
    else:
        logger.info("dlpfc %s: no %s; loading positions and layers without expression.", sample, h5ad.name)
        parts = _from_spaceranger(root, sample)
    counts, obs, var, xy, scalefactors, lowres, source = parts

    um_per_px = fit_um_per_px(grid_um("visium", obs["array_x"], obs["array_y"]), xy)
    lowres_scalef = float(scalefactors["tissue_lowres_scalef"])
    if isinstance(lowres, np.ndarray):
        image = image_from_array(lowres, px_to_global=1.0 / lowres_scalef)
    else:
        image = image_from_file(lowres, px_to_global=1.0 / lowres_scalef)
    extra = {k: float(scalefactors[k]) for k in _SPACERANGER_KEYS if k in scalefactors}
    metadata = {
        "section": sample,
        "source": _SOURCE,
        "files": source,
        "spaceranger_spot_diameter_fullres": float(scalefactors.get("spot_diameter_fullres", np.nan)),
    }
    return build_sdata(
        counts=counts,
        obs=obs,
        var=var,
        xy_px=xy,
        platform="visium",
        um_per_px=um_per_px,
        library_id=sample,
        metadata=metadata,
        image=image,
        extra_scalefactors=extra,
    )


def available_samples(root: str | Path) -> list[str]:
    """Sample ids loadable from a dlpfc folder: a ``derived/dlpfc_<id>.h5ad``, or a complete Space Ranger folder.

    Parameters
    ----------
    root
        The dlpfc folder (containing ``HumanPilot/`` and/or ``derived/``).

    Returns
    -------
    Sorted sample ids.

    Examples
    --------
    >>> from storm.datasets._dlpfc import available_samples
    >>> available_samples("/nonexistent")
    []
    """
    root = Path(root)
    found = {f.stem.removeprefix("dlpfc_") for f in (root / "derived").glob("dlpfc_*.h5ad")}
    tenx = root / "HumanPilot" / "10X"
    if tenx.is_dir():
        found |= {d.name for d in tenx.iterdir() if d.is_dir() and all((d / f).exists() for f in SPACERANGER_FILES)}
    return sorted(s for s in found if re.fullmatch(r"\d{6}", s))


def _obs(sample: str, barcodes: Any, array_row: Any, array_col: Any, layer: Any) -> pd.DataFrame:
    import pandas as pd

    barcodes = pd.Index(np.asarray(barcodes, dtype=str))
    obs = pd.DataFrame(index=pd.Index([f"{sample}_{b}" for b in barcodes]))
    obs["section"] = pd.Categorical([sample] * len(obs))
    obs["barcode"] = barcodes.to_numpy()
    obs["array_x"] = np.asarray(array_col, dtype=int)
    obs["array_y"] = np.asarray(array_row, dtype=int)
    obs["layer"] = categorical(pd.Series(np.asarray(layer, dtype=object)), order=LAYERS)
    return obs


def _from_h5ad(file: Path, sample: str) -> tuple:
    import anndata as ad
    import pandas as pd

    adata = ad.read_h5ad(file)
    lib = adata.uns["spatial"][next(iter(adata.uns["spatial"]))]
    layer = adata.obs["layer"].astype(object).where(adata.obs["layer"].notna(), None)
    obs = _obs(sample, adata.obs_names, adata.obs["array_row"], adata.obs["array_col"], layer)
    for column in ("in_tissue", "layer_guess_reordered", "sum_umi_allgenes"):
        if column in adata.obs:
            obs[column] = adata.obs[column].to_numpy()
    ids = pd.Index(adata.var_names.astype(str))
    symbols = adata.var["symbol"] if "symbol" in adata.var else pd.Series(ids, index=adata.var_names)
    symbols = pd.Series(symbols.astype(object).to_numpy(), dtype=object)
    names = symbols.where(symbols.notna() & (symbols.astype(str) != ""), pd.Series(ids.to_numpy(), dtype=object))
    var = pd.DataFrame({"gene_ids": ids.to_numpy()}, index=unique_names(pd.Index(names.astype(str))))
    xy = np.asarray(adata.obsm["spatial"], dtype=float)[:, :2]
    return adata.X, obs, var, xy, dict(lib["scalefactors"]), np.asarray(lib["images"]["lowres"]), str(file.name)


def _from_spaceranger(root: Path, sample: str) -> tuple:
    import pandas as pd
    from scipy import sparse

    folder = root / "HumanPilot" / "10X" / sample
    positions_file = folder / "tissue_positions_list.txt"
    if not positions_file.exists():
        raise FileNotFoundError(f"dlpfc {sample}: {positions_file} is missing; the dlpfc folder is incomplete.")
    columns = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]
    positions = pd.read_csv(positions_file, header=None, names=columns)
    if positions["barcode"].iloc[0] == "barcode":  # Space Ranger >= 2 writes a header row
        positions = positions.iloc[1:].astype(dict.fromkeys(columns[1:], int))
    positions = positions[positions["in_tissue"] == 1].reset_index(drop=True)
    scalefactors = json.loads((folder / "scalefactors_json.json").read_text())
    layers = _layer_map(root, sample)
    layer = positions["barcode"].map(layers)
    obs = _obs(sample, positions["barcode"], positions["array_row"], positions["array_col"], layer)
    obs["in_tissue"] = positions["in_tissue"].to_numpy()
    xy = positions[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(dtype=float)
    var = pd.DataFrame({"gene_ids": pd.Series([], dtype=str)}, index=pd.Index([], dtype=str))
    counts = sparse.csr_matrix((len(obs), 0), dtype=np.float32)
    source = f"HumanPilot/10X/{sample}/tissue_positions_list.txt"
    return counts, obs, var, xy, scalefactors, folder / "tissue_lowres_image.png", source


def _layer_map(root: Path, sample: str) -> dict[str, str]:
    import pandas as pd

    file = root / "HumanPilot" / "10X" / "barcode_level_layer_map.tsv"
    if not file.exists():
        logger.info("dlpfc %s: %s not found; no layer labels.", sample, file)
        return {}
    table = pd.read_csv(file, sep="\t", header=None, names=["barcode", "sample", "layer"], dtype=str)
    table = table[table["sample"] == sample]
    return dict(zip(table["barcode"], table["layer"], strict=True))
