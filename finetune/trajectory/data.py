"""Patient trajectories from MIMIC-IV: `cmbert finetune trajectory prepare --mimic DIR --out DIR`.

How the dataset is built (the README quotes this; BEHRT's users could not find theirs):
1. Visits are admissions (hosp `admissions`), ordered per patient by `admittime`, ties by `hadm_id`. An admission
   whose admittime does not parse, or whose hadm_id repeats, is a counted skip.
2. Each visit's diagnoses are the rows of hosp `diagnoses_icd` (codes outside the release's `d_icd_diagnoses` are
   counted as `unknown_code`), mapped to the target vocabulary by `cmbert.data.categories.CodeMapper` (CCS by
   default; CCSR, ICD-10-CM 3-character or full ICD-10-CM codes; ICD-9 codes go through the GEMs where the vocabulary
   is ICD-10 based). Codes that do not map are counted by route in the report. A visit's targets are the set of its
   categories; an admission with no diagnosis row, or none that maps, is not a visit (counted).
3. Procedures (hosp `procedures_icd`) stay raw: "P9:3995" / "P10:5A1D70Z"; they are model inputs, never targets.
4. Time: `age` at admission = anchor_age + (admittime - Jan 1 of anchor_year) in years (MIMIC shifts dates per patient
   but keeps ages; anchor_age is capped at 91 by MIMIC); `days_since_previous` = admittime - the previous visit's
   dischtime in days, 0 for overlapping stays (counted), null for the first visit.
5. Notes: the discharge summary of each visit (note/discharge, matched on hadm_id; a second one for the same hadm_id
   is a counted skip, the first in file order kept). A visit without a note keeps `note_id: null`: models see "no note".
6. Patients: those with at least `min_visits` visits (default 2: a history and a target); the others are counted and
   excluded. Samples are implicit: for every visit t >= 1, the input is visits 0..t-1 (their codes, times and notes;
   never the note of visit t, which is written after the visit it would predict) and the target is visit t's
   category set. A patient with n visits gives n - 1 samples.
7. Split by patient (no patient in two splits): a seeded shuffle of subject ids into train/val/test
   (`test_size`, `val_size` of patients). `split_from` (e.g. an ICD dataset's split.csv, so that the patients the
   pretraining corpus excluded are the held-out ones here too) fixes the split of the patients it lists (held out in
   any file wins over train); unlisted patients then go to train, since the pretraining corpus may hold their notes.

Output folder (atomic: built in OUT.partial/, renamed at the end; report.json is written last):
- `patients.jsonl.gz`: one patient a line, `{"subject_id", "split", "gender", "visits": [{"hadm_id", "admittime",
  "age", "days_since_previous", "diagnoses": ["10:I5023", ...], "targets": ["108", ...], "procedures": [...],
  "note_id"}]}`, patients by subject_id.
- `notes.jsonl.gz`: `{"note_id", "subject_id", "hadm_id", "text"}` for the visits' notes (note text: it stays in this
  folder; nothing here logs it).
- `categories.json`: the vocabulary, where its mapping comes from, and each category's id, name and visit counts.
- `split.csv` (subject_id,split), `exclude_subjects.txt` (val + test subjects, for `corpus build --exclude-subjects`),
  `report.json` (every count above).

Memory: the code tables become per-admission lists (MIMIC-IV: ~5M diagnosis rows, a few hundred MB of Python
objects); note text is streamed straight to notes.jsonl.gz and never held.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from cmbert.core import builds
from cmbert.core.errors import MissingInput, UserError
from cmbert.core.io import SkipCounter, read_csv_table
from cmbert.data.categories import VOCABULARIES, CodeMapper, describe
from cmbert.data.readers import read_icd_codes, read_icd_dictionary, read_mimic_notes

SPLITS = ("train", "val", "test")
TABLES = {
    "patients": "hosp/patients",
    "admissions": "hosp/admissions",
    "diagnoses": "hosp/diagnoses_icd",
    "procedures": "hosp/procedures_icd",
    "d_diagnoses": "hosp/d_icd_diagnoses",
    "d_procedures": "hosp/d_icd_procedures",
    "notes": "note/discharge",
}
DATASET_FILES = ("patients.jsonl.gz", "notes.jsonl.gz", "categories.json", "split.csv", "exclude_subjects.txt",
                 "report.json")
PARTIAL_MARKER = ".trajectory_prepare_partial"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass
class Visit:
    hadm_id: int
    admittime: str
    age: float | None
    days_since_previous: float | None
    diagnoses: list[str]  # "9:4280" / "10:I5023", in seq_num order
    targets: list[str]  # target categories, sorted
    procedures: list[str]  # "P9:3995" / "P10:5A1D70Z"
    note_id: str | None


@dataclass
class Patient:
    subject_id: int
    split: str
    gender: str
    visits: list[Visit] = field(default_factory=list)

    @classmethod
    def from_json(cls, record: dict) -> Patient:
        return cls(record["subject_id"], record["split"], record["gender"],
                   [Visit(**visit) for visit in record["visits"]])


def read_patients(dataset: str | Path, split: str | None = None) -> Iterator[Patient]:
    """The patients of a prepared dataset (of one split, or all)."""
    with gzip.open(Path(dataset) / "patients.jsonl.gz", "rt", encoding="utf-8") as file:
        for line in file:
            record = json.loads(line)
            if split is None or record["split"] == split:
                yield Patient.from_json(record)


def read_categories(dataset: str | Path) -> dict:
    return json.loads((Path(dataset) / "categories.json").read_text(encoding="utf-8"))


def read_notes(dataset: str | Path, note_ids: set[str] | None = None) -> Iterator[tuple[str, str]]:
    """(note_id, text) of the dataset's notes, or of those in `note_ids`, in file order."""
    with gzip.open(Path(dataset) / "notes.jsonl.gz", "rt", encoding="utf-8") as file:
        for line in file:
            record = json.loads(line)
            if note_ids is None or record["note_id"] in note_ids:
                yield record["note_id"], record["text"]


