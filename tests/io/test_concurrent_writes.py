"""Two processes, one store: each reads it, computes, and writes back; nothing either reported as written is lost."""

import multiprocessing
import subprocess
import sys
import warnings

import numpy as np
import pytest
import spatialdata

import storm as st
from storm.io import _write
from storm.io._lock import lock_path, store_lock


def read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return spatialdata.read_zarr(path)


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "demo.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st.datasets.demo().write(path)
    return path


def _add_result(table, name, value):
    """A result as storm's tools leave it: the key, and a record in uns["storm"] listing it."""
    table.obsm[name] = np.full((table.n_obs, 2), value, dtype=np.float32)
    table.uns.setdefault("storm", {})[name] = {"keys": {"obsm": [name]}, "value": value}


def _writer(path, name, value, barrier, merge):
    table = read(path)["table"]
    barrier.wait()  # both processes have read the store before either writes
    _add_result(table, name, value)
    _write.write_table(path, table, "table", records=[name] if merge else None)


def _race(path, merge):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_writer, args=(path, f"X_{i}", i, barrier, merge)) for i in (1, 2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    return read(path)["table"]


def test_two_processes_writing_one_store_both_keep_their_results(store):
    table = _race(store, merge=True)
    assert {"X_1", "X_2", "spatial"} <= set(table.obsm)
    assert table.obsm["X_1"][0, 0] == 1 and table.obsm["X_2"][0, 0] == 2
    assert table.uns["storm"]["X_1"]["value"] == 1 and table.uns["storm"]["X_2"]["value"] == 2
    assert sorted(p.name for p in store.parent.iterdir()) == ["demo.zarr"]  # no lock, staging or backup left


def test_replacing_the_whole_table_keeps_only_the_last_writer(store):
    """The race the merge exists for: without ``records`` one writer's results are gone."""
    table = _race(store, merge=False)
    assert len({"X_1", "X_2"} & set(table.obsm)) == 1


def test_merge_removes_what_the_same_record_wrote_before_and_keeps_the_rest(store):
    table = read(store)["table"]
    _add_result(table, "X_a", 1)
    table.obsm["X_a_extra"] = np.zeros((table.n_obs, 1), dtype=np.float32)
    table.uns["storm"]["X_a"]["keys"] = {"obsm": ["X_a", "X_a_extra"]}
    _write.write_table(store, table, "table", records=["X_a"])
    again = read(store)["table"]
    again.obsm.pop("X_a_extra")
    _add_result(again, "X_a", 5)
    _write.write_table(store, again, "table", records=["X_a"])
    stored = read(store)["table"]
    assert "X_a_extra" not in stored.obsm and stored.obsm["X_a"][0, 0] == 5
    np.testing.assert_array_equal(stored.obsm["spatial"], table.obsm["spatial"])


def test_merge_refuses_a_table_replaced_since_it_was_read(store):
    table = read(store)["table"]
    _add_result(table, "X_a", 1)
    subset = table[:10].copy()
    with pytest.raises(ValueError, match="no longer has the spots and genes.*rerun the tool"):
        _write.write_table(store, subset, "table", records=["X_a"])
    with pytest.raises(ValueError, match=r"records=\['X_b'\] name no entry.*key_added"):
        _write.write_table(store, table, "table", records=["X_b"])
    assert "X_a" not in read(store)["table"].obsm
    assert not lock_path(store).exists()


def test_a_second_holder_waits_for_the_lock(store):
    """The lock is held across processes: a child trying to take it waits until the parent lets go."""
    code = "import sys; from pathlib import Path; from storm.io._lock import store_lock\nwith store_lock(Path(sys.argv[1])): print('held')\n"
    with store_lock(store):
        child = subprocess.Popen(
            [sys.executable, "-c", code, str(store)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=5)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0 and out.strip() == "held"
    assert "waiting for another process writing" in err
    assert not lock_path(store).exists()
