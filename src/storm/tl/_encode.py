"""Run a storm model over every spot of a slide: niche batches in, embeddings and predicted expression out."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from concurrent.futures import Future

    import torch

    from ..models import StormModel
    from ..train import Corpus

_OUTPUTS = ("embedding", "niche_embedding", "image_embedding", "gene_embedding", "predicted_expression")
#: Below this many tiles per thread, splitting a batch's reading costs more than it saves.
_MIN_TILES_PER_THREAD = 16


class NicheTiles(NamedTuple):
    """A batch's niches (``valid``: which slots hold a spot), each slot's row in ``tiles``, and the distinct tiles."""

    valid: np.ndarray
    inverse: np.ndarray
    tiles: np.ndarray


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
        ``(n_spots, len(genes))`` log1p(CP10k) expression predicted from the image; ``None`` without images.
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
    modalities: str = "auto",
    genes: list[str] | np.ndarray | None = None,
    batch_size: int | None = None,
    **resolve_kwargs: Any,
) -> Encoded:
    """Encode every spot of a slide with its niche, tiled at the geometry the model was trained on.

    Parameters
    ----------
    source
        A SpatialData object, squidpy-style AnnData, resolved :class:`~storm.io.Slide` or ``.zarr`` path.
    model
        The model (in eval mode, on any device; it is moved to ``storm.settings.device``).
    modalities
        ``"image"``, ``"expression"``, ``"both"`` or ``"auto"`` (both when the slide has both).
    genes
        Gene symbols to predict from the image (default: none); each must be in ``model.vocab``.
    batch_size
        Niches per forward pass (default ``storm.settings.batch_size``).
    **resolve_kwargs
        ``table_key``, ``image_key``, ``shapes_key``, ``um_per_px``, ``platform`` or ``layer`` for
        :meth:`~storm.train.Corpus.from_sources`.

    Returns
    -------
    :class:`Encoded`

    Examples
    --------
    >>> import storm as st
    >>> from storm.models import StormConfig, StormModel
    >>> from storm.tl._encode import encode
    >>> sdata = st.datasets.demo()
    >>> from storm.models import GeneVocab
    >>> vocab = GeneVocab.from_genes(sdata["table"].var_names)
    >>> model = StormModel(StormConfig.from_preset("tiny", image_size=32), vocab=vocab)
    >>> out = encode(sdata, model.eval(), modalities="image", genes=["ERBB2", "KRT19"])
    >>> out.embedding.shape, out.predicted_expression.shape
    ((151, 64), (151, 2))
    """
    import torch

    from .._compute import autocast, torch_device
    from .._settings import settings
    from ..train import Corpus, NicheDataset, collate_niches

    if modalities not in MODALITIES:
        raise ValueError(f"`modalities` must be one of {MODALITIES}, got {modalities!r}.")
    config = model.config
    corpus = Corpus.from_sources(
        source,
        vocab=model.vocab,
        tile_px=config.image_size,
        tile_um=config.tile_um,
        niche_size=config.niche_size,
        **resolve_kwargs,
    )
    use = _modalities(corpus, modalities)
    symbols, gene_index = _genes(model, genes)
    device = torch_device(settings.device)
    model = model.to(device).eval()
    dataset = NicheDataset(corpus, read_tiles=False)
    size = settings.batch_size if batch_size is None else int(batch_size)
    if size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    # With images, batches follow the image's chunk rows, so each batch reads few chunks and memory stays bounded
    # on large slides; the outputs are put back in table order.
    order = corpus.slides[0].tiles.raster_order() if use != "expression" else np.arange(corpus.n_spots)
    batches = [order[start : start + size] for start in range(0, corpus.n_spots, size)]
    tiles = _batch_tiles(corpus.slides[0], batches, device, settings.num_workers) if use != "expression" else None
    parts: dict[str, list[np.ndarray]] = {}
    try:
        with torch.inference_mode(), autocast(settings.precision, device):
            for spots in batches:
                inputs = _inputs(collate_niches(dataset.get_batch(spots)), use, device)
                if tiles is not None:
                    inputs["image_features"] = _image_features(model, next(tiles), device)
                out = model(**inputs, genes=gene_index.to(device))
                for name in _OUTPUTS:
                    value = getattr(out, name)
                    if value is not None:
                        parts.setdefault(name, []).append(value.float().cpu().numpy())
    finally:
        if tiles is not None:
            tiles.close()  # stops the reader threads, also when the model fails
    rows = np.argsort(order)
    arrays = {k: np.concatenate(v)[rows] for k, v in parts.items()}
    return Encoded(
        obs_names=np.asarray(corpus.slides[0].slide.obs_names),
        embedding=arrays["embedding"],
        niche_embedding=arrays["niche_embedding"],
        image_embedding=arrays.get("image_embedding"),
        gene_embedding=arrays.get("gene_embedding"),
        predicted_expression=arrays["predicted_expression"][:, : len(symbols)] if len(symbols) else None,
        genes=symbols,
        modalities=use,
    )


def _modalities(corpus: Corpus, requested: str) -> str:
    slide = corpus.slides[0]
    has = {"image": slide.has_image, "expression": slide.has_expression}
    if requested == "auto":
        if has["image"] and has["expression"]:
            return "both"
        return "image" if has["image"] else "expression"
    needed = ["image", "expression"] if requested == "both" else [requested]
    missing = [m for m in needed if not has[m]]
    if missing:
        what = {
            "image": "an H&E image fine enough for the model's tiles",
            "expression": "genes in the model's vocabulary",
        }
        raise ValueError(
            f"`modalities={requested!r}` needs {' and '.join(what[m] for m in missing)}, which this slide lacks; "
            "use modalities='auto' to encode what it has."
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


def _inputs(batch: dict[str, Any], use: str, device: torch.device) -> dict[str, Any]:
    keep = {"offsets_um", "spot_mask"}
    if use in ("image", "both"):
        keep |= {"image_mask"}
    if use in ("expression", "both"):
        keep |= {"expression", "gene_index", "expression_mask"}
    return {k: v.to(device) for k, v in batch.items() if k in keep}


def _batch_tiles(slide: Any, batches: list[np.ndarray], device: torch.device, workers: int) -> Iterator[NicheTiles]:
    """Each batch's niche tiles: read ahead in threads when the model runs on an accelerator, in line on the CPU.

    On the CPU the model's kernels already use every core; reader threads beside them slow both down (tiny preset on
    2 cores, her2st: 63 spots/s reading in line, 50 with 2 reader threads; ``docs/benchmarks.md``).
    """
    if device.type == "cpu":
        return _read_in_line(slide, batches)
    return _read_ahead(slide, batches, workers)


def _niche_index(slide: Any, spots: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which niche slots of ``spots`` hold a spot, each slot's row among the distinct spots, and those spots."""
    niches = slide.neighbours[spots]
    valid = niches >= 0
    unique, inverse = np.unique(niches[valid], return_inverse=True)
    return valid, inverse, unique


