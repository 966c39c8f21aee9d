"""st.tl.fit_head / st.tl.apply_head / predict_expression(head=): heads on frozen embeddings, saved and re-applied."""

import numpy as np
import pytest
import torch
from spatialdata import SpatialData

import storm as st
from storm.data import log1p_cp10k
from storm.io import resolve
from storm.tl._heads._inputs import spot_features
from storm.tl._metrics import balanced_accuracy, pearson_per_gene
from storm.tl._model_arg import get_model
from storm.tl._morphology import MORPHOLOGY_BLOCKS

#: About heads, not orientation: one pass per niche (tests/conftest.py::orientations).
ONE_PASS = True


def halves(sdata):
    """Two slides: the left and right halves of the demo crop (same image, disjoint spots)."""
    table = sdata["table"]
    left = table.obsm["spatial"][:, 0] < np.median(table.obsm["spatial"][:, 0])
    return [
        SpatialData(images=dict(sdata.images), shapes=dict(sdata.shapes), tables={"table": table[rows].copy()})
        for rows in (left, ~left)
    ]


@pytest.fixture(scope="module")
def planted():
    """Demo halves with targets that are exact functions of the head's image features (a signal a head must find)."""
    sdata = st.datasets.demo()
    net = get_model(None)
    slides = halves(sdata)
    features = [spot_features(resolve(s), net, "image", None, per_slide=False)[0] for s in slides]
    stacked = np.concatenate(features)
    stacked = (stacked - stacked.mean(0)) / (stacked.std(0) + 1e-6)
    direction = np.linalg.svd(stacked, full_matrices=False)[2][:2].sum(0)  # along the main axes of variation
    centre = np.median(np.concatenate(features) @ direction)
    for s, x in zip(slides, features, strict=True):
        score = x @ direction
        s["table"].obs["signal"] = score
        s["table"].obs["side"] = np.where(score > centre, "high", "low")
    return slides


def test_regression_head_recovers_a_planted_signal_on_held_out_spots(planted):
    train, test = planted
    head = st.tl.fit_head(train, "signal", modality="image")
    assert head.task == "regression" and head.outputs == ["signal"]
    assert head.metrics["cv_score"] > 0.9
    st.tl.apply_head(test, head)
    r = np.corrcoef(test["table"].obs["storm_signal"], test["table"].obs["signal"])[0, 1]
    assert r > 0.9


def test_classification_head_saved_loaded_and_applied(planted, tmp_path):
    train, test = planted
    head = st.tl.fit_head(train, "side", modality="image")
    assert head.task == "classification" and head.outputs == ["high", "low"]
    head.save(tmp_path / "side")
    st.tl.apply_head(test, tmp_path / "side")
    table = test["table"]
    assert table.obs["storm_side"].dtype == "category"
    assert balanced_accuracy(table.obs["side"].to_numpy(), table.obs["storm_side"].astype(str).to_numpy()) > 0.8
    proba = table.obsm["storm_side_proba"]
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    assert (np.asarray(head.outputs)[proba.argmax(1)] == table.obs["storm_side"].astype(str)).all()
    assert table.uns["storm"]["storm_side"]["model"] == "default"


def test_expression_head_predicts_held_out_half_and_round_trips(tmp_path, caplog):
    train, test = halves(st.datasets.demo())
    genes = ["ERBB2", "KRT19", "MGP", "ACTB"]
    head = st.tl.fit_head(train, "expression", genes=genes)
    assert head.modality == "image" and head.outputs == genes
    assert 0 < head.metrics["cv_score"] < 1
    st.tl.predict_expression(test, head=head)
    table = test["table"]
    columns = table.var_names.get_indexer(genes)
    predicted = table.layers["storm_predicted"][:, columns]
    assert np.isfinite(predicted).all() and table.var["storm_predicted"].sum() == len(genes)
    measured = log1p_cp10k(table.X).toarray()[:, columns]
    assert pearson_per_gene(predicted, measured).mean() > 0.05  # trained on the other half of the crop
    head.save(tmp_path / "expr")
    again = st.tl.predict_expression(test, head=tmp_path / "expr", copy=True)
    np.testing.assert_allclose(again["table"].layers["storm_predicted"][:, columns], predicted, rtol=1e-5)

    # a slide lacking some of the head's genes is told they are missing from its table
    def without(dropped):
        kept = table[:, ~table.var_names.isin(dropped)].copy()
        return SpatialData(images=dict(test.images), shapes=dict(test.shapes), tables={"table": kept})

    lacking = without(genes[:2])
    with caplog.at_level("WARNING", logger="storm"):
        st.tl.predict_expression(lacking, head=head)
    assert "2 of the head's 4 genes are missing from the table and are not predicted (e.g. ERBB2" in caplog.text
    assert lacking["table"].var["storm_predicted"].sum() == 2
    with pytest.raises(ValueError, match="None of the head's 4 genes .* is a gene of this table"):
        st.tl.predict_expression(without(genes), head=head)


