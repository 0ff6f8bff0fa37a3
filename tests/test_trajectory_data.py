"""The trajectory dataset builder (finetune/trajectory/data.py): visits, targets, times and notes of a synthetic tree
checked against the raw tables, the patient-level split (seeded, `split_from`), no target leakage from the builder to
the training windows, GEM mapping across the ICD-9/ICD-10 switch, the counted skips of a hand-made tree, bad inputs,
and the CLI."""

from __future__ import annotations

import csv
import gc
import gzip
import io
import json
import re
import shutil
import warnings
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from cmbert.data.categories import CodeMapper
from cmbert.data.synth import COLUMNS, synthesize_mimic
from cmbert.finetune.trajectory.data import (
    DATASET_FILES,
    PARTIAL_MARKER,
    SPLITS,
    Patient,
    Visit,
    prepare_trajectories,
    read_categories,
    read_notes,
    read_patients,
)
from cmbert.finetune.trajectory.train import build_split

SYNTH_PATIENTS = 120
TIME = "%Y-%m-%d %H:%M:%S"


def build(mimic: Path, out: Path, **options) -> dict:
    return prepare_trajectories(mimic, out, verbose=False, **options)


def read_csv_any(path: Path) -> list[dict[str, str]]:
    with open(path, "rb") as raw:
        data = raw.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))


def read_jsonl_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as file:
        return [json.loads(line) for line in file]


def read_split_csv(path: Path) -> dict[int, str]:
    return {int(row["subject_id"]): row["split"] for row in read_csv_any(path)}


def tables_add_up(report: dict) -> None:
    for name, counts in report["tables"].items():
        assert counts["read"] == counts["kept"] + sum(counts["skipped"].values()), name


# ---------------------------------------------------------------------------------------------- synthetic MIMIC-IV


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "mimic"
    synthesize_mimic(root, patients=SYNTH_PATIENTS, seed=5)
    return root


