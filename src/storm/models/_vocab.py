"""Panel-agnostic gene vocabulary: which gene-identity embedding row each of a dataset's genes uses.

A :class:`GeneVocab` is an ordered list of unique gene symbols (with optional Ensembl gene IDs) stored with each
checkpoint. :meth:`~storm.models.GeneVocab.align` maps any dataset's ``var_names`` (symbols or Ensembl IDs, whole transcriptome or a
targeted panel) onto it. Ensembl IDs are translated through a shipped table of the 36,601 human genes of the 10x
reference GRCh38-2020-A (``data/gene_ids.tsv.gz``, built by ``scripts/make_gene_ids.py``), read on first use by
:func:`~storm.models.ensembl_to_symbol`. Pure Python and numpy: nothing here needs torch.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._gene_ids import _ensembl_key, _table, ensembl_to_symbol

__all__ = ["GeneVocab", "VocabAlignment", "ensembl_to_symbol"]

_FILE_NAME = "vocab.tsv"
_TSV_HEADER = "symbol\tensembl_id"
_FORMAT = "storm-gene-vocab"
_VERSION = 1
_FORBIDDEN = re.compile(r"[\t\n\r]")


def _names(values: Any, argument: str, *, allow_missing: bool = False) -> list[str]:
    """``values`` as a list of strings; missing entries become ``""`` when allowed, else raise."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise TypeError(
            f"`{argument}` must be a list of gene names, not {type(values).__name__}; wrap one name in a list."
        )
    out = []
    for position, value in enumerate(values):
        if value is None or (isinstance(value, float) and value != value) or type(value).__name__ == "NAType":
            if not allow_missing:
                raise ValueError(f"`{argument}` has a missing entry at position {position}; drop or name that gene.")
            out.append("")
        elif isinstance(value, str):
            out.append(str(value))
        else:
            raise TypeError(
                f"`{argument}[{position}]` is {value!r} ({type(value).__name__}); gene names must be strings."
            )
    return out


@dataclass(frozen=True, eq=False)
class VocabAlignment:
    """Where each of a dataset's genes sits in a :class:`~storm.models.GeneVocab` (the result of :meth:`~storm.models.GeneVocab.align`).

    Parameters
    ----------
    indices
        Vocabulary index per input gene (``int64``, length of the input), ``-1`` for genes not in the vocabulary.
    unknown
        Input names that got ``-1``, in input order: names not found, plus repeats (see ``duplicated``).
    duplicated
        Input names that matched a vocabulary entry already taken by an earlier input gene (e.g. ``"ACTB"`` and
        ``"ENSG00000075624"`` in the same list). The first keeps the entry; later ones get ``-1`` and are also listed
        in ``unknown``.
    vocab_size
        Length of the vocabulary aligned to.

    Examples
    --------
    >>> vocab = GeneVocab(["ACTB", "GAPDH"])
    >>> alignment = vocab.align(["gapdh", "FOO"])
    >>> alignment.indices.tolist(), alignment.unknown, alignment.fraction_known
    ([1, -1], ('FOO',), 0.5)
    """

    indices: np.ndarray
    unknown: tuple[str, ...]
    duplicated: tuple[str, ...]
    vocab_size: int

    @property
    def known(self) -> np.ndarray:
        """``True`` where the input gene is in the vocabulary (a boolean mask over the input genes)."""
        return self.indices >= 0

    @property
    def n_known(self) -> int:
        """Number of input genes found in the vocabulary."""
        return int(np.count_nonzero(self.indices >= 0))

    @property
    def fraction_known(self) -> float:
        """Fraction of input genes found in the vocabulary (``0.0`` for an empty input)."""
        return self.n_known / len(self.indices) if len(self.indices) else 0.0

    @property
    def covered(self) -> np.ndarray:
        """``True`` for the vocabulary entries the input provides (a boolean mask of length ``vocab_size``)."""
        mask = np.zeros(self.vocab_size, dtype=bool)
        mask[self.indices[self.indices >= 0]] = True
        return mask

    def __repr__(self) -> str:
        return (
            f"VocabAlignment({self.n_known}/{len(self.indices)} genes known ({self.fraction_known:.1%}), "
            f"{len(self.duplicated)} duplicated, vocab_size={self.vocab_size})"
        )


