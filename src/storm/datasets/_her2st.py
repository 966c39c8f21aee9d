"""HER2+ breast cancer, legacy Spatial Transcriptomics (Andersson et al., Nat Commun 2021; github.com/almaan/her2st)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from storm._logging import logger

from ._build import build_sdata, categorical, fit_um_per_px, grid_um, image_from_file, unique_names
from ._paths import dataset_dir

if TYPE_CHECKING:
    import pandas as pd
    from spatialdata import SpatialData

_HINT = "a clone of github.com/almaan/her2st, holding data/ST-cnts, data/ST-spotfiles, res/ST-cluster"
_SOURCE = "github.com/almaan/her2st; Andersson et al., Nat Commun 12, 6012 (2021), doi:10.1038/s41467-021-26271-2"
#: Shiny-app display images (app/www/imgs/<section>_HE_image_dark.png): the original resized to 2000 px wide. Width of
#: the original JPEG (app/data/dims.list) and the spot-coordinate columns in the display frame. Used when
#: MANIFEST_sections.csv (written next to the data in storm's shared data folder) is absent.
_DISPLAY = {"A1": (2000 / 6954, "pixel"), "A2": (2000 / 6966, "warped")}


def her2st(section: str, path: str | Path | None = None, *, image: bool = True) -> SpatialData:
    """Load one section of the HER2+ breast cancer Spatial Transcriptomics data set (her2st).

    Legacy ST arrays: spots of 100 µm diameter, 200 µm apart. Counts are raw UMIs per spot for ~15,000 genes.
    Microns per pixel are fitted from the pixel positions of the spots against their array grid (200 µm pitch).

    Images: the full-resolution H&E JPEG where the repository has it (B4, C2–C5, ~0.69 µm/px), decoded lazily;
    for A1 and A2 the 2000-px shiny-app display PNG (black background, an annotation inset in the upper-right corner),
    placed in the full-resolution frame with its scale factor. Other sections have no image element.

    Parameters
    ----------
    section
        Section name, e.g. ``"C2"``, ``"A1"`` (``A1``–``H3``; see the error message for the list).
    path
        The her2st folder (containing ``data/`` and ``res/``), or a folder holding ``her2st/``. By default
        ``storm.settings.data_dir / "her2st"`` (``storm.settings.data_dir`` defaults to ``$STORM_DATA_DIR``).
    image
        Whether to add the H&E image (when the section has one).

    Returns
    -------
    SpatialData with

    * ``images["he"]``: RGB uint8 pyramid (4 levels, one chunk each), level 0 in coordinate system ``"global"``;
    * ``shapes["spots"]``: circles at the spot centres in full-resolution image pixels with the true 100 µm diameter.
      For A2 the frame is the one its display image is warped into (``warped_x/warped_y`` of the cluster
      annotation); sections without an image keep the pixel frame of their (missing) original image;
    * ``tables["table"]``: raw counts (float32 CSR), ``var_names`` = gene symbols; ``obs``: ``section``,
      ``array_x``, ``array_y``, ``cluster`` (expression clusters of the publication, categorical) and, for A1, B1,
      C1, D1, E1, F1, G2, H1, the pathologist's ``label`` (categorical; ``"undetermined"`` kept as a category);
      ``obsm["spatial"]`` = spot centres; ``uns["spatial"][section]`` with ``scalefactors``
      (``microns_per_pixel``, ``spot_diameter_fullres``) and ``metadata`` (``platform="st"``).

    Examples
    --------
    >>> import storm as st
    >>> sdata = st.datasets.her2st("C2", path="../shared/data/her2st")  # doctest: +SKIP
    >>> sdata["table"].n_obs, round(st.io.resolve(sdata).um_per_px, 2)  # doctest: +SKIP
    (187, 0.69)
    """
    import pandas as pd

    root = dataset_dir("her2st", path, markers=["data/ST-cnts"], hint=_HINT)
    sections = sorted(p.name[: -len(".tsv.gz")] for p in (root / "data" / "ST-cnts").glob("*.tsv.gz"))
    if section not in sections:
        raise ValueError(f"`section={section!r}` is not a her2st section; choose one of {sections}.")

    counts = pd.read_csv(root / "data" / "ST-cnts" / f"{section}.tsv.gz", sep="\t", index_col=0)
    counts.index = counts.index.astype(str)
    spots = _read_spots(root, section, counts.index)
    clusters = _read_clusters(root, section)
    img_path, px_to_global, frame = _image_source(root, section)

    xy = spots[["pixel_x", "pixel_y"]].to_numpy(dtype=float)
    coordinates = "pixel_x/pixel_y of data/ST-spotfiles"
    if frame == "warped":
        xy, coordinates = _warped(spots, clusters, section)
    um_per_px = fit_um_per_px(grid_um("st", spots["x"], spots["y"]), xy)

    obs = pd.DataFrame(index=pd.Index([f"{section}_{k}" for k in counts.index]))
    obs["section"] = pd.Categorical([section] * len(obs))
    obs["array_x"] = spots["x"].to_numpy(dtype=int)
    obs["array_y"] = spots["y"].to_numpy(dtype=int)
    if clusters is not None:
        obs["cluster"] = categorical(pd.Series(clusters["label"].reindex(counts.index).to_numpy()))
    labels = _read_labels(root, section)
    if labels is not None:
        obs["label"] = categorical(pd.Series(labels.reindex(counts.index).to_numpy()))

    var = pd.DataFrame(index=pd.Index(counts.columns.astype(str)))
    var.index = unique_names(var.index)
    he = None
    if image and img_path is not None:
        he = image_from_file(img_path, px_to_global=px_to_global)
    elif image:
        logger.info("her2st %s: no H&E image in %s; returning spots and counts only.", section, root)
    metadata = {
        "section": section,
        "source": _SOURCE,
        "image": str(img_path.relative_to(root)) if img_path is not None else "",
        "coordinates": coordinates,
    }
    return build_sdata(
        counts=counts.to_numpy(),
        obs=obs,
        var=var,
        xy_px=xy,
        platform="st",
        um_per_px=um_per_px,
        library_id=section,
        metadata=metadata,
        image=he,
    )


def _key(x: pd.Series, y: pd.Series) -> pd.Index:
    import pandas as pd

    xi = np.rint(x.to_numpy(dtype=float)).astype(int)
    yi = np.rint(y.to_numpy(dtype=float)).astype(int)
    return pd.Index([f"{a}x{b}" for a, b in zip(xi, yi, strict=True)])


def _read_spots(root: Path, section: str, keys: pd.Index) -> pd.DataFrame:
    import pandas as pd

    spotfile = root / "data" / "ST-spotfiles" / f"{section}_selection.tsv"
    if not spotfile.exists():
        raise FileNotFoundError(f"her2st {section}: spot file {spotfile} is missing; the her2st folder is incomplete.")
    spots = pd.read_csv(spotfile, sep="\t")
    spots.index = _key(spots["x"], spots["y"])
    spots = spots[~spots.index.duplicated()]
    missing = keys[~keys.isin(spots.index)]
    if len(missing):
        raise ValueError(
            f"her2st {section}: {len(missing)} spots of the count matrix lack a row in {spotfile.name} "
            f"(e.g. {list(missing[:3])})."
        )
    return spots.loc[keys]


def _read_clusters(root: Path, section: str) -> pd.DataFrame | None:
    import pandas as pd

    file = root / "res" / "ST-cluster" / "lbl" / f"{section}-cluster-annotation.tsv.gz"
    if not file.exists():
        return None
    # Rows are keyed by pixel position ("6930.58x3510.24"); the array x, y columns key them like the counts.
    clusters = pd.read_csv(file, sep="\t", index_col=0)
    clusters.index = _key(clusters["x"], clusters["y"])
    clusters = clusters[~clusters.index.duplicated()]
    clusters["label"] = clusters["label"].map(lambda v: str(int(v)) if pd.notna(v) else v)
    return clusters


def _read_labels(root: Path, section: str) -> pd.Series | None:
    import pandas as pd

    file = root / "data" / "ST-pat" / "lbl" / f"{section}_labeled_coordinates.tsv"
    if not file.exists():
        return None
    # The pixel_x/pixel_y of these files are not in the H&E frame; the array x, y (slightly off-grid) are.
    labels = pd.read_csv(file, sep="\t").dropna(subset=["x", "y", "label"])
    series = pd.Series(labels["label"].astype(str).str.strip().to_numpy(), index=_key(labels["x"], labels["y"]))
    return series[~series.index.duplicated()]


def _image_source(root: Path, section: str) -> tuple[Path | None, float, str]:
    """(image file, size of one image pixel in full-resolution pixels, spot coordinate frame)."""
    jpegs = sorted((root / "data" / "ST-imgs" / section[0]).glob(f"{section}/*.jpg"))
    if jpegs:
        return jpegs[0], 1.0, "pixel"
    display = root / "app" / "www" / "imgs" / f"{section}_HE_image_dark.png"
    scale, frame = _display_scale(root, section)
    if scale is None or not display.exists():
        return None, 1.0, "pixel"  # no image: keep the frame of the (missing) original
    return display, 1.0 / scale, frame


def _display_scale(root: Path, section: str) -> tuple[float | None, str]:
    """Scale of the display image relative to the original (image px per original px) and the coordinate frame."""
    manifest = root / "MANIFEST_sections.csv"
    if manifest.exists():
        with manifest.open(newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("section") == section and row.get("coord_scale_to_image"):
                    frame = "warped" if row.get("coord_columns", "").startswith("warped") else "pixel"
                    return float(row["coord_scale_to_image"]), frame
    if section in _DISPLAY:
        return _DISPLAY[section]
    return None, "pixel"


def _warped(spots: pd.DataFrame, clusters: pd.DataFrame | None, section: str) -> tuple[np.ndarray, str]:
    """Spot centres in the warped frame; spots missing from the cluster file get an affine fit pixel -> warped."""
    if clusters is None:
        raise FileNotFoundError(
            f"her2st {section}: res/ST-cluster/lbl/{section}-cluster-annotation.tsv.gz (warped "
            "spot coordinates of the display image) is missing."
        )
    warped = clusters[["warped_x", "warped_y"]].reindex(spots.index).to_numpy(dtype=float)
    have = np.isfinite(warped).all(axis=1)
    pixel = spots[["pixel_x", "pixel_y"]].to_numpy(dtype=float)
    text = f"warped_x/warped_y of res/ST-cluster/lbl/{section}-cluster-annotation.tsv.gz"
    if not have.all():
        if have.sum() < 3:
            raise ValueError(f"her2st {section}: too few spots with warped coordinates to place the others.")
        design = np.column_stack([pixel, np.ones(len(pixel))])
        coef, *_ = np.linalg.lstsq(design[have], warped[have], rcond=None)
        warped[~have] = design[~have] @ coef
        text += f" ({int((~have).sum())} spots placed by an affine fit pixel -> warped)"
    return warped, text
