"""Model configuration: one dataclass, named presets from a CPU-sized model to the ~555M-parameter STORM scale."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

#: Ways the gene branch reads a spot's expression (the gene branch of :class:`~storm.models.StormModel`).
GENE_ENCODINGS = ("panel", "top")
EXPRESSION_TARGETS = ("standardised", "log1p")
GENE_AXES = ("residuals", "log1p")

#: Preset name -> overrides of :class:`StormConfig` defaults. Parameter counts (with a 20,000-gene vocabulary) are
#: checked in the tests: tiny < 5M, small ~ 5M (the shipped default), base ~ 150M, large ~ 555M.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "backbone": "mobilenetv3_small_050",
        "dim": 64,
        "heads": 4,
        "image_layers": 1,
        "gene_layers": 1,
        "fusion_layers": 2,
        "decoder_layers": 1,
        "max_genes": 128,
        "niche_size": 6,
    },
    "small": {
        "backbone": "mobilenetv3_small_100",
        "dim": 128,
        "heads": 4,
        "image_layers": 1,
        "gene_layers": 2,
        "fusion_layers": 4,
        "decoder_layers": 1,
        "max_genes": 128,
        "niche_size": 8,
    },
    "base": {
        "backbone": "vit_base_patch16_224",
        "dim": 512,
        "heads": 8,
        "image_layers": 2,
        "gene_layers": 2,
        "fusion_layers": 6,
        "decoder_layers": 2,
        "max_genes": 1024,
        "niche_size": 16,
    },
    "large": {
        "backbone": "vit_large_patch16_224",
        "dim": 1024,
        "heads": 16,
        "image_layers": 2,
        "gene_layers": 2,
        "fusion_layers": 9,
        "decoder_layers": 2,
        "max_genes": 2048,
        "niche_size": 32,
    },
}


@dataclass
class StormConfig:
    """Hyper-parameters of :class:`~storm.models.StormModel`.

    Attributes
    ----------
    preset
        Name of the preset this config came from (``"custom"`` otherwise).
    backbone
        timm model name of the image backbone.
    backbone_pretrained
        Load the backbone's published weights through timm (needs them in the local cache or the network).
    backbone_weights
        Optional local file (``.safetensors``) with backbone weights.
    image_encoder
        A frozen pathology encoder as the image branch (a name of ``storm.models.ENCODERS``, e.g. ``"uni"``, or
        any name :func:`storm.models.load_encoder` takes): the model then reads that encoder's features of each spot,
        computed once per slide and cached in it, instead of tiles through ``backbone``; ``image_size`` and
        ``tile_um`` are the encoder's published input. ``None`` (default): storm's own backbone.
    image_encoder_dim
        Width of the encoder's features (set from the registry by :meth:`from_preset`).
    image_encoder_sha256
        Hash of the encoder weights the model was trained on (set by pretraining and adaptation); features of other
        weights are refused.
    image_size
        Side of the input tiles in pixels.
    tile_um
        Side of the input tiles in µm (the tiles cover ``tile_um`` at ``tile_um / image_size`` µm/px); inference tiles
        slides at the geometry the model was trained on.
    dim, heads, mlp_ratio, dropout
        Width, attention heads, MLP expansion and dropout shared by all transformer layers.
    image_layers, gene_layers
        Shallow modality-specific transformer layers on top of the backbone tokens / gene tokens.
    fusion_layers
        Depth of the shared transformer over all tokens of a niche.
    decoder_layers, decoder_queries
        Cross-attention decoder depth and learned queries (image -> expression, expression -> image features).
    gene_encoding
        How the gene branch reads a spot: ``"panel"`` (the default) weighs every known gene of the panel by its
        expression standardised (and half-whitened) per slide; ``"top"`` makes tokens of the ``max_genes`` most
        expressed genes only (checkpoints whose config has no ``gene_encoding`` were written before it existed and
        are ``"top"``).
    expression_target
        What the image -> expression decoder learns: ``"standardised"`` (the default) each gene's log1p(CP10k)
        standardised within its slide, so that every gene's spatial pattern counts whatever its level and slides'
        offsets do not; predictions return to log1p(CP10k) through each gene's mean and within-slide standard deviation
        over the pretraining corpus (stored with the weights). ``"log1p"``: log1p(CP10k) itself (checkpoints whose config
        has no ``expression_target`` were written before it existed and are ``"log1p"``).
    gene_components
        With ``gene_encoding="panel"``: the standardised expression is projected on this many principal axes of each
        slide, each divided by the square root of its standard deviation (computed by the data layer; see
        ``residual_axes`` or ``whitening_axes`` in ``storm.data._expression``, per ``gene_axes``), so that the main
        directions of variation of the slide count and the rest, mostly noise, is dropped; 0 standardises only.
    gene_axes
        Where those axes come from: ``"residuals"`` (the default) the principal axes of the slide's Poisson residuals
        ``(counts - expected) / sqrt(expected)``, expected = spot total x gene share, standardised per gene, so that
        the many genes of a whole-kit panel seen at a few counts per spot, whose log1p values follow each spot's depth,
        do not add a shared depth axis; ``"log1p"``: those of the standardised log1p(CP10k) expression itself
        (checkpoints whose config has no ``gene_axes`` were written before it existed and are ``"log1p"``).
    max_genes
        Gene tokens per spot with ``gene_encoding="top"`` (the most expressed of the panel's genes in the vocabulary).
    value_bins
        Resolution of the expression-value embedding (values are log1p-normalised; piecewise-linear interpolation).
    niche_size
        Neighbours K around a centre spot (the niche has K + 1 spots).
    pos_min_um, pos_max_um
        Shortest and longest wavelength (µm) of the absolute 2-D positional encoding of offsets.
    gradient_checkpointing
        Recompute fusion activations in the backward pass to save memory.
    vocab_size
        Genes in the vocabulary (set from the vocabulary the model is built with).
    """

    preset: str = "custom"
    backbone: str = "mobilenetv3_small_050"
    backbone_pretrained: bool = False
    backbone_weights: str | None = None
    image_encoder: str | None = None
    image_encoder_dim: int = 0
    image_encoder_sha256: str | None = None
    image_size: int = 224
    tile_um: float = 112.0
    dim: int = 64
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    image_layers: int = 1
    gene_layers: int = 1
    fusion_layers: int = 2
    decoder_layers: int = 1
    decoder_queries: int = 4
    gene_encoding: str = "panel"
    expression_target: str = "standardised"
    gene_components: int = 32
    gene_axes: str = "residuals"
    max_genes: int = 128
    value_bins: int = 32
    niche_size: int = 6
    pos_min_um: float = 5.0
    pos_max_um: float = 5000.0
    gradient_checkpointing: bool = False
    vocab_size: int = 0

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"`dim` ({self.dim}) must be divisible by `heads` ({self.heads}).")
        for name in ("dim", "heads", "fusion_layers", "decoder_queries", "max_genes", "value_bins", "image_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"`{name}` must be at least 1, got {getattr(self, name)!r}.")
        for name in ("image_layers", "gene_layers", "decoder_layers", "niche_size", "vocab_size", "gene_components"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"`{name}` must be non-negative, got {getattr(self, name)!r}.")
        if self.gene_encoding not in GENE_ENCODINGS:
            raise ValueError(f"`gene_encoding` must be one of {GENE_ENCODINGS}, got {self.gene_encoding!r}.")
        if self.expression_target not in EXPRESSION_TARGETS:
            raise ValueError(
                f"`expression_target` must be one of {EXPRESSION_TARGETS}, got {self.expression_target!r}."
            )
        if self.gene_axes not in GENE_AXES:
            raise ValueError(f"`gene_axes` must be one of {GENE_AXES}, got {self.gene_axes!r}.")
        if self.image_encoder is not None and int(self.image_encoder_dim) < 1:
            raise ValueError(
                f"`image_encoder={self.image_encoder!r}` needs `image_encoder_dim`, the width of its features; "
                "StormConfig.from_preset sets it for registered encoders."
            )
        if not self.tile_um > 0:
            raise ValueError(f"`tile_um` must be positive, got {self.tile_um!r}.")
        if not 0 < self.pos_min_um < self.pos_max_um:
            raise ValueError("`pos_min_um` and `pos_max_um` must satisfy 0 < pos_min_um < pos_max_um.")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> StormConfig:
        """A preset config (``"tiny"``, ``"small"``, ``"base"``, ``"large"``), optionally with overrides.

        Examples
        --------
        >>> from storm.models import StormConfig
        >>> StormConfig.from_preset("small").fusion_layers
        4
        >>> uni = StormConfig.from_preset("small", image_encoder="uni")  # UNI's features as the image branch
        >>> uni.image_encoder_dim, uni.image_size, uni.tile_um
        (1024, 224, 112.0)
        """
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
        encoder = overrides.get("image_encoder")
        if encoder is not None:
            from ._pathology import get_spec

            spec = get_spec(encoder)
            # the encoder's published input is fixed: its geometry wins over the run's tile size
            dim = overrides.get("image_encoder_dim") or spec.dim
            published = {"image_size": spec.tile_px, "tile_um": spec.tile_um, "image_encoder_dim": dim}
            overrides = {**overrides, **published, "image_encoder": spec.name}
        return cls(**{"preset": name, **PRESETS[name], **overrides})

    @property
    def slide_axes(self) -> int:
        """Principal axes the data layer computes per slide for this model (0 for the ``"top"`` encoding).

        ``gene_components`` for the ``"panel"`` encoding; ``"top"`` reads no axes.
        """
        return self.gene_components if self.gene_encoding == "panel" else 0

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, as written to ``config.json``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StormConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown config keys {unknown}; this checkpoint needs a newer storm.")
        # configs written before the "panel" encoding (standardised decoder, residual axes) existed lack the key
        return cls(**{"gene_encoding": "top", "expression_target": "log1p", "gene_axes": "log1p", **data})