def _table(mimic: Path, name: str, required: bool = True) -> Path | None:
    return builds.mimic_table(mimic, name, "a trajectory dataset needs hosp/admissions, hosp/patients, hosp/diagnoses_icd "
                                    "and hosp/d_icd_diagnoses", required)


def _parse_time(value: str) -> datetime | None:
    try:
        return datetime.strptime(value.strip()[:19], TIME_FORMAT)
    except ValueError:
        return None


def _check_arguments(vocabulary: str, min_visits: int, test_size: float, val_size: float) -> None:
    if vocabulary not in VOCABULARIES:
        raise UserError(f"vocabulary must be one of {', '.join(VOCABULARIES)}, got {vocabulary!r}")
    if min_visits < 2:
        raise UserError(f"min_visits must be at least 2 (a history and a target), got {min_visits}")
    builds.check_split_sizes(test_size, val_size)


def read_visits(mimic: Path, vocabulary: str, min_visits: int, subjects: set[int] | None = None,
                log: Callable[[str], None] = lambda message: None) -> tuple[list[Patient], dict]:
    """Steps 1-4 and 6 of the module docstring: the patients (split unset, notes not attached) and the counts.
    `subjects` restricts the reading to those patients (`cmbert predict trajectory --subject-id`)."""
    counters = {name: SkipCounter() for name in ("patients", "admissions", "diagnoses", "procedures", "notes")}

    # --- patients: sex and the anchor that turns shifted dates into ages
    anchors: dict[int, tuple[str, int, int]] = {}
    for row in read_csv_table(_table(mimic, TABLES["patients"]), ("subject_id", "gender", "anchor_age",
                                                                   "anchor_year"), counters["patients"]):
        subject, age, year = row["subject_id"].strip(), row["anchor_age"].strip(), row["anchor_year"].strip()
        if not (subject.isdigit() and age.isdigit() and year.isdigit()):
            counters["patients"].kept -= 1
            counters["patients"].skip("bad_row")
            continue
        anchors[int(subject)] = (row["gender"].strip(), int(age), int(year))

    # --- admissions
    admissions: dict[int, tuple[int, datetime, datetime | None]] = {}  # hadm_id -> (subject, admit, discharge)
    counter = counters["admissions"]
    for row in read_csv_table(_table(mimic, TABLES["admissions"]), ("subject_id", "hadm_id", "admittime",
                                                                     "dischtime"), counter):
        subject, hadm = row["subject_id"].strip(), row["hadm_id"].strip()
        admit = _parse_time(row["admittime"])
        reason = ("bad_subject_id" if not subject.isdigit() else "bad_hadm_id" if not hadm.isdigit() else
                  "bad_admittime" if admit is None else "duplicate_hadm_id" if int(hadm) in admissions else None)
        if reason:
            counter.kept -= 1
            counter.skip(reason)
            continue
        if subjects is None or int(subject) in subjects:
            admissions[int(hadm)] = (int(subject), admit, _parse_time(row["dischtime"]))
    log(f"{len(admissions):,} admissions of {len({s for s, _, _ in admissions.values()}):,} patients")

    # --- diagnoses -> target categories; procedures as raw tokens
    mapper = CodeMapper(vocabulary)
    known = read_icd_dictionary(_table(mimic, TABLES["d_diagnoses"]))
    diagnoses: dict[int, list[tuple[int, str, int]]] = {}
    for code in read_icd_codes(_table(mimic, TABLES["diagnoses"]), known, counters["diagnoses"]):
        if subjects is None or code.subject_id in subjects:
            diagnoses.setdefault(code.hadm_id, []).append((code.seq_num, code.code, code.version))
    procedures: dict[int, list[str]] = {}
    if (path := _table(mimic, TABLES["procedures"], required=False)) is not None:
        d_procedures = _table(mimic, TABLES["d_procedures"], required=False)
        known_procedures = read_icd_dictionary(d_procedures) if d_procedures else None
        for code in read_icd_codes(path, known_procedures, counters["procedures"]):
            tokens = procedures.setdefault(code.hadm_id, [])
            token = f"P{code.version}:{code.code}"
            if token not in tokens:
                tokens.append(token)

    # --- visits per patient
    routes: Counter[str] = Counter()
    unmapped: Counter[str] = Counter()
    visit_skips: Counter[str] = Counter()
    by_subject: dict[int, list[tuple[datetime, int]]] = {}
    for hadm, (subject, admit, _) in admissions.items():
        by_subject.setdefault(subject, []).append((admit, hadm))
    visit_skips["diagnoses_without_admission"] = len(diagnoses.keys() - admissions.keys())
    patients: list[Patient] = []
    patient_skips: Counter[str] = Counter()
    overlapping = kept_without_anchor = 0
    for subject in sorted(by_subject):
        visits: list[Visit] = []
        previous_discharge = None
        for admit, hadm in sorted(by_subject[subject]):
            rows = sorted(diagnoses.get(hadm, ()))
            if not rows:
                visit_skips["no_diagnosis_rows"] += 1
                continue
            codes, targets = [], set()
            for _, code, version in rows:
                token = f"{version}:{code}"
                if token in codes:
                    continue
                codes.append(token)
                categories = mapper.map(code, version)
                routes[mapper.how(code, version)] += 1
                if not categories:
                    unmapped[token] += 1
                targets.update(categories)
            if not targets:
                visit_skips["no_mapped_diagnosis"] += 1
                continue
            gap = None
            if previous_discharge is not None:
                gap = (admit - previous_discharge).total_seconds() / 86400
                if gap < 0:
                    overlapping += 1
                    gap = 0.0
                gap = round(gap, 3)
            age = None
            if subject in anchors:
                _, anchor_age, anchor_year = anchors[subject]
                age = round(anchor_age + (admit - datetime(anchor_year, 1, 1)).total_seconds() / (365.25 * 86400), 3)
            visits.append(Visit(hadm, admit.strftime(TIME_FORMAT), age, gap, codes, sorted(targets),
                                procedures.get(hadm, []), None))
            previous_discharge = admissions[hadm][2] or admit
        if not visits:
            patient_skips["no_visit"] += 1
        elif len(visits) < min_visits:
            patient_skips[f"fewer_than_{min_visits}_visits"] += 1
        else:
            gender = anchors[subject][0] if subject in anchors else ""
            kept_without_anchor += subject not in anchors  # kept, with unknown age and sex
            patients.append(Patient(subject, "", gender, visits))
    counts = {
        "excluded_patients": dict(sorted(patient_skips.items())),
        "excluded_admissions": dict(sorted(visit_skips.items())),
        "overlapping_stays": overlapping,
        "kept_without_patients_row": kept_without_anchor,
        "diagnosis_mapping": {"routes": dict(sorted(routes.items())), "unmapped_codes": len(unmapped),
                              "unmapped_rows": sum(unmapped.values()),
                              "most_frequent_unmapped": [c for c, _ in unmapped.most_common(20)]},
        "counters": counters,
    }
    return patients, counts


