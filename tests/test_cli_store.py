"""storm embed / predict / domains on a .zarr store: results written back, and a failed write leaves the store as it was."""

import warnings

import numpy as np
import pytest
import spatialdata

import storm as st
from storm._cli import main
from storm.io import _write

#: About what the commands write, not orientation: one pass per niche (tests/conftest.py::orientations).
ONE_PASS = True


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "demo.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st.datasets.demo().write(path)
    return path


def read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return spatialdata.read_zarr(path)


def test_embed_then_domains_then_predict_write_back(store, capsys):
    assert main(["embed", str(store)]) == 0
    assert "obsm ['X_storm', 'X_storm_gene', 'X_storm_image'] for 151 spots" in capsys.readouterr().out
    on_disk = read(store)
    expected = st.datasets.demo()
    st.tl.embed(expected)
    np.testing.assert_allclose(on_disk["table"].obsm["X_storm"], expected["table"].obsm["X_storm"], atol=1e-5)
    assert on_disk["table"].uns["storm"]["X_storm"]["model"] == "default"
    assert list(on_disk.images) == ["he"] and list(on_disk.shapes) == ["spots"]

    assert main(["domains", str(store), "--n-domains", "3"]) == 0
    table = read(store)["table"]
    assert table.obs["storm_domain"].cat.categories.tolist() == ["0", "1", "2"]
    assert table.uns["storm"]["storm_domain"]["method"] == "gmm"
    expected_labels = table.obs["storm_domain"].astype(int).to_numpy()
    st.tl.domains(expected, 3, random_state=0)
    np.testing.assert_array_equal(expected_labels, expected["table"].obs["storm_domain"].astype(int).to_numpy())
    assert main(["domains", str(store), "--n-domains", "3", "--method", "kmeans"]) == 0
    assert read(store)["table"].uns["storm"]["storm_domain"]["method"] == "kmeans"
    assert "X_storm" in table.obsm  # earlier results kept

    assert main(["predict", str(store), "--genes", "ERBB2", "KRT19"]) == 0
    table = read(store)["table"]
    columns = table.var_names.get_indexer(["ERBB2", "KRT19"])
    assert np.isfinite(table.layers["storm_predicted"][:, columns]).all()
    assert table.var["storm_predicted"].sum() == 2 and "storm_domain" in table.obs
    assert sorted(p.name for p in store.parent.iterdir()) == ["demo.zarr"]  # no staging or backup left


def test_failed_write_leaves_the_store_as_it_was(tmp_path, monkeypatch, capsys):
    path = tmp_path / "demo.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st.datasets.demo().write(path)
    before = read(path)["table"]
    calls = []

    def fail_once(store):
        calls.append(store)
        if len(calls) == 1:
            raise OSError("disk full")
        _consolidate(store)

    _consolidate = _write._consolidate
    monkeypatch.setattr(_write, "_consolidate", fail_once)
    with pytest.raises(OSError, match="disk full"):
        main(["embed", str(path)])
    after = read(path)["table"]
    assert set(after.obsm) == set(before.obsm) == {"spatial"}
    np.testing.assert_array_equal(after.X.toarray(), before.X.toarray())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.zarr"]


def test_bad_store_path(tmp_path, capsys):
    assert main(["embed", str(tmp_path / "missing.zarr")]) == 2
    assert "pass a SpatialData .zarr store" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="not a zarr store"):
        _write.write_table(tmp_path, st.datasets.demo()["table"], "table")


def test_predict_on_a_tissue_grid_store_reports_what_it_wrote(tmp_path, capsys):
    """An H&E-only table (a tissue grid) gets its predictions in obsm; the command said "error: 'storm_predicted'"."""
    sdata = st.datasets.demo()
    um_per_px = st.io.resolve(sdata).um_per_px
    del sdata.tables["table"]
    st.pp.tissue_grid(sdata, um_per_px=um_per_px, pitch_um=200.0)
    path = tmp_path / "grid.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdata.write(path)
    assert main(["predict", str(path), "--genes", "ERBB2", "KRT19"]) == 0
    out = capsys.readouterr().out
    assert "wrote obsm['storm_predicted'] for 2 genes" in out and "table 'tissue_grid'" in out
    frame = read(path)["tissue_grid"].obsm["storm_predicted"]
    assert list(frame.columns) == ["ERBB2", "KRT19"] and (frame.to_numpy() >= 0).all()
