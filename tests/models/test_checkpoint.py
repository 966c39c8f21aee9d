from __future__ import annotations

import json
import shutil
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest
import safetensors.torch
import torch

import storm
from storm.models import StormConfig, StormModel, _checkpoint, _hub
from storm.models._vocab import GeneVocab

FILES = {"config.json", "model.safetensors", "vocab.tsv", "README.md", "checksums.json"}
B, S, G, V = 2, 4, 12, 30


def _vocab(n=V):
    return GeneVocab([f"GENE{i}" for i in range(n)])


def _model(seed=0, **overrides):
    torch.manual_seed(seed)
    return StormModel(StormConfig.from_preset("tiny", niche_size=S - 1, **overrides), _vocab()).eval()


def _inputs(model):
    gen = torch.Generator().manual_seed(1)
    return {
        "offsets_um": torch.cat([torch.zeros(B, 1, 2), torch.randn(B, S - 1, 2, generator=gen) * 100], dim=1),
        "image_features": torch.randn(B, S, 3, model.image.feature_dim, generator=gen),
        "expression": torch.rand(B, S, G, generator=gen) * 3,
        "gene_index": torch.randperm(V, generator=gen)[:G],
    }


@torch.no_grad()
def _outputs(model):
    out = model(**_inputs(model))
    return {k: v for k, v in vars(out).items() if v is not None}


@pytest.fixture(autouse=True)
def _no_network(monkeypatch, tmp_path):
    """No test reaches the hub or writes into the user's cache."""

    def refuse(**kwargs):
        raise AssertionError(f"snapshot_download must not be called here ({kwargs})")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    monkeypatch.setattr(storm.settings, "cache_dir", tmp_path / "cache")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = _model()
    path = model.save_pretrained(
        tmp_path_factory.mktemp("ckpt") / "tiny",
        description="A test checkpoint.",
        data={"slides": 3, "spots": 1200},
        steps=250,
        hardware="2 CPU cores",
        losses=[{"step": 1, "loss": 1.5}, {"step": 250, "loss": 0.75}],
        evaluation={"her2st": {"pearson": 0.31, "spearman": 0.25}},
        tags=["test"],
    )
    return model, path


@pytest.fixture
def ckpt(saved, tmp_path):
    """A fresh copy of the saved checkpoint, free to tamper with."""
    return Path(shutil.copytree(saved[1], tmp_path / "copy"))


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "checksums.json").unlink()


def test_a_subclass_loads_as_itself(saved):
    model, path = saved

    class Tagged(StormModel):
        tag = "mine"

    loaded = Tagged.from_pretrained(path)
    assert type(loaded) is Tagged and loaded.tag == "mine"
    assert torch.equal(_outputs(loaded)["embedding"], _outputs(model)["embedding"])
    assert type(StormModel.from_pretrained(path)) is StormModel


def test_round_trip_is_bit_identical(saved):
    model, path = saved
    rng = torch.get_rng_state()
    loaded = StormModel.from_pretrained(path)
    assert torch.equal(torch.get_rng_state(), rng)  # loading leaves the caller's seed alone
    assert not loaded.training
    assert loaded.config == model.config
    assert loaded.vocab == model.vocab
    expected, found = _outputs(model), _outputs(loaded)
    assert expected.keys() == found.keys() and "predicted_expression" in found
    for key in expected:
        assert torch.equal(expected[key], found[key]), key
    info = loaded.checkpoint_info
    assert info["path"] == str(path) and info["storm_version"] == storm.__version__
    assert info["sha256"] == json.loads((path / "checksums.json").read_text())["files"]["model.safetensors"]


def test_folder_contents(saved):
    model, path = saved
    assert {p.name for p in path.iterdir()} == FILES
    assert [p.name for p in path.parent.iterdir()] == ["tiny"]  # no temporary folders left behind
    config = json.loads((path / "config.json").read_text())
    assert config["format_version"] == 1 and config["storm_version"] == storm.__version__
    assert config["vocab_hash"] == model.vocab.content_hash()
    assert StormConfig.from_dict({k: v for k, v in config.items() if k in model.config.to_dict()}) == model.config
    checksums = json.loads((path / "checksums.json").read_text())
    assert checksums["algorithm"] == "sha256"
    assert set(checksums["files"]) == {"model.safetensors", "config.json", "vocab.tsv"}
    assert GeneVocab.load(path) == model.vocab
    tensors = safetensors.torch.load_file(path / "model.safetensors")
    assert tensors.keys() == model.state_dict().keys()
    assert "image.mean" not in tensors  # non-persistent buffers are not saved


