"""Pretraining (``storm.train``): objectives, masking and the training loop.

The corpus, niches, augmentation and loader they train on are in :mod:`storm.data`.
"""

from .._frame import moved_names
from ._config import TrainConfig
from ._masking import make_masks
from ._objectives import ObjectiveWeights, StormObjectives, info_nce
from ._trainer import Trainer

__all__ = ["ObjectiveWeights", "StormObjectives", "TrainConfig", "Trainer", "info_nce", "make_masks"]

#: Names of :mod:`storm.data` this package re-exported until 0.2: reachable here for one release.
__getattr__ = moved_names(
    __name__,
    ("Augment", "Corpus", "CorpusSlide", "NicheBatchSampler", "NicheDataset", "log1p_cp10k", "niche_neighbours"),
    source="storm.data",
    new="storm.data",
)
