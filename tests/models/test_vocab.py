from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from storm.models._vocab import GeneVocab, VocabAlignment, ensembl_to_symbol

REPO_ROOT = Path(__file__).resolve().parents[2]
TABLE = REPO_ROOT / "src" / "storm" / "models" / "data" / "gene_ids.tsv.gz"

# Ensembl IDs checked against the shipped table (10x GRCh38-2020-A).
ACTB, GAPDH, MT_CO1, CD74 = "ENSG00000075624", "ENSG00000111640", "ENSG00000198804", "ENSG00000019582"


@pytest.fixture
def vocab() -> GeneVocab:
    return GeneVocab(["ACTB", "GAPDH", "MT-CO1", "CD74"], [ACTB, None, "", f"{CD74}.12"])


# -- the shipped table -----------------------------------------------------------------------------------------------
def test_table_is_small_text_with_source_and_licence():
    assert TABLE.stat().st_size < 1_000_000
    with gzip.open(TABLE, "rt", encoding="utf-8") as handle:
        head = [next(handle) for _ in range(5)]
    assert "bowang-lab/BLEEP" in "".join(head) and "Apache-2.0" in "".join(head)
    assert head[-1] == "ensembl_id\tsymbol\n"


def test_ensembl_to_symbol_is_cached_and_correct():
    table = ensembl_to_symbol()
    assert table is ensembl_to_symbol()
    assert len(table) == 36601
    assert (table[ACTB], table[GAPDH], table[MT_CO1], table[CD74]) == ("ACTB", "GAPDH", "MT-CO1", "CD74")
    # one symbol, two IDs in GRCh38-2020-A
    assert table["ENSG00000015479"] == table["ENSG00000280987"] == "MATR3"
    with pytest.raises(TypeError):
        table["X"] = "Y"  # read-only


# -- construction ----------------------------------------------------------------------------------------------------
def test_properties(vocab):
    assert len(vocab) == 4
    assert vocab.symbols.tolist() == ["ACTB", "GAPDH", "MT-CO1", "CD74"]
    assert vocab.symbols.dtype.kind == "U"
    assert vocab.ensembl_ids.tolist() == [ACTB, None, None, CD74]  # "" is missing; version dropped
    with pytest.raises(ValueError, match="read-only"):
        vocab.symbols[0] = "X"


def test_duplicated_symbols_error_names_them():
    with pytest.raises(ValueError, match=r"2 duplicated.*ACTB/actb.*GAPDH/GAPDH"):
        GeneVocab(["ACTB", "GAPDH", "actb", "GAPDH", "CD74"])


@pytest.mark.parametrize(
    ("symbols", "ensembl_ids", "error", "match"),
    [
        ("ACTB", None, TypeError, "`symbols` must be a list"),
        ([], None, ValueError, "at least one gene"),
        (["ACTB", 5], None, TypeError, r"`symbols\[1\]` is 5"),
        (["ACTB", ""], None, ValueError, "empty or contains a tab"),
        (["AC\tTB"], None, ValueError, "empty or contains a tab"),
        (["ACTB", "GAPDH"], [ACTB], ValueError, "`ensembl_ids` has 1 entries but `symbols` has 2"),
        (["ACTB"], ["GAPDH"], ValueError, "not an Ensembl gene ID"),
        (["ACTB", "ACTB2"], [ACTB, f"{ACTB}.3"], ValueError, "gives ENSG00000075624 to both 'ACTB' and 'ACTB2'"),
    ],
)
def test_constructor_errors(symbols, ensembl_ids, error, match):
    with pytest.raises(error, match=match):
        GeneVocab(symbols, ensembl_ids)


def test_from_genes_union_sorted_and_mapped():
    first = ["GAPDH", f"{ACTB}.17", "Cd74", "ENSG99999999999.1"]
    second = ["actb", "CD74", "MT-CO1", "MT-CO1"]
    vocab = GeneVocab.from_genes(first, second)
    assert vocab.symbols.tolist() == ["ACTB", "CD74", "ENSG99999999999", "GAPDH", "MT-CO1"]
    assert vocab.ensembl_ids.tolist() == [ACTB, CD74, "ENSG99999999999", GAPDH, MT_CO1]
    assert GeneVocab.from_genes(second, first) == vocab  # order of the lists does not matter
    # genes in both lists (a repeat within one list counts once)
    assert GeneVocab.from_genes(first, second, min_count=2).symbols.tolist() == ["ACTB", "CD74"]


