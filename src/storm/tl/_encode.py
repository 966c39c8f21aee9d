"""Run a storm model over every spot of a slide: niche batches in, embeddings and predicted expression out."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from ..data import Corpus
    from ..models import NicheBatch, StormModel

_OUTPUTS = ("embedding", "niche_embedding", "image_embedding", "gene_embedding", "predicted_expression")

#: Which modalities the model sees: the image, the expression, or both (``"auto"``: whatever the slide has).
MODALITIES = ("auto", "image", "expression", "both")


@dataclass
class Encoded:
    """Outputs of :func:`encode` for the spots of one slide, rows in the order of ``obs_names``.

    Attributes
    ----------
    obs_names
        Spot names (the slide's table rows).
    embedding
        ``(n_spots, dim)`` joint embedding of each spot from the modalities used.
    niche_embedding
        ``(n_spots, dim)`` embedding of each spot's niche.
    image_embedding, gene_embedding
        ``(n_spots, dim)`` branch embeddings before fusion; ``None`` when that modality was not used.
    predicted_expression
        ``(n_spots, len(genes))`` the decoder's expression predicted from the image, in the units of the model's
        ``expression_target`` (standardised per slide, or log1p(CP10k); :meth:`~storm.models.StormModel.expression_to_log1p`
        converts); ``None`` without images.
    genes
        Symbols of the columns of ``predicted_expression``.
    modalities
        The modalities used (``"image"``, ``"expression"`` or ``"both"``).
    """

    obs_names: np.ndarray
    embedding: np.ndarray
    niche_embedding: np.ndarray
    image_embedding: np.ndarray | None
    gene_embedding: np.ndarray | None
    predicted_expression: np.ndarray | None
    genes: np.ndarray
    modalities: str


def encode(
    source: Any,
    model: StormModel,
    *,
    modality: str = "auto",
    genes: list[str] | np.ndarray | None = None,
    batch_size: int | None = None,
    **resolve_kwargs: Any,
) -> Encoded:
    """Encode every spot of a slide with its niche, tiled at the geometry the model was trained on.

    Niches come from the one loader of storm (:class:`~storm.data.NicheLoader`): batches follow the image's chunk
    rows (each batch reads few chunks, so memory stays bounded on large slides), each distinct tile of a batch is
    read and run through the backbone once, and outputs go into arrays allocated once for the whole slide. Each batch
    is run in ``storm.settings.orientations`` orientations (tiles and offsets flipped and turned together) and the
    outputs averaged, so that they do not depend on how the slide lies.

    Parameters
    ----------
    source
        A SpatialData object, squidpy-style AnnData, resolved :class:`~storm.io.Slide` or ``.zarr`` path.
    model
        The model (in eval mode, on any device; it is moved to ``storm.settings.device``).
    modality
        ``"image"``, ``"expression"``, ``"both"`` or ``"auto"`` (both when the slide has both).
    genes
        Gene symbols to predict from the image (default: none); each must be in ``model.vocab``.
    batch_size
        Niches per forward pass (default ``storm.settings.batch_size``).
    **resolve_kwargs
        Element choice, scale and counts layer for :func:`storm.io.resolve` (``table_key``, ``layer``, ...).

    Returns
    -------
    :class:`Encoded`

    Examples
    --------
    >>> import storm as st
    >>> from storm.models import GeneVocab, StormConfig, StormModel
    >>> from storm.tl._encode import encode
    >>> sdata = st.datasets.demo()
    >>> vocab = GeneVocab.from_genes(sdata["table"].var_names)
    >>> model = StormModel(StormConfig.from_preset("tiny", image_size=32), vocab=vocab)
    >>> out = encode(sdata, model.eval(), modality="image", genes=["ERBB2", "KRT19"])
    >>> out.embedding.shape, out.predicted_expression.shape
    ((151, 64), (151, 2))
    """
    import torch

    from .._compute import autocast, torch_device
    from .._settings import settings
    from ..data import Corpus, NicheDataset, NicheLoader
    from ..data._augment import ORIENTATIONS

    if modality not in MODALITIES:
        raise ValueError(f"`modality` must be one of {MODALITIES}, got {modality!r}.")
    size = settings.batch_size if batch_size is None else batch_size
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    corpus = Corpus.for_model(source, model, **resolve_kwargs)
    use = _modalities(corpus, modality)
    symbols, gene_index = _genes(model, genes)
    device = torch_device(settings.device)
    model = model.to(device).eval()
    slide = corpus.slides[0]
    order = slide.tiles.raster_order() if use != "expression" and slide.tiles is not None else np.arange(corpus.n_spots)
    batches = [order[start : start + size].tolist() for start in range(0, corpus.n_spots, size)]
    loader = NicheLoader(NicheDataset(corpus, read_tiles=use != "expression"), batches, device=device)
    outputs: dict[str, np.ndarray] = {}
    rows = 0
    views = ORIENTATIONS[: settings.orientations]
    with torch.inference_mode(), autocast(settings.precision, device), _progress(corpus.n_spots) as bar:
        for batch in loader:
            inputs = batch.select(use)
            n = batch.n_niches
            for view, (flip, k) in enumerate(views):
                oriented = _oriented(inputs, flip, k) if view else inputs
                out = model(**oriented, genes=gene_index.to(device))
                for name in _OUTPUTS:
                    value = getattr(out, name)
                    if value is None:
                        continue
                    if name not in outputs:  # allocated once: memory stays flat with the number of spots
                        outputs[name] = np.zeros((corpus.n_spots, *value.shape[1:]), dtype=np.float32)
                    outputs[name][order[rows : rows + n]] += value.float().cpu().numpy() / len(views)
            rows += n
            bar.update(n)
    return Encoded(
        obs_names=np.asarray(slide.slide.obs_names),
        embedding=outputs["embedding"],
        niche_embedding=outputs["niche_embedding"],
        image_embedding=outputs.get("image_embedding"),
        gene_embedding=outputs.get("gene_embedding"),
        predicted_expression=outputs["predicted_expression"][:, : len(symbols)] if len(symbols) else None,
        genes=symbols,
        modalities=use,
    )


def _oriented(batch: NicheBatch, flip: bool, k: int) -> NicheBatch:
    """The niches of ``batch`` mirrored (if ``flip``) and turned by ``k`` quarter-turns: offsets and tiles together."""
    from ..data._augment import flip_rotate_offsets, flip_rotate_tiles

    tiles = None if batch.tiles is None else flip_rotate_tiles(batch.tiles, flip=flip, k=k)
    return replace(batch, offsets_um=flip_rotate_offsets(batch.offsets_um, flip=flip, k=k), tiles=tiles)


def _progress(total: int, desc: str = "embed") -> Any:
    """A progress bar over spots (``storm.settings.progress``; hidden for a few spots)."""
    from tqdm.auto import tqdm

    from .._settings import settings

    return tqdm(total=total, desc=desc, unit="spot", disable=not settings.progress or total < 2, leave=False)


def _modalities(corpus: Corpus, requested: str) -> str:
    from .._logging import logger

    slide = corpus.slides[0]
    has = {"image": slide.has_image, "expression": slide.has_expression}
    if requested == "auto":
        if has["image"] and slide.expression_error is not None:
            logger.warning("using the image only: %s", slide.expression_error)
        if has["image"] and has["expression"]:
            return "both"
        if not (has["image"] or has["expression"]) and slide.image_error is not None:
            raise ValueError(slide.image_error)
        requested = "image" if has["image"] else "expression"
    needed = ["image", "expression"] if requested == "both" else [requested]
    missing = [m for m in needed if not has[m]]
    if "expression" in missing and slide.expression_error is not None:
        raise ValueError(slide.expression_error)
    if "image" in missing and slide.image_error is not None:
        raise ValueError(slide.image_error)
    if missing:
        what = {
            "image": "an H&E image fine enough for the model's tiles",
            "expression": "genes in the model's vocabulary",
        }
        raise ValueError(
            f"Embedding the {requested} needs {' and '.join(what[m] for m in missing)}, which this slide lacks; "
            "embed what it has instead (modality 'auto' of st.tl.embed)."
        )
    return requested


def _genes(model: StormModel, genes: Any) -> tuple[np.ndarray, torch.Tensor]:
    import torch

    if genes is None:
        return np.zeros(0, dtype=object), torch.zeros(1, dtype=torch.long)
    names = [genes] if isinstance(genes, str) else [str(g) for g in genes]
    if len(names) == 0:
        return np.zeros(0, dtype=object), torch.zeros(1, dtype=torch.long)
    index = np.array(model.vocab.align(names).indices, dtype=np.int64)
    unknown = [n for n, i in zip(names, index, strict=True) if i < 0]
    if unknown:
        raise KeyError(
            f"`genes`: {len(unknown)} of {len(names)} genes are not in the model's {len(model.vocab)}-gene vocabulary "
            f"(e.g. {unknown[:5]}); check the symbols or drop them."
        )
    return np.asarray(names, dtype=object), torch.from_numpy(index)