def _build(work: Path, mimic: Path, vocabulary: str, min_visits: int, seed: int, test_size: float, val_size: float,
           split_from: list[Path], log: Callable[[str], None]) -> dict:
    patients, counts = read_visits(mimic, vocabulary, min_visits, log=log)
    counters = counts.pop("counters")
    mapper = CodeMapper(vocabulary)
    if not patients:
        raise UserError(f"{mimic}: no patient has {min_visits} or more visits with mapped diagnoses")
    log(f"{len(patients):,} patients with {min_visits}+ visits "
        f"({sum(counts['excluded_patients'].values()):,} excluded)")

    # --- split by patient
    fixed = builds.read_split_files(split_from) if split_from else None
    splits = builds.assign_splits([p.subject_id for p in patients], fixed, seed, test_size, val_size)
    for patient in patients:
        patient.split = splits[patient.subject_id]

    # --- notes: streamed into notes.jsonl.gz
    visit_of = {v.hadm_id: v for p in patients for v in p.visits}
    notes_path = _table(mimic, TABLES["notes"], required=False)
    with builds.gzip_text_writer(work / "notes.jsonl.gz") as file:
        if notes_path is not None:
            for note in attach_notes(notes_path, visit_of, counters["notes"]):
                file.write(json.dumps({"note_id": note.note_id, "subject_id": note.subject_id,
                                       "hadm_id": note.hadm_id, "text": note.text}) + "\n")

    # --- patients.jsonl.gz, categories, split files
    visit_counts = {split: Counter() for split in SPLITS}
    with builds.gzip_text_writer(work / "patients.jsonl.gz") as file:
        for patient in patients:
            for visit in patient.visits:
                visit_counts[patient.split].update(visit.targets)
            file.write(json.dumps({"subject_id": patient.subject_id, "split": patient.split,
                                   "gender": patient.gender, "visits": [vars(v) for v in patient.visits]}) + "\n")
    every = Counter()
    for counts_of_split in visit_counts.values():
        every.update(counts_of_split)
    categories = sorted(every, key=lambda c: (-visit_counts["train"][c], -every[c], c))
    (work / "categories.json").write_text(json.dumps({
        "vocabulary": vocabulary, "source": describe(vocabulary),
        "categories": [{"id": c, "name": mapper.name(c), **{f"{s}_visits": visit_counts[s][c] for s in SPLITS}}
                       for c in categories]}, indent=1) + "\n", encoding="utf-8")
    with open(work / "split.csv", "w", encoding="utf-8", newline="\n") as file:
        file.write("subject_id,split\n" + "".join(f"{p.subject_id},{p.split}\n" for p in patients))
    (work / "exclude_subjects.txt").write_text(
        "".join(f"{p.subject_id}\n" for p in patients if p.split != "train"), encoding="utf-8")

    def split_summary(split: str) -> dict:
        members = [p for p in patients if p.split == split]
        visits = [v for p in members for v in p.visits]
        return {"patients": len(members), "visits": len(visits), "samples": len(visits) - len(members),
                "visits_with_note": sum(v.note_id is not None for v in visits),
                "targets_per_visit": round(float(np.mean([len(v.targets) for v in visits])), 2) if visits else 0.0}

    visits_per_patient = [len(p.visits) for p in patients]
    return {
        "vocabulary": vocabulary, "source": describe(vocabulary), "categories": len(categories),
        "min_visits": min_visits, "seed": seed, "split_from": [str(p) for p in split_from],
        "splits": {split: split_summary(split) for split in SPLITS},
        "visits_per_patient": {"mean": round(float(np.mean(visits_per_patient)), 2),
                               "median": float(np.median(visits_per_patient)), "max": max(visits_per_patient)},
        **counts,
        "tables": {name: c.as_dict() for name, c in counters.items()},
    }


