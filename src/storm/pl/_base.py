"""What every storm plot shares: the H&E under the spots at the right scale, spots at their true size, figure handling."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..io import Slide

#: Longest side, in pixels, of the image drawn under the spots (the finest level not larger is used; a level still
#: larger, as on a slide without a pyramid, is read every few pixels).
MAX_BACKGROUND_PX = 2000
#: Margin around the spots' bounding box, in spot diameters.
MARGIN_SPOTS = 1.0


def background(ax: Axes, slide: Slide, *, alpha: float = 1.0) -> None:
    """Draw the slide's H&E, cropped to the spots, in µm (the frame of ``slide.spot_xy_um``)."""
    from ..pp._image import to_rgb_uint8

    ax.set_aspect("equal")
    x0, y0, x1, y1 = _bounds_um(slide)
    if slide.has_image:
        level = _display_level(slide, x0, y0, x1, y1)
        sy, sx = level.px_to_level0
        um = slide.um_per_px
        h, w = level.shape_yx
        r0, r1 = max(int(y0 / (um * sy)), 0), min(int(np.ceil(y1 / (um * sy))), h)
        c0, c1 = max(int(x0 / (um * sx)), 0), min(int(np.ceil(x1 / (um * sx))), w)
        if r1 > r0 and c1 > c0:
            # a level still too large (a slide without a pyramid) is read every `step` pixels, chunk by chunk
            step = max(1, -(-max(r1 - r0, c1 - c0) // MAX_BACKGROUND_PX))
            pixels = to_rgb_uint8(np.asarray(level.data[:, r0:r1:step, c0:c1:step]), level.white)
            r1, c1 = r0 + pixels.shape[0] * step, c0 + pixels.shape[1] * step
            # pixel p covers [p - 0.5, p + 0.5] in level pixels; level pixels map to level-0 pixels by (sx, sy)
            half = 0.5 * step
            extent = ((c0 - half) * sx * um, (c1 - half) * sx * um, (r1 - half) * sy * um, (r0 - half) * sy * um)
            ax.imshow(pixels, extent=extent, alpha=alpha, interpolation="antialiased")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y1, y0)
    ax.set_axis_off()


def spots(ax: Axes, slide: Slide, colors: Any, *, alpha: float = 0.9, **kwargs: Any):
    """Spots as circles of their true diameter (µm) coloured by ``colors`` (RGBA rows or values for a colormap)."""
    from matplotlib.collections import EllipseCollection

    d = np.asarray(slide.spot_diameter_um, dtype=float)
    collection = EllipseCollection(
        d,
        d,
        np.zeros_like(d),
        units="xy",
        offsets=slide.spot_xy_um,
        offset_transform=ax.transData,
        alpha=alpha,
        **kwargs,
    )
    values = np.asarray(colors)
    if values.ndim == 2:
        collection.set_facecolor(values)
    else:
        collection.set_array(values)
    collection.set_edgecolor("none")
    ax.add_collection(collection)
    return collection


def new_axes(ax: Axes | None, n_rows: int = 1, n_cols: int = 1, *, size: float = 4.0) -> tuple[Figure, list[Axes]]:
    """``ax`` (one panel) or a new figure with ``n_rows`` x ``n_cols`` panels (row by row)."""
    import matplotlib.pyplot as plt

    if ax is not None:
        if n_rows * n_cols != 1:
            raise ValueError(f"`ax` holds one panel, but this plot has {n_rows * n_cols}; leave `ax=None`.")
        return ax.figure, [ax]
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(size * n_cols, size * n_rows), squeeze=False)
    return fig, list(axes.ravel())


def finish(
    fig: Figure, *, owned: bool, show: bool | None, save: str | Path | None, return_fig: bool, dpi: int = 150
) -> Figure | None:
    """Save and/or show the figure; return it with ``return_fig`` (scanpy's convention).

    A figure made by the plot (``owned``) that is neither shown nor returned is closed, so loops do not leak figures.
    """
    import matplotlib.pyplot as plt

    if save is not None:
        fig.savefig(save, dpi=dpi, bbox_inches="tight")
    if return_fig:
        return fig
    if show is None:
        show = owned and plt.isinteractive()
    if show:
        plt.show()
    elif owned:
        plt.close(fig)
    return None


def _bounds_um(slide: Slide) -> tuple[float, float, float, float]:
    xy = slide.spot_xy_um
    margin = MARGIN_SPOTS * float(np.max(slide.spot_diameter_um))
    return (
        float(xy[:, 0].min() - margin),
        float(xy[:, 1].min() - margin),
        float(xy[:, 0].max() + margin),
        float(xy[:, 1].max() + margin),
    )


def _display_level(slide: Slide, x0: float, y0: float, x1: float, y1: float):
    """The finest level whose crop of the spots' box fits in :data:`MAX_BACKGROUND_PX` (else the coarsest)."""
    side_um = max(x1 - x0, y1 - y0)
    for level in slide.levels:
        if side_um / (slide.um_per_px * max(level.px_to_level0)) <= MAX_BACKGROUND_PX:
            return level
    return slide.levels[-1]
