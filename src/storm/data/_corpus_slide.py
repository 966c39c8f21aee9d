"""One slide of a corpus (:class:`CorpusSlide`) and how it is built from a resolved slide.

Its tiles or encoder features, normalised expression and whitening axes, and niches; the checks leave out an unusable
image or expression matrix with a message saying why and what to pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._logging import logger
from ..io._counts import normalised_reason
from ._expression import column_moments, log1p_cp10k, residual_axes, whitening_axes
from ._neighbours import niche_neighbours, spot_ties

if TYPE_CHECKING:
    from scipy import sparse

    from ..io import Slide
    from ..models import GeneVocab
    from ..pp import TileSet


@dataclass
class CorpusSlide:
    """One slide of a :class:`~storm.data.Corpus`: everything a niche needs, with pixels read lazily.

    Attributes
    ----------
    name
        Unique name of the slide in the corpus (file stem, library id, or ``slide<i>``).
    slide
        The resolved slide (:func:`storm.io.resolve`).
    tiles
        Lazy tiles of every spot (in the order of ``slide.obs_names``); ``None`` for slides without an image.
    expression
        ``(n_spots, n_genes_in_vocab)`` CSR float32 log1p(CP10k) expression of the genes found in the vocabulary
        (library sizes are taken over all genes of the table); ``None`` without genes in the vocabulary.
    gene_index
        ``(n_genes_in_vocab,)`` int64 vocabulary index of each column of ``expression``.
    expression_mask
        ``(n_spots,)`` whether the spot has expression: genes in the vocabulary with a positive total.
    gene_mean, gene_std
        ``(n_genes_in_vocab,)`` float32 mean and standard deviation of each column of ``expression`` over the spots
        with expression (the per-slide standardisation of the model's ``"panel"`` gene encoding).
    gene_components, component_scale
        ``(n_genes_in_vocab, r)`` principal axes of the slide's expression (of its standardised Poisson residuals, or
        of ``expression`` standardised; ``gene_axes``) and ``(r,)`` the factor that halves each axis' spread on the log
        scale (the per-slide whitening of the ``"panel"`` gene encoding; ``r = 0`` without it).
    neighbours
        ``(n_spots, niche_size + 1)`` int64 spot positions of each niche, the centre first, then its neighbours by
        increasing distance in µm; ``-1`` pads slides with fewer than ``niche_size + 1`` spots.
    n_genes
        Genes in the slide's table (before alignment to the vocabulary).
    expression_error
        Why the slide's expression is not used although it has genes (normalised values instead of raw counts), as a
        message that names the fix; ``None`` otherwise.
    image_error
        Why the slide's image is not used although it has one (not a brightfield RGB image: fluorescence, grayscale),
        as a message naming the image and the fix; ``None`` otherwise.
    features
        ``(n_spots, C)`` float32 features of a frozen pathology encoder (for a model whose image branch is one), read
        from the slide or computed once and kept there (:func:`storm.data.spot_features`); ``None`` otherwise.
    features_provenance
        The encoder, weights hash and geometry of ``features``.
    """

    name: str
    slide: Slide
    tiles: TileSet | None
    expression: sparse.csr_matrix | None
    gene_index: np.ndarray
    expression_mask: np.ndarray
    neighbours: np.ndarray
    n_genes: int
    gene_mean: np.ndarray | None
    gene_std: np.ndarray | None
    gene_components: np.ndarray | None
    component_scale: np.ndarray | None
    expression_error: str | None = None
    image_error: str | None = None
    features: np.ndarray | None = None
    features_provenance: dict[str, Any] | None = None

    @property
    def n_spots(self) -> int:
        """Number of spots."""
        return self.slide.n_spots

    @property
    def has_image(self) -> bool:
        """Whether the slide has an H&E image (and so tiles, or encoder features)."""
        return self.tiles is not None or self.features is not None

    @property
    def has_expression(self) -> bool:
        """Whether the slide has genes in the vocabulary."""
        return self.expression is not None

    def niche_offsets_um(self, spots: np.ndarray) -> np.ndarray:
        """``(len(spots), S, 2)`` float32 µm offsets ``(dx, dy)`` of each niche's spots from its centre (0 at padding)."""
        niches = self.neighbours[spots]
        xy = self.slide.spot_xy_um
        offsets = xy[np.maximum(niches, 0)] - xy[spots][:, None, :]
        offsets[niches < 0] = 0.0
        return offsets.astype(np.float32)


