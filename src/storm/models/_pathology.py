"""Pathology foundation encoders as storm's image branch: a named registry, their published input, offline loading.

Each entry says how to build the encoder (timm architecture and arguments, or the library that owns it), where its
weights live on the Hugging Face hub, and its published input: tile size in pixels, microns per pixel, normalisation,
and which token or pooling is the embedding. :func:`load_encoder` builds one from the hub (when the user has access),
from a local weights file, or from a local timm export folder; it never unpickles, and every way it can fail (offline,
gated, unauthorised, missing package, wrong file) ends in one message that says what to do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ._backbone_weights import CLASSIFIER_PREFIXES, state_mismatch

if TYPE_CHECKING:
    from collections.abc import Iterator

#: ImageNet normalisation, used by most pathology encoders.
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
#: Poolings an encoder's embedding can come from: the model's own head (``"head"``: the class token for the ViTs),
#: or the class token beside the mean of the patch tokens (``"cls+mean"``, the Virchow recipe).
POOLINGS = ("head", "cls+mean")
LIBRARIES = ("timm", "transformers", "conch")


@dataclass(frozen=True)
class EncoderSpec:
    """A pathology encoder and its published input.

    Attributes
    ----------
    name
        Registry name (lower case), also the prefix of the feature tables storm writes (``"uni_spots_112um"``).
    hub_id
        Where the weights live: ``"hf-hub:<org>/<repo>"`` for timm, ``"<org>/<repo>"`` for transformers and CONCH;
        ``None`` for encoders that only load from local weights.
    library
        Who builds the network: ``"timm"``, ``"transformers"`` or ``"conch"``.
    architecture
        timm architecture name (``library="timm"``).
    model_args
        Keyword arguments of ``timm.create_model`` (``"SwiGLUPacked"`` and ``"SiLU"`` name timm's and torch's layers).
    dim
        Width of the embedding.
    tile_px, um_per_px
        Published input: tiles of ``tile_px`` pixels at ``um_per_px`` microns per pixel (20x is 0.5 µm/px).
    mean, std
        Per-channel normalisation of RGB values in ``[0, 1]``.
    pooling
        Which token or pooling is the embedding (``POOLINGS``).
    gated
        Whether the hub asks users to accept a licence before download.
    reference
        The publication or model card.
    """

    name: str
    hub_id: str | None
    library: str = "timm"
    architecture: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    dim: int = 0
    tile_px: int = 224
    um_per_px: float = 0.5
    mean: tuple[float, float, float] = IMAGENET[0]
    std: tuple[float, float, float] = IMAGENET[1]
    pooling: str = "head"
    gated: bool = False
    reference: str = ""

    def __post_init__(self) -> None:
        if self.library not in LIBRARIES:
            raise ValueError(f"`library` must be one of {LIBRARIES}, got {self.library!r}.")
        if self.pooling not in POOLINGS:
            raise ValueError(f"`pooling` must be one of {POOLINGS}, got {self.pooling!r}.")
        if self.library == "timm" and not self.architecture and not self.hub_id:
            raise ValueError(f"Encoder {self.name!r}: a timm encoder needs an `architecture` or a `hub_id`.")
        if int(self.tile_px) < 1 or not self.um_per_px > 0:
            raise ValueError(f"Encoder {self.name!r}: `tile_px` and `um_per_px` must be positive.")

    @property
    def tile_um(self) -> float:
        """Side of the published input in µm."""
        return float(self.tile_px * self.um_per_px)

    def geometry(self) -> dict[str, Any]:
        """Plain-data input description, as recorded with features and in ``uns["storm"]``."""
        return {
            "encoder": self.name,
            "tile_px": int(self.tile_px),
            "um_per_px": float(self.um_per_px),
            "tile_um": self.tile_um,
            "mean": list(self.mean),
            "std": list(self.std),
            "pooling": self.pooling,
            "dim": int(self.dim),
        }


_SWIGLU = {"mlp_layer": "SwiGLUPacked", "act_layer": "SiLU"}
_VIRCHOW = {"img_size": 224, "init_values": 1e-5, "num_classes": 0, "mlp_ratio": 5.3375, "global_pool": ""}
_HOPTIMUS = {"img_size": 224, "init_values": 1e-5, "num_classes": 0, "dynamic_img_size": False}
_HOPTIMUS_NORM = {"mean": (0.707223, 0.578729, 0.703617), "std": (0.211883, 0.230117, 0.177517)}

#: The registry: name -> :class:`EncoderSpec`. Add entries with :func:`register_encoder`.
ENCODERS: dict[str, EncoderSpec] = {
    spec.name: spec
    for spec in (
        EncoderSpec(
            "uni",
            "hf-hub:MahmoodLab/UNI",
            architecture="vit_large_patch16_224",
            model_args={"img_size": 224, "patch_size": 16, "init_values": 1e-5, "num_classes": 0},
            dim=1024,
            gated=True,
            reference="Chen et al., Nat Med 2024 (UNI)",
        ),
        EncoderSpec(
            "uni2-h",
            "hf-hub:MahmoodLab/UNI2-h",
            architecture="vit_giant_patch14_224",
            model_args={
                "img_size": 224,
                "patch_size": 14,
                "depth": 24,
                "num_heads": 24,
                "init_values": 1e-5,
                "embed_dim": 1536,
                "mlp_ratio": 2.66667 * 2,
                "num_classes": 0,
                "no_embed_class": True,
                "reg_tokens": 8,
                **_SWIGLU,
            },
            dim=1536,
            gated=True,
            reference="MahmoodLab/UNI2-h model card",
        ),
        EncoderSpec(
            "virchow",
            "hf-hub:paige-ai/Virchow",
            architecture="vit_huge_patch14_224",
            model_args={**_VIRCHOW, **_SWIGLU},
            dim=2560,
            pooling="cls+mean",
            gated=True,
            reference="Vorontsov et al., Nat Med 2024 (Virchow)",
        ),
        EncoderSpec(
            "virchow2",
            "hf-hub:paige-ai/Virchow2",
            architecture="vit_huge_patch14_224",
            model_args={**_VIRCHOW, "reg_tokens": 4, **_SWIGLU},
            dim=2560,
            pooling="cls+mean",
            gated=True,
            reference="Zimmermann et al., arXiv 2408.00738 (Virchow2)",
        ),
        EncoderSpec(
            "h-optimus-0",
            "hf-hub:bioptimus/H-optimus-0",
            architecture="vit_giant_patch14_reg4_dinov2",
            model_args=_HOPTIMUS,
            dim=1536,
            reference="Saillard et al., 2024 (H-optimus-0)",
            **_HOPTIMUS_NORM,
        ),
        EncoderSpec(
            "h-optimus-1",
            "hf-hub:bioptimus/H-optimus-1",
            architecture="vit_giant_patch14_reg4_dinov2",
            model_args=_HOPTIMUS,
            dim=1536,
            gated=True,
            reference="bioptimus/H-optimus-1 model card",
            **_HOPTIMUS_NORM,
        ),
        EncoderSpec(
            "prov-gigapath",
            "hf-hub:prov-gigapath/prov-gigapath",
            architecture="vit_giant_patch14_dinov2",
            model_args={
                "img_size": 224,
                "in_chans": 3,
                "patch_size": 16,
                "embed_dim": 1536,
                "depth": 40,
                "num_heads": 24,
                "init_values": 1e-5,
                "mlp_ratio": 5.33334,
                "num_classes": 0,
            },
            dim=1536,
            gated=True,
            reference="Xu et al., Nature 2024 (Prov-GigaPath)",
        ),
        EncoderSpec(
            "phikon",
            "owkin/phikon",
            library="transformers",
            dim=768,
            reference="Filiot et al., medRxiv 2023 (Phikon)",
        ),
        EncoderSpec(
            "phikon-v2",
            "owkin/phikon-v2",
            library="transformers",
            dim=1024,
            reference="Filiot et al., arXiv 2409.09173 (Phikon-v2)",
        ),
        EncoderSpec(
            "conch",
            "MahmoodLab/conch",
            library="conch",
            dim=512,
            tile_px=448,
            mean=(0.48145466, 0.4578275, 0.40821073),
            std=(0.26862954, 0.26130258, 0.27577711),
            gated=True,
            reference="Lu et al., Nat Med 2024 (CONCH)",
        ),
    )
}


def register_encoder(spec: EncoderSpec, *, overwrite: bool = False) -> None:
    """Add an encoder to the registry, so that every tool takes it by name.

    Examples
    --------
    >>> from storm.models import ENCODERS, EncoderSpec, register_encoder
    >>> register_encoder(EncoderSpec("my-vit-s", None, architecture="vit_small_patch16_224", dim=384), overwrite=True)
    >>> ENCODERS["my-vit-s"].tile_um
    112.0
    """
    if not isinstance(spec, EncoderSpec):
        raise TypeError(f"`spec` must be an EncoderSpec, got {type(spec).__name__}.")
    if spec.name in ENCODERS and not overwrite and ENCODERS[spec.name] != spec:
        raise ValueError(f"An encoder named {spec.name!r} is registered already; pass overwrite=True to replace it.")
    ENCODERS[spec.name] = spec


class EncoderUnavailableError(RuntimeError):
    """The encoder's weights cannot be had here; the message says how to get them or pass a local file."""


