"""The ``model=`` argument of every tool: ``None`` (the bundled default), a name or path, or a model."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..models import StormModel


def get_model(model: StormModel | str | Path | None) -> StormModel:
    """The model to run: ``None`` is the bundled default checkpoint (loaded once per process)."""
    from ..models import StormModel

    if model is None:
        return _default()
    if isinstance(model, StormModel):
        return model
    if isinstance(model, str | Path):
        return StormModel.from_pretrained(model)
    raise TypeError(
        f"`model` must be None (the bundled default), a checkpoint name or path, or a StormModel; got "
        f"{type(model).__name__}."
    )


@lru_cache(maxsize=1)
def _default() -> StormModel:
    from ..models import StormModel

    return StormModel.from_pretrained("default")


def model_record(model: StormModel) -> dict[str, Any]:
    """What ``uns["storm"]`` records about the model and how it ran.

    Name, weights hash, storm versions, preset, image encoder, and the orientations averaged
    (``storm.settings.orientations``).
    """
    from .._settings import settings
    from .._version import __version__

    info = model.checkpoint_info or {}
    record = {
        "model": info.get("name", "in-memory model"),
        "model_sha256": info.get("sha256"),
        "model_revision": info.get("revision"),
        "model_storm_version": info.get("storm_version"),
        "preset": model.config.preset,
        "storm_version": __version__,
        "orientations": settings.orientations,
    }
    if model.config.image_encoder is not None:  # the frozen pathology encoder whose features the model reads
        record["image_encoder"] = model.config.image_encoder
        record["image_encoder_sha256"] = model.config.image_encoder_sha256
        record["image_encoder_geometry"] = {"tile_px": model.config.image_size, "tile_um": model.config.tile_um}
    if "adapted_from_sha256" in info:  # a copy adapted by st.tl.adapt: the weights it started from
        record["model_adapted_from_sha256"] = info["adapted_from_sha256"]
    return record
