import math

import pytest
import torch

from storm.models import StormConfig, StormModel
from storm.models._encoders import _top_genes
from storm.models._layers import DistanceBias, Sincos2D

B, S, G, V = 3, 5, 40, 60


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return StormModel(StormConfig.from_preset("tiny", vocab_size=V, niche_size=S - 1)).eval()


def _inputs(model, seed=0, images=False):
    gen = torch.Generator().manual_seed(seed)
    c = model.image.feature_dim
    out = {
        "offsets_um": torch.cat([torch.zeros(B, 1, 2), torch.randn(B, S - 1, 2, generator=gen) * 150], dim=1),
        "expression": torch.rand(B, S, G, generator=gen) * 4,
        "gene_index": torch.cat([torch.full((5,), -1), torch.randperm(V, generator=gen)[: G - 5]]),
    }
    if images:
        out["images"] = torch.randint(0, 256, (B, S, 64, 64, 3), dtype=torch.uint8, generator=gen)
    else:
        out["image_features"] = torch.randn(B, S, 4, c, generator=gen)
    return out


@torch.no_grad()
def test_joint_mode_outputs(model):
    out = model(**_inputs(model))
    assert out.embedding.shape == (B, 64) and torch.isfinite(out.embedding).all()
    assert out.predicted_expression.shape == (B, V)
    assert out.gene_reconstruction.shape == (B, V)
    assert out.predicted_image_features.shape == (B, model.image.feature_dim)
    assert out.image_token_reconstruction.shape == out.image_token_targets.shape == (B, 4, model.image.feature_dim)
    # the joint embedding is the mean of the two fused centre tokens
    torch.testing.assert_close(out.embedding, (out.fused_image + out.fused_gene) / 2)


@torch.no_grad()
def test_image_only_and_gene_only_are_first_class(model):
    inp = _inputs(model)
    image_only = model(offsets_um=inp["offsets_um"], image_features=inp["image_features"])
    assert image_only.gene_embedding is None and image_only.gene_reconstruction is None
    assert image_only.predicted_expression.shape == (B, V)
    torch.testing.assert_close(image_only.embedding, image_only.fused_image)
    gene_only = model(offsets_um=inp["offsets_um"], expression=inp["expression"], gene_index=inp["gene_index"])
    assert gene_only.image_embedding is None and gene_only.predicted_expression is None
    assert gene_only.predicted_image_features.shape == (B, model.image.feature_dim)
    # branch embeddings do not depend on the other modality
    joint = model(**inp)
    torch.testing.assert_close(joint.image_embedding, image_only.image_embedding)
    torch.testing.assert_close(joint.gene_embedding, gene_only.gene_embedding)


@torch.no_grad()
def test_missing_modalities_per_spot_are_ignored(model):
    inp = _inputs(model)
    expression_mask = torch.ones(B, S, dtype=torch.bool)
    expression_mask[:, 2] = False
    image_mask = torch.ones(B, S, dtype=torch.bool)
    image_mask[:, 3] = False
    ref = model(**inp, expression_mask=expression_mask, image_mask=image_mask)
    changed = {k: v.clone() for k, v in inp.items()}
    changed["expression"][:, 2] = 100.0
    changed["image_features"][:, 3] = -50.0
    out = model(**changed, expression_mask=expression_mask, image_mask=image_mask)
    torch.testing.assert_close(out.embedding, ref.embedding)
    torch.testing.assert_close(out.predicted_expression, ref.predicted_expression)
    # ... and a present spot does matter
    changed["expression"][:, 1] = 100.0
    assert not torch.allclose(
        model(**changed, expression_mask=expression_mask, image_mask=image_mask).embedding, ref.embedding
    )


@torch.no_grad()
def test_padded_spots_do_not_leak(model):
    inp = _inputs(model)
    spot_mask = torch.ones(B, S, dtype=torch.bool)
    spot_mask[:, -2:] = False
    ref = model(**inp, spot_mask=spot_mask)
    inp["offsets_um"][:, -2:] += 1000.0
    inp["image_features"][:, -2:] *= 3
    out = model(**inp, spot_mask=spot_mask)
    torch.testing.assert_close(out.embedding, ref.embedding)
    torch.testing.assert_close(out.niche_embedding, ref.niche_embedding)


