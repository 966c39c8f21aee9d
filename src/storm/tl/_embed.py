"""``st.tl.embed``: storm embeddings of every spot, from H&E, expression or both."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._constants import OBSM_EMBEDDING, UNS_KEY
from .._logging import logger

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

    from ..models import StormModel


def embed(
    sdata: SpatialData | AnnData,
    model: StormModel | str | Path | None = None,
    *,
    modality: str = "auto",
    table_key: str | None = None,
    image_key: str | None = None,
    shapes_key: str | None = None,
    um_per_px: float | None = None,
    layer: str | None = None,
    batch_size: int | None = None,
    key_added: str = OBSM_EMBEDDING,
    copy: bool = False,
) -> SpatialData | AnnData | None:
    """Embed every spot with its spatial niche.

    Each spot's H&E tile (at the geometry the model was trained on) and/or its expression, with those of its nearest
    neighbours in µm, go through the model; the joint embedding of the spot is written to ``obsm[key_added]`` and the
    branch embeddings, when used, to ``obsm[key_added + "_image"]`` and ``obsm[key_added + "_gene"]``. Then
    ``sc.pp.neighbors(adata, use_rep="X_storm")`` and ``sc.tl.leiden(adata)`` work as usual.

    Parameters
    ----------
    sdata
        SpatialData with a table, spots and (optionally) an H&E image, or squidpy-style AnnData.
    model
        ``None`` for the bundled default checkpoint, a checkpoint name or path, or a
        :class:`~storm.models.StormModel`.
    modality
        ``"auto"`` (whatever the slide has), ``"image"``, ``"expression"`` or ``"both"``.
    table_key, image_key, shapes_key, um_per_px
        Element choice and scale, as in :func:`storm.io.resolve`.
    layer
        Layer of raw counts (default ``X``).
    batch_size
        Niches per forward pass (default ``storm.settings.batch_size``).
    key_added
        ``obsm`` key of the joint embedding, and ``uns["storm"]`` key of the parameters.
    copy
        Return a copy with the results instead of writing into ``sdata`` (for SpatialData: a new object sharing the
        other elements, with a copied table).

    Returns
    -------
    ``None``, or the copy with ``copy=True``. Spots outside the resolved region (table rows annotating other shapes)
    get NaN rows.

    Examples
    --------
    >>> import storm as st
    >>> sdata = st.datasets.demo()
    >>> st.tl.embed(sdata)  # doctest: +SKIP
    >>> sdata["table"].obsm["X_storm"].shape  # doctest: +SKIP
    (151, 128)
    """
    from ..io import resolve
    from ._encode import MODALITIES, encode
    from ._model_arg import get_model, model_record

    if modality not in MODALITIES:
        raise ValueError(f"`modality` must be one of {MODALITIES}, got {modality!r}.")
    net = get_model(model)
    target = copy_data(sdata) if copy else sdata
    slide = resolve(target, table_key=table_key, image_key=image_key, shapes_key=shapes_key, um_per_px=um_per_px)
    out = encode(slide, net, modalities=modality, batch_size=batch_size, layer=layer)
    table = slide.table
    written = {key_added: out.embedding}
    if out.image_embedding is not None:
        written[f"{key_added}_image"] = out.image_embedding
    if out.gene_embedding is not None:
        written[f"{key_added}_gene"] = out.gene_embedding
    params = {"modality": out.modalities, "n_spots": int(len(out.obs_names)), "keys": sorted(written)}
    for key, values in written.items():
        table.obsm[key] = full_rows(values, slide.rows, table.n_obs)
    table.uns.setdefault(UNS_KEY, {})[key_added] = {**params, **model_record(net)}
    logger.info(
        "embedded %d spots (%s): added obsm %s, uns[%r][%r]",
        len(out.obs_names),
        out.modalities,
        sorted(written),
        UNS_KEY,
        key_added,
    )
    return target if copy else None


def full_rows(values: np.ndarray, rows: np.ndarray, n_obs: int) -> np.ndarray:
    """``values`` of the resolved spots placed at their rows of the table; NaN elsewhere."""
    full = np.full((n_obs, *values.shape[1:]), np.nan, dtype=np.float32)
    full[rows] = values
    return full


def copy_data(sdata: Any) -> Any:
    from anndata import AnnData

    if isinstance(sdata, AnnData):
        return sdata.copy()
    from spatialdata import SpatialData

    return SpatialData(
        images=dict(sdata.images),
        labels=dict(sdata.labels),
        points=dict(sdata.points),
        shapes=dict(sdata.shapes),
        tables={k: v.copy() for k, v in sdata.tables.items()},
    )
