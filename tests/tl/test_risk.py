"""st.tl.fit_risk / st.tl.apply_risk / st.pl.risk: attention-MIL Cox heads on cohorts with a planted signal, and her2st."""

import numpy as np
import pytest
import torch

import storm as st
from storm.data import log1p_cp10k
from storm.tl._heads._fitting import cox_loss, folds
from storm.tl._metrics import concordance_index


@pytest.fixture(scope="module")
def embedded():
    """The demo embedded once by the default model, and its ERBB2-high half of spots (the tumour-rich ones)."""
    sdata = st.datasets.demo()
    st.tl.embed(sdata)
    table = sdata["table"]
    erbb2 = log1p_cp10k(table.X)[:, table.var_names.get_loc("ERBB2")].toarray().ravel()
    return table, np.argsort(erbb2, kind="stable")[len(erbb2) // 2 :]


def cohort(embedded, n, seed):
    """Patients whose slides hold a share of the demo's ERBB2-high spots; their hazard grows with it."""
    table, high = embedded
    return st.datasets.planted_cohort(table, high, n, random_state=seed)


def test_cox_loss_and_c_index_values():
    time = torch.tensor([1.0, 2.0, 2.0, 4.0])
    event = torch.tensor([1.0, 1.0, 0.0, 1.0])
    scores = torch.tensor([0.5, 0.1, -0.2, 0.3])
    # by hand: risk sets {all}, {2.0, 2.0, 4.0} (Breslow: tied times share one), {4.0}
    expected = (
        -(
            (0.5 - np.log(np.exp([0.5, 0.1, -0.2, 0.3]).sum()))
            + (0.1 - np.log(np.exp([0.1, -0.2, 0.3]).sum()))
            + (0.3 - 0.3)
        )
        / 3
    )
    assert float(cox_loss(scores, time, event)) == pytest.approx(expected, rel=1e-6)
    # comparable pairs: (0,1) (0,2) (0,3) (1,2: tie, 2 censored) (1,3); concordant: 0>1, 0>2, 0>3, 1>2; 1<3 discordant
    assert concordance_index(time.numpy(), scores.numpy(), event.numpy()) == pytest.approx(4 / 5)
    assert np.isnan(concordance_index(np.array([1.0, 2.0]), np.array([0.0, 1.0]), np.array([0, 0])))


def test_folds_keep_patients_together_and_spread_events():
    groups = np.array([0, 0, 1, 2, 3, 3, 4, 5])
    parts = folds(groups, 3, seed=0, strata=np.array([1, 1, 0, 0, 1, 0]))
    assert sorted(np.concatenate(parts).tolist()) == list(range(8))
    for part in parts:
        assert all(set(np.flatnonzero(groups == g)) <= set(part) for g in np.unique(groups[part]))


def test_risk_head_round_trip_and_spot_contributions(embedded, tmp_path):
    slides, time, event, _ = cohort(embedded, 12, seed=3)
    head = st.tl.fit_risk(slides, time, event, epochs=20, n_folds=3)
    assert head.task == "risk" and head.modality == "both" and head.meta["model"]["model"] == "default"
    head.save(tmp_path / "risk")
    slide = slides[0]
    st.tl.apply_risk(slide, tmp_path / "risk")
    contribution = slide.obs["storm_risk"].to_numpy()
    attention = slide.obs["storm_risk_attention"].to_numpy()
    score = slide.uns["storm"]["storm_risk"]["score"]
    assert attention.sum() == pytest.approx(1.0, rel=1e-5)
    assert contribution.mean() == pytest.approx(score, rel=1e-4, abs=1e-6)  # contributions average to the slide score
    fig = st.pl.risk(slide, return_fig=True)
    low, high = fig.axes[0].collections[0].get_clim()
    assert -low == high > 0 and fig.axes[0].get_title() == f"slide risk {score:.2f}"


def test_fit_risk_bad_input(embedded):
    slides, time, event, _ = cohort(embedded, 4, seed=0)
    with pytest.raises(ValueError, match="no slide has an event"):
        st.tl.fit_risk(slides, time, [0, 0, 0, 0])
    with pytest.raises(ValueError, match="one per slide"):
        st.tl.fit_risk(slides, time[:3], event)
    with pytest.raises(ValueError, match="at least two slides"):
        st.tl.fit_risk(slides[:1], time[:1], event[:1])
    with pytest.raises(ValueError, match="not expression|apply_head"):
        st.tl.apply_risk(slides[0], st.tl.StormHead(st.models.SpotHead(4, 1), {"task": "regression", "meta": {}}))


@pytest.mark.slow
def test_planted_cohort_c_index_above_0_7_cross_validated_and_held_out(embedded):
    slides, time, event, fraction = cohort(embedded, 40, seed=1)
    head = st.tl.fit_risk(slides, time, event, random_state=0)
    oracle = concordance_index(time, fraction, event)
    assert head.metrics["cv_c_index"] > 0.7, (head.metrics, oracle)
    test, t_test, e_test, _ = cohort(embedded, 80, seed=2)
    scores = []
    for slide in test:
        st.tl.apply_risk(slide, head)
        scores.append(slide.uns["storm"]["storm_risk"]["score"])
    assert concordance_index(t_test, np.array(scores), e_test) > 0.7
    order = np.random.default_rng(0).permutation(len(time))  # (time, event) pairs shuffled together: no signal
    shuffled = st.tl.fit_risk(slides, time[order], event[order], random_state=0)
    assert 0.3 < shuffled.metrics["cv_c_index_pooled"] < 0.7  # no signal, no skill


@pytest.mark.slow
@pytest.mark.data
def test_her2st_clinical_smoke(shared_data_path):
    root = shared_data_path("her2st")
    clinical = st.datasets.her2st_clinical(root)
    assert clinical.loc[["C", "D"], "OS"].tolist() == [1, 1] and clinical["OS"].sum() == 2
    sections = ["A1", "B1", "C1", "D1", "E1", "F1", "G1", "H1"]
    slides = [st.datasets.her2st(s, root, image=False) for s in sections]
    for s in slides:
        st.tl.embed(s, modality="expression")
    patients = [s[0] for s in sections]
    # no follow-up times in the table: equal times, so the Cox likelihood ranks the deceased above the others
    head = st.tl.fit_risk(slides, np.ones(len(slides)), clinical.loc[patients, "OS"].to_numpy(), n_folds=4)
    assert head.metrics["n_events"] == 2 and head.metrics["n_slides"] == 8
    st.tl.apply_risk(slides[2], head)
    assert np.isfinite(slides[2]["table"].obs["storm_risk"]).all()
