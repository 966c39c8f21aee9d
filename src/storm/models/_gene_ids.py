"""The shipped Ensembl gene ID <-> symbol table (10x reference GRCh38-2020-A), read lazily."""

from __future__ import annotations

import gzip
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from types import MappingProxyType

_TABLE = Path(__file__).parent / "data" / "gene_ids.tsv.gz"
#: An Ensembl gene ID, optionally with a version suffix (".14") and GENCODE's "_PAR_Y" tag.
_ENSEMBL = re.compile(r"^(ENS[A-Z]*G\d+)(?:\.\d+)?(?:_PAR_Y)?$")


def _ensembl_key(name: str) -> str | None:
    """The unversioned Ensembl gene ID in ``name``, or ``None`` if ``name`` is not one."""
    match = _ENSEMBL.match(name.strip().upper())
    return match.group(1) if match else None


@cache
def _table() -> tuple[Mapping[str, str], dict[str, tuple[str, ...]]]:
    id_to_symbol: dict[str, str] = {}
    symbol_to_ids: dict[str, list[str]] = {}
    with gzip.open(_TABLE, "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("#") or line.startswith("ensembl_id\t"):
                continue
            gene_id, symbol = line.rstrip("\n").split("\t")
            id_to_symbol[gene_id] = symbol
            symbol_to_ids.setdefault(symbol.casefold(), []).append(gene_id)
    return MappingProxyType(id_to_symbol), {k: tuple(v) for k, v in symbol_to_ids.items()}


def ensembl_to_symbol() -> Mapping[str, str]:
    """The shipped Ensembl gene ID → symbol table (read once, on first call, and cached).

    The 36,601 human genes of the 10x Genomics reference GRCh38-2020-A, from a ``features.tsv`` copied from
    github.com/bowang-lab/BLEEP (Apache-2.0); rebuild it with ``scripts/make_gene_ids.py``. Keys are unversioned IDs.

    Returns
    -------
    A read-only mapping from unversioned Ensembl gene ID to gene symbol.

    Examples
    --------
    >>> table = ensembl_to_symbol()
    >>> len(table), table["ENSG00000075624"]
    (36601, 'ACTB')
    """
    return _table()[0]
