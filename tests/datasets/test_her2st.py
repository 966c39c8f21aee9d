from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import storm
from storm.datasets import _build

pytestmark = pytest.mark.data

#: Pathologist labels of A1 joined to the count matrix on rounded array x, y (PROVENANCE.md lists label-file rows:
#: invasive cancer 284 of 348 rows; two labelled positions have no counts).
A1_LABELS = {
    "invasive cancer": 282,
    "connective tissue": 24,
    "cancer in situ": 21,
    "adipose tissue": 12,
    "undetermined": 5,
    "immune infiltrate": 2,
}


@pytest.fixture(scope="module")
def her2st_dir(shared_data_path):
    return shared_data_path("her2st")


@pytest.fixture(scope="module")
def c2(her2st_dir):
    return storm.datasets.her2st("C2", her2st_dir)


@pytest.fixture(scope="module")
def a1(her2st_dir):
    return storm.datasets.her2st("A1", her2st_dir)


def _level0_scale(sdata) -> float:
    from storm.io._elements import affine_xy, image_levels

    return float(affine_xy(image_levels(sdata.images["he"])[0], "global")[0, 0])


def test_c2_counts_match_the_count_file(c2, her2st_dir):
    source = pd.read_csv(her2st_dir / "data" / "ST-cnts" / "C2.tsv.gz", sep="\t", index_col=0)
    table = c2["table"]
    assert table.shape == source.shape == (187, 15706)
    assert list(table.obs_names[:2]) == ["C2_10x21", "C2_10x22"]
    assert list(table.var_names) == list(source.columns)
    np.testing.assert_array_equal(table.X.toarray(), source.to_numpy())
    assert table.X.format == "csr" and table.X.dtype == np.float32
    assert (table.obs["array_x"].astype(str) + "x" + table.obs["array_y"].astype(str)).tolist() == list(source.index)
    assert (table.obs["section"] == "C2").all()


def test_c2_scale_from_the_spot_lattice(c2):
    slide = storm.io.resolve(c2)
    # 200 µm pitch = 290 px (whole-lattice fit). MANIFEST_sections.csv says 0.737 from the median nearest-neighbour
    # distance (272 px), which the ~20 px jitter of the detected spot positions biases low.
    assert slide.um_per_px == pytest.approx(0.689, abs=0.005)
    assert slide.um_per_px_source.startswith("metadata")
    np.testing.assert_allclose(slide.spot_diameter_um, 100.0)
    lib = c2["table"].uns["spatial"]["C2"]
    assert lib["metadata"]["platform"] == "st" and lib["images"] == {}
    assert lib["scalefactors"]["spot_diameter_fullres"] == pytest.approx(145.1, abs=0.5)


def test_c2_image_is_the_lazy_full_resolution_jpeg(her2st_dir, monkeypatch):
    calls = []
    original = _build.decode_level
    monkeypatch.setattr(_build, "decode_level", lambda *a: calls.append(a) or original(*a))
    sdata = storm.datasets.her2st("C2", her2st_dir)
    slide = storm.io.resolve(sdata)
    assert calls == []  # nothing decoded while loading and resolving
    assert slide.levels[0].shape_yx == (9911, 9274)
    assert [lvl.shape_yx for lvl in slide.levels[1:]] == [(4955, 4637), (2477, 2318), (1238, 1159)]
    assert all(lvl.data.numblocks == (1, 1, 1) and lvl.data.dtype == np.uint8 for lvl in slide.levels)
    assert _level0_scale(sdata) == 1.0
    x, y = slide.spot_xy_px.T
    assert x.min() > 2000 and x.max() < 8000 and y.min() > 3000 and y.max() < 8500
    coarse = np.asarray(slide.levels[3].data.compute())
    assert len(calls) == 1 and coarse.shape == (3, 1238, 1159)
    gray = coarse.astype(float).mean(axis=0)
    under = np.array([gray[int(b / 8), int(a / 8)] for a, b in zip(x, y, strict=True)])
    assert np.median(under) < np.median(gray) - 30  # spots on stained tissue, glass elsewhere


def _period(profile: np.ndarray, lo: float, hi: float) -> float:
    """Dominant period (in samples, between lo and hi) of a 1-D profile."""
    detrended = profile - np.convolve(profile, np.ones(101) / 101, mode="same")
    detrended = detrended[60:-60] * np.hanning(len(profile) - 120)
    power = np.abs(np.fft.rfft(detrended, n=16 * len(detrended))) ** 2
    freqs = np.fft.rfftfreq(16 * len(detrended))
    band = (freqs > 1 / hi) & (freqs < 1 / lo)
    return float(1 / freqs[band][np.argmax(power[band])])


def test_c2_printed_spot_array_confirms_the_fitted_pitch(c2):
    """The ST array's printed spots show faintly on the glass; their period is the 200 µm pitch in pixels."""
    slide = storm.io.resolve(c2)
    level = slide.levels[2]  # 4x downscaled
    gray = np.asarray(level.data.compute()).astype(float).mean(axis=0)
    factor = level.px_to_level0[0]
    pitch_y = _period(gray[:, :400].mean(axis=1), 55, 90) * factor  # glass strip left of the tissue
    pitch_x = _period(gray[:650, :].mean(axis=0), 55, 90) * factor  # glass band above the tissue
    fitted = 200.0 / slide.um_per_px
    assert pitch_y == pytest.approx(fitted, rel=0.01) and pitch_x == pytest.approx(fitted, rel=0.01)
    assert 200.0 / ((pitch_x + pitch_y) / 2) < 0.70  # so not the 0.737 of the nearest-neighbour estimate


