"""``st.tl.adapt``: adaptation of a storm model to the slides being analysed (STORM's rapid finetuning)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._docs import doc_params
from .._frame import tool

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

    from ..data import Corpus
    from ..io import Slide
    from ..io._where import Where
    from ..models import StormModel

#: Optimiser steps of :func:`adapt` by default: about a minute for a 4,000-spot Visium slide on 2 CPU cores.
ADAPT_STEPS = 300
#: Peak learning rate of each adaptation task by default.
ADAPT_LR = {"embedding": 5e-4, "expression": 1e-3, "image": 3e-4}
#: Crops drawn over the tissue per step with ``task="image"`` (:class:`~storm.data.TissueCrops`).
IMAGE_CROPS = 16


@tool(copy=False, positional=("model",))
@doc_params
def adapt(
    data: SpatialData | AnnData | Slide | Sequence[SpatialData | AnnData | Slide],
    *,
    model: StormModel | str | Path | None = None,
    task: str = "embedding",
    steps: int = ADAPT_STEPS,
    batch_size: int = 16,
    lr: float | None = None,
    where: Where,
    random_state: int | None = None,
) -> StormModel:
    """Adapt a storm model to your slides, without labels, and return the adapted copy.

    With ``task="embedding"`` (the default), the model's own self-supervised objectives (masked gene and image-token
    modelling, cross-modal reconstruction, contrastive alignment) plus niche denoising (each spot's expression, as a
    fixed random projection of the slide's own standardised, whitened expression, inferred from its neighbours; see
    :class:`~storm.train.StormObjectives`) run for ``steps`` optimiser steps on niches of these slides, as GraphST
    or BANKSY fit each data set. The embedding keeps the slide's own main axes of variation even on a tissue the
    model never saw (domains of sections held out of pretraining, zero-shot and adapted: "Spatial domains" in
    ``docs/benchmarks.md``). Then embed with the returned model (:func:`storm.tl.embed`), or let
    :func:`storm.tl.domains` do both with ``adapt=True``.

    With ``task="image"``, the image branch alone learns the slides' H&E, needing no expression: each step draws
    crops at random positions over all the tissue of a slide (tens of thousands of possible crops per section, not
    only the spots' tiles), and the image objective (:class:`~storm.train.StormObjectives`' ``image_views``) makes two
    shifted, flipped or rotated, colour- and stain-jittered views of each crop, and its wider context, agree against the
    other crops. On held-out her2st sections it made the image embedding more predictive of expression on one section
    and not on another ("The image branch and pathology encoders" in ``docs/benchmarks.md``). Slides need an H&E
    image fine enough for the tiles.

    With ``task="expression"``, the slides' measured counts supervise H&E -> expression instead: the image ->
    expression objective alone (the spot's H&E and its neighbours' in, the spot's slide-standardised expression out)
    trains the image branch, the shared transformer and the decoder, so that :func:`storm.tl.predict_expression` with
    the returned model predicts H&E-only slides of the same tissue better. Every slide needs an H&E image and counts.
    It fits the slides it is given: on her2st it raised the decoder's r on held-out sections of the same patients
    and lowered it on a section of another patient (``docs/benchmarks_archive.md``). Adapt on slides like those you
    will predict.

    The passed model is not changed, nothing is written to the slides or to disk, and the same seed gives the same
    weights. A progress bar shows the steps (``storm.settings.progress``).

    Parameters
    ----------
    {slides_param}
    {model_param}
    task
        ``"embedding"`` (self-supervised, for :func:`storm.tl.embed` and :func:`storm.tl.domains`), ``"image"``
        (the image branch alone, self-supervised on crops over all the tissue; no expression needed) or
        ``"expression"`` (supervised by the counts, for :func:`storm.tl.predict_expression` from H&E).
    steps
        Optimiser steps (``batch_size`` niches each).
    batch_size
        Niches per step.
    lr
        Peak AdamW learning rate (linear warm-up over the first tenth of the steps, then cosine decay); default
        5e-4 for ``"embedding"``, 1e-3 for ``"expression"``.
    {resolve_params}
    {random_state_param}
        It orders the data and draws the masks.

    Returns
    -------
    The adapted :class:`~storm.models.StormModel` (in evaluation mode); its ``checkpoint_info`` names the model it
    started from and the adaptation.

    Examples
    --------
    >>> import storm as st
    >>> sdata = st.datasets.demo()
    >>> adapted = st.tl.adapt(sdata, steps=20)  # doctest: +SKIP
    >>> st.tl.embed(sdata, model=adapted)  # doctest: +SKIP
    >>> to_he = st.tl.adapt(sdata, task="expression", steps=20)  # doctest: +SKIP
    >>> st.tl.predict_expression(st.datasets.demo(), model=to_he)  # doctest: +SKIP
    """
    import copy
    import tempfile

    from ..data import Corpus
    from ..train import TrainConfig, Trainer
    from ._model_arg import get_model
    from ._slides import as_slides

    if task not in ADAPT_LR:
        raise ValueError(f"`task` must be one of {tuple(ADAPT_LR)}, got {task!r}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be a positive integer, got {steps!r}.")
    net = get_model(model)
    slides = [where.resolve(s) for s in as_slides(data)]
    corpus = Corpus.for_model(slides, net)
    if task == "expression":
        _check_supervised(corpus)
    if task == "image":
        _check_images(corpus)
    lr = ADAPT_LR[task] if lr is None else lr
    with tempfile.TemporaryDirectory(prefix="storm-adapt-") as scratch:
        config = TrainConfig(
            model=net.config.to_dict(),
            output_dir=scratch,
            max_steps=steps,
            warmup_stage_steps=0,
            lr=lr,
            lr_warmup_steps=max(steps // 10, 1),
            batch_size=batch_size,
            tile_px=net.config.image_size,
            tile_um=net.config.tile_um,
            checkpoint_every=steps + 1,
            log_every=max(steps // 10, 1),
            seed=int(random_state),
            objectives=_objective_weights(task),
            denoising_target="sketch",
            crops_per_batch=IMAGE_CROPS if task == "image" else 0,
        )
        adapted = Trainer(corpus, config, model=copy.deepcopy(net)).fit(resume=False, label="adapt")
    adapted.checkpoint_info = _adapted_info(net, task, steps, len(slides))
    return adapted.eval()


def _objective_weights(task: str) -> dict[str, float]:
    """Objective weights of an adaptation task.

    ``"embedding"``: the pretraining objectives (at their default weights) plus niche denoising, whose "sketch" target
    keeps the slide's own axes. ``"expression"``: the image -> expression objective alone, so that every step carries
    the supervised signal that the decoder of H&E-only slides needs.

    Examples
    --------
    >>> {k: v for k, v in _objective_weights("expression").items() if v}
    {'expression_from_image': 1.0}
    """
    from ..train import ObjectiveWeights

    if task == "embedding":
        return {"niche_denoising": 1.0, "image_views": 0.0}
    only = "image_views" if task == "image" else "expression_from_image"
    return {name: float(name == only) for name in ObjectiveWeights.names()}


def _check_supervised(corpus: Corpus) -> None:
    """``task="expression"`` learns each spot's counts from its H&E: every slide needs both."""
    lacking = [
        f"slide {i} ({s.name!r}): {'no H&E image' if not s.has_image else 'no genes of the model in its counts'}"
        for i, s in enumerate(corpus.slides)
        if not (s.has_image and s.has_expression)
    ]
    if lacking:
        raise ValueError(
            "`task='expression'` learns expression from H&E, so every slide needs an H&E image and counts; "
            + "; ".join(lacking)
            + ". Pass `image_key` for a slide's image, or leave such slides out (task='embedding' takes them)."
        )


def _check_images(corpus: Corpus) -> None:
    """``task="image"`` learns from crops of each slide's H&E: every slide needs an image the model tiles itself."""
    lacking = [f"slide {i} ({s.name!r})" for i, s in enumerate(corpus.slides) if s.tiles is None]
    if lacking:
        raise ValueError(
            "`task='image'` learns from crops of each slide's H&E, but "
            + ", ".join(lacking)
            + " has no H&E image fine enough for the model's tiles (or its model reads a frozen encoder's features, "
            "which stay as they are). Pass `image_key` for a slide's image, or leave such slides out."
        )


def _adapted_info(model: StormModel, task: str, steps: int, n_slides: int) -> dict[str, Any]:
    """``checkpoint_info`` of an adapted copy: the source checkpoint's, with the adaptation in the name, no hash."""
    info = dict(model.checkpoint_info or {})
    base = info.get("name", "in-memory model")
    what = {"embedding": "adapted", "image": "image branch adapted", "expression": "adapted to H&E -> expression"}[task]
    info.update(name=f"{base}, {what} ({steps} steps on {n_slides} slide{'s' * (n_slides != 1)})", sha256=None)
    info["adapted_from_sha256"] = (model.checkpoint_info or {}).get("sha256")
    return info
