"""Tools that compute on slides (``st.tl``): pretraining now; embeddings, predicted expression, domains and risk next."""

from ._pretrain import pretrain

__all__ = ["pretrain"]
