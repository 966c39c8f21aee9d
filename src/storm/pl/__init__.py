"""Plotting over the H&E image (``st.pl``): domains, genes, risk and embeddings (coming with the model)."""

__all__: list[str] = []
