"""Parameter docs shared by every tool and plot: written once here, filled into docstrings by :func:`doc_params`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

#: The resolution contract: which table, image, spots, coordinate system, scale and counts layer a call uses.
RESOLVE_PARAMS = """\
table_key
    Table of spots to use; inferred when the SpatialData has one.
image_key
    H&E image to use; among images sharing the spots' coordinate system, RGB images are preferred, then the finest.
shapes_key
    Shapes (spots) annotated by the table; inferred when it annotates one.
coordinate_system
    Coordinate system in which image and spots are aligned. When several hold the same alignment (spatialdata-io's
    Visium reader writes ``<id>`` and ``<id>_downscaled_hires``), the one where the image is native is taken;
    only a real ambiguity (spots landing on different pixels) asks for this argument.
um_per_px
    Microns per pixel of the full-resolution image (level 0); overrides metadata and the spot pitch.
platform
    Platform whose spot pitch (or unit size) gives the scale when metadata has none, e.g. ``"visium"``, ``"st"``,
    ``"visium_hd_008um"`` or ``"xenium"``.
layer
    Layer of raw counts (default ``X``)."""

DATA_PARAM = """\
data
    The slide: a SpatialData with a table, spots and (optionally) an H&E image, a squidpy-style AnnData, or a
    :class:`~storm.io.Slide` from :func:`storm.io.resolve` (``sdata=`` is the previous release's name)."""

SLIDES_PARAM = """\
data
    One slide or a list of slides (SpatialData, squidpy-style AnnData or :class:`~storm.io.Slide`), computed
    jointly (``sdata=`` / ``sdatas=`` are the previous release's names)."""

RANDOM_STATE_PARAM = """\
random_state
    Seed of the random numbers (default ``storm.settings.seed``; ``seed=`` is the previous release's name)."""

MODEL_PARAM = """\
model
    ``None`` for the bundled default checkpoint, a checkpoint name or path, or a :class:`~storm.models.StormModel`."""

BATCH_SIZE_PARAM = """\
batch_size
    Niches per forward pass (default ``storm.settings.batch_size``)."""

COPY_PARAM = """\
copy
    Return a copy with the results instead of writing into ``data`` (for SpatialData: a new object sharing the
    other elements, with copied tables; for a list: a list of copies)."""

COPY_RETURNS = """\
Returns
-------
``None``, or with ``copy=True`` the copy (a list of copies for a list of slides)."""

_PARAMS = {
    "copy_returns": COPY_RETURNS,
    "data_param": DATA_PARAM,
    "slides_param": SLIDES_PARAM,
    "random_state_param": RANDOM_STATE_PARAM,
    "resolve_params": RESOLVE_PARAMS,
    "model_param": MODEL_PARAM,
    "batch_size_param": BATCH_SIZE_PARAM,
    "copy_param": COPY_PARAM,
}


def doc_params(func: F) -> F:
    """Replace each line ``{name}`` of ``func``'s docstring by the shared text ``name``, at that line's indentation.

    Examples
    --------
    >>> @doc_params
    ... def f(model=None):
    ...     '''Do it.
    ...
    ...     Parameters
    ...     ----------
    ...     {model_param}
    ...     '''
    >>> "bundled default checkpoint" in f.__doc__
    True
    """
    lines = []
    for line in (func.__doc__ or "").splitlines():
        name = line.strip()
        if name.startswith("{") and name.endswith("}") and name[1:-1] in _PARAMS:
            indent = line[: len(line) - len(line.lstrip())]
            lines.extend(indent + text if text else text for text in _PARAMS[name[1:-1]].splitlines())
        else:
            lines.append(line)
    func.__doc__ = "\n".join(lines)
    return func
