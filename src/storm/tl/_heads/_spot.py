"""``st.tl.fit_head`` and ``st.tl.apply_head``: few-label heads on frozen storm embeddings, and applying them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..._docs import doc_params
from ..._frame import tool
from ..._logging import logger
from ..._standardise import standardised
from .._results import Results, check_keys, write_results
from .._slides import as_slides
from ._head import StormHead, as_head, model_for_head
from ._inputs import check_head_input, check_input_genes, head_input_genes, head_reads, on_genes, spot_features

if TYPE_CHECKING:
    import torch
    from anndata import AnnData
    from spatialdata import SpatialData

    from ...io import Slide
    from ...io._where import Where
    from ...models import StormModel

#: The ``target`` meaning "the measured expression of ``genes``".
EXPRESSION = "expression"
#: How storm turns raw counts into what the model and the heads see (recorded with every head).
PREPROCESSING = "log1p_cp10k"


@tool(copy=False)
@doc_params
def fit_head(
    data: SpatialData | AnnData | Slide | Sequence[SpatialData | AnnData | Slide],
    target: str = EXPRESSION,
    *,
    task: str | None = None,
    genes: Sequence[str] | None = None,
    input_genes: Sequence[str] | None = None,
    model: StormModel | str | Path | None = None,
    modality: str | None = None,
    hidden: int | None = None,
    per_slide: bool | None = None,
    morphology: bool | None = None,
    where: Where,
    batch_size: int | None = None,
    n_folds: int = 5,
    random_state: int | None = None,
) -> StormHead:
    """Train a head on frozen storm embeddings of a few labelled slides.

    Every spot's features are its joint and niche embeddings (from the modalities in ``modality``). The head is
    linear by default (ridge for regression, softmax for classification), which is what few labels support; its
    penalty (and, for several genes, its rank: genes that vary together share one fit) is chosen by cross-validation
    over slides (over spots with one slide), and the cross-validated score is kept in ``head.metrics``. Apply it with
    :func:`storm.tl.predict_expression` (``head=``, expression targets) or :func:`storm.tl.apply_head`; keep it with
    :meth:`StormHead.save`.

    Parameters
    ----------
    {slides_param}
        The slides are labelled: ``target`` is measured or annotated on them.
    target
        ``"expression"`` (the measured expression of ``genes``, as log1p(CP10k)) or an ``obs`` column of the tables.
    task
        ``"regression"`` or ``"classification"``; default: classification for categorical, string or boolean columns,
        regression otherwise.
    genes
        Genes to learn for ``target="expression"`` (default: every gene measured on all slides). They need not be in
        the model's vocabulary.
    input_genes
        Genes the expression branch reads (as in the tables' ``var_names``; default: each slide's whole panel). For a
        head that will label slides measured on another panel, pass the genes both panels share: the embeddings then
        mean the same on both, and :func:`storm.tl.apply_head` reads the same genes. Every slide must measure them.
    {model_param}
    modality
        Modalities the embeddings use: ``"image"`` (default for expression, so that the head works on H&E-only
        slides), ``"expression"``, ``"both"`` or ``"auto"`` (default for ``obs`` targets). The head is applied with
        the same modalities, and with expression, on counts from the same ``layer``.
    hidden
        Width of a hidden layer (``None``: linear head).
    per_slide
        Standardise every feature within each slide before the head (and within every slide the head is applied to),
        so that what differs between whole slides (staining, scanner, section thickness) does not count, only how
        spots differ within a slide. For ``target="expression"`` the measured expression is standardised within each
        slide too: the head learns how genes vary within a slide, and its predictions return to log1p(CP10k) with
        each gene's mean and typical within-slide spread over the training slides. Default: ``True`` for
        ``target="expression"``, which storm predicts and scores within a slide, ``False`` for ``obs`` targets, whose
        classes may be absent from a slide.
    morphology
        Also read 40 colour and texture statistics of each spot's H&E tile, their mean over its niche, and the same
        statistics of fields 2 and 4 tiles wide around the spot (stain intensities, nuclear density, co-occurrence
        texture of the tissue around it; about 60 ms per spot on a CPU core): what the image branch, pretrained on few
        imaged spots, partly loses. The tile with its niche and each wider field are weighed as blocks, each as much as
        the embeddings. Default: ``True`` for ``target="expression"`` when the embeddings read the image of every
        slide, ``False`` otherwise. Kept with the head and computed again wherever it is applied.
    {resolve_params}
    {batch_size_param}
    n_folds
        Cross-validation folds for the penalty.
    {random_state_param}

    Returns
    -------
    The trained :class:`StormHead`.

    Examples
    --------
    >>> import storm as st
    >>> sdata = st.datasets.demo()
    >>> head = st.tl.fit_head(sdata, "expression", genes=["ERBB2", "KRT19"])  # doctest: +SKIP
    >>> head.metrics["cv_score"] > 0  # doctest: +SKIP
    True

    Labels on a 5,000-gene slide, to be transferred to one with 500 genes:

    >>> shared = ref["table"].var_names.intersection(query["table"].var_names)  # doctest: +SKIP
    >>> head = st.tl.fit_head(ref, "layer", modality="expression", input_genes=shared)  # doctest: +SKIP
    >>> st.tl.apply_head(query, head)  # doctest: +SKIP
    """
    from .._model_arg import get_model, model_record
    from .._morphology import MORPHOLOGY_BLOCKS
    from ._fitting import fit_spot_head

    seed = int(random_state)
    if modality is None:
        modality = "image" if target == EXPRESSION else "auto"
    reads = _input_genes(input_genes, modality)
    if per_slide is None:
        per_slide = target == EXPRESSION
    elif not isinstance(per_slide, bool):
        raise TypeError(f"`per_slide` must be True, False or None, got {per_slide!r}.")
    if morphology is not None and not isinstance(morphology, bool):
        raise TypeError(f"`morphology` must be True, False or None, got {morphology!r}.")
    if morphology and modality == "expression":
        raise ValueError("`morphology=True` reads the H&E tiles; pass modality='image', 'both' or 'auto'.")
    net = get_model(model)
    resolved = [where.resolve(s, image=modality != "expression") for s in as_slides(data)]
    outputs, targets, kind = _targets(resolved, target, task, genes)
    if morphology is None:
        morphology = target == EXPRESSION and modality != "expression" and all(s.has_image for s in resolved)
    for index, slide in enumerate(resolved):
        check_input_genes(slide, reads, f"slide {index}", "pass genes that every slide measures")
        if morphology and not slide.has_image:
            raise ValueError(f"slide {index} has no image for `morphology=True`; pass morphology=False.")
    within_slide = per_slide and target == EXPRESSION
    features, groups, kept, used, scales = [], [], [], set(), []
    for index, (slide, y) in enumerate(zip(resolved, targets, strict=True)):
        x, modalities = spot_features(
            on_genes(slide, reads), net, modality, batch_size, per_slide=per_slide, morphology=morphology
        )
        used.add(modalities)
        keep = _labelled(y)
        features.append(x[keep])
        kept.append(standardised(y[keep]) if within_slide else y[keep])
        if within_slide:
            scales.append((y[keep].mean(0), y[keep].std(0)))
        groups.append(np.full(int(keep.sum()), index))
    if len(used) > 1:
        raise ValueError(
            f"`modality={modality!r}` resolved to {sorted(used)} on different slides; pass one explicit modality "
            "that every slide has."
        )
    used_modality = next(iter(used))
    x, y, group = np.concatenate(features), np.concatenate(kept), np.concatenate(groups)
    if len(x) < 4:
        raise ValueError(f"only {len(x)} labelled spots; a head needs at least 4.")
    if kind == "classification" and len(np.unique(y)) < 2:
        raise ValueError(f"`target={target!r}` has a single class among the labelled spots; a classifier needs two.")
    # the embeddings, the tile statistics and each wider field weigh the same in the head, whatever their widths
    blocks = (x.shape[1] - sum(MORPHOLOGY_BLOCKS), *MORPHOLOGY_BLOCKS) if morphology else None
    module, metrics = fit_spot_head(
        x, y, task=kind, groups=group, n_classes=len(outputs), hidden=hidden, n_folds=n_folds, seed=seed, blocks=blocks
    )
    expression_scale = _to_log_expression(module, scales) if within_slide else None
    meta = {
        "task": kind,
        "target": target,
        "outputs": outputs,
        "modality": used.pop(),
        "input": {
            "layer": where.layer,
            "preprocessing": PREPROCESSING,
            "genes": reads,
            "panel": _panel(resolved, net) if reads is None and used_modality != "image" else None,
            "per_slide": per_slide,
            "morphology": morphology,
        },
        "model": model_record(net),
        "metrics": metrics,
        "init": {"n_features": int(x.shape[1]), "n_outputs": len(outputs), "hidden": hidden},
        "n_slides": len(resolved),
        "seed": seed,
    }
    if expression_scale:
        meta["expression_scale"] = expression_scale
    logger.info(
        "fitted a %s head for %r on %d spots of %d slides: cross-validated %s %.3f",
        kind,
        target,
        len(x),
        len(resolved),
        metrics["cv_metric"],
        metrics["cv_score"],
    )
    return StormHead(module, meta)


@tool
@doc_params
def apply_head(
    data: SpatialData | AnnData | Slide,
    head: StormHead | str | Path,
    *,
    model: StormModel | str | Path | None = None,
    where: Where,
    batch_size: int | None = None,
    key_added: str | None = None,
) -> SpatialData | AnnData | None:
    """Apply a head from :func:`storm.tl.fit_head` to every spot of a slide.

    A classification head writes a categorical ``obs[key_added]`` and the class probabilities to
    ``obsm[key_added + "_proba"]`` (columns in the order of ``head.outputs``); a regression head on an ``obs`` column
    writes ``obs[key_added]``; an expression head is applied by :func:`storm.tl.predict_expression`.

    Parameters
    ----------
    {data_param}
    head
        A :class:`StormHead` or the folder of a saved one.
    model
        The storm model (default: the one the head was trained on; another model is refused).
    {resolve_params}
    {batch_size_param}
    key_added
        ``obs`` key written (default ``"storm_" + head.target``).
    {copy_param}

    {copy_returns}

    Examples
    --------
    >>> import storm as st
    >>> st.tl.apply_head(sdata, "heads/her2st_labels")  # doctest: +SKIP
    >>> sdata["table"].obs["storm_label"].value_counts()  # doctest: +SKIP
    """
    import pandas as pd
    import torch

    from .._model_arg import model_record

    head = as_head(head)
    if head.task == "risk":
        raise ValueError("this is a risk head from st.tl.fit_risk; apply it with st.tl.apply_risk(data, head).")
    if head.target == EXPRESSION:
        from .._predict import predict_expression

        predict_expression(
            data,
            model=model,
            head=head,
            batch_size=batch_size,
            **where.kwargs(),
            **({"key_added": key_added} if key_added else {}),
        )
        return
    net = model_for_head(head, model)
    key = key_added or f"storm_{head.target}"
    slide = where.resolve(data, image=head.modality != "expression")
    check_head_input(head, slide)
    check_keys(slide, obs=[key])
    x, _ = spot_features(on_genes(slide, head_input_genes(head)), net, head.modality, batch_size, **head_reads(head))
    with torch.no_grad():
        out = head.module(torch.as_tensor(x, dtype=torch.float32))
    record = {
        "head_target": head.target,
        "head_task": head.task,
        "outputs": head.outputs,
        "modality": head.modality,
        **model_record(net),
    }
    if head.task == "classification":
        proba = torch.softmax(out, dim=1).numpy()
        labels = pd.Categorical(np.asarray(head.outputs, dtype=object)[proba.argmax(1)], categories=head.outputs)
        results = Results(key, record, obs={key: labels}, obsm={f"{key}_proba": proba})
    else:
        values = (out * head.module.target_std + head.module.target_mean).numpy()[:, 0]
        results = Results(key, record, obs={key: values})
    write_results(slide, results)


def _panel(slides: list[Slide], net: StormModel) -> list[str]:
    """The model-vocabulary genes every training slide measures: what a head's expression embeddings were made of."""
    shared = set(slides[0].table.var_names)
    for slide in slides[1:]:
        shared &= set(slide.table.var_names)
    return sorted(g for g in shared if g in net.vocab)


