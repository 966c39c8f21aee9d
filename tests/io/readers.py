"""Writers of small on-disk bundles laid out as the scverse readers expect them (no network).

Each writer builds one vendor output folder from the real spatialLIBD DLPFC section 151673 (Maynard et al., Nat Neurosci
24, 425-436, 2021; ``../shared/data/dlpfc``): its raw counts, spot positions, scale factors and lowres H&E PNG, cut down to
a few hundred spots and genes, so that reading a bundle with the real reader takes about a second:

* :func:`write_spaceranger_visium` -- a Space Ranger ``outs/`` folder for ``spatialdata_io.visium`` and
  ``scanpy.read_visium`` (counts, positions and scale factors unchanged; the lowres PNG byte for byte; a hires PNG
  upsampled from it with the true ``tissue_hires_scalef``).
* :func:`write_visium_hd` -- a Space Ranger HD ``outs/`` folder for ``spatialdata_io.visium_hd`` (2/8/16 µm bins whose
  counts are thinned from the nearest DLPFC spot, the larger bins summing the 2 µm ones as Space Ranger does).
* :func:`write_xenium` -- a Xenium Onboard Analysis 2.0 output folder for ``spatialdata_io.xenium``, optionally with a
  post-Xenium H&E (``*he_image.ome.tif`` + ``*he_imagealignment.csv``) for ``spatialdata_io.xenium_aligned_image``.
* :func:`write_cosmx` -- a CosMx SMI flat-file export for ``spatialdata_io.cosmx``.

Only the geometry of the HD, Xenium and CosMx bundles is made up (those formats have no DLPFC data); it is chosen so the
physical scale a reader should report is known exactly and returned in the :class:`Bundle`.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

#: Visium spot pitch (centre-to-centre) and diameter, µm.
VISIUM_PITCH_UM = 100.0
#: Xenium morphology pixel, µm (``pixel_size`` in ``experiment.xenium``).
XENIUM_PIXEL_UM = 0.2125
#: CosMx SMI pixel, µm.
COSMX_PIXEL_UM = 0.12028
_POSITION_COLUMNS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]


@dataclass
class Bundle:
    """What a writer put on disk, and what a reader (and storm) should find there.

    Attributes
    ----------
    path
        The folder to give the reader.
    dataset_id
        Name the reader gives the elements (``None`` when the reader names them itself).
    n_spots
        Spots, bins or cells in the counts matrix (per bin size for Visium HD).
    genes
        Gene symbols of the counts matrix, in order.
    um_per_px
        Microns per pixel of each image written, keyed by the element name the reader gives it.
    files
        Paths of the files written, keyed by role.
    extra
        Writer-specific facts (scale factors, transforms, ...).
    """

    path: Path
    dataset_id: str | None
    n_spots: int | dict[int, int]
    genes: list[str]
    um_per_px: dict[str, float] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------------------
# The real DLPFC section


@dataclass(frozen=True)
class _Dlpfc:
    counts: sparse.csr_matrix  # spots x genes, integer raw UMIs
    barcodes: np.ndarray
    gene_ids: np.ndarray
    symbols: np.ndarray
    xy_fullres: np.ndarray  # (x, y) = (pxl_col, pxl_row), full-resolution px
    positions: pd.DataFrame  # every barcode of the array, Space Ranger 1 columns
    scalefactors: dict[str, float]
    lowres_png: Path


@lru_cache(maxsize=2)
def _dlpfc(dlpfc_dir: str, sample: str = "151673") -> _Dlpfc:
    import anndata as ad

    root = Path(dlpfc_dir)
    folder = root / "HumanPilot" / "10X" / sample
    adata = ad.read_h5ad(root / "derived" / f"dlpfc_{sample}.h5ad")
    positions = pd.read_csv(folder / "tissue_positions_list.txt", header=None, names=_POSITION_COLUMNS)
    counts = sparse.csr_matrix(adata.X).astype(np.int32)
    symbols = adata.var["symbol"].astype(str).to_numpy() if "symbol" in adata.var else adata.var_names.to_numpy()
    return _Dlpfc(
        counts=counts,
        barcodes=adata.obs_names.to_numpy(dtype=str),
        gene_ids=adata.var_names.to_numpy(dtype=str),
        symbols=symbols,
        xy_fullres=np.asarray(adata.obsm["spatial"], dtype=float)[:, :2],
        positions=positions,
        scalefactors=json.loads((folder / "scalefactors_json.json").read_text()),
        lowres_png=folder / "tissue_lowres_image.png",
    )


def _genes(src: _Dlpfc, spots: np.ndarray, n_genes: int) -> np.ndarray:
    """The ``n_genes`` genes with the highest variance of log counts over ``spots`` (unique symbols), in file order."""
    x = src.counts[spots].toarray().astype(float)
    var = np.log1p(x).var(0)
    order = np.argsort(-var, kind="stable")
    _, first = np.unique(src.symbols[order], return_index=True)
    keep = order[np.sort(first)][:n_genes]
    return np.sort(keep)


def _compact_spots(src: _Dlpfc, n_spots: int) -> np.ndarray:
    """Indices of the ``n_spots`` in-tissue spots nearest to the section's centre (a disc crossing several layers)."""
    centre = np.median(src.xy_fullres, axis=0)
    distance = np.linalg.norm(src.xy_fullres - centre, axis=1)
    return np.sort(np.argsort(distance, kind="stable")[:n_spots])


