"""Predicted expression is log1p(CP10k): never below 0, and what one spot gets depends on its image, not on the call."""

import numpy as np

import storm as st

#: About the scales of predictions, not orientation: one pass per niche (tests/conftest.py::orientations).
ONE_PASS = True


def test_predictions_are_never_negative_on_either_scale():
    for scale in ("slide", "model"):
        sdata = st.datasets.demo()
        st.tl.predict_expression(sdata, scale=scale)
        layer = sdata["table"].layers["storm_predicted"]
        predicted = layer[:, sdata["table"].var["storm_predicted"].to_numpy()]
        assert np.nanmin(predicted) >= 0
        assert (predicted == 0).mean() < 0.5  # at most each gene's lowest spots, not a flattened map
        assert sdata["table"].uns["storm"]["storm_predicted"]["scale"] == scale


def test_a_few_spots_use_the_model_scale_and_agree_with_the_whole_slide(caplog):
    genes = ["ERBB2", "KRT19", "MGP"]
    whole = st.datasets.demo()
    st.tl.predict_expression(whole, genes, scale="model")
    values = whole["table"][:, genes].layers["storm_predicted"]
    singles = []
    for i in (0, 7):
        one = st.datasets.demo()
        one.tables["table"] = one["table"][[i]].copy()
        st.tl.predict_expression(one, genes)  # scale="slide" asked; one spot has no spread
        assert one["table"].uns["storm"]["storm_predicted"]["scale"] == "model"
        singles.append(one["table"][:, genes].layers["storm_predicted"][0])
    assert "scale='slide' needs a slide's spread" in caplog.text
    assert not np.allclose(singles[0], singles[1])  # each spot's own image, not the gene mean
    np.testing.assert_allclose(singles, values[[0, 7]], atol=0.15)  # alone, a spot has no niche around it
