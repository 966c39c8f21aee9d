"""``st.tl.adapt``: label-free adaptation of a storm model to the slides being analysed (STORM's rapid finetuning)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._docs import doc_params

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

    from ..models import StormModel

#: Optimiser steps of :func:`adapt` by default: about a minute for a 4,000-spot Visium slide on 2 CPU cores.
ADAPT_STEPS = 300
#: Objective weights of adaptation (the rest keep their pretraining defaults): niche denoising, with the "sketch"
#: target, keeps the slide's own axes.
ADAPT_OBJECTIVES = {"niche_denoising": 1.0}


@doc_params
def adapt(
    sdata: SpatialData | AnnData | Sequence[SpatialData | AnnData],
    model: StormModel | str | Path | None = None,
    *,
    steps: int = ADAPT_STEPS,
    batch_size: int = 16,
    lr: float = 5e-4,
    table_key: str | None = None,
    image_key: str | None = None,
    shapes_key: str | None = None,
    coordinate_system: str | None = None,
    um_per_px: float | None = None,
    platform: str | None = None,
    layer: str | None = None,
    seed: int | None = None,
) -> StormModel:
    """Adapt a storm model to your slides, without labels, and return the adapted copy.

    The model's own self-supervised objectives (masked gene and image-token modelling, cross-modal reconstruction,
    contrastive alignment) plus niche denoising (each spot's expression, as a fixed random projection of the slide's
    own standardised, whitened expression, inferred from its neighbours; see :class:`~storm.train.StormObjectives`)
    run for ``steps`` optimiser steps on niches of these slides, as GraphST or BANKSY fit each data set. The
    embedding keeps the slide's own main axes of variation even on a tissue the model never saw: on DLPFC 151673,
    held out of the default's pretraining, domains go from ARI 0.31 to 0.51 (``docs/benchmarks.md``). Then embed
    with the returned model (:func:`storm.tl.embed`), or let :func:`storm.tl.domains` do both with ``adapt=True``.

    The passed model is not changed, nothing is written to the slides or to disk, and the same seed gives the same
    weights. A progress bar shows the steps (``storm.settings.progress``).

    Parameters
    ----------
    sdata
        One slide or a list of slides (SpatialData, squidpy-style AnnData or resolved :class:`~storm.io.Slide`),
        adapted to together.
    {model_param}
    steps
        Optimiser steps (``batch_size`` niches each).
    batch_size
        Niches per step.
    lr
        Peak AdamW learning rate (linear warm-up over the first tenth of the steps, then cosine decay).
    {resolve_params}
    seed
        Seed of the data order and masks (default ``storm.settings.seed``).

    Returns
    -------
    The adapted :class:`~storm.models.StormModel` (in evaluation mode); its ``checkpoint_info`` names the model it
    started from and the adaptation.

    Examples
    --------
    >>> import storm as st
    >>> sdata = st.datasets.demo()
    >>> adapted = st.tl.adapt(sdata, steps=20)  # doctest: +SKIP
    >>> st.tl.embed(sdata, adapted)  # doctest: +SKIP
    """
    import copy
    import tempfile

    from .._settings import settings
    from ..data import Corpus
    from ..io._resolve import resolve, resolve_args
    from ..train import TrainConfig, Trainer
    from ._model_arg import get_model
    from ._slides import as_slides

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be a positive integer, got {steps!r}.")
    where = resolve_args(locals())
    net = get_model(model)
    slides = [resolve(s, **where) for s in as_slides(sdata, "sdata")]
    corpus = Corpus.for_model(slides, net)
    seed = settings.seed if seed is None else int(seed)
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
            seed=seed,
            objectives=dict(ADAPT_OBJECTIVES),
            denoising_target="sketch",
        )
        adapted = Trainer(corpus, config, model=copy.deepcopy(net)).fit(resume=False, label="adapt")
    adapted.checkpoint_info = _adapted_info(net, steps, len(slides))
    return adapted.eval()


def _adapted_info(model: StormModel, steps: int, n_slides: int) -> dict[str, Any]:
    """``checkpoint_info`` of an adapted copy: the source checkpoint's, with the adaptation in the name, no hash."""
    info = dict(model.checkpoint_info or {})
    base = info.get("name", "in-memory model")
    info.update(name=f"{base}, adapted ({steps} steps on {n_slides} slide{'s' * (n_slides != 1)})", sha256=None)
    info["adapted_from_sha256"] = (model.checkpoint_info or {}).get("sha256")
    return info
