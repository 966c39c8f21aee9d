"""The resolution contract as one object: the table, image, spots, coordinate system, scale and counts layer of a call.

Every tool and plot takes the same seven keyword arguments (documented once, ``{resolve_params}``). A function declares
a keyword-only ``where: Where`` instead of spelling them out, and :func:`takes_where` gives it the seven arguments in
its public signature and hands them over as one :class:`Where`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ._slide import Slide

F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True)
class Where:
    """The seven resolution arguments of one call, as passed (``None``: inferred by :func:`storm.io.resolve`).

    Examples
    --------
    >>> Where(table_key="table").kwargs()["table_key"]
    'table'
    """

    table_key: Any = None
    image_key: Any = None
    shapes_key: Any = None
    coordinate_system: Any = None
    um_per_px: Any = None
    platform: Any = None
    layer: Any = None

    def kwargs(self) -> dict[str, Any]:
        """The arguments by name, to pass on to :func:`storm.io.resolve`."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def resolve(self, data: Any, **options: Any) -> Slide:
        """:func:`storm.io.resolve` of ``data`` with these arguments (and ``options`` such as ``image=False``)."""
        from ._resolve import resolve

        return resolve(data, **self.kwargs(), **options)


#: The arguments of the resolution contract, in the order signatures show them.
RESOLVE_ARGS = tuple(field.name for field in dataclasses.fields(Where))
_ANNOTATION = {"um_per_px": "float | None"}


def takes_where(func: F) -> F:
    """Give ``func``'s keyword-only ``where: Where`` parameter the seven resolution arguments in its public signature.

    The caller passes ``table_key=...`` and the others by keyword, as to :func:`storm.io.resolve`; ``func`` receives
    them as one :class:`Where`. ``help()``, ``inspect.signature`` and the docs show the seven arguments.

    Examples
    --------
    >>> @takes_where
    ... def tool(data, *, where: Where):
    ...     return where.layer
    >>> tool(None, layer="counts"), "table_key" in inspect.signature(tool).parameters
    ('counts', True)
    """
    signature = inspect.signature(func)
    if "where" not in signature.parameters:
        raise TypeError(f"{func.__qualname__} has no `where` parameter to give the resolution arguments to.")
    parameters = []
    for parameter in signature.parameters.values():
        if parameter.name == "where":
            parameters += [
                inspect.Parameter(
                    name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=_ANNOTATION.get(name, "str | None")
                )
                for name in RESOLVE_ARGS
            ]
        else:
            parameters.append(parameter)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        where = Where(**{name: kwargs.pop(name) for name in RESOLVE_ARGS if name in kwargs})
        return func(*args, where=where, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
