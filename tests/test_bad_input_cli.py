"""Bad input from real command-line workflows: refused before any work with one line on stderr, nothing overwritten.

Each refused case checks the exit code (2), that stderr is one line naming the argument and the fix (no traceback),
that no work started, and that every file under the test folder is exactly as it was. The other cases check the
correct behaviour: reruns into storm's own output, stale staging folders swept, stores named by ``.`` or a link.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from pathlib import Path

import pytest
import spatialdata
import torch

import storm as st
from storm import _cli
from storm._cli import main
from storm.data import Corpus
from storm.models import GeneVocab, StormConfig, StormModel
from storm.tl import _model_arg
from storm.tl._pretrain import check_output

from ._fingerprint import fingerprint


def write(sdata, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdata.write(path)
    return path


def read(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return spatialdata.read_zarr(path)


def slide(seed: int = 1):
    return st.datasets.synthetic(300, 300, um_per_px=0.5, n_genes=8, random_state=seed)


def listing(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` (links not followed) with a hash of its contents: what a user could lose."""
    out = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            out[key] = f"-> {os.readlink(path)}"
        elif path.is_file():
            out[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[key] = "dir"
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny checkpoint that knows the synthetic slides' GENE0..GENE7."""
    torch.manual_seed(0)
    config = StormConfig.from_preset("tiny", image_size=32, tile_um=64.0, niche_size=4)
    path = tmp_path_factory.mktemp("model") / "tiny"
    StormModel(config, vocab=GeneVocab.from_genes([f"GENE{i}" for i in range(8)])).save_pretrained(path)
    return path


def read_only(monkeypatch, folder: Path) -> None:
    """Make ``folder`` read-only, also for root (whom file modes do not stop): os.access says so."""
    folder.chmod(0o555)
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != folder and access(p, mode, **kw))


def user_folder(tmp: Path) -> Path:
    (tmp / "user").mkdir()
    (tmp / "user" / "my.csv").write_text("mine")
    return tmp / "user"


def config_yaml(tmp: Path, corpus: str, body: str = "model: tiny\n") -> Path:
    (tmp / "cfg.yaml").write_text(f"corpus: [{corpus}]\n{body}")
    return tmp / "cfg.yaml"