@pytest.fixture(scope="module")
def dataset(synth, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trajectory") / "ccs"
    build(synth, out)
    return out


@pytest.fixture(scope="module")
def raw(synth) -> dict:
    """The synthetic tree's tables, read independently of the builder."""
    admissions = read_csv_any(synth / "hosp/admissions.csv.gz")
    diagnoses = defaultdict(list)
    for row in read_csv_any(synth / "hosp/diagnoses_icd.csv.gz"):
        diagnoses[int(row["hadm_id"])].append((int(row["seq_num"]), f"{row['icd_version']}:{row['icd_code']}"))
    notes = read_csv_any(synth / "note/discharge.csv.gz")
    return {
        "patients": {int(r["subject_id"]): r for r in read_csv_any(synth / "hosp/patients.csv.gz")},
        "admissions": {int(r["hadm_id"]): r for r in admissions},
        "admission_rows": len(admissions),
        "diagnoses": diagnoses,
        "notes": {r["note_id"]: r for r in notes},
        "first_note_of": {int(r["hadm_id"]): r["note_id"] for r in reversed(notes) if r["hadm_id"]},
    }


def test_visits_follow_the_raw_tables(dataset, raw):
    patients = list(read_patients(dataset))
    assert [p.subject_id for p in patients] == sorted(p.subject_id for p in patients)
    mapper = CodeMapper("ccs")
    for patient in patients:
        visits = patient.visits
        assert len(visits) >= 2
        keys = [(datetime.strptime(v.admittime, TIME), v.hadm_id) for v in visits]
        assert keys == sorted(keys), patient.subject_id
        assert [v.days_since_previous is None for v in visits] == [True] + [False] * (len(visits) - 1)
        assert all(v.days_since_previous >= 0 for v in visits[1:])
        for previous, visit in zip(visits, visits[1:], strict=False):
            discharge = datetime.strptime(raw["admissions"][previous.hadm_id]["dischtime"], TIME)
            gap = max((datetime.strptime(visit.admittime, TIME) - discharge).total_seconds() / 86400, 0.0)
            assert visit.days_since_previous == pytest.approx(gap, abs=1e-3)
        anchor = raw["patients"][patient.subject_id]
        assert patient.gender == anchor["gender"]
        for visit in visits:
            admission = raw["admissions"][visit.hadm_id]
            assert int(admission["subject_id"]) == patient.subject_id
            assert visit.admittime == admission["admittime"][:19]
            # Diagnoses in seq_num order, without repeats; targets: the union of their categories.
            expected = list(dict.fromkeys(code for _, code in sorted(raw["diagnoses"][visit.hadm_id])))
            assert visit.diagnoses == expected
            union = {c for token in visit.diagnoses for c in mapper.map(token.split(":")[1], int(token[:token.index(":")]))}
            assert visit.targets == sorted(union) and union
            assert int(anchor["anchor_age"]) - 1 <= visit.age <= int(anchor["anchor_age"]) + 40
    # One patient by hand: age = anchor_age + years since Jan 1 of anchor_year.
    first = patients[0].visits[0]
    anchor = raw["patients"][patients[0].subject_id]
    years = (datetime.strptime(first.admittime, TIME) - datetime(int(anchor["anchor_year"]), 1, 1)).days / 365.25
    assert first.age == pytest.approx(int(anchor["anchor_age"]) + years, abs=0.01)


def test_every_admission_is_a_visit_or_counted(dataset, raw):
    report = json.loads((dataset / "report.json").read_text())
    kept = {p.subject_id: p for p in read_patients(dataset)}
    with_codes = defaultdict(list)  # subject -> admissions with at least one diagnosis row
    for hadm, row in raw["admissions"].items():
        if raw["diagnoses"].get(hadm):
            with_codes[int(row["subject_id"])].append(hadm)
    expected_kept = {s for s, hadms in with_codes.items() if len(hadms) >= 2}
    assert set(kept) == expected_kept
    excluded = set(raw["patients"]) - expected_kept
    assert excluded and report["excluded_patients"] == {"fewer_than_2_visits": len(excluded)}
    visits = sum(len(p.visits) for p in kept.values())
    assert {v.hadm_id for p in kept.values() for v in p.visits} == {h for s in expected_kept for h in with_codes[s]}
    admissions = report["tables"]["admissions"]
    counted = sum(n for reason, n in report["excluded_admissions"].items() if reason != "diagnoses_without_admission")
    of_excluded = sum(len(with_codes[s]) for s in excluded)
    assert admissions["read"] == raw["admission_rows"] == (
        visits + counted + of_excluded + sum(admissions["skipped"].values()))
    assert report["splits"]["train"]["visits"] + report["splits"]["val"]["visits"] + report["splits"]["test"][
        "visits"] == visits
    assert sum(report["splits"][s]["samples"] for s in SPLITS) == visits - len(kept)
    tables_add_up(report)


def test_notes_are_the_visits_discharge_notes(dataset, raw):
    patients = list(read_patients(dataset))
    referenced = {}
    for patient in patients:
        for visit in patient.visits:
            # The first discharge note of the admission, if it has any.
            assert visit.note_id == raw["first_note_of"].get(visit.hadm_id)
            if visit.note_id is not None:
                note = raw["notes"][visit.note_id]
                assert int(note["hadm_id"]) == visit.hadm_id and int(note["subject_id"]) == patient.subject_id
                assert visit.note_id not in referenced
                referenced[visit.note_id] = (patient.subject_id, visit.hadm_id)
    records = read_jsonl_gz(dataset / "notes.jsonl.gz")
    assert [r["note_id"] for r in records] == list(dict.fromkeys(r["note_id"] for r in records))
    assert {r["note_id"]: (r["subject_id"], r["hadm_id"]) for r in records} == referenced
    assert all(r["text"] == raw["notes"][r["note_id"]]["text"] for r in records)
    some = sorted(referenced)[:3]
    assert dict(read_notes(dataset, set(some))) == {n: raw["notes"][n]["text"] for n in some}
    report = json.loads((dataset / "report.json").read_text())
    assert sum(report["splits"][s]["visits_with_note"] for s in SPLITS) == len(referenced)


def test_categories_count_visits_per_split(dataset):
    categories = read_categories(dataset)
    assert categories["vocabulary"] == "ccs"
    counts = {split: Counter() for split in SPLITS}
    for patient in read_patients(dataset):
        for visit in patient.visits:
            counts[patient.split].update(visit.targets)
    ids = [c["id"] for c in categories["categories"]]
    assert set(ids) == set().union(*counts.values()) and len(ids) == len(set(ids))
    for entry in categories["categories"]:
        assert {s: entry[f"{s}_visits"] for s in SPLITS} == {s: counts[s][entry["id"]] for s in SPLITS}
        assert entry["name"] == CodeMapper("ccs").name(entry["id"])
    train = [c["train_visits"] for c in categories["categories"]]
    assert train == sorted(train, reverse=True)


# ------------------------------------------------------------------------------------------------ split by patient


def test_split_is_by_patient(dataset):
    patients = list(read_patients(dataset))
    split_of = {p.subject_id: p.split for p in patients}
    assert len(split_of) == len(patients) and set(split_of.values()) == set(SPLITS)
    for split in SPLITS:
        assert [p.subject_id for p in read_patients(dataset, split)] == [s for s, v in split_of.items() if v == split]
    assert read_split_csv(dataset / "split.csv") == split_of
    held_out = [int(line) for line in (dataset / "exclude_subjects.txt").read_text().split()]
    assert held_out == sorted(s for s, v in split_of.items() if v != "train")
    sizes = Counter(split_of.values())
    assert (sizes["test"], sizes["val"]) == (round(0.15 * len(patients)), round(0.10 * len(patients)))
    report = json.loads((dataset / "report.json").read_text())
    for split in SPLITS:
        members = [p for p in patients if p.split == split]
        assert report["splits"][split]["patients"] == len(members)
        assert report["splits"][split]["samples"] == sum(len(p.visits) - 1 for p in members)


def test_same_seed_same_bytes(synth, dataset, tmp_path):
    again = tmp_path / "again"
    build(synth, again)
    assert sorted(p.name for p in again.iterdir()) == sorted(DATASET_FILES)
    for name in DATASET_FILES:
        assert (again / name).read_bytes() == (dataset / name).read_bytes(), name
    other = tmp_path / "seed11"
    build(synth, other, seed=11)
    assert read_split_csv(other / "split.csv") != read_split_csv(dataset / "split.csv")
    assert set(read_split_csv(other / "split.csv")) == set(read_split_csv(dataset / "split.csv"))


def test_split_from_fixes_listed_patients(synth, dataset, tmp_path):
    subjects = sorted(read_split_csv(dataset / "split.csv"))
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("subject_id,split\n"
                 f"{subjects[0]},test\n{subjects[1]},val\n{subjects[2]},train\n"
                 f"{subjects[3]},train\n{subjects[4]},val\n{subjects[5]},train\n"
                 "99999999,test\n")  # not a patient of the tree: ignored
    b.write_text("subject_id,split\n"
                 f"{subjects[3]},test\n{subjects[4]},test\n{subjects[5]},val\n")
    report = build(synth, tmp_path / "fixed", split_from=[a, b])
    got = read_split_csv(tmp_path / "fixed" / "split.csv")
    expected = dict.fromkeys(subjects, "train")
    expected.update({subjects[0]: "test", subjects[1]: "val", subjects[3]: "test", subjects[4]: "test",
                     subjects[5]: "val"})
    assert got == expected
    assert {p.subject_id: p.split for p in read_patients(tmp_path / "fixed")} == expected
    assert [int(s) for s in (tmp_path / "fixed" / "exclude_subjects.txt").read_text().split()] == [
        subjects[0], subjects[1], subjects[3], subjects[4], subjects[5]]
    assert report["split_from"] == [str(a), str(b)]
    assert report["splits"]["test"]["patients"] == 3 and report["splits"]["val"]["patients"] == 2


# ----------------------------------------------------------------------------------------------------- no leakage


def test_builder_never_gives_a_visit_another_visits_note(dataset):
    notes = {r["note_id"]: r for r in read_jsonl_gz(dataset / "notes.jsonl.gz")}
    for patient in read_patients(dataset):
        for t, visit in enumerate(patient.visits):
            if visit.note_id is None:
                continue
            assert notes[visit.note_id]["hadm_id"] == visit.hadm_id
            # ... so the notes of visits < t (what a model reads for target t) never include visit t's note.
            assert visit.note_id not in {v.note_id for v in patient.visits[:t]}


def hand_patient(subject: int, n: int) -> Patient:
    visits = [Visit(hadm_id=subject * 100 + i, admittime=f"2150-0{i + 1}-01 00:00:00", age=50.0 + i,
                    days_since_previous=None if i == 0 else 30.0, diagnoses=[f"10:X{subject}{i}"],
                    targets=[f"T{subject}.{i}"], procedures=[], note_id=f"{subject}-DS-{i}") for i in range(n)]
    return Patient(subject, "train", "F", visits)


def test_training_windows_respect_time():
    patients = [hand_patient(1, 5), hand_patient(2, 4), hand_patient(3, 2)]
    categories = sorted({c for p in patients for v in p.visits for c in v.targets})
    category_ids = {c: i for i, c in enumerate(categories)}
    visit_of = {category_ids[v.targets[0]]: (p.subject_id, i) for p in patients for i, v in enumerate(p.visits)}
    note_rows = {v.note_id: category_ids[v.targets[0]] for p in patients for v in p.visits}
    samples = [(p.subject_id, t) for p in patients for t in range(1, len(p.visits))]
    data = build_split(patients, {}, category_ids, note_rows, max_visits=2)
    assert data.y.shape == (len(samples), len(categories)) and len(data.history) == len(samples)
    seen = []
    for window in data.windows:
        assert 2 <= len(window.targets) <= 3 and window.sample_ids[0] == -1
        subject, start = visit_of[window.targets[0][0]]
        for j in range(len(window.targets)):
            assert visit_of[window.targets[j][0]] == (subject, start + j)  # consecutive visits of one patient
            assert visit_of[window.note_rows[j]] == (subject, start + j)  # position j holds visit j's own note
        for j in range(1, len(window.sample_ids)):
            sample = window.sample_ids[j]
            assert samples[sample] == (subject, start + j)
            assert np.flatnonzero(data.y[sample]).tolist() == window.targets[j]
            seen.append(sample)
    assert sorted(seen) == list(range(len(samples)))  # each sample scored in exactly one window
    for sample, (subject, t) in enumerate(samples):
        past = [visit_of[cats[0]] for cats in data.history[sample]]
        assert past == [(subject, i) for i in range(max(0, t - 2), t)]  # only visits before the target visit


# ------------------------------------------------------------------------------------------ hand-made MIMIC tree

PATIENT_ROWS = [(101, "F", 60, 2150), (102, "M", 45, 2160), (103, "F", 70, 2170), (104, "M", 30, 2180)]
ADMISSION_ROWS = [
    (101, 202, "2151-06-01 08:00:00", "2151-06-03 12:00:00"),  # file order is not time order
    (101, 201, "2150-03-01 10:00:00", "2150-03-05 10:00:00"),
    (101, 203, "03/01/2152", "03/02/2152"),  # unparsable admittime; its diagnosis row has no admission left
    (101, 204, "2151-01-01 00:00:00", "2151-01-02 00:00:00"),  # no diagnosis row
    (101, 202, "2149-01-01 00:00:00", "2149-01-02 00:00:00"),  # duplicate hadm_id: the first row is kept
    (102, 207, "2160-05-05 09:00:00", "2160-05-06 09:00:00"),  # same admittime as 206: 206 first (hadm_id)
    (102, 206, "2160-05-05 09:00:00", "2160-05-10 09:00:00"),  # ... and 207 overlaps it
    (103, 208, "2170-02-02 02:02:02", "2170-02-03 00:00:00"),  # 103: a single visit
    (104, 209, "2180-01-01 00:00:00", "2180-01-02 00:00:00"),  # only U071: unmapped under CCS
    (104, 210, "2180-06-01 00:00:00", "2180-06-02 00:00:00"),
]
DIAGNOSIS_ROWS = [
    (101, 201, 2, "4019", 9), (101, 201, 1, "4280", 9),  # ICD-9 heart failure (seq_num order: 4280 first)
    (101, 202, 1, "I5023", 10), (101, 202, 2, "I10", 10),  # ICD-10 heart failure
    (101, 203, 1, "I10", 10),
    (102, 206, 1, "I10", 10),
    (102, 207, 1, "E119", 10), (102, 207, 2, "ZZZ99", 10),  # not in d_icd_diagnoses
    (103, 208, 1, "I10", 10),
    (104, 209, 1, "U071", 10),
    (104, 210, 1, "I10", 10),
]
KNOWN_DIAGNOSES = [("4280", 9, "Congestive heart failure, unspecified"), ("4019", 9, "Unspecified essential "
                   "hypertension"), ("I5023", 10, "Acute on chronic systolic (congestive) heart failure"),
                   ("I10", 10, "Essential (primary) hypertension"), ("E119", 10, "Type 2 diabetes mellitus without "
                   "complications"), ("U071", 10, "COVID-19")]
NOTE_ROWS = [
    ("101-DS-1", 101, 201, "Heart failure, ICD-9 era."),
    ("101-DS-2", 101, 202, "Heart failure again."),
    ("101-DS-3", 101, 202, "An addendum: a second note of 202."),
    ("109-DS-1", 109, "", "A note without an admission."),
    ("102-DS-1", 102, 206, "Hypertension."),
    ("103-DS-1", 103, 208, "The only visit of 103."),
]


def write_table(root: Path, name: str, rows: list[dict], gz: bool = True) -> None:
    path = root / f"{name}.csv.gz" if gz else root / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS[name], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({column: row.get(column, "") for column in COLUMNS[name]})
    data = buffer.getvalue().encode("utf-8")
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)


