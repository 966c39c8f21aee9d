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


def test_torch_subpackages_are_reached_on_first_use():
    """``st.models``, ``st.data`` and ``st.train`` after a plain ``import storm as st``, which stays free of torch."""
    code = (
        "import sys; import storm as st; before = 'torch' in sys.modules; "
        "from storm.models import StormModel; from storm.data import Corpus; from storm.train import TrainConfig; "
        "assert st.models.StormModel is StormModel and st.data.Corpus is Corpus and st.train.TrainConfig is TrainConfig; "
        "assert {'data', 'models', 'train'} <= set(dir(st)); print(before)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False"]
    with pytest.raises(AttributeError, match="no attribute 'modles'"):
        st.modles  # noqa: B018


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
    assert st.settings.orientations == 8
    for bad in (4, True, "8", 0):
        with pytest.raises(ValueError, match="orientations"):
            st.settings.orientations = bad
    assert st.settings.orientations == 8
    st.settings.device = "cuda:1"
    assert st.settings.device == "cuda:1"
    st.settings.device = "auto"
    assert "batch_size" in repr(st.settings) and "orientations=8" in repr(st.settings)


def test_tile_cache_default_follows_machine_memory(monkeypatch):
    import os

    from storm._settings import default_tile_cache_mb

    sizes = {"SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(os, "sysconf", lambda name: sizes[name])
    for ram_gib, budget in ((4, 1024), (24, 3072), (256, 8192)):
        sizes["SC_PHYS_PAGES"] = ram_gib * 2**30 // 4096
        assert default_tile_cache_mb() == budget

    def unknown(name):
        raise ValueError(name)

    monkeypatch.setattr(os, "sysconf", unknown)
    assert default_tile_cache_mb() == 1024


def test_cli_version_and_errors(tmp_path):
    from storm._cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert main(["tile", str(tmp_path / "missing.zarr"), "--out", str(tmp_path / "o")]) == 2


def test_declared_dependencies_are_what_the_package_imports():
    """Every third-party module imported under src/storm is a core dependency, and every core one is imported."""
    import ast
    import re
    import tomllib
    from importlib.metadata import packages_distributions
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    declared = {
        re.split(r"[<>=!~\[ ]", d)[0].lower().replace("_", "-")
        for d in tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    modules = set()
    for path in (root / "src" / "storm").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    dists = packages_distributions()
    imported = {
        d.lower().replace("_", "-")
        for m in modules - set(sys.stdlib_module_names) - {"storm"}
        for d in dists.get(m, [m])
    }
    assert imported - declared == set(), f"imported but not declared: {sorted(imported - declared)}"
    # declared but never imported: only run-time needs of what is imported (scanpy's igraph Leiden, dask/zarr stores)
    # and torchvision, pinned beside torch so that pip takes the matching wheel for timm
    assert declared - imported <= {"igraph", "zarr", "dask", "torchvision"}, sorted(declared - imported)


def test_storm_logs_are_visible_by_default_and_follow_verbosity():
    code = (
        "import storm as st; sdata = st.datasets.demo(); st.pp.tile(sdata, tile_px=32); "
        "st.settings.verbosity = 'warning'; st.pp.tile(sdata, tile_px=32); "
        "st.settings.verbosity = 'debug'; st.io.resolve(sdata)"
    )
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    tiled = [line for line in err.splitlines() if line.startswith("storm: tiled")]
    assert len(tiled) == 1 and "151 spots" in tiled[0] and "obs['storm_tile_padded']" in tiled[0]
    resolved = [line for line in err.splitlines() if line.startswith("storm: resolved")]  # debug: only at the end
    assert len(resolved) == 1 and "µm/px" in resolved[0]
    with pytest.raises(ValueError, match="verbosity"):
        st.settings.verbosity = "loud"
