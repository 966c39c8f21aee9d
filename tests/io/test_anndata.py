import numpy as np
import pytest

import storm as st
from storm.datasets._synthetic import synthetic


def test_round_trip_keeps_geometry_and_scale():
    sdata = synthetic(1500, 1200, um_per_px=0.5)
    adata = st.io.to_anndata(sdata, hires_px=400)
    lib = adata.uns["spatial"]["synthetic"]
    assert lib["scalefactors"]["microns_per_pixel"] == pytest.approx(0.5)
    assert lib["scalefactors"]["spot_diameter_fullres"] == pytest.approx(110.0)
    hires = lib["images"]["hires"]
    assert hires.dtype == np.uint8 and max(hires.shape[:2]) <= 400
    # The hires image is the full image scaled by tissue_hires_scalef.
    assert hires.shape[0] == pytest.approx(1500 * lib["scalefactors"]["tissue_hires_scalef"], abs=1)

    back = st.io.resolve(st.io.from_anndata(adata))
    orig = st.io.resolve(sdata)
    np.testing.assert_allclose(back.spot_xy_um, orig.spot_xy_um, atol=1e-6)
    np.testing.assert_allclose(back.spot_diameter_um, 55.0)
    assert back.um_per_px == pytest.approx(0.5 / lib["scalefactors"]["tissue_hires_scalef"])


def test_anndata_input_writes_into_the_users_object():
    adata = st.io.to_anndata(synthetic(800, 800, um_per_px=0.5))
    keys_before = set(adata.obs.columns)
    ts = st.pp.tile(adata, 32, 16.0)
    assert len(ts) == adata.n_obs
    assert "tiles" in adata.uns["storm"]
    assert set(adata.obs.columns) - keys_before == {"storm_tile_padded"}


def test_from_anndata_errors():
    adata = st.io.to_anndata(synthetic(512, 512))
    del adata.uns["spatial"]["synthetic"]["scalefactors"]["spot_diameter_fullres"]
    with pytest.raises(KeyError, match="spot_diameter_fullres"):
        st.io.from_anndata(adata)
    adata.uns.pop("spatial")
    with pytest.raises(KeyError, match="uns\\['spatial'\\]"):
        st.io.from_anndata(adata)
    with pytest.raises(KeyError, match="obsm"):
        st.io.from_anndata(adata, spatial_key="xy")