def write_tree(root: Path, patients=PATIENT_ROWS, admissions=ADMISSION_ROWS, diagnoses=DIAGNOSIS_ROWS,
               notes=NOTE_ROWS) -> Path:
    write_table(root, "hosp/patients", [dict(subject_id=s, gender=g, anchor_age=a, anchor_year=y,
                                             anchor_year_group="2011 - 2013") for s, g, a, y in patients])
    write_table(root, "hosp/admissions", [dict(subject_id=s, hadm_id=h, admittime=a, dischtime=d,
                                               admission_type="EW EMER.", hospital_expire_flag=0)
                                          for s, h, a, d in admissions], gz=False)  # plain .csv is read too
    write_table(root, "hosp/diagnoses_icd", [dict(subject_id=s, hadm_id=h, seq_num=q, icd_code=c, icd_version=v)
                                             for s, h, q, c, v in diagnoses])
    write_table(root, "hosp/d_icd_diagnoses", [dict(icd_code=c, icd_version=v, long_title=t)
                                               for c, v, t in KNOWN_DIAGNOSES])
    write_table(root, "hosp/procedures_icd", [
        dict(subject_id=101, hadm_id=201, seq_num=1, chartdate="2150-03-02", icd_code="3995", icd_version=9),
        dict(subject_id=102, hadm_id=207, seq_num=1, chartdate="2160-05-05", icd_code="5A1D70Z", icd_version=10)])
    write_table(root, "hosp/d_icd_procedures", [
        dict(icd_code="3995", icd_version=9, long_title="Hemodialysis"),
        dict(icd_code="5A1D70Z", icd_version=10, long_title="Performance of Urinary Filtration, Intermittent")])
    write_table(root, "note/discharge", [dict(note_id=n, subject_id=s, hadm_id=h, note_type="DS", note_seq=1,
                                              charttime="2150-01-01 00:00:00", text=t) for n, s, h, t in notes],
                gz=False)
    return root


