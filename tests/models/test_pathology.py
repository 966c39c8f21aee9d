"""Pathology encoders: registry, architecture-exact builds, local weights, offline and gated messages. Nothing downloads."""

import json
import pickle
import types

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from storm.models import ENCODERS, EncoderSpec, EncoderUnavailableError, PathologyEncoder, load_encoder
from storm.models._pathology import _build, get_spec, state_sha256

#: Published widths and parameter counts (millions) of the timm encoders' tile networks.
PUBLISHED = {
    "uni": (1024, 303.4),
    "uni2-h": (1536, 681.4),
    "virchow": (2560, 631.2),
    "virchow2": (2560, 631.2),
    "h-optimus-0": (1536, 1134.8),
    "h-optimus-1": (1536, 1134.8),
    "prov-gigapath": (1536, 1135.0),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_registry_builds_each_published_architecture(name):
    spec = ENCODERS[name]
    with torch.device("meta"):  # the real architecture, without allocating its weights
        net = _build(spec, pretrained=False)
    width = net.num_features * (2 if spec.pooling == "cls+mean" else 1)
    params = sum(p.numel() for p in net.parameters()) / 1e6
    assert (width, round(params, 1)) == PUBLISHED[name] == (spec.dim, PUBLISHED[name][1])
    assert spec.tile_px == 224 and spec.um_per_px == 0.5 and spec.tile_um == 112.0


def test_registry_records_published_inputs():
    assert ENCODERS["conch"].tile_px == 448 and ENCODERS["conch"].dim == 512
    assert ENCODERS["h-optimus-0"].mean == (0.707223, 0.578729, 0.703617)
    assert ENCODERS["virchow2"].pooling == "cls+mean"
    assert {ENCODERS[n].library for n in ("phikon", "phikon-v2")} == {"transformers"}
    assert get_spec("UNI") is ENCODERS["uni"]
    assert get_spec("hf-hub:acme/my-encoder").hub_id == "hf-hub:acme/my-encoder"


def _tiles(n=2, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 224, 224, 3), dtype=np.uint8))


def _expected(net, spec, tiles):
    x = tiles.permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        return net(x)


