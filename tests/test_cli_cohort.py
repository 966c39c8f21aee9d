"""storm embed / domains on a cohort: several stores or a folder of them, sharded over ranks, failures isolated."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import spatialdata
import torch

import storm as st
from storm._cli import main
from storm.models import GeneVocab, StormConfig, StormModel


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny checkpoint that knows the demo's first 300 genes and the synthetic slides' GENE0..GENE7."""
    genes = [*st.datasets.demo()["table"].var_names[:300], *(f"GENE{i}" for i in range(8))]
    torch.manual_seed(0)
    config = StormConfig.from_preset("tiny", image_size=32, tile_um=64.0, niche_size=4)
    path = tmp_path_factory.mktemp("model") / "tiny"
    StormModel(config, vocab=GeneVocab.from_genes(genes)).save_pretrained(path)
    return path


def slides():
    """Three small slides: the demo crop and two synthetic ones, by store name."""
    return {
        "a.zarr": st.datasets.synthetic(600, 700, um_per_px=0.5, n_genes=8, random_state=1),
        "b.zarr": st.datasets.demo(),
        "c.zarr": st.datasets.synthetic(700, 600, um_per_px=0.5, n_genes=8, random_state=2),
    }


def write(sdata, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdata.write(path)
    return path


def read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return spatialdata.read_zarr(path)


def write_without_table(path):
    """A SpatialData store with an image and spots but no table: nothing to embed."""
    sdata = st.datasets.synthetic(300, 300, n_genes=0)
    del sdata.tables["table"]
    return write(sdata, path)


@pytest.fixture
def cohort(tmp_path):
    folder = tmp_path / "cohort"
    for name, sdata in slides().items():
        write(sdata, folder / name)
    return folder


def expected_embeddings(tiny):
    model = StormModel.from_pretrained(tiny)
    out = {}
    for name, sdata in slides().items():
        st.tl.embed(sdata, model=model)
        out[name] = sdata["table"].obsm["X_storm"]
    return out


def test_embed_stores_and_a_folder_like_direct_embed(cohort, tiny, capsys):
    stores = [str(cohort / name) for name in ("c.zarr", "a.zarr", "b.zarr")]
    assert main(["embed", *stores, "--model", str(tiny)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.rsplit(" of ", 1)[1] for line in out[:3]] == sorted(stores)  # one line per store, sorted order
    assert all(
        line.startswith("storm embed: wrote obsm ['X_storm', 'X_storm_gene', 'X_storm_image']") for line in out[:3]
    )
    assert out[3:] == ["storm embed: 3 of 3 stores done"]
    expected = expected_embeddings(tiny)
    for name, values in expected.items():
        on_disk = read(cohort / name)["table"].obsm["X_storm"]
        assert np.isfinite(on_disk).all() and np.abs(on_disk).sum() > 0
        np.testing.assert_allclose(on_disk, values, atol=1e-5)

    assert main(["domains", str(cohort), "--n-domains", "2"]) == 0  # the folder form: every *.zarr inside, per store
    assert capsys.readouterr().out.splitlines()[-1] == "storm domains: 3 of 3 stores done"
    for name, values in expected.items():
        table = read(cohort / name)["table"]
        assert table.obs["storm_domain"].cat.categories.tolist() == ["0", "1"]
        np.testing.assert_allclose(table.obsm["X_storm"], values, atol=1e-5)  # kept, not recomputed
    assert sorted(p.name for p in cohort.iterdir()) == ["a.zarr", "b.zarr", "c.zarr"]  # no staging or backup left


def test_each_rank_takes_its_shard_without_a_process_group(cohort, tiny, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda **kwargs: None)  # as if none could be joined
    monkeypatch.setenv("RANK", "0")
    assert main(["embed", str(cohort), "--model", str(tiny)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.rsplit("/", 1)[1] for line in out[:2]] == ["a.zarr", "c.zarr"]  # stores 0 and 2 of the sorted list
    assert all(line.startswith("storm embed [rank 0/2]: wrote") for line in out[:2])
    assert out[2:] == ["storm embed [rank 0/2]: 2 of 2 stores done of this rank's shard (no process group)"]
    assert ["X_storm" in read(cohort / name)["table"].obsm for name in ("a.zarr", "b.zarr", "c.zarr")] == [
        True,
        False,
        True,
    ]
    monkeypatch.setenv("RANK", "1")
    assert main(["embed", str(cohort), "--model", str(tiny)]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("b.zarr")
    assert "X_storm" in read(cohort / "b.zarr")["table"].obsm


def test_a_failing_store_is_reported_and_the_others_finish(tmp_path, tiny, capsys):
    good = [write(slides()[name], tmp_path / name) for name in ("a.zarr", "c.zarr")]
    write_without_table(tmp_path / "b.zarr")
    assert main(["embed", str(tmp_path), "--model", str(tiny)]) == 1
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.startswith("storm ")]  # not the progress bars
    assert len(err) == 1 and err[0].startswith(f"storm embed: failed {tmp_path / 'b.zarr'}: ValueError: ")
    out = captured.out.splitlines()
    assert len(out) == 3 and out[-1].startswith(f"storm embed: 2 of 3 stores done; 1 failed: {tmp_path / 'b.zarr'} (")
    assert all("X_storm" in read(path)["table"].obsm for path in good)

    assert main(["predict", *map(str, good), "--genes", "GENE0", "GENE1", "--model", str(tiny)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "storm predict: 2 of 2 stores done"
    for path in good:
        table = read(path)["table"]
        assert np.isfinite(table.layers["storm_predicted"][:, :2]).all() and table.var["storm_predicted"].sum() == 2


def test_bad_paths_are_refused_before_any_compute(tmp_path, capsys, monkeypatch):
    from storm.tl import _model_arg

    store = write(slides()["a.zarr"], tmp_path / "a.zarr")
    monkeypatch.setattr(_model_arg, "get_model", lambda model: pytest.fail("computed before checking the paths"))
    (tmp_path / "notes.txt").write_text("not a store")
    (tmp_path / "empty").mkdir()
    (tmp_path / "mixed").mkdir()
    write(slides()["c.zarr"], tmp_path / "mixed" / "c.zarr")
    (tmp_path / "mixed" / "d.zarr").mkdir()
    cases = {
        tmp_path / "missing.zarr": "does not exist",
        tmp_path / "notes.txt": "is not a zarr store",
        tmp_path / "empty": "holds no *.zarr store",
        tmp_path / "mixed": f"{tmp_path / 'mixed' / 'd.zarr'} (in {tmp_path / 'mixed'}) is not a zarr store",
    }
    for path, message in cases.items():
        assert main(["embed", str(store), str(path)]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith(f"storm embed: error: {path}") and message in err[0], err
    assert "X_storm" not in read(store)["table"].obsm


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(cohort, tiny):
    write_without_table(cohort / "d.zarr")  # fails on rank 1 (stores a, c on rank 0; b, d on rank 1)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "storm._cli", "embed", str(cohort), "--model", str(tiny)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode != 0  # one store failed: every rank exits 1 and torchrun reports it
    lines = done.stdout.splitlines()
    for rank, names in {0: ["a.zarr", "c.zarr"], 1: ["b.zarr"]}.items():
        wrote = [line.rsplit("/", 1)[1] for line in lines if line.startswith(f"storm embed [rank {rank}/2]: wrote")]
        assert wrote == names, done.stdout
    summary = [line for line in lines if "stores done" in line]
    assert len(summary) == 1, done.stdout  # from rank 0 only
    assert summary[0].startswith(f"storm embed: 3 of 4 stores done on 2 processes; 1 failed: {cohort / 'd.zarr'} (")
    assert f"storm embed [rank 1/2]: failed {cohort / 'd.zarr'}: ValueError" in done.stderr
    expected = expected_embeddings(tiny)
    for name, values in expected.items():
        np.testing.assert_allclose(read(cohort / name)["table"].obsm["X_storm"], values, atol=1e-5)