def test_head_refuses_another_model_and_wrong_uses(planted):
    from storm.models import GeneVocab, StormConfig, StormModel

    train, _ = planted
    head = st.tl.fit_head(train, "side", modality="image")
    other = StormModel(StormConfig.from_preset("tiny", image_size=32), vocab=GeneVocab.from_genes(["ERBB2"]))
    other.checkpoint_info = {"name": "other", "sha256": "0" * 64}
    with pytest.raises(ValueError, match="trained on embeddings of model 'default'"):
        st.tl.apply_head(train, head, model=other)
    with pytest.raises(ValueError, match="not expression"):
        st.tl.predict_expression(train, head=head)
    with pytest.raises(ValueError, match="st.tl.apply_risk"):
        st.tl.apply_head(train, st.tl.StormHead(head.module, {**head.meta, "task": "risk"}))


def test_fit_head_bad_input(planted, tmp_path):
    train, _ = planted
    with pytest.raises(KeyError, match="not an obs column"):
        st.tl.fit_head(train, "nope")
    train["table"].obs["one"] = "a"
    with pytest.raises(ValueError, match="single class"):
        st.tl.fit_head(train, "one", modality="image")
    with pytest.raises(ValueError, match="`task`"):
        st.tl.fit_head(train, "side", task="ranking")
    with pytest.raises(KeyError, match="not measured"):
        st.tl.fit_head(train, "expression", genes=["NOT_A_GENE"])
    with pytest.raises(FileNotFoundError, match="not a storm head folder"):
        st.tl.StormHead.load(tmp_path)
    with pytest.raises(TypeError, match="`per_slide`"):
        st.tl.fit_head(train, "signal", per_slide="yes")


def test_per_slide_heads_see_each_slide_standardised_and_keep_it(planted, tmp_path):
    """Expression heads standardise features within each slide by default (obs heads do not), also when applied."""
    train, test = planted
    net = get_model(None)
    raw, _ = spot_features(resolve(test), net, "image", None, per_slide=False)
    within, _ = spot_features(resolve(test), net, "image", None, per_slide=True)
    varying = raw.std(0) > 0
    np.testing.assert_allclose(within[:, varying], (raw - raw.mean(0))[:, varying] / raw.std(0)[varying], atol=1e-6)
    np.testing.assert_allclose(within[:, ~varying], 0.0)
    plain = st.tl.fit_head(train, "signal", modality="image").meta["input"]
    assert plain["per_slide"] is False and plain["morphology"] is False
    head = st.tl.fit_head(train, "signal", modality="image", per_slide=True)
    assert head.meta["input"]["per_slide"] is True and head.metrics["cv_score"] > 0.8
    head.save(tmp_path / "signal")
    st.tl.apply_head(test, tmp_path / "signal")
    predicted = test["table"].obs["storm_signal"].to_numpy()
    assert np.corrcoef(predicted, test["table"].obs["signal"])[0, 1] > 0.8
    # the head saw the test slide standardised: its predictions are the linear map of the standardised features
    module = st.tl.StormHead.load(tmp_path / "signal").module
    weight = module.net[-1].weight.detach().numpy()
    expected = ((within - module.feature_mean.numpy()) / module.feature_std.numpy()) @ weight.T
    expected = expected[:, 0] * module.target_std.numpy()[0] + module.target_mean.numpy()[0]
    np.testing.assert_allclose(predicted, expected, rtol=1e-4, atol=1e-4)
    genes = ["ERBB2", "KRT19"]
    assert st.tl.fit_head(train, "expression", genes=genes).meta["input"]["per_slide"] is True


def test_morphology_heads_read_the_tile_statistics_wherever_applied(tmp_path):
    train, test = halves(st.datasets.demo())
    net = get_model(None)
    genes = ["ERBB2", "KRT19", "MGP", "ACTB"]
    head = st.tl.fit_head(train, "expression", genes=genes)  # expression heads read the statistics by default
    assert head.meta["input"]["morphology"] is True
    assert head.meta["init"]["n_features"] == 2 * net.config.dim + sum(MORPHOLOGY_BLOCKS)
    head.save(tmp_path / "head")
    st.tl.predict_expression(test, head=tmp_path / "head", scale="model")
    predicted = test["table"].layers["storm_predicted"][:, test["table"].var_names.get_indexer(genes)]
    x, _ = spot_features(resolve(test), net, "image", None, per_slide=True, morphology=True)
    np.testing.assert_allclose(
        predicted, head.module.predict(torch.as_tensor(x, dtype=torch.float32)).detach().numpy(), atol=1e-4
    )
    with pytest.raises(ValueError, match="reads the H&E"):
        st.tl.fit_head(train, "expression", genes=genes, modality="expression", morphology=True)
    with pytest.raises(TypeError, match="`morphology`"):
        st.tl.fit_head(train, "expression", genes=genes, morphology=1)