def _read_in_line(slide: Any, batches: list[np.ndarray]) -> Iterator[NicheTiles]:
    """The niche tiles of each batch, read when the batch is asked for."""
    for spots in batches:
        valid, inverse, unique = _niche_index(slide, spots)
        yield NicheTiles(valid, inverse, slide.tiles.read(unique))


def _read_ahead(slide: Any, batches: list[np.ndarray], workers: int, ahead: int = 2) -> Iterator[NicheTiles]:
    """The niche tiles of each batch, read by ``workers`` threads up to ``ahead`` batches in advance.

    Reading (decoding, cropping, resampling) runs on the CPU while an accelerator works on the batch before, and each
    batch's tiles are split between the threads, so the accelerator is not left waiting for the tiler.
    """
    from concurrent.futures import ThreadPoolExecutor

    def submit(spots: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[Future]]:
        valid, inverse, unique = _niche_index(slide, spots)
        n_parts = max(1, min(workers, len(unique) // _MIN_TILES_PER_THREAD))
        return valid, inverse, [pool.submit(slide.tiles.read, part) for part in np.array_split(unique, n_parts)]

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="storm-encode") as pool:
        pending = deque(submit(spots) for spots in batches[: ahead + 1])
        for k in range(len(batches)):
            valid, inverse, futures = pending.popleft()
            if k + ahead + 1 < len(batches):
                pending.append(submit(batches[k + ahead + 1]))
            yield NicheTiles(valid, inverse, np.concatenate([f.result() for f in futures]))


def _image_features(model: StormModel, niche_tiles: NicheTiles, device: torch.device) -> torch.Tensor:
    """(B, S, T, C) backbone tokens of a batch's niches, running the backbone once per distinct tile."""
    import torch

    valid, inverse, tiles = niche_tiles
    tokens, _ = model.image.backbone_tokens(torch.from_numpy(tiles).to(device))
    features = tokens.new_zeros((*valid.shape, *tokens.shape[1:]))
    features[torch.from_numpy(valid).to(device)] = tokens[torch.from_numpy(inverse).to(device)]
    return features