def test_local_bin_and_safetensors_give_the_published_network(tmp_path):
    torch.manual_seed(0)
    spec = EncoderSpec("small-vit", None, architecture="vit_small_patch16_224", dim=384)
    reference = _build(spec, pretrained=False).eval()
    torch.save(reference.state_dict(), tmp_path / "pytorch_model.bin")
    save_file(reference.state_dict(), tmp_path / "model.safetensors")
    tiles = _tiles()
    from_bin = load_encoder(spec, weights=tmp_path / "pytorch_model.bin")
    from_st = load_encoder(spec, weights=tmp_path / "model.safetensors")
    out = from_bin(tiles)
    assert out.shape == (2, 384) and out.dtype == torch.float32
    torch.testing.assert_close(out, _expected(reference, spec, tiles), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(from_st(tiles), out)
    assert from_bin.weights_sha256 == from_st.weights_sha256 == state_sha256(reference)
    assert from_bin.source.endswith("pytorch_model.bin")
    assert not any(p.requires_grad for p in from_bin.parameters())
    assert from_bin.train().training is False  # frozen: stays in eval mode


def test_timm_folder_as_downloaded_from_the_hub(tmp_path):
    torch.manual_seed(1)
    spec = EncoderSpec("x", None, architecture="vit_tiny_patch16_224", dim=192)
    reference = _build(spec, pretrained=False).eval()
    folder = tmp_path / "my-encoder"
    folder.mkdir()
    save_file(reference.state_dict(), folder / "model.safetensors")
    config = {"architecture": "vit_tiny_patch16_224", "model_args": {"num_classes": 0}}
    config["pretrained_cfg"] = {"input_size": [3, 224, 224], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    (folder / "config.json").write_text(json.dumps(config))
    enc = load_encoder(folder)
    assert enc.spec.mean == (0.5, 0.5, 0.5) and enc.spec.name == "my-encoder" and enc.spec.dim == 192
    tiles = _tiles(1)
    torch.testing.assert_close(enc(tiles), _expected(reference, enc.spec, tiles), rtol=1e-4, atol=1e-4)


def test_cls_plus_mean_pooling_skips_register_tokens():
    spec = EncoderSpec(
        "vr",
        None,
        architecture="vit_tiny_patch16_224",
        model_args={"reg_tokens": 4, "global_pool": ""},
        dim=384,
        pooling="cls+mean",
    )
    enc = load_encoder(spec, pretrained=False)
    tiles = _tiles(1)
    x = (tiles.permute(0, 3, 1, 2).float() - enc.mean) / enc.std
    with torch.no_grad():
        tokens = enc.net.forward_features(x)
    assert enc.net.num_prefix_tokens == 5
    expected = torch.cat([tokens[:, 0], tokens[:, 5:].mean(1)], dim=-1)
    torch.testing.assert_close(enc(tiles), expected)


@pytest.mark.slow
def test_uni_architecture_exact_random_weights_from_a_local_file(tmp_path):
    torch.manual_seed(0)
    spec = ENCODERS["uni"]
    reference = _build(spec, pretrained=False).eval()
    torch.save(reference.state_dict(), tmp_path / "pytorch_model.bin")
    enc = load_encoder("uni", weights=tmp_path / "pytorch_model.bin")
    tiles = _tiles(1)
    assert enc.spec.dim == 1024
    torch.testing.assert_close(enc(tiles), _expected(reference, spec, tiles), rtol=1e-4, atol=1e-4)


def test_weights_that_do_not_fit_name_what_differs(tmp_path):
    spec = EncoderSpec("small-vit", None, architecture="vit_small_patch16_224", dim=384)
    other = _build(EncoderSpec("t", None, architecture="vit_tiny_patch16_224"), pretrained=False)
    save_file(other.state_dict(), tmp_path / "tiny.safetensors")
    with pytest.raises(
        ValueError, match=r"do not fit encoder 'small-vit'.*shapes \(file vs encoder\).*names the model"
    ):
        load_encoder(spec, weights=tmp_path / "tiny.safetensors")
    with pytest.raises(FileNotFoundError, match="is not a file"):
        load_encoder(spec, weights=tmp_path / "missing.bin")
    with pytest.raises(ValueError, match="use a .safetensors, .bin or .pth"):
        (tmp_path / "w.ckpt").write_bytes(b"x")
        load_encoder(spec, weights=tmp_path / "w.ckpt")


class _Payload:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_pickled_code_is_refused_not_run(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"weight": _Payload()}, f)
    with pytest.raises(ValueError, match="not a plain state dict of tensors.*never unpickles"):
        load_encoder(EncoderSpec("s", None, architecture="vit_tiny_patch16_224"), weights=path)
    assert "unpickled!" not in capsys.readouterr().out


def test_unknown_encoder_lists_the_registry():
    with pytest.raises(ValueError, match=r"Unknown encoder 'no-such-encoder'.*'uni'.*hf-hub"):
        load_encoder("no-such-encoder")


@pytest.mark.parametrize(
    "error",
    ["GatedRepoError", "LocalEntryNotFoundError", "RepositoryNotFoundError", "OSError"],
)
def test_hub_failures_end_in_one_message_with_the_fix(monkeypatch, error):
    import huggingface_hub.errors as hf_errors
    import timm

    def refuse(*args, **kwargs):
        if error == "OSError":
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        cls = getattr(hf_errors, error)
        if error == "LocalEntryNotFoundError":
            raise cls("not in the local cache")
        response = types.SimpleNamespace(headers={}, status_code=401, request=None)
        raise cls("401 Client Error: access to model MahmoodLab/UNI is restricted", response=response)

    monkeypatch.setattr(timm, "create_model", refuse)
    with pytest.raises(EncoderUnavailableError) as info:
        load_encoder("uni")
    message = str(info.value)
    assert "accept its licence at https://huggingface.co/MahmoodLab/UNI" in message
    assert "hf auth login" in message and "weights='path/to/pytorch_model.bin'" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # one message, no chained trace


def test_offline_hub_is_not_contacted(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(EncoderUnavailableError, match=r"'h-optimus-0'.*HF_HUB_OFFLINE.*weights="):
        load_encoder("h-optimus-0")


def test_missing_library_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_conch(name, *args, **kwargs):
        if name.startswith("conch"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_conch)
    with pytest.raises(EncoderUnavailableError, match="'conch' is built by `conch`, which is not installed"):
        load_encoder("conch")


def test_transformers_folder_loads_phikon_style_weights(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.Dinov2Config(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=224, patch_size=16
    )
    torch.manual_seed(0)
    reference = transformers.Dinov2Model(config).eval()
    folder = tmp_path / "tiny-dinov2"
    reference.save_pretrained(folder)
    enc = load_encoder(folder)
    assert enc.spec.library == "transformers" and enc.spec.dim == 64 and enc.spec.name == "tiny-dinov2"
    tiles = _tiles(1)
    x = (tiles.permute(0, 3, 1, 2).float() - enc.mean) / enc.std
    with torch.no_grad():
        expected = reference(pixel_values=x).last_hidden_state[:, 0]
    torch.testing.assert_close(enc(tiles), expected)


def test_pathology_encoder_provenance_names_geometry_and_weights():
    enc = load_encoder("vit_tiny_patch16_224", pretrained=False)
    assert isinstance(enc, PathologyEncoder)
    prov = enc.provenance()
    assert prov["tile_px"] == 224 and prov["tile_um"] == 112.0 and prov["dim"] == 192
    assert prov["weights_sha256"] == state_sha256(enc.net) and len(prov["weights_sha256"]) == 64
    assert prov["source"] == "random"