@pytest.fixture(scope="module")
def hand(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("hand") / "mimic")


@pytest.fixture(scope="module")
def hand_ccs(hand, tmp_path_factory) -> tuple[dict, dict[int, Patient]]:
    out = tmp_path_factory.mktemp("hand-out") / "ccs"
    report = build(hand, out)
    return report, {p.subject_id: p for p in read_patients(out)}


def test_counted_skips_on_hand_tree(hand_ccs):
    report, patients = hand_ccs
    tables = report["tables"]
    assert tables["patients"] == {"read": 4, "kept": 4, "skipped": {}}
    assert {k: tables["admissions"][k] for k in ("read", "kept", "skipped")} == {
        "read": 10, "kept": 8, "skipped": {"bad_admittime": 1, "duplicate_hadm_id": 1}}
    assert {k: tables["diagnoses"][k] for k in ("read", "kept", "skipped")} == {
        "read": 11, "kept": 10, "skipped": {"unknown_code": 1}}
    assert any("ZZZ99" in example for example in tables["diagnoses"]["examples"]["unknown_code"])
    assert tables["procedures"] == {"read": 2, "kept": 2, "skipped": {}}
    assert tables["notes"] == {"read": 6, "kept": 3, "skipped": {"no_hadm_id": 1, "not_a_kept_visit": 1,
                                                                  "second_note_of_visit": 1}}
    tables_add_up(report)
    assert report["excluded_admissions"] == {"diagnoses_without_admission": 1, "no_diagnosis_rows": 1,
                                             "no_mapped_diagnosis": 1}
    assert report["excluded_patients"] == {"fewer_than_2_visits": 2}  # 103 (one visit), 104 (one mapped visit)
    assert report["overlapping_stays"] == 1
    assert report["diagnosis_mapping"]["unmapped_codes"] == 1 and report["diagnosis_mapping"]["unmapped_rows"] == 1
    assert report["diagnosis_mapping"]["most_frequent_unmapped"] == ["10:U071"]
    assert sorted(patients) == [101, 102]
    assert sum(report["splits"][s]["samples"] for s in SPLITS) == 2


