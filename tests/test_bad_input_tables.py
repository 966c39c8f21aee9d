"""Tables storm cannot read as they are: refused before any work with the fix, or read correctly."""

import hashlib
import warnings

import anndata as ad
import numpy as np
import pytest

import storm as st

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


@pytest.fixture(scope="module")
def adata():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return st.io.to_anndata(st.datasets.demo())


def test_a_backed_anndata_is_refused_and_its_file_left_alone(adata, tmp_path):
    path = tmp_path / "a.h5ad"
    adata.write_h5ad(path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    backed = ad.read_h5ad(path, backed="r")
    with pytest.raises(ValueError, match=r"opened in backed mode .*a\.h5ad.*adata\.to_memory\(\)"):
        st.tl.embed(backed, modality="expression")
    backed.file.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_float16_counts_embed_as_float32(adata):
    full, half = adata.copy(), adata.copy()
    full.X = full.X.toarray().astype(np.float32)  # counts are small integers: float16 holds them exactly
    half.X = full.X.astype(np.float16)
    for data in (full, half):
        st.tl.embed(data, modality="expression")
    np.testing.assert_allclose(half.obsm["X_storm"], full.obsm["X_storm"], atol=1e-5)


def test_no_genes_and_a_coarse_image_says_both(adata):
    """squidpy-style AnnData keep only the 'hires' image (2.8 µm/px here): too coarse for the 0.5 µm/px tiles."""
    no_genes = adata[:, []].copy()
    with pytest.raises(ValueError, match=r"2\.76 µm/px\) is 5\.5x coarser than the tiles.*um_per_px=.*no genes either"):
        st.tl.predict_expression(no_genes, genes=None)
    assert "storm_predicted" not in no_genes.obsm