def test_expression_heads_learn_within_slide_variation_and_return_realistic_maps():
    """per_slide heads fit each slide's standardised expression; scale="slide" gives their maps the genes' spread."""
    train, test = halves(st.datasets.demo()), halves(st.datasets.demo())[0]
    genes = ["ERBB2", "KRT19", "MGP", "ACTB"]
    head = st.tl.fit_head(train, "expression", genes=genes, morphology=False)
    measured = []
    for s in train:
        table = s["table"][resolve(s).obs_names]
        values = log1p_cp10k(table.X).toarray()[:, table.var_names.get_indexer(genes)]
        measured.append((values.mean(0), values.std(0)))
    np.testing.assert_allclose(head.meta["expression_scale"]["mean"], np.mean([m for m, _ in measured], 0), rtol=1e-6)
    np.testing.assert_allclose(head.meta["expression_scale"]["spread"], np.mean([v for _, v in measured], 0), rtol=1e-6)
    maps = {}
    for scale in ("slide", "model"):
        st.tl.predict_expression(test, head=head, scale=scale, key_added=f"p_{scale}")
        maps[scale] = test["table"].layers[f"p_{scale}"][:, test["table"].var_names.get_indexer(genes)]
        assert test["table"].uns["storm"][f"p_{scale}"]["scale"] == scale
    np.testing.assert_allclose(maps["slide"].mean(0), head.meta["expression_scale"]["mean"], atol=1e-4)
    np.testing.assert_allclose(maps["slide"].std(0), head.meta["expression_scale"]["spread"], rtol=1e-3)
    assert (maps["model"].std(0) < maps["slide"].std(0)).all()  # the conditional mean shrinks; the ranking is the same
    np.testing.assert_allclose(pearson_per_gene(maps["slide"], maps["model"]), 1.0, atol=1e-5)
    assert "expression_scale" not in st.tl.fit_head(train, "expression", genes=genes, per_slide=False).meta


def test_input_genes_keep_a_head_on_the_same_genes_across_panels(tmp_path, caplog):
    """A head fitted on chosen genes reads exactly those on a slide that measures more (or in another order)."""
    train, test = halves(st.datasets.demo())
    genes = list(train["table"].var_names[::3])
    for s in (train, test):
        x = log1p_cp10k(s["table"].X).toarray()
        s["table"].obs["erbb2"] = np.where(x[:, s["table"].var_names.get_loc("ERBB2")] > 1.5, "high", "low")
    head = st.tl.fit_head(train, "erbb2", modality="expression", input_genes=genes)
    assert head.meta["input"]["genes"] == genes
    head.save(tmp_path / "h")
    narrowed = test["table"][:, genes[::-1]].copy()  # only the head's genes, in another order
    full, small = test, SpatialData(shapes=dict(test.shapes), tables={"table": narrowed})
    lacking = SpatialData(shapes=dict(test.shapes), tables={"table": test["table"][:, genes[1:]].copy()})
    st.tl.apply_head(full, tmp_path / "h")
    st.tl.apply_head(small, head)
    np.testing.assert_allclose(full["table"].obsm["storm_erbb2_proba"], narrowed.obsm["storm_erbb2_proba"], atol=1e-5)
    assert balanced_accuracy(full["table"].obs["erbb2"].to_numpy(), full["table"].obs["storm_erbb2"].astype(str)) > 0.7
    whole = st.tl.fit_head(train, "erbb2", modality="expression")  # each slide's whole panel: other features
    assert whole.meta["input"]["genes"] is None and len(whole.meta["input"]["panel"]) == train["table"].n_vars
    on_full = st.tl.apply_head(full, whole, key_added="w", copy=True)["table"].obsm["w_proba"]
    with pytest.raises(
        ValueError, match=r"This slide measures 33% of the 1000 genes the head's embeddings.*input_genes="
    ):
        st.tl.apply_head(small, whole, key_added="w")  # a third of the panel: other embeddings, refused
    assert "w" not in small["table"].obs
    var = test["table"].var_names
    most = SpatialData(shapes=dict(test.shapes), tables={"table": test["table"][:, var[: int(0.7 * len(var))]].copy()})
    with caplog.at_level("WARNING", logger="storm"):
        on_most = st.tl.apply_head(most, whole, key_added="w", copy=True)["table"].obsm["w_proba"]
    assert "this slide measures 70% of the 1000 genes" in caplog.text
    assert np.abs(on_full - on_most).max() > 1e-3
    with pytest.raises(ValueError, match=rf"this slide does not measure 1 of the {len(genes)} input genes"):
        st.tl.apply_head(lacking, head)
    assert "storm_erbb2" not in lacking["table"].obs


def test_input_genes_bad_input():
    train, _ = halves(st.datasets.demo())
    train["table"].obs["half"] = np.where(np.arange(train["table"].n_obs) % 2, "a", "b")
    with pytest.raises(TypeError, match=r"pass \['ERBB2'\]"):
        st.tl.fit_head(train, "half", modality="expression", input_genes="ERBB2")
    with pytest.raises(ValueError, match="at least one gene, each once"):
        st.tl.fit_head(train, "half", modality="expression", input_genes=["ERBB2", "ERBB2"])
    with pytest.raises(ValueError, match="modality='image' reads none"):
        st.tl.fit_head(train, "half", modality="image", input_genes=["ERBB2"])
    with pytest.raises(ValueError, match=r"slide 0 does not measure 1 of the 2 input genes \(e.g. \['NOPE'\]\)"):
        st.tl.fit_head(train, "half", modality="expression", input_genes=["ERBB2", "NOPE"])
