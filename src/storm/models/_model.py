"""``StormModel``: image and gene branches, a shared niche transformer and cross-attention decoders."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .._standardise import non_negative_spread, standardised
from ._config import StormConfig
from ._encoders import GeneEncoder, ImageEncoder
from ._layers import Block, DistanceBias, Sincos2D, key_padding_bias

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._vocab import GeneVocab


@dataclass
class StormOutput:
    """What :meth:`~storm.models.StormModel.forward` returns for a batch of B niches (centre spot first).

    Attributes
    ----------
    embedding
        Joint embedding of the centre spot (B, dim): the fused tokens of whichever modalities it has.
    image_embedding, gene_embedding
        Branch embeddings of the centre spot before fusion (B, dim); ``None`` without that modality.
    niche_embedding
        Mean of all valid fused tokens of the niche (B, dim).
    fused_image, fused_gene
        Fused centre tokens per modality (B, dim); ``None`` without that modality.
    predicted_expression
        Image -> expression decoder: log1p expression of ``genes`` (B, G); ``None`` without images.
    predicted_image_features
        Expression -> image decoder: pooled backbone features of the centre tile (B, C); ``None`` without expression.
    gene_reconstruction
        Centre expression of ``genes`` from the fused gene token (B, G) (masked gene modelling); ``None`` without
        expression.
    image_token_reconstruction, image_token_targets
        Backbone features of the centre tile's tokens, reconstructed by the image branch and their targets (B, T, C).
    """

    embedding: torch.Tensor
    image_embedding: torch.Tensor | None
    gene_embedding: torch.Tensor | None
    niche_embedding: torch.Tensor
    fused_image: torch.Tensor | None
    fused_gene: torch.Tensor | None
    predicted_expression: torch.Tensor | None
    predicted_image_features: torch.Tensor | None
    gene_reconstruction: torch.Tensor | None
    image_token_reconstruction: torch.Tensor | None
    image_token_targets: torch.Tensor | None


class CrossDecoder(nn.Module):
    """Learned queries cross-attending to one modality's fused tokens, pooled into one vector per niche."""

    def __init__(self, config: StormConfig) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.zeros(1, config.decoder_queries, config.dim))
        nn.init.trunc_normal_(self.queries, std=0.02)
        self.blocks = nn.ModuleList(
            Block(config.dim, config.heads, config.mlp_ratio, config.dropout, cross=True)
            for _ in range(max(config.decoder_layers, 1))
        )
        self.norm = nn.LayerNorm(config.dim)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, T, dim) tokens with (B, T) validity -> (B, dim)."""
        b = tokens.shape[0]
        q = self.queries.expand(b, -1, -1).to(tokens.dtype)
        bias = key_padding_bias(valid, n_queries=q.shape[1])
        for block in self.blocks:
            q = block(q, context=tokens, context_bias=bias)
        return self.norm(q.mean(dim=1))


class GeneHead(nn.Module):
    """Expression of any subset of the vocabulary from a latent: dot product with projected gene embeddings."""

    def __init__(self, dim: int, vocab_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.bias = nn.Parameter(torch.zeros(max(vocab_size, 1)))

    def forward(self, latent: torch.Tensor, gene_embeddings: torch.Tensor, genes: torch.Tensor) -> torch.Tensor:
        """(B, dim) latent, (V, dim) embeddings, (G,) indices -> (B, G) expression (in the model's target units)."""
        weights = self.proj(gene_embeddings[genes])
        return latent @ weights.T / weights.shape[-1] ** 0.5 + self.bias[genes]


class StormModel(nn.Module):
    """The storm foundation model.

    A niche is a centre spot and its K nearest spots, with their offsets in µm. Each spot may carry an H&E tile, an
    expression profile, both or neither. The image branch (a timm backbone and shallow transformer layers) and the
    panel-agnostic gene branch make one token per spot and modality; a shared transformer attends over all tokens of
    the niche with absolute 2-D encodings of the offsets and a distance-based relative bias; cross-attention decoders
    translate image -> expression (over any genes of the vocabulary) and expression -> image features.

    Parameters
    ----------
    config
        Hyper-parameters; see :class:`StormConfig` and its presets.
    vocab
        The gene vocabulary (sets ``config.vocab_size``). Without one, ``config.vocab_size`` is used.

    Examples
    --------
    >>> import torch
    >>> from storm.models import StormConfig, StormModel
    >>> model = StormModel(StormConfig.from_preset("tiny", vocab_size=100)).eval()
    >>> out = model(image_features=torch.randn(2, 3, model.image.feature_dim), offsets_um=torch.zeros(2, 3, 2))
    >>> tuple(out.embedding.shape), out.gene_embedding is None
    ((2, 64), True)
    """

    def __init__(self, config: StormConfig, vocab: GeneVocab | None = None) -> None:
        super().__init__()
        if vocab is not None:
            config = dataclasses.replace(config, vocab_size=len(vocab))
        self.config = config
        self.vocab = vocab
        #: Where the weights came from (name, path, sha256, storm version); set by ``from_pretrained``.
        self.checkpoint_info: dict[str, Any] | None = None
        dim = config.dim
        self.image = ImageEncoder(config)
        self.gene = GeneEncoder(config, config.vocab_size)
        self.modality = nn.Parameter(torch.zeros(2, dim))
        self.centre = nn.Parameter(torch.zeros(dim))
        self.position = Sincos2D(dim, config.pos_min_um, config.pos_max_um)
        self.distance_bias = DistanceBias(config.heads)
        self.fusion = nn.ModuleList(
            Block(dim, config.heads, config.mlp_ratio, config.dropout) for _ in range(config.fusion_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.expression_decoder = CrossDecoder(config)
        self.image_decoder = CrossDecoder(config)
        self.expression_head = GeneHead(dim, config.vocab_size)
        self.reconstruction_head = GeneHead(dim, config.vocab_size)
        self.image_feature_head = nn.Linear(dim, self.image.feature_dim)
        if config.expression_target == "standardised":
            # (2, V): each gene's mean and within-slide standard deviation of log1p(CP10k) over the pretraining corpus
            vocab_rows = max(config.vocab_size, 1)
            self.register_buffer("expression_reference", torch.stack([torch.zeros(vocab_rows), torch.ones(vocab_rows)]))
        nn.init.trunc_normal_(self.modality, std=0.02)
        nn.init.trunc_normal_(self.centre, std=0.02)

    def set_expression_reference(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Set each vocabulary gene's log1p(CP10k) mean and within-slide standard deviation (``"standardised"`` target).

        :class:`~storm.train.Trainer` sets them from the corpus a model is pretrained on
        (:meth:`storm.data.Corpus.expression_reference`); they turn the decoder's standardised predictions back into
        log1p(CP10k) (:meth:`expression_to_log1p`).
        """
        if self.config.expression_target != "standardised":
            raise ValueError("This model's decoder predicts log1p(CP10k) itself; it has no expression reference.")
        reference = torch.as_tensor(np.stack([mean, std]), dtype=self.expression_reference.dtype)
        if reference.shape != self.expression_reference.shape:
            raise ValueError(
                f"The expression reference has shape {tuple(reference.shape)}, but the model expects "
                f"{tuple(self.expression_reference.shape)} (2 x vocabulary size)."
            )
        self.expression_reference.copy_(reference)

    def expression_to_log1p(self, predicted: np.ndarray, genes: Sequence[str], *, slide_scale: bool) -> np.ndarray:
        """Decoder outputs ``(n_spots, G)`` for the vocabulary genes ``genes`` (symbols) -> log1p(CP10k).

        For a ``"standardised"`` target: ``mean + z * std`` with the gene's reference (see
        :meth:`set_expression_reference`); with ``slide_scale``, each gene's predictions ``z`` are first standardised
        over the spots given (a slide), so that each gene's map spans its typical within-slide spread rather than the
        decoder's conditional mean, which shrinks towards the mean where the image says little. A ``"log1p"`` target is
        returned as predicted (``slide_scale`` does not apply). log1p(CP10k) is never negative: with ``slide_scale`` a
        gene's spread is narrowed where it would reach below 0 (``storm._standardise.non_negative_spread``, which
        keeps each gene's Pearson r); otherwise values below 0 become 0.
        """
        if self.config.expression_target != "standardised":
            return np.maximum(np.asarray(predicted, dtype=np.float32), 0.0)
        z = np.asarray(predicted, dtype=np.float64)
        index = np.asarray(self.vocab.align(list(genes)).indices)
        mean, std = self.expression_reference.detach().cpu().double().numpy()[:, index]
        if slide_scale:
            return non_negative_spread(standardised(z), mean, std)
        return np.maximum(mean + z * std, 0.0).astype(np.float32)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (all, or only those that require gradients)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def forward(
        self,
        *,
        offsets_um: torch.Tensor,
        images: torch.Tensor | None = None,
        tiles: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        tile_index: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
        expression: torch.Tensor | None = None,
        gene_index: torch.Tensor | None = None,
        gene_mean: torch.Tensor | None = None,
        gene_std: torch.Tensor | None = None,
        gene_components: torch.Tensor | None = None,
        component_scale: torch.Tensor | None = None,
        expression_mask: torch.Tensor | None = None,
        value_mask: torch.Tensor | None = None,
        image_token_mask: torch.Tensor | None = None,
        spot_mask: torch.Tensor | None = None,
        genes: torch.Tensor | None = None,
    ) -> StormOutput:
        """Encode a batch of B niches of S = K + 1 spots (centre first).

        Parameters
        ----------
        offsets_um
            (B, S, 2) spot offsets from the centre in µm.
        images
            (B, S, H, W, 3) uint8 tiles (or (B, S, 3, H, W) normalised floats).
        tiles, tile_index
            (N, H, W, 3) distinct uint8 tiles and the (B, S) row of each niche slot in them (-1: none), as in a
            :class:`~storm.models.NicheBatch`: the backbone runs once per distinct tile.
        features
            (N, C) pathology-encoder features of the distinct spots, with ``tile_index``, for a model whose image
            branch is a frozen encoder (``config.image_encoder``).
        image_features
            (B, S, C) or (B, S, T, C) precomputed backbone features, instead of ``images``.
        image_mask
            (B, S) which spots have a tile (default: all, when images are given).
        expression
            (B, S, G) log1p-normalised expression over the dataset's G genes.
        gene_index
            (G,) vocabulary index of each gene (-1 = not in the vocabulary); see ``GeneVocab.align``.
        gene_mean, gene_std
            (G,) the slide's mean and standard deviation of each gene's log1p expression, which the ``"panel"`` gene
            encoding standardises with (a :class:`~storm.models.NicheBatch` carries them); without them, those of the
            spots of this call.
        gene_components, component_scale
            (G, r) principal axes of the slide's standardised expression and (r,) their whitening factors (the
            ``"panel"`` encoding's per-slide whitening; a :class:`~storm.models.NicheBatch` carries them); without
            them, the standardised expression is used as it is.
        expression_mask
            (B, S) which spots have expression (default: all, when expression is given).
        value_mask
            (B, S, G) expression values hidden from the model (masked gene modelling).
        image_token_mask
            (B, S, T) backbone tokens hidden from the image branch (masked image modelling).
        spot_mask
            (B, S) valid spots (False pads niches with fewer neighbours).
        genes
            (G',) vocabulary indices to predict; default all.

        Returns
        -------
        :class:`StormOutput`
        """
        if tiles is not None or features is not None:
            if tile_index is None:
                raise ValueError("`tile_index` is needed with `tiles`: it says which tile fills each niche slot.")
            image_features = self.niche_features(tiles if tiles is not None else features, tile_index)
        if images is None and image_features is None and expression is None:
            raise ValueError("Pass `images`, `image_features` or `expression`: a niche needs at least one modality.")
        b, s = offsets_um.shape[:2]
        device = offsets_um.device
        spot_mask = torch.ones(b, s, dtype=torch.bool, device=device) if spot_mask is None else spot_mask
        genes = torch.arange(max(self.config.vocab_size, 1), device=device) if genes is None else genes
        tokens, valid, image_out = [], [], None
        if images is not None or image_features is not None:
            image_out = self._encode_images(images, image_features, image_token_mask, b, s)
            has = spot_mask if image_mask is None else image_mask & spot_mask
            tokens.append(image_out[0] + self.modality[0])
            valid.append(has)
        gene_tokens = None
        if expression is not None:
            if gene_index is None:
                raise ValueError("`gene_index` is needed with `expression`: align the genes with `model.vocab.align`.")
            flat_mask = None if value_mask is None else value_mask.reshape(b * s, -1)
            has = spot_mask if expression_mask is None else expression_mask & spot_mask
            gene_tokens = self.gene(
                expression.reshape(b * s, -1),
                gene_index,
                flat_mask,
                gene_mean=gene_mean,
                gene_std=gene_std,
                components=gene_components,
                component_scale=component_scale,
                valid=has.reshape(-1),
            ).view(b, s, -1)
            tokens.append(gene_tokens + self.modality[1])
            valid.append(has)

        x = torch.cat(tokens, dim=1)
        valid_all = torch.cat(valid, dim=1)
        m = len(tokens)
        positions = offsets_um.repeat(1, m, 1)
        is_centre = torch.zeros(s, device=device, dtype=x.dtype).index_fill(0, torch.tensor([0], device=device), 1.0)
        x = x + self.position(positions).to(x.dtype) + is_centre.repeat(m)[None, :, None] * self.centre
        bias = self.distance_bias(positions) + key_padding_bias(valid_all)
        for block in self.fusion:
            if self.config.gradient_checkpointing and self.training:
                x = checkpoint(block, x, bias, use_reentrant=False)
            else:
                x = block(x, bias=bias)
        x = self.norm(x)

        centres = x[:, 0::s][:, :m]  # (B, m, dim): centre token of each modality
        centre_valid = valid_all[:, 0::s][:, :m].to(x.dtype)
        embedding = (centres * centre_valid[..., None]).sum(1) / centre_valid.sum(1, keepdim=True).clamp(min=1)
        weights = valid_all.to(x.dtype)[..., None]
        niche = (x * weights).sum(1) / weights.sum(1).clamp(min=1)

        fused_image = fused_gene = predicted_expression = predicted_image = reconstruction = None
        token_recon = token_targets = None
        offset = 0
        if image_out is not None:
            fused_image = x[:, 0]
            z = self.expression_decoder(x[:, :s], valid[0])
            predicted_expression = self.expression_head(z, self.gene.gene_embedding.weight, genes)
            token_recon, token_targets = image_out[1], image_out[2]
            offset = s
        if gene_tokens is not None:
            fused_gene = x[:, offset]
            z = self.image_decoder(x[:, offset : offset + s], valid[-1])
            predicted_image = self.image_feature_head(z)
            reconstruction = self.reconstruction_head(fused_gene, self.gene.gene_embedding.weight, genes)
        return StormOutput(
            embedding=embedding,
            image_embedding=None if image_out is None else image_out[0][:, 0],
            gene_embedding=None if gene_tokens is None else gene_tokens[:, 0],
            niche_embedding=niche,
            fused_image=fused_image,
            fused_gene=fused_gene,
            predicted_expression=predicted_expression,
            predicted_image_features=predicted_image,
            gene_reconstruction=reconstruction,
            image_token_reconstruction=token_recon,
            image_token_targets=token_targets,
        )

    def niche_features(self, tiles: torch.Tensor, tile_index: torch.Tensor) -> torch.Tensor:
        """(B, S, T, C) backbone tokens of every niche slot, running the backbone once per distinct tile.

        ``tiles`` (N, H, W, 3) uint8 are a batch's distinct tiles (or, for a model on a pathology encoder, their (N, C)
        features) and ``tile_index`` (B, S) the row of each slot in them; slots without a tile (-1) get zeros.
        """
        tokens, _ = self.image.backbone_tokens(tiles)
        has = tile_index >= 0
        features = tokens.new_zeros((*tile_index.shape, *tokens.shape[1:]))
        features[has] = tokens[tile_index[has]]
        return features

    def _encode_images(
        self,
        images: torch.Tensor | None,
        features: torch.Tensor | None,
        token_mask: torch.Tensor | None,
        b: int,
        s: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Spot tokens (B, S, dim), centre token reconstructions and targets (B, T, C)."""
        if images is not None:
            flat, grid = self.image.backbone_tokens(images.reshape(b * s, *images.shape[2:]))
        else:
            flat = features.reshape(b * s, *features.shape[2:])
            flat = flat[:, None] if flat.ndim == 2 else flat
            grid = None
        mask = None if token_mask is None else token_mask.reshape(b * s, -1)
        spot_tokens, recon = self.image.forward(flat, grid, mask)
        t = flat.shape[1]
        centre = torch.arange(b, device=flat.device) * s
        return spot_tokens.view(b, s, -1), recon.view(b, s, t, -1)[:, 0], flat[centre].detach()

    def save_pretrained(self, path: str | Path, *, weights_dtype: str | None = None, **card: Any) -> Path:
        """Write a checkpoint folder: ``config.json``, ``model.safetensors``, ``vocab.tsv`` and a model card.

        ``weights_dtype="float16"`` (or ``"bfloat16"``) stores floating-point weights at half the size; loading casts
        them back to float32.
        """
        from ._checkpoint import save_pretrained

        return save_pretrained(self, path, weights_dtype=weights_dtype, **card)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "default", *, revision: str | None = None) -> StormModel:
        """Load a checkpoint by local path, ``"default"`` (bundled), cached name, or Hugging Face hub repo id.

        A subclass gets an instance of itself (``MyModel.from_pretrained("default")`` is a ``MyModel``).
        """
        from ._checkpoint import load_pretrained

        return load_pretrained(name_or_path, revision=revision, cls=cls)
