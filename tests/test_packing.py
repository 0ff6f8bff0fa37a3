"""`pack_corpus` and `PackedDataset` on a tiny store written here: every document's tokens once and in order, rows
within bounds, best-fit, manifest, weights, seeded/resumable/rank-split reading, split runs + merge, num_proc."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config
from tokenizers import Tokenizer

import cmbert.modeling
from cmbert.core.io import ReadError
from cmbert.core.tokenizer_files import save_tokenizer
from cmbert.pretrain.packed_dataset import PackedDataset, Permutation, collate
from cmbert.pretrain.packing import (
    BestFitPacker,
    Piece,
    merge_manifests,
    mixture_weights,
    pack_corpus,
    parse_shard,
    split_document,
)
from cmbert.pretrain.tokenizer import train_tokenizer

MAX = 64
ROWS_PER_SHARD = 5
CLS, SEP = 1, 2
WORDS = ("patient chest pain dyspnea effusion bilateral ___ mg daily metoprolol admitted denies fever left right lobe "
         "opacity normal impression findings history hypertension diabetes cardiomegaly 12 3.5 , . : ( )").split()
# source -> part files -> (number of documents, words per document: min, max)
LAYOUT = {
    "mimic_discharge": [(12, 40, 260), (9, 40, 260)],  # most longer than a row: split into pieces
    "mimic_radiology": [(25, 8, 50)],
    "icd10cm": [(60, 2, 8)],
}


def _write_store(root: Path) -> dict[tuple[str, int, int], str]:
    """The store's files, with one bad JSON line and one empty text in radiology; returns the kept texts by
    (source, part, line)."""
    rnd = random.Random(0)
    texts = {}
    for source, parts in LAYOUT.items():
        folder = root / "docs" / source
        folder.mkdir(parents=True)
        for part, (n_docs, lo, hi) in enumerate(parts):
            lines = []
            for i in range(n_docs):
                if source == "mimic_radiology" and i == 3:
                    lines.append('{"id": "broken", "text": ')
                if source == "mimic_radiology" and i == 6:
                    lines.append(json.dumps({"id": "blank", "source": source, "text": ""}))
                text = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(lo, hi)))
                texts[(source, part, len(lines))] = text
                lines.append(json.dumps({"id": f"{source}-{part}-{i}", "source": source, "text": text}))
            with gzip.open(folder / f"part-{part:05d}.jsonl.gz", "wt", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
    (root / "report.json").write_text("{}\n")
    return texts


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("packing")
    texts = _write_store(root / "store")
    save_tokenizer(train_tokenizer(list(texts.values()), vocab_size=500), root / "tok")
    manifest = pack_corpus(root / "store", root / "tok", root / "out", max_seq_len=MAX, rows_per_shard=ROWS_PER_SHARD,
                           seed=7, progress=False)
    tokenizer = Tokenizer.from_file(str(root / "tok" / "tokenizer.json"))
    return {"root": root, "texts": texts, "manifest": manifest, "tokenizer": tokenizer}


def read_back(out: Path) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], dict]:
    """All rows straight from the shard files (memory-mapped), as (source, tokens, cu_seqlens), and every piece by
    (source, part, line, piece number)."""
    manifest = json.loads((out / "manifest.json").read_text())
    rows, pieces = [], {}
    for source, stats in manifest["sources"].items():
        for shard in stats["shards"]:
            stem = out / source / shard["name"]
            tokens, docs, row_docs, origin = (np.load(f"{stem}.{kind}.npy", mmap_mode="r")
                                              for kind in ("tokens", "docs", "rows", "origin"))
            assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16
            assert len(row_docs) - 1 == shard["rows"] and len(docs) - 1 == shard["documents"] == len(origin)
            for r in range(len(row_docs) - 1):
                bounds = np.asarray(docs[row_docs[r] : row_docs[r + 1] + 1])
                rows.append((source, np.asarray(tokens[bounds[0] : bounds[-1]]), bounds - bounds[0]))
            for d, (part, line, number) in enumerate(origin.tolist()):
                key = (source, part, line, number)
                assert key not in pieces, f"piece {key} written twice"
                pieces[key] = np.asarray(tokens[docs[d] : docs[d + 1]])
    return rows, pieces


def test_every_document_appears_once_in_order(corpus):
    _, pieces = read_back(corpus["root"] / "out")
    by_document = defaultdict(dict)
    for (source, part, line, number), tokens in pieces.items():
        by_document[(source, part, line)][number] = tokens
    assert set(by_document) == set(corpus["texts"])  # the bad line and the empty text are not there
    tokenizer = corpus["tokenizer"]
    for key, text in corpus["texts"].items():
        numbered = by_document[key]
        assert sorted(numbered) == list(range(len(numbered)))
        body = np.concatenate([numbered[n][1:-1] for n in range(len(numbered))])
        assert body.tolist() == tokenizer.encode(text, add_special_tokens=False).ids
        if len(numbered) == 1:
            assert numbered[0].tolist() == tokenizer.encode(text).ids  # exactly the tokenizer's [CLS] text [SEP]


def test_rows_pieces_and_boundaries(corpus):
    rows, pieces = read_back(corpus["root"] / "out")
    assert any(number > 0 for (_, _, _, number) in pieces)  # some documents were split
    for _, tokens, cu_seqlens in rows:
        assert 0 < len(tokens) <= MAX and cu_seqlens[0] == 0 and cu_seqlens[-1] == len(tokens)
        starts = set(cu_seqlens[:-1].tolist())
        ends = {int(e) - 1 for e in cu_seqlens[1:]}
        # [CLS] exactly at document starts and [SEP] exactly at ends: boundaries never cut into a document
        assert set(np.flatnonzero(tokens == CLS).tolist()) == starts
        assert set(np.flatnonzero(tokens == SEP).tolist()) == ends
    longest = Counter()
    for (source, part, line, number), tokens in pieces.items():
        assert tokens[0] == CLS and tokens[-1] == SEP and len(tokens) <= MAX
        longest[(source, part, line)] = max(longest[(source, part, line)], number)
    for (source, part, line, number), tokens in pieces.items():
        if number < longest[(source, part, line)]:
            assert len(tokens) == MAX  # every piece but a document's last fills a row


def test_manifest(corpus):
    root, manifest = corpus["root"], corpus["manifest"]
    assert manifest == json.loads((root / "out" / "manifest.json").read_text())
    assert manifest["max_seq_len"] == MAX and manifest["seed"] == 7 and manifest["format_version"] == 1
    assert manifest["tokenizer"]["sha256"] == hashlib.sha256((root / "tok" / "tokenizer.json").read_bytes()).hexdigest()
    assert manifest["store_report"] == str((root / "store" / "report.json").resolve())
    rows, pieces = read_back(root / "out")
    total_weight = 0.0
    for source, stats in manifest["sources"].items():
        mine = [t for s, t, _ in rows if s == source]
        documents = {k[1:3] for k in pieces if k[0] == source}
        assert stats["rows"] == len(mine) and stats["pieces"] == sum(k[0] == source for k in pieces)
        assert stats["documents"] == len(documents) == stats["kept"]
        assert stats["tokens"] == sum(map(len, mine))
        assert stats["packing_efficiency"] == pytest.approx(stats["tokens"] / (stats["rows"] * MAX))
        assert stats["weight"] == pytest.approx(stats["tokens"] / manifest["totals"]["tokens"])
        assert [s["rows"] for s in stats["shards"][:-1]] == [ROWS_PER_SHARD] * (len(stats["shards"]) - 1)
        assert 0 < stats["shards"][-1]["rows"] <= ROWS_PER_SHARD
        total_weight += stats["weight"]
    assert total_weight == pytest.approx(1.0)
    radiology = manifest["sources"]["mimic_radiology"]
    assert radiology["skipped"] == {"bad_json": 1, "empty": 1}
    assert radiology["read"] == radiology["kept"] + 2
    assert manifest["sources"]["mimic_discharge"]["split_documents"] > 0
    assert manifest["totals"]["packing_efficiency"] > 0.9


def _pack_lengths(lengths, max_seq_len: int, pool_tokens: int) -> list[list[int]]:
    rows = []
    packer = BestFitPacker(max_seq_len, pool_tokens, emit=lambda row: rows.append([len(p.tokens) for p in row]))
    for n in lengths:
        packer.add(Piece(np.zeros(n, np.uint16), (0, 0, 0)))
    packer.finish()
    return rows


def test_rows_take_the_longest_piece_then_what_fills_them_best():
    # 20 is a row by itself; 11 + 9 fills a row exactly; 10 then the exact pair (6, 4); the rest as it fits.
    assert _pack_lengths([9, 5, 20, 11, 10, 4, 6, 3], 20, pool_tokens=1000) == [[20], [11, 9], [10, 6, 4], [5, 3]]
    # Free 14 after 8: no single or pair fills it, so take the longest piece that leaves room for two more (5),
    # and the exact pair (5, 4) closes the row instead of 5 + 5 + 3.
    assert _pack_lengths([8, 5, 5, 4, 3], 22, pool_tokens=1000) == [[8, 5, 5, 4], [3]]
    # A full pool builds a row at once, so at most pool_tokens wait.
    assert _pack_lengths([9, 8, 7], 20, pool_tokens=15)[0] == [9, 8]


def test_packing_efficiency_on_a_clinical_length_mix():
    """Long notes split into full rows plus best-fit rows of the rest: >= 99 % real tokens (lengths only)."""
    rnd = np.random.default_rng(0)
    for max_seq_len in (1024, 8192):
        notes = np.clip(rnd.lognormal(np.log(2000), 0.45, 3000), 200, 20000).astype(int)
        reports = rnd.lognormal(np.log(245), 0.3, 6000).astype(int) + 2
        for lengths in (notes, reports):
            pieces = [len(p) for n in lengths for p in split_document(np.zeros(n, np.uint16), max_seq_len, CLS, SEP)]
            rows = _pack_lengths(pieces, max_seq_len, pool_tokens=1 << 20)
            assert sorted(n for row in rows for n in row) == sorted(pieces)
            assert max(map(sum, rows)) <= max_seq_len
            assert sum(pieces) / (len(rows) * max_seq_len) >= 0.99


def test_split_document_sizes():
    ids = np.arange(10, 10 + 2 * (MAX - 2) + 1, dtype=np.uint16)
    assert [len(p) for p in split_document(ids[: MAX - 2], MAX, CLS, SEP)] == [MAX]
    pieces = split_document(ids, MAX, CLS, SEP)
    assert [len(p) for p in pieces] == [MAX, MAX, 3]
    assert np.concatenate([p[1:-1] for p in pieces]).tolist() == ids.tolist()


def test_weights_must_name_known_sources(corpus):
    root = corpus["root"]
    with pytest.raises(ValueError, match="unknown source.*nope"):
        pack_corpus(root / "store", root / "tok", root / "never", max_seq_len=MAX, weights={"nope": 1.0})
    assert not (root / "never").exists()  # refused before any work
    with pytest.raises(ValueError, match="unknown source.*nope"):
        PackedDataset(root / "out", weights={"nope": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        mixture_weights({"a": 10, "b": 30}, {"a": -1.0})
    # named sources take the given weight, the others keep their token share, then all are normalised
    assert mixture_weights({"a": 10, "b": 30}, {"a": 0.75}) == {"a": 0.5, "b": 0.5}


def test_one_epoch_reads_every_row_once_and_weights_set_the_token_mix(corpus):
    out = corpus["root"] / "out"
    dataset = PackedDataset(out)
    assert dataset.seed == 7  # the manifest's
    epoch = len(dataset)
    sources, rows = dataset.locate(np.arange(epoch))
    assert len(set(zip(sources.tolist(), rows.tolist(), strict=True))) == epoch == dataset.manifest["totals"]["rows"]

    weights = {"icd10cm": 3.0, "mimic_discharge": 1.0, "mimic_radiology": 0.0}
    heavy = PackedDataset(out, weights=weights)
    assert heavy.sources == ["icd10cm", "mimic_discharge"]
    sources, rows = heavy.locate(np.arange(4 * epoch))
    drawn = Counter(sources.tolist())
    assert [drawn[s] for s in range(2)] == (4 * heavy.epoch_counts).tolist()
    stats = heavy.manifest["sources"]
    tokens = {name: drawn[s] * stats[name]["tokens"] / stats[name]["rows"] for s, name in enumerate(heavy.sources)}
    assert tokens["icd10cm"] / sum(tokens.values()) == pytest.approx(0.75, abs=0.02)
    icd = heavy.sources.index("icd10cm")
    assert set(rows[sources == icd].tolist()) == set(range(heavy.source_rows[icd]))  # up-weighted: its rows repeat


def test_order_is_seeded_and_resumable(corpus):
    out = corpus["root"] / "out"
    first = PackedDataset(out, seed=1)
    order = [(r["source"], r["input_ids"].tolist()) for r in first.iter_from(0, stop=3 * len(first))]
    again = [(r["source"], r["input_ids"].tolist()) for r in PackedDataset(out, seed=1).iter_from(0, stop=len(order))]
    other = [(r["source"], r["input_ids"].tolist()) for r in PackedDataset(out, seed=2).iter_from(0, stop=len(order))]
    assert order == again and order != other
    for k in (0, 1, 17, len(first) + 3):
        resumed = [(r["source"], r["input_ids"].tolist()) for r in first.iter_from(k, stop=len(order))]
        assert resumed == order[k:]
    assert first.row(17)["input_ids"].tolist() == order[17][1]


def test_rank_slices_are_disjoint_and_cover_everything(corpus):
    out = corpus["root"] / "out"
    full = PackedDataset(out)
    stop = 2 * len(full) + 1
    seen = []
    for rank in range(3):
        dataset = PackedDataset(out, rank=rank, world_size=3)
        mine = list(range(5 + rank, stop, 3))
        got = [r["input_ids"].tolist() for r in dataset.iter_from(5, stop=stop, block=4)]
        assert got == [full.row(i)["input_ids"].tolist() for i in mine]
        seen += mine
    assert sorted(seen) == list(range(5, stop))


def test_permutation_is_a_bijection():
    for n in (1, 2, 5, 64, 1000, 4099):
        values = Permutation(n, (3, 1)).__call__(np.arange(n))
        assert sorted(values.tolist()) == list(range(n))
    assert Permutation(1000, (1,))(np.arange(1000)).tolist() != Permutation(1000, (2,))(np.arange(1000)).tolist()


def test_collate_builds_cu_seqlens_the_encoder_accepts(corpus):
    dataset = PackedDataset(corpus["root"] / "out")
    rows = [dataset.row(i) for i in range(4)]
    batch = collate(rows)
    assert batch["input_ids"].dtype == torch.int64 and batch["cu_seqlens"].dtype == torch.int32
    assert batch["input_ids"].tolist() == np.concatenate([r["input_ids"] for r in rows]).tolist()
    lengths = [int(n) for r in rows for n in np.diff(r["cu_seqlens"])]
    assert batch["cu_seqlens"].tolist() == np.concatenate([[0], np.cumsum(lengths)]).tolist()
    assert batch["max_seqlen"] == max(lengths)
    model = cmbert.modeling.ModernBertModel(tiny_config(vocab_size=512, max_position_embeddings=MAX)).eval()
    with torch.no_grad():
        hidden = model(input_ids=batch["input_ids"], cu_seqlens=batch["cu_seqlens"], max_seqlen=batch["max_seqlen"])
    assert hidden.last_hidden_state.shape[0] == len(batch["input_ids"])


def _everything(out: Path) -> set:
    _, pieces = read_back(out)
    return {(key, tokens.tobytes()) for key, tokens in pieces.items()}


def test_split_run_and_merge_equal_a_single_run(corpus):
    root = corpus["root"]
    for i in range(3):
        partial = pack_corpus(root / "store", root / "tok", root / "split", max_seq_len=MAX, shard=(i, 3),
                              rows_per_shard=ROWS_PER_SHARD, seed=7, progress=False)
        assert (root / "split" / f"manifest.shard-{i}-of-3.json").is_file() and partial["shard"]["count"] == 3
        if i == 1:
            with pytest.raises(ReadError, match="missing for shard.*2 of 3"):
                merge_manifests(root / "split")
    merged = merge_manifests(root / "split")
    single = corpus["manifest"]
    assert sorted(merged["shard"]["parts"]) == sorted(single["shard"]["parts"])
    for key in ("documents", "pieces", "tokens"):
        assert merged["totals"][key] == single["totals"][key]
    for source, stats in single["sources"].items():
        assert merged["sources"][source]["skipped"] == stats["skipped"]
        assert merged["sources"][source]["weight"] == pytest.approx(stats["weight"])
    assert _everything(root / "split") == _everything(root / "out")
    assert len(PackedDataset(root / "split")) == merged["totals"]["rows"]


def test_parse_shard():
    assert parse_shard("3/8") == (3, 8) and parse_shard("0/1") == (0, 1)
    for bad in ("8/8", "1", "-1/2", "a/b"):
        with pytest.raises(ValueError, match="I/N"):
            parse_shard(bad)


def test_two_processes_write_the_same_bytes(corpus):
    root = corpus["root"]
    pack_corpus(root / "store", root / "tok", root / "two", max_seq_len=MAX, num_proc=2,
                rows_per_shard=ROWS_PER_SHARD, seed=7, progress=False)
    one = {p.relative_to(root / "out"): p.read_bytes() for p in sorted((root / "out").rglob("*")) if p.is_file()}
    two = {p.relative_to(root / "two"): p.read_bytes() for p in sorted((root / "two").rglob("*")) if p.is_file()}
    assert one.keys() == two.keys() and len(one) > 10
    assert one == two


def test_corrupt_part_file_is_a_one_line_error(tmp_path, corpus):
    store = tmp_path / "store"
    (store / "docs" / "pubmed").mkdir(parents=True)
    whole = gzip.compress(("\n".join(json.dumps({"id": str(i), "source": "pubmed", "text": "chest pain " * 50})
                                     for i in range(200)) + "\n").encode())
    (store / "docs" / "pubmed" / "part-00000.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ReadError, match=r"part-00000\.jsonl\.gz: corrupt gzip"):
        pack_corpus(store, corpus["root"] / "tok", tmp_path / "out", max_seq_len=MAX, progress=False)