def test_hand_tree_visits(hand_ccs):
    _, patients = hand_ccs
    first, second = patients[101].visits
    assert [first.hadm_id, second.hadm_id] == [201, 202]  # 202's duplicate row (2149) did not move it first
    assert first.diagnoses == ["9:4280", "9:4019"] and first.procedures == ["P9:3995"]
    assert first.age == round(60 + (datetime(2150, 3, 1, 10) - datetime(2150, 1, 1)).total_seconds()
                              / (365.25 * 86400), 3)
    assert first.days_since_previous is None
    assert second.days_since_previous == round((datetime(2151, 6, 1, 8) - datetime(2150, 3, 5, 10)).total_seconds()
                                               / 86400, 3)
    assert (first.note_id, second.note_id) == ("101-DS-1", "101-DS-2")  # the first note of 202 in file order
    tie, overlap = patients[102].visits
    assert [tie.hadm_id, overlap.hadm_id] == [206, 207]
    assert overlap.days_since_previous == 0.0 and overlap.diagnoses == ["10:E119"]
    assert (tie.note_id, overlap.note_id) == ("102-DS-1", None)
    assert overlap.procedures == ["P10:5A1D70Z"]
    assert patients[102].gender == "M" and tie.age == pytest.approx(
        45 + (datetime(2160, 5, 5, 9) - datetime(2160, 1, 1)).total_seconds() / (365.25 * 86400), abs=1e-3)


