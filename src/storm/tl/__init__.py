"""Tools that compute on slides (``st.tl``): pretraining, adaptation, embeddings, domains, predicted expression, heads and risk."""

from ._adapt import adapt
from ._domains import domains
from ._embed import embed
from ._features import feature_extraction
from ._finetune import annotate, finetune
from ._head import StormHead
from ._predict import predict_expression
from ._pretrain import pretrain
from ._risk import fit_risk, risk

__all__ = [
    "StormHead",
    "adapt",
    "annotate",
    "domains",
    "embed",
    "feature_extraction",
    "finetune",
    "fit_risk",
    "predict_expression",
    "pretrain",
    "risk",
]