class PathologyEncoder(nn.Module):
    """A frozen pathology encoder: uint8 RGB tiles in, one embedding per tile out.

    Built by :func:`load_encoder`. ``forward`` takes ``(N, H, W, 3)`` uint8 tiles at the encoder's published input
    (``spec.tile_px`` pixels at ``spec.um_per_px``), normalises them with the published mean and standard deviation and
    returns ``(N, spec.dim)`` float32 embeddings pooled as the encoder's authors pool them.

    Attributes
    ----------
    spec
        The registry entry (:class:`EncoderSpec`).
    weights_sha256
        Hash of the weights (every tensor of the network, in name order): the same for the same weights, whichever
        file or hub they came from.
    source
        Where the weights came from (hub id, file or folder; ``"random"`` for untrained weights).
    """

    def __init__(self, spec: EncoderSpec, net: nn.Module, *, source: str) -> None:
        super().__init__()
        self.spec = spec
        self.net = net.eval().requires_grad_(False)
        self.source = source
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.weights_sha256 = state_sha256(self.net)

    def provenance(self) -> dict[str, Any]:
        """What is recorded with every feature table and embedding: geometry, weights hash and source."""
        return {**self.spec.geometry(), "weights_sha256": self.weights_sha256, "source": self.source}

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 tiles -> (N, dim) float32 embeddings."""
        x = (tiles.permute(0, 3, 1, 2).float() - self.mean) / self.std
        if self.spec.library == "transformers":
            return self.net(pixel_values=x).last_hidden_state[:, 0].float()
        if self.spec.library == "conch":
            return self.net.encode_image(x, proj_contrast=False, normalize=False).float()
        tokens = self.net.forward_features(x)
        if self.spec.pooling == "cls+mean":
            prefix = int(getattr(self.net, "num_prefix_tokens", 1))
            return torch.cat([tokens[:, 0], tokens[:, prefix:].mean(1)], dim=-1).float()
        return self.net.forward_head(tokens, pre_logits=True).float()

    def train(self, mode: bool = True) -> PathologyEncoder:
        """Stays frozen: the encoder is always in eval mode."""
        return super().train(False)


def state_sha256(module: nn.Module) -> str:
    """SHA-256 of a module's tensors, in name order (names, shapes, dtypes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def get_spec(encoder: str | EncoderSpec) -> EncoderSpec:
    """The registry entry of ``encoder`` (a name, any case), an ``hf-hub:`` id or timm name as a new entry."""
    if isinstance(encoder, EncoderSpec):
        return encoder
    if not isinstance(encoder, str) or not encoder:
        raise TypeError(f"`encoder` must be a registry name, timm name, 'hf-hub:' id or path; got {encoder!r}.")
    key = encoder.lower()
    if key in ENCODERS:
        return ENCODERS[key]
    if encoder.startswith("hf-hub:"):
        return EncoderSpec(encoder.split("/")[-1].lower(), encoder)
    import timm

    if timm.is_model(encoder):
        return EncoderSpec(encoder.lower(), None, architecture=encoder)
    raise ValueError(
        f"Unknown encoder {encoder!r}: use one of {sorted(ENCODERS)}, any timm name (timm.list_models()), an "
        "'hf-hub:<org>/<repo>' id, or a local folder with config.json and model.safetensors."
    )


