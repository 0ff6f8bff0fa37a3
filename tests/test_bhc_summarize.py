"""BHC summarisation: the clinical sentence splitter, the ROUGE wrapper, BERTScore against the `bert_score` package,
length control, the greedy oracle, and `cmbert bhc summarize|evaluate` end to end on synthetic MIMIC notes (prepared
by `cmbert bhc prepare`'s builder) with a tiny BPE and a tiny random encoder: the trained scorer beats lead-k, the
oracle beats everything, reruns reuse the scorer, and no note text reaches stdout, stderr or a report."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import save_tiny_encoder

from cmbert import cli
from cmbert.finetune.bhc.metrics import (
    BertScorer,
    RougeTokenizer,
    bootstrap_ci,
    ngram_counts,
    ngram_rouge,
    rouge_scores,
)
from cmbert.finetune.bhc.pairs import Pair, read_split
from cmbert.finetune.bhc.selection import LengthRule, lead, oracle, select_to_budget
from cmbert.finetune.bhc.sentences import assemble, candidate_sentences, lines_for_lsum, split_units, unit_text
from cmbert.finetune.bhc.summarize import summarize

pytestmark = pytest.mark.usefixtures("one_thread")

NOTE = """Name:  ___                 Unit No:   ___

Chief Complaint:
Chest pain

History of Present Illness:
Mr. ___ is a 67 year old man with CAD who presented with chest pain. He was seen by Dr. ___ on
arrival. Pt. took ASA 325 mg b.i.d. at home, i.e. twice daily. Troponin was 1.5 vs. 0.4 before. No. 2
lead showed ST depression.

Physical Exam:
VS: T 98.1 BP 130/80 HR 72
GENERAL: NAD

Pertinent Results:
___ 06:30AM BLOOD WBC-7.5 RBC-4.2 Hgb-13.1
___

Discharge Diagnosis:
- NSTEMI
- Hypertension
1. Chronic kidney disease
"""
TARGET = """Mr. ___ is a 67 year old man with CAD admitted with NSTEMI.
# NSTEMI: Troponin peaked at 1.5. Started heparin and aspirin. Cardiac catheterization showed a 90% LAD lesion.
# Hypertension: continued home medications."""


def test_splitter_hand_cases():
    units = split_units(NOTE)
    texts = [unit_text(NOTE, u) for u in units]
    for u in units:  # offsets point into the text, trimmed
        assert NOTE[u.start:u.end].strip() == NOTE[u.start:u.end] and NOTE[u.start:u.end]
    assert "Mr. ___ is a 67 year old man with CAD who presented with chest pain." in texts
    assert "He was seen by Dr. ___ on arrival." in texts  # Dr. kept, hard-wrapped line joined
    assert "Pt. took ASA 325 mg b.i.d. at home, i.e. twice daily." in texts
    assert "Troponin was 1.5 vs. 0.4 before." in texts  # decimal and vs.
    assert "No. 2 lead showed ST depression." in texts
    heads = [unit_text(NOTE, u) for u in units if u.kind == "heading"]
    assert heads[:4] == ["Name:", "Chief Complaint:", "History of Present Illness:", "Physical Exam:"]
    assert "VS:" in heads and "GENERAL:" in heads  # inline labels
    items = [unit_text(NOTE, u) for u in units if u.kind == "item"]
    assert items == ["NSTEMI", "Hypertension", "Chronic kidney disease"]  # markers left out of the span
    sections = {unit_text(NOTE, u): u.section for u in units}
    assert sections["T 98.1 BP 130/80 HR 72"] == "physical exam"  # VS: is a sub-heading, not a section
    assert sections["NSTEMI"] == "discharge diagnosis"
    candidates = [unit_text(NOTE, u) for u in candidate_sentences(NOTE)]
    assert "___" not in candidates and not any(t.endswith(":") and t in heads for t in candidates)
    assert "___ 06:30AM BLOOD WBC-7.5 RBC-4.2 Hgb-13.1" in candidates  # a lab line is content
    # Sentence ends: ?, ! and a closing quote; a capital after a dotted abbreviation or an initial does not end one.
    text = 'Any pain? No. She said "fine." Then left! Given q.d. Lasix by J. Smith.'
    assert [unit_text(text, u) for u in split_units(text)] == [
        "Any pain?", "No. She said \"fine.\"", "Then left!", "Given q.d. Lasix by J. Smith."]
    # A summary is re-assembled from offsets, in source order, one unit per line.
    chosen = [candidate_sentences(NOTE)[i] for i in (3, 0)]
    assert assemble(NOTE, chosen).splitlines() == [unit_text(NOTE, u) for u in sorted(chosen, key=lambda u: u.start)]
    assert split_units("") == [] and candidate_sentences("___\n___.\nHeading:\n") == []


