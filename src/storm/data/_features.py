"""Frozen pathology-encoder features of every spot: computed once per slide, encoder and geometry, kept in the slide.

The features of a SpatialData slide are a table element of their own, named the way LazySlide names feature tables
(``"<encoder>_<tile key>"``; storm's tiles are the spots at the encoder's geometry, so ``"uni_spots_112um"``), with
one row per spot and the encoder, its weights' hash and the geometry in ``uns["storm_features"]``. A slide that came
from a ``.zarr`` store has the element written there too, so the next session reads it instead of recomputing. An
AnnData slide keeps them in ``obsm`` under the same name, recorded in ``uns["storm"]``.

Features that another tool wrote are read too: a table ``"<encoder>_<shapes>"`` or ``"<encoder>_tiles"``
(LazySlide's default tile key) whose rows are the spots, or whose rows are tiles of a grid over the slide (each spot
takes the tile that holds its centre), or an ``obsm`` entry ``"<encoder>"`` / ``"X_<encoder>"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._constants import UNS_FEATURES, UNS_KEY
from .._logging import logger

if TYPE_CHECKING:
    from ..io import Slide
    from ..models import EncoderSpec, PathologyEncoder


@dataclass
class SpotFeatures:
    """Encoder features of a slide's spots.

    Attributes
    ----------
    values
        ``(n_spots, dim)`` float32, rows in the order of ``slide.obs_names``.
    provenance
        Encoder, weights hash (``None`` when another tool wrote them), geometry and where they came from.
    key
        The element (or ``obsm`` key) they were read from or written to.
    cached
        Whether they were read rather than computed by this call.
    """

    values: np.ndarray
    provenance: dict[str, Any]
    key: str
    cached: bool


def feature_key(encoder: str, shapes_key: str, tile_um: float) -> str:
    """Name of the element holding ``encoder``'s features of the spots ``shapes_key`` tiled at ``tile_um``.

    Examples
    --------
    >>> feature_key("uni", "spots", 112.0)
    'uni_spots_112um'
    """
    return f"{encoder}_{shapes_key}_{tile_um:g}um"


def spot_features(
    slide: Slide,
    encoder: str | EncoderSpec | PathologyEncoder,
    *,
    weights: str | None = None,
    expected_sha256: str | None = None,
    recompute: bool = False,
    pretrained: bool = True,
    batch_size: int | None = None,
    write: bool = True,
) -> SpotFeatures:
    """The encoder's features of every spot of ``slide``: read from the slide when present, else computed and kept.

    Parameters
    ----------
    slide
        The resolved slide (with an image, unless the features are already there).
    encoder
        A registry name, timm name, ``hf-hub:`` id or spec (see :func:`storm.models.load_encoder`), or a loaded
        :class:`~storm.models.PathologyEncoder`.
    weights
        Local weights file of the encoder (see :func:`storm.models.load_encoder`).
    expected_sha256
        The weights a model was trained on: features of other weights are refused, with the fix.
    recompute
        Ignore features already in the slide.
    pretrained
        Passed to :func:`storm.models.load_encoder` (``False``: random weights, for tests of the pipeline).
    batch_size
        Tiles per forward pass (default ``storm.settings.batch_size``).
    write
        Keep computed features in the slide (and its store).

    Returns
    -------
    :class:`SpotFeatures`
    """
    from ..models import PathologyEncoder, load_encoder
    from ..models._pathology import get_spec

    net = encoder if isinstance(encoder, PathologyEncoder) else None
    spec = net.spec if net is not None else get_spec(encoder)
    if net is None and weights is not None:  # its hash decides whether features in the slide are its own
        net = load_encoder(spec, weights=weights)
    key = feature_key(spec.name, slide.keys["shapes_key"], spec.tile_um)
    if not recompute:
        found = read_features(slide, spec, key)
        if found is not None and _usable(found, spec, expected_sha256, None if net is None else net.weights_sha256):
            return found
    if net is None:
        net = load_encoder(spec, pretrained=pretrained)
    _check_weights(net.weights_sha256, expected_sha256, spec.name, net.source)
    values = compute_features(slide, net, batch_size=batch_size)
    provenance = {**net.provenance(), "n_spots": int(slide.n_spots), **_where(slide)}
    found = SpotFeatures(values, provenance, key, cached=False)
    if write:
        write_features(slide, found)
    return found


def compute_features(slide: Slide, encoder: PathologyEncoder, *, batch_size: int | None = None) -> np.ndarray:
    """``(n_spots, dim)`` float32 features of every spot's tile at the encoder's published input.

    Tiles stream in image order with background reads; the output is allocated once, so memory stays flat in the
    number of spots beyond the features themselves.
    """
    import torch

    from .._compute import autocast, torch_device
    from .._settings import settings
    from ..pp import TileSet

    if not slide.has_image:
        raise ValueError(
            f"Slide has no H&E image to compute {encoder.spec.name!r} features from; pass `image_key=`, or write the "
            f"features first (table or obsm key {feature_key(encoder.spec.name, slide.keys['shapes_key'], encoder.spec.tile_um)!r})."
        )
    tiles = TileSet(slide, tile_px=encoder.spec.tile_px, tile_um=encoder.spec.tile_um)
    device = torch_device(settings.device)
    net = encoder.to(device)
    out = np.empty((slide.n_spots, encoder.spec.dim), dtype=np.float32)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tiles), desc=encoder.spec.name, unit="tile", disable=not settings.progress, leave=False)
    with torch.inference_mode(), autocast(settings.precision, device), bar:
        for batch in tiles.batches(batch_size):
            x = torch.from_numpy(batch.tiles).to(device, non_blocking=True)
            out[batch.index] = net(x).float().cpu().numpy()
            bar.update(len(batch.index))
    return out


def read_features(slide: Slide, spec: EncoderSpec, key: str | None = None) -> SpotFeatures | None:
    """Features of ``spec``'s encoder already in the slide (storm's, LazySlide-style or ``obsm``), or ``None``."""
    key = key or feature_key(spec.name, slide.keys["shapes_key"], spec.tile_um)
    sdata = slide.sdata
    if sdata is not None:
        for name in (key, f"{spec.name}_{slide.keys['shapes_key']}", f"{spec.name}_tiles"):
            if name in sdata.tables:
                values = _table_rows(sdata, sdata.tables[name], slide)
                if values is not None:
                    return SpotFeatures(
                        values, _provenance(sdata.tables[name].uns.get(UNS_FEATURES), spec, name), name, True
                    )
    table = slide.table
    for name in (key, spec.name, f"X_{spec.name}"):
        if name in table.obsm:
            values = np.asarray(table.obsm[name], dtype=np.float32)[slide.rows]
            if np.isfinite(values).all():
                record = table.uns.get(UNS_KEY, {}).get(name)
                return SpotFeatures(values, _provenance(record, spec, f"obsm[{name!r}]"), name, True)
    return None


def write_features(slide: Slide, features: SpotFeatures) -> None:
    """Keep ``features`` in the slide: a table element (written to the store of a backed SpatialData) or ``obsm``."""
    import anndata as ad
    import pandas as pd

    record = {**features.provenance, "key": features.key}
    sdata = slide.sdata
    if sdata is not None:
        table = ad.AnnData(
            X=features.values, obs=pd.DataFrame(index=pd.Index(slide.obs_names.astype(str), name="spot"))
        )
        table.uns[UNS_FEATURES] = record
        sdata.tables[features.key] = table
        if sdata.path is not None:
            from ..io._lock import store_lock

            with store_lock(Path(sdata.path)):
                sdata.write_element(features.key, overwrite=True)
        logger.info("added table %r (%s features of %d spots)", features.key, record["encoder"], slide.n_spots)
        return
    table = slide.table
    full = np.full((table.n_obs, features.values.shape[1]), np.nan, dtype=np.float32)
    full[slide.rows] = features.values
    table.obsm[features.key] = full
    table.uns.setdefault(UNS_KEY, {})[features.key] = {**record, "keys": {"obsm": [features.key]}}
    logger.info("added obsm[%r] (%s features)", features.key, record["encoder"])


def _usable(found: SpotFeatures, spec: EncoderSpec, expected: str | None, own: str | None) -> bool:
    """Whether features read from the slide serve this call: same encoder and geometry, and the weights in hand.

    ``own`` is the hash of the encoder the caller holds (``None``: only its name was given, so any weights of that
    encoder do, unless ``expected`` names them).
    """
    prov = found.provenance
    if prov.get("tile_px") is not None and (prov["tile_px"], prov.get("tile_um")) != (spec.tile_px, spec.tile_um):
        logger.info("features %r were made at another geometry; recomputing", found.key)
        return False
    if found.values.shape[1] != spec.dim and spec.dim:
        raise ValueError(
            f"Features {found.key!r} are {found.values.shape[1]} wide, but encoder {spec.name!r} gives {spec.dim}: "
            "they come from another encoder. Delete or rename them, or pass the encoder that made them."
        )
    sha = prov.get("weights_sha256")
    if own is not None:
        return sha == own  # other (or unknown) weights than the encoder in hand: compute with it
    if sha is None:
        logger.warning("using %s features %r written by another tool (weights unknown)", spec.name, found.key)
        return True
    _check_weights(sha, expected, spec.name, found.key)
    return True


def _check_weights(found: str | None, expected: str | None, encoder: str, where: str) -> None:
    if expected is not None and found is not None and found != expected:
        raise ValueError(
            f"The {encoder!r} features from {where} come from weights {found[:12]}…, but the model was trained on "
            f"features of weights {expected[:12]}…: pass the same encoder weights (`encoder_weights=`) the model was "
            "trained with, or adapt the model to these (st.tl.adapt)."
        )


def _provenance(record: Any, spec: EncoderSpec, where: str) -> dict[str, Any]:
    if isinstance(record, dict) and record.get("encoder") == spec.name:
        return dict(record)
    return {"encoder": spec.name, "weights_sha256": None, "source": f"{where} (written by another tool)"}


def _where(slide: Slide) -> dict[str, Any]:
    from .._version import __version__

    return {
        "image_key": slide.keys.get("image_key"),
        "shapes_key": slide.keys.get("shapes_key"),
        "storm_version": __version__,
    }


def _table_rows(sdata: Any, table: Any, slide: Slide) -> np.ndarray | None:
    """Rows of a feature table for the slide's spots: by spot name, else by the tile holding each spot centre."""
    x = table.X.toarray() if hasattr(table.X, "toarray") else np.asarray(table.X)
    index = table.obs_names.get_indexer(slide.obs_names.astype(str))
    if (index >= 0).all():
        return x[index].astype(np.float32)
    attrs = table.uns.get("spatialdata_attrs") or {}
    region = attrs.get("region")
    if not isinstance(region, str) or region not in sdata.shapes or slide.spot_xy_px is None:
        return None
    from ..io._elements import affine_xy, image_levels

    tiles = sdata.shapes[region]
    image = sdata.images[slide.keys["image_key"]]
    cs = slide.keys["coordinate_system"]

    to_px = np.linalg.inv(affine_xy(image_levels(image)[0], cs)) @ affine_xy(tiles, cs)
    bounds = tiles.geometry.bounds.to_numpy()  # minx, miny, maxx, maxy in the shapes' own units
    corners = np.c_[bounds[:, :2], np.ones(len(bounds))] @ to_px.T, np.c_[bounds[:, 2:], np.ones(len(bounds))] @ to_px.T
    lo, hi = np.minimum(corners[0], corners[1])[:, :2], np.maximum(corners[0], corners[1])[:, :2]
    from scipy.spatial import cKDTree

    xy = slide.spot_xy_px
    _, nearest = cKDTree((lo + hi) / 2).query(xy)
    if not ((xy >= lo[nearest]) & (xy < hi[nearest])).all():
        return None
    instance = tiles.index.get_indexer(table.obs[attrs["instance_key"]].to_numpy())
    row_of_tile = np.full(len(tiles), -1)
    row_of_tile[instance[instance >= 0]] = np.flatnonzero(instance >= 0)
    rows = row_of_tile[nearest]
    if (rows < 0).any():
        return None
    return x[rows].astype(np.float32)
