from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import storm

pytestmark = pytest.mark.data

LAYERS_151673 = {"L1": 273, "L2": 253, "L3": 989, "L4": 218, "L5": 673, "L6": 692, "WM": 513}
LOWRES_SCALEF = 0.045004502


@pytest.fixture(scope="module")
def dlpfc_dir(shared_data_path):
    return shared_data_path("dlpfc")


@pytest.fixture(scope="module")
def s151673(dlpfc_dir):
    return storm.datasets.dlpfc("151673", dlpfc_dir)


def test_151673_table(s151673):
    table = s151673["table"]
    assert table.shape == (3639, 5000)
    assert table.X.format == "csr" and table.X.dtype == np.float32
    assert np.array_equal(table.X.data, np.rint(table.X.data))
    assert table.var_names.is_unique and table.obs_names.is_unique
    assert table.var["gene_ids"].str.startswith("ENSG").all()
    assert table.var.loc["MOBP", "gene_ids"] == "ENSG00000168314"
    assert table.obs_names[0] == "151673_AAACAAGTATCTCCCA-1" and table.obs["barcode"].iloc[0] == "AAACAAGTATCTCCCA-1"
    assert list(table.obs["layer"].cat.categories) == list(LAYERS_151673)
    assert table.obs["layer"].value_counts(sort=False).to_dict() == LAYERS_151673
    assert table.obs["layer"].isna().sum() == 28
    assert (table.obs["section"] == "151673").all()


def test_151673_markers_follow_the_layers(s151673):
    table = s151673["table"]
    mobp = pd.Series(table[:, "MOBP"].X.toarray().ravel(), index=table.obs_names)
    means = mobp.groupby(table.obs["layer"], observed=True).mean()
    assert means["WM"] > 2 * means.drop("WM").max()
    pcp4 = pd.Series(table[:, "PCP4"].X.toarray().ravel(), index=table.obs_names)
    assert pcp4.groupby(table.obs["layer"], observed=True).mean().idxmax() == "L5"


def test_151673_scale_and_image(s151673):
    lib = s151673["table"].uns["spatial"]["151673"]
    um_per_px = lib["scalefactors"]["microns_per_pixel"]
    assert um_per_px == pytest.approx(0.73, abs=0.03)  # 100 µm Visium pitch = 138 full-resolution px
    assert lib["scalefactors"]["spot_diameter_fullres"] == pytest.approx(55.0 / um_per_px)
    assert lib["scalefactors"]["tissue_lowres_scalef"] == pytest.approx(LOWRES_SCALEF)
    assert lib["metadata"]["platform"] == "visium"
    slide = storm.io.resolve(s151673)  # raises if any spot falls outside the lowres image
    assert slide.levels[0].shape_yx == (600, 600)
    assert slide.um_per_px == pytest.approx(um_per_px / LOWRES_SCALEF)  # µm per lowres pixel
    np.testing.assert_allclose(slide.spot_diameter_um, 55.0)
    np.testing.assert_allclose(slide.spot_xy_px, s151673["table"].obsm["spatial"] * LOWRES_SCALEF, rtol=1e-6)


def test_positions_only_sample(dlpfc_dir):
    sdata = storm.datasets.dlpfc("151669", dlpfc_dir)
    table = sdata["table"]
    assert table.shape == (3661, 0)
    assert table.obs["layer"].notna().sum() == 3636
    assert "L1" not in table.obs["layer"].cat.categories and "L2" not in table.obs["layer"].cat.categories
    slide = storm.io.resolve(sdata)
    assert slide.um_per_px * LOWRES_SCALEF == pytest.approx(0.725, abs=0.01)
    assert storm.datasets.dlpfc(151507, dlpfc_dir)["table"].shape == (4226, 0)


def test_151510(dlpfc_dir):
    table = storm.datasets.dlpfc("151510", dlpfc_dir)["table"]
    assert table.shape == (4634, 500)
    assert table.obs["layer"].value_counts()["L1"] == 1180


def test_unknown_sample_lists_the_samples_found(dlpfc_dir):
    with pytest.raises(
        ValueError, match=r"`sample='151674'` is not in .*samples found there: \['151507', .*'151673'\]"
    ):
        storm.datasets.dlpfc("151674", dlpfc_dir)
    with pytest.raises(ValueError, match=r"`sample='1516'` is not a spatialLIBD DLPFC sample id"):
        storm.datasets.dlpfc("1516", dlpfc_dir)


def test_available_samples(dlpfc_dir):
    from storm.datasets._dlpfc import SAMPLES, available_samples

    assert available_samples(dlpfc_dir) == sorted(SAMPLES)


def test_any_spatiallibd_sample_whose_files_are_present(dlpfc_dir, tmp_path):
    """151676 is a spatialLIBD sample absent from the shared data: lay out its Space Ranger files and it loads."""
    import shutil

    from storm.datasets._dlpfc import SPACERANGER_FILES, available_samples

    folder = tmp_path / "dlpfc" / "HumanPilot" / "10X" / "151676"
    folder.mkdir(parents=True)
    for name in SPACERANGER_FILES:  # 151672's files under the new id (the files, not the section, are the point)
        shutil.copyfile(dlpfc_dir / "HumanPilot" / "10X" / "151672" / name, folder / name)
    (tmp_path / "dlpfc" / "HumanPilot" / "10X" / "151675").mkdir()  # incomplete: not a sample
    assert available_samples(tmp_path / "dlpfc") == ["151676"]
    sdata = storm.datasets.dlpfc("151676", tmp_path)  # a folder holding dlpfc/
    table = sdata["table"]
    assert table.n_vars == 0 and table.n_obs > 3000
    assert table.obs_names[0].startswith("151676_") and (table.obs["section"] == "151676").all()
    assert table.obs["layer"].isna().all()  # no layer map in this folder
    slide = storm.io.resolve(sdata)
    assert slide.um_per_px * LOWRES_SCALEF == pytest.approx(0.725, abs=0.01)
    with pytest.raises(ValueError, match=r"samples found there: \['151676'\]"):
        storm.datasets.dlpfc("151673", tmp_path / "dlpfc")
