"""Microns per pixel: from the user, from metadata, or from the spot pitch of a known platform."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from .._constants import METADATA_PLATFORM, PLATFORMS, SCALEFACTOR_UM_PER_PX


def grid_pitch(xy: np.ndarray) -> float:
    """Centre-to-centre distance of neighbouring spots on a grid (in the units of ``xy``).

    The median over all neighbour pairs closer than 1.3x the median nearest-neighbour distance: on a square or hexagonal
    grid that keeps the direct neighbours and drops the diagonals. Unlike the nearest-neighbour distance alone (the
    minimum over neighbours), it is not biased low when spot positions are jittered, as in legacy ST arrays.
    """
    from scipy.spatial import cKDTree

    if len(xy) < 2:
        raise ValueError("At least two spots are needed to measure the spot pitch; pass `um_per_px=` instead.")
    tree = cKDTree(xy)
    nearest = float(np.median(tree.query(xy, k=2)[0][:, 1]))
    if nearest <= 0:
        return 0.0
    dist, _ = tree.query(xy, k=min(9, len(xy)), distance_upper_bound=1.3 * nearest)
    neighbours = dist[:, 1:][np.isfinite(dist[:, 1:])]
    return float(np.median(neighbours))


def spatial_metadata(table: Any, shapes_key: str) -> dict[str, Any]:
    """The squidpy-style ``uns["spatial"][library_id]`` entry of a table, or ``{}``."""
    spatial = table.uns.get("spatial")
    if not isinstance(spatial, dict) or not spatial:
        return {}
    if len(spatial) == 1:
        return dict(next(iter(spatial.values())))
    return dict(spatial.get(shapes_key, {}))


def detect_platform(meta: dict[str, Any], image_key: str | None, shapes_key: str) -> str | None:
    """Platform named in metadata, or recognised from spatialdata-io's element names; ``None`` when unknown."""
    named = meta.get("metadata", {}).get(METADATA_PLATFORM) if isinstance(meta.get("metadata"), dict) else None
    if named:
        return str(named)
    hd = re.search(r"square_(\d{3})um", shapes_key)
    if hd:
        return f"visium_hd_{hd.group(1)}um"
    if re.search(r"_(cell|nucleus)_segmentations$", shapes_key):
        return None  # Visium HD cells: not on a grid, and the reader keeps no µm per pixel; ask for um_per_px
    if "fiducial_diameter_fullres" in meta.get("scalefactors", {}):
        return "visium"
    if image_key is not None and re.search(r"_(hires|lowres|full)_image$", image_key):
        return "visium"
    if shapes_key in {"cell_circles", "cell_boundaries", "nucleus_boundaries", "cell_labels", "nucleus_labels"} or (
        image_key is not None and image_key.startswith("morphology")
    ):
        return "xenium"
    if re.fullmatch(r"\d+_labels", shapes_key) or (image_key is not None and re.fullmatch(r"\d+_image", image_key)):
        return "cosmx"  # spatialdata-io's cosmx reader: one "<fov>_image" and "<fov>_labels" per field of view
    return None


def resolve_um_per_px(
    *,
    um_per_px: float | None,
    platform: str | None,
    meta: dict[str, Any],
    image_key: str | None,
    shapes_key: str,
    spot_xy_px: np.ndarray,
    px_per_shape_unit: float,
    cs_per_px: float,
) -> tuple[float, str]:
    """Microns per level-0 pixel and a sentence saying where it came from.

    Order: the ``um_per_px`` argument; ``scalefactors["microns_per_pixel"]`` in ``uns["spatial"]`` (µm per unit of the
    spot coordinates, as Space Ranger writes it); the platform (argument, metadata, or spatialdata-io element names)
    with its spot pitch measured on the spots or its fixed unit size. Otherwise an error: the scale is never guessed.
    """
    if um_per_px is not None:
        if not np.isfinite(um_per_px) or um_per_px <= 0:
            raise ValueError(f"`um_per_px` must be a positive number of microns per pixel, got {um_per_px!r}.")
        return float(um_per_px), "argument um_per_px"
    scalefactors = meta.get("scalefactors", {})
    if platform is None and SCALEFACTOR_UM_PER_PX in scalefactors:
        value = float(scalefactors[SCALEFACTOR_UM_PER_PX]) / px_per_shape_unit
        return value, f"metadata uns['spatial'][...]['scalefactors']['{SCALEFACTOR_UM_PER_PX}']"
    found = platform or detect_platform(meta, image_key, shapes_key)
    if found is None:
        raise ValueError(
            "The physical scale of this slide is unknown: no `microns_per_pixel` in uns['spatial'][...]['scalefactors'] "
            "and no known platform. Pass `um_per_px=` (microns per pixel of the full-resolution image) or "
            f"`platform=` (one of {sorted(PLATFORMS)})."
        )
    if found not in PLATFORMS:
        raise ValueError(f"`platform={found!r}` is not known; use one of {sorted(PLATFORMS)} or pass `um_per_px=`.")
    spec = PLATFORMS[found]
    if "um_per_unit" in spec:
        return spec["um_per_unit"] * cs_per_px, f"platform {found!r}: {spec['um_per_unit']} µm per coordinate unit"
    pitch_px = grid_pitch(spot_xy_px)
    if pitch_px <= 0:
        raise ValueError("Spots overlap exactly (zero spot pitch); pass `um_per_px=`.")
    return spec["pitch_um"] / pitch_px, f"platform {found!r}: spot pitch {spec['pitch_um']:g} µm = {pitch_px:.2f} px"
