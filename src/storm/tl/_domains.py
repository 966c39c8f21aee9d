"""``st.tl.domains``: tissue domains from storm embeddings, one labelling shared across slides."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._constants import OBS_DOMAIN, OBSM_EMBEDDING
from .._docs import doc_params
from .._frame import tool
from ._results import Results, check_keys, embedding_record, write_results
from ._slides import as_slides, embedding_rows

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

    from ..io import Slide
    from ..io._where import Where

#: Neighbours averaged by the spatial smoothing (the first ring of a hexagonal grid).
SMOOTHING_NEIGHBOURS = 6
#: Principal components the Gaussian mixture is fitted on.
MIXTURE_COMPONENTS = 20
#: Clusterings ``method`` accepts; the first two need ``n_domains``.
METHODS = ("gmm", "kmeans", "leiden")
#: Clusterings (seeds ``seed``, ``seed + 1``, ...) whose consensus gives the domains.
CONSENSUS_RUNS = 16


@tool
@doc_params
def domains(
    data: SpatialData | AnnData | Slide | Sequence[SpatialData | AnnData | Slide],
    n_domains: int | None = None,
    *,
    resolution: float | None = None,
    method: str | None = None,
    spatial_smoothing: bool | float = True,
    use_rep: str = OBSM_EMBEDDING,
    model: Any = None,
    adapt: bool | int = False,
    where: Where,
    random_state: int | None = None,
    key_added: str = OBS_DOMAIN,
) -> SpatialData | AnnData | list[SpatialData | AnnData] | None:
    """Cluster spots into tissue domains; several slides get one joint clustering, so labels agree across slides.

    Each spot's embedding (``obsm[use_rep]``, computed with :func:`storm.tl.embed` first when missing) is mixed with
    the mean of its 6 nearest spots in µm (``spatial_smoothing``), so domains follow tissue regions rather than single
    noisy spots. With ``n_domains``, a Gaussian mixture with one covariance shared by all domains (mclust's "EEE",
    the clustering GraphST and STAGATE report their domains with) is fitted on the first 20 principal components of
    the standardised, smoothed embeddings; otherwise Leiden on the k-nearest-neighbour graph of all slides' spots at
    ``resolution`` (default 1.0). The clustering runs 16 times (seeds ``random_state`` to ``random_state + 15``; of the mixtures, the
    better half by likelihood is kept) and the domains are their consensus (``storm.tl._domains.consensus``: the most
    typical run, with each spot's majority vote), numbered by size; how much the runs agree is recorded as
    ``uns["storm"][key_added]["stability"]`` (mean adjusted Rand index, 1 = all identical). So domains barely move with
    the seed and not with the order of the rows; embeddings averaged over the slide's eight orientations
    (``storm.settings.orientations``) and smoothing neighbours chosen without ties make them the same for a slide
    mirrored or turned by quarter-turns.

    Parameters
    ----------
    {slides_param}
    n_domains
        Number of domains (``"gmm"`` or ``"kmeans"``); ``None`` for Leiden. A mixture component that no spot is
        most likely to belong to is dropped, so ``"gmm"`` can return fewer domains (the number found is in
        ``uns["storm"][key_added]["n_domains"]``).
    resolution
        Leiden resolution (only without ``n_domains``).
    method
        ``"gmm"`` (default with ``n_domains``), ``"kmeans"`` (k-means on the standardised, smoothed embeddings, the
        clustering before the mixture) or ``"leiden"`` (default without ``n_domains``).
    spatial_smoothing
        Weight of the neighbourhood mean, in [0, 1): ``True`` is 0.5, ``False`` or 0 turns smoothing off.
    use_rep
        ``obsm`` key of the embeddings.
    model
        Model for :func:`storm.tl.embed` when ``use_rep`` is a storm key (``X_storm...``) that is missing (default: the
        bundled checkpoint); any other missing key is an error.
    adapt
        Adapt ``model`` to these slides first (:func:`storm.tl.adapt`, no labels; ``True`` for its default steps, or a
        number of steps) and write the adapted model's embeddings to ``obsm[use_rep]``, which must be a storm key.
    {resolve_params}
        The image is not needed: a slide whose image is ambiguous is clustered without it.
    {random_state_param}
    key_added
        Categorical ``obs`` column written to every slide's table (and ``uns["storm"]`` key of the parameters).
    {copy_param}

    {copy_returns}

    Examples
    --------
    >>> import storm as st
    >>> sdata = st.datasets.demo()
    >>> st.tl.domains(sdata, n_domains=4)  # doctest: +SKIP
    >>> sdata["table"].obs["storm_domain"].cat.categories.tolist()  # doctest: +SKIP
    ['0', '1', '2', '3']
    """
    from ..data import spot_ties

    weight = _smoothing_weight(spatial_smoothing)
    method = check_method(method, n_domains, resolution)
    seed = int(random_state)
    steps = _adapt_steps(adapt, use_rep)
    resolved = [where.resolve(s, image=steps is not None) for s in as_slides(data)]
    for slide in resolved:
        check_keys(slide, obs=[key_added], obsm=[use_rep] if steps is not None else [])
    if steps is not None:
        from ._adapt import adapt as adapt_model
        from ._embed import embed

        adapted = adapt_model(resolved, model=model, steps=steps, random_state=seed)
        for slide in resolved:
            embed(slide, model=adapted, key_added=use_rep)
    features = []
    for slide in resolved:
        x = embedding_rows(slide, use_rep, model)
        features.append(_smooth(x, slide.spot_xy_um, weight, ties=spot_ties(slide.obs_names)))
    _check_features(features, resolved, use_rep, n_domains)
    check_one_model(resolved, use_rep)
    sizes = [len(f) for f in features]
    stacked = np.concatenate(features)
    stacked = (stacked - stacked.mean(0)) / (stacked.std(0) + 1e-8)
    cluster = {
        "gmm": lambda x, seeds: _mixture(x, int(n_domains), seeds),
        "kmeans": lambda x, seeds: [_kmeans(x, int(n_domains), s) for s in seeds],
        "leiden": lambda x, seeds: _leiden(x, resolution, seeds),
    }[method]
    labels, stability = _in_canonical_order(
        stacked, lambda x: consensus(cluster(x, range(seed, seed + CONSENSUS_RUNS)))
    )

    import pandas as pd

    categories = [str(c) for c in sorted(set(labels.tolist()))]
    params = {
        "n_domains": len(categories),
        "method": method,
        "resolution": None if n_domains is not None else (1.0 if resolution is None else float(resolution)),
        "spatial_smoothing": weight,
        "use_rep": use_rep,
        "adapt_steps": steps,
        "n_slides": len(resolved),
        "seed": seed,
        "consensus_runs": CONSENSUS_RUNS,
        "stability": stability,
    }
    start = 0
    for slide, size in zip(resolved, sizes, strict=True):
        labels_here = pd.Categorical(labels[start : start + size].astype(str), categories=categories)
        start += size
        write_results(slide, Results(key_added, dict(params), obs={key_added: labels_here}))


def _check_features(features: list[np.ndarray], slides: list[Any], use_rep: str, n_domains: int | None) -> None:
    """Refuse, before clustering, embeddings that cannot be clustered together and too few spots."""
    widths = sorted({f.shape[1] for f in features})
    if len(widths) > 1:
        per_slide = ", ".join(f"slide {i}: {f.shape[1]}" for i, f in enumerate(features))
        raise ValueError(
            f"`use_rep={use_rep!r}` has embeddings of different widths across slides ({per_slide}); embed every slide "
            "with the same model (st.tl.embed(..., model=...)) before clustering them together."
        )
    total = sum(len(f) for f in features)
    if total < 2:
        raise ValueError(
            f"Domains need at least 2 spots, and the {len(slides)} slide(s) resolved {total}; pass the slides together "
            "(a list) or check `shapes_key`/`table_key`."
        )
    if n_domains is not None and n_domains > total:
        raise ValueError(f"`n_domains={n_domains}` is more than the {total} spots to cluster.")


def check_one_model(slides: list[Any], use_rep: str) -> None:
    """Refuse storm embeddings of several slides made by different models (or modalities): not one space."""
    if len(slides) < 2:
        return
    made = []
    for i, slide in enumerate(slides):
        record = embedding_record(slide.table, use_rep)
        if record is not None:
            made.append(
                (i, str(record.get("model")), str(record.get("model_sha256"))[:12], str(record.get("modality")))
            )
    if len({m[2:] for m in made}) > 1:
        per_slide = "; ".join(f"slide {i}: {name} ({sha}, {modality})" for i, name, sha, modality in made)
        raise ValueError(
            f"`use_rep={use_rep!r}` was embedded by different models or modalities across the slides ({per_slide}), "
            "so the slides share no space and would cluster apart. Embed every slide with one model and modality "
            "(st.tl.embed(slide, model=..., modality=...)) before clustering them together."
        )


def _in_canonical_order(x: np.ndarray, cluster: Any) -> tuple[np.ndarray, float]:
    """``cluster(x)`` (labels and stability) run on the rows of ``x`` sorted by value, labels in the original order.

    Clustering (k-means initialisation, Leiden's node order) depends on the order of the rows; sorting them first makes
    the labels of each spot the same whatever the order of the table's rows.
    """
    order = np.lexsort(np.round(x, 4).T[::-1])
    labels = np.empty(len(x), dtype=np.int64)
    labels[order], stability = cluster(x[order])
    return labels, stability


def consensus(runs: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """One labelling from several clusterings of the same spots, and how much they agree with it.

    The run that agrees best with all others (highest mean adjusted Rand index, the medoid) sets the domains; each run's
    labels are matched to its domains one to one (the matching of largest overlap), and every spot takes the domain
    most runs give it (the medoid's on a tie). Domains are numbered by size, largest first (ties by first spot), so
    the numbering does not depend on the seeds. Returns the labels and the stability: the mean adjusted Rand index
    of the runs against them (1: every run found the same domains).

    Examples
    --------
    >>> import numpy as np
    >>> runs = [np.array([0, 0, 1, 1, 2]), np.array([1, 1, 0, 0, 2]), np.array([0, 0, 1, 2, 2])]
    >>> labels, stability = consensus(runs)
    >>> labels.tolist(), round(stability, 2)
    ([0, 0, 1, 1, 2], 0.79)
    """
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import adjusted_rand_score

    n_runs = len(runs)
    agreement = np.ones((n_runs, n_runs))
    for i in range(n_runs):
        for j in range(i + 1, n_runs):
            agreement[i, j] = agreement[j, i] = adjusted_rand_score(runs[i], runs[j])
    medoid = np.unique(runs[int(np.argmax(agreement.mean(1)))], return_inverse=True)[1]
    k = int(medoid.max()) + 1
    votes = np.zeros((len(medoid), k))
    votes[np.arange(len(medoid)), medoid] += 0.5  # the medoid wins ties
    for run in runs:
        labels = np.unique(run, return_inverse=True)[1]
        overlap = np.zeros((int(labels.max()) + 1, k))
        np.add.at(overlap, (labels, medoid), 1)
        rows, cols = linear_sum_assignment(-overlap)
        mapping = np.full(len(overlap), -1)
        mapping[rows] = cols
        mapped = mapping[labels]
        kept = mapped >= 0
        votes[np.flatnonzero(kept), mapped[kept]] += 1
    voted = votes.argmax(1)
    sizes = np.bincount(voted, minlength=k)
    first = np.array([np.flatnonzero(voted == d)[0] if sizes[d] else len(voted) for d in range(k)])
    rank = np.lexsort((first, -sizes))
    final = np.empty(k, dtype=np.int64)
    final[rank] = np.arange(k)
    labels = np.unique(final[voted], return_inverse=True)[1]
    stability = float(np.mean([adjusted_rand_score(run, labels) for run in runs]))
    return labels, stability


def check_method(method: str | None, n_domains: int | None, resolution: float | None = None) -> str:
    """The clustering asked for, checked with ``n_domains`` and ``resolution`` before any work."""
    if n_domains is not None and (isinstance(n_domains, bool) or int(n_domains) != n_domains or n_domains < 1):
        raise ValueError(f"`n_domains` must be a positive integer or None, got {n_domains!r}.")
    if n_domains is not None and resolution is not None:
        raise ValueError("Pass `n_domains` (a fixed number of domains) or `resolution` (Leiden), not both.")
    if resolution is not None and (isinstance(resolution, bool) or not np.isfinite(resolution) or resolution <= 0):
        raise ValueError(
            f"`resolution` must be a positive number (Leiden: larger gives more domains; 1.0 is the default), got "
            f"{resolution!r}."
        )
    if method is None:
        return "leiden" if n_domains is None else "gmm"
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS} or None, got {method!r}.")
    if (method == "leiden") != (n_domains is None):
        fix = "drop `n_domains` (Leiden's count follows `resolution`)" if method == "leiden" else "pass `n_domains`"
        raise ValueError(f"`method={method!r}` with `n_domains={n_domains!r}`: {fix}.")
    return method


def _adapt_steps(adapt: bool | int, use_rep: str) -> int | None:
    """Steps of adaptation asked for by ``adapt`` (``None``: none), checked before any work."""
    from ._adapt import ADAPT_STEPS

    if adapt is False:
        return None
    steps = ADAPT_STEPS if adapt is True else adapt
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`adapt` must be True, False or a positive number of steps, got {adapt!r}.")
    if not use_rep.startswith(OBSM_EMBEDDING):
        raise ValueError(
            f"`adapt` re-embeds the slides with the adapted model, so `use_rep` must be a storm key ('X_storm...'), "
            f"got {use_rep!r}; pass use_rep='X_storm' or adapt=False."
        )
    return steps


def _smoothing_weight(value: bool | float) -> float:
    if isinstance(value, bool):
        return 0.5 if value else 0.0
    if not 0 <= float(value) < 1:
        raise ValueError(f"`spatial_smoothing` must be True, False or a weight in [0, 1), got {value!r}.")
    return float(value)


def _smooth(x: np.ndarray, xy_um: np.ndarray, weight: float, ties: np.ndarray) -> np.ndarray:
    """``(1 - weight) * x + weight * mean of the nearest spots' x`` (no change with one spot or weight 0).

    The nearest spots are a niche's (:func:`~storm.data.niche_neighbours`): the same however the slide lies.
    """
    if weight == 0 or len(x) < 2:
        return x
    from ..data import niche_neighbours

    index = niche_neighbours(np.asarray(xy_um, dtype=float), min(SMOOTHING_NEIGHBOURS, len(x) - 1), ties=ties)
    return (1 - weight) * x + weight * x[index[:, 1:]].mean(1)


def _kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)


def _mixture(x: np.ndarray, k: int, seeds: Sequence[int]) -> list[np.ndarray]:
    """Tied-covariance Gaussian mixtures of ``k`` components on the first principal components of ``x``, one per seed.

    Only the better half of the fits by likelihood is returned (at least one): a fit stuck in a poor optimum (often
    k-means' cut, where the mixture starts) is not a vote.
    """
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    n_pcs = min(MIXTURE_COMPONENTS, x.shape[1], len(x))
    pcs = PCA(n_pcs, svd_solver="full").fit_transform(x)
    fits = []
    for seed in seeds:
        mixture = GaussianMixture(k, covariance_type="tied", n_init=1, reg_covar=1e-4, random_state=seed).fit(pcs)
        fits.append((mixture.score(pcs), np.unique(mixture.predict(pcs), return_inverse=True)[1]))
    best = sorted(range(len(fits)), key=lambda i: -fits[i][0])[: max(1, len(fits) // 2)]
    return [fits[i][1] for i in sorted(best)]


def _leiden(x: np.ndarray, resolution: float | None, seeds: Sequence[int]) -> list[np.ndarray]:
    """Leiden on the k-nearest-neighbour graph of ``x`` (built once), once per seed."""
    import anndata as ad
    import scanpy as sc

    adata = ad.AnnData(np.zeros((len(x), 0), dtype=np.float32), obsm={"X": x})
    # exact neighbours at any size: scanpy's default for 4,096 spots and more (pynndescent) returns a sparse array
    # that scanpy 1.11 cannot read with scipy >= 1.15 (AttributeError: getnnz)
    sc.pp.neighbors(adata, use_rep="X", random_state=seeds[0], transformer="sklearn")
    runs = []
    for seed in seeds:
        sc.tl.leiden(
            adata,
            resolution=1.0 if resolution is None else float(resolution),
            flavor="igraph",
            n_iterations=2,
            directed=False,
            random_state=seed,
        )
        runs.append(adata.obs["leiden"].astype(int).to_numpy())
    return runs
