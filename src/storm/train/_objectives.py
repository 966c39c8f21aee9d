"""Self-supervised pretraining objectives: masked modelling, cross-modal reconstruction and contrastive alignment.

The objectives follow the published designs of STORM (modality-specific warm-up, then joint training with masked
gene / image-token modelling, cross-modal translation and image–expression contrast), ST-Align (spot- and niche-level
image–gene alignment and spot–niche alignment) and SToFM (niche context in a shared transformer); the code is ours.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._masking import make_masks, modality_valid, spot_gene_index, uniform

#: Training stages: modality-specific warm-up, then joint multimodal training.
STAGES = ("warmup", "joint")
#: One learnable temperature per contrastive quantity.
_TEMPERATURES = ("spot", "fused", "niche", "spot_niche")
#: Temperature of the image-view contrast (fixed, as SimCLR's).
VIEW_TEMPERATURE = 0.1
#: Fraction of niches whose centre expression the denoising objective hides.
DENOISING_HIDDEN = 0.5
#: What niche denoising regresses (``StormObjectives(denoising_target=...)``, ``TrainConfig.denoising_target``).
DENOISING_TARGETS = ("sketch", "gene_branch")
#: Seed of the fixed random gene vectors of the ``"sketch"`` denoising target (the same for every run and model).
SKETCH_SEED = 0


@dataclass
class ObjectiveWeights:
    """Weights of storm's pretraining objectives; each is ≥ 0 and 0 disables (and skips computing) the objective.

    Attributes
    ----------
    masked_gene
        Masked gene modelling: MSE of the hidden log1p values of the centre spot, reconstructed from its fused gene
        token (default 1.0).
    masked_image
        Masked image modelling: MSE between reconstructed and layer-normalised backbone features of the hidden tokens
        of the centre tile (MAE-style targets; default 1.0).
    expression_from_image
        Image -> expression: MSE of the centre's measured expression predicted from images alone, in the units of the
        model's ``expression_target``: log1p(CP10k) standardised per gene within the slide (the default; the error
        then counts in units of each gene's within-slide spread, so a marker's pattern weighs as much as a
        housekeeping gene's level and slide offsets are not learned), or log1p(CP10k) (default 1.0).
    image_from_expression
        Expression -> image: MSE of the centre tile's layer-normalised pooled backbone features predicted from
        expression alone (default 0.5).
    contrastive_spot
        Symmetric InfoNCE between the centre's image and gene embeddings, averaged over the branch (pre-fusion)
        embeddings and the fused per-modality centre tokens (default 1.0).
    contrastive_niche
        Symmetric InfoNCE between the niche embedding of an image-only pass and of an expression-only pass
        (default 0.5).
    spot_niche
        Symmetric InfoNCE between the fused centre embedding and the niche embedding of the same niche (ST-Align's
        spot–niche alignment; default 0.5).
    niche_denoising
        Niche denoising: the centre's expression is hidden in a random half of the niches, and a linear head on the
        joint centre embedding regresses a fixed summary of the centre's clean expression (``denoising_target`` of
        :class:`StormObjectives`; by default a random projection of the slide-standardised expression within the
        slide's principal axes). The embedding learns to infer each spot's expression profile from its neighbours
        while keeping the slide's main axes of variation (the objective of :func:`storm.tl.adapt`; default 0).
    image_views
        Self-supervised image objective on crops drawn anywhere over the tissue (:class:`~storm.data.TissueCrops`, a
        batch's ``views``; only when the run draws them, ``TrainConfig.crops_per_batch``): symmetric InfoNCE
        (SimCLR-style, temperature ``VIEW_TEMPERATURE``, 0.1) between a projection of the image branch's spot token
        of two views of each crop (shifted, flipped or rotated, colour and stain jittered) and of its wider context
        view, with the other crops of the batch as negatives. Needs no expression (default 1.0).
    """

    masked_gene: float = 1.0
    masked_image: float = 1.0
    expression_from_image: float = 1.0
    image_from_expression: float = 0.5
    contrastive_spot: float = 1.0
    contrastive_niche: float = 0.5
    spot_niche: float = 0.5
    niche_denoising: float = 0.0
    image_views: float = 1.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"Objective weight `{f.name}` must be a finite number ≥ 0 (0 disables it), got {value!r}."
                )
            setattr(self, f.name, float(value))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Names of the objectives, in logging order."""
        return tuple(f.name for f in dataclasses.fields(cls))


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of paired rows of ``a`` and ``b`` (N, D) with in-batch negatives (cosine similarity).

    ``0.5 * (CE(a_i -> b) + CE(b_i -> a))`` with logits ``cos(a_i, b_j) / temperature`` and the pair i as the target.
    """
    a = F.normalize(a.float(), dim=-1)
    b = F.normalize(b.float(), dim=-1)
    logits = a @ b.T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def _masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
    """Mean squared error over ``mask`` (broadcast over a trailing feature axis), or ``None`` when nothing is masked."""
    if not bool(mask.any()):
        return None
    diff = (pred.float() - target.detach().float()).pow(2)
    if diff.ndim > mask.ndim:
        diff = diff.mean(-1)
    return diff[mask].mean()


def _normalise(features: torch.Tensor) -> torch.Tensor:
    """Per-token layer normalisation without affine parameters (MAE's normalised-pixel targets, here features)."""
    return F.layer_norm(features.float(), features.shape[-1:], eps=1e-6)


class _Niches:
    """A niche batch resolved once: backbone tokens computed, modality validity and gene indices normalised."""

    def __init__(self, batch: Mapping[str, Any], model: nn.Module) -> None:
        self.offsets_um = batch["offsets_um"]
        self.b, self.s = self.offsets_um.shape[:2]
        image_valid, expression_valid = modality_valid(batch)
        spot_mask = batch.get("spot_mask")
        self.spot_mask = None if spot_mask is None else spot_mask.bool()
        self.features: torch.Tensor | None = None
        tiles = batch.get("tiles") if batch.get("tiles") is not None else batch.get("features")
        if tiles is not None:
            self.features = model.niche_features(tiles, batch["tile_index"])
        elif batch.get("image_features") is not None:
            features = batch["image_features"]
            self.features = features[:, :, None] if features.ndim == 3 else features
        elif batch.get("images") is not None:
            images = batch["images"]
            tokens, _ = model.image.backbone_tokens(images.reshape(self.b * self.s, *images.shape[2:]))
            self.features = tokens.view(self.b, self.s, *tokens.shape[1:])
        self.expression = batch.get("expression")
        self.gene_index = batch.get("gene_index")
        self.gene_mean, self.gene_std = batch.get("gene_mean"), batch.get("gene_std")
        gene = getattr(model, "gene", None)
        self.gene_branch = gene
        self.panel_encoder = gene if getattr(gene, "encoding", "top") == "panel" else None
        config = getattr(model, "config", None)
        self.standardised_target = getattr(config, "expression_target", "log1p") == "standardised"
        self.gene_components, self.component_scale = batch.get("gene_components"), batch.get("component_scale")
        if self.expression is not None and self.gene_index is None:
            raise ValueError("`gene_index` is needed with `expression`: align the genes with `model.vocab.align`.")
        self.has_image = self.features is not None and bool(image_valid.any())
        self.has_expression = self.expression is not None and bool(expression_valid.any())
        self.image_valid = image_valid if self.has_image else torch.zeros_like(image_valid)
        self.expression_valid = expression_valid if self.has_expression else torch.zeros_like(expression_valid)
        if self.has_expression:
            self.spot_genes = spot_gene_index(self.gene_index, self.b, self.s)
            self.centre_genes = self.spot_genes[:, 0]
            # a shared index predicts exactly the dataset's columns; otherwise predict the vocabulary and gather
            self.shared = self.gene_index.ndim == 1
            self.genes = self.gene_index.clamp(min=0) if self.shared else None

    def as_batch(self) -> dict[str, Any]:
        return {
            "offsets_um": self.offsets_um,
            "spot_mask": self.spot_mask,
            "image_features": self.features if self.has_image else None,
            "image_mask": self.image_valid,
            "expression": self.expression if self.has_expression else None,
            "gene_index": self.gene_index,
            "gene_mean": self.gene_mean,
            "gene_std": self.gene_std,
            "gene_components": self.gene_components,
            "component_scale": self.component_scale,
            "expression_mask": self.expression_valid,
        }

    def inputs(
        self,
        rows: torch.Tensor | None,
        *,
        image: bool,
        expression: bool,
        image_token_mask: torch.Tensor | None = None,
        value_mask: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """Model keyword arguments for the niches ``rows`` (all when ``None``) with the chosen modalities."""

        def take(x: torch.Tensor | None) -> torch.Tensor | None:
            return x if x is None or rows is None else x[rows]

        kwargs: dict[str, Any] = {"offsets_um": take(self.offsets_um), "spot_mask": take(self.spot_mask)}
        if image:
            kwargs.update(
                image_features=take(self.features),
                image_mask=take(self.image_valid),
                image_token_mask=take(image_token_mask),
            )
        if expression:
            genes = self.gene_index if self.shared else take(self.spot_genes).flatten(0, 1)
            kwargs.update(
                expression=take(self.expression),
                gene_index=genes,
                gene_mean=self.gene_mean,
                gene_std=self.gene_std,
                gene_components=self.gene_components,
                component_scale=self.component_scale,
                expression_mask=take(self.expression_valid),
                value_mask=take(value_mask),
                genes=self.genes,
            )
        elif self.has_expression:
            kwargs["genes"] = self.genes
        return kwargs

    def standardised_centre(self) -> torch.Tensor:
        """The centre spots' expression (B, G), standardised per gene for a ``"panel"`` gene encoding (raw otherwise).

        The encoder's own standardisation (:meth:`_centre_z`), so that every gene weighs the same.
        """
        return self._centre_z() if self.panel_encoder is not None else self.expression[:, 0].float()

    def expression_target(self) -> torch.Tensor:
        """The centre spots' expression (B, G) as the image -> expression decoder learns it (its ``expression_target``).

        Standardised with the slide's statistics, or without them (a batch built by hand) with those of the batch's
        centres.
        """
        return self._centre_z() if self.standardised_target else self.expression[:, 0].float()

    def whitened_centre(self) -> torch.Tensor:
        """The centre spots' expression (B, G) as the ``"panel"`` gene branch reads it; unknown genes are 0.

        Standardised per gene with the slide's statistics (the valid centres' without them), whatever the decoder's
        target, and, when the batch has the slide's principal axes, within those axes, half-whitened.
        """
        from ..models._encoders import whiten

        return whiten(self._centre_z(), self.gene_components, self.component_scale)

    def _centre_z(self) -> torch.Tensor:
        """Centre expression standardised per gene with the slide's statistics (the valid centres' without them)."""
        x, valid = self.expression[:, 0], self.expression_valid[:, 0]
        return self.gene_branch.standardise(x, self.centre_genes, None, self.gene_mean, self.gene_std, valid)

    def centre_columns(self, prediction: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Predictions over the model's ``genes`` -> the centre spot's dataset columns (R, G)."""
        if self.shared:
            return prediction
        index = self.centre_genes if rows is None else self.centre_genes[rows]
        return prediction.gather(1, index.clamp(min=0))


def _fp32(niches: _Niches) -> torch.autocast:
    """Autocast off: losses are computed in float32 whatever precision the model ran in."""
    return torch.autocast(niches.offsets_um.device.type, enabled=False)


def _scatter(x: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
    """Rows ``x`` of a subset back into an (n, …) tensor (zeros elsewhere)."""
    return x.new_zeros(n, *x.shape[1:]).index_copy(0, rows, x)


class StormObjectives(nn.Module):
    """storm's self-supervised pretraining objectives, with learnable contrastive temperatures.

    Call it with the model and a niche batch; it draws the masks, runs the forward passes a stage needs and returns
    the weighted total loss and each component for logging.

    * ``stage="warmup"`` (STORM's modality-specific first stage): masked gene modelling on an expression-only pass
      and masked image-token modelling on an image-only pass, so each branch learns alone.
    * ``stage="joint"``: all objectives from at most three passes: a joint pass with the masks (masked gene and image
      modelling, contrast of the fused per-modality centre tokens, spot–niche alignment) and clean image-only and
      expression-only passes (cross-modal reconstruction without leakage, branch-level and niche-level contrast).

    Tiles are run through the backbone once per call and shared by all passes. Niches without one modality still
    train the other; a component that cannot be computed for a batch (no masked entries, fewer than two pairs for a
    contrast, a missing modality) is reported as 0 and left out of the total. Losses are computed in float32 outside
    autocast.

    Parameters
    ----------
    weights
        Objective weights; defaults to :class:`ObjectiveWeights`.
    temperature
        Initial temperature of every contrastive loss (learned, log-parameterised).
    temperature_range
        The learned temperatures are clamped to this range.
    gene_ratio, token_ratio
        Fractions of measured genes and backbone tokens hidden for masked modelling (see :func:`~storm.train.make_masks`).
    model
        The model being trained; needed when ``niche_denoising`` > 0.
    denoising_target
        What niche denoising regresses, from the centre's clean expression:

        * ``"sketch"`` (default): the expression standardised with the slide's statistics and restricted to the slide's
          half-whitened principal axes, as the ``"panel"`` gene branch reads it, projected onto fixed random gene
          vectors (``SKETCH_SEED``; one per vocabulary gene, the same in every run) and scaled to unit mean square
          over the batch. A random projection keeps the distances between spots (Johnson–Lindenstrauss), so the
          target holds the slide's own geometry whatever the model has learnt: on a tissue that pretraining never
          saw, adaptation keeps the axes that separate its regions.
        * ``"gene_branch"``: the centre's gene token as the model's gene branch encoded it when training started (a
          frozen copy). From random weights this is also a random map of the whitened expression; from pretrained
          weights it keeps the pretrained geometry (the recipe of the shipped default checkpoint).
    """

    def __init__(
        self,
        weights: ObjectiveWeights | None = None,
        *,
        temperature: float = 0.07,
        temperature_range: tuple[float, float] = (0.01, 1.0),
        gene_ratio: float = 0.15,
        token_ratio: float = 0.5,
        model: nn.Module | None = None,
        denoising_target: str = "sketch",
    ) -> None:
        super().__init__()
        low, high = temperature_range
        if not 0 < low <= temperature <= high:
            raise ValueError(
                f"`temperature` ({temperature!r}) must lie in `temperature_range` ({low!r}, {high!r}) with 0 < low."
            )
        self.weights = ObjectiveWeights() if weights is None else weights
        self.log_temperature = nn.Parameter(torch.full((len(_TEMPERATURES),), math.log(temperature)))
        self.log_temperature_range = (math.log(low), math.log(high))
        self.gene_ratio = gene_ratio
        self.token_ratio = token_ratio
        if denoising_target not in DENOISING_TARGETS:
            raise ValueError(f"`denoising_target` must be one of {DENOISING_TARGETS}, got {denoising_target!r}.")
        self.denoising_target = denoising_target
        self.teacher: nn.Module | None = None
        self.denoising_head: nn.Module | None = None
        self.register_buffer("sketch", None, persistent=False)  # (vocabulary, dim) gene vectors of "sketch"
        if self.weights.niche_denoising > 0:
            if model is None:
                raise ValueError("`niche_denoising` needs the `model` being trained (its gene vocabulary and width).")
            core = getattr(model, "module", model)
            if denoising_target == "gene_branch":
                self.teacher = copy.deepcopy(core.gene).requires_grad_(False).eval()
            else:
                vocab, dim = core.gene.gene_embedding.weight.shape
                self.sketch = torch.randn(vocab, dim, generator=torch.Generator().manual_seed(SKETCH_SEED))
            self.denoising_head = nn.Linear(core.config.dim, core.config.dim)
        self.view_head: nn.Module | None = None
        if self.weights.image_views > 0 and model is not None:
            dim = getattr(model, "module", model).config.dim
            self.view_head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def train(self, mode: bool = True) -> StormObjectives:
        """Set training mode; the teacher of ``niche_denoising`` always stays in evaluation mode."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the loss components (the keys of the returned dict besides ``"total"``)."""
        return ObjectiveWeights.names()

    @property
    def temperatures(self) -> dict[str, float]:
        """Current (clamped) temperature of each contrastive quantity."""
        return {name: float(self._temperature(name).detach()) for name in _TEMPERATURES}

    def _temperature(self, name: str) -> torch.Tensor:
        log_t = self.log_temperature[_TEMPERATURES.index(name)].float()
        return log_t.clamp(*self.log_temperature_range).exp()

    def _contrast(self, a: torch.Tensor | None, b: torch.Tensor | None, valid: torch.Tensor, name: str):
        if a is None or b is None or int(valid.sum()) < 2:
            return None
        return info_nce(a[valid], b[valid], self._temperature(name))

    def forward(
        self,
        model: nn.Module,
        batch: Mapping[str, Any],
        *,
        stage: str = "joint",
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and its components for one niche batch.

        Parameters
        ----------
        model
            A :class:`~storm.models.StormModel` (or a wrapper such as DDP with the model as ``.module``).
        batch
            A niche batch: the inputs of :meth:`~storm.models.StormModel.forward` (other keys are ignored).
        stage
            ``"warmup"`` (modality-specific masked modelling) or ``"joint"`` (all objectives).
        generator
            Source of the masks' randomness; the same seed gives the same losses.

        Returns
        -------
        The weighted total (a scalar that always supports ``backward``) and ``{"total": …, name: …}`` floats with each
        unweighted component that was computed (objectives without data in this batch, e.g. image ones on an
        expression-only slide, are absent).
        """
        if stage not in STAGES:
            raise ValueError(f"`stage` must be one of {STAGES}, got {stage!r}.")
        core = getattr(model, "module", model)
        niches = _Niches(batch, core)
        w = self.weights
        masks = make_masks(
            niches.as_batch(),
            None if niches.features is None else niches.features.shape[2],
            gene_ratio=self.gene_ratio if w.masked_gene > 0 else 0.0,
            token_ratio=self.token_ratio if w.masked_image > 0 else 0.0,
            generator=generator,
        )
        losses = self._warmup(model, niches, masks) if stage == "warmup" else self._joint(model, niches, masks)
        if w.niche_denoising > 0 and niches.has_expression:
            losses["niche_denoising"] = self._niche_denoising(model, niches, generator)
        views = getattr(batch, "views", None)
        if w.image_views > 0 and views is not None:
            losses["image_views"] = self._image_views(core, views)
        total = self.log_temperature.sum() * 0.0 + 0.0  # keeps the total differentiable when nothing could be computed
        parts: dict[str, float] = {}
        with _fp32(niches):
            for name in self.names:
                loss = losses.get(name)
                weight = getattr(w, name)
                if loss is None or weight == 0:
                    continue
                total = total + weight * loss.float()
                parts[name] = float(loss.detach())
        return total, {"total": float(total.detach()), **parts}

    def _image_views(self, model: nn.Module, views: torch.Tensor) -> torch.Tensor:
        """InfoNCE between the views of each tissue crop: (V, n, H, W, 3) uint8, V = 2 or 3 (with context)."""
        if self.view_head is None:
            raise ValueError("`image_views` needs the model being trained: build StormObjectives(..., model=model).")
        v, n = views.shape[:2]
        tokens, grid = model.image.backbone_tokens(views.reshape(v * n, *views.shape[2:]))
        spot, _ = model.image(tokens, grid)
        z = self.view_head(spot).float().view(v, n, -1)
        pairs = [(0, 1)] if v == 2 else [(0, 1), (0, 2), (1, 2)]
        return torch.stack([info_nce(z[a], z[b], VIEW_TEMPERATURE) for a, b in pairs]).mean()

    def _warmup(self, model: nn.Module, niches: _Niches, masks: dict[str, Any]) -> dict[str, torch.Tensor | None]:
        losses: dict[str, torch.Tensor | None] = {}
        if niches.has_image and self.weights.masked_image > 0:
            out = model(**niches.inputs(None, image=True, expression=False, image_token_mask=masks["image_token_mask"]))
            with _fp32(niches):
                losses["masked_image"] = self._masked_image(out, niches, masks)
        if niches.has_expression and self.weights.masked_gene > 0:
            out = model(**niches.inputs(None, image=False, expression=True, value_mask=masks["value_mask"]))
            with _fp32(niches):
                losses["masked_gene"] = self._masked_gene(out, niches, masks)
        return losses

    def _joint(self, model: nn.Module, niches: _Niches, masks: dict[str, Any]) -> dict[str, torch.Tensor | None]:
        w = self.weights
        both = niches.has_image and niches.has_expression
        losses: dict[str, torch.Tensor | None] = {}
        if not (niches.has_image or niches.has_expression):
            return losses
        centre_any = niches.image_valid[:, 0] | niches.expression_valid[:, 0]
        centre_both = niches.image_valid[:, 0] & niches.expression_valid[:, 0]
        # (a) one pass with every modality present and the masks
        if w.masked_gene > 0 or w.masked_image > 0 or w.spot_niche > 0 or (both and w.contrastive_spot > 0):
            out = model(
                **niches.inputs(
                    None,
                    image=niches.has_image,
                    expression=niches.has_expression,
                    image_token_mask=masks["image_token_mask"],
                    value_mask=masks["value_mask"],
                )
            )
            with _fp32(niches):
                if niches.has_image:
                    losses["masked_image"] = self._masked_image(out, niches, masks)
                if niches.has_expression:
                    losses["masked_gene"] = self._masked_gene(out, niches, masks)
                losses["spot_niche"] = self._contrast(out.embedding, out.niche_embedding, centre_any, "spot_niche")
                fused = self._contrast(out.fused_image, out.fused_gene, centre_both, "fused")
        else:
            fused = None
        if not both:
            return losses
        # (b) clean unimodal passes: cross-modal reconstruction cannot see the target modality
        image_out = gene_out = None
        rows_image = niches.image_valid.any(1).nonzero().squeeze(1)
        rows_gene = niches.expression_valid.any(1).nonzero().squeeze(1)
        if w.expression_from_image > 0 or w.contrastive_spot > 0 or w.contrastive_niche > 0:
            image_out = model(**niches.inputs(rows_image, image=True, expression=False))
        if w.image_from_expression > 0 or w.contrastive_spot > 0 or w.contrastive_niche > 0:
            gene_out = model(**niches.inputs(rows_gene, image=False, expression=True))
        with _fp32(niches):
            if image_out is not None and w.expression_from_image > 0:
                target = niches.expression_target()[rows_image]
                mask = (niches.centre_genes[rows_image] >= 0) & centre_both[rows_image, None]
                pred = niches.centre_columns(image_out.predicted_expression, rows_image)
                losses["expression_from_image"] = _masked_mse(pred, target, mask)
            if gene_out is not None and w.image_from_expression > 0:
                target = _normalise(niches.features[rows_gene, 0].float().mean(1))
                mask = centre_both[rows_gene]
                losses["image_from_expression"] = _masked_mse(gene_out.predicted_image_features, target, mask)
            if image_out is not None and gene_out is not None:
                n = niches.b
                image_emb = _scatter(image_out.image_embedding.float(), rows_image, n)
                gene_emb = _scatter(gene_out.gene_embedding.float(), rows_gene, n)
                branch = self._contrast(image_emb, gene_emb, centre_both, "spot")
                spot = [x for x in (branch, fused) if x is not None]
                losses["contrastive_spot"] = torch.stack(spot).mean() if spot else None
                niche_valid = niches.image_valid.any(1) & niches.expression_valid.any(1)
                losses["contrastive_niche"] = self._contrast(
                    _scatter(image_out.niche_embedding.float(), rows_image, n),
                    _scatter(gene_out.niche_embedding.float(), rows_gene, n),
                    niche_valid,
                    "niche",
                )
            elif fused is not None:
                losses["contrastive_spot"] = fused
        return losses

    def _masked_image(self, out: Any, niches: _Niches, masks: dict[str, Any]) -> torch.Tensor | None:
        token_mask = masks["image_token_mask"]
        if out.image_token_reconstruction is None or token_mask is None:
            return None
        mask = token_mask[:, 0] & niches.image_valid[:, 0, None]
        return _masked_mse(out.image_token_reconstruction, _normalise(out.image_token_targets), mask)

    def _masked_gene(self, out: Any, niches: _Niches, masks: dict[str, Any]) -> torch.Tensor | None:
        value_mask = masks["value_mask"]
        if out.gene_reconstruction is None or value_mask is None:
            return None
        pred = niches.centre_columns(out.gene_reconstruction)
        mask = value_mask[:, 0] & (niches.centre_genes >= 0) & niches.expression_valid[:, 0, None]
        return _masked_mse(pred, niches.standardised_centre(), mask)

    def _niche_denoising(
        self, model: nn.Module, niches: _Niches, generator: torch.Generator | None
    ) -> torch.Tensor | None:
        centre = niches.expression_valid[:, 0]
        if self.denoising_head is None or not bool(centre.any()):
            return None
        draw = uniform((niches.b,), generator, centre.device)
        value_mask = torch.zeros(niches.expression.shape, dtype=torch.bool, device=centre.device)
        value_mask[:, 0] = ((draw < DENOISING_HIDDEN) & centre)[:, None]
        out = model(**niches.inputs(None, image=niches.has_image, expression=True, value_mask=value_mask))
        with torch.no_grad():
            target = self._sketch_of(niches) if self.teacher is None else self._teacher_of(niches)
        with _fp32(niches):
            return (self.denoising_head(out.embedding.float()) - target.float()).pow(2).mean(-1)[centre].mean()

    def _sketch_of(self, niches: _Niches) -> torch.Tensor:
        """The ``"sketch"`` target (B, dim): random projection of the centres' whitened expression, unit mean square."""
        z = niches.whitened_centre()
        if niches.shared:
            known = niches.gene_index >= 0
            h = (z @ self.sketch[niches.gene_index.clamp(min=0)]) / known.sum().clamp(min=1).float().sqrt()
        else:
            known = niches.centre_genes >= 0
            vectors = self.sketch[niches.centre_genes.clamp(min=0)]
            h = torch.einsum("bg,bgd->bd", z, vectors) / known.sum(1, keepdim=True).clamp(min=1).float().sqrt()
        scale = h[niches.expression_valid[:, 0]].pow(2).mean().sqrt().clamp(min=1e-6)
        return h / scale

    def _teacher_of(self, niches: _Niches) -> torch.Tensor:
        """The ``"gene_branch"`` target (B, dim): the centres' gene tokens from the frozen copy of the gene branch."""
        return self.teacher(
            niches.expression[:, 0],
            niches.gene_index if niches.shared else niches.centre_genes,
            gene_mean=niches.gene_mean,
            gene_std=niches.gene_std,
            components=niches.gene_components,
            component_scale=niches.component_scale,
            valid=niches.expression_valid[:, 0],
        )