def _input_genes(genes: Sequence[str] | None, modality: str) -> list[str] | None:
    """``input_genes`` checked: a non-empty list of distinct names, for embeddings that read expression."""
    if genes is None:
        return None
    if isinstance(genes, str):
        raise TypeError(f"`input_genes` must be a list of gene names, got the string {genes!r}; pass [{genes!r}].")
    names = [str(g) for g in genes]
    if not names or len(set(names)) != len(names):
        raise ValueError("`input_genes` must list at least one gene, each once.")
    if modality == "image":
        raise ValueError("`input_genes` chooses the genes the expression branch reads; modality='image' reads none.")
    return names


def _to_log_expression(module: torch.nn.Module, scales: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, list]:
    """Map a head trained on within-slide standardised expression back to log1p(CP10k), in place.

    Each gene gets its mean of the slides' means and its mean within-slide standard deviation (``scales``: per slide);
    returned for the head's record, which ``predict_expression(scale="slide")`` reads.
    """
    import torch

    mean = np.mean([m for m, _ in scales], axis=0)
    spread = np.mean([s for _, s in scales], axis=0)
    with torch.no_grad():
        module.target_mean.copy_(torch.as_tensor(mean + spread * module.target_mean.double().numpy()))
        module.target_std.copy_(torch.as_tensor(spread * module.target_std.double().numpy()))
    return {"mean": mean.tolist(), "spread": spread.tolist()}


