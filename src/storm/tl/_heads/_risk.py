"""``st.tl.fit_risk`` and ``st.tl.apply_risk``: survival risk from spot embeddings with an attention-MIL Cox head."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..._constants import OBS_RISK, OBSM_EMBEDDING, UNS_KEY
from ..._docs import doc_params
from ..._frame import tool
from ..._logging import logger
from .._results import Results, check_keys, write_results
from .._slides import as_slides, embedding_rows
from ._head import StormHead, as_head, model_for_head

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

    from ...io import Slide
    from ...io._where import Where
    from ...models import StormModel


@tool(copy=False)
@doc_params
def fit_risk(
    data: Sequence[SpatialData | AnnData | Slide],
    time: Sequence[float] | str,
    event: Sequence[bool | int] | str,
    *,
    groups: Sequence[Any] | None = None,
    use_rep: str = OBSM_EMBEDDING,
    model: StormModel | str | Path | None = None,
    where: Where,
    hidden: int = 64,
    epochs: int = 150,
    max_spots: int = 512,
    n_folds: int = 5,
    random_state: int | None = None,
) -> StormHead:
    """Learn slide-level survival risk from spot embeddings: attention-MIL pooling trained with the Cox loss.

    Each slide is a bag of spots (``obsm[use_rep]``, computed with :func:`storm.tl.embed` when missing). The head
    gives every spot a risk and an attention weight; the slide's risk is their attention-weighted sum. It is trained
    on all slides with the Cox partial likelihood (Breslow ties); beforehand, folds over patients (``groups``) train
    the same head on the other folds, and Harrell's C-index of the held-out slides is stored in ``head.metrics``
    (``cv_c_index``: mean over folds; ``cv_c_index_pooled``: all held-out scores together).

    Parameters
    ----------
    data
        The slides of the cohort (at least two, one with an event; ``sdatas=`` is the previous release's name).
    time
        Follow-up time of each slide, or an ``obs`` column holding it (one value per slide).
    event
        Whether each slide's patient had the event (1) or was censored (0), or an ``obs`` column.
    groups
        Patient of each slide; slides of one patient stay in one fold (default: every slide its own patient).
    use_rep
        ``obsm`` key of the spot embeddings.
    model
        Model for :func:`storm.tl.embed` when ``use_rep`` is missing (default: the bundled checkpoint).
    {resolve_params}
    hidden
        Width of the head's projection and attention layers.
    epochs
        Full-cohort optimisation steps.
    max_spots
        Spots drawn per slide at each training step (all are used for scoring).
    n_folds
        Cross-validation folds.
    {random_state_param}

    Returns
    -------
    The trained risk :class:`StormHead`; apply it with :func:`storm.tl.apply_risk`.

    Examples
    --------
    >>> import storm as st
    >>> head = st.tl.fit_risk(slides, time=[12.0, 40.5, 7.2], event=[1, 0, 1])  # doctest: +SKIP
    >>> head.metrics["cv_c_index"]  # doctest: +SKIP
    """
    from ._fitting import fit_mil_head

    slides_in = as_slides(data)
    if len(slides_in) < 2:
        raise ValueError("`data` needs at least two slides: a survival model ranks patients against each other.")
    seed = int(random_state)
    resolved = [where.resolve(s, image=False) for s in slides_in]
    t = _per_slide(time, resolved, "time").astype(np.float64)
    e = _per_slide(event, resolved, "event").astype(np.float64)
    if not np.isfinite(t).all() or not np.isin(e, (0.0, 1.0)).all():
        raise ValueError("`time` must be finite numbers and `event` 0/1 (or True/False), one per slide.")
    if (t < 0).any():
        bad = int(np.flatnonzero(t < 0)[0])
        raise ValueError(
            f"`time` of slide {bad} is {t[bad]:g}: follow-up times are durations from diagnosis (or surgery) to the "
            "event or the last follow-up, so never negative; pass durations, not dates or differences in the wrong order."
        )
    if e.sum() == 0:
        raise ValueError("no slide has an event (`event` all 0): the Cox likelihood needs at least one.")
    group = np.asarray(range(len(resolved)) if groups is None else list(groups), dtype=object)
    if len(group) != len(resolved):
        raise ValueError(f"`groups` has {len(group)} entries for {len(resolved)} slides; give one per slide.")
    bags, records = [], []
    for slide in resolved:
        bags.append(embedding_rows(slide, use_rep, model))
        records.append(slide.table.uns.get(UNS_KEY, {}).get(use_rep, {}))
    record = _embedding_record(records, model)
    codes = np.unique(group.astype(str), return_inverse=True)[1]
    module, metrics = fit_mil_head(
        bags, t, e, groups=codes, hidden=hidden, epochs=epochs, max_spots=max_spots, n_folds=n_folds, seed=seed
    )
    meta = {
        "task": "risk",
        "target": "survival",
        "outputs": ["risk"],
        "modality": record.pop("modality", "unknown"),
        "use_rep": use_rep,
        "model": record,
        "metrics": metrics,
        "init": {"n_features": int(bags[0].shape[1]), "hidden": hidden},
        "training": {"epochs": epochs, "max_spots": max_spots, "n_folds": n_folds, "seed": seed},
    }
    logger.info(
        "fitted a risk head on %d slides (%d events): cross-validated C-index %.3f (pooled %.3f)",
        len(bags),
        int(e.sum()),
        metrics["cv_c_index"],
        metrics["cv_c_index_pooled"],
    )
    return StormHead(module, meta)


@tool
@doc_params
def apply_risk(
    data: SpatialData | AnnData | Slide,
    head: StormHead | str | Path,
    *,
    model: StormModel | str | Path | None = None,
    where: Where,
    key_added: str = OBS_RISK,
) -> SpatialData | AnnData | None:
    """Score a slide with a risk head from :func:`storm.tl.fit_risk`, and map each spot's share of the score.

    Writes the slide's risk to ``uns["storm"][key_added]["score"]``, each spot's contribution (attention times spot
    risk, scaled by the number of spots so that their mean is the slide score) to ``obs[key_added]`` and the attention
    to ``obs[key_added + "_attention"]``. Draw it with :func:`storm.pl.risk`.

    Parameters
    ----------
    {data_param}
    head
        A risk :class:`StormHead` or the folder of a saved one.
    model
        Model for :func:`storm.tl.embed` when the head's ``use_rep`` is missing (default: the head's model).
    {resolve_params}
    key_added
        ``obs`` and ``uns["storm"]`` key written.
    {copy_param}

    {copy_returns}

    Examples
    --------
    >>> import storm as st
    >>> st.tl.apply_risk(sdata, head)  # doctest: +SKIP
    >>> sdata["table"].uns["storm"]["storm_risk"]["score"]  # doctest: +SKIP
    """
    import torch

    head = as_head(head)
    if head.task != "risk":
        raise ValueError(f"this is a {head.task} head; apply it with st.tl.apply_head or st.tl.predict_expression.")
    use_rep = head.meta["use_rep"]
    slide = where.resolve(data, image=False)
    check_keys(slide, obs=[key_added, f"{key_added}_attention"])
    net = None if use_rep in slide.table.obsm else model_for_head(head, model)
    modality = head.modality if head.modality in ("image", "expression", "both") else "auto"
    bag = embedding_rows(slide, use_rep, net, modality)
    _check_embedding(slide, use_rep, head)
    with torch.no_grad():
        score, attention, risks = head.module(torch.as_tensor(bag, dtype=torch.float32))
    attention, risks = attention.numpy(), risks.numpy()
    record = {
        "score": float(score),
        "use_rep": use_rep,
        "head_metrics": head.metrics,
        "model": head.meta["model"].get("model"),
    }
    spots = {key_added: attention * risks * len(risks), f"{key_added}_attention": attention}
    write_results(slide, Results(key_added, record, obs=spots))
    logger.info("slide risk %.3f over %d spots", float(score), len(risks))


def _per_slide(values: Any, slides: list[Slide], name: str) -> np.ndarray:
    if isinstance(values, str):
        out = []
        for i, s in enumerate(slides):
            if values not in s.table.obs:
                raise KeyError(f"`{name}={values!r}` is not an obs column of slide {i}; pass one value per slide.")
            column = s.table.obs[values].iloc[s.rows].dropna().unique()
            if len(column) != 1:
                raise ValueError(
                    f"`{name}={values!r}` takes {len(column)} values on slide {i}; it must hold one value per slide."
                )
            out.append(column[0])
        return np.asarray(out, dtype=np.float64)
    array = np.asarray(list(values), dtype=np.float64)
    if array.shape != (len(slides),):
        raise ValueError(f"`{name}` has {array.size} values for {len(slides)} slides; give one per slide.")
    return array


def _embedding_record(records: list[dict[str, Any]], model: Any) -> dict[str, Any]:
    """Model and modality the cohort's embeddings came from (from ``uns["storm"]``); they must agree across slides."""
    seen = {(r.get("model"), r.get("model_sha256"), r.get("modality")) for r in records if r}
    if len(seen) > 1:
        raise ValueError(
            f"the slides' embeddings come from different models or modalities ({sorted(map(str, seen))}); embed "
            "every slide with one model and modality first."
        )
    if seen:
        name, sha, modality = seen.pop()
        return {"model": name, "model_sha256": sha, "modality": modality}
    if model is not None:
        from .._model_arg import get_model, model_record

        return {**model_record(get_model(model)), "modality": "unknown"}
    return {"model": "unknown", "model_sha256": None, "modality": "unknown"}


def _check_embedding(slide: Slide, use_rep: str, head: StormHead) -> None:
    record = slide.table.uns.get(UNS_KEY, {}).get(use_rep, {})
    want = head.meta["model"].get("model_sha256")
    have = record.get("model_sha256")
    if want and have and want != have:
        raise ValueError(
            f"obsm[{use_rep!r}] was computed with another model than the head was trained on ({have[:12]}... vs "
            f"{want[:12]}...); re-run st.tl.embed with model={head.meta['model'].get('model')!r}."
        )
