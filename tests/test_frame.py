"""The frame every tool shares (storm/_frame.py): one signature contract, copy=, the previous release's names."""

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest
from spatialdata import SpatialData

import storm as st
from storm.io._where import RESOLVE_ARGS

#: About the frame, not orientation: one pass per niche (tests/conftest.py::orientations).
ONE_PASS = True

SRC = Path(__file__).resolve().parent.parent / "src" / "storm"
DEPRECATED = {"finetune": "fit_head", "annotate": "apply_head", "risk": "apply_risk"}
TOOLS = [getattr(st.tl, name) for name in st.tl.__all__ if name not in DEPRECATED and name != "StormHead"]
PLOTS = [getattr(st.pl, name) for name in st.pl.__all__]


@pytest.mark.parametrize("func", [*TOOLS, *PLOTS, st.pp.tile], ids=lambda f: f"{f.__module__}.{f.__name__}")
def test_every_tool_keeps_one_contract(func):
    parameters = inspect.signature(func).parameters
    names = list(parameters)
    assert names[0] == "data"
    if "model" in parameters:
        assert parameters["model"].kind is inspect.Parameter.KEYWORD_ONLY
    if "table_key" in parameters:
        assert all(parameters[name].kind is inspect.Parameter.KEYWORD_ONLY for name in RESOLVE_ARGS)
    assert "seed" not in parameters and "sdata" not in parameters
    if func in TOOLS and "copy" not in parameters:  # then it returns an object, and says which
        returned = inspect.signature(func).return_annotation
        assert returned not in ("None", None, inspect.Signature.empty)
        assert "Returns" in func.__doc__


def test_no_tool_gathers_its_arguments_with_locals():
    calls = []
    for file in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "locals":
                calls.append(f"{file.relative_to(SRC)}:{node.lineno}")
    assert calls == []


@pytest.fixture(scope="module")
def halves():
    """Two slides (the demo's left and right halves) with a column a head can learn, embedded by the default model."""
    sdata = st.datasets.demo()
    table = sdata["table"]
    left = table.obsm["spatial"][:, 0] < np.median(table.obsm["spatial"][:, 0])
    slides = [
        SpatialData(images=dict(sdata.images), shapes=dict(sdata.shapes), tables={"table": table[rows].copy()})
        for rows in (left, ~left)
    ]
    for s in slides:
        y = s["table"].obsm["spatial"][:, 1]
        s["table"].obs["side"] = np.where(y > np.median(y), "top", "bottom")
        st.tl.embed(s)
    return slides


