"""``st.tl.integrate``: one embedding of several slides in which the slides mix and their tissue stays apart."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._constants import OBSM_EMBEDDING, OBSM_INTEGRATED
from .._docs import doc_params
from .._frame import tool
from ._harmonise import THETA, harmonise
from ._results import Results, check_keys, embedding_record, write_results
from ._slides import as_slides, embedding_rows

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

    from ..io import Slide
    from ..io._where import Where
    from ..models import StormModel

#: Principal components of the stacked embeddings that the correction works on.
N_COMPONENTS = 50
#: What the record of the integrated key keeps from the record of the embedding it came from.
_SOURCE_FIELDS = (
    "model",
    "model_sha256",
    "modality",
    "preset",
    "orientations",
    "image_encoder",
    "image_encoder_sha256",
)


@tool
@doc_params
def integrate(
    data: Sequence[SpatialData | AnnData | Slide] | SpatialData | AnnData | Slide,
    *,
    batch_key: str | None = None,
    use_rep: str = OBSM_EMBEDDING,
    model: StormModel | str | Path | None = None,
    where: Where,
    n_components: int = N_COMPONENTS,
    theta: float = THETA,
    max_iter: int = 10,
    random_state: int | None = None,
    key_added: str = OBSM_INTEGRATED,
) -> SpatialData | AnnData | list[SpatialData | AnnData] | None:
    """Embed several slides in one space: remove what differs between batches and keep what differs between tissues.

    The storm embeddings of all slides (``obsm[use_rep]``, computed with :func:`storm.tl.embed` first when missing)
    are centred per batch (a whole batch moved by its scanner or run would otherwise form clusters of its own),
    stacked and reduced to ``n_components`` principal components. Then what each batch adds is removed, cluster by
    cluster, as Harmony does (Korsunsky et al. 2019): spots are softly clustered with a penalty on clusters that hold a
    batch far above its share of all spots, and in each cluster a ridge regression on the batch finds the batch's
    shift, which is subtracted while the cluster's own mean is kept. Tissue regions found in several slides come
    together; mixing tissues that only some slides have costs some tissue structure (``theta`` sets the balance). The result goes to ``obsm[key_added]`` of
    every slide, for ``sc.pp.neighbors(adata, use_rep=key_added)``, :func:`storm.tl.domains` (``use_rep=key_added``)
    or label transfer. How much slides mix and how much tissue structure is kept, on real slides and beside other
    tools: "Several slides in one embedding" in ``docs/benchmarks.md``.

    Parameters
    ----------
    {slides_param}
    batch_key
        ``obs`` column naming each spot's batch (donor, patient, run); default: each slide is its own batch.
    use_rep
        ``obsm`` key of the embeddings to integrate. Every slide's must come from one model and modality.
    {model_param}
        Used only when ``use_rep`` is a storm key that a slide lacks.
    {resolve_params}
        The image is not needed.
    n_components
        Principal components the correction works on (at most the embedding's width).
    theta
        Diversity penalty: higher mixes the batches more, at some cost to tissue structure.
    max_iter
        Rounds of clustering and correction.
    {random_state_param}
    key_added
        ``obsm`` key written to every slide (and ``uns["storm"]`` key of the parameters).
    {copy_param}

    {copy_returns}

    Examples
    --------
    >>> import storm as st
    >>> slides = [st.datasets.dlpfc("151673"), st.datasets.dlpfc("151510")]  # doctest: +SKIP
    >>> st.tl.integrate(slides)  # doctest: +SKIP
    >>> st.tl.domains(slides, n_domains=7, use_rep="X_storm_integrated")  # doctest: +SKIP
    """
    from ._domains import check_one_model

    if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 2:
        raise ValueError(f"`n_components` must be an integer of at least 2, got {n_components!r}.")
    if not theta >= 0:
        raise ValueError(f"`theta` must be 0 or more, got {theta!r}.")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"`max_iter` must be a positive integer, got {max_iter!r}.")
    slides = [where.resolve(s, image=False) for s in as_slides(data)]
    for slide in slides:
        check_keys(slide, obsm=[key_added])
        if batch_key is not None and batch_key not in slide.table.obs:
            raise KeyError(
                f"`batch_key={batch_key!r}` is not an obs column of every slide (this one has "
                f"{sorted(slide.table.obs.columns)[:10]}); pass a column every slide has, or None for one batch per slide."
            )
    batch = _batches(slides, batch_key)
    if len(np.unique(batch)) < 2:
        raise ValueError(
            "all spots are in one batch, so there is nothing to integrate; pass several slides, or a `batch_key` "
            "column with several values."
        )
    features = [embedding_rows(slide, use_rep, model) for slide in slides]
    check_one_model(slides, use_rep)
    stacked = np.concatenate(features)
    for value in np.unique(batch):  # a whole batch shifted (scanner, run) would keep every cluster to itself
        stacked[batch == value] -= stacked[batch == value].mean(0)
    components = _principal_components(stacked, min(n_components, stacked.shape[1], len(stacked) - 1))
    integrated, info = harmonise(components, batch, theta=theta, max_iter=max_iter, random_state=int(random_state))
    source = embedding_record(slides[0].table, use_rep) or {}
    params = {
        **{k: source[k] for k in _SOURCE_FIELDS if k in source},
        "use_rep": use_rep,
        "batch_key": batch_key,
        "n_batches": int(len(np.unique(batch))),
        "n_slides": len(slides),
        "n_components": int(components.shape[1]),
        "theta": float(theta),
        "seed": int(random_state),
        **info,
    }
    start = 0
    for slide, x in zip(slides, features, strict=True):
        rows = integrated[start : start + len(x)].astype(np.float32)
        start += len(x)
        write_results(slide, Results(key_added, dict(params), obsm={key_added: rows}))


def _batches(slides: list[Any], batch_key: str | None) -> np.ndarray:
    """Each resolved spot's batch: its slide's index, or ``"<value>"`` of ``obs[batch_key]``."""
    if batch_key is None:
        return np.concatenate([np.full(slide.n_spots, i) for i, slide in enumerate(slides)])
    values = [slide.table.obs[batch_key].astype(str).to_numpy()[slide.rows] for slide in slides]
    return np.unique(np.concatenate(values), return_inverse=True)[1]


def _principal_components(x: np.ndarray, n: int) -> np.ndarray:
    """The spots' coordinates on the ``n`` main axes of the centred, stacked embeddings."""
    centred = x - x.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:n].T