def test_rouge_wrapper():
    from rouge_score import rouge_scorer

    same = rouge_scores([TARGET], [TARGET])[0]
    assert all(same[k]["f"] == pytest.approx(1.0) for k in same)
    assert all(v["f"] == 0.0 for v in rouge_scores(["alpha beta gamma"], ["delta epsilon"])[0].values())
    # The cached-stem tokenizer and the fast LCS give rouge-score's own use_stemmer=True numbers (Lsum on one unit
    # per line, as rouge_scores lays texts out).
    summary = assemble(NOTE, candidate_sentences(NOTE)[::2])
    reference = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True).score(TARGET, NOTE)
    for target, prediction in ((TARGET, NOTE), (TARGET, summary), (NOTE, TARGET), (TARGET, "")):
        ours = rouge_scores([target], [prediction])[0]
        theirs = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True).score(target, prediction)
        theirs.update(rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True).score(lines_for_lsum(target),
                                                                                     lines_for_lsum(prediction)))
        for kind, score in theirs.items():
            assert (ours[kind]["precision"], ours[kind]["recall"], ours[kind]["f"]) == pytest.approx(
                (score.precision, score.recall, score.fmeasure), abs=1e-12), kind
    # The oracle's fast ROUGE-N equals rouge-score's on the same tokens.
    tok = RougeTokenizer().tokenize
    for n, kind in ((1, "rouge1"), (2, "rouge2")):
        p, r, f = ngram_rouge(ngram_counts(tok(NOTE), n), ngram_counts(tok(TARGET), n))
        assert (p, r, f) == pytest.approx((reference[kind].precision, reference[kind].recall,
                                           reference[kind].fmeasure), abs=1e-12)
    lo, hi = bootstrap_ci([0.1, 0.2, 0.3, 0.4], seed=0)
    assert lo <= 0.25 <= hi and bootstrap_ci([0.5]) is None and bootstrap_ci([0.1, 0.2], seed=1) == \
        bootstrap_ci([0.1, 0.2], seed=1)


