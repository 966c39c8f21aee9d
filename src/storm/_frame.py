"""The frame every tool and plot shares: one first argument, the resolution arguments, ``copy=`` and ``random_state``.

A tool is written as its computation only::

    @tool
    def embed(data, *, model=None, modality="auto", where: Where, batch_size=None, key_added="X_storm"):
        slide = where.resolve(data)
        ...  # check keys, compute, write_results

and :func:`tool` gives it the contract every tool keeps:

* the first argument is ``data`` (a SpatialData, an AnnData, a resolved :class:`~storm.io.Slide`, or for tools over
  several slides a list of them);
* ``where: Where`` becomes the seven resolution arguments of :func:`storm.io.resolve`
  (:func:`~storm.io._where.takes_where`);
* ``copy=False`` is added: with ``copy=True`` the body writes into a copy of ``data`` (a list of copies for a list),
  which is returned, and ``data`` is left as it was; without it the tool returns ``None``. Tools that return an object
  (a head, a model, a tile set) declare ``copy`` themselves or not at all;
* ``random_state=None`` means ``storm.settings.seed``;
* names of the previous release keep working for one release with a :class:`FutureWarning`: ``sdata=`` / ``sdatas=`` /
  ``corpus=`` for ``data``, ``seed=`` for ``random_state``, and arguments now keyword-only (``positional=``) passed
  by position.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .io._where import takes_where

F = TypeVar("F", bound=Callable[..., Any])

#: Argument names of the previous release and what they are now.
RENAMED = {"sdata": "data", "sdatas": "data", "corpus": "data", "seed": "random_state"}
#: The release that drops the deprecated names.
REMOVED_IN = "0.3"


def tool(func: F | None = None, *, copy: bool = True, positional: tuple[str, ...] = ()) -> Any:
    """Wrap a tool's computation in the shared frame (see the module docstring).

    Parameters
    ----------
    func
        The computation: first parameter ``data``; optionally a keyword-only ``where: Where`` and ``random_state``.
    copy
        Add ``copy=False`` to the signature and return the copy (``copy=True``) or ``None``.
    positional
        Keyword-only parameters that earlier releases took by position (after the positional ones), accepted so with a
        :class:`FutureWarning`.

    Examples
    --------
    >>> @tool
    ... def count(data, *, key_added="n"):
    ...     data.uns[key_added] = data.n_obs
    >>> import anndata, numpy as np
    >>> adata = anndata.AnnData(np.zeros((3, 2)))
    >>> count(adata, copy=True).uns["n"], "n" in adata.uns
    (3, False)
    """
    if func is None:
        return functools.partial(tool, copy=copy, positional=positional)
    body = takes_where(func) if "where" in inspect.signature(func).parameters else func
    signature = inspect.signature(body)
    names = list(signature.parameters)
    if names[0] != "data":
        raise TypeError(f"the first parameter of tool {func.__qualname__} must be `data`, not `{names[0]}`.")
    n_positional = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in signature.parameters.values())
    seeded = "random_state" in signature.parameters

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        args, kwargs = _current_names(func.__name__, args, kwargs, n_positional, positional, names)
        if seeded and kwargs.get("random_state") is None:
            from ._settings import settings

            kwargs["random_state"] = settings.seed
        if not copy:
            return body(*args, **kwargs)
        bound = signature.bind_partial(*args, **{k: v for k, v in kwargs.items() if k != "copy"})
        copying = bool(kwargs.pop("copy", False))
        if "data" not in bound.arguments:
            raise TypeError(f"{func.__name__}() missing the required argument `data`.")
        target = _target(bound.arguments["data"], copying)
        bound.arguments["data"] = target
        result = body(*bound.args, **bound.kwargs)
        if result is not None:
            raise RuntimeError(f"tool {func.__qualname__} returned a value; writing tools return nothing.")
        return target if copying else None

    parameters = list(signature.parameters.values())
    if copy:
        parameters.append(inspect.Parameter("copy", inspect.Parameter.KEYWORD_ONLY, default=False, annotation="bool"))
    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return wrapper


def previous_names(func: F) -> F:
    """Accept the previous release's spellings of ``func``'s arguments (``seed=`` for ``random_state=``), warning.

    Examples
    --------
    >>> @previous_names
    ... def draw(n, *, random_state=0):
    ...     return random_state
    >>> import warnings
    >>> with warnings.catch_warnings(record=True):
    ...     warnings.simplefilter("always")
    ...     draw(1, seed=3)
    3
    """
    names = list(inspect.signature(func).parameters)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        args, kwargs = _current_names(func.__name__, args, kwargs, len(args), (), names)
        return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def deprecated_alias(new: F, old: str, module: str = "storm.tl") -> F:
    """``new`` under its previous name ``old``: same signature and results, with a :class:`FutureWarning` per call.

    Examples
    --------
    >>> def fit_head(data):
    ...     return data
    >>> finetune = deprecated_alias(fit_head, "finetune")
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     finetune(1), caught[0].category.__name__
    (1, 'FutureWarning')
    """

    @functools.wraps(new)
    def alias(*args: Any, **kwargs: Any) -> Any:
        warnings.warn(
            f"{module}.{old} is now {module}.{new.__name__} (same arguments and results); {old} will be removed in "
            f"storm {REMOVED_IN}.",
            FutureWarning,
            stacklevel=2,
        )
        return new(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old
    alias.__doc__ = f"Deprecated alias of :func:`{module}.{new.__name__}`, removed in storm {REMOVED_IN}."
    return alias  # type: ignore[return-value]


def moved_names(module: str, moved: tuple[str, ...], source: str, new: str) -> Callable[[str], object]:
    """A module ``__getattr__`` that serves ``moved`` names from ``source`` for one release, each with a warning.

    ``new`` is where users should take them from now.

    Examples
    --------
    >>> get = moved_names("storm.train", ("Corpus",), source="storm.data", new="storm.data")
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     get("Corpus").__name__, str(caught[0].message).startswith("storm.train.Corpus is now storm.data.Corpus")
    ('Corpus', True)
    """

    def __getattr__(name: str) -> object:
        if name not in moved:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        import importlib

        warnings.warn(
            f"{module}.{name} is now {new}.{name}; the old place will be removed in storm {REMOVED_IN}.",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(source), name)

    return __getattr__


def _current_names(
    name: str, args: tuple, kwargs: dict[str, Any], n_positional: int, positional: tuple[str, ...], names: list[str]
) -> tuple[tuple, dict[str, Any]]:
    """``args`` and ``kwargs`` with the previous release's spellings moved to the current names, with a warning each."""
    for old, new in RENAMED.items():
        if old in kwargs and old not in names and new in names:
            if new in kwargs or (new == "data" and args):
                raise TypeError(f"{name}() got both `{old}` (its previous name) and `{new}`; pass `{new}` only.")
            _warn(f"`{old}=` of {name}() is now `{new}=`")
            kwargs[new] = kwargs.pop(old)
    if len(args) > n_positional:
        extra = args[n_positional:]
        if len(extra) > len(positional):
            raise TypeError(f"{name}() takes {n_positional} positional arguments but {len(args)} were given.")
        for key, value in zip(positional, extra, strict=False):
            if key in kwargs:
                raise TypeError(f"{name}() got `{key}` both by position and by keyword; pass it by keyword only.")
            _warn(f"{name}() takes `{key}` by keyword only now: pass `{key}=...`")
            kwargs[key] = value
        args = args[:n_positional]
    return args, kwargs


