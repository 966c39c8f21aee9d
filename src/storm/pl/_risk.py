"""``st.pl.risk``: each spot's contribution to the slide's risk, over the H&E."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._constants import OBS_RISK, UNS_KEY
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
def risk(
    data: SpatialData | AnnData,
    *,
    key: str = OBS_RISK,
    where: Where,
    cmap: str = "RdBu_r",
    title: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | None:
    """Spot contributions to the slide's risk (``obs[key]`` from :func:`storm.tl.apply_risk`) as a heatmap over the H&E.

    The colour scale is centred on zero (symmetric 99th percentile of the absolute values), so red spots raise the
    slide's risk and blue spots lower it; the title gives the slide score.

    Parameters
    ----------
    {data_param}
    key
        ``obs`` column of the contributions.
    {resolve_params}
    cmap
        Diverging colormap.
    title
        Panel title (default: the slide risk).
    ax, show, save, return_fig
        Draw into ``ax``; show the figure; save it to a file; return it.

    Returns
    -------
    The figure with ``return_fig=True``, else ``None``.

    Examples
    --------
    >>> import numpy as np
    >>> import storm as st
    >>> sdata = st.datasets.demo()
    >>> sdata["table"].obs["storm_risk"] = np.linspace(-1.0, 2.0, 151)  # a stand-in for st.tl.apply_risk
    >>> fig = st.pl.risk(sdata, return_fig=True)
    >>> [round(v, 2) for v in fig.axes[0].collections[0].get_clim()]  # centred on 0
    [-1.97, 1.97]
    """
    slide = where.resolve(data)
    obs = slide.table.obs
    if key not in obs:
        raise KeyError(f"obs[{key!r}] not found; run st.tl.apply_risk(sdata, head) first, or pass `key=`.")
    values = np.asarray(obs[key].iloc[slide.rows], dtype=float)
    finite = np.abs(values[np.isfinite(values)])
    limit = float(np.percentile(finite, 99)) if len(finite) and finite.max() > 0 else 1.0
    fig, (panel,) = new_axes(ax)
    background(panel, slide)
    collection = spots(panel, slide, values, cmap=cmap)
    collection.set_clim(-limit, limit)
    fig.colorbar(collection, ax=panel, fraction=0.046, pad=0.02, label="contribution to slide risk")
    score = slide.table.uns.get(UNS_KEY, {}).get(key, {}).get("score")
    default = "spot contributions to risk" if score is None else f"slide risk {score:.2f}"
    panel.set_title(default if title is None else title)
    return finish(fig, owned=ax is None, show=show, save=save, return_fig=return_fig)
