"""Plotting over the H&E image (``st.pl``): domains, predicted genes, risk maps and embeddings."""

from ._plots import domains, embedding, genes
from ._risk import risk

__all__ = ["domains", "embedding", "genes", "risk"]