def load_encoder(
    encoder: str | os.PathLike[str] | EncoderSpec,
    *,
    weights: str | os.PathLike[str] | None = None,
    pretrained: bool = True,
) -> PathologyEncoder:
    """Build a frozen pathology encoder from the hub, a local weights file or a local timm export folder.

    Parameters
    ----------
    encoder
        A registry name (``"uni"``, ``"uni2-h"``, ``"virchow2"``, ``"h-optimus-0"``, ``"prov-gigapath"``,
        ``"phikon-v2"``, ``"conch"``, …: ``storm.models.ENCODERS``), any timm name, an ``"hf-hub:<org>/<repo>"`` id, an
        :class:`EncoderSpec`, or a local folder holding ``config.json`` and ``model.safetensors`` (as the hub has them).
    weights
        A local weights file for that architecture (``.safetensors``, or ``.bin`` / ``.pth`` read with
        ``torch.load(weights_only=True)``, never unpickled); for gated encoders, the file you downloaded once.
    pretrained
        Download the published weights when no ``weights`` are given (default). ``False`` builds random weights, for
        tests and benchmarks of the pipeline only.

    Returns
    -------
    The encoder, frozen, in eval mode.

    Raises
    ------
    EncoderUnavailableError
        Offline, gated, unauthorised or missing package, with what to do.

    Examples
    --------
    >>> from storm.models import load_encoder
    >>> enc = load_encoder("vit_tiny_patch16_224", pretrained=False)
    >>> enc(torch.zeros(2, 224, 224, 3, dtype=torch.uint8)).shape
    torch.Size([2, 192])
    """
    if isinstance(encoder, os.PathLike) or (isinstance(encoder, str) and Path(encoder).is_dir()):
        return _from_folder(Path(encoder))
    spec = get_spec(encoder)
    if weights is not None:
        file = Path(weights)
        net = _build(spec, pretrained=False)
        _load_state(net, file, spec)
        return _finish(spec, net, source=str(file))
    if not pretrained:
        return _finish(spec, _build(spec, pretrained=False), source="random")
    try:
        net = _build(spec, pretrained=True)
    except EncoderUnavailableError:
        raise
    except (OSError, ValueError, RuntimeError) as error:
        raise EncoderUnavailableError(_unavailable(spec, error)) from None
    return _finish(spec, net, source=spec.hub_id or spec.architecture or spec.name)


