"""``st.tl.feature_extraction``: a pathology encoder's features of every spot, computed once and kept in the slide."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .._docs import doc_params
from .._frame import tool

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

    from ..io import Slide
    from ..io._where import Where
    from ..models import EncoderSpec, PathologyEncoder


@tool
@doc_params
def feature_extraction(
    data: SpatialData | AnnData | Slide,
    encoder: str | EncoderSpec | PathologyEncoder,
    *,
    weights: str | Path | None = None,
    recompute: bool = False,
    where: Where,
    batch_size: int | None = None,
) -> SpatialData | AnnData | None:
    """Features of every spot from a pathology foundation encoder (UNI, Virchow2, H-optimus, …), kept in the slide.

    Each spot's tile is cut at the encoder's published input (e.g. UNI: 224 px at 0.5 µm/px, 112 µm) and run through
    the frozen encoder once. The features become a table element of the SpatialData named the way LazySlide names
    feature tables, ``"<encoder>_<shapes>_<tile µm>um"`` (e.g. ``"uni_spots_112um"``), one row per spot, with the
    encoder, the hash of its weights and the geometry in its ``uns["storm_features"]``; a SpatialData read from a
    ``.zarr`` store gets the element written there too. For AnnData input they go to ``obsm`` under the same name.

    A storm model whose image branch is this encoder (``StormConfig.from_preset("small", image_encoder="uni")``)
    reads them in :func:`embed`, :func:`adapt`, :func:`fit_head`, :func:`predict_expression`, :func:`fit_risk` and
    :func:`pretrain` instead of reading tiles again. Features that another tool already wrote are used as they are:
    a table ``"<encoder>_<shapes>"`` or ``"<encoder>_tiles"`` (LazySlide's default), by spot name or by the tile
    holding each spot's centre, or an ``obsm`` entry ``"<encoder>"`` / ``"X_<encoder>"``.

    Parameters
    ----------
    {data_param}
    encoder
        A registry name (``storm.models.ENCODERS``: ``"uni"``, ``"uni2-h"``, ``"conch"``, ``"virchow2"``,
        ``"h-optimus-0"``, ``"h-optimus-1"``, ``"phikon-v2"``, ``"prov-gigapath"``, …), any timm name, an
        ``"hf-hub:<org>/<repo>"`` id, a local folder as downloaded from the hub, or a loaded
        :class:`~storm.models.PathologyEncoder`.
    weights
        Local weights file of the encoder (``.safetensors``, or ``.bin`` / ``.pth`` of plain tensors): gated encoders
        and offline machines use the file downloaded once. Without it the weights come from the hub when you have
        access; otherwise one message says what to do.
    recompute
        Compute even when features of this encoder and geometry are already in the slide.
    {resolve_params}
    batch_size
        Tiles per forward pass (default ``storm.settings.batch_size``).
    {copy_param}

    {copy_returns}

    Examples
    --------
    >>> import storm as st
    >>> from storm.models import load_encoder
    >>> sdata = st.datasets.demo()
    >>> st.tl.feature_extraction(sdata, load_encoder("vit_tiny_patch16_224", pretrained=False))
    >>> sdata.tables["vit_tiny_patch16_224_spots_112um"].shape
    (151, 192)
    >>> st.tl.feature_extraction(sdata, "uni", weights="UNI/pytorch_model.bin")  # doctest: +SKIP
    """
    from ..data._features import spot_features

    if not isinstance(recompute, bool):
        raise TypeError(f"`recompute` must be True or False, got {recompute!r}.")
    slide = where.resolve(data)
    spot_features(
        slide, encoder, weights=None if weights is None else str(weights), recompute=recompute, batch_size=batch_size
    )
