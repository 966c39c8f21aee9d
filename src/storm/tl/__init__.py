"""Tools that compute on slides (``st.tl``): pretraining, embeddings, domains and expression predicted from H&E."""

from ._domains import domains
from ._embed import embed
from ._predict import predict_expression
from ._pretrain import pretrain

__all__ = ["domains", "embed", "predict_expression", "pretrain"]
