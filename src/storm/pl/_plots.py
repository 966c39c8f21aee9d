"""``st.pl.domains``, ``st.pl.genes`` and ``st.pl.embedding``: storm results over the H&E."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._constants import LAYER_PREDICTED, OBS_DOMAIN, OBSM_EMBEDDING
from .._docs import doc_params
from .._frame import tool
from ._base import background, finish, new_axes, spots

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from spatialdata import SpatialData

    from ..io._where import Where


@tool(copy=False)
@doc_params
def domains(
    data: SpatialData | AnnData,
    *,
    key: str = OBS_DOMAIN,
    where: Where,
    palette: str | list[Any] | None = None,
    title: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | None:
    """Tissue domains (``obs[key]``) as spots of true size over the H&E, with a legend.

    Parameters
    ----------
    {data_param}
    key
        Categorical ``obs`` column to draw.
    {resolve_params}
    palette
        A matplotlib colormap name or a list of colours, one per category (default ``tab20``).
    title
        Panel title (default ``key``).
    ax, show, save, return_fig
        Draw into ``ax``; show the figure; save it to a file; return it.

    Returns
    -------
    The figure with ``return_fig=True``, else ``None``.

    Examples
    --------
    >>> import storm as st
    >>> sdata = st.datasets.demo()
    >>> sdata["table"].obs["storm_domain"] = sdata["table"].obs["cluster"].astype("category")
    >>> fig = st.pl.domains(sdata, return_fig=True)
    """
    import matplotlib as mpl
    from matplotlib.patches import Patch

    slide = where.resolve(data)
    obs = slide.table.obs
    if key not in obs:
        raise KeyError(f"obs[{key!r}] not found; run st.tl.domains first, or pass `key=` naming a categorical column.")
    values = obs[key].iloc[slide.rows]
    categories = list(values.cat.categories) if hasattr(values, "cat") else sorted(values.dropna().unique().tolist())
    colours = _palette(palette, len(categories))
    index = {c: i for i, c in enumerate(categories)}
    rgba = np.array([mpl.colors.to_rgba(colours[index[v]]) if v in index else (0, 0, 0, 0) for v in values])
    fig, (panel,) = new_axes(ax)
    background(panel, slide)
    spots(panel, slide, rgba)
    handles = [Patch(color=colours[i], label=str(c)) for i, c in enumerate(categories)]
    panel.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, title=key)
    panel.set_title(key if title is None else title)
    return finish(fig, owned=ax is None, show=show, save=save, return_fig=return_fig)


@tool(copy=False)
@doc_params
def genes(
    data: SpatialData | AnnData,
    genes: str | list[str],
    *,
    key: str = LAYER_PREDICTED,
    compare: bool = True,
    where: Where,
    cmap: str = "viridis",
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | None:
    """Predicted expression (``layers[key]``, or ``obsm[key]`` on H&E-only tables) over the H&E, measured beside it.

    Measured values are log1p(CP10k) of ``X`` (raw counts), the unit of storm's predictions; each gene's two panels
    share one colour scale (1st–99th percentile of both).

    Parameters
    ----------
    {data_param}
    genes
        One gene or a list (one row of panels each).
    key
        Layer with the predictions, or on an H&E-only table the ``obsm`` DataFrame of predicted genes.
    compare
        Draw the measured expression (log1p(CP10k) of the counts in ``layer``) beside the prediction, when the table
        has the genes.
    {resolve_params}
    cmap
        Colormap.
    ax, show, save, return_fig
        Draw into ``ax`` (one gene, no comparison); show; save to a file; return the figure.

    Returns
    -------
    The figure with ``return_fig=True``, else ``None``.

    Examples
    --------
    >>> import storm as st
    >>> from storm.data import log1p_cp10k
    >>> sdata = st.datasets.demo()
    >>> table = sdata["table"]
    >>> table.layers["storm_predicted"] = 0.5 * log1p_cp10k(table.X).toarray()  # a stand-in for the predictions
    >>> fig = st.pl.genes(sdata, ["ERBB2", "KRT19"], return_fig=True)
    >>> len(fig.axes)  # 2 genes x (measured, predicted) + 2 colour bars
    6
    """
    from ..data import log1p_cp10k

    slide = where.resolve(data)
    table = slide.table
    names = [genes] if isinstance(genes, str) else list(genes)
    frame = table.obsm.get(key) if table.n_vars == 0 else None
    available = table.var_names if frame is None else frame.columns
    missing = [g for g in names if g not in available]
    if missing:
        where = "var_names" if frame is None else f"predicted genes (obsm[{key!r}])"
        raise KeyError(f"`genes`: {missing} are not in the table; choose among its {where}.")
    measured = None
    if frame is not None:
        predicted = frame[names].to_numpy(dtype=float)[slide.rows]
    elif key in table.layers:
        columns = table.var_names.get_indexer(names)
        predicted = np.asarray(table.layers[key][slide.rows][:, columns], dtype=float)
        if compare:
            measured = np.asarray(_dense(log1p_cp10k(slide.counts())[:, columns]), dtype=float)
    else:
        raise KeyError(f"layers[{key!r}] not found; run st.tl.predict_expression first, or pass `key=`.")
    n_cols = 1 if measured is None else 2
    fig, axes = new_axes(ax, len(names), n_cols)
    for i, gene in enumerate(names):
        panels = (
            [("predicted", predicted[:, i])]
            if measured is None
            else [
                ("measured", measured[:, i]),
                ("predicted", predicted[:, i]),
            ]
        )
        shown = np.concatenate([v for _, v in panels])
        shown = shown[np.isfinite(shown)]
        vmin, vmax = np.percentile(shown, [1, 99]) if len(shown) else (0.0, 1.0)
        for j, (label, values) in enumerate(panels):
            panel = axes[i * n_cols + j]
            background(panel, slide)
            collection = spots(panel, slide, values, cmap=cmap)
            collection.set_clim(vmin, vmax)
            panel.set_title(f"{gene} ({label})")
            if j == len(panels) - 1:
                fig.colorbar(collection, ax=panel, fraction=0.046, pad=0.02, label="log1p(CP10k)")
    return finish(fig, owned=ax is None, show=show, save=save, return_fig=return_fig)


@tool(copy=False)
@doc_params
def embedding(
    data: SpatialData | AnnData,
    color: str | None = None,
    *,
    basis: str = OBSM_EMBEDDING,
    where: Where,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | None:
    """UMAP of the storm embedding (``obsm[basis]``) coloured by an ``obs`` column or gene.

    The UMAP is computed on a scratch copy (neighbours on ``basis``), so nothing is written to the table.

    Parameters
    ----------
    {data_param}
    color
        ``obs`` column or gene of the table (default: ``storm_domain`` when present).
    basis
        ``obsm`` key of the embedding.
    {resolve_params}
    ax, show, save, return_fig
        Draw into ``ax``; show; save to a file; return the figure.

    Returns
    -------
    The figure with ``return_fig=True``, else ``None``.

    Examples
    --------
    >>> import numpy as np, storm as st
    >>> sdata = st.datasets.demo()
    >>> sdata["table"].obsm["X_storm"] = np.random.default_rng(0).normal(size=(151, 16))
    >>> fig = st.pl.embedding(sdata, color="cluster", return_fig=True)
    """
    import anndata as ad
    import scanpy as sc

    from .._settings import settings

    table = where.resolve(data, image=False).table
    if basis not in table.obsm:
        raise KeyError(f"obsm[{basis!r}] not found; run st.tl.embed first, or pass `basis=`.")
    x = np.asarray(table.obsm[basis], dtype=np.float32)
    keep = np.isfinite(x).all(1)
    scratch = ad.AnnData(np.zeros((int(keep.sum()), 0), dtype=np.float32), obs=table.obs.iloc[keep].copy())
    scratch.obsm["rep"] = x[keep]
    if color is None and OBS_DOMAIN in table.obs:
        color = OBS_DOMAIN
    if color is not None and color not in table.obs and color in table.var_names:
        scratch.obs[color] = np.asarray(_dense(table[keep, color].X)).ravel()
    elif color is not None and color not in table.obs:
        raise KeyError(f"`color={color!r}` is neither an obs column nor a gene of the table.")
    sc.pp.neighbors(scratch, use_rep="rep", random_state=settings.seed, transformer="sklearn")  # as st.tl.domains
    sc.tl.umap(scratch, random_state=settings.seed)
    fig, (panel,) = new_axes(ax)
    sc.pl.umap(scratch, color=color, ax=panel, show=False, frameon=False, title=f"{basis} UMAP")
    return finish(fig, owned=ax is None, show=show, save=save, return_fig=return_fig)


def _palette(palette: str | list[Any] | None, n: int) -> list[Any]:
    import matplotlib as mpl

    if isinstance(palette, list | tuple):
        if len(palette) < n:
            raise ValueError(f"`palette` has {len(palette)} colours for {n} categories; give at least {n}.")
        return list(palette)
    cmap = mpl.colormaps[palette or ("tab10" if n <= 10 else "tab20")]
    return [cmap(i % cmap.N) for i in range(n)]


def _dense(x: Any) -> np.ndarray:
    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)
