"""``st.tl.embed``: storm embeddings of every spot, from H&E, expression or both."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .._constants import OBSM_EMBEDDING
from .._docs import doc_params
from .._frame import tool
from ._results import Results, check_keys, previous_keys, write_results

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

    from ..io import Slide
    from ..io._where import Where
    from ..models import StormModel


@tool(positional=("model",))
@doc_params
def embed(
    data: SpatialData | AnnData | Slide,
    *,
    model: StormModel | str | Path | None = None,
    modality: str = "auto",
    where: Where,
    batch_size: int | None = None,
    key_added: str = OBSM_EMBEDDING,
) -> SpatialData | AnnData | None:
    """Embed every spot with its spatial niche.

    Each spot's H&E tile (at the geometry the model was trained on) and/or its expression, with those of its nearest
    neighbours in µm, go through the model; the joint embedding of the spot is written to ``obsm[key_added]`` and the
    branch embeddings, when used, to ``obsm[key_added + "_image"]`` and ``obsm[key_added + "_gene"]`` (a branch
    embedding left by an earlier call with another modality is removed). Then
    ``sc.pp.neighbors(adata, use_rep="X_storm")`` and ``sc.tl.leiden(adata)`` work as usual.

    A spot's embedding depends on its niche (its nearest spots), so it changes when neighbours are removed: embed
    the whole slide, then subset: dropping a few spots barely moves the others, dropping half moves a spot about as
    far as its nearest neighbour's embedding is from it (``docs/reliability.md``).

    Keys that storm did not write are never replaced: a ``key_added`` naming the user's ``obsm`` entry (e.g.
    ``"spatial"``) is refused before any work. A normalised ``X`` (after ``sc.pp.normalize_total`` / ``sc.pp.log1p``)
    is never taken as counts: the raw counts in a ``layers["counts"]``-like layer are used instead, and without one the
    expression is refused (``modality="auto"`` then embeds the image only, with a warning).

    Parameters
    ----------
    {data_param}
    {model_param}
    modality
        ``"auto"`` (whatever the slide has), ``"image"``, ``"expression"`` or ``"both"``.
    {resolve_params}
    {batch_size_param}
    key_added
        ``obsm`` key of the joint embedding, and ``uns["storm"]`` key of the parameters.
    {copy_param}

    {copy_returns}
    Spots outside the resolved region (table rows annotating other shapes) get NaN rows.

    Examples
    --------
    >>> import storm as st
    >>> sdata = st.datasets.demo()
    >>> st.tl.embed(sdata)  # doctest: +SKIP
    >>> sdata["table"].obsm["X_storm"].shape  # doctest: +SKIP
    (151, 128)
    """
    from ._encode import MODALITIES, encode
    from ._model_arg import get_model, model_record

    if modality not in MODALITIES:
        raise ValueError(f"`modality` must be one of {MODALITIES}, got {modality!r}.")
    net = get_model(model)
    slide = where.resolve(data, image=modality != "expression")
    check_keys(slide, obsm=[key_added])
    out = encode(slide, net, modality=modality, batch_size=batch_size)
    written = {key_added: out.embedding}
    if out.image_embedding is not None:
        written[f"{key_added}_image"] = out.image_embedding
    if out.gene_embedding is not None:
        written[f"{key_added}_gene"] = out.gene_embedding
    stale = [k for k in previous_keys(slide, key_added) if k not in written]
    record = {"modality": out.modalities, "n_spots": int(len(out.obs_names)), **model_record(net)}
    write_results(slide, Results(key_added, record, obsm=written), stale=stale)