@torch.no_grad()
def test_unknown_genes_are_ignored_and_gene_subsets_match(model):
    inp = _inputs(model)
    ref = model(**inp)
    unknown = inp["gene_index"] < 0
    assert unknown.any()
    inp["expression"][..., unknown] = 7.0
    out = model(**inp)
    torch.testing.assert_close(out.embedding, ref.embedding)
    subset = torch.tensor([3, 17, 42])
    part = model(**inp, genes=subset)
    torch.testing.assert_close(part.predicted_expression, ref.predicted_expression[:, subset])


@torch.no_grad()
def test_gene_choice_with_tied_counts_does_not_depend_on_panel_order():
    # Counts are integers, so many genes tie at the max_genes cut-off; the chosen genes (and so the embedding) must not
    # depend on the order of the table's columns (nor on how a device's topk breaks ties: CPU and CUDA differ).
    torch.manual_seed(0)
    config = StormConfig.from_preset("tiny", vocab_size=V, niche_size=S - 1, max_genes=8, gene_encoding="top")
    model = StormModel(config).eval()
    gen = torch.Generator().manual_seed(1)
    inp = _inputs(model)
    inp["expression"] = torch.log1p(torch.randint(0, 3, (B, S, G), generator=gen).float())  # 0, 1 or 2 counts
    ref = model(**inp)
    for seed in range(3):
        perm = torch.randperm(G, generator=torch.Generator().manual_seed(seed))
        shuffled = {**inp, "expression": inp["expression"][..., perm], "gene_index": inp["gene_index"][perm]}
        torch.testing.assert_close(model(**shuffled).embedding, ref.embedding, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("per_row_index", [False, True])
def test_top_genes_are_the_highest_with_ties_by_vocabulary_index(per_row_index):
    gen = torch.Generator().manual_seed(0)
    score = torch.randint(0, 3, (6, 40), generator=gen).float()  # many ties
    index = torch.randperm(40, generator=gen)
    if per_row_index:
        index = torch.stack([torch.randperm(40, generator=gen) for _ in range(6)])
    top = _top_genes(score, index, 9)
    full_index = index.expand(6, 40)
    for row in range(6):
        expected = sorted(range(40), key=lambda c, r=row: (-score[r, c].item(), full_index[r, c].item()))[:9]
        assert top[row].tolist() == expected


@torch.no_grad()
def test_tiles_and_precomputed_features_agree(model):
    inp = _inputs(model, images=True)
    from_tiles = model(offsets_um=inp["offsets_um"], images=inp["images"])
    tokens, _ = model.image.backbone_tokens(inp["images"].reshape(B * S, 64, 64, 3))
    feats = tokens.reshape(B, S, *tokens.shape[1:])
    from_feats = model(offsets_um=inp["offsets_um"], image_features=feats)
    torch.testing.assert_close(from_tiles.embedding, from_feats.embedding, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_masking_inputs_change_reconstruction_inputs(model):
    inp = _inputs(model)
    value_mask = torch.zeros(B, S, G, dtype=torch.bool)
    value_mask[:, 0, :10] = True
    a = model(**inp, value_mask=value_mask)
    inp2 = {k: v.clone() for k, v in inp.items()}
    inp2["expression"][:, 0, :10] = 9.0  # hidden values cannot influence the output
    b = model(**inp2, value_mask=value_mask)
    torch.testing.assert_close(a.gene_reconstruction, b.gene_reconstruction)
    token_mask = torch.zeros(B, S, 4, dtype=torch.bool)
    token_mask[:, 0, :2] = True
    c = model(**inp, image_token_mask=token_mask)
    inp2 = {k: v.clone() for k, v in inp.items()}
    inp2["image_features"][:, 0, :2] = 5.0
    d = model(**inp2, image_token_mask=token_mask)
    torch.testing.assert_close(c.image_token_reconstruction, d.image_token_reconstruction)
    assert not torch.equal(c.image_token_targets, d.image_token_targets)  # targets are the true features


def test_relative_bias_is_translation_and_rotation_invariant():
    torch.manual_seed(0)
    bias = DistanceBias(heads=4)
    pos = torch.randn(2, 6, 2) * 100
    shifted = pos + torch.tensor([250.0, -40.0])
    angle = math.pi / 3
    rot = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    torch.testing.assert_close(bias(shifted), bias(pos), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(bias(pos @ rot.T), bias(pos), rtol=1e-4, atol=1e-4)


def test_absolute_encoding_is_orientation_aware():
    """Documented behaviour: the absolute encoding distinguishes directions (pretraining augments with rotations)."""
    enc = Sincos2D(16, 5.0, 5000.0)
    a = enc(torch.tensor([[100.0, 0.0]]))
    b = enc(torch.tensor([[0.0, 100.0]]))
    assert not torch.allclose(a, b)
    # scale-aware: 1 µm and 100 µm offsets get distinct codes, 0 µm is the origin
    assert not torch.allclose(enc(torch.tensor([[1.0, 0.0]])), enc(torch.tensor([[100.0, 0.0]])))


@pytest.mark.parametrize(
    ("preset", "low", "high"),
    [("tiny", 1e6, 5e6), ("small", 4e6, 9e6), ("base", 135e6, 165e6), ("large", 530e6, 580e6)],
)
def test_preset_parameter_counts(preset, low, high):
    with torch.device("meta"):
        m = StormModel(StormConfig.from_preset(preset, vocab_size=20000))
    assert low < m.num_parameters() < high


def test_gradient_checkpointing_matches():
    torch.manual_seed(0)
    cfg = StormConfig.from_preset("tiny", vocab_size=V)
    plain = StormModel(cfg).train()
    ckpt = StormModel(StormConfig.from_preset("tiny", vocab_size=V, gradient_checkpointing=True)).train()
    ckpt.load_state_dict(plain.state_dict())
    inp = _inputs(plain)
    grads = []
    for m in (plain, ckpt):
        m.zero_grad()
        out = m(**inp)
        (out.embedding.square().mean() + out.predicted_expression.mean()).backward()
        grads.append(m.fusion[0].attn.q.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_bf16_autocast_on_cpu(model):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**_inputs(model))
    assert torch.isfinite(out.embedding.float()).all()


def test_errors(model):
    with pytest.raises(ValueError, match="at least one modality"):
        model(offsets_um=torch.zeros(1, 2, 2))
    inp = _inputs(model)
    with pytest.raises(ValueError, match="gene_index"):
        model(offsets_um=inp["offsets_um"], expression=inp["expression"])
    with pytest.raises(ValueError, match="preset"):
        StormConfig.from_preset("huge")
    with pytest.raises(ValueError, match="divisible"):
        StormConfig(dim=30, heads=4)


@pytest.mark.slow
def test_torch_compile_tiny_on_cpu(model):
    compiled = torch.compile(model)
    inp = _inputs(model)
    with torch.no_grad():
        torch.testing.assert_close(compiled(**inp).embedding, model(**inp).embedding, rtol=1e-4, atol=1e-4)


def test_backbone_weights_from_local_safetensors(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=0, global_pool="")
    file = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, file)
    model = StormModel(StormConfig.from_preset("tiny", vocab_size=V, backbone_weights=str(file)))
    for name, tensor in source.state_dict().items():
        torch.testing.assert_close(model.image.backbone.state_dict()[name], tensor)
    with pytest.raises(FileNotFoundError, match="safetensors"):
        StormModel(StormConfig.from_preset("tiny", vocab_size=V, backbone_weights=str(tmp_path / "w.pth")))
    with pytest.raises(ValueError, match="do not fit"):
        StormModel(StormConfig.from_preset("tiny", vocab_size=V, backbone="resnet10t", backbone_weights=str(file)))