def test_rouge_and_the_oracle_in_worker_processes_give_the_same_numbers(monkeypatch):
    from cmbert.finetune.bhc import metrics
    from cmbert.finetune.bhc.selection import oracle

    monkeypatch.setattr(metrics, "MIN_ITEMS_PER_WORKER", 2)  # 8 pairs over 2 spawned processes
    units = candidate_sentences(NOTE)
    predictions = [assemble(NOTE, units[i::3]) for i in range(3)] + [NOTE, TARGET, "", unit_text(NOTE, units[0]), TARGET[:40]]
    targets = [TARGET] * 4 + [NOTE] * 4
    assert metrics.rouge_scores(targets, predictions, workers=2) == metrics.rouge_scores(targets, predictions)
    pairs = [Pair(f"n{i}", NOTE, target, units, [unit_text(NOTE, u) for u in units], len(NOTE.split()),
                  len(target.split())) for i, target in enumerate((TARGET, NOTE, TARGET[:200], TARGET[100:]))]
    assert metrics.parallel_map(oracle, pairs, workers=2) == [oracle(p) for p in pairs]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny BPE (on made-up clinical text) and a tiny random ModernBERT folder with a 128-token context."""
    from cmbert.core.tokenizer_files import save_tokenizer
    from cmbert.pretrain.tokenizer import train_tokenizer

    work = tmp_path_factory.mktemp("bhc-tiny")
    save_tokenizer(train_tokenizer([NOTE, TARGET] * 20, vocab_size=384, model_max_length=128), work / "tokenizer")
    return save_tiny_encoder(work / "encoder", work / "tokenizer")


def test_bertscore_equals_bert_score_package(tiny):
    import bert_score

    cands = ["Troponin peaked at 1.5 and heparin was started.", "Hypertension: continued home medications.",
             "He was seen by Dr. ___ on arrival with chest pain."]
    refs = ["Troponin was 1.5 on admission.", "Continued home antihypertensives.",
            "Mr. ___ is a 67 year old man with CAD admitted with NSTEMI."]
    # batch_size=1: bert_score floors a similarity at 0 at padded positions of a batch (see metrics' docstring).
    for layers in (2, 1):
        for idf in (False, True):
            p, r, f = bert_score.score(cands, refs, model_type=str(tiny), num_layers=layers, lang="en", idf=idf,
                                       batch_size=1)
            scorer = BertScorer(tiny, layer=layers)
            ours = np.asarray((scorer.with_idf(refs) if idf else scorer).score(cands, refs))
            np.testing.assert_allclose(ours, np.stack([p.numpy(), r.numpy(), f.numpy()], 1), atol=1e-4)
    scorer = BertScorer(tiny)
    assert scorer.layer == 2
    long_text = " ".join([TARGET] * 8)  # several 128-token chunks
    (same,) = scorer.score([long_text], [long_text])
    assert same == pytest.approx((1.0, 1.0, 1.0), abs=1e-5)
    assert scorer.score(["", "x"], ["text", ""]) == [(0.0, 0.0, 0.0), (0.0, 0.0, 0.0)]
    with pytest.raises(ValueError, match="layer must be in 1..2"):
        BertScorer(tiny, layer=3)


def test_length_control_and_selection():
    words = [10, 5, 20, 8, 12]
    assert select_to_budget([5, 4, 3, 2, 1], words, budget=15) == [0, 1]
    # The sentence that crosses the budget is taken only if it lands closer, and selection stops there: 10 + 20 =
    # 30 is further from 18 than 10 is (shorter, lower-scored sentences are not used to fill the gap).
    assert select_to_budget([5, 1, 4, 0, 0], words, budget=18) == [0]
    assert select_to_budget([5, 1, 4, 0, 0], words, budget=22) == [0, 2]
    assert select_to_budget([0, 0, 9, 0, 0], words, budget=3) == [2]  # the first sentence is always taken
    texts = ["a", "a", "b", "c", "d"]
    assert select_to_budget([5, 4, 3, 2, 1], words, budget=40, texts=texts) == [0, 2, 3]  # exact repeat skipped
    sim = np.eye(5)
    sim[0, 3] = sim[3, 0] = 0.95
    assert 3 not in select_to_budget([5, 4, 3, 2, 1], words, 60, similarity=sim, max_similarity=0.9)
    with pytest.raises(ValueError, match="--length"):
        LengthRule.fixed(0)


def write_split(folder: Path, split: str, records: list) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / f"{split}.jsonl.gz", "wt", encoding="utf-8") as file:
        for r in records:
            file.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


def test_fixture_dataset_skips_errors_and_oracle(tmp_path):
    data = tmp_path / "data"
    good = {"note_id": "1-DS-1", "subject_id": 1, "hadm_id": 11, "source": NOTE, "target": TARGET}
    write_split(data, "train", [good, {**good, "note_id": "2-DS-1"}, {**good, "note_id": "3-DS-1", "target": " "},
                                {**good, "note_id": "4-DS-1", "source": "___\nHeading:\n"}, "not json",
                                {**good, "note_id": "1-DS-1"}])
    with pytest.raises(FileNotFoundError, match="report.json"):
        read_split(data, "train")
    (data / "report.json").write_text("{}")
    skipped = Counter()
    pairs = read_split(data, "train", skipped)
    assert [p.note_id for p in pairs] == ["1-DS-1", "2-DS-1"]
    assert skipped == {"empty_target": 1, "no_source_sentences": 1, "malformed_record": 1, "duplicate_note_id": 1}
    with pytest.raises(FileNotFoundError, match="test.jsonl.gz"):
        read_split(data, "test")
    pair = pairs[0]
    chosen = oracle(pair)
    assert chosen == sorted(chosen) and chosen
    tok = RougeTokenizer().tokenize

    def r12(idx):
        text = " ".join(pair.texts[i] for i in idx)
        return sum(ngram_rouge(ngram_counts(tok(text), n), ngram_counts(pair.target_tokens, n))[2] for n in (1, 2))

    assert r12(chosen) >= r12(lead(pair, 40)) and r12(chosen) >= r12([0])
    rule = LengthRule.fit(pairs)
    assert rule.budget(pair) == int(np.clip(round(rule.ratio * pair.source_words), rule.min_words, rule.max_words))
    with pytest.raises(ValueError, match="unknown method"):
        summarize(data, tmp_path / "run", "abstractive")
    with pytest.raises(ValueError, match="needs --model"):
        summarize(data, tmp_path / "run", "scorer")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory, tiny) -> Path:
    """Synthetic MIMIC notes of 60 patients -> `cmbert bhc prepare`'s builder (a quarter of patients in test)."""
    from cmbert.data.synth import synthesize_mimic
    from cmbert.finetune.bhc.prepare import prepare_bhc_dataset

    work = tmp_path_factory.mktemp("bhc-synth")
    synthesize_mimic(work / "mimic", patients=60, seed=0)
    prepare_bhc_dataset(work / "mimic", work / "data", test_size=0.25, val_size=0.15, verbose=False)
    return work


