"""Head folders: an edited, broken or foreign head.json is refused with its path and what is wrong."""

import json

import pytest
import torch

from storm.tl._heads._checkpoint import HEAD_CONFIG, load_head, save_head
from storm.tl._heads._modules import SpotHead


@pytest.fixture
def folder(tmp_path):
    torch.manual_seed(0)
    meta = {"init": {"n_features": 4, "n_outputs": 2}, "outputs": ["tumour", "stroma"], "task": "classification"}
    return save_head(SpotHead(4, 2), tmp_path / "head", meta)


def _edit(folder, change):
    path = folder / HEAD_CONFIG
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta, indent=2))


def test_a_saved_head_loads_with_its_description(folder):
    module, meta = load_head(folder)
    assert meta["outputs"] == ["tumour", "stroma"] and len(meta["config_sha256"]) == 64
    x = torch.ones(3, 4)
    assert module(x).shape == (3, 2)


def test_relabelled_outputs_are_refused(folder):
    _edit(folder, lambda m: m.update(outputs=["stroma", "tumour"]))  # the labels swapped: predictions relabelled
    with pytest.raises(ValueError, match=r"head\.json was changed after the head was saved.*save the head again"):
        load_head(folder)


def test_invalid_json_names_the_file(folder):
    (folder / HEAD_CONFIG).write_text('{"init": {"n_features": 4,')
    with pytest.raises(ValueError, match=r"head\.json is not valid JSON \(.*line 1.*\); restore the file"):
        load_head(folder)


def test_an_init_that_does_not_fit_the_weights_is_refused_without_torch_internals(folder):
    _edit(folder, lambda m: (m.pop("config_sha256"), m["init"].update(n_features=8)))  # an older head, edited
    with pytest.raises(ValueError, match=r"does not describe the weights in .*head\.safetensors \(.*size mismatch"):
        load_head(folder)


def test_a_foreign_description_is_refused(folder):
    _edit(folder, lambda m: (m.pop("config_sha256"), m.pop("init")))
    with pytest.raises(ValueError, match=r"head\.json lacks \['init'\]; it is not a head saved by storm"):
        load_head(folder)
    (folder / HEAD_CONFIG).write_text("[1, 2]")
    with pytest.raises(ValueError, match="holds a list, not a head description"):
        load_head(folder)
