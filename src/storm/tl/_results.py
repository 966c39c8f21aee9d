"""How every tool hands results back: all keys written together (never over the user's), recorded and logged."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .._constants import UNS_KEY
from .._logging import logger

if TYPE_CHECKING:
    from ..io import Slide


def full_rows(values: np.ndarray, rows: np.ndarray, n_obs: int) -> np.ndarray:
    """``values`` of the resolved spots placed at their rows of the table; NaN elsewhere."""
    full = np.full((n_obs, *np.shape(values)[1:]), np.nan, dtype=np.float32)
    full[rows] = values
    return full


#: Where results go in a table, in the order they are written and recorded.
_PLACES = ("obsm", "obs", "layers", "var")


@dataclass
class Results:
    """Everything one call of a tool writes into the resolved table, keyed by where it goes.

    ``obsm``, ``obs`` and ``layers`` values cover the resolved spots only (``slide.rows``); other rows get NaN (or a
    missing category). An ``obsm`` DataFrame keeps its columns and gets the table's ``obs_names`` as index. ``var`` values cover every gene of the table. ``record`` goes to ``uns["storm"][uns_key]``
    together with what was resolved.
    """

    uns_key: str
    record: dict[str, Any]
    obsm: dict[str, np.ndarray] = field(default_factory=dict)
    obs: dict[str, Any] = field(default_factory=dict)
    layers: dict[str, np.ndarray] = field(default_factory=dict)
    var: dict[str, np.ndarray] = field(default_factory=dict)

    def keys(self) -> dict[str, list[str]]:
        """The keys written, by where they go (``{"obsm": ["X_storm", ...], ...}``; empty places left out)."""
        return {where: sorted(getattr(self, where)) for where in _PLACES if getattr(self, where)}


def check_keys(slide: Slide, **keys: list[str]) -> None:
    """Refuse to write over a key of ``slide.table`` that storm did not write (``check_keys(slide, obs=["leiden"])``).

    A key is storm's when a record in ``uns["storm"]`` lists it as written; anything else (coordinates in
    ``obsm["spatial"]``, counts in ``layers["counts"]``, the user's own clusters) is the user's. Tools call it before
    computing, and :func:`write_results` before writing anything.
    """
    table = slide.table
    owned: dict[str, set[str]] = {}
    for record in table.uns.get(UNS_KEY, {}).values():
        for where, names in written_keys(record).items():
            owned.setdefault(where, set()).update(names)
    for where, names in keys.items():
        present = getattr(table, where).columns if where in ("obs", "var") else getattr(table, where).keys()
        clash = [k for k in names if k in present and k not in owned.get(where, set())]
        if clash:
            raise ValueError(
                f"`key_added` would overwrite {where}[{clash[0]!r}], which storm did not write; choose another "
                f"`key_added`, or delete {where}[{clash[0]!r}] first if it may go."
            )


def write_results(slide: Slide, results: Results, *, stale: list[str] | None = None) -> None:
    """Write ``results`` into ``slide.table`` (all keys, after all computing is done), record and log them.

    Keys that storm did not write are never overwritten (:func:`check_keys`).

    ``stale`` names ``obsm`` keys a previous call of the same tool wrote under this ``uns_key`` that this call does
    not write (e.g. a branch embedding of another modality); they are removed, so ``obsm`` and ``uns`` agree.

    When the call covers only some rows of the table (one region of several) and the previous call under this
    ``uns_key`` used the same model and modality, the other rows of its ``obsm`` and ``layers`` keys keep their values
    (otherwise they are NaN: results of two models are never mixed in one key).
    """
    import pandas as pd

    check_keys(slide, **results.keys())
    table = slide.table
    n = table.n_obs
    obsm = {k: _full_obsm(v, slide, n) for k, v in results.obsm.items()}
    layers = {k: full_rows(v, slide.rows, n) for k, v in results.layers.items()}
    if len(slide.rows) < n and _same_source(table, results):  # other rows (another region) keep what they had
        for written, old in ((obsm, table.obsm), (layers, table.layers)):
            for k, v in written.items():
                before = old.get(k)
                if before is not None and np.shape(before) == np.shape(v) and not isinstance(v, pd.DataFrame):
                    kept = np.asarray(before, dtype=np.float32).copy()
                    kept[slide.rows] = np.asarray(v)[slide.rows]
                    written[k] = kept
    obs = {}
    for k, v in results.obs.items():
        if isinstance(v, pd.Categorical):
            column = np.full(n, None, dtype=object)
            column[slide.rows] = np.asarray(v, dtype=object)
            obs[k] = pd.Categorical(column, categories=v.categories)
        else:
            obs[k] = full_rows(np.asarray(v, dtype=np.float32), slide.rows, n)
    for key in stale or []:
        table.obsm.pop(key, None)
    for k, v in obsm.items():
        table.obsm[k] = v
    for k, v in layers.items():
        table.layers[k] = v
    for k, v in obs.items():
        table.obs[k] = v
    for k, v in results.var.items():
        table.var[k] = v
    written = results.keys()
    record = {**results.record, "keys": written, "resolved": slide.summary()}
    table.uns.setdefault(UNS_KEY, {})[results.uns_key] = record
    names = [f"{where}[{k!r}]" for where, keys in written.items() for k in keys]
    logger.info("added %s, uns[%r][%r]", ", ".join(names), UNS_KEY, results.uns_key)


def _same_source(table: Any, results: Results) -> bool:
    """Whether the previous record of ``results.uns_key`` came from the same model, modality and orientations."""
    before = table.uns.get(UNS_KEY, {}).get(results.uns_key)
    if not isinstance(before, dict):
        return False
    same = ("model_sha256", "modality", "image_encoder_sha256", "orientations")
    return (
        all(str(before.get(k)) == str(results.record.get(k)) for k in same) and before.get("model_sha256") is not None
    )


def embedding_record(table: Any, key: str) -> dict[str, Any] | None:
    """The ``uns["storm"]`` record that lists ``obsm[key]`` as written (``None``: not storm's)."""
    for record in table.uns.get(UNS_KEY, {}).values():
        if key in list(written_keys(record).get("obsm", [])):
            return record
    return None


def written_keys(record: Any) -> dict[str, Any]:
    """The keys a ``uns["storm"]`` record lists as written, by place (``{}`` for anything that is not a record)."""
    written = record.get("keys", {}) if isinstance(record, dict) else {}
    return written if isinstance(written, dict) else {}


def _full_obsm(values: Any, slide: Slide, n_obs: int) -> Any:
    import pandas as pd

    full = full_rows(np.asarray(values, dtype=np.float32), slide.rows, n_obs)
    if isinstance(values, pd.DataFrame):
        return pd.DataFrame(full, index=slide.table.obs_names, columns=values.columns)
    return full


def previous_keys(slide: Slide, uns_key: str, where: str = "obsm") -> list[str]:
    """The ``where`` keys that the last call recorded under ``uns["storm"][uns_key]`` wrote."""
    return list(written_keys(slide.table.uns.get(UNS_KEY, {}).get(uns_key)).get(where, []))