def _targets(
    slides: list[Slide], target: str, task: str | None, genes: Sequence[str] | None
) -> tuple[list[str], list[np.ndarray], str]:
    """Output names, per-slide target arrays (rows of the resolved spots) and the task."""
    if task not in (None, "regression", "classification"):
        raise ValueError(f"`task` must be 'regression', 'classification' or None, got {task!r}.")
    if target == EXPRESSION:
        if task == "classification":
            raise ValueError("`target='expression'` is a regression; pass task='regression' or an obs column.")
        names = _shared_genes(slides, genes)
        return names, [_log_expression(s, names) for s in slides], "regression"
    missing = [i for i, s in enumerate(slides) if target not in s.table.obs]
    if missing:
        raise KeyError(
            f"`target={target!r}` is not an obs column of slide(s) {missing}; pass 'expression' or a column that "
            "every slide's table has."
        )
    import pandas as pd

    columns = [s.table.obs[target].iloc[s.rows] for s in slides]
    numeric = all(pd.api.types.is_numeric_dtype(c) and not pd.api.types.is_bool_dtype(c) for c in columns)
    kind = task or ("regression" if numeric else "classification")
    if kind == "regression":
        if not numeric:
            raise ValueError(f"`target={target!r}` is not numeric; use task='classification'.")
        return [target], [c.to_numpy(dtype=np.float64)[:, None] for c in columns], kind
    labels = [c.astype(object).where(c.notna(), None) for c in columns]
    classes = sorted({str(v) for c in labels for v in c if v is not None})
    codes = {name: i for i, name in enumerate(classes)}
    return classes, [np.array([codes[str(v)] if v is not None else -1 for v in c]) for c in labels], kind


def _shared_genes(slides: list[Slide], genes: Sequence[str] | None) -> list[str]:
    if genes is None:
        shared = set(slides[0].table.var_names)
        for s in slides[1:]:
            shared &= set(s.table.var_names)
        names = [str(g) for g in slides[0].table.var_names if g in shared]
        if not names:
            raise ValueError("the slides share no genes; pass `genes=` measured on every slide.")
        return names
    names = list(dict.fromkeys([genes] if isinstance(genes, str) else [str(g) for g in genes]))
    for i, s in enumerate(slides):
        missing = [g for g in names if g not in s.table.var_names]
        if missing:
            raise KeyError(f"`genes`: {missing[:10]} are not measured on slide {i}; choose genes every slide has.")
    return names


def _log_expression(slide: Slide, genes: list[str]) -> np.ndarray:
    from scipy import sparse

    from ...data import log1p_cp10k

    values = log1p_cp10k(slide.counts())[:, slide.table.var_names.get_indexer(genes)]
    return np.asarray(values.toarray() if sparse.issparse(values) else values, dtype=np.float64)


def _labelled(y: np.ndarray) -> np.ndarray:
    if y.ndim == 2:
        return np.isfinite(y).all(1)
    return y >= 0
