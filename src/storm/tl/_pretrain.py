"""``st.tl.pretrain``: train storm's foundation model on your own corpus."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._frame import tool

if TYPE_CHECKING:
    from collections.abc import Sequence

    from spatialdata import SpatialData

    from ..models import StormModel

#: What a pretraining run writes into ``output_dir``.
RUN_FILES = ("checkpoints", "losses.csv", "model", "tensorboard", "training.json")


@tool(copy=False)
def pretrain(
    data: list[SpatialData | str | Path] | SpatialData | str | Path,
    *,
    config: str | dict[str, Any] | Any = "small",
    max_steps: int | None = None,
    output_dir: str | Path = "storm_pretrain",
    resume: bool = True,
    **overrides: Any,
) -> StormModel:
    """Pretrain a storm model on a corpus of slides.

    Niches (each spot with its K nearest spots in µm) are streamed through storm's tiler with H&E augmentation and
    trained with masked gene and image-token reconstruction, cross-modal reconstruction and contrastive spot, niche and
    spot–niche alignment, first per modality, then jointly. Run the same call under ``torchrun`` to train on many GPUs
    or nodes (DDP).

    Parameters
    ----------
    data
        The corpus: SpatialData objects or paths to SpatialData ``.zarr`` stores (any mix of platforms and
        resolutions; ``corpus=`` is the previous release's name).
    config
        A model preset name (``"tiny"``, ``"small"``, ``"base"``, ``"large"``), a :class:`~storm.train.TrainConfig`, or a
        dict of its fields.
    max_steps
        Optimiser steps (overrides the config).
    output_dir
        Where the final checkpoint (``output_dir/model``), resume points and ``losses.csv`` go: a new or empty folder,
        or (with ``resume``) an earlier run's folder; anything else is refused before training.
    resume
        Continue from the latest resume point in ``output_dir`` when there is one.
    **overrides
        Other :class:`~storm.train.TrainConfig` fields, e.g. ``batch_size=8``.

    Returns
    -------
    The trained model (also saved to ``output_dir/model``).

    Examples
    --------
    >>> import storm as st
    >>> model = st.tl.pretrain([st.datasets.demo()], config="tiny", max_steps=2, batch_size=2, tile_px=64,
    ...                        output_dir=tempfile.mkdtemp())  # doctest: +SKIP
    """
    from ..data import Corpus
    from ..train import TrainConfig, Trainer

    sources = data if isinstance(data, list | tuple) else [data]
    check_output(output_dir, resume=resume, corpus=sources)
    if isinstance(config, TrainConfig):
        fields = config.to_dict()
    elif isinstance(config, dict):
        fields = dict(config)
    elif isinstance(config, str):
        fields = {"model": config}
    else:
        raise TypeError(f"`config` must be a preset name, a TrainConfig or a dict, got {type(config).__name__}.")
    fields.update(overrides, output_dir=str(output_dir))
    if max_steps is not None:
        fields["max_steps"] = max_steps
    train_config = TrainConfig(**fields)
    model = train_config.model_config()
    corpus = Corpus.from_sources(
        list(sources),
        tile_px=model.image_size,
        tile_um=model.tile_um,
        niche_size=model.niche_size,
        gene_components=model.slide_axes,
        image_encoder=model.image_encoder,
    )
    return Trainer(corpus, train_config).fit(resume=resume)


def check_output(output_dir: str | Path, *, resume: bool, corpus: Sequence[Any] = ()) -> None:
    """Refuse an ``output_dir`` that training would mix into or overwrite, before any slide is read.

    It must be new or empty or, with ``resume``, an earlier run's folder: one holding a resume point (and anything
    else), or only what a run writes (a run stopped before its first resume point, as torchrun restarts it). It must not
    lie inside a corpus store. Raises :class:`ValueError` naming ``output_dir`` and the fix.
    """
    from ..io._write import check_output_dir
    from ..train._state import latest_resume_point

    allowed = None if latest_resume_point(Path(output_dir) / "checkpoints") else RUN_FILES
    fix = "pass a new or empty output_dir, or an earlier run's folder with resume=True"
    stores = [source for source in corpus if isinstance(source, str | Path) and Path(source).exists()]
    check_output_dir(output_dir, "output_dir", allowed=allowed if resume else (), fix=fix, inputs=stores)