def _lowres_rgb(src: _Dlpfc) -> np.ndarray:
    from PIL import Image

    with Image.open(src.lowres_png) as im:
        return np.asarray(im.convert("RGB"))


def _he_texture(src: _Dlpfc, shape_yx: tuple[int, int], crop_lowres_px: int = 60) -> np.ndarray:
    """A real H&E patch for formats without DLPFC images: a crop of the lowres PNG in tissue, resized to ``shape_yx``."""
    from PIL import Image

    lowres = _lowres_rgb(src)
    cx, cy = np.median(src.xy_fullres, axis=0) * float(src.scalefactors["tissue_lowres_scalef"])
    half = crop_lowres_px // 2
    crop = lowres[int(cy) - half : int(cy) + half, int(cx) - half : int(cx) + half]
    resized = Image.fromarray(crop).resize((shape_yx[1], shape_yx[0]), Image.BILINEAR)
    return np.asarray(resized)


def _thin(counts: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    return rng.binomial(counts.astype(np.int64), p).astype(np.int32)


# --------------------------------------------------------------------------------------------------------------------
# Shared file formats


def write_10x_h5(
    file: str | Path,
    counts: Any,
    barcodes: Any,
    gene_ids: Any,
    gene_names: Any,
    *,
    library_id: str | None = None,
    feature_types: Any = None,
    genome: str = "GRCh38",
    software_version: str = "spaceranger-1.0.0",
) -> Path:
    """Write a Cell Ranger / Space Ranger >= 3 feature-barcode matrix (``filtered_feature_bc_matrix.h5``).

    Parameters
    ----------
    file
        Output path.
    counts
        Barcodes x features integer counts (dense or sparse).
    barcodes, gene_ids, gene_names
        Barcode strings, feature ids (Ensembl) and feature names (symbols).
    library_id
        Written to the ``library_ids`` attribute (Space Ranger does; ``scanpy.read_visium`` reads it).
    feature_types
        One type per feature (default all ``"Gene Expression"``).
    genome
        Reference name stored per feature.
    software_version
        ``software_version`` attribute.

    Returns
    -------
    The path written.
    """
    import h5py

    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    matrix = sparse.csr_matrix(counts).astype(np.int32)  # rows = barcodes: the CSC of features x barcodes
    matrix.sort_indices()
    n_barcodes, n_features = matrix.shape
    if feature_types is None:
        feature_types = ["Gene Expression"] * n_features

    def _bytes(values: Any) -> np.ndarray:
        return np.asarray([str(v).encode() for v in values])

    with h5py.File(file, "w") as f:
        if library_id is not None:
            f.attrs["library_ids"] = _bytes([library_id])
        f.attrs["chemistry_description"] = b"Spatial 3' v1"
        f.attrs["software_version"] = software_version.encode()
        f.attrs["filetype"] = b"matrix"
        f.attrs["version"] = 2
        group = f.create_group("matrix")
        group.create_dataset("barcodes", data=_bytes(barcodes))
        group.create_dataset("data", data=matrix.data.astype(np.int32), compression="gzip")
        group.create_dataset("indices", data=matrix.indices.astype(np.int64), compression="gzip")
        group.create_dataset("indptr", data=matrix.indptr.astype(np.int64))
        group.create_dataset("shape", data=np.asarray([n_features, n_barcodes], dtype=np.int32))
        features = group.create_group("features")
        features.create_dataset("id", data=_bytes(gene_ids))
        features.create_dataset("name", data=_bytes(gene_names))
        features.create_dataset("feature_type", data=_bytes(feature_types))
        features.create_dataset("genome", data=_bytes([genome] * n_features))
        features.create_dataset("_all_tag_keys", data=_bytes(["genome"]))
    return file


def _write_png(file: Path, rgb: np.ndarray) -> Path:
    from PIL import Image

    file.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(rgb)).save(file, compress_level=1)
    return file


# --------------------------------------------------------------------------------------------------------------------
# 10x Visium (Space Ranger)


