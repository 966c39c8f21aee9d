"""st.tl.integrate: slides shifted apart come together, each spot stays with its own tissue, and bad input is refused."""

import anndata as ad
import numpy as np
import pytest

import storm as st
from storm.tl._harmonise import harmonise

#: About integration, not orientation: one pass per niche (tests/conftest.py::orientations).
ONE_PASS = True


@pytest.fixture(scope="module")
def embedded():
    """The demo's table embedded once by the default model."""
    sdata = st.datasets.demo()
    st.tl.embed(sdata)
    return sdata["table"]


def twins(table, shift):
    """Two slides with the same spots: the second's embeddings moved by ``shift`` (a batch effect) plus noise."""
    a, b = table.copy(), table.copy()
    b.obs_names = [f"{n}-b" for n in b.obs_names]
    noise = np.random.default_rng(0).normal(0, 0.05 * np.std(a.obsm["X_storm"]), a.obsm["X_storm"].shape)
    b.obsm["X_storm"] = np.asarray(a.obsm["X_storm"]) + shift + noise.astype(np.float32)
    return a, b


def test_a_batch_shift_is_removed_and_each_spot_meets_its_twin(embedded):
    x = np.asarray(embedded.obsm["X_storm"])
    shift = 3.0 * x.std() * np.random.default_rng(1).normal(size=x.shape[1]).astype(np.float32)
    a, b = twins(embedded, shift)
    st.tl.integrate([a, b], random_state=0)
    za, zb = a.obsm["X_storm_integrated"], b.obsm["X_storm_integrated"]
    before = np.linalg.norm(x.mean(0) - np.asarray(b.obsm["X_storm"]).mean(0)) / np.linalg.norm(x.std(0))
    after = np.linalg.norm(za.mean(0) - zb.mean(0)) / np.linalg.norm(za.std(0))
    assert before > 2.5 and after < 0.2
    # each spot's nearest spot of the other slide is its twin far more often than chance (1/151)
    distance = ((za[:, None, :] - zb[None, :, :]) ** 2).sum(-1)
    assert (distance.argmin(1) == np.arange(len(za))).mean() > 0.3
    record = a.uns["storm"]["X_storm_integrated"]
    assert record["batch_key"] is None and record["n_batches"] == 2 and record["n_slides"] == 2
    assert record["model_sha256"] == embedded.uns["storm"]["X_storm"]["model_sha256"]
    assert record["keys"] == {"obsm": ["X_storm_integrated"]}
    labels = st.tl.domains([a, b], 3, use_rep="X_storm_integrated", copy=True)
    same = (labels[0].obs["storm_domain"].to_numpy() == labels[1].obs["storm_domain"].to_numpy()).mean()
    assert same > 0.8


def test_a_batch_key_splits_one_slide_and_copy_leaves_it_alone(embedded):
    table = embedded.copy()
    half = np.arange(table.n_obs) % 2
    table.obs["run"] = np.where(half, "run2", "run1")
    table.obsm["X_storm"] = np.asarray(table.obsm["X_storm"]) + 2.0 * half[:, None].astype(np.float32)
    out = st.tl.integrate(table, batch_key="run", copy=True)
    assert "X_storm_integrated" not in table.obsm
    z = out.obsm["X_storm_integrated"]
    shift = 2.0 * np.sqrt(table.obsm["X_storm"].shape[1])  # the planted shift's length
    assert np.linalg.norm(z[half == 1].mean(0) - z[half == 0].mean(0)) < 0.05 * shift
    assert out.uns["storm"]["X_storm_integrated"]["batch_key"] == "run"


def test_bad_input_is_refused_before_any_work(embedded):
    a, b = twins(embedded, 0.0)
    with pytest.raises(ValueError, match="one batch"):
        st.tl.integrate(a)
    with pytest.raises(KeyError, match="`batch_key='donor'`"):
        st.tl.integrate([a, b], batch_key="donor")
    with pytest.raises(ValueError, match="`n_components`"):
        st.tl.integrate([a, b], n_components=1)
    with pytest.raises(ValueError, match="`theta`"):
        st.tl.integrate([a, b], theta=-1)
    other = b.copy()
    other.uns["storm"]["X_storm"] = {**other.uns["storm"]["X_storm"], "model_sha256": "0" * 64}
    with pytest.raises(ValueError, match="different models"):
        st.tl.integrate([a, other])
    with pytest.raises(KeyError, match="run st.tl.integrate"):
        st.tl.domains(ad.AnnData(a.X, obs=a.obs, obsm=dict(a.obsm), uns=dict(a.uns)), 3, use_rep="X_storm_integrated")
    assert "X_storm_integrated" not in a.obsm and "X_storm_integrated" not in b.obsm


def test_harmonise_keeps_what_one_batch_has_alone():
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 0.3, (400, 4)) + np.repeat(np.eye(4)[[0, 1]], 200, axis=0) * 5
    only_b = rng.normal(0, 0.3, (100, 4)) + np.eye(4)[2] * 5  # a tissue only batch 1 has
    x = np.vstack([shared, shared + [0, 0, 0, 2.0], only_b + [0, 0, 0, 2.0]])
    batch = np.repeat([0, 1, 1], [400, 400, 100])
    out, info = harmonise(x, batch, random_state=0)
    assert info["n_clusters"] == 30 and info["iterations"] >= 1
    gap = np.abs(out[:400].mean(0) - out[400:800].mean(0))[3]
    assert gap < 0.4  # the shift of batch 1 is gone ...
    assert np.linalg.norm(out[800:].mean(0) - out[:800].mean(0)) > 3  # ... and its own tissue is still apart


def test_labels_cross_to_the_other_slide_with_their_confidence(embedded):
    x = np.asarray(embedded.obsm["X_storm"])
    a, b = twins(embedded, 3.0 * x.std())
    st.tl.integrate([a, b])
    truth = a.obs["cluster"].astype(str).to_numpy()
    b.obs = b.obs.drop(columns=["cluster"])
    out = st.tl.transfer_labels(b, a, "cluster", copy=True)
    assert "cluster_transferred" not in b.obs
    found = out.obs["cluster_transferred"].astype(str).to_numpy()
    confidence = out.obs["cluster_transferred_confidence"].to_numpy()
    assert (found == truth).mean() > 0.8
    assert ((confidence > 0) & (confidence <= 1)).all()
    assert confidence[found == truth].mean() > confidence[found != truth].mean()  # wrong labels are less sure
    record = out.uns["storm"]["cluster_transferred"]
    assert (
        record["n_reference_spots"] == int(a.obs["cluster"].notna().sum()) and record["use_rep"] == "X_storm_integrated"
    )
    with pytest.raises(KeyError, match="no obs column `key='layer'`"):
        st.tl.transfer_labels(b, a, "layer")
    with pytest.raises(KeyError, match=r"integrate the reference and these slides"):
        st.tl.transfer_labels(b, a, "cluster", use_rep="X_other")