class GeneVocab:
    """An ordered, immutable vocabulary of genes: gene ``symbols[i]`` uses embedding row ``i``.

    Parameters
    ----------
    symbols
        Unique gene symbols (unique also ignoring case), non-empty, without tabs or line breaks.
    ensembl_ids
        Optional Ensembl gene ID per symbol (``None`` or ``""`` where unknown); version suffixes are dropped.
        Used by :meth:`align` to match datasets whose genes are named by Ensembl ID.

    Examples
    --------
    >>> vocab = GeneVocab(["ACTB", "GAPDH", "MT-CO1"], ["ENSG00000075624", None, None])
    >>> len(vocab), "actb" in vocab, vocab.index("ENSG00000111640.15")
    (3, True, 1)
    >>> vocab.align(["GAPDH", "actb", "ENSG00000198804.2", "FOO"]).indices.tolist()
    [1, 0, 2, -1]
    """

    __slots__ = ("_by_ensembl", "_by_folded", "_by_symbol", "_ensembl", "_symbols")

    def __init__(self, symbols: Sequence[str], ensembl_ids: Sequence[str | None] | None = None) -> None:
        names = _names(symbols, "symbols")
        if not names:
            raise ValueError("`symbols` is empty; a GeneVocab needs at least one gene.")
        for position, name in enumerate(names):
            if not name.strip() or _FORBIDDEN.search(name):
                raise ValueError(
                    f"`symbols[{position}]` = {name!r} is empty or contains a tab or line break; clean the gene names."
                )
        folded: dict[str, list[str]] = {}
        for name in names:
            folded.setdefault(name.casefold(), []).append(name)
        clashes = [group for group in folded.values() if len(group) > 1]
        if clashes:
            shown = ", ".join("/".join(group) for group in clashes[:10])
            raise ValueError(
                f"`symbols` has {len(clashes)} duplicated gene name(s) (compared ignoring case): {shown}"
                f"{' ...' if len(clashes) > 10 else ''}; each gene must appear once (use GeneVocab.from_genes to merge lists)."
            )
        if ensembl_ids is None:
            ids: list[str | None] = [None] * len(names)
        else:
            raw = _names(ensembl_ids, "ensembl_ids", allow_missing=True)
            if len(raw) != len(names):
                raise ValueError(
                    f"`ensembl_ids` has {len(raw)} entries but `symbols` has {len(names)}; give one ID (or None) per symbol."
                )
            ids = []
            for position, value in enumerate(raw):
                key = _ensembl_key(value) if value.strip() else None
                if value.strip() and key is None:
                    raise ValueError(
                        f"`ensembl_ids[{position}]` = {value!r} is not an Ensembl gene ID (like 'ENSG00000075624'); "
                        "pass None where the ID is unknown."
                    )
                ids.append(key)
        by_ensembl: dict[str, int] = {}
        for position, key in enumerate(ids):
            if key is not None and key in by_ensembl:
                raise ValueError(
                    f"`ensembl_ids` gives {key} to both {names[by_ensembl[key]]!r} and {names[position]!r}; "
                    "an Ensembl ID may name one vocabulary entry only."
                )
            if key is not None:
                by_ensembl[key] = position
        self._symbols = np.array(names, dtype=str)
        self._symbols.flags.writeable = False
        self._ensembl = np.array(ids, dtype=object)
        self._ensembl.flags.writeable = False
        self._by_symbol = {name: i for i, name in enumerate(names)}
        self._by_folded = {name.casefold(): i for i, name in enumerate(names)}
        self._by_ensembl = by_ensembl

    # -- construction ------------------------------------------------------------------------------------------------
    @classmethod
    def from_genes(cls, *gene_lists: Iterable[str], min_count: int | None = None) -> GeneVocab:
        """Build a vocabulary from the gene names of one or several datasets.

        Ensembl IDs (with or without version) are translated to symbols through :func:`~storm.models.ensembl_to_symbol`; IDs not in
        that table are kept as their own symbol. Names equal ignoring case are one gene (the spelling that sorts first
        is kept, so ``"ACTB"`` wins over ``"Actb"``). Entries are sorted by symbol, ignoring case, so the same inputs
        give the same vocabulary whatever their order. Each entry's Ensembl ID is the one given in the input, else the
        table's ID for that symbol when the table has exactly one.

        Parameters
        ----------
        *gene_lists
            One list of gene names per dataset (e.g. ``adata.var_names``), symbols or Ensembl IDs.
        min_count
            Keep genes found in at least this many of the lists (a gene repeated within one list counts once).
            Default 1: the union.

        Returns
        -------
        The new vocabulary.

        Examples
        --------
        >>> vocab = GeneVocab.from_genes(["GAPDH", "ACTB"], ["ENSG00000075624.17", "CD74"])
        >>> vocab.symbols.tolist(), vocab.ensembl_ids.tolist()
        (['ACTB', 'CD74', 'GAPDH'], ['ENSG00000075624', 'ENSG00000019582', 'ENSG00000111640'])
        >>> GeneVocab.from_genes(["GAPDH", "ACTB"], ["ENSG00000075624.17", "CD74"], min_count=2).symbols.tolist()
        ['ACTB']
        """
        if not gene_lists:
            raise ValueError("give at least one list of gene names, e.g. GeneVocab.from_genes(adata.var_names).")
        min_count = 1 if min_count is None else min_count
        if (
            isinstance(min_count, bool)
            or not isinstance(min_count, int | np.integer)
            or not 1 <= min_count <= len(gene_lists)
        ):
            raise ValueError(
                f"`min_count={min_count!r}` must be an integer from 1 to the number of lists ({len(gene_lists)})."
            )
        id_to_symbol = ensembl_to_symbol()
        counts: dict[str, int] = {}
        spellings: dict[str, set[str]] = {}
        given_ids: dict[str, set[str]] = {}
        for number, genes in enumerate(gene_lists):
            names = _names(genes, f"gene_lists[{number}]")
            in_this_list: set[str] = set()
            for position, name in enumerate(names):
                if not name.strip() or _FORBIDDEN.search(name):
                    raise ValueError(
                        f"`gene_lists[{number}][{position}]` = {name!r} is empty or contains a tab or line break; "
                        "clean the gene names."
                    )
                key = _ensembl_key(name)
                symbol = id_to_symbol.get(key, key) if key else name
                folded = symbol.casefold()
                if folded not in in_this_list:
                    in_this_list.add(folded)
                    counts[folded] = counts.get(folded, 0) + 1
                spellings.setdefault(folded, set()).add(symbol)
                if key:
                    given_ids.setdefault(folded, set()).add(key)
        kept = sorted((min(spellings[f]) for f, n in counts.items() if n >= min_count), key=lambda s: (s.casefold(), s))
        symbol_to_ids = _table()[1]
        ids: list[str | None] = []
        used: set[str] = set()
        for symbol in kept:
            given = sorted(given_ids.get(symbol.casefold(), ()))
            from_table = symbol_to_ids.get(symbol.casefold(), ())
            key = given[0] if given else from_table[0] if len(from_table) == 1 else None
            ids.append(None if key in used else key)
            if key is not None:
                used.add(key)
        return cls(kept, ids)

    # -- the container ------------------------------------------------------------------------------------------------
    @property
    def symbols(self) -> np.ndarray:
        """Gene symbols in vocabulary order (read-only string array)."""
        return self._symbols

    @property
    def ensembl_ids(self) -> np.ndarray:
        """Unversioned Ensembl gene ID per entry, ``None`` where unknown (read-only object array)."""
        return self._ensembl

    def __len__(self) -> int:
        return len(self._symbols)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._lookup(name) >= 0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GeneVocab):
            return NotImplemented
        return self._symbols.tolist() == other._symbols.tolist() and self._ensembl.tolist() == other._ensembl.tolist()

    def __hash__(self) -> int:
        return hash((tuple(self._symbols.tolist()), tuple(self._ensembl.tolist())))

    def __repr__(self) -> str:
        head = ", ".join(repr(s) for s in self._symbols[:3].tolist())
        more = ", ..." if len(self) > 3 else ""
        genes = "gene" if len(self) == 1 else "genes"
        return f"GeneVocab({len(self)} {genes}: {head}{more}; hash {self.content_hash()[:12]})"

    def index(self, name: str) -> int:
        """Vocabulary index of one gene, matched as in :meth:`align`.

        Parameters
        ----------
        name
            A gene symbol (any case) or Ensembl gene ID (with or without version).

        Returns
        -------
        The index.

        Raises
        ------
        KeyError
            If the gene is not in the vocabulary.

        Examples
        --------
        >>> GeneVocab(["ACTB", "GAPDH"]).index("gapdh")
        1
        """
        position = self._lookup(name) if isinstance(name, str) else -1
        if position < 0:
            raise KeyError(
                f"gene {name!r} is not in this {len(self)}-gene vocabulary (matched by symbol, any case, or Ensembl ID)."
            )
        return position

    def _lookup(self, name: str) -> int:
        """Index of ``name``: exact symbol, symbol ignoring case, Ensembl ID (own column, then the table); or -1."""
        if not name:
            return -1
        position = self._by_symbol.get(name)
        if position is None:
            position = self._by_folded.get(name.casefold())
        if position is not None:
            return position
        key = _ensembl_key(name)
        if key is not None:
            position = self._by_ensembl.get(key)
            if position is None and key in ensembl_to_symbol():
                symbol = ensembl_to_symbol()[key]
                position = self._by_symbol.get(symbol, self._by_folded.get(symbol.casefold()))
        elif self._by_ensembl:
            # A symbol this vocabulary spells differently: through the table's ID to this vocabulary's own ID column.
            ids = _table()[1].get(name.casefold(), ())
            if len(ids) == 1:
                position = self._by_ensembl.get(ids[0])
        return -1 if position is None else position

    def align(self, var_names: Iterable[str], *, ensembl_ids: Iterable[str | None] | None = None) -> VocabAlignment:
        """Map a dataset's genes onto the vocabulary.

        Each name is matched, in this order, by exact symbol; by symbol ignoring case; and, for an Ensembl gene ID
        (version suffix such as ``".14"`` ignored), by this vocabulary's Ensembl column, then through the shipped table
        (ID → symbol → entry). Gene aliases and renamed symbols are not resolved, except that a symbol the table gives
        exactly one ID for also matches an entry holding that ID. When several input genes match the same entry, the
        first keeps it; later ones get ``-1`` and are listed in ``unknown`` and ``duplicated``.

        Parameters
        ----------
        var_names
            The dataset's gene names (symbols or Ensembl IDs), e.g. ``adata.var_names``.
        ensembl_ids
            Optional second identifier per gene, tried when its name does not match (e.g. ``adata.var["gene_ids"]``).

        Returns
        -------
        :class:`VocabAlignment` with ``indices`` (``-1`` for unknown genes), ``known``, ``unknown``, ``n_known`` and
        ``fraction_known``.

        Examples
        --------
        >>> vocab = GeneVocab(["ACTB", "GAPDH", "MT-CO1"])
        >>> alignment = vocab.align(["ENSG00000111640.15", "Actb", "FOO", "ACTB"])
        >>> alignment.indices.tolist(), alignment.unknown, alignment.duplicated
        ([1, 0, -1, -1], ('FOO', 'ACTB'), ('ACTB',))
        """
        names = _names(var_names, "var_names", allow_missing=True)
        second = None
        if ensembl_ids is not None:
            second = _names(ensembl_ids, "ensembl_ids", allow_missing=True)
            if len(second) != len(names):
                raise ValueError(
                    f"`ensembl_ids` has {len(second)} entries but `var_names` has {len(names)}; give one per gene."
                )
        indices = np.full(len(names), -1, dtype=np.int64)
        taken: set[int] = set()
        unknown: list[str] = []
        duplicated: list[str] = []
        for position, name in enumerate(names):
            found = self._lookup(name)
            if found < 0 and second is not None:
                found = self._lookup(second[position])
            if found >= 0 and found in taken:
                duplicated.append(name)
                found = -1
            if found < 0:
                unknown.append(name)
            else:
                taken.add(found)
                indices[position] = found
        indices.flags.writeable = False
        return VocabAlignment(indices, tuple(unknown), tuple(duplicated), len(self))

    # -- serialisation ------------------------------------------------------------------------------------------------
    def to_tsv(self) -> str:
        """The canonical text form: a ``symbol<TAB>ensembl_id`` header, then one gene a line (empty ID if unknown)."""
        rows = (f"{s}\t{e or ''}\n" for s, e in zip(self._symbols.tolist(), self._ensembl.tolist(), strict=True))
        return _TSV_HEADER + "\n" + "".join(rows)

    def content_hash(self) -> str:
        """SHA-256 (hex) of :meth:`to_tsv` encoded as UTF-8: identifies the vocabulary across runs and machines.

        Examples
        --------
        >>> GeneVocab(["ACTB"]).content_hash()[:16]
        '84be1ffffdd084dd'
        """
        return hashlib.sha256(self.to_tsv().encode("utf-8")).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (for ``config.json``); :meth:`from_dict` reverses it.

        Examples
        --------
        >>> GeneVocab(["ACTB"], ["ENSG00000075624"]).to_dict()
        {'format': 'storm-gene-vocab', 'version': 1, 'symbols': ['ACTB'], 'ensembl_ids': ['ENSG00000075624']}
        """
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "symbols": self._symbols.tolist(),
            "ensembl_ids": self._ensembl.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GeneVocab:
        """Rebuild a vocabulary from :meth:`to_dict` output.

        Parameters
        ----------
        data
            A mapping with ``symbols`` and optionally ``ensembl_ids``, ``format`` and ``version``.

        Returns
        -------
        The vocabulary.

        Examples
        --------
        >>> vocab = GeneVocab(["ACTB", "GAPDH"])
        >>> GeneVocab.from_dict(vocab.to_dict()) == vocab
        True
        """
        if not isinstance(data, Mapping) or "symbols" not in data:
            raise ValueError("`data` must be a mapping with a 'symbols' list, as written by GeneVocab.to_dict().")
        if data.get("format", _FORMAT) != _FORMAT or data.get("version", _VERSION) != _VERSION:
            raise ValueError(
                f"`data` is format {data.get('format')!r} version {data.get('version')!r}; this storm reads "
                f"{_FORMAT!r} version {_VERSION}. Upgrade storm or rebuild the vocabulary."
            )
        return cls(data["symbols"], data.get("ensembl_ids"))

    def save(self, path: str | Path) -> Path:
        """Write the vocabulary as text (:meth:`to_tsv`) to ``path``, or to ``path/vocab.tsv`` if ``path`` is a folder.

        Parameters
        ----------
        path
            A file path, or an existing folder (e.g. a checkpoint directory).

        Returns
        -------
        The file written.

        Examples
        --------
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     file = GeneVocab(["ACTB", "GAPDH"]).save(folder)
        ...     GeneVocab.load(folder) == GeneVocab(["ACTB", "GAPDH"]), file.name
        (True, 'vocab.tsv')
        """
        file = Path(path)
        if file.is_dir():
            file = file / _FILE_NAME
        file.write_bytes(self.to_tsv().encode("utf-8"))
        return file

    @classmethod
    def load(cls, path: str | Path) -> GeneVocab:
        """Read a vocabulary written by :meth:`save` (plain text; nothing is unpickled).

        Parameters
        ----------
        path
            The ``vocab.tsv`` file, or the folder holding it.

        Returns
        -------
        The vocabulary.

        Raises
        ------
        FileNotFoundError
            If there is no such file.
        ValueError
            If the file is not a storm gene vocabulary (the message names the file and line).
        """
        file = Path(path)
        if file.is_dir():
            file = file / _FILE_NAME
        if not file.is_file():
            raise FileNotFoundError(f"no gene vocabulary at {file}; expected a {_FILE_NAME} written by GeneVocab.save.")
        try:
            lines = file.read_bytes().decode("utf-8").splitlines()
        except UnicodeDecodeError as error:
            raise ValueError(f"{file} is not UTF-8 text, so not a storm {_FILE_NAME}: {error}") from None
        if not lines or lines[0] != _TSV_HEADER:
            first = lines[0][:60] if lines else ""
            raise ValueError(
                f"{file} is not a storm gene vocabulary: its first line is {first!r}, expected "
                f"{_TSV_HEADER!r} (write it with GeneVocab.save)."
            )
        symbols, ids = [], []
        for number, line in enumerate(lines[1:], start=2):
            fields = line.split("\t")
            if len(fields) != 2:
                raise ValueError(
                    f"{file}, line {number}: expected 2 tab-separated fields (symbol, ensembl_id), found {len(fields)}."
                )
            symbols.append(fields[0])
            ids.append(fields[1] or None)
        try:
            return cls(symbols, ids)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{file} is not a valid gene vocabulary: {error}") from None
