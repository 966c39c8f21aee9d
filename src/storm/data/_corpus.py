"""A pretraining corpus: many slides of any platform and resolution, resolved once, with niche indices in µm."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._logging import logger
from ..io._counts import normalised_reason
from ._expression import column_moments, log1p_cp10k, residual_axes, whitening_axes
from ._neighbours import niche_neighbours, spot_ties

if TYPE_CHECKING:
    from anndata import AnnData
    from scipy import sparse
    from spatialdata import SpatialData

    from ..io import Slide
    from ..models import GeneVocab
    from ..pp import TileSet

    Source = SpatialData | AnnData | Slide | str | Path


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


class Corpus:
    """Slides to pretrain on: a mix of platforms, resolutions and modalities, indexed spot by spot.

    Build it with :meth:`from_sources`. Spots are numbered globally, slide after slide (``offsets`` gives where each
    slide starts); :class:`~storm.data.NicheDataset` turns a spot into its niche. Nothing is written into the
    sources, and no pixels are held in memory: tiles are read on access through :class:`~storm.pp.TileSet`.

    Attributes
    ----------
    slides
        One :class:`~storm.data.CorpusSlide` per source, in order.
    vocab
        The gene vocabulary expression is aligned to.
    tile_px, tile_um
        Tile geometry (pixels, µm).
    niche_size
        Neighbours K per niche (a niche has K + 1 spots, the centre first).
    offsets
        ``(n_slides + 1,)`` global index of each slide's first spot, then the total.
    """

    def __init__(
        self, slides: list[CorpusSlide], *, vocab: GeneVocab, tile_px: int, tile_um: float, niche_size: int
    ) -> None:
        self.slides = slides
        self.vocab = vocab
        self.tile_px = tile_px
        self.tile_um = tile_um
        self.niche_size = niche_size
        self.offsets = np.concatenate([[0], np.cumsum([s.n_spots for s in slides])]).astype(np.int64)

    @classmethod
    def from_sources(
        cls,
        sources: Source | Sequence[Source],
        *,
        vocab: GeneVocab | None = None,
        tile_px: int = 224,
        tile_um: float = 112.0,
        niche_size: int = 8,
        gene_components: int = 0,
        gene_axes: str = "residuals",
        table_key: str | Sequence[str | None] | None = None,
        image_key: str | Sequence[str | None] | None = None,
        shapes_key: str | Sequence[str | None] | None = None,
        um_per_px: float | Sequence[float | None] | None = None,
        platform: str | Sequence[str | None] | None = None,
        coordinate_system: str | Sequence[str | None] | None = None,
        layer: str | Sequence[str | None] | None = None,
        names: Sequence[str] | None = None,
        require_images: bool = False,
        require_expression: bool = False,
        max_upsample: float = 4.0,
        image_encoder: str | None = None,
        encoder_weights: str | None = None,
        encoder_sha256: str | None = None,
    ) -> Corpus:
        """Resolve, tile, normalise and index every slide of a corpus.

        For each slide: :func:`storm.io.resolve` (errors name the slide), lazy tiles when it has an H&E image,
        log1p(CP10k) expression kept sparse, gene alignment to ``vocab``, and for every spot its ``niche_size``
        nearest spots by distance in µm.

        Parameters
        ----------
        sources
            SpatialData objects, squidpy-style AnnData, resolved :class:`~storm.io.Slide` objects, or paths to
            SpatialData ``.zarr`` stores (read with :func:`spatialdata.read_zarr`); one source or a list.
        vocab
            Gene vocabulary to align to (a pretrained model's ``model.vocab``). Default: the union of the genes of
            all slides (:meth:`~storm.models.GeneVocab.from_genes`); for a corpus without any genes, a one-entry
            placeholder.
        tile_px, tile_um
            Tile side in pixels and in µm (default 224 px / 112 µm, 0.5 µm/px).
        niche_size
            Neighbours K around each centre spot.
        gene_components
            Principal axes of each slide's standardised expression kept for the whitening of the ``"panel"`` gene
            encoding (default 0: standardise only; :meth:`for_model` takes the model's ``gene_components``).
        gene_axes
            Where those axes come from: ``"residuals"`` (default) the slide's Poisson residuals standardised per
            gene, ``"log1p"`` the standardised log1p(CP10k) expression (``residual_axes`` and ``whitening_axes`` in
            ``storm.data._corpus``); :meth:`for_model` takes the model's ``gene_axes``.
        table_key, image_key, shapes_key, um_per_px, platform, coordinate_system, layer
            Passed to :func:`storm.io.resolve`: one value for all slides, or a list with one per source (``layer``:
            the layer of raw counts, default ``X``; a resolved :class:`~storm.io.Slide` keeps its own).
        names
            Slide names (default: file stem of a path, the table's library id, or ``slide<i>``).
        require_images
            Raise unless at least one slide has an H&E image (for image objectives).
        require_expression
            Raise unless at least one slide has genes in the vocabulary (for expression objectives).
        max_upsample
            Images coarser than ``max_upsample`` times the tile resolution (``tile_um / tile_px``) are left out, with
            a warning, and their slide trains on expression only: e.g. Visium lowres PNGs (~16 µm/px) or 2,000-px
            display images, which would be blown up into blurred tiles with no cellular morphology.
        image_encoder
            A frozen pathology encoder (:func:`storm.models.load_encoder` name): each slide's spots get its features,
            read from the slide when there (storm's cache, LazySlide-style tables, ``obsm``), else computed once at
            the encoder's published input and kept in the slide and its store; no tiles are read afterwards.
        encoder_weights
            Local weights file of that encoder (gated encoders offline).
        encoder_sha256
            Refuse features of other weights (a model's ``image_encoder_sha256``).

        Returns
        -------
        The corpus.

        Examples
        --------
        >>> import storm as st
        >>> from storm.data import Corpus
        >>> corpus = Corpus.from_sources([st.datasets.demo()], tile_px=64, niche_size=6)
        >>> corpus.stats()["n_spots"], corpus.slides[0].neighbours.shape
        (151, (151, 7))
        """
        from ..io._resolve import resolve_args
        from ..models import GeneVocab

        sources = _as_list(sources)
        if not sources:
            raise ValueError("The corpus is empty: pass at least one SpatialData or path to a SpatialData .zarr store.")
        _check_geometry(tile_px, tile_um, niche_size)
        from ..models._config import GENE_AXES

        if gene_axes not in GENE_AXES:
            raise ValueError(f"`gene_axes` must be one of {GENE_AXES}, got {gene_axes!r}.")
        n = len(sources)
        where = resolve_args(locals())
        per_slide = {key: _per_slide(value, key, n) for key, value in where.items()}
        if not max_upsample >= 1:
            raise ValueError(f"`max_upsample` must be at least 1, got {max_upsample!r}.")
        if names is not None and (isinstance(names, str) or len(names) != n):
            raise ValueError(f"`names` must be a list with one name per source ({n}), got {names!r}.")

        resolved: list[tuple[str, Slide]] = []
        for i, source in enumerate(sources):
            label = _label(source, i, None if names is None else names[i])
            try:
                slide = _resolve(source, **{k: v[i] for k, v in per_slide.items()})
            except (ValueError, TypeError, KeyError, OSError) as error:
                raise _in_slide(error, i, label) from error
            resolved.append((label, slide))
        labels = _unique([label for label, _ in resolved])

        var_names = [np.asarray(slide.table.var_names, dtype=str) for _, slide in resolved]
        if vocab is None:
            with_genes = [v for v in var_names if len(v)]
            vocab = GeneVocab.from_genes(*with_genes) if with_genes else GeneVocab(["<none>"])

        slides = []
        for i, ((_, slide), name, genes) in enumerate(zip(resolved, labels, var_names, strict=True)):
            try:
                slides.append(
                    _build_slide(
                        name,
                        slide,
                        genes,
                        vocab,
                        tile_px,
                        tile_um,
                        niche_size,
                        gene_components,
                        gene_axes,
                        max_upsample,
                        encoder=None
                        if image_encoder is None
                        else {"encoder": image_encoder, "weights": encoder_weights, "expected_sha256": encoder_sha256},
                    )
                )
            except (ValueError, TypeError, KeyError, OSError) as error:
                raise _in_slide(error, i, name) from error
        corpus = cls(slides, vocab=vocab, tile_px=int(tile_px), tile_um=float(tile_um), niche_size=int(niche_size))
        corpus._check(require_images=require_images, require_expression=require_expression)
        logger.debug("corpus:\n%r", corpus)
        return corpus

    @classmethod
    def for_model(cls, sources: Source | Sequence[Source], model: Any, **kwargs: Any) -> Corpus:
        """:meth:`from_sources` at the model's geometry (tile px, tile µm, niche size, gene axes) and vocabulary.

        Every ``st.tl`` tool builds its niches this way, so geometry and genes come from the model's config only.

        Examples
        --------
        >>> import storm as st
        >>> from storm.models import GeneVocab, StormConfig, StormModel
        >>> sdata = st.datasets.demo()
        >>> model = StormModel(StormConfig.from_preset("tiny", image_size=32), GeneVocab.from_genes(sdata["table"].var_names))
        >>> Corpus.for_model(sdata, model).tile_px
        32
        """
        config = model.config
        return cls.from_sources(
            sources,
            vocab=model.vocab,
            tile_px=config.image_size,
            tile_um=config.tile_um,
            niche_size=config.niche_size,
            gene_components=config.slide_axes,
            gene_axes=config.gene_axes,
            image_encoder=config.image_encoder,
            encoder_sha256=config.image_encoder_sha256,
            **kwargs,
        )

    @property
    def encoder_sha256(self) -> str | None:
        """Hash of the pathology-encoder weights behind the slides' features (``None``: no encoder, or unknown).

        Examples
        --------
        >>> import storm as st
        >>> Corpus.from_sources(st.datasets.demo(), tile_px=32).encoder_sha256 is None
        True
        """
        hashes = {
            s.features_provenance.get("weights_sha256")
            for s in self.slides
            if s.features_provenance is not None and s.features_provenance.get("weights_sha256")
        }
        if len(hashes) > 1:
            raise ValueError(
                f"The slides' encoder features come from {len(hashes)} different weights; recompute them with one "
                "encoder (st.tl.feature_extraction(..., recompute=True)) before training on them together."
            )
        return next(iter(hashes), None)

    def check_model(self, model: Any) -> None:
        """Raise unless ``model`` was built for this corpus's tile geometry, niche size and gene vocabulary."""
        config = model.config
        wrong = [
            f"{name} {mine!r} (model: {theirs!r})"
            for name, mine, theirs in (
                ("tile_px", self.tile_px, config.image_size),
                ("tile_um", self.tile_um, config.tile_um),
                ("niche_size", self.niche_size, config.niche_size),
            )
            if mine != theirs
        ]
        encoders = {s.features_provenance.get("encoder") for s in self.slides if s.features_provenance is not None}
        if encoders and encoders != {config.image_encoder}:
            wrong.append(f"features of encoder {sorted(encoders)} (model: {config.image_encoder!r})")
        if model.vocab is not None and list(model.vocab.symbols) != list(self.vocab.symbols):
            wrong.append(f"a {len(self.vocab)}-gene vocabulary (model: {len(model.vocab)} genes)")
        if wrong:
            raise ValueError(
                "The model does not fit the corpus: the corpus has " + ", ".join(wrong) + ". Build the corpus with "
                "`Corpus.for_model(sources, model)`, or train a new model on this corpus (model=None)."
            )

    def _check(self, *, require_images: bool, require_expression: bool) -> None:
        with_genes = [s for s in self.slides if s.n_genes > 0 and s.expression_error is None]
        if with_genes and not any(s.has_expression for s in self.slides):
            total = sum(s.n_genes for s in with_genes)
            raise ValueError(
                f"None of the {total} genes of the {len(with_genes)} slide(s) with expression is in the "
                f"{len(self.vocab)}-gene vocabulary (0 of {total} = 0.0% overlap; e.g. "
                f"{with_genes[0].slide.table.var_names[:3].tolist()} vs {self.vocab.symbols[:3].tolist()}). Use gene "
                "symbols or Ensembl IDs as var_names (a new model's vocabulary can also be built from the corpus: "
                "storm.data.Corpus(..., vocab=None))."
            )
        if require_images and not any(s.has_image for s in self.slides):
            refused = [s.image_error for s in self.slides if s.image_error is not None]
            if refused:
                raise ValueError(refused[0])
            raise ValueError(
                f"None of the {len(self.slides)} slide(s) of the corpus has an H&E image, but the image objectives need "
                "images: add slides with an image (check `image_key`), or train on expression only."
            )
        if require_expression and not any(s.has_expression for s in self.slides):
            refused = [s.expression_error for s in self.slides if s.expression_error is not None]
            if refused:
                raise ValueError(refused[0])
            raise ValueError(
                f"None of the {len(self.slides)} slide(s) of the corpus has expression, but the expression objectives "
                "need it: add slides with a count table, or train on images only."
            )
        for s in self.slides:
            if not s.has_image and s.expression_error is not None:
                raise ValueError(s.expression_error)
            if not s.has_image and not s.has_expression:
                why = "no genes in the vocabulary" if s.n_genes else "no genes"
                if s.image_error is not None:
                    raise ValueError(f"{s.image_error} It has {why} either, so storm has nothing to read.")
                raise ValueError(
                    f"Slide {self.slides.index(s)} ({s.name!r}) has no H&E image and {why}, so storm has nothing to "
                    "read: pass the H&E with `image_key=`, or a table holding the slide's counts (when training, drop "
                    "the slide from the corpus)."
                )

    # -- indexing -------------------------------------------------------------------------------------------------
    @property
    def n_spots(self) -> int:
        """Spots of all slides."""
        return int(self.offsets[-1])

    def __len__(self) -> int:
        return self.n_spots

    def locate(self, index: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slide number and spot position within the slide of global spot indices.

        Examples
        --------
        >>> import storm as st
        >>> corpus = Corpus.from_sources(st.datasets.demo(), tile_px=32)
        >>> corpus.locate([0, 150])
        (array([0, 0]), array([  0, 150]))
        """
        index = np.asarray(index, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= self.n_spots):
            raise IndexError(f"Spot index out of range for a corpus of {self.n_spots} spots: {index.tolist()}.")
        slide = np.searchsorted(self.offsets, index, side="right") - 1
        return slide, index - self.offsets[slide]

    # -- description ----------------------------------------------------------------------------------------------
    def expression_reference(self) -> tuple[np.ndarray, np.ndarray]:
        """Each vocabulary gene's mean and within-slide standard deviation of log1p(CP10k) over the corpus.

        Slides weigh by their spots with expression: the mean is the weighted mean of the slides' means, the standard
        deviation the square root of the weighted mean of the slides' variances (the spread of a gene within one
        slide, not across slides). Genes no slide measures get mean 0 and standard deviation 1.

        Returns
        -------
        ``(mean, std)``, float32 arrays of the vocabulary's length.

        Examples
        --------
        >>> import storm as st
        >>> from storm.data import Corpus
        >>> corpus = Corpus.from_sources([st.datasets.demo()], tile_px=32)
        >>> mean, std = corpus.expression_reference()
        >>> mean.shape == (len(corpus.vocab),), bool((std >= 0).all())
        (True, True)
        """
        total = np.zeros(len(self.vocab))
        first = np.zeros(len(self.vocab))
        second = np.zeros(len(self.vocab))
        for s in self.slides:
            if s.gene_mean is None or s.gene_std is None:
                continue
            n = float(s.expression_mask.sum())
            np.add.at(total, s.gene_index, n)
            np.add.at(first, s.gene_index, n * s.gene_mean)
            np.add.at(second, s.gene_index, n * s.gene_std.astype(np.float64) ** 2)
        seen = total > 0
        mean = np.divide(first, total, out=np.zeros_like(first), where=seen)
        std = np.sqrt(np.divide(second, total, out=np.ones_like(second), where=seen))
        return mean.astype(np.float32), std.astype(np.float32)

    def stats(self) -> dict[str, Any]:
        """Corpus statistics as plain data (stored with checkpoints).

        Returns
        -------
        ``n_slides``, ``n_spots``, ``n_spots_with_image``, ``n_spots_with_expression``, ``n_genes_vocab``, the tile
        geometry and ``niche_size``, and ``slides``: per slide ``name``, ``spots``, ``genes``, ``genes_in_vocab``,
        ``um_per_px``, ``um_per_px_source``, ``has_image`` and ``spots_with_expression``.
        """
        slides = [
            {
                "name": s.name,
                "spots": int(s.n_spots),
                "genes": int(s.n_genes),
                "genes_in_vocab": int(len(s.gene_index)),
                "um_per_px": float(s.slide.um_per_px),
                "um_per_px_source": str(s.slide.um_per_px_source),
                "has_image": bool(s.has_image),
                "spots_with_expression": int(s.expression_mask.sum()),
            }
            for s in self.slides
        ]
        return {
            "n_slides": len(self.slides),
            "n_spots": self.n_spots,
            "n_spots_with_image": int(sum(s.n_spots for s in self.slides if s.has_image)),
            "n_spots_with_expression": int(sum(int(s.expression_mask.sum()) for s in self.slides)),
            "n_genes_vocab": len(self.vocab),
            "tile_px": int(self.tile_px),
            "tile_um": float(self.tile_um),
            "niche_size": int(self.niche_size),
            "slides": slides,
        }

    def __repr__(self) -> str:
        st = self.stats()
        head = (
            f"Corpus: {st['n_slides']} slides, {st['n_spots']} spots ({st['n_spots_with_image']} with image, "
            f"{st['n_spots_with_expression']} with expression), {st['n_genes_vocab']} genes in the vocabulary, "
            f"{self.tile_px} px / {self.tile_um:g} µm tiles, {self.niche_size} neighbours"
        )
        width = max([5, *(len(s["name"]) for s in st["slides"])])
        rows = [f"  {'slide':<{width}}  {'spots':>7}  {'genes':>6}  {'in vocab':>8}  {'µm/px':>7}  image"]
        shown = st["slides"] if len(st["slides"]) <= 20 else st["slides"][:10] + st["slides"][-10:]
        for k, s in enumerate(shown):
            if len(st["slides"]) > 20 and k == 10:
                rows.append(f"  ... {len(st['slides']) - 20} more")
            rows.append(
                f"  {s['name']:<{width}}  {s['spots']:>7}  {s['genes']:>6}  {s['genes_in_vocab']:>8}  "
                f"{s['um_per_px']:>7.3f}  {'yes' if s['has_image'] else 'no'}"
            )
        return "\n".join([head, *rows])


def _build_slide(
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


def _resolve(source: Any, **keys: Any) -> Slide:
    from ..io import Slide, resolve

    if isinstance(source, Slide):
        return source
    if isinstance(source, str | Path):
        import spatialdata

        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"No SpatialData store at {str(path)!r}.")
        source = spatialdata.read_zarr(path)
    return resolve(source, **keys)


def _as_list(sources: Any) -> list[Any]:
    if isinstance(sources, str | Path) or not isinstance(sources, Sequence):
        return [sources]
    return list(sources)


def _per_slide(value: Any, argument: str, n: int) -> list[Any]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        return [value] * n
    if len(value) != n:
        raise ValueError(f"`{argument}` has {len(value)} entries for {n} sources; give one value, or one per source.")
    return list(value)


def _label(source: Any, i: int, name: str | None) -> str:
    if name is not None:
        return str(name)
    if isinstance(source, str | Path):
        return Path(source).name.removesuffix(".zarr") or f"slide{i}"
    path = getattr(source, "path", None)
    if path is not None:
        return Path(path).name.removesuffix(".zarr")
    tables = getattr(source, "tables", None)
    table = next(iter(tables.values())) if tables is not None and len(tables) == 1 else None
    if table is None and hasattr(source, "uns") and hasattr(source, "obs"):
        table = source
    spatial = table.uns.get("spatial") if table is not None else None
    if isinstance(spatial, dict) and len(spatial) == 1:
        return str(next(iter(spatial)))
    return f"slide{i}"


def _unique(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    counts = {label: labels.count(label) for label in labels}
    out = []
    for label in labels:
        if counts[label] > 1:
            seen[label] = seen.get(label, 0) + 1
            out.append(f"{label}_{seen[label]}")
        else:
            out.append(label)
    return out


def _in_slide(error: Exception, i: int, name: str) -> Exception:
    message = f"corpus slide {i} ({name!r}): {error.args[0] if len(error.args) == 1 else error}"
    try:
        return type(error)(message)
    except Exception:  # noqa: BLE001 - exception types with other constructors
        return ValueError(message)


def _check_geometry(tile_px: Any, tile_um: Any, niche_size: Any) -> None:
    if isinstance(tile_px, bool) or not isinstance(tile_px, int | np.integer) or tile_px < 8:
        raise ValueError(f"`tile_px` must be an integer of at least 8 pixels, got {tile_px!r}.")
    if isinstance(tile_um, bool) or not isinstance(tile_um, int | float | np.number) or not 0 < tile_um < np.inf:
        raise ValueError(f"`tile_um` must be a positive number of microns, got {tile_um!r}.")
    if isinstance(niche_size, bool) or not isinstance(niche_size, int | np.integer) or niche_size < 0:
        raise ValueError(f"`niche_size` must be a non-negative integer (neighbours per spot), got {niche_size!r}.")
