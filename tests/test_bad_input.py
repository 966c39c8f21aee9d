"""Bad input across io, pp, tl, pl, models and train: a clear error naming the argument, and nothing of the user's changed.

Each case builds fresh input, calls a public function with one thing wrong, checks the error type and that its message
names the argument (or the fix), then checks that the input is exactly as it was (elements, table values, obs, obsm,
layers, uns): a refused call must not leave half-written results behind.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from spatialdata import SpatialData
from spatialdata.models import Image2DModel, ShapesModel, TableModel
from spatialdata.transformations import Identity, remove_transformation, set_transformation

import storm as st
from storm.models import StormConfig
from storm.train import TrainConfig

from ._fingerprint import fingerprint

# anndata warns when a table is built with duplicated names (the "duplicated spot names" case builds one on purpose).
pytestmark = [
    pytest.mark.filterwarnings("ignore:Observation names are not unique"),
    # the demo has spots without counts, which sc.pp.normalize_total warns about
    pytest.mark.filterwarnings("ignore:Some cells have zero counts"),
]


def _slide(xy, *, scalefactors=None, channels=3, obs_names=None) -> SpatialData:
    n = len(xy)
    image = Image2DModel.parse(
        np.full((channels, 600, 800), 200, dtype=np.uint8), dims=("c", "y", "x"), transformations={"global": Identity()}
    )
    spots = ShapesModel.parse(
        np.asarray(xy, float), geometry=0, radius=np.full(n, 10.0), transformations={"global": Identity()}
    )
    obs = pd.DataFrame(
        {"region": pd.Categorical(["spots"] * n), "spot_id": np.arange(n)},
        index=obs_names or [f"s{i}" for i in range(n)],
    )
    table = ad.AnnData(np.ones((n, 2), np.float32), obs=obs)
    if scalefactors is not None:
        table.uns["spatial"] = {"lib": {"images": {}, "scalefactors": scalefactors}}
    table = TableModel.parse(table, region="spots", region_key="region", instance_key="spot_id")
    return SpatialData(images={"he": image}, shapes={"spots": spots}, tables={"table": table})


def _two_spots(**kwargs) -> SpatialData:
    return _slide([[10.0, 10.0], [20.0, 20.0]], scalefactors={"microns_per_pixel": 1.0}, **kwargs)


def _mixed_systems() -> SpatialData:
    sdata = _two_spots()
    set_transformation(sdata.images["he"], Identity(), to_coordinate_system="aligned")
    remove_transformation(sdata.images["he"], "global")
    return sdata


def _empty_table() -> SpatialData:
    sdata = _two_spots()
    sdata.tables.data["table"] = sdata.tables["table"][:0].copy()
    return sdata


def _with_counts(edit: Callable[[np.ndarray], None]) -> SpatialData:
    sdata = st.datasets.demo()
    counts = sdata["table"].X.toarray()
    edit(counts)
    sdata["table"].X = sparse.csr_matrix(counts)
    return sdata


def _nan(counts: np.ndarray) -> None:
    counts[0, 0] = np.nan


def _unknown_genes() -> SpatialData:
    sdata = st.datasets.demo()
    sdata["table"].var_names = [f"NOTAGENE{i}" for i in range(sdata["table"].n_vars)]
    return sdata


def _duplicated_names() -> SpatialData:
    return _slide([[10.0, 10.0], [20.0, 20.0]], scalefactors={"microns_per_pixel": 1.0}, obs_names=["a", "a"])


def _default_checkpoint_copy(tmp_path) -> Any:
    from storm.tl._model_arg import get_model

    target = tmp_path / "ckpt"
    shutil.copytree(get_model(None).checkpoint_info["path"], target)
    return target


def _short_vocabulary_checkpoint(tmp_path) -> str:
    """A checkpoint whose vocabulary lost its last genes (no checksums: the mismatch itself must be caught)."""
    target = _default_checkpoint_copy(tmp_path)
    (target / "checksums.json").unlink()
    lines = (target / "vocab.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (target / "vocab.tsv").write_text("".join(lines[:-5]), encoding="utf-8")
    return str(target)


def _tampered_checkpoint(tmp_path) -> str:
    target = _default_checkpoint_copy(tmp_path)
    weights = target / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    return str(target)


def _normalised(*, keep_counts: bool = False, log: bool = True) -> SpatialData:
    """The demo after ``sc.pp.normalize_total`` (+ ``sc.pp.log1p``) on X, raw counts kept in a layer or not."""
    import scanpy as sc

    sdata = st.datasets.demo()
    table = sdata["table"]
    if keep_counts:
        table.layers["kept"] = table.X.copy()
    sc.pp.normalize_total(table)
    if log:
        sc.pp.log1p(table)
    return sdata


def _lognorm_layer() -> SpatialData:
    """The demo with raw counts in X and their log-normalised values in ``layers["lognorm"]``."""
    import scanpy as sc

    sdata = st.datasets.demo()
    table = sdata["table"]
    table.layers["lognorm"] = sc.pp.log1p(sc.pp.normalize_total(table, copy=True).X)
    return sdata


def _with_obs(column: str) -> SpatialData:
    sdata = st.datasets.demo()
    sdata["table"].obs[column] = pd.Categorical(["a"] * sdata["table"].n_obs)
    return sdata


def _with_counts_layer() -> SpatialData:
    sdata = st.datasets.demo()
    sdata["table"].layers["counts"] = sdata["table"].X.copy()
    return sdata


def _embedded(sdata: SpatialData, width: int, *, value: float = 0.0) -> SpatialData:
    """``sdata`` with an ``obsm["X_rep"]`` of ``width`` columns (random, ``value`` in the first row)."""
    table = sdata["table"]
    x = np.random.default_rng(width).normal(size=(table.n_obs, width)).astype(np.float32)
    x[0, 0] = value if value else x[0, 0]
    table.obsm["X_rep"] = x
    return sdata


def _two_widths() -> list[SpatialData]:
    return [_embedded(st.datasets.demo(), 8), _embedded(st.datasets.demo(), 16)]


def _one_spot() -> SpatialData:
    sdata = _slide([[10.0, 10.0]], scalefactors={"microns_per_pixel": 1.0})
    sdata["table"].obsm["X_rep"] = np.ones((1, 4), np.float32)
    return sdata


def _fingerprints(data: Any) -> Any:
    return [fingerprint(d) for d in data] if isinstance(data, list) else fingerprint(data)


@dataclass
class Case:
    id: str
    make: Callable[[], Any]  # the user's input (checked unchanged afterwards); None when the call takes none
    call: Callable[[Any, Any], Any]  # (input, tmp_path) -> the bad call
    error: type[Exception]
    match: str  # the argument (or the fix) the message must name


DEMO = st.datasets.demo
CASES = [
    # io
    Case("io: not a SpatialData", lambda: None, lambda d, t: st.io.resolve(42), TypeError, "SpatialData or an AnnData"),
    Case("io: unknown table", DEMO, lambda d, t: st.io.resolve(d, table_key="nope"), KeyError, "table_key='nope'"),
    Case("io: unknown image", DEMO, lambda d, t: st.io.resolve(d, image_key="nope"), KeyError, "image_key='nope'"),
    Case("io: unknown shapes", DEMO, lambda d, t: st.io.resolve(d, shapes_key="nope"), KeyError, "shapes_key='nope'"),
    Case("io: negative scale", DEMO, lambda d, t: st.io.resolve(d, um_per_px=-1), ValueError, "um_per_px"),
    Case("io: NaN scale", DEMO, lambda d, t: st.io.resolve(d, um_per_px=float("nan")), ValueError, "um_per_px"),
    Case(
        "io: no scale",
        lambda: _slide([[10.0, 10.0], [20.0, 20.0]]),
        lambda d, t: st.io.resolve(d),
        ValueError,
        "um_per_px",
    ),
    Case(
        "io: spots outside the image",
        lambda: _slide([[10.0, 10.0], [5000.0, 10.0]], scalefactors={"microns_per_pixel": 1.0}),
        lambda d, t: st.io.resolve(d),
        ValueError,
        "outside image 'he'",
    ),
    Case(
        "io: mixed coordinate systems", _mixed_systems, lambda d, t: st.io.resolve(d), ValueError, "coordinate system"
    ),
    Case("io: duplicated spot names", _duplicated_names, lambda d, t: st.io.resolve(d), ValueError, "obs_names"),
    Case("io: empty table", _empty_table, lambda d, t: st.io.resolve(d), ValueError, "empty"),
    Case("io: non-RGB image", lambda: _two_spots(channels=5), lambda d, t: st.io.resolve(d), ValueError, "5 channels"),
    Case(
        "io: AnnData without coordinates",
        lambda: ad.AnnData(np.ones((3, 2), np.float32)),
        lambda d, t: st.tl.embed(d),
        KeyError,
        r"obsm\['spatial'\]",
    ),
    Case(
        "io: write_table to a missing store",
        DEMO,
        lambda d, t: st.io.write_table(t / "missing.zarr", d["table"], "table"),
        FileNotFoundError,
        "not a zarr store",
    ),
    # pp
    Case("pp: tile_px 0", DEMO, lambda d, t: st.pp.tile(d, tile_px=0), ValueError, "tile_px"),
    Case("pp: negative tile_um", DEMO, lambda d, t: st.pp.tile(d, tile_um=-5), ValueError, "tile_um"),
    Case("pp: negative grid pitch", DEMO, lambda d, t: st.pp.tissue_grid(d, pitch_um=-1), ValueError, "pitch_um"),
    Case("pp: unknown grid", DEMO, lambda d, t: st.pp.tissue_grid(d, grid="triangle"), ValueError, "grid"),
    # tl
    Case("tl: unknown modality", DEMO, lambda d, t: st.tl.embed(d, modality="rgb"), ValueError, "`modality`"),
    Case("tl: batch_size 0", DEMO, lambda d, t: st.tl.embed(d, batch_size=0), ValueError, "batch_size"),
    Case("tl: model of a wrong type", DEMO, lambda d, t: st.tl.embed(d, model=3.5), TypeError, "`model`"),
    Case(
        "tl: missing checkpoint",
        DEMO,
        lambda d, t: st.tl.embed(d, model=t / "nothing"),
        FileNotFoundError,
        "checkpoint",
    ),
    Case(
        "tl: tampered checkpoint",
        DEMO,
        lambda d, t: st.tl.embed(d, model=_tampered_checkpoint(t)),
        ValueError,
        "sha256",
    ),
    Case(
        "tl: NaN counts",
        lambda: _with_counts(_nan),
        lambda d, t: st.tl.embed(d, modality="expression"),
        ValueError,
        "layer=",
    ),
    Case(
        "tl: negative counts",
        lambda: _with_counts(lambda c: c.__setitem__((0, 0), -3)),
        lambda d, t: st.tl.embed(d, modality="expression"),
        ValueError,
        "raw counts",
    ),
    Case(
        "tl: unknown genes only",
        _unknown_genes,
        lambda d, t: st.tl.embed(d, modality="expression"),
        ValueError,
        "vocabulary",
    ),
    Case("tl: missing layer", DEMO, lambda d, t: st.tl.embed(d, layer="counts"), KeyError, "layer='counts'"),
    Case(
        "tl: predict unknown genes only",
        DEMO,
        lambda d, t: st.tl.predict_expression(d, genes=["NOTAGENE1", "NOTAGENE2"]),
        KeyError,
        "`genes`",
    ),
    Case("tl: n_domains 0", DEMO, lambda d, t: st.tl.domains(d, n_domains=0), ValueError, "n_domains"),
    Case(
        "tl: resolution 0", DEMO, lambda d, t: st.tl.domains(d, resolution=0), ValueError, "`resolution` must be a pos"
    ),
    Case(
        "tl: embed the image of a slide smaller than one tile",
        DEMO,
        lambda d, t: st.tl.embed(d, modality="image", um_per_px=0.01),
        ValueError,
        r"smaller than one of the model's tiles \(112 µm\).*`image_key=`.*`um_per_px=`",
    ),
    Case("tl: negative resolution", DEMO, lambda d, t: st.tl.domains(d, resolution=-1.0), ValueError, "`resolution`"),
    Case(
        "tl: missing use_rep",
        DEMO,
        lambda d, t: st.tl.domains(d, n_domains=3, use_rep="X_pca"),
        KeyError,
        "use_rep='X_pca'",
    ),
    Case(
        "tl: fit_head unknown target",
        DEMO,
        lambda d, t: st.tl.fit_head([d], target="nocol"),
        KeyError,
        "target='nocol'",
    ),
    Case(
        "tl: apply_head without a head", DEMO, lambda d, t: st.tl.apply_head(d, head=t), FileNotFoundError, "head.json"
    ),
    Case(
        "tl: log-normalised X taken as counts",
        _normalised,
        lambda d, t: st.tl.embed(d, modality="expression"),
        ValueError,
        r"X holds normalised expression .*sc.pp.log1p.*`layer=`",
    ),
    Case(
        "tl: normalize_total X taken as counts",
        lambda: _normalised(log=False),
        lambda d, t: st.tl.embed(d, modality="expression"),
        ValueError,
        r"every spot sums to \d+, as after sc.pp.normalize_total.*`layer=`",
    ),
    Case(
        "tl: a normalised layer named as counts",
        _lognorm_layer,
        lambda d, t: st.tl.embed(d, modality="expression", layer="lognorm"),
        ValueError,
        r"layers\['lognorm'\] holds normalised expression",
    ),
    Case(
        "tl: key_added replaces the coordinates",
        DEMO,
        lambda d, t: st.tl.embed(d, key_added="spatial"),
        ValueError,
        r"`key_added` would overwrite obsm\['spatial'\]",
    ),
    Case(
        "tl: predicted layer named like the counts",
        _with_counts_layer,
        lambda d, t: st.tl.predict_expression(d, key_added="counts"),
        ValueError,
        r"`key_added` would overwrite layers\['counts'\]",
    ),
    Case(
        "tl: domains over the user's own column",
        lambda: _with_obs("leiden"),
        lambda d, t: st.tl.domains(d, n_domains=2, use_rep="spatial", key_added="leiden"),
        ValueError,
        r"`key_added` would overwrite obs\['leiden'\]",
    ),
    Case(
        "tl: domains of one spot",
        _one_spot,
        lambda d, t: st.tl.domains(d, use_rep="X_rep"),
        ValueError,
        "at least 2 spots",
    ),
    Case(
        "tl: domains over embeddings of different widths",
        _two_widths,
        lambda d, t: st.tl.domains(d, n_domains=2, use_rep="X_rep"),
        ValueError,
        r"`use_rep='X_rep'` has embeddings of different widths across slides \(slide 0: 8, slide 1: 16\)",
    ),
    Case(
        "tl: domains over a NaN embedding",
        lambda: _embedded(st.datasets.demo(), 8, value=np.nan),
        lambda d, t: st.tl.domains(d, n_domains=2, use_rep="X_rep"),
        ValueError,
        r"obsm\['X_rep'\] has NaN or infinite rows",
    ),
    Case("tl: risk head of a wrong type", DEMO, lambda d, t: st.tl.apply_risk(d, head=5), TypeError, "`head`"),
    Case(
        "tl: fit_risk on one slide",
        DEMO,
        lambda d, t: st.tl.fit_risk([d], time="t", event="e"),
        ValueError,
        "`data` needs at least two slides",
    ),
    Case(
        "tl: fit_risk with a negative time",
        lambda: [st.datasets.demo(), st.datasets.demo()],
        lambda d, t: st.tl.fit_risk(d, time=[12.0, -3.0], event=[1, 0]),
        ValueError,
        r"`time` of slide 1 is -3.*never negative",
    ),
    # pl
    Case("pl: unknown genes", DEMO, lambda d, t: st.pl.genes(d, ["NOTAGENE"], show=False), KeyError, "`genes`"),
    Case("pl: domains not computed", DEMO, lambda d, t: st.pl.domains(d, show=False), KeyError, "st.tl.domains"),
    Case("pl: risk not computed", DEMO, lambda d, t: st.pl.risk(d, show=False), KeyError, "st.tl.apply_risk"),
    Case("pl: embedding not computed", DEMO, lambda d, t: st.pl.embedding(d, show=False), KeyError, "st.tl.embed"),
    # models and train
    Case(
        "models: vocabulary not matching the weights",
        DEMO,
        lambda d, t: st.tl.embed(d, model=_short_vocabulary_checkpoint(t)),
        ValueError,
        "vocab",
    ),
    Case("models: unknown preset", lambda: None, lambda d, t: StormConfig.from_preset("huge"), ValueError, "preset"),
    Case("train: negative learning rate", lambda: None, lambda d, t: TrainConfig(lr=-1), ValueError, "`lr`"),
    Case("train: empty corpus", lambda: None, lambda d, t: st.tl.pretrain([]), ValueError, "at least one"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_and_leaves_input_unchanged(case, tmp_path):
    data = case.make()
    before = _fingerprints(data)
    with pytest.raises(case.error, match=case.match):
        case.call(data, tmp_path)
    assert _fingerprints(data) == before


def test_the_suite_covers_every_namespace():
    namespaces = {c.id.split(":")[0] for c in CASES}
    assert namespaces == {"io", "pp", "tl", "pl", "models", "train"}
    assert len(CASES) >= 25


def test_fingerprint_sees_a_change():
    """The unchanged-input check can fail: a written obsm key, a changed value or a new uns entry all show."""
    sdata = st.datasets.demo()
    before = fingerprint(sdata)
    sdata["table"].obsm["X_new"] = np.zeros((sdata["table"].n_obs, 2))
    assert fingerprint(sdata) != before
    sdata = st.datasets.demo()
    sdata["table"].X[0, 0] += 1
    assert fingerprint(sdata) != before
    sdata = st.datasets.demo()
    sdata["table"].uns["storm"] = {}
    assert fingerprint(sdata) != before


def _no_scale() -> SpatialData:
    return _slide([[10.0, 10.0], [20.0, 20.0]])


#: Public functions that resolve a slide, and the arguments that make them reach resolution.
RESOLVING = {
    "st.tl.embed": (lambda d: st.tl.embed(d), st.tl.embed),
    "st.tl.predict_expression": (lambda d: st.tl.predict_expression(d), st.tl.predict_expression),
    "st.tl.domains": (lambda d: st.tl.domains(d, n_domains=2), st.tl.domains),
    "st.pp.tile": (lambda d: st.pp.tile(d), st.pp.tile),
    "st.pl.genes": (lambda d: st.pl.genes(d, ["ERBB2"], show=False), st.pl.genes),
    "st.pl.domains": (lambda d: st.pl.domains(d, show=False), st.pl.domains),
}


@pytest.mark.parametrize("name", list(RESOLVING))
def test_messages_name_only_arguments_the_called_function_has(name):
    import inspect
    import re

    call, function = RESOLVING[name]
    with pytest.raises((ValueError, KeyError)) as error:
        call(_no_scale())
    named = set(re.findall(r"`(\w+)=", str(error.value)))
    assert named, str(error.value)
    assert named <= set(inspect.signature(function).parameters), (named, str(error.value))


def _called(case: Case) -> Any:
    """The public storm function a case calls (the first ``st.<module>.<name>(`` in its source), or ``None``."""
    import inspect
    import re

    found = re.search(r"st\.(\w+)\.(\w+)\(", inspect.getsource(case.call).split("lambda d, t:", 1)[-1])
    return getattr(getattr(st, found[1]), found[2]) if found else None


@pytest.mark.parametrize("case", [c for c in CASES if _called(c) is not None], ids=lambda c: c.id)
def test_every_refusal_names_only_arguments_the_called_function_has(case, tmp_path):
    """Advice such as "pass `tile_um=`" or "use modality='auto'" must name an argument of the function called.

    Calls shown as code (``st.tl.embed(..., model=...)``, ``adata.to_memory()``) are advice to call another function,
    so their arguments are left out.
    """
    import inspect
    import re

    data = case.make() if case.make is not None else None
    with pytest.raises(Exception) as error:
        case.call(data, tmp_path)
    message = re.sub(r"[\w.]+\([^()]*\)", "", str(error.value))  # other calls shown as code
    named = set(re.findall(r"(?<![\w.])(\w+)=(?!=)", message))
    assert named <= set(inspect.signature(_called(case)).parameters), (named, str(error.value))
