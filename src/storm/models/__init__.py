"""The storm network (``storm.models``): nn.Modules, configs, the gene vocabulary and checkpoint I/O; no AnnData here."""

from .._frame import moved_names
from ._batch import NicheBatch
from ._config import PRESETS, StormConfig
from ._model import StormModel, StormOutput
from ._pathology import (
    ENCODERS,
    EncoderSpec,
    EncoderUnavailableError,
    PathologyEncoder,
    load_encoder,
    register_encoder,
)
from ._vocab import GeneVocab, VocabAlignment, ensembl_to_symbol

__all__ = [
    "ENCODERS",
    "EncoderSpec",
    "EncoderUnavailableError",
    "PathologyEncoder",
    "load_encoder",
    "register_encoder",
    "PRESETS",
    "GeneVocab",
    "NicheBatch",
    "StormConfig",
    "StormModel",
    "StormOutput",
    "VocabAlignment",
    "ensembl_to_symbol",
]


#: Head modules that moved to ``storm.tl`` with everything else about heads: reachable here for one release.
__getattr__ = moved_names(__name__, ("AttentionMILHead", "SpotHead"), source="storm.tl._heads._modules", new="storm.tl")