@pytest.mark.parametrize(("vocabulary", "category"), [("icd10_3", "I50"), ("ccs", "108"), ("ccsr", "CIR019")])
def test_heart_failure_maps_across_the_icd_switch(hand, tmp_path, vocabulary, category):
    report = build(hand, tmp_path / vocabulary, vocabulary=vocabulary)
    icd9, icd10 = next(p for p in read_patients(tmp_path / vocabulary) if p.subject_id == 101).visits
    assert (icd9.diagnoses[0], icd10.diagnoses[0]) == ("9:4280", "10:I5023")
    assert category in icd9.targets and category in icd10.targets
    routes = report["diagnosis_mapping"]["routes"]
    if vocabulary == "ccs":
        assert "gem" not in routes  # CCS has an ICD-9 grouper of its own
    else:
        # ICD-10 based vocabularies take the ICD-9 visit's two codes (4280, 4019) through the GEM.
        assert CodeMapper(vocabulary).how("4280", 9) == "gem" and routes["gem"] == 2
        assert read_categories(tmp_path / vocabulary)["vocabulary"] == vocabulary
    if vocabulary != "ccs":  # U071 maps here, so 104 has two visits
        assert 104 in {p.subject_id for p in read_patients(tmp_path / vocabulary)}


# ----------------------------------------------------------------------------------------------------- bad inputs


