"""Pretraining configuration (a dataclass readable from YAML for ``storm pretrain --config``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..models import StormConfig


@dataclass
class TrainConfig:
    """Everything a pretraining run needs besides the corpus.

    Attributes
    ----------
    model
        A preset name (``"tiny"``, ``"small"``, ``"base"``, ``"large"``) or a dict of :class:`~storm.models.StormConfig`
        fields (with an optional ``preset`` key as the base).
    output_dir
        Folder for the final checkpoint, ``checkpoints/step_*`` resume points and ``losses.csv``.
    max_steps
        Optimiser steps in total.
    warmup_stage_steps
        Steps of the modality-specific first stage (STORM's warm-up); joint multimodal training follows.
    lr, weight_decay, lr_warmup_steps
        AdamW learning rate and weight decay; linear warm-up then cosine decay to ``min_lr_ratio * lr``.
    batch_size, grad_accum
        Niches per micro-batch (per process) and micro-batches per optimiser step.
    image_repeats
        Times per epoch the spots of slides with an H&E image are visited (expression-only slides once): balances a
        corpus with few imaged slides among many count matrices.
    precision
        ``"auto"`` (bf16 autocast on GPUs that support it, fp32 on CPU), ``"fp32"``, ``"bf16"`` or ``"fp16"``.
    tile_px, tile_um, niche_size
        Tile geometry and neighbours per niche.
    checkpoint_every, log_every
        Steps between resume checkpoints and between log lines.
    seed
        Seed of initialisation, data order, augmentation and masking.
    objectives
        Weights of the objectives (fields of :class:`~storm.train.ObjectiveWeights`).
    denoising_target
        What the ``niche_denoising`` objective regresses: ``"sketch"`` (a fixed random projection of the slide's
        whitened expression) or ``"gene_branch"`` (the gene branch as it was when the run started); see
        :class:`~storm.train.StormObjectives`.
    augment
        Keyword arguments of :class:`~storm.data.Augment`; ``None`` disables augmentation.
    crops_per_batch
        Crops drawn at random positions over the tissue of each batch's slide (:class:`~storm.data.TissueCrops`),
        whose views train the image branch with the ``image_views`` objective, needing no expression; 0 (default)
        draws none. Slides whose image branch reads a frozen encoder's features draw none.
    crop_context
        Width, in tiles, of each crop's context view (``<= 1``: two views at the tile's geometry only).
    max_grad_norm
        Gradient clipping norm (0 disables).
    deterministic
        Use deterministic kernels on CPU, so that two runs with the same seed, and a run resumed after an
        interruption, give identical weights at any thread count. On GPUs, results agree only up to the rounding of
        cuDNN and cuBLAS kernels, whose summation order may vary.
    num_workers
        Reader processes of the niche loader (:class:`~storm.data.NicheLoader`); ``None``: none on the CPU (reading in
        line is faster there), ``storm.settings.num_workers`` on GPUs. The batches, and so the weights, do not depend
        on it.
    """

    model: str | dict[str, Any] = "small"
    output_dir: str = "storm_pretrain"
    max_steps: int = 1000
    warmup_stage_steps: int = 100
    lr: float = 3e-4
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.05
    lr_warmup_steps: int = 50
    batch_size: int = 16
    grad_accum: int = 1
    image_repeats: int = 1
    precision: str = "auto"
    tile_px: int = 224
    tile_um: float = 112.0
    niche_size: int | None = None
    checkpoint_every: int = 200
    log_every: int = 10
    seed: int = 0
    objectives: dict[str, float] = field(default_factory=dict)
    denoising_target: str = "sketch"
    augment: dict[str, Any] | None = field(default_factory=dict)
    crops_per_batch: int = 0
    crop_context: float = 2.0
    max_grad_norm: float = 1.0
    deterministic: bool = True
    num_workers: int | None = None

    def __post_init__(self) -> None:
        for name in (
            "max_steps",
            "batch_size",
            "grad_accum",
            "image_repeats",
            "checkpoint_every",
            "log_every",
            "tile_px",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if self.crops_per_batch != 0 and (
            isinstance(self.crops_per_batch, bool)
            or not isinstance(self.crops_per_batch, int)
            or self.crops_per_batch < 2
        ):
            raise ValueError(f"`crops_per_batch` must be 0 (none) or an integer ≥ 2, got {self.crops_per_batch!r}.")
        for name in ("warmup_stage_steps", "lr_warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be non-negative, got {getattr(self, name)!r}.")
        if self.num_workers is not None and (
            isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0
        ):
            raise ValueError(f"`num_workers` must be a non-negative integer or None, got {self.num_workers!r}.")
        if not self.lr > 0:
            raise ValueError(f"`lr` must be positive, got {self.lr!r}.")
        from ._objectives import DENOISING_TARGETS

        if self.denoising_target not in DENOISING_TARGETS:
            raise ValueError(f"`denoising_target` must be one of {DENOISING_TARGETS}, got {self.denoising_target!r}.")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"`precision` must be 'auto', 'fp32', 'bf16' or 'fp16', got {self.precision!r}.")

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (stored with checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        r"""Read a YAML file whose top-level keys are fields of this class (plus ``corpus``, ignored here).

        Examples
        --------
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "cfg.yaml"
        >>> _ = p.write_text("model: tiny\nmax_steps: 5\ncorpus: [demo]\n")
        >>> TrainConfig.from_yaml(p).max_steps
        5
        """
        import yaml

        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of settings at the top level.")
        data.pop("corpus", None)
        data.pop("data_dir", None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown settings {unknown}; known: {sorted(known)}.")
        return cls(**data)

    def model_config(self) -> StormConfig:
        """The :class:`~storm.models.StormConfig` of the model this run trains: ``model`` at the run's tile geometry.

        Examples
        --------
        >>> cfg = TrainConfig(model={"preset": "tiny", "dim": 32}, tile_px=64, tile_um=64.0)
        >>> c = cfg.model_config()
        >>> c.dim, c.image_size, c.tile_um, c.gene_encoding
        (32, 64, 64.0, 'panel')
        """
        from ..models import StormConfig

        overrides: dict[str, Any] = {"image_size": self.tile_px, "tile_um": self.tile_um}
        if self.niche_size is not None:
            overrides["niche_size"] = self.niche_size
        if isinstance(self.model, str):
            return StormConfig.from_preset(self.model, **overrides)
        spec = dict(self.model)
        preset = spec.pop("preset", None)
        if preset is not None:
            return StormConfig.from_preset(preset, **{**overrides, **spec})
        return StormConfig(**{**overrides, **spec})