def _finish(spec: EncoderSpec, net: nn.Module, *, source: str) -> PathologyEncoder:
    dim = _output_dim(spec, net)
    if spec.dim and dim != spec.dim:
        raise ValueError(f"Encoder {spec.name!r} gives {dim}-wide embeddings, but its registry entry says {spec.dim}.")
    return PathologyEncoder(dataclasses.replace(spec, dim=dim), net, source=source)


def _output_dim(spec: EncoderSpec, net: nn.Module) -> int:
    if spec.library == "transformers":
        return int(net.config.hidden_size)
    if spec.library == "conch":
        return int(spec.dim)
    width = int(net.num_features)
    return 2 * width if spec.pooling == "cls+mean" else width


def _timm_args(args: dict[str, Any]) -> dict[str, Any]:
    """``model_args`` with layer names replaced by the classes timm wants."""
    from timm.layers import SwiGLUPacked

    layers = {"SwiGLUPacked": SwiGLUPacked, "SiLU": nn.SiLU}
    return {k: layers.get(v, v) if isinstance(v, str) else v for k, v in args.items()}


def _build(spec: EncoderSpec, *, pretrained: bool) -> nn.Module:
    if spec.library == "timm":
        import timm

        name = spec.hub_id if pretrained and spec.hub_id else spec.architecture
        if name is None:
            raise EncoderUnavailableError(
                f"Encoder {spec.name!r} names no timm architecture, so it cannot be built from a weights file; pass "
                "its hub folder (config.json + model.safetensors) as `encoder`."
            )
        args = {"num_classes": 0, **_timm_args(spec.model_args)}
        return timm.create_model(name, pretrained=pretrained, **args)
    if spec.library == "transformers":
        transformers = _need("transformers", spec)
        if pretrained:
            return transformers.AutoModel.from_pretrained(spec.hub_id)
        config = transformers.AutoConfig.from_pretrained(spec.hub_id)
        return transformers.AutoModel.from_config(config)
    conch = _need("conch.open_clip_custom", spec)
    model, _ = conch.create_model_from_pretrained("conch_ViT-B-16", f"hf_hub:{spec.hub_id}" if pretrained else "")
    return model


def _need(module: str, spec: EncoderSpec) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        how = {
            "transformers": "pip install transformers",
            "conch.open_clip_custom": "pip install the `conch` package from MahmoodLab's CONCH repository",
        }[module]
        raise EncoderUnavailableError(
            f"Encoder {spec.name!r} is built by `{module.split('.')[0]}`, which is not installed: {how}."
        ) from None


