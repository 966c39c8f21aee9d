"""Pretraining (``storm.train``): objectives, masking and the training loop.

The corpus, niches, augmentation and loader live in :mod:`storm.data`; their names are importable from here too.
"""

from ..data import Augment as Augment
from ..data import Corpus as Corpus
from ..data import CorpusSlide as CorpusSlide
from ..data import NicheBatchSampler as NicheBatchSampler
from ..data import NicheDataset as NicheDataset
from ..data import log1p_cp10k as log1p_cp10k
from ..data import niche_neighbours as niche_neighbours
from ._config import TrainConfig
from ._masking import make_masks
from ._objectives import ObjectiveWeights, StormObjectives, info_nce
from ._trainer import Trainer

__all__ = ["ObjectiveWeights", "StormObjectives", "TrainConfig", "Trainer", "info_nce", "make_masks"]