def _note_fragments(data: Path) -> list[str]:
    """Distinctive sentences of the notes: none may appear in logs or reports."""
    fragments = []
    for split in ("train", "validation", "test"):
        for pair in read_split(data, split):
            fragments += [t for t in pair.texts if len(t) > 40][:3]
            fragments += [line for line in pair.target.splitlines() if len(line) > 40][:2]
    return fragments


def test_summarize_and_evaluate_end_to_end(synthetic, tiny, capsys):
    data, runs = synthetic / "data", synthetic / "runs"
    cache = synthetic / "cache"
    for method in ("scorer", "centrality", "lead"):
        cli.main(["bhc", "summarize", "--data", str(data), "--model", str(tiny), "--method", method,
                  "--out", str(runs / method), "--cache", str(cache), "--splits", "test"])
    scorer_file = runs / "scorer" / "scorer.pt"
    stamp = scorer_file.stat().st_mtime_ns
    cli.main(["bhc", "summarize", "--data", str(data), "--model", str(tiny), "--method", "scorer",
              "--out", str(runs / "scorer"), "--cache", str(cache), "--splits", "validation", "test"])
    assert scorer_file.stat().st_mtime_ns == stamp  # reused, not retrained
    run_report = json.loads((runs / "scorer" / "report.json").read_text())
    assert set(run_report["splits"]) == {"validation", "test"}
    assert run_report["scorer"]["label"] in ("precision", "f") and len(run_report["scorer"]["selection"]) == 10
    rows = [json.loads(line) for line in gzip.open(runs / "scorer" / "summaries" / "test.jsonl.gz", "rt")]
    test_pairs = {p.note_id: p for p in read_split(data, "test")}
    assert len(test_pairs) >= 10 and {r["note_id"] for r in rows} == set(test_pairs)
    for row in rows:
        # Length control: selection stops where the next sentence would land further from the budget than stopping
        # does, and a sentence that crosses it lands nearer than stopping would: either way the summary is within
        # half a sentence of the budget (half the note's longest), unless a single first sentence overshoots.
        pair = test_pairs[row["note_id"]]
        words = [pair.unit_words()[i] for i in row["sentences"]]
        assert row["summary"].splitlines() == [pair.texts[i] for i in row["sentences"]]
        assert abs(sum(words) - row["budget"]) <= max(pair.unit_words()) / 2 or len(words) == 1

    cli.main(["bhc", "evaluate", "--data", str(data), "--split", "test", "--summaries", str(runs / "scorer"),
              str(runs / "centrality"), str(runs / "lead"), "--out", str(synthetic / "eval"), "--bootstrap", "200"])
    report = json.loads((synthetic / "eval" / "report.json").read_text())
    systems = report["systems"]
    assert set(systems) == {"scorer", "centrality", "lead", "oracle"}  # lead given: only the oracle is added
    assert report["similarity_model"] == str(tiny)  # the runs' encoder by default
    score = {name: {k: s[k]["mean"] for k in ("rouge1", "rouge2", "rougeL", "rougeLsum")} for name, s in
             systems.items()}
    for name in ("scorer", "centrality", "lead"):
        assert score["oracle"]["rouge1"] > score[name]["rouge1"] and score["oracle"]["rouge2"] > score[name]["rouge2"]
    for name in ("scorer", "centrality"):  # the summarisers beat lead-k (the data and the tiny encoder are seeded)
        assert score[name]["rouge1"] > score["lead"]["rouge1"] and score[name]["rouge2"] > score["lead"]["rouge2"]
    assert all(0 < s["bertscore"]["f1"]["mean"] <= 1 for s in systems.values())
    assert (synthetic / "eval" / "report.md").is_file()
    per_note = [json.loads(line) for line in gzip.open(synthetic / "eval" / "per_note.jsonl.gz", "rt")]
    assert len(per_note) == 4 * len(test_pairs) and not any("summary" in row for row in per_note)

    # Privacy: no note or BHC text in what was printed or in the reports.
    out = capsys.readouterr()
    printed = out.out + out.err
    assert "ROUGE-1" in out.out and re.search(r"\| scorer \| scorer \| \d", out.out)
    reports = printed + "".join((runs / m / "report.json").read_text() for m in ("scorer", "centrality", "lead"))
    reports += (synthetic / "eval" / "report.json").read_text() + (runs / "scorer" / "scorer.json").read_text()
    fragments = _note_fragments(data)
    assert fragments and not [f for f in fragments if f in reports]
    print(f"\nROUGE-1/2 F on {len(test_pairs)} synthetic test notes: " + ", ".join(
        f"{name} {100 * v['rouge1']:.1f}/{100 * v['rouge2']:.1f}" for name, v in score.items()))


def test_evaluate_refuses_runs_of_another_dataset(synthetic, tiny, tmp_path):
    from cmbert.finetune.bhc.evaluate import evaluate

    data = synthetic / "data"
    other = tmp_path / "other"
    other.mkdir()
    for name in ("train", "validation", "test", "report"):
        suffix = ".json" if name == "report" else ".jsonl.gz"
        (other / f"{name}{suffix}").write_bytes((data / f"{name}{suffix}").read_bytes())
    pairs = [json.loads(line) for line in gzip.open(data / "test.jsonl.gz", "rt")]
    write_split(other, "test", pairs[1:])  # one note fewer: another version of the dataset
    summarize(other, tmp_path / "lead", "lead", splits=("test",), progress=False)
    with pytest.raises(ValueError, match="another dataset"):
        evaluate(data, [tmp_path / "lead"], tmp_path / "eval", progress=False)
    with pytest.raises(ValueError, match="no summaries of the validation split"):
        evaluate(other, [tmp_path / "lead"], tmp_path / "eval", split="validation", progress=False)
    with pytest.raises(ValueError, match="holds a lead run"):
        summarize(other, tmp_path / "lead", "centrality", model=tiny, progress=False)
