"""Tools that compute on slides (``st.tl``): embeddings, predicted expression, domains and risk (coming with the model)."""

__all__: list[str] = []
