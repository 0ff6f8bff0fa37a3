"""Every data command end to end through the installed `cmbert` script, as the README runs them: synth -> corpus build
-> tokenizer train -> corpus pack (whole, and split in two then merged), then bad input: one line on stderr, exit 2.
(`cmbert demo` has its own module, tests/test_demo.py; `cmbert data fetch` runs in `make setup` and
tests/test_readers.py.)"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import transformers

from pretrain.packed_dataset import PackedDataset


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, cmbert):
    """Runs the commands once for the module; returns the work folder and each command's stdout."""
    work = tmp_path_factory.mktemp("cli")
    out = {}

    def ok(name, *args):
        proc = cmbert(*args, cwd=work)
        assert proc.returncode == 0, f"cmbert {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}"
        out[name] = proc.stdout

    (work / "heldout_subjects.txt").write_text("")  # filled below from the tree: one patient's notes held out
    ok("synth", "data", "synth", "--out", "mimic", "--patients", 30, "--seed", 1)
    with gzip.open(work / "mimic" / "hosp" / "patients.csv.gz", "rt") as f:
        heldout = f.read().splitlines()[1].split(",")[0]
    (work / "heldout_subjects.txt").write_text(heldout + "\n")
    ok("build", "corpus", "build", "--mimic", "mimic", "--ontology", "icd9pcs", "--exclude-subjects",
       "heldout_subjects.txt", "--out", "corpus")
    ok("tokenizer", "tokenizer", "train", "--corpus", "corpus", "--out", "tokenizer", "--vocab-size", 1024)
    ok("pack", "corpus", "pack", "--corpus", "corpus", "--tokenizer", "tokenizer", "--out", "shards",
       "--max-seq-len", 512, "--weights", "mimic_discharge=2,icd9pcs=1", "--num-proc", 2)
    for i in range(2):
        ok(f"pack{i}", "corpus", "pack", "--corpus", "corpus", "--tokenizer", "tokenizer", "--out", "split",
           "--max-seq-len", 512, "--shard", f"{i}/2", "--num-proc", 1)
    ok("merge", "corpus", "pack", "--merge", "--out", "split")
    return work, out, int(heldout)


def test_synth_prints_its_summary_and_writes_the_tree(pipeline):
    work, out, _ = pipeline
    summary = json.loads(out["synth"])
    assert summary["patients"] == 30 and summary["discharge_notes"] > 0
    assert {p.name for p in (work / "mimic" / "hosp").iterdir()} >= {
        "patients.csv.gz", "admissions.csv.gz", "diagnoses_icd.csv.gz", "procedures_icd.csv.gz",
        "d_icd_diagnoses.csv.gz", "d_icd_procedures.csv.gz"}
    assert {p.name for p in (work / "mimic" / "note").iterdir()} == {"discharge.csv.gz", "radiology.csv.gz"}


def test_corpus_build_reports_every_source_and_excludes_held_out_patients(pipeline):
    work, out, heldout = pipeline
    report = json.loads((work / "corpus" / "report.json").read_text())
    assert set(report["sources"]) == {"mimic_discharge", "mimic_radiology", "icd9pcs"}
    for source, r in report["sources"].items():
        assert r["read"] == r["kept"] + sum(r["skipped"].values()), source
        assert f"{source}: read {r['read']:,}, kept {r['kept']:,}" in out["build"]
    assert report["excluded_subjects"] == 1
    assert report["sources"]["mimic_discharge"]["skipped"].get("excluded_subject", 0) > 0
    for part in (work / "corpus" / "docs").glob("mimic_*/*.jsonl.gz"):
        with gzip.open(part, "rt") as f:
            assert all(json.loads(line).get("subject_id") != heldout for line in f)


def test_tokenizer_train_saves_an_autotokenizer_folder_and_its_report(pipeline):
    work, out, _ = pipeline
    tokenizer = transformers.AutoTokenizer.from_pretrained(work / "tokenizer")
    assert len(tokenizer) % 64 == 0 and len(tokenizer) == 1024
    assert tokenizer.convert_ids_to_tokens(tokenizer("Dr. ___ saw him")["input_ids"]).count(" ___") == 1
    report = json.loads((work / "tokenizer" / "tokenizer_report.json").read_text())
    assert set(report["sources"]) <= {"mimic_discharge", "mimic_radiology", "icd9pcs"}
    assert "ours / general" in out["tokenizer"]


def test_corpus_pack_writes_shards_a_reader_can_train_on(pipeline):
    work, out, _ = pipeline
    manifest = json.loads((work / "shards" / "manifest.json").read_text())
    assert manifest["max_seq_len"] == 512
    weights = {name: source["weight"] for name, source in manifest["sources"].items()}
    assert weights["mimic_discharge"] == pytest.approx(2 * weights["icd9pcs"])  # radiology keeps its token share
    assert sum(weights.values()) == pytest.approx(1)
    assert manifest["totals"]["packing_efficiency"] > 0.9
    assert "real tokens" in out["pack"] and "manifest:" in out["pack"]
    data = PackedDataset(work / "shards", seed=0)
    row = data.row(0)
    assert len(row["input_ids"]) <= 512


def test_split_pack_merges_to_the_same_documents_and_tokens(pipeline):
    work, out, _ = pipeline
    whole = json.loads((work / "shards" / "manifest.json").read_text())
    merged = json.loads((work / "split" / "manifest.json").read_text())
    assert "run: cmbert corpus pack --merge" in out["pack0"]
    for key in ("documents", "pieces", "tokens"):
        assert merged["totals"][key] == whole["totals"][key], key
    tokens = sorted(Path(work / "split").glob("*/*.tokens.npy"))
    assert any("-of-002-" in p.name for p in tokens)
    assert sum(len(np.load(p, mmap_mode="r")) for p in tokens) == whole["totals"]["tokens"]


@pytest.mark.parametrize("args, message", [
    (["corpus", "build", "--mimic", "no-such-dir", "--out", "c"], "no-such-dir"),
    (["corpus", "pack", "--corpus", "corpus", "--out", "x"], "needs --tokenizer"),
    (["corpus", "pack", "--corpus", "corpus", "--tokenizer", "tokenizer", "--out", "x", "--weights", "nope=1"],
     "unknown source(s) nope"),
    (["corpus", "pack", "--merge", "--out", "corpus"], "no partial manifests"),
    (["tokenizer", "train", "--corpus", "mimic", "--out", "t2"], "mimic"),
    (["data", "synth", "--out", "m2", "--patients", "0"], "patients must be between 1"),
])
def test_bad_input_is_one_line_and_exit_2(pipeline, cmbert, args, message):
    work, _, _ = pipeline
    proc = cmbert(*args, cwd=work)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("cmbert: error: ") and message in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args", [["--max-seq-len", "2q"], ["--shard", "2/2"], ["--weights", "pubmed"]])
def test_bad_option_values_are_usage_errors(pipeline, cmbert, args):
    work, _, _ = pipeline
    proc = cmbert("corpus", "pack", "--corpus", "corpus", "--tokenizer", "tokenizer", "--out", "x", *args, cwd=work)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("cmbert corpus pack: error: argument ")