def _warn(what: str) -> None:
    warnings.warn(f"{what}; the old spelling will be removed in storm {REMOVED_IN}.", FutureWarning, stacklevel=4)


def _target(data: Any, copy: bool) -> Any:
    """What a tool writes into: ``data`` itself, or with ``copy=True`` a copy (a list of copies for a list)."""
    if isinstance(data, Sequence) and not isinstance(data, str):
        return [copy_of(d) for d in data] if copy else data
    return copy_of(data) if copy else data


def copy_of(data: Any) -> Any:
    """A copy of ``data`` sharing all but the tables (SpatialData), or a full copy (AnnData)."""
    from anndata import AnnData

    from .io import Slide

    if isinstance(data, Slide):
        raise TypeError("`copy=True` needs the SpatialData or AnnData, not a resolved Slide; pass the data itself.")
    if isinstance(data, AnnData):
        return data.copy()
    from spatialdata import SpatialData

    if not isinstance(data, SpatialData):
        raise TypeError(f"`copy=True` needs a SpatialData or an AnnData, got {type(data).__name__}.")
    return SpatialData(
        images=dict(data.images),
        labels=dict(data.labels),
        points=dict(data.points),
        shapes=dict(data.shapes),
        tables={k: v.copy() for k, v in data.tables.items()},
    )
