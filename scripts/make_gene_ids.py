"""Build the Ensembl ID → gene symbol table shipped in ``src/storm/models/data/gene_ids.tsv.gz``.

Usage (from the repository root, with the shared data folder next to it)::

    python scripts/make_gene_ids.py                         # reads ../shared/data/dlpfc/aux/features.tsv
    python scripts/make_gene_ids.py --features PATH --out FILE
    python scripts/make_gene_ids.py --check                 # rebuild in memory and compare with the shipped file

The input is a 10x Genomics ``features.tsv`` (three tab-separated columns without a header: Ensembl gene ID, gene
symbol, feature type), copied unchanged from bowang-lab/BLEEP @ 23959670c7407510c1716a173184bdcc18833a35
(``GSE240429_data/data/filtered_expression_matrices/*/features.tsv``, Apache-2.0). Its 36,601 human genes are those of
the 10x reference GRCh38-2020-A. Only ``Gene Expression`` rows are kept, in input order, as two columns
``ensembl_id`` and ``symbol`` below a ``#`` header that states the source and licence. The output is gzip with a zero
timestamp and no file name, so the same input always gives the same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FEATURES = REPO_ROOT.parent / "shared" / "data" / "dlpfc" / "aux" / "features.tsv"
DEFAULT_OUT = REPO_ROOT / "src" / "storm" / "models" / "data" / "gene_ids.tsv.gz"
FEATURE_TYPE = "Gene Expression"
_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d+$")

HEADER = (
    "# Ensembl gene ID -> gene symbol for the {n:,} human genes ('Gene Expression' features) of a 10x Genomics\n"
    "# features.tsv (reference GRCh38-2020-A), copied from github.com/bowang-lab/BLEEP @ "
    "23959670c7407510c1716a173184bdcc18833a35\n"
    "# (GSE240429_data/data/filtered_expression_matrices/*/features.tsv), licence Apache-2.0.\n"
    "# Built by scripts/make_gene_ids.py; columns: ensembl_id, symbol (tab-separated, one gene a line).\n"
)


def build(features: Path) -> bytes:
    """Read a 10x ``features.tsv`` and return the gzip-compressed table (deterministic bytes)."""
    rows: list[tuple[str, str]] = []
    seen: set[str] = set()
    for number, line in enumerate(features.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise ValueError(
                f"{features}: line {number} has {len(fields)} tab-separated fields; a 10x features.tsv has three "
                "(Ensembl ID, symbol, feature type)."
            )
        gene_id, symbol, feature_type = (field.strip() for field in fields)
        if feature_type != FEATURE_TYPE:
            continue
        if not _ENSEMBL.match(gene_id):
            raise ValueError(f"{features}: line {number}: {gene_id!r} is not an unversioned Ensembl gene ID.")
        if not symbol:
            raise ValueError(f"{features}: line {number}: empty gene symbol for {gene_id}.")
        if gene_id in seen:
            raise ValueError(f"{features}: line {number}: Ensembl ID {gene_id} appears twice.")
        seen.add(gene_id)
        rows.append((gene_id, symbol))
    if not rows:
        raise ValueError(f"{features}: no {FEATURE_TYPE!r} rows found.")
    text = HEADER.format(n=len(rows)) + "ensembl_id\tsymbol\n" + "".join(f"{i}\t{s}\n" for i, s in rows)
    return gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, default=DEFAULT_FEATURES, help="10x features.tsv to read")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="gzip table to write")
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = parser.parse_args(argv)
    if not args.features.exists():
        parser.error(f"--features {args.features} does not exist; point it at the 10x features.tsv (see --help).")
    data = build(args.features)
    if args.check:
        same = args.out.exists() and args.out.read_bytes() == data
        print(f"{args.out}: {'up to date' if same else 'DIFFERS from a rebuild'}")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(data):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