def attach_notes(path: Path, visit_of: dict[int, Visit], counter: SkipCounter) -> Iterator:
    """Step 5: set `note_id` on the visits of `visit_of` ({hadm_id: Visit}) from a discharge notes file, yielding
    each attached note (`cmbert.data.readers.MimicNote`); the other notes are counted skips."""
    for note in read_mimic_notes(path, counter):
        visit = visit_of.get(note.hadm_id) if note.hadm_id is not None else None
        reason = ("no_hadm_id" if note.hadm_id is None else "not_a_kept_visit" if visit is None else
                  "second_note_of_visit" if visit.note_id is not None else None)
        if reason:
            counter.kept -= 1
            counter.skip(reason)
            continue
        visit.note_id = note.note_id
        yield note


def prepare_trajectories(mimic: str | Path, out: str | Path, vocabulary: str = "ccs", min_visits: int = 2,
                         seed: int = 10, test_size: float = 0.15, val_size: float = 0.10,
                         split_from: list[str | Path] | None = None, overwrite: bool = False,
                         verbose: bool = True) -> dict:
    """Build the trajectory dataset of a MIMIC-IV tree into `out` (the format in this module's docstring) and return
    its report (also `out/report.json`). The same inputs and seed give the same bytes. Progress lines (counts only,
    never text) go to stderr unless `verbose` is False.

    Args:
        mimic: MIMIC-IV root with hosp/ (and note/discharge.csv.gz)
        out: the dataset folder
        vocabulary: target categories: ccs (HCUP single-level CCS), ccsr, icd10_3 or icd10
        min_visits: patients with fewer visits are excluded
        seed: split seed
        split_from: split.csv files (e.g. an ICD dataset's) whose patients keep their split, so the patients left
            out of pretraining are the held-out ones; others go to train
        overwrite: replace a dataset already in out

    Example: cmbert finetune trajectory prepare --mimic ~/mimic-iv --out runs/trajectory-data --split-from
        runs/icd10-data/split.csv
    """
    _check_arguments(vocabulary, min_visits, test_size, val_size)
    mimic, out = Path(mimic), Path(out)
    if not mimic.is_dir():
        raise MissingInput(f"{mimic}: no such folder (expected a MIMIC-IV tree with hosp/ and note/)")
    for name in ("patients", "admissions", "diagnoses", "d_diagnoses"):
        _table(mimic, TABLES[name])
    split_files = builds.split_file_paths(split_from)
    builds.check_output(out, overwrite, DATASET_FILES, {"report.json"}, "a trajectory dataset")

    log = builds.stderr_log("trajectory prepare", verbose)

    report = builds.build_atomically(out, PARTIAL_MARKER, "trajectory prepare", lambda work: _build(
        work, mimic, vocabulary, min_visits, seed, test_size, val_size, split_files, log), log)
    log(f"wrote {out}: {report['categories']} {vocabulary} categories; " + ", ".join(
        f"{s} {v['patients']} patients / {v['samples']} samples" for s, v in report["splits"].items()))
    return report
