"""The storm network (``storm.models``): nn.Modules, configs, the gene vocabulary and checkpoint I/O; no AnnData here."""

from ._batch import NicheBatch
from ._config import PRESETS, StormConfig
from ._heads import AttentionMILHead, SpotHead
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
    "AttentionMILHead",
    "GeneVocab",
    "NicheBatch",
    "SpotHead",
    "StormConfig",
    "StormModel",
    "StormOutput",
    "VocabAlignment",
    "ensembl_to_symbol",
]