def write_spaceranger_visium(
    folder: str | Path,
    dlpfc_dir: str | Path,
    *,
    n_spots: int = 300,
    n_genes: int = 200,
    hires: bool = True,
    positions: str = "v1",
    library_id: str = "151673",
    prefix_counts: bool = False,
) -> Bundle:
    """Write a Space Ranger ``outs/`` folder of DLPFC 151673, cut to ``n_spots`` spots and ``n_genes`` genes.

    Layout (as Space Ranger writes it)::

        folder/filtered_feature_bc_matrix.h5          (or <library_id>_filtered_feature_bc_matrix.h5)
        folder/spatial/tissue_positions_list.csv      (Space Ranger 1, no header; "v2": tissue_positions.csv)
        folder/spatial/scalefactors_json.json         (the real one)
        folder/spatial/tissue_lowres_image.png        (the real one, byte for byte)
        folder/spatial/tissue_hires_image.png         (the lowres PNG upsampled by tissue_hires_scalef / lowres)

    The positions file lists every barcode of the array (in and out of tissue), as Space Ranger does; the counts hold
    the ``n_spots`` in-tissue spots nearest to the section's centre and the ``n_genes`` most variable genes there.

    Parameters
    ----------
    folder
        Output folder (created).
    dlpfc_dir
        The shared ``dlpfc`` data folder (``HumanPilot/10X/151673`` and ``derived/dlpfc_151673.h5ad``).
    n_spots, n_genes
        Size of the counts matrix.
    hires
        Whether to write ``tissue_hires_image.png``.
    positions
        ``"v1"`` (``tissue_positions_list.csv``, no header) or ``"v2"`` (``tissue_positions.csv`` with header).
    library_id
        ``library_ids`` attribute of the h5 file (and its file-name prefix with ``prefix_counts``).
    prefix_counts
        Name the counts file ``<library_id>_filtered_feature_bc_matrix.h5``, from which spatialdata-io infers the id.

    Returns
    -------
    The :class:`Bundle`; ``um_per_px`` keys are ``"fullres"``, ``"hires"`` and ``"lowres"`` (µm per pixel from the 100 µm
    spot pitch of the real array, ≈ 0.7245 µm per full-resolution pixel).
    """
    if positions not in ("v1", "v2"):
        raise ValueError(f"`positions` must be 'v1' or 'v2', got {positions!r}.")
    folder = Path(folder)
    spatial = folder / "spatial"
    spatial.mkdir(parents=True, exist_ok=True)
    src = _dlpfc(str(dlpfc_dir))
    spots = _compact_spots(src, n_spots)
    genes = _genes(src, spots, n_genes)

    name = "filtered_feature_bc_matrix.h5"
    counts_file = folder / (f"{library_id}_{name}" if prefix_counts else name)
    write_10x_h5(
        counts_file,
        src.counts[spots][:, genes],
        src.barcodes[spots],
        src.gene_ids[genes],
        src.symbols[genes],
        library_id=library_id,
    )
    if positions == "v1":
        positions_file = spatial / "tissue_positions_list.csv"
        src.positions.to_csv(positions_file, header=False, index=False)
    else:
        positions_file = spatial / "tissue_positions.csv"
        src.positions.to_csv(positions_file, header=True, index=False)
    scalefactors_file = spatial / "scalefactors_json.json"
    scalefactors_file.write_text(json.dumps(src.scalefactors))
    lowres_file = spatial / "tissue_lowres_image.png"
    shutil.copyfile(src.lowres_png, lowres_file)
    files = {
        "counts": counts_file,
        "positions": positions_file,
        "scalefactors": scalefactors_file,
        "lowres": lowres_file,
    }

    lowres_scalef = float(src.scalefactors["tissue_lowres_scalef"])
    hires_scalef = float(src.scalefactors["tissue_hires_scalef"])
    if hires:
        from PIL import Image

        lowres = _lowres_rgb(src)
        size = round(lowres.shape[0] * hires_scalef / lowres_scalef)  # 600 * 0.150015 / 0.045004502 = 2000 px
        up = np.asarray(Image.fromarray(lowres).resize((size, size), Image.BILINEAR))
        files["hires"] = _write_png(spatial / "tissue_hires_image.png", up)

    um_fullres = _visium_um_per_px(src)
    return Bundle(
        path=folder,
        dataset_id=library_id,
        n_spots=len(spots),
        genes=list(src.symbols[genes]),
        um_per_px={"fullres": um_fullres, "hires": um_fullres / hires_scalef, "lowres": um_fullres / lowres_scalef},
        files=files,
        extra={"scalefactors": dict(src.scalefactors), "barcodes": list(src.barcodes[spots])},
    )


def _visium_um_per_px(src: _Dlpfc) -> float:
    """µm per full-resolution px from the array: 100 µm between neighbouring spots of one row (array_col step 2)."""
    pos = src.positions.set_index(["array_row", "array_col"])[["pxl_col_in_fullres", "pxl_row_in_fullres"]]
    nxt = pos.copy()
    nxt.index = pd.MultiIndex.from_arrays([pos.index.get_level_values(0), pos.index.get_level_values(1) - 2])
    joined = pos.join(nxt, rsuffix="_next", how="inner")
    step = np.hypot(
        joined["pxl_col_in_fullres_next"] - joined["pxl_col_in_fullres"],
        joined["pxl_row_in_fullres_next"] - joined["pxl_row_in_fullres"],
    )
    return VISIUM_PITCH_UM / float(np.median(step))


# --------------------------------------------------------------------------------------------------------------------
# 10x Visium HD (Space Ranger 3)


