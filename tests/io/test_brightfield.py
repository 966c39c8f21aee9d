"""Only a brightfield RGB image feeds the H&E branch; intensities above 8 bits are read at the depth they were taken at."""

import numpy as np
import pytest
from spatialdata.models import Image2DModel
from spatialdata.transformations import get_transformation

import storm as st
from storm.io._elements import brightfield_problem, image_levels


def _with_image(pixels, key="he"):
    """The bundled demo with its H&E replaced by ``pixels`` (same size and placement)."""
    sdata = st.datasets.demo()
    old = image_levels(sdata.images["he"])[0]
    transform = get_transformation(sdata.images["he"], "global")
    del sdata.images["he"]
    sdata.images[key] = Image2DModel.parse(
        pixels, dims=("c", "y", "x"), scale_factors=[2, 2], transformations={"global": transform}
    )
    assert pixels.shape[1:] == old.shape[1:]
    return sdata


def _he():
    return np.asarray(image_levels(st.datasets.demo().images["he"])[0])


def _fluorescence(channels, high=4095, seed=0):
    """Dark background with noise and bright nuclei, as a DAPI / morphology image."""
    rng = np.random.default_rng(seed)
    h, w = _he().shape[1:]
    pixels = rng.integers(50, 200, (channels, h, w)).astype(np.uint16)
    yy, xx = np.mgrid[0:h, 0:w]
    nuclei = ((yy // 20) % 3 == 0) & ((xx // 20) % 3 == 0)
    pixels[:, nuclei] = high
    return pixels


@pytest.mark.parametrize(
    ("channels", "reason"),
    [(1, "1 channel .*DAPI"), (4, "fourth is not an alpha"), (3, "dark-field")],
    ids=["DAPI", "4-channel morphology", "3-channel fluorescence"],
)
def test_fluorescence_is_refused_by_the_image_branch(channels, reason):
    sdata = _with_image(_fluorescence(channels), key="morphology_focus")
    match = rf"image 'morphology_focus' is not used by storm's H&E branch: it.*{reason}.*`image_key=`"
    with pytest.raises(ValueError, match=match):
        st.tl.embed(sdata, modality="image")
    assert "X_storm" not in sdata["table"].obsm
    st.tl.embed(sdata)  # modality "auto": the expression only, with a warning
    assert sdata["table"].uns["storm"]["X_storm"]["modality"] == "expression"
    assert "X_storm_image" not in sdata["table"].obsm


def test_fluorescence_without_expression_says_why_nothing_is_embedded():
    sdata = _with_image(_fluorescence(1), key="dapi")
    sdata.tables["table"] = sdata["table"][:, []].copy()  # spots and no genes: the image is all there is
    with pytest.raises(ValueError, match="image 'dapi' is not used.*1 channel.*`image_key=`"):
        st.tl.embed(sdata)


def test_the_warning_names_the_image_and_the_fix(caplog):
    sdata = _with_image(_fluorescence(1), key="dapi")
    st.tl.embed(sdata)
    assert "image 'dapi' is not used by storm's H&E branch" in caplog.text
    assert "`image_key=`" in caplog.text


def test_rgba_and_brightfield_images_are_used():
    he = _he()
    rgba = np.concatenate([he, np.full((1, *he.shape[1:]), 255, np.uint8)])
    assert brightfield_problem([he], 255.0) is None
    assert brightfield_problem([rgba], 255.0) is None
    masked = he.copy()
    masked[:, :, : he.shape[2] // 2] = 0  # her2st display images: background masked out on black
    assert brightfield_problem([masked], 255.0) is None


def test_12_bit_rgb_reads_as_the_8_bit_image():
    """12-bit data stored as uint16 (0-4095) is read against 4095, not 65535 (which left it nearly black)."""
    he = _he()
    twelve = np.round(he.astype(np.float64) * 4095 / 255).astype(np.uint16)
    expected = st.pp.tile(_with_image(he), 32, 112.0)
    tiles = st.pp.tile(_with_image(twelve), 32, 112.0)
    assert st.io.resolve(_with_image(twelve)).levels[0].white == 4095
    difference = np.abs(tiles.read(np.arange(10)).astype(int) - expected.read(np.arange(10)).astype(int))
    assert difference.max() <= 2 and difference.mean() < 1  # rounding (read against 65535: ~200 darker)


def test_an_ambiguous_bit_depth_is_refused():
    dim = (_he().astype(np.uint16) * 6).astype(np.uint16)  # up to 1530: 11-bit? a dark 12-bit image?
    with pytest.raises(
        ValueError, match="up to 15[0-9][0-9]: no bit depth fits them clearly.*rescale the image to uint8"
    ):
        st.tl.embed(_with_image(dim))