def test_model_card(saved):
    model, path = saved
    card = (path / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: storm\ntags:\n")
    assert '- "test"' in card.split("---")[1]
    assert f"{model.num_parameters():,}" in card
    assert "mobilenetv3_small_050" in card and "| Preset | tiny |" in card and "30 genes" in card
    assert "A test checkpoint." in card
    assert "## Training data" in card and "| spots | 1200 |" in card
    assert "## Losses" in card and "| step | loss |" in card and "| 250 | 0.75 |" in card
    assert "## Evaluation" in card and "| her2st | 0.31 | 0.25 |" in card
    assert "## Hardware" in card and "2 CPU cores" in card


def test_corrupted_weights_are_refused(ckpt):
    data = bytearray((ckpt / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (ckpt / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.safetensors was modified/corrupted: sha256 differs"):
        StormModel.from_pretrained(ckpt)


def test_unreadable_weights_without_checksums_name_the_file(ckpt):
    (ckpt / "checksums.json").unlink()
    (ckpt / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(ValueError, match=r"model\.safetensors is not a readable safetensors file"):
        StormModel.from_pretrained(ckpt)


def test_tampered_vocab_is_refused(ckpt):
    (ckpt / "vocab.tsv").write_text(_vocab().to_tsv().replace("GENE3\t", "GENE33\t"))
    with pytest.raises(ValueError, match=r"vocab\.tsv was modified/corrupted"):
        StormModel.from_pretrained(ckpt)


def test_wrong_shapes_name_the_keys(ckpt):
    _edit_config(ckpt, dim=32)
    with pytest.raises(ValueError, match=r"model\.safetensors does not fit") as error:
        StormModel.from_pretrained(ckpt)
    message = str(error.value)
    assert "with other shapes" in message and "expected (32,), found (64,)" in message
    assert "modality (expected (2, 32), found (2, 64))" in message


def test_missing_key_is_named(ckpt):
    tensors = safetensors.torch.load_file(ckpt / "model.safetensors")
    del tensors["centre"]
    safetensors.torch.save_file(tensors, ckpt / "model.safetensors")
    (ckpt / "checksums.json").unlink()
    with pytest.raises(ValueError, match=r"1 tensor\(s\) missing from the file: centre\b"):
        StormModel.from_pretrained(ckpt)


def test_vocab_length_must_match_config(ckpt):
    short = _vocab(V - 5)
    short.save(ckpt)
    _edit_config(ckpt, vocab_hash=short.content_hash())
    with pytest.raises(ValueError, match=r"vocab\.tsv has 25 genes but .*config\.json has vocab_size=30"):
        StormModel.from_pretrained(ckpt)


def test_newer_format_is_refused(ckpt):
    _edit_config(ckpt, format_version=2, storm_version="9.0")
    with pytest.raises(ValueError, match=r"checkpoint format 2; this storm .* reads format 1 at most"):
        StormModel.from_pretrained(ckpt)


def test_tied_weights_are_written_once(tmp_path):
    model = _model()
    model.reconstruction_head.proj.weight = model.expression_head.proj.weight
    path = model.save_pretrained(tmp_path / "tied")
    tensors = safetensors.torch.load_file(path / "model.safetensors")
    assert "expression_head.proj.weight" in tensors and "reconstruction_head.proj.weight" not in tensors
    loaded = StormModel.from_pretrained(path)
    assert torch.equal(loaded.reconstruction_head.proj.weight, model.expression_head.proj.weight)
    assert torch.equal(_outputs(loaded)["gene_reconstruction"], _outputs(model)["gene_reconstruction"])


def test_failed_save_keeps_the_existing_checkpoint(saved, ckpt, monkeypatch):
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        _model(seed=1).save_pretrained(ckpt)
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == before
    assert [p.name for p in ckpt.parent.iterdir()] == ["copy"]  # the temporary folder is gone
    monkeypatch.undo()
    # a successful save replaces it
    other = _model(seed=1)
    other.save_pretrained(ckpt, steps=1)
    assert (ckpt / "model.safetensors").read_bytes() != before["model.safetensors"]
    assert [p.name for p in ckpt.parent.iterdir()] == ["copy"]


def test_save_refuses_to_delete_foreign_files(ckpt):
    (ckpt / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"not part of a storm checkpoint \(notes\.txt\)"):
        _model().save_pretrained(ckpt)
    assert (ckpt / "notes.txt").read_text() == "keep me"


def test_default_checkpoint(saved, tmp_path, monkeypatch):
    missing = tmp_path / "weights" / "default"
    monkeypatch.setattr(_hub, "bundled_default_dir", lambda: missing)
    with pytest.raises(FileNotFoundError, match=r"bundled default .* not present in this installation") as error:
        StormModel.from_pretrained()
    assert "Pass the path of a checkpoint folder" in str(error.value) and str(missing) in str(error.value)
    shutil.copytree(saved[1], missing)
    loaded = StormModel.from_pretrained("default")
    assert loaded.checkpoint_info["name"] == "default" and loaded.checkpoint_info["source"] == "bundled"
    assert torch.equal(_outputs(loaded)["embedding"], _outputs(saved[0])["embedding"])


def test_missing_local_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint folder at"):
        StormModel.from_pretrained(tmp_path / "nowhere")


@pytest.mark.parametrize("revision", [None, "v1"])
def test_cache_hit(saved, revision):
    folder = "org--model" + (f"@{revision}" if revision else "")
    shutil.copytree(saved[1], storm.settings.cache_dir / "models" / folder)
    loaded = StormModel.from_pretrained("org/model", revision=revision)  # snapshot_download would fail the test
    assert loaded.checkpoint_info["name"] == "org/model"
    assert loaded.checkpoint_info["path"] == str(storm.settings.cache_dir / "models" / folder)


def _online(monkeypatch):
    for variable in ("HF_HUB_OFFLINE", "STORM_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def test_hub_download(saved, monkeypatch):
    _online(monkeypatch)
    calls = []

    def fake_snapshot_download(*, repo_id, revision, allow_patterns, local_dir, **kwargs):
        calls.append({"repo_id": repo_id, "revision": revision, "local_dir": Path(local_dir)})
        assert set(allow_patterns) == FILES
        shutil.copytree(saved[1], local_dir, dirs_exist_ok=True)
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    loaded = StormModel.from_pretrained("org/model", revision="abc123")
    assert calls == [
        {
            "repo_id": "org/model",
            "revision": "abc123",
            "local_dir": storm.settings.cache_dir / "models" / "org--model@abc123",
        }
    ]
    assert loaded.checkpoint_info["revision"] == "abc123" and loaded.checkpoint_info["source"] == "hub"
    assert torch.equal(_outputs(loaded)["embedding"], _outputs(saved[0])["embedding"])
    StormModel.from_pretrained("org/model", revision="abc123")
    assert len(calls) == 1  # the second load is served from the cache


def test_hub_repo_without_weights(monkeypatch):
    _online(monkeypatch)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda **kwargs: str(kwargs["local_dir"]))
    with pytest.raises(FileNotFoundError, match=r"has no config\.json or model\.safetensors: it is not a storm"):
        StormModel.from_pretrained("org/empty")


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "STORM_OFFLINE"])
def test_offline_never_downloads(monkeypatch, variable):
    _online(monkeypatch)
    monkeypatch.setenv(variable, "1")
    if variable == "HF_HUB_OFFLINE":
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match="Looked in") as error:  # the autouse fixture refuses downloads
        StormModel.from_pretrained("org/model")
    message = str(error.value)
    assert "local folder" in message and "org/model" in message
    assert str(storm.settings.cache_dir / "models" / "org--model") in message
    assert f"Hugging Face hub repo org/model (skipped, offline: {variable}=1)" in message


def test_offline_from_huggingface_hub_constant(monkeypatch):
    _online(monkeypatch)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match=r"skipped, offline: huggingface_hub\.constants\.HF_HUB_OFFLINE"):
        StormModel.from_pretrained("org/model")


def test_load_pretrained_is_the_module_entry_point(saved):
    loaded = _checkpoint.load_pretrained(str(saved[1]), cls=StormModel)
    assert loaded.checkpoint_info["name"] == str(saved[1])


def test_half_precision_storage(saved, tmp_path):
    model, full = saved
    half = model.save_pretrained(tmp_path / "half", weights_dtype="float16")
    assert json.loads((half / "config.json").read_text())["weights_dtype"] == "float16"
    stored = safetensors.torch.load_file(half / "model.safetensors")
    assert all(t.dtype in (torch.float16, torch.int64) for t in stored.values())
    ratio = (half / "model.safetensors").stat().st_size / (full / "model.safetensors").stat().st_size
    assert 0.49 < ratio < 0.55
    loaded = StormModel.from_pretrained(half)
    for name, tensor in model.state_dict().items():
        restored = loaded.state_dict()[name]
        assert restored.dtype == tensor.dtype, name
        if tensor.is_floating_point():
            torch.testing.assert_close(restored, tensor.half().float(), rtol=0, atol=0)
    a, b = _outputs(model), _outputs(loaded)
    torch.testing.assert_close(a["embedding"], b["embedding"], rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="weights_dtype"):
        model.save_pretrained(tmp_path / "bad", weights_dtype="int8")


def test_checkpoints_without_expression_target_load_as_log1p_decoders(ckpt):
    config = json.loads((ckpt / "config.json").read_text())
    assert config["expression_target"] == "standardised"
    weights = safetensors.torch.load_file(ckpt / "model.safetensors")
    assert "expression_reference" in weights
    # a checkpoint written before the standardised decoder existed: no config key and no reference tensor
    del config["expression_target"]
    (ckpt / "config.json").write_text(json.dumps(config))
    weights.pop("expression_reference")
    safetensors.torch.save_file(weights, ckpt / "model.safetensors")
    (ckpt / "checksums.json").unlink()
    loaded = StormModel.from_pretrained(ckpt)
    assert loaded.config.expression_target == "log1p" and not hasattr(loaded, "expression_reference")
