from __future__ import annotations

import pytest

import storm
from storm.datasets._paths import dataset_dir

MARKERS = ["data/ST-cnts"]


def test_explicit_path_and_its_parent(tmp_path):
    (tmp_path / "her2st" / "data" / "ST-cnts").mkdir(parents=True)
    assert dataset_dir("her2st", tmp_path / "her2st", markers=MARKERS, hint="h") == tmp_path / "her2st"
    assert dataset_dir("her2st", str(tmp_path), markers=MARKERS, hint="h") == tmp_path / "her2st"


def test_settings_data_dir(tmp_path, monkeypatch):
    (tmp_path / "her2st" / "data" / "ST-cnts").mkdir(parents=True)
    monkeypatch.setattr(storm.settings, "data_dir", tmp_path)
    assert dataset_dir("her2st", None, markers=MARKERS, hint="h") == tmp_path / "her2st"


def test_errors_say_what_to_pass(tmp_path, monkeypatch):
    monkeypatch.setattr(storm.settings, "data_dir", None)
    with pytest.raises(FileNotFoundError, match=r"Pass `path=`.*STORM_DATA_DIR"):
        dataset_dir("her2st", None, markers=MARKERS, hint="h")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dataset_dir("her2st", tmp_path / "missing", markers=MARKERS, hint="h")
    with pytest.raises(FileNotFoundError, match=r"is not the her2st folder.*data/ST-cnts"):
        dataset_dir("her2st", tmp_path, markers=MARKERS, hint="h")
    monkeypatch.setattr(storm.settings, "data_dir", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"storm.settings.data_dir / 'her2st'"):
        dataset_dir("her2st", None, markers=MARKERS, hint="h")


def test_loaders_report_missing_data(tmp_path, monkeypatch):
    monkeypatch.setattr(storm.settings, "data_dir", None)
    with pytest.raises(FileNotFoundError, match="path="):
        storm.datasets.her2st("C2")
    with pytest.raises(FileNotFoundError, match="path="):
        storm.datasets.dlpfc("151673")
    with pytest.raises(ValueError, match="151673"):
        storm.datasets.dlpfc("123", path=tmp_path)
