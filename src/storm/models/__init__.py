"""The storm network (``storm.models``): nn.Modules, configs and checkpoint I/O; no AnnData here."""

from ._config import PRESETS, StormConfig
from ._model import StormModel, StormOutput

__all__ = ["PRESETS", "StormConfig", "StormModel", "StormOutput"]
