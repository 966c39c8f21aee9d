"""A pretraining corpus: many slides of any platform and resolution, resolved once, with niche indices in µm."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._logging import logger
from ._corpus_slide import CorpusSlide, build_slide

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

    from ..io import Slide
    from ..models import GeneVocab

    Source = SpatialData | AnnData | Slide | str | Path


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
            ``storm.data._expression``); :meth:`for_model` takes the model's ``gene_axes``.
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
        from ..io._where import Where
        from ..models import GeneVocab

        sources = _as_list(sources)
        if not sources:
            raise ValueError("The corpus is empty: pass at least one SpatialData or path to a SpatialData .zarr store.")
        _check_geometry(tile_px, tile_um, niche_size)
        from ..models._config import GENE_AXES

        if gene_axes not in GENE_AXES:
            raise ValueError(f"`gene_axes` must be one of {GENE_AXES}, got {gene_axes!r}.")
        n = len(sources)
        where = Where(
            table_key=table_key,
            image_key=image_key,
            shapes_key=shapes_key,
            coordinate_system=coordinate_system,
            um_per_px=um_per_px,
            platform=platform,
            layer=layer,
        )
        per_slide = {key: _per_slide(value, key, n) for key, value in where.kwargs().items()}
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
                    build_slide(
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