def test_from_genes_leaves_ambiguous_symbol_without_id():
    vocab = GeneVocab.from_genes(["MATR3", "ACTB"])
    assert vocab.ensembl_ids.tolist() == [ACTB, None]
    # both MATR3 IDs still reach the entry through the table
    assert vocab.align(["ENSG00000015479", "ENSG00000280987"]).indices.tolist() == [1, -1]


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((), {}, ValueError, "at least one list"),
        (("ACTB",), {}, TypeError, "must be a list of gene names"),
        ((["ACTB", None],), {}, ValueError, r"missing entry at position 1"),
        ((["ACTB"], ["GAPDH"]), {"min_count": 3}, ValueError, r"`min_count=3` must be an integer from 1 to .*\(2\)"),
        ((["ACTB"],), {"min_count": 0}, ValueError, "min_count=0"),
    ],
)
def test_from_genes_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        GeneVocab.from_genes(*args, **kwargs)


# -- lookup and alignment --------------------------------------------------------------------------------------------
def test_align_mixed_names(vocab):
    names = ["GAPDH", "actb", f"{MT_CO1}.2", f"{CD74}", "FOO", "ENSG99999999999.1", "Mt-Co1"]
    alignment = vocab.align(np.array(names))
    assert isinstance(alignment, VocabAlignment)
    assert alignment.indices.dtype == np.int64
    assert alignment.indices.tolist() == [1, 0, 2, 3, -1, -1, -1]
    assert alignment.known.tolist() == [True, True, True, True, False, False, False]
    assert alignment.unknown == ("FOO", "ENSG99999999999.1", "Mt-Co1")
    assert alignment.duplicated == ("Mt-Co1",)  # MT-CO1 already matched by its versioned ID
    assert alignment.n_known == 4
    assert alignment.fraction_known == pytest.approx(4 / 7)
    assert alignment.covered.tolist() == [True, True, True, True]
    assert vocab.align(["CD74"]).covered.tolist() == [False, False, False, True]


def test_align_duplicates_keep_first(vocab):
    alignment = vocab.align([f"{ACTB}.3", "ACTB", "actb", "GAPDH"])
    assert alignment.indices.tolist() == [0, -1, -1, 1]
    assert alignment.unknown == alignment.duplicated == ("ACTB", "actb")


def test_align_second_identifier_and_missing(vocab):
    alignment = vocab.align(["ACTB-1", "GAPDH", None], ensembl_ids=[ACTB, None, f"{CD74}.1"])
    assert alignment.indices.tolist() == [0, 1, 3]
    with pytest.raises(ValueError, match="`ensembl_ids` has 1 entries but `var_names` has 2"):
        vocab.align(["ACTB", "GAPDH"], ensembl_ids=[ACTB])
    with pytest.raises(TypeError, match="`var_names` must be a list"):
        vocab.align("ACTB")


def test_align_empty_and_frozen(vocab):
    alignment = vocab.align([])
    assert alignment.indices.shape == (0,) and alignment.fraction_known == 0.0
    alignment = vocab.align(["ACTB"])
    with pytest.raises(AttributeError):
        alignment.unknown = ()
    with pytest.raises(ValueError, match="read-only"):
        alignment.indices[0] = 2


def test_symbol_renamed_in_vocab_matches_through_table_id():
    # The vocabulary spells the gene differently from the data; its own Ensembl ID bridges the two.
    vocab = GeneVocab(["OLD_ACTB_NAME"], [ACTB])
    assert vocab.align(["ACTB", f"{ACTB}.9"]).indices.tolist() == [0, -1]


def test_index_and_contains(vocab):
    assert vocab.index("MT-CO1") == 2
    assert vocab.index("cd74") == 3
    assert vocab.index(f"{GAPDH}.15") == 1  # via the shipped table
    assert "actb" in vocab and f"{ACTB}.1" in vocab
    assert "FOO" not in vocab and 3 not in vocab
    with pytest.raises(KeyError, match="'FOO' is not in this 4-gene vocabulary"):
        vocab.index("FOO")


def test_equality_and_hash(vocab):
    same = GeneVocab(["ACTB", "GAPDH", "MT-CO1", "CD74"], [ACTB, None, None, CD74])
    assert same == vocab and hash(same) == hash(vocab)
    assert GeneVocab(["ACTB", "GAPDH", "MT-CO1", "CD74"]) != vocab  # IDs differ
    assert GeneVocab(["GAPDH", "ACTB", "MT-CO1", "CD74"], [None, ACTB, None, CD74]) != vocab  # order differs
    assert vocab != ["ACTB", "GAPDH", "MT-CO1", "CD74"]


# -- serialisation ---------------------------------------------------------------------------------------------------
def test_tsv_and_content_hash_are_canonical(vocab):
    text = f"symbol\tensembl_id\nACTB\t{ACTB}\nGAPDH\t\nMT-CO1\t\nCD74\t{CD74}\n"
    assert vocab.to_tsv() == text
    assert vocab.content_hash() == hashlib.sha256(text.encode()).hexdigest()
    assert vocab.content_hash() == "6ea1c537a14c22eecce562d0a846df3a06ece547ec19fbf5dfe4a274d77131b8"


