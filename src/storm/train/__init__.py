"""Pretraining (``storm.train``): the corpus, niche batches, augmentation, objectives and the training loop."""

from ._augment import Augment
from ._config import TrainConfig
from ._corpus import Corpus, CorpusSlide, log1p_cp10k, niche_neighbours
from ._masking import make_masks
from ._niches import NicheBatchSampler, NicheDataset, collate_niches
from ._objectives import ObjectiveWeights, StormObjectives, info_nce
from ._trainer import Trainer

__all__ = [
    "Augment",
    "Corpus",
    "CorpusSlide",
    "NicheBatchSampler",
    "NicheDataset",
    "ObjectiveWeights",
    "StormObjectives",
    "TrainConfig",
    "Trainer",
    "collate_niches",
    "info_nce",
    "log1p_cp10k",
    "make_masks",
    "niche_neighbours",
]
