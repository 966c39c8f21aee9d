"""``st.datasets.load``: a corpus entry by name, as ``storm pretrain --config`` reads it."""

from __future__ import annotations

import numpy as np
import pytest

import storm as st


def test_demo_entry_is_the_demo():
    loaded, demo = st.datasets.load("demo")["table"], st.datasets.demo()["table"]
    assert loaded.shape == demo.shape
    np.testing.assert_array_equal(loaded.X.toarray(), demo.X.toarray())


@pytest.mark.data
def test_named_sections_read_from_data_dir(shared_data):
    her2st = st.datasets.load("her2st:C1", shared_data)
    assert her2st["table"].n_obs == 176
    assert (her2st["table"].obs["section"] == "C1").all()
    dlpfc = st.datasets.load("dlpfc:151510", str(shared_data))
    assert dlpfc["table"].n_vars == 500


def test_zarr_path_is_returned_unread(tmp_path):
    store = tmp_path / "mine:v2.zarr"
    store.mkdir()
    assert st.datasets.load(str(store)) == store


def test_bad_entries_say_what_to_pass(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown corpus entry 'visium:1'.*'her2st:<section>'"):
        st.datasets.load("visium:1")
    with pytest.raises(FileNotFoundError, match=r"'.*missing.zarr' does not exist; pass a .zarr path"):
        st.datasets.load(str(tmp_path / "missing.zarr"))
