"""Tools that compute on slides (``st.tl``): pretraining, embeddings and expression predicted from H&E."""

from ._embed import embed
from ._predict import predict_expression
from ._pretrain import pretrain

__all__ = ["embed", "predict_expression", "pretrain"]
