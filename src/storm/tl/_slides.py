"""What the tools that take several slides and stored embeddings share: the slide list, and embeddings per spot."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._constants import OBSM_INTEGRATED
from .._logging import logger


def as_slides(data: Any) -> list[Any]:
    """``data`` as a list of slides: a single slide becomes a list of one; an empty list is refused."""
    slides = list(data) if isinstance(data, Sequence) and not isinstance(data, str) else [data]
    if not slides:
        raise ValueError("`data` is an empty list: pass at least one slide.")
    return slides


def embedding_rows(slide: Any, use_rep: str, model: Any, modality: str = "auto") -> np.ndarray:
    """``obsm[use_rep]`` of the resolved spots, running :func:`storm.tl.embed` with ``model`` first when it is missing.

    Only a storm key (``X_storm`` or one starting with it) is computed on demand, with a warning naming the keys it
    adds; any other missing key is an error, so a mistyped ``use_rep="X_pac"`` never silently becomes a storm
    embedding.
    """
    if use_rep not in slide.table.obsm and use_rep.startswith(OBSM_INTEGRATED):
        raise KeyError(
            f"`use_rep={use_rep!r}` is not in obsm: it is written by st.tl.integrate over several slides; run "
            f"st.tl.integrate(slides, key_added={use_rep!r}) first."
        )
    if use_rep not in slide.table.obsm and not use_rep.startswith("X_storm"):
        raise KeyError(
            f"`use_rep={use_rep!r}` is not in obsm (available: {sorted(slide.table.obsm)}); compute it first, or "
            "pass a storm key such as 'X_storm', which st.tl.embed computes when missing."
        )
    if use_rep not in slide.table.obsm:
        from ._embed import embed

        logger.warning(
            "obsm[%r] is missing: computing it with st.tl.embed, which adds obsm[%r] (and its branch embeddings) and "
            "uns['storm'][%r] to the table",
            use_rep,
            use_rep,
            use_rep,
        )
        embed(slide, model=model, modality=modality, key_added=use_rep)
    x = np.asarray(slide.table.obsm[use_rep], dtype=np.float64)[slide.rows]
    if not np.isfinite(x).all():
        raise ValueError(f"obsm[{use_rep!r}] has NaN or infinite rows for resolved spots; recompute the embedding.")
    return x