# name: (build the case in tmp, return argv), (words the one-line message must hold: the argument, the fault, the fix)
CASES = {
    "tile --out is a file": (
        lambda tmp, mp: ["tile", "demo", "--out", str(tmp / "notes.txt")],
        ["--out", "is a file", "pass a new or empty folder"],
    ),
    "analyze --out is an existing .h5ad": (
        lambda tmp, mp: ["analyze", "demo", "--out", str(tmp / "results.h5ad")],
        ["--out", "is a file", "pass a new or empty folder"],
    ),
    "analyze --out holds the user's files": (
        lambda tmp, mp: ["analyze", "demo", "--out", str(user_folder(tmp))],
        ["--out", "already holds my.csv", "pass a new or empty folder", "summary.json, which are replaced"],
    ),
    "tile --out is read-only": (
        lambda tmp, mp: read_only(mp, user_folder(tmp)) or ["tile", "demo", "--out", str(tmp / "user" / "new")],
        ["--out", "is read-only", "pass a folder you can write to"],
    ),
    "tile source is a folder but not a zarr store": (
        lambda tmp, mp: ["tile", str(user_folder(tmp)), "--out", str(tmp / "out")],
        ["source", "is not a zarr store", "pass a SpatialData .zarr store or 'demo'"],
    ),
    "analyze source is a file": (
        lambda tmp, mp: ["analyze", str(tmp / "notes.txt"), "--out", str(tmp / "out")],
        ["source", "is not a zarr store", "pass a SpatialData .zarr store or 'demo'"],
    ),
    "tile --out inside the input store": (
        lambda tmp, mp: ["tile", str(tmp / "a.zarr"), "--out", str(tmp / "a.zarr" / "tiles")],
        ["--out", "is inside the input", "pass a folder outside it"],
    ),
    "tile --out is the input store": (
        lambda tmp, mp: ["tile", str(tmp / "a.zarr"), "--out", str(tmp / "a.zarr")],
        ["--out", "is inside the input", "pass a folder outside it"],
    ),
    "tile --out below a file": (
        lambda tmp, mp: ["tile", "demo", "--out", str(tmp / "notes.txt" / "tiles")],
        ["--out", "is a file, not a folder", "pass another folder"],
    ),
    "tile --out is a link to nothing": (
        lambda tmp, mp: (tmp / "link").symlink_to(tmp / "gone") or ["tile", "demo", "--out", str(tmp / "link")],
        ["--out", "symbolic link to nothing", "remove the link or pass another folder"],
    ),
    "analyze --out named like a data file": (
        lambda tmp, mp: ["analyze", "demo", "--out", str(tmp / "new.h5ad")],
        ["--out", "named like a data file", "names a folder: pass e.g. "],
    ),
    "embed a store in a read-only folder": (
        lambda tmp, mp: read_only(mp, tmp / "ro") or ["embed", str(tmp / "ro" / "b.zarr")],
        ["b.zarr cannot be written", "is read-only", "make the store and its folder writable"],
    ),
    "embed a store that is a file": (
        lambda tmp, mp: ["embed", str(tmp / "a.zarr"), str(tmp / "notes.txt")],
        ["notes.txt is not a zarr store", "pass a SpatialData .zarr store"],
    ),
    "domains --method leiden with --n-domains": (
        lambda tmp, mp: ["domains", str(tmp / "a.zarr"), "--n-domains", "3", "--method", "leiden"],
        ["method='leiden'", "n_domains=3", "drop --n-domains"],
    ),
    "domains --resolution 0": (
        lambda tmp, mp: ["domains", str(tmp / "a.zarr"), "--resolution", "0"],
        ["--resolution", "must be a positive number", "got 0.0"],
    ),
    "domains --n-domains 0": (
        lambda tmp, mp: ["domains", str(tmp / "a.zarr"), "--n-domains", "0"],
        ["--n-domains", "must be a positive integer", "got 0"],
    ),
    "pretrain --config is a folder": (
        lambda tmp, mp: ["pretrain", "--config", str(user_folder(tmp))],
        ["--config", "is not a file", "pass a YAML file"],
    ),
    "pretrain --config is not YAML": (
        lambda tmp, mp: ["pretrain", "--config", str(config_yaml(tmp, "demo", "model: [tiny\n"))],
        ["--config", "is not valid YAML", "fix the file"],
    ),
    "pretrain --output-dir is a file": (
        lambda tmp, mp: ["pretrain", "--config", str(config_yaml(tmp, "demo")), "--output-dir", str(tmp / "notes.txt")],
        ["output_dir", "is a file", "pass a new or empty folder"],
    ),
    "pretrain --output-dir holds the user's files": (
        lambda tmp, mp: ["pretrain", "--config", str(config_yaml(tmp, "demo")), "--output-dir", str(user_folder(tmp))],
        ["output_dir", "already holds my.csv", "pass a new or empty output_dir, or an earlier run's folder"],
    ),
    "pretrain --output-dir inside a corpus store": (
        lambda tmp, mp: [
            "pretrain",
            "--config",
            str(config_yaml(tmp, tmp / "a.zarr")),
            "--output-dir",
            str(tmp / "a.zarr" / "run"),
        ],
        ["output_dir", "is inside the input", "pass a folder outside it"],
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_refused_before_any_work_and_nothing_changed(name, tmp_path, monkeypatch, capsys):
    write(slide(), tmp_path / "a.zarr")
    write(slide(2), tmp_path / "ro" / "b.zarr")
    (tmp_path / "notes.txt").write_text("my notes")
    (tmp_path / "results.h5ad").write_text("my results")
    build, words = CASES[name]
    argv = build(tmp_path, monkeypatch)
    before = listing(tmp_path)
    stop = lambda *args, **kwargs: pytest.fail("work started before the paths were checked")  # noqa: E731
    for module, attribute in [(_cli, "_read"), (st.datasets, "load"), (_model_arg, "get_model")]:
        monkeypatch.setattr(module, attribute, stop)
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"storm {argv[0]}: error: "), err
    assert all(word in err[0] for word in words), err[0]
    assert listing(tmp_path) == before


def test_unknown_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["tile", "demo", "--out", "x", "--tile-size", "32"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == "storm: error: unrecognized arguments: --tile-size 32"


def test_tile_rerun_replaces_its_own_files_only(tmp_path, capsys):
    store = write(slide(), tmp_path / "a.zarr")
    out = tmp_path / "tiles"
    argv = ["tile", str(store), "--out", str(out), "--tile-px", "32", "--tile-um", "40"]
    assert main([*argv, "--montage", "4"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["tiles.json", "tiles_montage.png"]
    assert main([*argv, "--montage", "0"]) == 0  # an earlier montage must not pass for this run's
    assert sorted(p.name for p in out.iterdir()) == ["tiles.json"]
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {out / 'tiles.json'}"
    assert json.loads((out / "tiles.json").read_text())["tile_px"] == 32


def test_embed_sweeps_only_its_stores_stale_staging(tmp_path, tiny):
    store = write(slide(), tmp_path / "a.zarr")
    write(slide(2), tmp_path / "b.zarr")
    names = {
        ".a.zarr.storm-new-0badcafe": True,  # this store's, left by an interrupted run: swept
        ".a.zarr.storm-new-1234abcd": False,  # this store's, but changed after this process started: a live writer
        ".b.zarr.storm-new-0badcafe": False,  # another store's (another torchrun rank may be writing it)
        ".a.zarr.storm-new-mine": False,  # not storm's exact name
        ".a.zarr.storm-old-0badcafe": False,  # a backup: may hold the only copy of a table
    }
    past = time.time() - 3600
    for name in names:
        (tmp_path / name / "tables").mkdir(parents=True)
        if name != ".a.zarr.storm-new-1234abcd":
            os.utime(tmp_path / name, (past, past))
    assert main(["embed", str(store), "--model", str(tiny)]) == 0
    assert {name: not (tmp_path / name).exists() for name in names} == names
    assert "X_storm" in read(store)["table"].obsm


def test_embed_a_store_named_by_dot_or_a_link(tmp_path, tiny, monkeypatch, capsys):
    store = write(slide(), tmp_path / "data" / "a.zarr")
    monkeypatch.chdir(store)
    assert main(["embed", ".", "--model", str(tiny)]) == 0  # staged beside the store, not inside it
    assert sorted(p.name for p in store.parent.iterdir()) == ["a.zarr"]
    consolidated = json.loads((store / "zarr.json").read_text())["consolidated_metadata"]["metadata"]
    assert not [key for key in consolidated if "storm-" in key]
    assert "X_storm" in read(store)["table"].obsm

    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "a.zarr").symlink_to(store)
    assert main(["predict", str(tmp_path / "links" / "a.zarr"), "--genes", "GENE0", "--model", str(tiny)]) == 0
    assert sorted(p.name for p in (tmp_path / "links").iterdir()) == ["a.zarr"]
    assert (tmp_path / "links" / "a.zarr").is_symlink()  # the link kept; the real store written, beside itself
    assert sorted(p.name for p in store.parent.iterdir()) == ["a.zarr"]
    assert "storm_predicted" in read(store)["table"].layers
    capsys.readouterr()


def test_the_same_store_named_three_ways_runs_once(tmp_path, tiny, capsys):
    store = write(slide(), tmp_path / "a.zarr")
    (tmp_path / "link.zarr").symlink_to(store)
    assert main(["embed", str(store), f"{store}/", str(tmp_path / "link.zarr"), "--model", str(tiny)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].endswith(f"of {store}")


def pretrain(output_dir, **kwargs):
    settings = {"batch_size": 4, "tile_px": 32, "tile_um": 32.0, "niche_size": 2, "warmup_stage_steps": 1}
    config = {"model": {"preset": "tiny", "max_genes": 8}}
    return st.tl.pretrain([slide()], config=config, output_dir=output_dir, **settings, **kwargs)


def test_pretrain_refuses_an_output_dir_it_would_mix_into(tmp_path, monkeypatch):
    stop = classmethod(lambda *args, **kwargs: pytest.fail("the corpus was read before output_dir was checked"))
    monkeypatch.setattr(Corpus, "from_sources", stop)
    user = user_folder(tmp_path)
    (tmp_path / "run" / "checkpoints" / "step_0000001").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "step_0000001" / "trainer_state.pt").write_text("")
    (tmp_path / "stopped" / "checkpoints").mkdir(parents=True)  # stopped before its first resume point
    (tmp_path / "stopped" / "losses.csv").write_text("step,stage,lr,total\n1,warmup,0.001,3.2\n")
    corpus = slide()
    before = listing(tmp_path), fingerprint(corpus)
    with pytest.raises(ValueError, match=r"output_dir .*user already holds my.csv; pass a new or empty output_dir"):
        st.tl.pretrain([corpus], config="tiny", output_dir=user)
    for run in ("run", "stopped"):  # resume=False would overwrite that run
        with pytest.raises(ValueError, match=rf"output_dir .*{run} already holds .*folder with resume=True"):
            st.tl.pretrain([corpus], config="tiny", output_dir=tmp_path / run, resume=False)
        check_output(tmp_path / run, resume=True)  # resume=True continues it, or restarts it (torchrun restarts)
    assert (listing(tmp_path), fingerprint(corpus)) == before


def test_pretrain_still_resumes_a_run(tmp_path, caplog):
    st.settings.progress = False
    run = tmp_path / "run"
    pretrain(run, max_steps=2, checkpoint_every=1)  # a resume point at step 1
    (run / "notes.txt").write_text("my notes on this run")  # a run folder with a resume point may hold anything
    with caplog.at_level(logging.INFO, logger="storm"):
        pretrain(run, max_steps=2)
    assert f"resumed from {run / 'checkpoints' / 'step_0000001'} at step 1" in caplog.text
    assert (run / "notes.txt").read_text() == "my notes on this run"
    assert json.loads((run / "training.json").read_text())["steps"] == 2