def _load_state(net: nn.Module, file: Path, spec: EncoderSpec) -> None:
    """Load a weights file into ``net``; errors name the file and what differs."""
    if not file.is_file():
        raise FileNotFoundError(f"`weights={str(file)!r}` is not a file; pass the encoder's weights file.")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(file)
    elif file.suffix in (".bin", ".pth", ".pt"):
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - torch's unpickler raises many types; all mean "not plain tensors"
            raise ValueError(
                f"`weights={str(file)!r}` is not a plain state dict of tensors ({type(error).__name__}); storm never "
                "unpickles code. Convert it with safetensors.torch.save_file, or download the .safetensors file."
            ) from None
    else:
        raise ValueError(f"`weights={str(file)!r}`: use a .safetensors, .bin or .pth file of tensors.")
    state = {
        key: value
        for k, value in _tensors(state)
        if not (key := k.removeprefix("module.")).startswith(CLASSIFIER_PREFIXES)
    }
    missing, unexpected, shapes = state_mismatch(net, state)
    if missing or unexpected or shapes:
        raise ValueError(
            f"Weights {file} do not fit encoder {spec.name!r} ({spec.architecture or spec.hub_id}): missing "
            f"{missing[:3]}, unexpected {unexpected[:3]}, shapes (file vs encoder) {shapes[:3]}. Check that "
            "`encoder` names the model these weights belong to."
        )
    net.load_state_dict(state, strict=False)


def _tensors(state: Any) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError("The weights file does not hold a dict of tensors.")
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            yield str(key), value


def _from_folder(folder: Path) -> PathologyEncoder:
    """A timm export as on the hub: ``config.json`` (architecture, model_args, pretrained_cfg) + weights."""
    import json

    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"`encoder={str(folder)!r}` is a folder without config.json; pass a registry name with `weights=` the "
            "weights file instead, or the folder as downloaded from the hub."
        )
    config = json.loads(config_file.read_text())
    registered = {s.hub_id.split("/")[-1].lower(): s for s in ENCODERS.values() if s.hub_id}
    known = registered.get(folder.name.lower())
    if "model_type" in config:  # a transformers folder (Phikon, Phikon-v2)
        transformers = _need("transformers", known or EncoderSpec(folder.name.lower(), None, library="transformers"))
        spec = known if known is not None and known.library == "transformers" else None
        spec = spec or EncoderSpec(folder.name.lower(), None, library="transformers")
        return _finish(spec, transformers.AutoModel.from_pretrained(folder), source=str(folder))
    files = [folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).is_file()]
    if "architecture" not in config or not files:
        raise ValueError(
            f"{folder} is not a timm or transformers model folder: it needs config.json with 'architecture' (and "
            "'model_args') or 'model_type', and model.safetensors or pytorch_model.bin."
        )
    cfg = config.get("pretrained_cfg", {})
    if known is None or known.architecture != config["architecture"]:
        known = EncoderSpec(
            folder.name.lower(),
            None,
            architecture=config["architecture"],
            model_args=config.get("model_args", {}),
            tile_px=int(cfg.get("input_size", [3, 224, 224])[-1]),
            mean=tuple(cfg.get("mean", IMAGENET[0])),
            std=tuple(cfg.get("std", IMAGENET[1])),
        )
    net = _build(known, pretrained=False)
    _load_state(net, files[0], known)
    return _finish(known, net, source=str(folder))


def _unavailable(spec: EncoderSpec, error: Exception) -> str:
    from huggingface_hub import constants

    repo = (spec.hub_id or spec.name).removeprefix("hf-hub:")
    if constants.HF_HUB_OFFLINE:
        why = "the hub is switched off (HF_HUB_OFFLINE) and the weights are not in the local cache"
    else:
        why = f"the hub did not hand them out ({type(error).__name__}: offline, gated or not found)"
    steps = (
        f"accept its licence at https://huggingface.co/{repo} and log in (`hf auth login` or HF_TOKEN), or "
        if spec.gated
        else ""
    )
    return (
        f"Encoder {spec.name!r} could not be loaded from {spec.hub_id or spec.architecture!r}: {why}. To use it, "
        f"{steps}pass the weights you downloaded once: st.tl.feature_extraction(sdata, {spec.name!r}, "
        "weights='path/to/pytorch_model.bin') computes and keeps the features that every storm tool then reads "
        "(load_encoder takes the same `weights=`, or the downloaded folder as `encoder`)."
    )
