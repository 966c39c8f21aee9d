import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from storm.models import StormConfig, StormModel
from storm.train._masking import make_masks
from storm.train._objectives import ObjectiveWeights, StormObjectives, info_nce

B, S, G, V, T = 4, 3, 20, 50, 4
NAMES = ObjectiveWeights.names()


def _model(seed=0):
    torch.manual_seed(seed)
    return StormModel(StormConfig.from_preset("tiny", vocab_size=V, niche_size=S - 1))


@pytest.fixture(scope="module")
def model():
    return _model()


def _batch(model, seed=0, b=B, images=False):
    gen = torch.Generator().manual_seed(seed)
    out = {
        "offsets_um": torch.cat([torch.zeros(b, 1, 2), torch.randn(b, S - 1, 2, generator=gen) * 100], dim=1),
        "expression": torch.rand(b, S, G, generator=gen) * 3,
        "gene_index": torch.cat([torch.full((3,), -1), torch.randperm(V, generator=gen)[: G - 3]]),
    }
    if images:
        out["images"] = torch.randint(0, 256, (b, S, 64, 64, 3), dtype=torch.uint8, generator=gen)
    else:
        out["image_features"] = torch.randn(b, S, T, model.image.feature_dim, generator=gen)
    return out


def _run(model, batch, stage="joint", seed=0, **weights):
    objectives = StormObjectives(ObjectiveWeights(**weights))
    return objectives(model, batch, stage=stage, generator=torch.Generator().manual_seed(seed))


def _only(name):
    return {n: (1.0 if n == name else 0.0) for n in NAMES}


def _grad_norm(module):
    grads = [p.grad.abs().sum() for p in module.parameters() if p.grad is not None]
    return float(sum(grads)) if grads else 0.0


# --- weights and masks -------------------------------------------------------------------------------------------


def test_weights_are_validated():
    assert ObjectiveWeights().masked_gene == 1.0
    assert set(NAMES) == {
        "masked_gene",
        "masked_image",
        "expression_from_image",
        "image_from_expression",
        "contrastive_spot",
        "contrastive_niche",
        "spot_niche",
        "niche_denoising",
        "image_views",
    }
    with pytest.raises(ValueError, match="spot_niche"):
        ObjectiveWeights(spot_niche=-1)
    with pytest.raises(ValueError, match="masked_gene"):
        ObjectiveWeights(masked_gene=float("nan"))
    with pytest.raises(ValueError, match="temperature"):
        StormObjectives(temperature=5.0)