def test_save_load_round_trip(vocab, tmp_path):
    file = vocab.save(tmp_path)
    assert file == tmp_path / "vocab.tsv"
    loaded = GeneVocab.load(tmp_path)
    assert loaded == vocab and loaded.content_hash() == vocab.content_hash()
    assert GeneVocab.load(file) == vocab
    other = vocab.save(tmp_path / "genes.tsv")
    assert other.read_bytes() == file.read_bytes()
    assert GeneVocab.load(other) == vocab


def test_dict_round_trip_through_json(vocab):
    data = json.loads(json.dumps(vocab.to_dict()))
    assert GeneVocab.from_dict(data) == vocab
    assert GeneVocab.from_dict({"symbols": ["ACTB"]}) == GeneVocab(["ACTB"])
    with pytest.raises(ValueError, match="version 2; this storm reads 'storm-gene-vocab' version 1"):
        GeneVocab.from_dict({**data, "version": 2})
    with pytest.raises(ValueError, match="'symbols' list"):
        GeneVocab.from_dict({"genes": ["ACTB"]})


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "first line is ''"),
        (b"gene\nACTB\n", "first line is 'gene'"),
        (b"symbol\tensembl_id\nACTB\n", "line 2: expected 2 tab-separated fields .* found 1"),
        (b"symbol\tensembl_id\nACTB\t\nGAPDH\tx\ty\n", "line 3: expected 2 tab-separated fields .* found 3"),
        (b"symbol\tensembl_id\nACTB\t\nactb\t\n", "not a valid gene vocabulary: .*duplicated.*ACTB/actb"),
        (b"symbol\tensembl_id\nACTB\tnot-an-id\n", "not a valid gene vocabulary: .*not an Ensembl gene ID"),
        (b"\x80\x81", "not UTF-8 text"),
    ],
)
def test_load_malformed_file_names_path(tmp_path, content, match):
    file = tmp_path / "vocab.tsv"
    file.write_bytes(content)
    with pytest.raises(ValueError, match=match) as error:
        GeneVocab.load(file)
    assert str(file) in str(error.value)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no gene vocabulary at {tmp_path / 'vocab.tsv'}"):
        GeneVocab.load(tmp_path)


# -- real data -------------------------------------------------------------------------------------------------------
def _her2st_symbols(her2st: Path, section: str) -> list[str]:
    with gzip.open(her2st / "data" / "ST-cnts" / f"{section}.tsv.gz", "rt", encoding="utf-8") as handle:
        return handle.readline().rstrip("\n").split("\t")[1:]  # first column: spot names


def _dlpfc_var(dlpfc: Path):
    import anndata as ad

    adata = ad.read_h5ad(dlpfc / "derived" / "dlpfc_151673.h5ad", backed="r")
    var = adata.var.copy()
    adata.file.close()
    return var


@pytest.mark.data
def test_dlpfc_aligns_to_her2st_vocab_by_symbol_and_by_ensembl_id(shared_data_path):
    her2st_genes = _her2st_symbols(shared_data_path("her2st"), "C2")
    var = _dlpfc_var(shared_data_path("dlpfc"))
    ids = var.index.astype(str).tolist()  # the h5ad's var_names are Ensembl IDs; symbols in var["symbol"]
    symbols = [s if isinstance(s, str) else i for s, i in zip(var["symbol"].astype(object), ids, strict=True)]
    assert len(her2st_genes) == 15706 and len(ids) == 5000

    vocab = GeneVocab.from_genes(her2st_genes)
    assert len(vocab) == 15706
    by_symbol, by_id = vocab.align(symbols), vocab.align(ids)
    # 3,942 of the 5,000 DLPFC HVGs (78.8%) are among the 15,706 genes detected in breast-cancer section C2; the
    # rest (NPY, SST, GFAP, MOBP, ...) are brain genes absent from it, not matching failures (checked below).
    assert by_symbol.n_known == by_id.n_known == 3942
    assert by_symbol.fraction_known == pytest.approx(0.7884)
    np.testing.assert_array_equal(by_symbol.indices, by_id.indices)  # Ensembl IDs alone find the same genes
    table = ensembl_to_symbol()
    her2st_folded = {g.casefold() for g in her2st_genes}
    missed = [gene_id for gene_id, known in zip(ids, by_id.known, strict=True) if not known]
    assert not [g for g in missed if table.get(g, g).casefold() in her2st_folded]

    # Against a vocabulary of every gene in the table, nearly all DLPFC genes align either way.
    full = GeneVocab.from_genes(list(table))
    assert len(full) == 36591  # 10 symbols have two IDs
    assert full.align(symbols).fraction_known == full.align(ids).fraction_known == pytest.approx(0.997)


@pytest.mark.data
def test_shipped_table_rebuilds_from_features(shared_data_path):
    features = shared_data_path("dlpfc", "aux", "features.tsv")
    spec = importlib.util.spec_from_file_location("make_gene_ids", REPO_ROOT / "scripts" / "make_gene_ids.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.build(features) == TABLE.read_bytes()