def test_bad_arguments(hand, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="vocabulary"):
        build(hand, out, vocabulary="icd11")
    with pytest.raises(ValueError, match="min_visits"):
        build(hand, out, min_visits=1)
    for sizes in ({"test_size": 0.0}, {"test_size": 1.5}, {"test_size": 0.6, "val_size": 0.5}):
        with pytest.raises(ValueError, match="test_size"):
            build(hand, out, **sizes)
    assert not out.exists() and not out.with_name("out.partial").exists()
    with pytest.raises(FileNotFoundError, match="no such split file"):
        build(hand, out, split_from=[tmp_path / "missing.csv"])
    broken = tmp_path / "broken"
    shutil.copytree(hand, broken)
    (broken / "hosp" / "admissions.csv").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(broken / "hosp" / "admissions.csv.gz"))):
        build(broken, out)


def test_output_folder_rules(hand, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("not ours")
    with pytest.raises(FileExistsError, match="not a trajectory dataset"):
        build(hand, other, overwrite=True)
    assert (other / "keep.txt").read_text() == "not ours"

    out = tmp_path / "out"
    build(hand, out)
    with pytest.raises(FileExistsError, match="already there"):
        build(hand, out)
    build(hand, out, vocabulary="icd10_3", overwrite=True)
    assert read_categories(out)["vocabulary"] == "icd10_3"
    assert sorted(p.name for p in out.iterdir()) == sorted(DATASET_FILES)

    # A run killed midway leaves OUT.partial with the marker; the next run removes it and finishes.
    fresh, partial = tmp_path / "fresh", tmp_path / "fresh.partial"
    partial.mkdir()
    (partial / PARTIAL_MARKER).touch()
    (partial / "patients.jsonl.gz").write_bytes(b"left over")
    build(hand, fresh)
    assert not partial.exists() and sorted(p.name for p in fresh.iterdir()) == sorted(DATASET_FILES)
    # Without the marker, OUT.partial is someone else's folder: left alone.
    stranger, its_partial = tmp_path / "stranger", tmp_path / "stranger.partial"
    its_partial.mkdir()
    (its_partial / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="was not left by"):
        build(hand, stranger)
    assert (its_partial / "mine.txt").read_text() == "keep"


def test_no_patient_with_two_visits(tmp_path):
    single = write_tree(tmp_path / "single", admissions=[r for r in ADMISSION_ROWS if r[0] == 103])
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="no patient has 2 or more visits"):
        build(single, out)
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_kept_patient_without_patients_row_is_not_excluded(tmp_path):
    mimic = write_tree(tmp_path / "mimic", admissions=ADMISSION_ROWS + [
        (105, 211, "2190-01-01 00:00:00", "2190-01-02 00:00:00"), (105, 212, "2190-02-01 00:00:00", "2190-02-02 00:00:00")],
        diagnoses=DIAGNOSIS_ROWS + [(105, 211, 1, "I10", 10), (105, 212, 1, "I10", 10)])
    report = build(mimic, tmp_path / "out")
    kept = {p.subject_id: p for p in read_patients(tmp_path / "out")}
    assert 105 in kept and kept[105].visits[0].age is None and kept[105].gender == ""
    assert sum(report["excluded_patients"].values()) == 2  # 103 and 104; 105 is in the dataset
    assert report["kept_without_patients_row"] == 1


def test_output_files_are_closed(hand, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        build(hand, tmp_path / "out")
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


# ------------------------------------------------------------------------------------------------------------ CLI


def test_cli_prepare(cmbert, synth, tmp_path):
    out = tmp_path / "cli"
    proc = cmbert("finetune", "trajectory", "prepare", "--mimic", synth, "--out", out, "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["seed"] == 3
    for split in SPLITS:
        s = report["splits"][split]
        line = f"{split}: {s['samples']:,} samples from {s['patients']:,} patients ({s['visits']:,} visits)"
        assert line in proc.stdout.splitlines()
    assert f"{report['categories']:,} ccs categories" in proc.stdout
    assert "trajectory prepare: wrote" in proc.stderr
    assert "Traceback" not in proc.stderr
