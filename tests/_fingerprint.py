"""What a user could lose: a fingerprint of a SpatialData or AnnData, compared before and after a refused call."""

from __future__ import annotations

import hashlib
from typing import Any

import anndata as ad
import numpy as np
from scipy import sparse


def _digest(value: Any) -> str:
    if sparse.issparse(value):
        value = value.toarray()
    array = np.ascontiguousarray(np.asarray(value))
    return hashlib.sha256(array.tobytes() + str(array.dtype).encode() + str(array.shape).encode()).hexdigest()


def fingerprint(data: Any) -> Any:
    """Everything a user could lose: element names, and each table's values, obs, obsm, layers and uns."""
    if data is None:
        return None
    if isinstance(data, ad.AnnData):
        elements, tables = (), {"": data}
    else:
        elements = tuple(tuple(sorted(getattr(data, kind))) for kind in ("images", "labels", "points", "shapes"))
        tables = dict(data.tables)
    out = [elements]
    for key, table in sorted(tables.items()):
        out.append(
            (
                key,
                table.shape,
                tuple(table.obs_names),
                table.obs.to_csv(),
                tuple(table.var_names),
                _digest(table.X),
                tuple((k, _digest(v)) for k, v in sorted(table.obsm.items())),
                tuple((k, _digest(v)) for k, v in sorted(table.layers.items())),
                repr(table.uns),
            )
        )
    return out