def build_slide(
    name: str,
    slide: Slide,
    var_names: np.ndarray,
    vocab: GeneVocab,
    tile_px: int,
    tile_um: float,
    niche_size: int,
    gene_components: int,
    gene_axes: str,
    max_upsample: float,
    encoder: dict[str, Any] | None = None,
) -> CorpusSlide:
    from ..pp import TileSet

    tiles = features = None
    image_error = not_brightfield(name, slide)
    if encoder is not None:
        features, coarse = _encoder_features(name, slide, encoder, max_upsample, usable=image_error is None)
        image_error = image_error or coarse
    elif image_error is None and slide.has_image:
        image_error = too_coarse(name, slide, tile_um / tile_px, "the tiles", max_upsample) or smaller_than_a_tile(
            name, slide, tile_um
        )
        if image_error is None:
            tiles = TileSet(slide, tile_px=int(tile_px), tile_um=float(tile_um))
    if image_error is not None:
        logger.warning("%s", image_error)
    expression, gene_index, mask = None, np.zeros(0, dtype=np.int64), np.zeros(slide.n_spots, dtype=bool)
    gene_mean = gene_std = components = component_scale = None
    counts = slide.counts() if len(var_names) else None
    error = _normalised_error(name, slide, counts) if counts is not None else None
    if len(var_names) and error is None:
        known = np.asarray(vocab.align(var_names).indices)
        columns = np.flatnonzero(known >= 0)
        if len(columns) == 0:
            logger.warning(
                "slide %r: none of its %d genes is in the vocabulary; it trains on images only", name, len(known)
            )
        else:
            if len(columns) < 0.5 * len(known):
                logger.warning("slide %r: only %d of %d genes are in the vocabulary", name, len(columns), len(known))
            normalised = log1p_cp10k(counts)
            expression = normalised[:, columns].tocsr()
            gene_index = known[columns].astype(np.int64)
            mask = np.asarray(expression.getnnz(axis=1) > 0)
            measured = expression[mask] if mask.any() else expression
            gene_mean, gene_std = column_moments(measured)
            if gene_axes == "residuals":
                from scipy import sparse

                raw = sparse.csr_matrix(counts)[:, columns].tocsr()
                components, component_scale = residual_axes(raw[mask] if mask.any() else raw, gene_components)
            else:
                components, component_scale = whitening_axes(measured, gene_mean, gene_std, gene_components)
    return CorpusSlide(
        name=name,
        slide=slide,
        tiles=tiles,
        expression=expression,
        gene_index=gene_index,
        expression_mask=mask,
        neighbours=niche_neighbours(
            np.asarray(slide.spot_xy_um, dtype=float), niche_size, ties=spot_ties(slide.obs_names)
        ),
        n_genes=len(var_names),
        gene_mean=gene_mean,
        gene_std=gene_std,
        gene_components=components,
        component_scale=component_scale,
        expression_error=error,
        image_error=image_error,
        features=None if features is None else features.values,
        features_provenance=None if features is None else features.provenance,
    )


def _encoder_features(
    name: str, slide: Slide, encoder: dict[str, Any], max_upsample: float, usable: bool
) -> tuple[Any, str | None]:
    """The slide's encoder features (read or computed; ``None`` without them and a usable image), and why not.

    The reason is set when the image is too coarse for the encoder's input (``None`` otherwise).
    """
    from ..models._pathology import get_spec
    from ._features import read_features, spot_features

    spec = get_spec(encoder["encoder"])
    if not slide.has_image or not usable:
        return read_features(slide, spec), None
    if read_features(slide, spec) is None:
        coarse = too_coarse(name, slide, spec.um_per_px, f"{spec.name}'s input", max_upsample)
        if coarse is not None:
            return None, coarse
    return spot_features(slide, spec, weights=encoder["weights"], expected_sha256=encoder["expected_sha256"]), None


def not_brightfield(name: str, slide: Slide) -> str | None:
    """Why the slide's image cannot feed storm's H&E branch (a message naming the image and the fix), or ``None``."""
    problem = slide.image_problem
    if problem is None:
        return None
    image_key = slide.keys.get("image_key")
    others = [k for k in getattr(slide.sdata, "images", {}) if k != image_key]
    available = f"its other images: {others}" if others else "the data holds no other image"
    return (
        f"Slide {name!r}: image {image_key!r} is not used by storm's H&E branch: {problem}. Pass the brightfield H&E "
        f"image with `image_key=` ({available}); without one, storm uses the slide's expression only."
    )


def too_coarse(name: str, slide: Slide, target_um_per_px: float, what: str, max_upsample: float) -> str | None:
    """Why the slide's image is too coarse for ``target_um_per_px`` (more than ``max_upsample`` times), or ``None``."""
    upsample = slide.um_per_px / target_um_per_px
    if upsample <= max_upsample:
        return None
    return (
        f"Slide {name!r}: its image {slide.keys.get('image_key')!r} ({slide.um_per_px:.3g} µm/px) is {upsample:.1f}x "
        f"coarser than {what} ({target_um_per_px:.3g} µm/px), more than the {max_upsample:g}x storm upsamples, so "
        "storm's H&E branch does not use it. Pass the full-resolution H&E with `image_key=` (not a downscaled "
        "'hires' or 'lowres' image), or the true scale with `um_per_px=` if storm's is wrong; without them, storm uses "
        "the slide's expression only."
    )


def smaller_than_a_tile(name: str, slide: Slide, tile_um: float) -> str | None:
    """Why the slide's image cannot hold one of the model's tiles (``tile_um`` wider than it), or ``None``."""
    w_um, h_um = slide.extent_um
    if tile_um <= max(w_um, h_um):
        return None
    return (
        f"Slide {name!r}: its image {slide.keys.get('image_key')!r} ({w_um:.4g} x "
        f"{h_um:.4g} µm at {slide.um_per_px:.4g} µm/px) is smaller than one of the model's tiles "
        f"({tile_um:g} µm), so storm's H&E branch does not use it. Pass the whole H&E with `image_key=`, or the true "
        "scale with `um_per_px=` if storm's is wrong; without them, storm uses the slide's expression only."
    )


def _normalised_error(name: str, slide: Slide, counts: Any) -> str | None:
    """The refusal for a slide whose expression matrix holds normalised values, or ``None`` for raw counts."""
    reason = normalised_reason(counts)
    if reason is None:
        return None
    where = "X" if slide.layer is None else f"layers[{slide.layer!r}]"
    return (
        f"slide {name!r}: {where} holds normalised expression ({reason}), not raw counts; pass `layer=` naming the "
        "layer with raw counts (keep them with `adata.layers['counts'] = adata.X.copy()` before normalising)."
    )