def test_make_masks(model):
    batch = _batch(model)
    batch["expression_mask"] = torch.ones(B, S, dtype=torch.bool)
    batch["expression_mask"][1, 2] = False
    batch["image_mask"] = torch.ones(B, S, dtype=torch.bool)
    batch["image_mask"][2, 0] = False
    masks = make_masks(batch, gene_ratio=0.3, token_ratio=0.5, generator=torch.Generator().manual_seed(0))
    value_mask, token_mask = masks["value_mask"], masks["image_token_mask"]
    assert value_mask.shape == (B, S, G) and token_mask.shape == (B, S, T)
    assert not value_mask[..., batch["gene_index"] < 0].any()  # only measured genes
    assert not value_mask[1, 2].any() and not token_mask[2, 0].any()  # only spots with the modality
    counts = value_mask.sum(-1)
    assert counts[1, 2] == 0 and (counts[batch["expression_mask"]] == round(0.3 * 17)).all()
    assert (token_mask.sum(-1)[batch["image_mask"]] == 2).all()
    again = make_masks(batch, gene_ratio=0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again["value_mask"], value_mask)
    other = make_masks(batch, gene_ratio=0.3, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(other["value_mask"], value_mask)
    # at least one masked gene / token, never every token; none without the modality
    tiny = make_masks(batch, gene_ratio=0.01, token_ratio=1.0, generator=torch.Generator().manual_seed(0))
    assert (tiny["value_mask"].sum(-1)[batch["expression_mask"]] == 1).all()
    assert (tiny["image_token_mask"].sum(-1)[batch["image_mask"]] == T - 1).all()
    no_expr = make_masks({k: v for k, v in batch.items() if k != "expression"}, generator=None)
    assert no_expr["value_mask"] is None
    with pytest.raises(ValueError, match="num_tokens"):
        make_masks({"offsets_um": batch["offsets_um"], "images": torch.zeros(B, S, 8, 8, 3, dtype=torch.uint8)})


def test_info_nce_matches_hand_computation():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    tau = 0.5
    c = 1 / math.sqrt(2)  # cos(a0, b0) = cos(a1, b0); cos(a0, b1) = 0; cos(a1, b1) = 1
    sim = [[c, 0.0], [c, 1.0]]
    logits = [[x / tau for x in row] for row in sim]

    def ce(row, target):
        return -row[target] + math.log(sum(math.exp(x) for x in row))

    rows = ce(logits[0], 0) + ce(logits[1], 1)
    cols = ce([logits[0][0], logits[1][0]], 0) + ce([logits[0][1], logits[1][1]], 1)
    expected = 0.5 * (rows / 2 + cols / 2)
    assert info_nce(a, b, tau).item() == pytest.approx(expected, rel=1e-6)


# --- the losses ----------------------------------------------------------------------------------------------------


def test_joint_losses_are_finite_and_positive(model):
    objectives = StormObjectives()
    total, parts = objectives(model, _batch(model), generator=torch.Generator().manual_seed(0))
    # image_views needs crop views, which a batch carries only when the run draws them (TrainConfig.crops_per_batch)
    used = [n for n in objectives.names if getattr(objectives.weights, n) > 0 and n != "image_views"]
    assert set(parts) == {"total", *used} and "niche_denoising" not in used  # off by default
    for name in used:
        assert math.isfinite(parts[name]) and parts[name] > 0, name
    weighted = sum(getattr(objectives.weights, n) * parts[n] for n in used)
    assert total.item() == pytest.approx(weighted, rel=1e-5) and parts["total"] == pytest.approx(total.item())
    assert total.dtype == torch.float32 and total.requires_grad
    assert objectives.temperatures["spot"] == pytest.approx(0.07)


def test_warmup_has_only_masked_modelling(model):
    _, parts = _run(model, _batch(model), stage="warmup")
    assert parts["masked_gene"] > 0 and parts["masked_image"] > 0
    assert not any(n in parts for n in NAMES if not n.startswith("masked"))
    with pytest.raises(ValueError, match="stage"):
        _run(model, _batch(model), stage="finetune")


def test_zero_weight_removes_component(model):
    batch = _batch(model)
    total, parts = _run(model, batch)
    total_off, parts_off = _run(model, batch, contrastive_niche=0.0)
    assert "contrastive_niche" not in parts_off
    assert total_off.item() == pytest.approx(total.item() - 0.5 * parts["contrastive_niche"], rel=1e-5)
    _, parts_gene = _run(model, batch, **_only("masked_gene"))
    assert parts_gene["masked_gene"] > 0 and set(parts_gene) == {"total", "masked_gene"}


def test_deterministic_given_generator(model):
    batch = _batch(model)
    _, first = _run(model, batch, seed=3)
    _, second = _run(model, batch, seed=3)
    _, other = _run(model, batch, seed=4)
    assert first == second
    assert other["masked_gene"] != first["masked_gene"]


def test_per_spot_gene_index_matches_shared(model):
    batch = _batch(model)
    per_spot = dict(batch, gene_index=batch["gene_index"].expand(B * S, G).clone())
    _, shared = _run(model, batch)
    _, spot = _run(model, per_spot)
    assert set(spot) == set(shared)
    for name in shared:
        assert spot[name] == pytest.approx(shared[name], rel=1e-4, abs=1e-6), name


def test_autocast_losses_in_float32(model):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, parts = _run(model, _batch(model))
    assert total.dtype == torch.float32 and all(math.isfinite(v) for v in parts.values())


def test_model_wrapper_with_module_attribute(model):
    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.module = inner

        def forward(self, **kwargs):
            return self.module(**kwargs)

    batch = _batch(model, images=True)
    _, direct = _run(model, batch)
    _, wrapped = _run(Wrapper(model), batch)
    assert direct == pytest.approx(wrapped)


# --- gradients and leakage -----------------------------------------------------------------------------------------


def test_contrastive_gradient_reaches_both_branches():
    model = _model()
    objectives = StormObjectives(ObjectiveWeights(**_only("contrastive_spot")))
    total, _ = objectives(model, _batch(model), generator=torch.Generator().manual_seed(0))
    total.backward()
    assert _grad_norm(model.image.blocks) > 0 and _grad_norm(model.gene.mlps) > 0
    assert _grad_norm(model.fusion) > 0  # the fused-token contrast
    assert objectives.log_temperature.grad is not None and objectives.log_temperature.grad.abs().sum() > 0


def test_warmup_gradients_stay_in_their_branch():
    model = _model()
    batch = _batch(model, images=True)
    total, _ = _run(model, batch, stage="warmup", **_only("masked_gene"))
    total.backward()
    assert _grad_norm(model.gene) > 0 and _grad_norm(model.reconstruction_head) > 0
    assert _grad_norm(model.image) == 0.0  # backbone and image branch untouched
    model.zero_grad(set_to_none=True)
    total, _ = _run(model, batch, stage="warmup", **_only("masked_image"))
    total.backward()
    assert _grad_norm(model.image.backbone) > 0 and _grad_norm(model.image.token_head) > 0
    assert _grad_norm(model.gene) == 0.0


def test_expression_from_image_does_not_see_centre_expression(model):
    batch = _batch(model)
    _, ref = _run(model, batch)
    # neighbours' expression plays no part either (the prediction comes from images only)
    changed = dict(batch, expression=batch["expression"].clone())
    changed["expression"][:, 1:] += 2.0
    _, parts = _run(model, changed)
    assert parts["expression_from_image"] == pytest.approx(ref["expression_from_image"], rel=1e-6)
    # new centre values change the loss only through the target: the prediction is that of an image-only pass
    changed = dict(batch, expression=batch["expression"].clone())
    changed["expression"][:, 0] = torch.rand(B, G) * 5
    _, parts = _run(model, changed)
    with torch.no_grad():
        pred = model(
            offsets_um=batch["offsets_um"],
            image_features=batch["image_features"],
            genes=batch["gene_index"].clamp(min=0),
        ).predicted_expression
    known = batch["gene_index"] >= 0
    centre = changed["expression"][:, 0, known]
    # the tiny preset's decoder learns standardised expression: here with the batch's centres' statistics
    standardised = (centre - centre.mean(0)) / centre.std(0, unbiased=False)
    expected = F.mse_loss(pred[:, known], standardised).item()
    assert parts["expression_from_image"] == pytest.approx(expected, rel=1e-5)
    # with the slide's statistics (as the corpus gives them), those; a "log1p" decoder learns the values themselves
    mean, std = torch.rand(G) + 1.0, torch.rand(G) + 0.5
    _, parts = _run(model, dict(changed, gene_mean=mean, gene_std=std))
    expected = F.mse_loss(pred[:, known], ((centre - mean[known]) / std[known]).clamp(-10, 10)).item()
    assert parts["expression_from_image"] == pytest.approx(expected, rel=1e-5)
    log1p = StormModel(dataclasses.replace(model.config, expression_target="log1p"))
    log1p.load_state_dict({k: v for k, v in model.state_dict().items() if k != "expression_reference"})
    _, parts = _run(log1p, dict(changed, gene_mean=mean, gene_std=std))
    assert parts["expression_from_image"] == pytest.approx(F.mse_loss(pred[:, known], centre).item(), rel=1e-5)
    # and no gradient flows into the expression input from this loss
    expression = batch["expression"].clone().requires_grad_(True)
    total, _ = _run(model, dict(batch, expression=expression), **_only("expression_from_image"))
    total.backward()
    assert expression.grad is None or expression.grad.abs().sum() == 0


def test_image_from_expression_does_not_see_centre_image(model):
    batch = _batch(model)
    _, ref = _run(model, batch, **_only("image_from_expression"))
    changed = dict(batch, image_features=batch["image_features"].clone())
    changed["image_features"][:, 1:] *= -3.0  # neighbours' tiles are no input of an expression-only pass
    _, parts = _run(model, changed, **_only("image_from_expression"))
    assert parts["image_from_expression"] == pytest.approx(ref["image_from_expression"], rel=1e-6)


# --- edge cases ----------------------------------------------------------------------------------------------------


def _finite_backward(model, batch, **kwargs):
    model.zero_grad(set_to_none=True)
    total, parts = _run(model, batch, **kwargs)
    total.backward()
    assert math.isfinite(total.item()) and all(math.isfinite(v) for v in parts.values())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    return parts


@pytest.mark.parametrize("how", ["absent", "masked"])
def test_batch_without_expression_trains_images(model, how):
    batch = _batch(model)
    if how == "absent":
        batch = {k: v for k, v in batch.items() if k not in ("expression", "gene_index")}
    else:
        batch["expression_mask"] = torch.zeros(B, S, dtype=torch.bool)
    for stage in ("warmup", "joint"):
        parts = _finite_backward(model, batch, stage=stage)
        assert parts["masked_image"] > 0 and "masked_gene" not in parts
        assert not {"expression_from_image", "contrastive_spot", "contrastive_niche"} & set(parts)


def test_batch_without_images_trains_genes(model):
    batch = {k: v for k, v in _batch(model).items() if k != "image_features"}
    parts = _finite_backward(model, batch)
    assert parts["masked_gene"] > 0 and parts["spot_niche"] > 0
    assert not {"masked_image", "image_from_expression", "contrastive_spot"} & set(parts)


def test_batch_of_one_and_nothing_masked(model):
    parts = _finite_backward(model, _batch(model, b=1))
    assert parts["masked_gene"] > 0 and parts["expression_from_image"] > 0
    assert not {"contrastive_spot", "contrastive_niche", "spot_niche"} & set(parts)
    # no measured gene at all and pooled (T = 1) features: nothing to mask, no NaN
    batch = _batch(model)
    batch["gene_index"] = torch.full((G,), -1)
    batch["image_features"] = batch["image_features"][:, :, 0]
    parts = _finite_backward(model, batch)
    assert not {"masked_gene", "masked_image", "expression_from_image"} & set(parts)


def test_partial_modalities_per_spot(model):
    batch = _batch(model)
    batch["expression_mask"] = torch.tensor([[1, 1, 0], [0, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    batch["image_mask"] = torch.tensor([[1, 0, 1], [1, 1, 1], [0, 0, 0], [1, 1, 1]], dtype=torch.bool)
    batch["spot_mask"] = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 1, 0]], dtype=torch.bool)
    parts = _finite_backward(model, batch)
    assert parts["masked_gene"] > 0 and parts["masked_image"] > 0


# --- optimisation --------------------------------------------------------------------------------------------------


def test_optimisation_reduces_the_loss():
    model = _model()
    batch = _batch(model)
    objectives = StormObjectives()
    optimiser = torch.optim.Adam([*model.parameters(), *objectives.parameters()], lr=1e-3)
    history = []
    for _ in range(30):
        optimiser.zero_grad()
        total, _ = objectives(model, batch, generator=torch.Generator().manual_seed(0))
        total.backward()
        optimiser.step()
        history.append(total.item())
    assert history[-1] < 0.7 * history[0], history


# --- niche denoising -----------------------------------------------------------------------------------------------


def _hand_sketch(batch):
    """The "sketch" target computed by hand: batch-standardised centre expression x fixed random gene vectors."""
    from storm.train._objectives import SKETCH_SEED

    x = batch["expression"][:, 0]
    known = batch["gene_index"] >= 0
    z = ((x - x.mean(0)) / x.std(0, unbiased=False).clamp(min=0.05)).clamp(-10, 10) * known
    vectors = torch.randn(V, 64, generator=torch.Generator().manual_seed(SKETCH_SEED))  # tiny: dim 64
    h = z @ vectors[batch["gene_index"].clamp(min=0)] / math.sqrt(int(known.sum()))
    return h / h.pow(2).mean().sqrt()


def test_niche_denoising_matches_hand_computation(monkeypatch):
    from storm.train import _objectives

    model = _model()
    batch = _batch(model)
    objectives = StormObjectives(ObjectiveWeights(**_only("niche_denoising")), model=model)
    monkeypatch.setattr(_objectives, "DENOISING_HIDDEN", 0.0)  # nothing hidden: the target is in the input
    _, parts = objectives(model, batch, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(**batch)
        expected = (objectives.denoising_head(out.embedding) - _hand_sketch(batch)).pow(2).mean()
    assert set(parts) == {"total", "niche_denoising"}
    assert parts["niche_denoising"] == pytest.approx(float(expected), rel=1e-5)


def test_niche_denoising_sketch_keeps_distances_and_ignores_the_weights():
    batch = _batch(_model(), b=24)
    targets = []
    for seed in (0, 1):  # two different models: the target does not depend on their weights
        model = _model(seed)
        objectives = StormObjectives(ObjectiveWeights(**_only("niche_denoising")), model=model)
        assert "sketch" not in objectives.state_dict()  # regenerated from SKETCH_SEED, never stored
        niches = __import__("storm.train._objectives", fromlist=["_Niches"])._Niches(batch, model)
        targets.append(objectives._sketch_of(niches))
    torch.testing.assert_close(targets[0], targets[1])
    torch.testing.assert_close(targets[0], _hand_sketch(batch))
    x = batch["expression"][:, 0]
    z = ((x - x.mean(0)) / x.std(0, unbiased=False)) * (batch["gene_index"] >= 0)
    upper = torch.triu_indices(24, 24, 1)
    d_expression = torch.cdist(z, z)[upper[0], upper[1]]
    d_target = torch.cdist(targets[0], targets[0])[upper[0], upper[1]]
    # Johnson-Lindenstrauss: 64 random directions keep the distances between 24 spots of 17 genes (0.81 here)
    assert torch.corrcoef(torch.stack([d_expression, d_target]))[0, 1] > 0.75


def test_niche_denoising_gene_branch_teacher_is_frozen_and_hidden_centres_change_the_loss():
    model = _model()
    batch = _batch(model)
    weights = ObjectiveWeights(**_only("niche_denoising"))
    objectives = StormObjectives(weights, model=model, denoising_target="gene_branch")
    objectives.train()
    assert not objectives.teacher.training
    assert all(not p.requires_grad for p in objectives.teacher.parameters())
    teacher = {k: v.clone() for k, v in objectives.teacher.state_dict().items()}
    total, first = objectives(model, batch, generator=torch.Generator().manual_seed(0))
    total.backward()
    assert _grad_norm(model.gene) > 0 and _grad_norm(model.fusion) > 0 and _grad_norm(objectives.denoising_head) > 0
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert all(torch.equal(v, objectives.teacher.state_dict()[k]) for k, v in teacher.items())
    _, other = objectives(model, batch, generator=torch.Generator().manual_seed(5))  # other centres hidden
    assert other["niche_denoising"] != first["niche_denoising"]


def test_niche_denoising_gene_branch_target_is_the_untrained_branch(monkeypatch):
    from storm.train import _objectives

    model = _model()
    batch = _batch(model)
    weights = ObjectiveWeights(**_only("niche_denoising"))
    objectives = StormObjectives(weights, model=model, denoising_target="gene_branch")
    monkeypatch.setattr(_objectives, "DENOISING_HIDDEN", 0.0)
    _, parts = objectives(model, batch, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        target = model.gene(batch["expression"][:, 0], batch["gene_index"])
        expected = (objectives.denoising_head(model(**batch).embedding) - target).pow(2).mean()
    assert parts["niche_denoising"] == pytest.approx(float(expected), rel=1e-5)


def test_niche_denoising_arguments_are_checked():
    with pytest.raises(ValueError, match="needs the `model`"):
        StormObjectives(ObjectiveWeights(niche_denoising=1.0))
    with pytest.raises(ValueError, match="`denoising_target` must be one of"):
        StormObjectives(denoising_target="teacher")


def test_masked_gene_target_is_the_panel_encoders_standardisation(model):
    """The masked-gene target is the centres' expression standardised as the panel encoder reads it."""
    from storm.train._objectives import _Niches

    batch = _batch(model, b=6)
    x, known = batch["expression"][:, 0], batch["gene_index"] >= 0
    by_hand = ((x - x.mean(0)) / x.std(0, unbiased=False).clamp(min=0.05)).clamp(-10, 10) * known
    torch.testing.assert_close(_Niches(batch, model).standardised_centre(), by_hand)  # the batch's statistics
    mean, std = torch.full((G,), 1.5), torch.full((G,), 0.5)
    with_stats = _Niches({**batch, "gene_mean": mean, "gene_std": std}, model).standardised_centre()
    torch.testing.assert_close(with_stats, ((x - 1.5) / 0.5) * known)  # the slide's statistics
