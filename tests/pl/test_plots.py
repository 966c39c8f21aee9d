"""st.pl plots compared with stored images at low dpi (set STORM_UPDATE_BASELINES=1 to rewrite them)."""

import os
from pathlib import Path

import matplotlib
import numpy as np
import pytest

import storm as st
from storm.data import log1p_cp10k

matplotlib.use("Agg")
BASELINE = Path(__file__).parent / "baseline"
DPI = 40
TOLERANCE = 8  # RMS over 0-255 grey levels: font hinting and antialiasing differ between machines, layouts do not


def check(fig, name, tmp_path):
    from matplotlib.testing.compare import compare_images

    actual = tmp_path / f"{name}.png"
    fig.savefig(actual, dpi=DPI, bbox_inches="tight")
    expected = BASELINE / f"{name}.png"
    if os.environ.get("STORM_UPDATE_BASELINES") == "1":
        expected.write_bytes(actual.read_bytes())
    assert expected.is_file(), f"no baseline {expected}; run with STORM_UPDATE_BASELINES=1 once and check the image"
    result = compare_images(str(expected), str(actual), tol=TOLERANCE)
    assert result is None, result


@pytest.fixture
def demo():
    sdata = st.datasets.demo()
    table = sdata["table"]
    table.obs["storm_domain"] = table.obs["cluster"].astype(str).astype("category")
    table.layers["storm_predicted"] = 0.5 * log1p_cp10k(table.X).toarray()
    return sdata


def test_domains(demo, tmp_path):
    check(st.pl.domains(demo, return_fig=True), "domains", tmp_path)


def test_genes_measured_beside_predicted(demo, tmp_path):
    fig = st.pl.genes(demo, ["ERBB2"], return_fig=True)
    assert [a.get_title() for a in fig.axes[:2]] == ["ERBB2 (measured)", "ERBB2 (predicted)"]
    measured, predicted = (a.collections[0] for a in fig.axes[:2])
    assert measured.get_clim() == predicted.get_clim()  # one colour scale for both panels
    np.testing.assert_allclose(predicted.get_array(), 0.5 * measured.get_array())
    check(fig, "genes", tmp_path)


def test_embedding(demo, tmp_path):
    demo["table"].obsm["X_storm"] = np.random.default_rng(0).normal(size=(151, 8))
    fig = st.pl.embedding(demo, return_fig=True)
    assert fig.axes[0].get_title() == "X_storm UMAP"


def test_plot_arguments(demo, tmp_path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    assert st.pl.domains(demo, ax=ax, show=False, save=tmp_path / "d.png") is None
    assert (tmp_path / "d.png").stat().st_size > 0 and plt.fignum_exists(fig.number)  # the caller's figure stays
    plt.close(fig)
    before = plt.get_fignums()
    st.pl.domains(demo, show=False)
    assert plt.get_fignums() == before  # a figure made by the plot is closed
    with pytest.raises(KeyError, match="st.tl.domains"):
        st.pl.domains(demo, key="missing")
    with pytest.raises(KeyError, match="NOT_A_GENE"):
        st.pl.genes(demo, ["NOT_A_GENE"])
    with pytest.raises(KeyError, match="predict_expression"):
        st.pl.genes(demo, ["ERBB2"], key="nope")
    with pytest.raises(ValueError, match="leave `ax=None`"):
        st.pl.genes(demo, ["ERBB2", "KRT19"], ax=ax)


def test_risk_map(demo, tmp_path):
    table = demo["table"]
    table.obs["storm_risk"] = np.linspace(-1.0, 2.0, table.n_obs)
    table.uns["storm"] = {"storm_risk": {"score": 0.5}}
    fig = st.pl.risk(demo, return_fig=True)
    collection = fig.axes[0].collections[0]
    np.testing.assert_allclose(collection.get_array(), table.obs["storm_risk"].to_numpy())
    assert fig.axes[0].get_title() == "slide risk 0.50" and fig.axes[1].get_ylabel() == "contribution to slide risk"
    check(fig, "risk", tmp_path)
    with pytest.raises(KeyError, match="st.tl.apply_risk"):
        st.pl.risk(demo, key="nope")


def test_background_reads_float_images_in_their_own_range():
    """The H&E under a plot is the same whether the image holds uint8 or the same values as floats (0-255)."""
    import matplotlib.pyplot as plt
    from spatialdata.models import Image2DModel

    from storm.pl._base import background

    shown = []
    for dtype in (np.uint8, np.float32):
        sdata = st.datasets.demo()
        image = sdata.images["he"]
        level = image["scale0"]["image"] if hasattr(image, "children") else image
        pixels = np.asarray(level.values).astype(dtype)
        sdata.images["he"] = Image2DModel.parse(
            pixels, dims=("c", "y", "x"), transformations=dict(level.attrs["transform"])
        )
        fig, ax = plt.subplots()
        background(ax, st.io.resolve(sdata))
        shown.append(np.asarray(ax.images[0].get_array()))
        plt.close(fig)
    assert shown[0].dtype == np.uint8 and shown[0].mean() < 250  # an H&E, not a white sheet
    np.testing.assert_array_equal(shown[0], shown[1])


def test_a_large_image_without_a_pyramid_is_drawn_from_every_few_pixels():
    """A single-level image larger than the plot needs is read at a stride, chunk by chunk, never whole."""
    import dask.array as da
    import matplotlib.pyplot as plt
    from spatialdata.models import Image2DModel

    from storm.pl._base import MAX_BACKGROUND_PX, background

    sdata = st.datasets.demo()
    image = sdata.images["he"]
    level = image["scale0"]["image"]
    pixels = da.from_array(np.asarray(level.values), chunks=(3, 512, 512))
    big = da.concatenate([pixels, pixels], axis=2)  # 3238 x 9344 px, one level
    sdata.images["he"] = Image2DModel.parse(big, dims=("c", "y", "x"), transformations=dict(level.attrs["transform"]))
    slide = st.io.resolve(sdata)
    assert len(slide.levels) == 1
    fig, ax = plt.subplots()
    background(ax, slide)
    shown = np.asarray(ax.images[0].get_array())
    plt.close(fig)
    assert max(shown.shape[:2]) <= MAX_BACKGROUND_PX and shown.mean() < 250
    left, right, bottom, top = ax.images[0].get_extent()
    x0, y0 = slide.spot_xy_um.min(0)
    x1, y1 = slide.spot_xy_um.max(0)
    assert left <= x0 and right >= x1 and top <= y0 and bottom >= y1  # the spots lie on the drawn image