def test_c2_clusters(c2, her2st_dir):
    clusters = pd.read_csv(her2st_dir / "res" / "ST-cluster" / "lbl" / "C2-cluster-annotation.tsv.gz", sep="\t")
    obs = c2["table"].obs
    assert list(obs["cluster"].cat.categories) == [str(i) for i in range(7)]
    assert obs["cluster"].notna().sum() == 185
    expected = clusters.assign(key="C2_" + clusters["x"].astype(str) + "x" + clusters["y"].astype(str))
    expected = expected.set_index("key")["label"].astype(str)
    pd.testing.assert_series_equal(
        obs["cluster"].dropna().astype(str).sort_index(),
        expected.loc[obs["cluster"].dropna().index].sort_index(),
        check_names=False,
    )


def test_a1_pathologist_labels(a1, her2st_dir):
    obs = a1["table"].obs
    assert a1["table"].n_obs == 346
    assert obs["label"].notna().sum() == 346
    assert obs["label"].value_counts().to_dict() == A1_LABELS
    assert "undetermined" in obs["label"].cat.categories
    rows = pd.read_csv(her2st_dir / "data" / "ST-pat" / "lbl" / "A1_labeled_coordinates.tsv", sep="\t")
    assert rows["label"].value_counts().to_dict() == {**A1_LABELS, "invasive cancer": 284}  # PROVENANCE.md counts


@pytest.mark.slow
@pytest.mark.parametrize(
    ("section", "n_labelled"),
    [("A1", 346), ("B1", 295), ("C1", 176), ("D1", 306), ("E1", 587), ("F1", 691), ("G2", 467), ("H1", 613)],
)
def test_all_pathologist_labels_join(her2st_dir, section, n_labelled):
    table = storm.datasets.her2st(section, her2st_dir, image=False)["table"]
    assert table.obs["label"].notna().sum() == n_labelled  # PROVENANCE.md: "Pathologist labels join to counts"


def test_a1_display_image_is_placed_in_the_full_resolution_frame(a1):
    slide = storm.io.resolve(a1)
    assert _level0_scale(a1) == pytest.approx(1 / 0.287604)
    assert slide.levels[0].shape_yx == (2138, 2000)
    lib = a1["table"].uns["spatial"]["A1"]
    # µm per pixel of the original A1 scan from the lattice; the display PNG is 0.2876 times as fine
    assert lib["scalefactors"]["microns_per_pixel"] == pytest.approx(0.916, abs=0.01)
    assert slide.um_per_px == pytest.approx(lib["scalefactors"]["microns_per_pixel"] / 0.287604)
    x, y = slide.spot_xy_px.T
    assert x.max() < 1600 and y.min() > 600  # below and left of the annotation inset in the upper-right corner
    np.testing.assert_allclose(slide.spot_diameter_um, 100.0)


def test_a2_uses_the_warped_frame_of_its_display_image(her2st_dir):
    sdata = storm.datasets.her2st("A2", her2st_dir)
    table = sdata["table"]
    assert table.n_obs == 325 and "label" not in table.obs
    meta = table.uns["spatial"]["A2"]["metadata"]
    assert meta["coordinates"].startswith("warped_x/warped_y") and "2 spots placed" in meta["coordinates"]
    clusters = pd.read_csv(her2st_dir / "res" / "ST-cluster" / "lbl" / "A2-cluster-annotation.tsv.gz", sep="\t")
    first = clusters.iloc[0]
    row = table.obs_names.get_loc(f"A2_{first['x']}x{first['y']}")
    np.testing.assert_allclose(table.obsm["spatial"][row], [first["warped_x"], first["warped_y"]])
    slide = storm.io.resolve(sdata)  # raises if any spot falls outside the image
    assert _level0_scale(sdata) == pytest.approx(1 / 0.287109)
    assert slide.spot_xy_px[:, 0].max() < 1600


def test_sections_without_image(her2st_dir):
    sdata = storm.datasets.her2st("B1", her2st_dir)
    assert not sdata.images
    obs = sdata["table"].obs
    assert sdata["table"].n_obs == 295 and obs["label"].notna().sum() == 295
    assert obs["label"].value_counts()["breast glands"] == 41
    slide = storm.io.resolve(sdata)
    assert slide.um_per_px == pytest.approx(0.688, abs=0.005)


def test_image_false_and_errors(her2st_dir, monkeypatch):
    assert not storm.datasets.her2st("C3", her2st_dir, image=False).images
    with pytest.raises(ValueError, match=r"`section='Z9'` is not a her2st section.*'A1'.*'H3'"):
        storm.datasets.her2st("Z9", her2st_dir)
    monkeypatch.setattr(storm.settings, "data_dir", her2st_dir.parent)
    assert storm.datasets.her2st("C1", image=False)["table"].n_obs == 176


@pytest.mark.slow
def test_c2_full_resolution_pixels(c2, her2st_dir):
    from PIL import Image

    slide = storm.io.resolve(c2)
    level0 = np.asarray(slide.levels[0].data.compute())
    with (
        _build.unlimited_pixels(),
        Image.open(her2st_dir / "data" / "ST-imgs" / "C" / "C2" / "5714_HE_BT_C2.jpg") as im,
    ):
        expected = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(np.moveaxis(level0, 0, -1), expected)
    level1 = np.asarray(slide.levels[1].data.compute()).astype(float)
    c, h, w = level1.shape
    means = level0[:, : 2 * h, : 2 * w].astype(float).reshape(c, h, 2, w, 2).mean(axis=(2, 4))
    assert np.abs(level1 - means).mean() < 1.5