def write_visium_hd(
    folder: str | Path,
    dlpfc_dir: str | Path,
    *,
    bins: tuple[int, ...] = (2, 8, 16),
    size_um: float = 160.0,
    um_per_px: float = 0.5,
    dataset_id: str | None = "hd_sample",
    fullres: bool = True,
    seed: int = 0,
) -> Bundle:
    """Write a Space Ranger 3 Visium HD ``outs/`` folder: a ``size_um`` square of tissue binned at ``bins`` µm.

    Layout::

        folder/<dataset_id>_feature_slice.h5          (only the metadata_json attribute the reader parses)
        folder/spatial/scalefactors_json.json, tissue_hires_image.png, tissue_lowres_image.png
        folder/binned_outputs/square_002um/filtered_feature_bc_matrix.h5
        folder/binned_outputs/square_002um/spatial/tissue_positions.parquet, scalefactors_json.json
        ... (one folder per bin size)
        folder/microscope_image/tissue_image.tif      (with ``fullres``; the full-resolution H&E)

    The 2 µm bins take the counts of the nearest DLPFC 151673 spot (the square mapped onto a ~10-spot wide patch of the
    section), binomially thinned to ~1 % (a 2 µm bin holds a few UMIs); coarser bins sum the 2 µm bins they contain, as
    Space Ranger does. Full-resolution pixels are ``um_per_px`` µm; the H&E is a real DLPFC patch resized to the frame.

    Parameters
    ----------
    folder
        Output folder (created).
    dlpfc_dir
        The shared ``dlpfc`` data folder.
    bins
        Bin sizes in µm; each must divide ``size_um`` and be a multiple of 2.
    size_um
        Side of the binned square.
    um_per_px
        µm per full-resolution pixel.
    dataset_id
        File-name prefix of the feature slice file (spatialdata-io names the elements with it); ``None`` writes
        ``feature_slice.h5`` without prefix.
    fullres
        Whether to write the full-resolution image in ``microscope_image/``.
    seed
        Random seed of the thinning.

    Returns
    -------
    The :class:`Bundle`; ``n_spots`` maps bin size to number of bins; ``um_per_px`` keys are the image element names.
    """
    import h5py

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    src = _dlpfc(str(dlpfc_dir))
    rng = np.random.default_rng(seed)
    n2 = int(round(size_um / 2))
    if any(b % 2 or size_um % b for b in bins):
        raise ValueError(f"Each bin size must be even and divide `size_um={size_um}`, got {bins}.")
    margin_px = 40
    frame_px = int(round(size_um / um_per_px)) + 2 * margin_px
    hires_scalef, lowres_scalef = 0.5, 0.15

    # counts of the 2 µm bins: nearest DLPFC spot of a ~1,400 px (10 spots) patch, thinned
    spots = _compact_spots(src, 400)
    genes = _genes(src, spots, 200)
    centre = np.median(src.xy_fullres, axis=0)
    rows, cols = np.meshgrid(np.arange(n2), np.arange(n2), indexing="ij")
    patch_px = 10 * VISIUM_PITCH_UM / _visium_um_per_px(src)
    where = centre - patch_px / 2 + np.column_stack([cols.ravel(), rows.ravel()]) * (patch_px / n2)
    from scipy.spatial import cKDTree

    _, nearest = cKDTree(src.xy_fullres).query(where)
    dense2 = _thin(src.counts[nearest][:, genes].toarray(), 0.01, rng).reshape(n2, n2, len(genes))

    metadata = {"hd_layout_json": json.dumps({"file_format": "1.0", "transform": np.eye(3).ravel().tolist()})}
    prefix = f"{dataset_id}_" if dataset_id else ""
    slice_file = folder / f"{prefix}feature_slice.h5"
    with h5py.File(slice_file, "w") as f:
        f.attrs["metadata_json"] = json.dumps(metadata)
    files: dict[str, Path] = {"feature_slice": slice_file}

    base = {
        "spot_diameter_fullres": 8.0 / um_per_px,
        "bin_size_um": 8.0,
        "microns_per_pixel": um_per_px,
        "tissue_lowres_scalef": lowres_scalef,
        "fiducial_diameter_fullres": 5.0 / um_per_px,
        "tissue_hires_scalef": hires_scalef,
        "regist_target_img_scalef": hires_scalef,
    }
    spatial = folder / "spatial"
    spatial.mkdir(exist_ok=True)
    (spatial / "scalefactors_json.json").write_text(json.dumps(base))
    he = _he_texture(src, (frame_px, frame_px))
    from PIL import Image

    def _scaled(scale: float) -> np.ndarray:
        side = int(round(frame_px * scale))
        return np.asarray(Image.fromarray(he).resize((side, side), Image.BILINEAR))

    files["hires"] = _write_png(spatial / "tissue_hires_image.png", _scaled(hires_scalef))
    files["lowres"] = _write_png(spatial / "tissue_lowres_image.png", _scaled(lowres_scalef))
    name = dataset_id or ""
    images_um = {f"{name}_hires_image": um_per_px / hires_scalef, f"{name}_lowres_image": um_per_px / lowres_scalef}
    if fullres:
        import tifffile

        (folder / "microscope_image").mkdir(exist_ok=True)
        files["fullres"] = folder / "microscope_image" / "tissue_image.tif"
        tifffile.imwrite(files["fullres"], he, photometric="rgb")
        images_um[f"{name}_full_image"] = um_per_px

    n_spots = {}
    for b in bins:
        k = b // 2
        n = n2 // k
        dense = dense2.reshape(n, k, n, k, len(genes)).sum(axis=(1, 3)).reshape(n * n, len(genes))
        r, c = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        r, c = r.ravel(), c.ravel()
        barcodes = [f"s_{b:03d}um_{i:05d}_{j:05d}-1" for i, j in zip(r, c, strict=True)]
        bin_dir = folder / "binned_outputs" / f"square_{b:03d}um"
        write_10x_h5(
            bin_dir / "filtered_feature_bc_matrix.h5",
            dense,
            barcodes,
            src.gene_ids[genes],
            src.symbols[genes],
            software_version="spaceranger-3.0.0",
        )
        positions = pd.DataFrame(
            {
                "barcode": barcodes,
                "in_tissue": np.ones(len(barcodes), dtype=np.int32),
                "array_row": r.astype(np.int32),
                "array_col": c.astype(np.int32),
                "pxl_row_in_fullres": margin_px + (r + 0.5) * b / um_per_px,
                "pxl_col_in_fullres": margin_px + (c + 0.5) * b / um_per_px,
            }
        )
        (bin_dir / "spatial").mkdir(parents=True, exist_ok=True)
        positions.to_parquet(bin_dir / "spatial" / "tissue_positions.parquet", index=False)
        scalefactors = {**base, "bin_size_um": float(b), "spot_diameter_fullres": b / um_per_px}
        (bin_dir / "spatial" / "scalefactors_json.json").write_text(json.dumps(scalefactors))
        n_spots[b] = len(barcodes)
    return Bundle(
        path=folder,
        dataset_id=dataset_id,
        n_spots=n_spots,
        genes=list(src.symbols[genes]),
        um_per_px=images_um,
        files=files,
        extra={"scalefactors": base, "margin_px": margin_px, "frame_px": frame_px},
    )


