"""What a head reads from a slide: its features, its input genes and recorded scale, and the checks of a slide."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..._logging import logger
from ..._standardise import standardised

if TYPE_CHECKING:
    from ...io import Slide
    from ...models import StormModel
    from ._head import StormHead

#: A head reading expression is refused on a slide measuring less of its training panel than this ...
MIN_PANEL_COVERAGE = 0.5
#: ... and warned below this.
WARN_PANEL_COVERAGE = 0.9


def spot_features(
    slide: Slide, net: StormModel, modality: str, batch_size: int | None, *, per_slide: bool, morphology: bool = False
) -> tuple[np.ndarray, str]:
    """Features a head sees for every resolved spot: joint and niche embeddings side by side, and modalities used.

    With ``morphology``, the tile statistics of :func:`~storm.tl._morphology.morphology_features` follow; with
    ``per_slide``, each feature is standardised over the slide's spots (a constant one becomes 0).
    """
    from .._encode import encode
    from .._morphology import morphology_features

    out = encode(slide, net, modality=modality, batch_size=batch_size)
    x = np.concatenate([out.embedding, out.niche_embedding], axis=1).astype(np.float64)
    if morphology:
        x = np.concatenate([x, morphology_features(slide, net.config)], axis=1)
    return (standardised(x) if per_slide else x), out.modalities


def head_input_genes(head: StormHead) -> list[str] | None:
    """The genes a head's expression features were computed on (``None``: each slide's whole panel)."""
    return (head.meta.get("input") or {}).get("genes")


def head_reads(head: StormHead) -> dict[str, bool]:
    """How a head's features are made (``per_slide``, ``morphology``; heads saved before the options: neither)."""
    given = head.meta.get("input") or {}
    return {"per_slide": bool(given.get("per_slide", False)), "morphology": bool(given.get("morphology", False))}


def on_genes(slide: Slide, genes: list[str] | None) -> Slide:
    """The slide with its table narrowed to ``genes`` (a view, to encode from; results go to ``slide.table``)."""
    if genes is None:
        return slide
    import dataclasses

    return dataclasses.replace(slide, table=slide.table[:, slide.table.var_names.get_indexer(genes)])


def check_head_input(head: StormHead, slide: Slide) -> None:
    """Raise when a head that reads expression was trained on another counts layer, or on genes the slide lacks."""
    if head.modality == "image":
        return
    trained = (head.meta.get("input") or {}).get("layer")
    if trained != slide.layer:
        raise ValueError(
            f"The head was trained on counts from layer={trained!r} (log1p CP10k), but this slide resolved "
            f"layer={slide.layer!r}; pass `layer={trained!r}` (or the layer holding the same raw counts)."
        )
    check_input_genes(
        slide, head_input_genes(head), "this slide", "fit the head again with `input_genes=` genes both measure"
    )
    panel = (head.meta.get("input") or {}).get("panel")
    if panel:
        coverage = float(np.isin(panel, slide.table.var_names).mean())
        if coverage < MIN_PANEL_COVERAGE:
            raise ValueError(
                f"This slide measures {coverage:.0%} of the {len(panel)} genes the head's embeddings were computed on "
                f"(under {MIN_PANEL_COVERAGE:.0%}): its embeddings are not those the head learnt from. Fine-tune the "
                "head again on slides measured with this panel, or on genes both measure: st.tl.fit_head(..., input_genes=[...])."
            )
        if coverage < WARN_PANEL_COVERAGE:
            logger.warning(
                "this slide measures %.0f%% of the %d genes the head's embeddings were computed on; its predictions "
                "may be less accurate than the head's recorded metrics",
                100 * coverage,
                len(panel),
            )


def check_input_genes(slide: Slide, genes: list[str] | None, which: str, fix: str) -> None:
    if genes is None:
        return
    missing = [g for g in genes if g not in slide.table.var_names]
    if missing:
        raise ValueError(
            f"{which} does not measure {len(missing)} of the {len(genes)} input genes (e.g. {missing[:3]}); {fix}."
        )


def expression_scale(head: StormHead) -> tuple[np.ndarray, np.ndarray] | None:
    """The genes' mean and typical within-slide spread a per-slide expression head was trained with (else ``None``)."""
    given = head.meta.get("expression_scale")
    if not given:
        return None
    return np.asarray(given["mean"], dtype=np.float64), np.asarray(given["spread"], dtype=np.float64)
