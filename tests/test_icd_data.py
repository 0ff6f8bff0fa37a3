"""The ICD coding dataset builder (finetune/icd/data.py): Edin et al.'s rules checked against an independent count of
the raw tables, the patient-level stratified split, the folder format, and the counted skips of a hand-made tree."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from cmbert.core.notes import edin_preprocess, truncate_words
from cmbert.data.icd_dataset import SPLITS, label_matrix, load_labels, read_split
from cmbert.data.synth import synthesize_mimic
from cmbert.finetune.icd.data import prepare_icd_dataset

# 300 synthetic patients: ~280 ICD-10 notes (138 patients) and ~400 ICD-9 notes (184 patients); min_count 10 keeps
# ~80-100 codes of ~180.
PATIENTS = 300
MIN_COUNT = 10


def build(mimic: Path, out: Path, version: int, **options) -> dict:
    return prepare_icd_dataset(mimic, out, version, verbose=False, **options)


def read_all(dataset: Path) -> dict[str, list]:
    return {split: list(read_split(dataset, split)) for split in SPLITS}


def read_csv_gz(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))


def edin_dotted(code: str, kind: str, version: int) -> str:
    """Edin's reformat_icd9/10, written out again here (minus the trailing dot on 3-character ICD-10-CM codes)."""
    if version == 10:
        return code if kind == "procedure" or len(code) <= 3 else f"{code[:3]}.{code[3:]}"
    head = 2 if kind == "procedure" else 4 if code.startswith("E") else 3
    return code if len(code) <= head else f"{code[:head]}.{code[head:]}"


def expected_counts(mimic: Path, version: int) -> Counter:
    """Notes per dotted code: each discharge note of an admission coded in `version` counts its admission's codes."""
    codes = defaultdict(set)
    for kind, table in (("diagnosis", "diagnoses_icd"), ("procedure", "procedures_icd")):
        for row in read_csv_gz(mimic / "hosp" / f"{table}.csv.gz"):
            if int(row["icd_version"]) == version:
                codes[int(row["hadm_id"])].add(edin_dotted(row["icd_code"], kind, version))
    counts = Counter()
    for note in read_csv_gz(mimic / "note" / "discharge.csv.gz"):
        if note["hadm_id"] and int(note["hadm_id"]) in codes:
            counts.update(codes[int(note["hadm_id"])])
    return counts


@pytest.fixture(scope="module")
def mimic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mimic")
    synthesize_mimic(root, PATIENTS, seed=0)
    return root


