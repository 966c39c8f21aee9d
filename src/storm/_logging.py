"""storm's logger (``logging.getLogger("storm")``)."""

from __future__ import annotations

import logging

logger = logging.getLogger("storm")