# --------------------------------------------------------------------------------------------------------------------
# 10x Xenium (Xenium Onboard Analysis 2.0)


def xenium_cell_ids(n: int, suffix: int = 1) -> np.ndarray:
    """Xenium cell id strings (``"aaaaaaab-1"``, ...) of cells 1..n: each hex nibble of the id shifted to 'a'..'p'."""
    prefix = np.arange(1, n + 1, dtype=np.uint32)
    shifts = np.array([28, 24, 20, 16, 12, 8, 4, 0], dtype=np.uint32)
    letters = (((prefix[:, None] >> shifts) & 0xF) + ord("a")).astype(np.uint8)
    return np.asarray([bytes(row).decode() + f"-{suffix}" for row in letters])


def _polygon(centre: np.ndarray, radius: float, n: int = 12) -> np.ndarray:
    angle = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ring = centre + radius * np.column_stack([np.cos(angle), np.sin(angle)])
    return np.vstack([ring, ring[:1]])  # closed, as Xenium writes it


def write_xenium(
    folder: str | Path,
    dlpfc_dir: str | Path,
    *,
    with_he: bool = True,
    n_side: int = 14,
    spacing_um: float = 10.0,
    he_um_per_px: float = 0.5,
    he_rotation_deg: float = 2.0,
    seed: int = 0,
) -> Bundle:
    """Write a Xenium Onboard Analysis 2.0 output folder of ``n_side**2`` cells on a jittered grid.

    Layout::

        folder/experiment.xenium                      (analysis_sw_version xenium-2.0.0.10, pixel_size 0.2125)
        folder/cell_feature_matrix.h5                 (gene expression + 2 negative control probes)
        folder/cells.parquet, cell_boundaries.parquet, nucleus_boundaries.parquet, transcripts.parquet
        folder/cells.zarr.zip                         (cell_id, cell_summary, masks/0-1, polygon_sets/0-1)
        folder/morphology_focus/morphology_focus_0000.ome.tif   (DAPI, uint16, 0.2125 µm/px)
        folder/xenium_he_image.ome.tif                (with ``with_he``: post-Xenium H&E, RGB, ``he_um_per_px``)
        folder/xenium_he_imagealignment.csv           (3x3 affine: H&E pixels -> morphology pixels)

    Counts are DLPFC 151673 spot counts thinned to 5 % (a cell holds a fraction of a 55 µm spot); each UMI becomes
    one transcript near its cell.

    Parameters
    ----------
    folder
        Output folder (created).
    dlpfc_dir
        The shared ``dlpfc`` data folder.
    with_he
        Whether to write the aligned H&E image and its alignment file.
    n_side, spacing_um
        Cells per side of the grid and their spacing in µm.
    he_um_per_px
        µm per pixel of the H&E image.
    he_rotation_deg
        Rotation of the H&E relative to the morphology image in the alignment.
    seed
        Random seed (jitter, thinning, transcript positions).

    Returns
    -------
    The :class:`Bundle` (``um_per_px``: ``"morphology_focus"`` 0.2125 and ``"he_image"``); ``extra["alignment"]`` is
    the H&E -> morphology pixel matrix.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    import tifffile
    import zarr

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    src = _dlpfc(str(dlpfc_dir))
    rng = np.random.default_rng(seed)
    n = n_side * n_side
    margin_um = 10.0
    size_um = 2 * margin_um + (n_side - 1) * spacing_um
    size_px = int(np.ceil(size_um / XENIUM_PIXEL_UM))
    gy, gx = np.meshgrid(np.arange(n_side), np.arange(n_side), indexing="ij")
    xy_um = margin_um + np.column_stack([gx.ravel(), gy.ravel()]) * spacing_um + rng.uniform(-1.5, 1.5, (n, 2))
    cell_r_um, nuc_r_um = 4.0, 2.5
    ids = xenium_cell_ids(n)

    spots = _compact_spots(src, n)
    genes = _genes(src, spots, 150)
    counts = _thin(src.counts[spots][:, genes].toarray(), 0.05, rng)
    controls = rng.poisson(0.2, (n, 2)).astype(np.int32)
    write_10x_h5(
        folder / "cell_feature_matrix.h5",
        np.hstack([counts, controls]),
        ids,
        [*src.gene_ids[genes], "NegControlProbe_00042", "NegControlProbe_00041"],
        [*src.symbols[genes], "NegControlProbe_00042", "NegControlProbe_00041"],
        feature_types=["Gene Expression"] * len(genes) + ["Negative Control Probe"] * 2,
        software_version="xenium-2.0.0.10",
    )
    specs = {
        "major_version": 5,
        "minor_version": 0,
        "run_name": "storm-test",
        "region_name": "dlpfc",
        "panel_name": "DLPFC subset",
        "pixel_size": XENIUM_PIXEL_UM,
        "analysis_sw_version": "xenium-2.0.0.10",
    }
    (folder / "experiment.xenium").write_text(json.dumps(specs))

    cell_area = np.full(n, np.pi * cell_r_um**2)
    nucleus_area = np.full(n, np.pi * nuc_r_um**2)
    cells = pd.DataFrame(
        {
            "cell_id": ids,
            "x_centroid": xy_um[:, 0],
            "y_centroid": xy_um[:, 1],
            "transcript_counts": counts.sum(1),
            "control_probe_counts": controls.sum(1),
            "control_codeword_counts": np.zeros(n, dtype=np.int64),
            "unassigned_codeword_counts": np.zeros(n, dtype=np.int64),
            "deprecated_codeword_counts": np.zeros(n, dtype=np.int64),
            "total_counts": counts.sum(1) + controls.sum(1),
            "cell_area": cell_area,
            "nucleus_area": nucleus_area,
            "nucleus_count": np.ones(n, dtype=np.int64),
            "segmentation_method": ["Segmented by nucleus expansion of 5.0µm"] * n,
        }
    )
    cells.to_parquet(folder / "cells.parquet", index=False)
    for file, radius in (("cell_boundaries.parquet", cell_r_um), ("nucleus_boundaries.parquet", nuc_r_um)):
        rings = [_polygon(c, radius) for c in xy_um]
        vertices = np.vstack(rings)
        per = len(rings[0])
        table = pa.table(
            {
                "cell_id": np.repeat(ids, per),
                "vertex_x": vertices[:, 0].astype(np.float32),
                "vertex_y": vertices[:, 1].astype(np.float32),
                "label_id": np.repeat(np.arange(1, n + 1, dtype=np.uint32), per),
            }
        )
        pq.write_table(table, folder / file)

    # transcripts: one per UMI, scattered inside its cell
    cell_of, gene_of = np.nonzero(counts)
    reps = counts[cell_of, gene_of]
    cell_of, gene_of = np.repeat(cell_of, reps), np.repeat(gene_of, reps)
    offset = rng.normal(0, cell_r_um / 2.5, (len(cell_of), 2))
    tx_xy = xy_um[cell_of] + offset
    inside = np.linalg.norm(offset, axis=1) <= nuc_r_um
    transcripts = pd.DataFrame(
        {
            "transcript_id": np.arange(1, len(cell_of) + 1, dtype=np.uint64) + 281474976710656,
            "cell_id": ids[cell_of],
            "overlaps_nucleus": inside.astype(np.uint8),
            "feature_name": src.symbols[genes][gene_of],
            "x_location": tx_xy[:, 0].astype(np.float32),
            "y_location": tx_xy[:, 1].astype(np.float32),
            "z_location": rng.uniform(10, 20, len(cell_of)).astype(np.float32),
            "qv": np.full(len(cell_of), 40.0, dtype=np.float32),
            "fov_name": ["A1"] * len(cell_of),
            "nucleus_distance": np.zeros(len(cell_of), dtype=np.float32),
        }
    )
    transcripts.to_parquet(folder / "transcripts.parquet", index=False)

    # label rasters and the DAPI image, in morphology pixels
    yy, xx = np.mgrid[0:size_px, 0:size_px]
    pix_um = (np.column_stack([xx.ravel(), yy.ravel()]) + 0.5) * XENIUM_PIXEL_UM
    from scipy.spatial import cKDTree

    distance, owner = cKDTree(xy_um).query(pix_um)
    masks = {}
    for index, radius in ((0, nuc_r_um), (1, cell_r_um)):
        mask = np.where(distance <= radius, owner + 1, 0).astype(np.uint32)
        masks[index] = mask.reshape(size_px, size_px)
    dapi = (200 + 3000 * (masks[0] > 0) + rng.integers(0, 100, masks[0].shape)).astype(np.uint16)
    (folder / "morphology_focus").mkdir(exist_ok=True)
    tifffile.imwrite(folder / "morphology_focus" / "morphology_focus_0000.ome.tif", dapi, metadata={"axes": "YX"})

    summary_columns = [
        "cell_centroid_x",
        "cell_centroid_y",
        "cell_area",
        "nucleus_centroid_x",
        "nucleus_centroid_y",
        "nucleus_area",
        "z_level",
        "nucleus_count",
    ]
    summary = np.column_stack([xy_um, cell_area, xy_um, nucleus_area, np.full(n, 3.0), np.ones(n)])
    prefix_ints = np.arange(1, n + 1, dtype=np.uint32)
    staging = folder / "cells.zarr"
    root = zarr.open_group(store=str(staging), mode="w", zarr_format=2)
    root.attrs["major_version"] = 6
    root.create_array("cell_id", data=np.column_stack([prefix_ints, np.ones(n, dtype=np.uint32)]))
    root.create_array("cell_summary", data=summary.astype(np.float64))
    root["cell_summary"].attrs["column_names"] = summary_columns
    for index in (0, 1):
        root.create_array(f"masks/{index}", data=masks[index], chunks=(512, 512))
        root.create_array(f"polygon_sets/{index}/cell_index", data=np.arange(n, dtype=np.uint32))
    with zipfile.ZipFile(folder / "cells.zarr.zip", "w", compression=zipfile.ZIP_STORED) as archive:
        for item in sorted(staging.rglob("*")):
            if item.is_file():
                archive.write(item, item.relative_to(staging).as_posix())
    shutil.rmtree(staging)

    files = {"specs": folder / "experiment.xenium", "cells_zarr": folder / "cells.zarr.zip"}
    um = {"morphology_focus": XENIUM_PIXEL_UM}
    extra: dict[str, Any] = {"xy_um": xy_um, "size_px": size_px}
    if with_he:
        he_px = int(np.ceil(size_um / he_um_per_px))
        he = _he_texture(src, (he_px, he_px))
        # H&E pixels -> morphology pixels: scale, a small rotation about the centre, no shift of the centre
        s = he_um_per_px / XENIUM_PIXEL_UM
        theta = np.deg2rad(he_rotation_deg)
        rot = s * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        centre_he = np.array([he_px / 2, he_px / 2])
        centre_morph = np.array([size_px / 2, size_px / 2])
        alignment = np.eye(3)
        alignment[:2, :2] = rot
        alignment[:2, 2] = centre_morph - rot @ centre_he
        files["he"] = folder / "xenium_he_image.ome.tif"
        tifffile.imwrite(files["he"], he, photometric="rgb", metadata={"axes": "YXS"})
        files["alignment"] = folder / "xenium_he_imagealignment.csv"
        pd.DataFrame(alignment).to_csv(files["alignment"], header=False, index=False)
        um["he_image"] = he_um_per_px
        extra["alignment"] = alignment
    return Bundle(
        path=folder,
        dataset_id=None,
        n_spots=n,
        genes=list(src.symbols[genes]),
        um_per_px=um,
        files=files,
        extra=extra,
    )


# --------------------------------------------------------------------------------------------------------------------
# NanoString CosMx SMI (flat files)


def write_cosmx(
    folder: str | Path,
    dlpfc_dir: str | Path,
    *,
    n_fovs: int = 2,
    n_side: int = 7,
    fov_px: int = 256,
    dataset_id: str = "cosmx_sample",
    seed: int = 0,
) -> Bundle:
    """Write a CosMx SMI flat-file export: ``n_fovs`` fields of view side by side, ``n_side**2`` cells each.

    Layout::

        folder/<dataset_id>_exprMat_file.csv          (fov, cell_ID, genes...; cell_ID 0 = unassigned, per FOV)
        folder/<dataset_id>_metadata_file.csv         (fov, cell_ID, Area, CenterX/Y_local_px, CenterX/Y_global_px)
        folder/<dataset_id>_fov_positions_file.csv    (fov, x_global_px, y_global_px)
        folder/<dataset_id>_tx_file.csv               (one row per transcript)
        folder/CellComposite/CellComposite_F001.jpg   (RGB composite, stored upside down as CosMx does)
        folder/CellLabels/CellLabels_F001.tif         (cell labels, upside down likewise)

    Local pixel coordinates are those of the image after the reader flips it vertically; global = local + the FOV's
    offset (FOVs abut along x). Pixels are 0.12028 µm. Counts are DLPFC 151673 spot counts thinned to 5 %.

    Parameters
    ----------
    folder
        Output folder (created).
    dlpfc_dir
        The shared ``dlpfc`` data folder.
    n_fovs, n_side, fov_px
        Fields of view, cells per side of each FOV's grid, FOV side in pixels.
    dataset_id
        File-name prefix (the reader infers ``dataset_id`` from it).
    seed
        Random seed.

    Returns
    -------
    The :class:`Bundle` (``n_spots``: cells over all FOVs; ``um_per_px``: ``"<fov>_image"`` 0.12028).
    """
    import tifffile
    from PIL import Image

    folder = Path(folder)
    (folder / "CellComposite").mkdir(parents=True, exist_ok=True)
    (folder / "CellLabels").mkdir(parents=True, exist_ok=True)
    src = _dlpfc(str(dlpfc_dir))
    rng = np.random.default_rng(seed)
    per_fov = n_side * n_side
    spots = _compact_spots(src, per_fov * n_fovs)
    genes = _genes(src, spots, 100)
    counts = _thin(src.counts[spots][:, genes].toarray(), 0.05, rng)
    symbols = list(src.symbols[genes])
    spacing = fov_px / n_side
    radius = spacing * 0.4
    texture = _he_texture(src, (fov_px, fov_px * n_fovs))

    expr_rows, meta_rows, tx_rows, fov_rows = [], [], [], []
    yy, xx = np.mgrid[0:fov_px, 0:fov_px]
    for f in range(n_fovs):
        fov = f + 1
        offset = np.array([f * fov_px + 1000.0, 5000.0])
        fov_rows.append({"fov": fov, "x_global_px": offset[0], "y_global_px": offset[1]})
        gy, gx = np.meshgrid(np.arange(n_side), np.arange(n_side), indexing="ij")
        local = (np.column_stack([gx.ravel(), gy.ravel()]) + 0.5) * spacing + rng.uniform(-2, 2, (per_fov, 2))
        labels = np.zeros((fov_px, fov_px), dtype=np.uint16)
        for i, (x, y) in enumerate(local):
            labels[(xx - x) ** 2 + (yy - y) ** 2 <= radius**2] = i + 1
        fov_counts = counts[f * per_fov : (f + 1) * per_fov]
        expr_rows.append(pd.DataFrame({"fov": [fov], "cell_ID": [0], **{g: [0] for g in symbols}}))
        expr_rows.append(
            pd.DataFrame(
                {"fov": fov, "cell_ID": np.arange(1, per_fov + 1), **dict(zip(symbols, fov_counts.T, strict=True))}
            )
        )
        meta_rows.append(
            pd.DataFrame(
                {
                    "fov": fov,
                    "cell_ID": np.arange(1, per_fov + 1),
                    "Area": np.bincount(labels.ravel(), minlength=per_fov + 1)[1:],
                    "AspectRatio": 1.0,
                    "CenterX_local_px": local[:, 0],
                    "CenterY_local_px": local[:, 1],
                    "CenterX_global_px": local[:, 0] + offset[0],
                    "CenterY_global_px": local[:, 1] + offset[1],
                    "Width": 2 * radius,
                    "Height": 2 * radius,
                }
            )
        )
        cell_of, gene_of = np.nonzero(fov_counts)
        reps = fov_counts[cell_of, gene_of]
        cell_of, gene_of = np.repeat(cell_of, reps), np.repeat(gene_of, reps)
        tx_local = local[cell_of] + rng.normal(0, radius / 3, (len(cell_of), 2))
        tx_rows.append(
            pd.DataFrame(
                {
                    "fov": fov,
                    "cell_ID": cell_of + 1,
                    "x_global_px": tx_local[:, 0] + offset[0],
                    "y_global_px": tx_local[:, 1] + offset[1],
                    "x_local_px": tx_local[:, 0],
                    "y_local_px": tx_local[:, 1],
                    "z": rng.integers(0, 8, len(cell_of)),
                    "target": np.asarray(symbols)[gene_of],
                    "CellComp": "Cytoplasm",
                }
            )
        )
        rgb = texture[:, f * fov_px : (f + 1) * fov_px]
        Image.fromarray(np.ascontiguousarray(rgb[::-1])).save(
            folder / "CellComposite" / f"CellComposite_F{fov:03d}.jpg", quality=90
        )
        tifffile.imwrite(folder / "CellLabels" / f"CellLabels_F{fov:03d}.tif", np.ascontiguousarray(labels[::-1]))

    files = {
        "counts": folder / f"{dataset_id}_exprMat_file.csv",
        "metadata": folder / f"{dataset_id}_metadata_file.csv",
        "fov": folder / f"{dataset_id}_fov_positions_file.csv",
        "transcripts": folder / f"{dataset_id}_tx_file.csv",
    }
    pd.concat(expr_rows, ignore_index=True).to_csv(files["counts"], index=False)
    pd.concat(meta_rows, ignore_index=True).to_csv(files["metadata"], index=False)
    pd.DataFrame(fov_rows).to_csv(files["fov"], index=False)
    pd.concat(tx_rows, ignore_index=True).to_csv(files["transcripts"], index=False)
    return Bundle(
        path=folder,
        dataset_id=dataset_id,
        n_spots=per_fov * n_fovs,
        genes=symbols,
        um_per_px={f"{f + 1}_image": COSMX_PIXEL_UM for f in range(n_fovs)},
        files=files,
        extra={"per_fov": per_fov},
    )
