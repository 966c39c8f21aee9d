import subprocess
import sys

import pytest

import storm as st


def test_import_is_light_and_fast():
    code = (
        "import sys, time; t = time.perf_counter(); import storm; dt = time.perf_counter() - t; "
        "heavy = [m for m in ('torch', 'timm', 'spatialdata', 'squidpy', 'scanpy', 'anndata', 'dask') if m in sys.modules]; "
        "print(dt, ','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1:] == [], f"import storm pulled in {out[1:]}"
    assert float(out[0]) < 1.0


def test_namespaces():
    for name in ("pp", "tl", "pl", "io", "datasets", "settings"):
        assert hasattr(st, name)
    import storm.pp

    assert storm.pp.tile is st.pp.tile
    assert st.__version__.count(".") == 2


def test_settings_validate():
    old = st.settings.batch_size
    st.settings.batch_size = 8
    assert st.settings.batch_size == 8
    st.settings.batch_size = old
    with pytest.raises(ValueError, match="batch_size"):
        st.settings.batch_size = 0
    with pytest.raises(ValueError, match="device"):
        st.settings.device = "tpu"
    with pytest.raises(ValueError, match="precision"):
        st.settings.precision = "int4"
    st.settings.device = "cuda:1"
    assert st.settings.device == "cuda:1"
    st.settings.device = "auto"
    assert "batch_size" in repr(st.settings)


def test_cli_version_and_errors(tmp_path):
    from storm._cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert main(["tile", str(tmp_path / "missing.zarr"), "--out", str(tmp_path / "o")]) == 2