def test_deprecated_head_names_warn_and_give_the_same_results(halves):
    train, test = halves
    head = st.tl.fit_head(train, "side", modality="image")
    with pytest.warns(FutureWarning, match=r"storm.tl.finetune is now storm.tl.fit_head"):
        old = st.tl.finetune(train, "side", modality="image")
    assert old.metrics == head.metrics
    for a, b in zip(old.module.state_dict().values(), head.module.state_dict().values(), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    st.tl.apply_head(test, head, key_added="new")
    with pytest.warns(FutureWarning, match=r"storm.tl.annotate is now storm.tl.apply_head"):
        st.tl.annotate(test, head, key_added="old")
    obs = test["table"].obs
    assert obs["new"].nunique() >= 1 and (obs["new"].astype(str) == obs["old"].astype(str)).all()
    np.testing.assert_array_equal(test["table"].obsm["new_proba"], test["table"].obsm["old_proba"])


def test_deprecated_risk_name_warns_and_gives_the_same_scores(halves):
    head = st.tl.fit_risk(halves, time=[3.0, 9.0], event=[1, 0], epochs=5, n_folds=2)
    slide = halves[0]
    st.tl.apply_risk(slide, head, key_added="risk_new")
    with pytest.warns(FutureWarning, match=r"storm.tl.risk is now storm.tl.apply_risk"):
        st.tl.risk(slide, head, key_added="risk_old")
    table = slide["table"]
    np.testing.assert_array_equal(table.obs["risk_new"], table.obs["risk_old"])
    assert table.uns["storm"]["risk_new"]["score"] == table.uns["storm"]["risk_old"]["score"]
    assert np.ptp(table.obs["risk_new"]) > 0


def test_previous_argument_names_still_work_with_a_warning(halves):
    slide = halves[0]
    st.tl.domains(slide, 3, random_state=5, key_added="by_random_state")
    with pytest.warns(FutureWarning, match=r"`seed=` of domains\(\) is now `random_state=`"):
        st.tl.domains(slide, 3, seed=5, key_added="by_seed")
    with pytest.warns(FutureWarning, match=r"`sdata=` of domains\(\) is now `data=`"):
        st.tl.domains(sdata=slide, n_domains=3, random_state=5, key_added="by_sdata")
    obs = slide["table"].obs
    assert (obs["by_seed"] == obs["by_random_state"]).all() and (obs["by_sdata"] == obs["by_random_state"]).all()
    assert slide["table"].uns["storm"]["by_seed"]["seed"] == 5

    model = st.models.StormModel.from_pretrained("default")
    copy = st.tl.embed(slide, model=model, key_added="X_kw", copy=True)
    with pytest.warns(FutureWarning, match=r"embed\(\) takes `model` by keyword only now"):
        positional = st.tl.embed(slide, model, key_added="X_kw", copy=True)
    np.testing.assert_array_equal(positional["table"].obsm["X_kw"], copy["table"].obsm["X_kw"])


def test_ambiguous_or_extra_arguments_are_refused_before_any_work(halves):
    slide = halves[0]
    with pytest.raises(TypeError, match=r"got both `sdata` \(its previous name\) and `data`"):
        st.tl.domains(slide, sdata=slide)
    with pytest.raises(TypeError, match=r"got both `seed` \(its previous name\) and `random_state`"):
        st.tl.domains(slide, seed=1, random_state=2)
    with pytest.raises(TypeError, match=r"takes 1 positional arguments but 3 were given"):
        st.tl.embed(slide, None, "image")
    with pytest.raises(TypeError, match="unexpected keyword argument 'table'"):
        st.tl.embed(slide, table="table")


def test_copy_leaves_every_slide_as_it_was_and_returns_the_copies(halves):
    before = [sorted(s["table"].obs.columns) for s in halves]
    copies = st.tl.domains(tuple(halves), 3, key_added="joint", copy=True)
    assert isinstance(copies, list) and len(copies) == 2
    assert all("joint" in c["table"].obs for c in copies)
    assert [sorted(s["table"].obs.columns) for s in halves] == before
    assert st.tl.domains(halves, 3, key_added="joint") is None
    for s, c in zip(halves, copies, strict=True):
        assert (s["table"].obs["joint"] == c["table"].obs["joint"]).all()


def test_tile_with_copy_records_into_the_copy_only():
    sdata = st.datasets.demo()
    target, tiles = st.pp.tile(sdata, tile_px=32, tile_um=64.0, copy=True)
    assert "storm" not in sdata["table"].uns and "storm_tile_padded" not in sdata["table"].obs
    assert target["table"].uns["storm"]["tiles"]["tile_px"] == 32
    assert len(tiles) == 151 and tiles[0].shape == (32, 32, 3)


def test_head_modules_moved_to_tl_with_the_old_place_warning():
    from storm.tl._heads._modules import SpotHead

    assert st.tl.SpotHead is SpotHead
    with pytest.warns(FutureWarning, match=r"storm.models.SpotHead is now storm.tl.SpotHead"):
        assert st.models.SpotHead is SpotHead


def test_an_embedding_computed_on_demand_is_announced(caplog):
    sdata = st.datasets.demo()
    with caplog.at_level("WARNING", logger="storm"):
        st.tl.domains(sdata, 3)
    assert "computing it with st.tl.embed, which adds obsm['X_storm']" in caplog.text
    assert "X_storm" in sdata["table"].obsm


def test_data_names_are_imported_from_storm_data_and_the_old_place_warns():
    with pytest.warns(FutureWarning, match=r"storm.train.Corpus is now storm.data.Corpus"):
        from storm.train import Corpus
    assert Corpus is st.data.Corpus
    assert "Corpus" not in st.train.__all__


def test_dataset_seeds_are_spelled_random_state():
    new = st.datasets.synthetic(256, 256, n_genes=5, random_state=3)["table"].X
    with pytest.warns(FutureWarning, match=r"`seed=` of synthetic\(\) is now `random_state=`"):
        old = st.datasets.synthetic(256, 256, n_genes=5, seed=3)["table"].X
    other = st.datasets.synthetic(256, 256, n_genes=5, random_state=4)["table"].X
    assert (new != old).nnz == 0 and (new != other).nnz > 0
