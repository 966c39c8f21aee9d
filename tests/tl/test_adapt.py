"""st.tl.adapt and st.tl.domains(adapt=...): adaptation trains a copy, deterministically, writing nothing."""

import numpy as np
import pytest
import torch

import storm as st
from storm.data import Corpus, NicheDataset, NicheLoader, log1p_cp10k
from storm.models import GeneVocab, StormConfig, StormModel
from storm.tl._metrics import pearson_per_gene
from storm.train import StormObjectives

#: About adaptation, not orientation: one pass per niche (tests/conftest.py::orientations).
ONE_PASS = True


@pytest.fixture(scope="module")
def tiny():
    sdata = st.datasets.demo()
    torch.manual_seed(0)
    config = StormConfig.from_preset("tiny", image_size=32, tile_um=112.0)
    return StormModel(config, GeneVocab.from_genes(sdata["table"].var_names)).eval()


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _pretraining_loss(model, sdata):
    """storm's pretraining objectives (default weights) on every niche of the demo slide, with fixed masks."""
    corpus = Corpus.for_model(sdata, model)
    batches = [list(range(corpus.n_spots))]
    batch = next(iter(NicheLoader(NicheDataset(corpus), batches, device=torch.device("cpu"))))
    with torch.no_grad():
        total, _ = StormObjectives()(model, batch, generator=torch.Generator().manual_seed(0))
    return float(total)


def test_adapt_trains_a_copy_and_writes_nothing(tiny):
    sdata = st.datasets.demo()
    table = sdata["table"]
    before = _weights(tiny)
    obsm, uns = set(table.obsm), set(table.uns)
    adapted = st.tl.adapt(sdata, model=tiny, steps=20, batch_size=8, lr=2e-3, random_state=0)
    assert all(torch.equal(v, tiny.state_dict()[k]) for k, v in before.items())  # the passed model is unchanged
    assert set(table.obsm) == obsm and set(table.uns) == uns
    assert not adapted.training and adapted is not tiny
    assert "adapted (20 steps on 1 slide)" in adapted.checkpoint_info["name"]
    changed = [k for k, v in adapted.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("gene.") for k in changed) and any(k.startswith("fusion.") for k in changed)
    # it learned this slide: storm's pretraining loss on it falls
    # (12.97 -> 11.64 here; the standardised expression losses start near 1, so the total cannot fall far in 20 steps)
    assert _pretraining_loss(adapted, sdata) < 0.95 * _pretraining_loss(tiny, sdata)


def _he_pearson(model, sdata, genes):
    """Mean Pearson r over ``genes`` between H&E predictions and the measured log1p(CP10k), across spots."""
    table = sdata["table"]
    truth = log1p_cp10k(table.X)[:, table.var_names.get_indexer(genes)].toarray()
    st.tl.predict_expression(sdata, genes=genes, model=model, key_added="he")
    predicted = np.asarray(table[:, genes].layers["he"])
    return float(pearson_per_gene(predicted, truth).mean())


def test_adapt_to_expression_trains_the_image_path():
    # a synthetic slide whose counts follow the stain intensity: H&E predicts expression
    sdata = st.datasets.synthetic(3072, 3072, n_genes=50, random_state=0)
    table = sdata["table"]
    genes = list(table.var_names[np.argsort(-np.asarray(table.X.mean(0)).ravel())[:20]])  # the 20 most expressed
    torch.manual_seed(0)
    config = StormConfig.from_preset("tiny", image_size=32, tile_um=112.0)
    model = StormModel(config, GeneVocab.from_genes(sdata["table"].var_names)).eval()
    x = log1p_cp10k(table.X).toarray()[:, table.var_names.get_indexer(model.vocab.symbols)]
    model.set_expression_reference(x.mean(0), x.std(0))  # as pretraining on slides like it would set them
    before = _weights(model)
    adapted = st.tl.adapt(sdata, model=model, task="expression", steps=40, random_state=0)
    assert "adapted to H&E -> expression (40 steps on 1 slide)" in adapted.checkpoint_info["name"]
    changed = {k for k, v in adapted.state_dict().items() if not torch.equal(v, before[k])}
    top = {k.split(".")[0] for k in changed}
    assert {"image", "fusion", "expression_decoder", "expression_head"} <= top, top
    # an image-only pass gives the gene branch no gradient (AdamW skips it), except the gene embeddings that the
    # expression head shares; the expression -> image path is untouched
    assert [k for k in changed if k.startswith("gene.")] == ["gene.gene_embedding.weight"]
    assert not top & {"image_decoder", "image_feature_head", "reconstruction_head"}, top
    # it learned this slide's H&E -> expression (r 0.10 -> 0.17 here), more than self-supervised adaptation (0.11)
    plain = st.tl.adapt(sdata, model=model, steps=40, random_state=0)
    start, supervised = _he_pearson(model, sdata, genes), _he_pearson(adapted, sdata, genes)
    assert supervised > start + 0.04 and supervised > _he_pearson(plain, sdata, genes) + 0.03, (start, supervised)


