"""storm's logger (``logging.getLogger("storm")``), visible by default at ``storm.settings.verbosity``.

A handler writing ``storm: <message>`` to stderr is attached once, so users see what storm resolved and wrote
without configuring logging. Records still propagate: once the application configures logging itself (handlers on
the root logger, e.g. ``logging.basicConfig``), storm's handler stays quiet and the application's handlers show them,
so nothing is printed twice. Set ``storm.settings.verbosity`` (``"warning"``, ``"info"``, ``"debug"``) to change
what is shown.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("storm")


class _UnlessRootConfigured(logging.Filter):
    """Pass records only while the root logger has no handlers of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not logging.getLogger().handlers


def _install_handler() -> None:
    if any(isinstance(f, _UnlessRootConfigured) for h in logger.handlers for f in h.filters):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("storm: %(message)s"))
    handler.addFilter(_UnlessRootConfigured())
    logger.addHandler(handler)


_install_handler()
if logger.level == logging.NOTSET:
    logger.setLevel(logging.INFO)
