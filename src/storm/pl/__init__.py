"""Plotting over the H&E image (``st.pl``): domains, predicted genes and embeddings."""

from ._plots import domains, embedding, genes

__all__ = ["domains", "embedding", "genes"]
