"""``st.tl.transfer_labels``: labels of reference slides carried to other slides through a shared embedding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .._constants import OBSM_INTEGRATED
from .._docs import doc_params
from .._frame import tool
from ._results import Results, check_keys, write_results
from ._slides import as_slides, embedding_rows

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

    from ..io import Slide
    from ..io._where import Where

#: Reference spots that vote on each spot's label.
N_NEIGHBORS = 15


@tool
@doc_params
def transfer_labels(
    data: SpatialData | AnnData | Slide | Sequence[SpatialData | AnnData | Slide],
    reference: SpatialData | AnnData | Slide | Sequence[SpatialData | AnnData | Slide],
    key: str,
    *,
    use_rep: str = OBSM_INTEGRATED,
    n_neighbors: int = N_NEIGHBORS,
    where: Where,
    key_added: str | None = None,
) -> SpatialData | AnnData | list[SpatialData | AnnData] | None:
    """Label every spot by its nearest labelled spots of the reference slides in a shared embedding, with a confidence.

    Each spot takes the label most of its ``n_neighbors`` nearest reference spots carry (Euclidean distance in
    ``obsm[use_rep]``, votes weighted by ``1 / (1 + distance / median distance)``); its confidence is that label's
    share of the weighted votes (1: all neighbours agree). The embedding must be one space across all slides: by
    default ``X_storm_integrated`` from one :func:`storm.tl.integrate` call over the reference and these slides
    (``X_storm`` of one model works too, but slides then meet less: ``docs/benchmarks.md``). For a label the reference
    has few spots of, a head (:func:`storm.tl.fit_head`) is the alternative.

    Parameters
    ----------
    {slides_param}
        The slides to label.
    reference
        One slide or a list of slides with the labels in ``obs[key]`` (missing values are not used).
    key
        ``obs`` column of the reference with the labels.
    use_rep
        ``obsm`` key of the shared embedding.
    n_neighbors
        Reference spots that vote on each spot.
    {resolve_params}
    key_added
        ``obs`` column written (default ``key + "_transferred"``, so a query's own ``key`` column is kept for
        comparison), with the confidence in ``obs[key_added + "_confidence"]``.
    {copy_param}

    {copy_returns}

    Examples
    --------
    >>> import storm as st
    >>> st.tl.integrate([reference, query])  # doctest: +SKIP
    >>> st.tl.transfer_labels(query, reference, "layer")  # doctest: +SKIP
    >>> query["table"].obs[["layer_transferred", "layer_transferred_confidence"]].head()  # doctest: +SKIP
    """
    import pandas as pd
    from sklearn.neighbors import NearestNeighbors

    from ._domains import check_one_model

    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, int) or n_neighbors < 1:
        raise ValueError(f"`n_neighbors` must be a positive integer, got {n_neighbors!r}.")
    references = [where.resolve(s, image=False) for s in as_slides(reference)]
    targets = [where.resolve(s, image=False) for s in as_slides(data)]
    for i, slide in enumerate(references):
        if key not in slide.table.obs:
            raise KeyError(f"reference slide {i} has no obs column `key={key!r}`; pass the column holding its labels.")
        if use_rep not in slide.table.obsm:
            raise KeyError(_missing(use_rep, f"reference slide {i}"))
    for i, slide in enumerate(targets):
        if use_rep not in slide.table.obsm:
            raise KeyError(_missing(use_rep, f"slide {i}"))
    name = key_added or f"{key}_transferred"
    labels = np.concatenate([s.table.obs[key].astype(object).to_numpy()[s.rows] for s in references])
    known = pd.notna(labels)
    if known.sum() < n_neighbors:
        raise ValueError(
            f"the reference has {int(known.sum())} labelled spots, fewer than `n_neighbors={n_neighbors}`."
        )
    for slide in targets:
        check_keys(slide, obs=[name, f"{name}_confidence"])
    check_one_model([*references, *targets], use_rep)
    x_ref = np.concatenate([embedding_rows(s, use_rep, None) for s in references])[known]
    labels = labels[known].astype(str)
    classes, codes = np.unique(labels, return_inverse=True)
    search = NearestNeighbors(n_neighbors=n_neighbors).fit(x_ref)
    scale = float(np.median(search.kneighbors(x_ref, 2)[0][:, 1])) or 1.0
    for slide in targets:
        distance, index = search.kneighbors(embedding_rows(slide, use_rep, None))
        weight = 1.0 / (1.0 + distance / scale)
        votes = np.zeros((len(index), len(classes)))
        np.add.at(votes, (np.arange(len(index))[:, None], codes[index]), weight)
        share = votes / votes.sum(1, keepdims=True)
        chosen = share.argmax(1)
        record = {"key": key, "use_rep": use_rep, "n_neighbors": n_neighbors, "n_reference_spots": int(len(x_ref))}
        obs = {
            name: pd.Categorical(classes[chosen], categories=classes),
            f"{name}_confidence": share[np.arange(len(chosen)), chosen],
        }
        write_results(slide, Results(name, record, obs=obs))


def _missing(use_rep: str, which: str) -> str:
    return (
        f"{which} has no obsm[{use_rep!r}]; integrate the reference and these slides in one call first "
        f"(st.tl.integrate([*reference, *slides], key_added={use_rep!r})), or pass `use_rep=` naming a shared embedding."
    )