def test_adapt_is_deterministic(tiny):
    sdata = st.datasets.demo()
    a = st.tl.adapt(sdata, model=tiny, steps=2, batch_size=8, random_state=1)
    b = st.tl.adapt(sdata, model=tiny, steps=2, batch_size=8, random_state=1)
    c = st.tl.adapt(sdata, model=tiny, steps=2, batch_size=8, random_state=2)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not all(torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


def test_adapt_progress_bar_is_labelled_adapt(tiny, capsys, monkeypatch):
    monkeypatch.setattr(st.settings, "progress", True)
    st.tl.adapt(st.datasets.demo(), model=tiny, steps=2, batch_size=8, random_state=0)
    err = capsys.readouterr().err
    assert "adapt: 100%" in err and "pretrain" not in err


def test_domains_with_adapt(tiny):
    sdata = st.datasets.demo()
    st.tl.domains(sdata, n_domains=3, model=tiny, adapt=2)
    table = sdata["table"]
    assert table.obs["storm_domain"].nunique() == 3
    assert table.uns["storm"]["storm_domain"]["adapt_steps"] == 2
    assert "adapted (2 steps" in table.uns["storm"]["X_storm"]["model"]
    assert table.uns["storm"]["X_storm"]["model_sha256"] is None  # in memory: no file to hash
    assert "model_adapted_from_sha256" in table.uns["storm"]["X_storm"]
    st.tl.embed(sdata, model=tiny, key_added="X_storm_plain")
    assert not np.allclose(table.obsm["X_storm"], table.obsm["X_storm_plain"])


def test_adapt_errors(tiny):
    sdata = st.datasets.demo()
    for steps in (0, 2.5, True):
        with pytest.raises(ValueError, match="`steps` must be a positive integer"):
            st.tl.adapt(sdata, model=tiny, steps=steps)
    with pytest.raises(ValueError, match="`task` must be one of \\('embedding', 'expression', 'image'\\)"):
        st.tl.adapt(sdata, model=tiny, task="genes")
    no_image = st.datasets.demo()
    del no_image.images["he"]
    with pytest.raises(ValueError, match="every slide needs an H&E image and counts; slide 1 .*: no H&E image"):
        st.tl.adapt([sdata, no_image], tiny, task="expression")
    with pytest.raises(ValueError, match="`adapt` must be True, False or a positive number"):
        st.tl.domains(sdata, n_domains=2, model=tiny, adapt=0)
    sdata["table"].obsm["X_pca"] = np.zeros((sdata["table"].n_obs, 2))
    with pytest.raises(ValueError, match="use_rep='X_storm' or adapt=False"):
        st.tl.domains(sdata, n_domains=2, use_rep="X_pca", adapt=True)
    sdata["table"].obsm["X_storm"] = np.zeros((sdata["table"].n_obs, 2))  # the user's own, not storm's
    with pytest.raises(ValueError, match="would overwrite obsm\\['X_storm'\\]"):
        st.tl.domains(sdata, n_domains=2, model=tiny, adapt=2)
    assert "storm_domain" not in sdata["table"].obs


@pytest.mark.data
@pytest.mark.slow
def test_adapted_default_finds_the_layers_of_a_held_out_dlpfc_section(shared_data_path):
    """DLPFC 151673 was held out of the default's pretraining: zero-shot finds its layers, adaptation adds to them.

    ARI 0.53 zero-shot and 0.59 adapted with the default clustering (tied Gaussian mixture; 0.45 and 0.50 with
    k-means).
    """
    from sklearn.metrics import adjusted_rand_score

    st.settings.progress = False
    sdata = st.datasets.dlpfc("151673", shared_data_path("dlpfc"))
    table = sdata["table"]
    labelled = table.obs["layer"].notna().to_numpy()
    truth = table.obs["layer"].astype(str).to_numpy()[labelled]
    scores = {}
    for adapt in (False, True):
        key = f"domain_{adapt}"
        st.tl.domains(sdata, n_domains=7, adapt=adapt, random_state=0, key_added=key)
        scores[adapt] = adjusted_rand_score(truth, table.obs[key].astype(str).to_numpy()[labelled])
        del table.obsm["X_storm"]
    assert scores[False] > 0.5, scores
    assert scores[True] > 0.55 and scores[True] > scores[False] + 0.03, scores
