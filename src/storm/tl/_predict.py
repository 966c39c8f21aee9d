"""``st.tl.predict_expression``: gene expression predicted from H&E alone."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._constants import LAYER_PREDICTED
from .._docs import doc_params
from .._frame import tool
from .._logging import logger
from ._encode import encode
from ._heads._head import StormHead, as_head, model_for_head
from ._results import Results, check_keys, write_results

#: Values of ``predict_expression(scale=...)``.
SCALES = ("slide", "model")
#: Fewer spots than this in one call: ``scale="slide"`` falls back to ``"model"`` (a spread over so few is noise).
MIN_SLIDE_SPOTS = 50

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

    from ..io import Slide
    from ..io._where import Where
    from ..models import StormModel


@tool(positional=("model",))
@doc_params
def predict_expression(
    data: SpatialData | AnnData | Slide,
    genes: list[str] | None = None,
    *,
    model: StormModel | str | Path | None = None,
    where: Where,
    batch_size: int | None = None,
    head: StormHead | str | Path | None = None,
    scale: str = "slide",
    key_added: str = LAYER_PREDICTED,
) -> SpatialData | AnnData | None:
    """Predict log1p(CP10k) expression of every spot from its H&E niche alone.

    The model sees only the tiles (never the measured counts), so predictions on a slide with expression can be
    compared with the measurement. On a table with genes, ``layers[key_added]`` holds the predictions for the table's
    genes (NaN for genes outside the model's vocabulary, listed in a warning; ``var[key_added]`` flags the predicted
    ones). On an H&E-only table (e.g. from :func:`storm.pp.tissue_grid`), which has no genes to hold a layer, the
    predictions go to ``obsm[key_added]``, a DataFrame with one column per gene (as squidpy stores image features;
    ``squidpy.pl.extract`` turns its columns into ``obs`` for plotting): the table stays the user's object.

    Parameters
    ----------
    {data_param}
    genes
        Genes to predict (default: the table's genes, or every gene the model (or ``head``) predicts for an H&E-only
        table).
    {model_param}
        With ``head``, the default is the model the head was trained on.
    {resolve_params}
        The counts are never read: predictions come from the H&E alone.
    {batch_size_param}
    head
        An expression head from :func:`storm.tl.fit_head` (or its folder): predictions come from it instead of the
        model's decoder, for the genes it was trained on.
    scale
        How the decoder's standardised predictions return to log1p(CP10k) (models whose config has
        ``expression_target="standardised"``, the default's included): ``"slide"`` standardises each gene's predictions
        over the spots of this call, then gives them the gene's mean and typical within-slide spread from the
        pretraining corpus, so that each map spans a realistic range (the spots' ranking, and so Pearson r, is the
        decoder's); ``"model"`` keeps the decoder's conditional mean, which has lower squared error but shrinks towards
        the mean where the H&E says little (flat maps). A ``head`` trained within each slide (``per_slide``, the
        default for expression) is treated alike: ``"slide"`` standardises its predictions over the spots of this call
        and gives them each gene's mean and typical within-slide spread over the head's training slides; ``"model"``
        keeps the head's conditional mean. Older ``"log1p"`` decoders and other heads are returned as predicted,
        whatever ``scale``. Calls on fewer than 50 spots (a few spots of a slide) use ``"model"`` with a warning,
        since a spread over so few spots says nothing; ``uns["storm"][key_added]`` records the scale used and the
        number of spots it was taken over (predictions on a subset are comparable with the whole slide's under
        ``"model"`` only). Predictions are log1p(CP10k), so never below 0: with ``"slide"`` a gene's spread is narrowed
        where its map would reach below 0 (its Pearson r and the spots' order unchanged); with ``"model"`` values below
        0 become 0.
    key_added
        Layer (and ``var`` flag, and ``uns["storm"]`` key) written.
    {copy_param}

    {copy_returns}

    Examples
    --------
    >>> import storm as st
    >>> sdata = st.datasets.demo()
    >>> st.tl.predict_expression(sdata, genes=["ERBB2", "KRT19"])  # doctest: +SKIP
    >>> sdata["table"][:, ["ERBB2", "KRT19"]].layers["storm_predicted"].shape  # doctest: +SKIP
    (151, 2)
    """
    import pandas as pd

    from ._model_arg import get_model, model_record

    if scale not in SCALES:
        raise ValueError(f"`scale` must be one of {SCALES}, got {scale!r}.")
    head = None if head is None else _expression_head(head)
    net = get_model(model) if head is None else model_for_head(head, model)
    slide = where.resolve(data)
    if not slide.has_image:
        raise ValueError(
            "predict_expression needs an H&E image, and this slide resolved none; pass `image_key=` naming it."
        )
    table = slide.table
    he_only = table.n_vars == 0
    check_keys(slide, **({"obsm": [key_added]} if he_only else {"layers": [key_added], "var": [key_added]}))
    predictable = net.vocab if head is None else set(head.outputs)
    requested = _requested(genes, table, net, he_only, head)
    known = [g for g in requested if g in predictable]
    unknown = [g for g in requested if g not in predictable]
    if unknown:
        logger.warning(
            "%d of %d genes are not in the %s and are not predicted: %s%s",
            len(unknown),
            len(requested),
            "model's vocabulary" if head is None else "head's genes",
            ", ".join(unknown[:20]),
            " ..." if len(unknown) > 20 else "",
        )
    if not known:
        raise ValueError(
            f"None of the {len(requested)} requested genes can be predicted (not in the "
            f"{'model vocabulary' if head is None else 'head'}); nothing to predict."
        )
    if scale == "slide" and slide.n_spots < MIN_SLIDE_SPOTS:
        logger.warning(
            "predict_expression on %d spots: scale='slide' needs a slide's spread (at least %d spots); using "
            "scale='model', comparable with any other call",
            slide.n_spots,
            MIN_SLIDE_SPOTS,
        )
        scale = "model"
    values = _predictions(slide, net, known, head, batch_size, scale)
    record = {"n_spots": int(len(values)), "n_genes": len(known), "not_predicted": unknown, **model_record(net)}
    if (head is None and net.config.expression_target == "standardised") or (
        head is not None and "expression_scale" in head.meta
    ):
        record["scale"] = scale
        if scale == "slide":
            record["scaled_over_spots"] = int(len(values))
    if head is not None:
        record["head"] = {"target": head.target, "metrics": head.metrics}
    if he_only:
        frame = pd.DataFrame(values, index=pd.Index(slide.obs_names), columns=pd.Index(known))
        write_results(slide, Results(key_added, record, obsm={key_added: frame}))
        return
    layer_values = np.full((len(values), table.n_vars), np.nan, dtype=np.float32)
    columns = table.var_names.get_indexer(known)
    layer_values[:, columns] = values
    flag = np.zeros(table.n_vars, dtype=bool)
    flag[columns] = True
    write_results(slide, Results(key_added, record, layers={key_added: layer_values}, var={key_added: flag}))


def _expression_head(head: Any) -> StormHead:
    head = as_head(head)
    if head.target != "expression":
        raise ValueError(
            f"`head` predicts {head.target!r}, not expression; apply it with st.tl.apply_head(sdata, head) instead."
        )
    if head.modality != "image":
        raise ValueError(
            f"`head` was trained on {head.modality!r} embeddings; predict_expression sees only the H&E, so fit "
            "the head with modality='image'."
        )
    return head


def _predictions(
    slide: Any, net: StormModel, genes: list[str], head: StormHead | None, batch_size: int | None, scale: str
) -> np.ndarray:
    """``(n_spots, len(genes))`` log1p(CP10k) from the model's decoder, or from ``head`` on the image embeddings."""
    if head is None:
        predicted = encode(slide, net, modality="image", genes=genes, batch_size=batch_size).predicted_expression
        return net.expression_to_log1p(predicted, genes, slide_scale=scale == "slide")
    import torch

    from .._standardise import non_negative_spread, standardised
    from ._heads._inputs import expression_scale, head_reads, spot_features

    features, _ = spot_features(slide, net, "image", batch_size, **head_reads(head))
    with torch.no_grad():
        out = head.module.predict(torch.as_tensor(features, dtype=torch.float32)).numpy().astype(np.float64)
    columns = [head.outputs.index(g) for g in genes]
    trained = expression_scale(head)
    if scale == "slide" and trained is not None:
        mean, spread = trained
        return non_negative_spread(standardised(out[:, columns]), mean[columns], spread[columns])
    return np.maximum(out[:, columns], 0.0)


def _requested(genes: Any, table: AnnData, model: StormModel, he_only: bool, head: StormHead | None) -> list[str]:
    if genes is None:
        if head is not None:
            if he_only:
                return head.outputs
            missing = [g for g in head.outputs if g not in table.var_names]
            if len(missing) == len(head.outputs):
                raise ValueError(
                    f"None of the head's {len(missing)} genes (e.g. {missing[:3]}) is a gene of this table, whose "
                    "layer would hold the predictions; predict on an H&E-only table (st.pp.tissue_grid) to get them."
                )
            if missing:
                logger.warning(
                    "%d of the head's %d genes are missing from the table and are not predicted (e.g. %s); an H&E-only "
                    "table (st.pp.tissue_grid) gets every gene of the head",
                    len(missing),
                    len(head.outputs),
                    ", ".join(missing[:5]),
                )
            return [g for g in head.outputs if g in table.var_names]
        return list(model.vocab.symbols) if he_only else [str(g) for g in table.var_names]
    names = [genes] if isinstance(genes, str) else [str(g) for g in genes]
    if not he_only:
        missing = [g for g in names if g not in table.var_names]
        if missing:
            raise KeyError(
                f"`genes`: {missing[:10]} are not genes of the table; predictions go into a layer of the table, so "
                "choose among its var_names (or predict on an H&E-only table to get any vocabulary gene)."
            )
    return list(dict.fromkeys(names))
