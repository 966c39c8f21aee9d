"""The data layer (``storm.data``): corpora of slides, niches, augmentation and the one loader of tools and trainer.

Between :mod:`storm.io` / :mod:`storm.pp` (resolved slides, tiles) and the model: tile geometry (pixels, µm), niche
size and gene vocabulary come from the model's config; every batch is a :class:`~storm.models.NicheBatch`.
"""

from ._augment import Augment
from ._corpus import Corpus
from ._corpus_slide import CorpusSlide
from ._crops import TissueCrops
from ._expression import log1p_cp10k
from ._features import SpotFeatures, feature_key, spot_features
from ._loader import NicheLoader, loader_workers
from ._neighbours import niche_neighbours, spot_ties
from ._niches import NicheBatchSampler, NicheDataset

__all__ = [
    "Augment",
    "Corpus",
    "CorpusSlide",
    "NicheBatchSampler",
    "NicheDataset",
    "NicheLoader",
    "SpotFeatures",
    "TissueCrops",
    "feature_key",
    "loader_workers",
    "log1p_cp10k",
    "niche_neighbours",
    "spot_features",
    "spot_ties",
]