@pytest.fixture(scope="module")
def icd10(mimic, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("icd") / "icd10"
    build(mimic, out, 10, min_count=MIN_COUNT)
    return out


@pytest.fixture(scope="module")
def icd9(mimic, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("icd") / "icd9"
    build(mimic, out, 9, min_count=MIN_COUNT, preprocess="edin", max_words=500)
    return out


# ------------------------------------------------------------------------------------------------ text preprocessing


@pytest.mark.parametrize(("raw", "clean"), [
    ("Pt. is 65 y/o; BP 120/80 mmHg.", "pt is y o bp mmhg"),
    ("HbA1c 7.2% on 1st visit", "hba1c on 1st visit"),  # digits inside words stay; "7.2" splits into two numbers
    ("Name:  ___\n\nUnit No:   ___", "name unit no"),
    ("a 1 2 3 b", "a b"),
    ("12 units given at 3", "12 units given at 3"),  # a number at the very start or end survives, as in Edin
    ("Café résumé", "caf r sum"),  # non-ASCII letters are not [A-Za-z0-9]
    ("*** --- ***", ""),
])
def test_edin_preprocess(raw, clean):
    assert edin_preprocess(raw) == clean


def test_truncate_words_keeps_layout():
    assert truncate_words("one two\n\nthree  four", 3) == "one two\n\nthree"
    assert truncate_words("one two", 5) == "one two"
    assert truncate_words("  one two", None) == "  one two"
    assert truncate_words(edin_preprocess("A b, c; d"), 2) == "a b"


# ---------------------------------------------------------------------------------------------- synthetic MIMIC-IV


def test_labels_follow_min_count_and_dotting(mimic, icd10):
    expected = expected_counts(mimic, 10)
    labels = load_labels(icd10)
    meta = json.loads((icd10 / "labels.json").read_text())
    assert (meta["version"], meta["min_count"], meta["top_k"], meta["preprocess"]) == (10, MIN_COUNT, None, "none")
    assert labels.version == 10
    # Exactly the codes on >= min_count notes, with their note counts, most frequent first.
    assert set(labels.codes) == {code for code, n in expected.items() if n >= MIN_COUNT}
    assert labels.counts == {code: expected[code] for code in labels.codes}
    assert labels.codes == sorted(labels.codes, key=lambda code: (-labels.counts[code], code))
    for entry in meta["codes"]:
        assert entry["code"] == edin_dotted(entry["raw"], entry["kind"], 10)
        assert entry["title"]
    assert {"diagnosis", "procedure"} == set(labels.kinds.values())
    report = json.loads((icd10 / "report.json").read_text())
    kept = {kind: report["codes"][kind]["after_min_count"] for kind in ("diagnosis", "procedure")}
    assert kept == dict(Counter(labels.kinds.values()))
    assert sum(report["codes"][kind]["before_min_count"] for kind in kept) == len(expected)


def test_split_is_by_patient_and_consistent(icd10):
    examples = read_all(icd10)
    subjects = {split: {e.subject_id for e in rows} for split, rows in examples.items()}
    assert not subjects["train"] & subjects["val"]
    assert not subjects["train"] & subjects["test"]
    assert not subjects["val"] & subjects["test"]
    with open(icd10 / "split.csv", newline="") as file:
        split_of = {int(row["subject_id"]): row["split"] for row in csv.DictReader(file)}
    assert {s: {p for p, v in split_of.items() if v == s} for s in SPLITS} == subjects
    held_out = [int(line) for line in (icd10 / "exclude_subjects.txt").read_text().split()]
    assert held_out == sorted(subjects["val"] | subjects["test"])
    patients = sum(len(s) for s in subjects.values())
    fractions = {split: len(subjects[split]) / patients for split in SPLITS}
    # Iterative stratification trades exact sizes for label balance, more so on a small set: near 75/10/15.
    assert 0.62 <= fractions["train"] <= 0.82
    assert 0.06 <= fractions["val"] <= 0.16
    assert 0.10 <= fractions["test"] <= 0.24
    report = json.loads((icd10 / "report.json").read_text())
    assert report["patients"] == patients
    for split in SPLITS:
        assert report["splits"][split]["notes"] == len(examples[split])
        assert report["splits"][split]["patients"] == len(subjects[split])
    assert report["notes"]["kept"] == sum(len(rows) for rows in examples.values())
    assert report["notes"]["read"] == report["notes"]["kept"] + sum(report["notes"]["skipped"].values())


def test_split_is_stratified(icd10):
    patients_with = {split: defaultdict(set) for split in SPLITS}
    for split, rows in read_all(icd10).items():
        for example in rows:
            for code in example.codes:
                patients_with[split][code].add(example.subject_id)
    labels = load_labels(icd10)
    train_shares = []
    for code in labels.codes:
        per_split = {split: len(patients_with[split][code]) for split in SPLITS}
        total = sum(per_split.values())
        if total >= 3:
            assert per_split["train"] > 0, code
        if total >= 10:
            train_shares.append(per_split["train"] / total)
    assert train_shares
    assert all(0.4 <= share <= 0.97 for share in train_shares)
    assert 0.62 <= float(np.mean(train_shares)) <= 0.85
    report = json.loads((icd10 / "report.json").read_text())
    assert report["codes_with_zero_train_examples"] == 0


def test_deterministic_for_a_seed(mimic, icd10, tmp_path):
    again = tmp_path / "again"
    build(mimic, again, 10, min_count=MIN_COUNT)
    for name in ("train.jsonl.gz", "val.jsonl.gz", "test.jsonl.gz", "labels.json", "split.csv",
                 "exclude_subjects.txt", "report.json"):
        assert (again / name).read_bytes() == (icd10 / name).read_bytes(), name
    other = tmp_path / "other_seed"
    build(mimic, other, 10, min_count=MIN_COUNT, seed=11)
    assert (other / "split.csv").read_bytes() != (icd10 / "split.csv").read_bytes()
    assert json.loads((other / "labels.json").read_text())["codes"][0]["count"] == load_labels(icd10).counts[
        load_labels(icd10).codes[0]]


def test_version_separation_and_edin_text(mimic, icd9):
    labels = load_labels(icd9)
    assert labels.version == 9
    icd9_diagnosis = re.compile(r"^(\d{3}|V\d{2}|E\d{3})(\.\d{1,2})?$")
    icd9_procedure = re.compile(r"^\d{2}(\.\d{1,2})?$")
    for code in labels.codes:
        pattern = icd9_diagnosis if labels.kinds[code] == "diagnosis" else icd9_procedure
        assert pattern.match(code), code
    assert set(labels.codes) == {code for code, n in expected_counts(mimic, 9).items() if n >= MIN_COUNT}
    icd9_admissions = {int(row["hadm_id"]) for row in read_csv_gz(mimic / "hosp" / "diagnoses_icd.csv.gz")
                       if row["icd_version"] == "9"}
    for rows in read_all(icd9).values():
        for example in rows:
            assert example.hadm_id in icd9_admissions
            assert example.text == edin_preprocess(example.text)  # already lower-case alphanumeric words
            assert 0 < len(example.text.split()) <= 500
    report = json.loads((icd9 / "report.json").read_text())
    assert report["text_words"]["max"] <= 500
    assert report["notes"]["skipped"]["other_icd_version"] > 0


def test_top_k(mimic, icd10, tmp_path):
    out = tmp_path / "top5"
    report = build(mimic, out, 10, min_count=MIN_COUNT, top_k=5)
    full = load_labels(icd10)
    labels = load_labels(out)
    assert labels.codes == full.codes[:5]
    kept = read_all(out)
    assert all(example.codes and set(example.codes) <= set(labels.codes) for rows in kept.values() for example in rows)
    dropped = sum(1 for rows in read_all(icd10).values() for e in rows if not set(e.codes) & set(labels.codes))
    assert report["notes"]["skipped"].get("no_codes_in_top_k", 0) == dropped > 0
    assert sum(report["codes"][kind]["after_top_k"] for kind in ("diagnosis", "procedure")) == 5


def test_read_api_round_trip(icd10):
    labels = load_labels(icd10)
    train = list(read_split(icd10, "train"))
    matrix = label_matrix(train, labels)
    assert matrix.dtype == bool and matrix.shape == (len(train), len(labels.codes))
    assert matrix.sum(axis=0).tolist() == [labels.train_counts[code] for code in labels.codes]
    index = labels.index()
    for row, example in zip(matrix, train, strict=True):
        assert list(example.codes) == sorted(example.codes, key=index.__getitem__)  # in labels.json order
        assert np.flatnonzero(row).tolist() == [index[code] for code in example.codes]
    everything = label_matrix((e for rows in read_all(icd10).values() for e in rows), labels)
    assert everything.sum(axis=0).tolist() == [labels.counts[code] for code in labels.codes]
    assert label_matrix([], labels).shape == (0, len(labels.codes))
    with pytest.raises(KeyError, match="not in this ICD-10 label set"):
        labels.encode(["NOT.A.CODE"])
    with pytest.raises(ValueError, match="unknown split"):
        next(read_split(icd10, "dev"))


# ------------------------------------------------------------------------------------------ hand-made MIMIC tree


def write_gz(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8", newline="") as file:
        file.write(text)


def note_rows(rows: list[tuple]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"])
    for note_id, subject, hadm, text in rows:
        writer.writerow([note_id, subject, hadm, "DS", 1, "2150-01-02 00:00:00", "", text])
    return buffer.getvalue() + "113-DS-1,113,213\n"  # a malformed row: 3 fields for 8 columns


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    write_gz(root / "hosp/d_icd_diagnoses.csv.gz", "icd_code,icd_version,long_title\n"
             'I509,10,"Heart failure, unspecified"\nI10,10,Essential (primary) hypertension\n'
             "E119,10,Type 2 diabetes mellitus without complications\n"
             '4280,9,"Congestive heart failure, unspecified"\nE8497,9,Accidents occurring in residential institution\n')
    write_gz(root / "hosp/d_icd_procedures.csv.gz", "icd_code,icd_version,long_title\n"
             '0DTJ4ZZ,10,"Resection of Appendix, Percutaneous Endoscopic Approach"\n'
             "3961,9,Extracorporeal circulation auxiliary to open heart surgery\n")
    write_gz(root / "hosp/diagnoses_icd.csv.gz", "subject_id,hadm_id,seq_num,icd_code,icd_version\n"
             "101,201,1,I509,10\n101,201,2,I10,10\n101,201,3,I10,10\n"  # a duplicated (hadm_id, code)
             "102,202,1,I10,10\n102,202,2,ZZZ99,10\n"  # an unknown code
             "103,203,1,E119,10\n103,203,2,I10,10\n104,204,1,I509,10\n"
             "105,205,1,I10,10\n105,205,2,,10\n"  # a row with no code
             "106,206,1,4280,9\n114,214,1,4280,9\n115,215,1,E8497,9\n"
             "107,208,1,I10\n"  # malformed: 4 fields
             "110,210,1,QQQ1,10\n"  # the admission's only code is unknown
             "112,212,1,I10,10\n")
    write_gz(root / "hosp/procedures_icd.csv.gz", "subject_id,hadm_id,seq_num,chartdate,icd_code,icd_version\n"
             "101,201,1,2150-01-01,0DTJ4ZZ,10\n104,204,1,2150-01-01,0DTJ4ZZ,10\n"
             "106,206,1,2150-01-01,3961,9\n115,215,1,2150-01-01,3961,9\n"
             "105,205,2,2150-01-01,3961,9\n")  # admission 205 is coded in both versions
    write_gz(root / "note/discharge.csv.gz", note_rows([
        ("101-DS-1", 101, 201, "Pt with CHF and HTN.\nDischarged home."),
        ("101-DS-2", 101, 201, "Pt with CHF and HTN.\nDischarged home."),  # same admission, same text
        ("102-DS-1", 102, 202, "HTN, well controlled."),
        ("103-DS-1", 103, 203, "DM2 and HTN."),
        ("104-DS-1", 104, 204, "CHF; appendectomy."),
        ("105-DS-1", 105, 205, "HTN, on bypass."),
        ("106-DS-1", 106, 206, "CHF (ICD-9 era)."),
        ("114-DS-1", 114, 214, "CHF again."),
        ("115-DS-1", 115, 215, "Fall at the home; bypass."),
        ("101-DS-3", 101, 207, "An admission with no code rows."),
        ("109-DS-1", 109, "", "A note without an admission."),
        ("111-DS-1", 111, 211, "   \n  "),
        ("110-DS-1", 110, 210, "Only an unknown code."),
        ("112-DS-1", 112, 212, "*** --- ***"),
    ]))
    return root


def test_counted_skips(tiny, tmp_path):
    report = build(tiny, tmp_path / "out", 10, min_count=1)
    assert report["notes"]["read"] == 15
    assert report["notes"]["kept"] == 6
    assert report["notes"]["skipped"] == {"admission_not_coded": 1, "duplicate_note": 1, "empty_text": 1,
                                          "malformed_row": 1, "no_hadm_id": 1, "no_known_codes": 1,
                                          "other_icd_version": 3}
    assert report["notes"]["examples"]["duplicate_note"] == ["note_id 101-DS-2"]
    diagnoses = report["code_rows"]["diagnosis"]
    assert diagnoses["skipped"] == {"malformed_row": 1, "missing_code": 1, "unknown_code": 2}
    assert diagnoses["duplicate_rows"] == 1
    assert any("ZZZ99" in example for example in diagnoses["examples"]["unknown_code"])
    assert report["admissions"]["mixed_icd_versions"] == 1 and report["admissions"]["notes_from_mixed_admissions"] == 1
    labels = load_labels(tmp_path / "out")
    assert labels.codes == ["I10", "0DTJ4ZZ", "I50.9", "E11.9"]
    assert [labels.counts[c] for c in labels.codes] == [5, 2, 2, 1]
    assert labels.titles["I50.9"] == "Heart failure, unspecified" and labels.kinds["0DTJ4ZZ"] == "procedure"
    by_note = {e.note_id: e for rows in read_all(tmp_path / "out").values() for e in rows}
    assert by_note["101-DS-1"].codes == ("I10", "0DTJ4ZZ", "I50.9")
    assert by_note["101-DS-1"].text == "Pt with CHF and HTN.\nDischarged home."  # raw text kept as is
    assert by_note["105-DS-1"].codes == ("I10",)  # only its ICD-10 codes

    edin = build(tiny, tmp_path / "edin", 10, min_count=1, preprocess="edin")
    assert edin["notes"]["skipped"]["empty_after_preprocessing"] == 1
    assert edin["notes"]["examples"]["empty_after_preprocessing"] == ["note_id 112-DS-1"]


def test_min_count_top_k_and_icd9_on_hand_tree(tiny, tmp_path):
    # min_count 3 leaves I10 alone: one label (iterstrat needs two columns; the builder pads one) and note 204 has
    # nothing left.
    report = build(tiny, tmp_path / "min3", 10, min_count=3)
    assert load_labels(tmp_path / "min3").codes == ["I10"]
    assert report["notes"]["skipped"]["no_codes_after_min_count"] == 1
    assert report["codes"] == {"diagnosis": {"before_min_count": 3, "after_min_count": 1},
                               "procedure": {"before_min_count": 1, "after_min_count": 0}}
    report = build(tiny, tmp_path / "top1", 10, min_count=1, top_k=1)
    assert load_labels(tmp_path / "top1").codes == ["I10"]
    assert report["notes"]["skipped"]["no_codes_in_top_k"] == 1
    assert "no_codes_after_min_count" not in report["notes"]["skipped"]

    build(tiny, tmp_path / "icd9", 9, min_count=1)
    labels = load_labels(tmp_path / "icd9")
    assert set(labels.codes) == {"428.0", "E849.7", "39.61"}
    assert {e.note_id for rows in read_all(tmp_path / "icd9").values() for e in rows} == {
        "106-DS-1", "114-DS-1", "115-DS-1", "105-DS-1"}


def test_bad_inputs_and_output_folder(tiny, tmp_path):
    with pytest.raises(ValueError, match="ICD version must be 9 or 10"):
        build(tiny, tmp_path / "x", 11)
    with pytest.raises(ValueError, match="preprocess"):
        build(tiny, tmp_path / "x", 10, preprocess="lower")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build(tmp_path / "nowhere", tmp_path / "x", 10)
    broken = tmp_path / "broken"
    (broken / "hosp").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=re.escape(str(broken / "hosp" / "diagnoses_icd.csv.gz"))):
        build(broken, tmp_path / "x", 10)
    with pytest.raises(ValueError, match="no ICD-10 notes are left"):
        build(tiny, tmp_path / "none_left", 10, min_count=100)
    assert not (tmp_path / "none_left").exists() and not (tmp_path / "none_left.partial").exists()

    out = tmp_path / "out"
    build(tiny, out, 10, min_count=1)
    with pytest.raises(FileExistsError, match="already there"):
        build(tiny, out, 10, min_count=1)
    build(tiny, out, 10, min_count=2, overwrite=True)
    assert json.loads((out / "labels.json").read_text())["min_count"] == 2
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("not ours")
    with pytest.raises(FileExistsError, match="not an ICD dataset"):
        build(tiny, other, 10, overwrite=True)
    # A run killed midway leaves OUT.partial (never OUT); the next run removes it and finishes.
    fresh = tmp_path / "fresh"
    partial = tmp_path / "fresh.partial"
    partial.mkdir()
    (partial / ".icd_prepare_partial").touch()
    (partial / "notes.staging").write_bytes(b"left over")
    build(tiny, fresh, 10, min_count=1)
    assert not partial.exists() and (fresh / "report.json").is_file()
    assert sorted(p.name for p in fresh.iterdir()) == sorted(
        ["train.jsonl.gz", "val.jsonl.gz", "test.jsonl.gz", "labels.json", "split.csv", "exclude_subjects.txt",
         "report.json"])
