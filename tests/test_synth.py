"""The synthetic MIMIC-IV generator: MIMIC's exact files, columns and formats; real ICD codes coded by era; byte
determinism; patients that do not depend on how many are made; and notes with the structure, negations and lengths the
downstream tasks need."""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
import string
import subprocess
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import pytest

from cmbert.data.ontology import titles
from cmbert.data.synth import COMBINATION_CODES, _build_admission, _make_patient, _providers, synthesize_mimic
from cmbert.data.synth_catalog import CHRONIC, CONDITIONS, FAMILY_HISTORY, FINDINGS, PROCEDURES

REPO = Path(__file__).resolve().parents[1]

# MIMIC-IV v2.2 / MIMIC-IV-Note v2.2 columns, written out here as the spec (not imported from the generator).
EXPECTED_COLUMNS = {
    "hosp/patients": ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"],
    "hosp/admissions": ["subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "admission_type",
                        "admit_provider_id", "admission_location", "discharge_location", "insurance", "language",
                        "marital_status", "race", "edregtime", "edouttime", "hospital_expire_flag"],
    "hosp/diagnoses_icd": ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"],
    "hosp/procedures_icd": ["subject_id", "hadm_id", "seq_num", "chartdate", "icd_code", "icd_version"],
    "hosp/d_icd_diagnoses": ["icd_code", "icd_version", "long_title"],
    "hosp/d_icd_procedures": ["icd_code", "icd_version", "long_title"],
    "note/discharge": ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"],
    "note/radiology": ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"],
}
ADMISSION_TYPES = {"EW EMER.", "URGENT", "ELECTIVE", "OBSERVATION ADMIT", "EU OBSERVATION", "DIRECT EMER.",
                   "SURGICAL SAME DAY ADMISSION", "AMBULATORY OBSERVATION", "DIRECT OBSERVATION"}
YEAR_GROUPS = {"2008 - 2010": (2008, 2010), "2011 - 2013": (2011, 2013), "2014 - 2016": (2014, 2016),
               "2017 - 2019": (2017, 2019)}
SECTIONS = ("Chief Complaint:", "Major Surgical or Invasive Procedure:", "History of Present Illness:",
            "Past Medical History:", "Social History:", "Family History:", "Physical Exam:", "Pertinent Results:",
            "Brief Hospital Course:", "Medications on Admission:", "Discharge Medications:",
            "Discharge Disposition:", "Discharge Diagnosis:", "Discharge Condition:", "Discharge Instructions:",
            "Followup Instructions:")
TIMESTAMP = re.compile(r"^(\d{4})-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
DATE = re.compile(r"^(\d{4})-\d{2}-\d{2}$")
NEGATION = re.compile(r"\b(no evidence of|ruled out|denies|negative for|without signs of|unlikely|no \w+ to suggest)\b",
                      re.IGNORECASE)
FMT = "%Y-%m-%d %H:%M:%S"
MAIN_PATIENTS = 300


def read(root: Path, name: str) -> list[dict[str, str]]:
    with gzip.open(root / f"{name}.csv.gz", "rt", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def header(root: Path, name: str) -> list[str]:
    with gzip.open(root / f"{name}.csv.gz", "rt", encoding="utf-8", newline="") as handle:
        return next(csv.reader(handle))


@pytest.fixture(scope="module")
def main_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "mimic"
    return out, synthesize_mimic(out, patients=MAIN_PATIENTS, seed=0)


@pytest.fixture(scope="module")
def tables(main_run) -> dict[str, list[dict[str, str]]]:
    root, _ = main_run
    return {name: read(root, name) for name in EXPECTED_COLUMNS if not name.startswith("hosp/d_icd")}


def test_files_have_mimic_columns_in_order(main_run):
    root, _ = main_run
    for name, columns in EXPECTED_COLUMNS.items():
        assert header(root, name) == columns, name


def test_summary_matches_files(main_run, tables):
    root, summary = main_run
    assert json.loads((root / "synth_report.json").read_text()) == summary
    assert summary["patients"] == len(tables["hosp/patients"]) == MAIN_PATIENTS
    assert summary["admissions"] == len(tables["hosp/admissions"])
    assert summary["diagnoses_icd"] == len(tables["hosp/diagnoses_icd"])
    assert summary["discharge_notes"] == len(tables["note/discharge"])
    assert summary["radiology_reports"] == len(tables["note/radiology"])
    # one to many admissions per patient, some with many
    per_patient = defaultdict(int)
    for row in tables["hosp/admissions"]:
        per_patient[row["subject_id"]] += 1
    assert len(per_patient) == MAIN_PATIENTS
    assert max(per_patient.values()) >= 5 and min(per_patient.values()) == 1


def test_patient_and_admission_values(tables):
    for row in tables["hosp/patients"]:
        assert re.fullmatch(r"1\d{7}", row["subject_id"])
        assert row["gender"] in ("F", "M")
        assert 18 <= int(row["anchor_age"]) <= 91
        assert 2110 <= int(row["anchor_year"]) <= 2210
        assert row["anchor_year_group"] in YEAR_GROUPS
        assert row["dod"] == "" or DATE.match(row["dod"])
    hadm_ids = [row["hadm_id"] for row in tables["hosp/admissions"]]
    assert len(set(hadm_ids)) == len(hadm_ids)
    for row in tables["hosp/admissions"]:
        assert re.fullmatch(r"2\d{7}", row["hadm_id"])
        for column in ("admittime", "dischtime"):
            assert 2110 <= int(TIMESTAMP.match(row[column]).group(1)) <= 2210
        for column in ("deathtime", "edregtime", "edouttime"):
            assert row[column] == "" or TIMESTAMP.match(row[column])
        admit, disch = datetime.strptime(row["admittime"], FMT), datetime.strptime(row["dischtime"], FMT)
        assert disch > admit
        if row["edregtime"]:
            assert datetime.strptime(row["edregtime"], FMT) < datetime.strptime(row["edouttime"], FMT)
        assert row["admission_type"] in ADMISSION_TYPES
        assert re.fullmatch(r"P[0-9A-F]{5}", row["admit_provider_id"])
        assert row["insurance"] in ("Medicare", "Medicaid", "Other")
        assert row["language"] in ("ENGLISH", "?")
        assert row["hospital_expire_flag"] in ("0", "1")
        assert (row["hospital_expire_flag"] == "1") == (row["deathtime"] != "") == (row["discharge_location"] == "DIED")
    deaths = [r for r in tables["hosp/admissions"] if r["hospital_expire_flag"] == "1"]
    assert deaths, "some patients die in hospital"
    dod = {r["subject_id"]: r["dod"] for r in tables["hosp/patients"]}
    for row in deaths:
        assert dod[row["subject_id"]] == row["deathtime"][:10]


def test_codes_are_dotless_real_and_in_the_dictionaries(main_run, tables):
    root, summary = main_run
    systems = {("dx", "9"): "icd9cm", ("dx", "10"): "icd10cm", ("px", "9"): "icd9pcs", ("px", "10"): "icd10pcs"}
    dictionaries = {
        kind: {(r["icd_code"], r["icd_version"]) for r in read(root, f"hosp/d_icd_{name}")}
        for kind, name in (("dx", "diagnoses"), ("px", "procedures"))}
    assert len(dictionaries["dx"]) == summary["d_icd_diagnoses"] == len(titles("icd9cm")) + len(titles("icd10cm"))
    assert len(dictionaries["px"]) == summary["d_icd_procedures"] == len(titles("icd9pcs")) + len(titles("icd10pcs"))
    for kind, name in (("dx", "hosp/diagnoses_icd"), ("px", "hosp/procedures_icd")):
        seqs = defaultdict(list)
        for row in tables[name]:
            assert re.fullmatch(r"[0-9A-Z]{3,7}", row["icd_code"]), row["icd_code"]
            assert row["icd_version"] in ("9", "10")
            assert row["icd_code"] in titles(systems[(kind, row["icd_version"])])
            assert (row["icd_code"], row["icd_version"]) in dictionaries[kind]
            seqs[row["hadm_id"]].append(int(row["seq_num"]))
            if kind == "px":
                assert DATE.match(row["chartdate"])
        assert all(s == list(range(1, len(s) + 1)) for s in seqs.values()), "seq_num runs 1..n per admission"
    distinct = {(r["icd_code"], r["icd_version"]) for r in tables["hosp/diagnoses_icd"]}
    assert len(distinct) >= 150, "a non-trivial label space"


def test_catalog_uses_only_real_billable_codes():
    cm9, cm10, pcs9, pcs10 = (titles(s) for s in ("icd9cm", "icd10cm", "icd9pcs", "icd10pcs"))
    # ICD-10-CM titles hold categories and subcategories too: only leaves (billable codes) may be used
    parents = {code[:n] for code in cm10 for n in range(3, len(code))}
    for cond in CONDITIONS.values():
        for variant in cond.variants:
            assert variant.icd9 and variant.icd10, cond.key
            assert all(c in cm9 for c in variant.icd9), (cond.key, variant.icd9)
            assert all(c in cm10 and c not in parents for c in variant.icd10), (cond.key, variant.icd10)
    for proc in PROCEDURES.values():
        for option in proc.options:
            assert option.icd9 and option.icd10, proc.key
            assert all(c in pcs9 for c in option.icd9) and all(c in pcs10 for c in option.icd10), proc.key
    for (rule, version), code in COMBINATION_CODES.items():
        table = cm9 if version == 9 else cm10
        assert code in table and (version == 9 or code not in parents), rule
    n_codes = len({c for cond in CONDITIONS.values() for v in cond.variants for c in (*v.icd9, *v.icd10)})
    assert n_codes >= 150


def test_catalog_references_resolve():
    for cond in CONDITIONS.values():
        for key in (*cond.requires, *cond.replaces, *cond.differentials, *(k for k, _ in cond.complications),
                    *(k for k, _ in cond.leaves), *(e.partition(":")[0] for e in cond.excludes)):
            assert key in CONDITIONS, (cond.key, key)
        for spec, _ in cond.procedures:
            assert all(k in PROCEDURES for k in spec.split("|")), (cond.key, spec)
        for exam, finding, _ in cond.imaging:
            assert (exam, finding) in FINDINGS, (cond.key, exam, finding)


def _templates(cond):
    variant_texts = [t for v in cond.variants for t in v.evidence]
    return [*cond.cc, *cond.hpi, *cond.evidence, *cond.course, *cond.daily, *cond.negations, *cond.instructions,
            *(text for _, text in cond.exam), *variant_texts]


def test_catalog_templates_only_use_known_fields_and_markers():
    """Every {field} of every template is a value the generator provides; every [marker] names a procedure or a
    condition."""
    patient = _make_patient(0, seed=0)
    admission = _build_admission(patient, 0, 0, patient.start, _providers(0))
    fields = set(admission.values) | {"t", "T"}
    marker = re.compile(r"^\[(!?)([a-z_|]+)\]")
    for cond in CONDITIONS.values():
        for template in _templates(cond):
            if (match := marker.match(template)) is not None:
                assert all(k in PROCEDURES or k in CONDITIONS for k in match.group(2).split("|")), template
                template = template[match.end():]
            names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
            assert names <= fields, (cond.key, names - fields)
    for template in FAMILY_HISTORY:
        assert {n for _, n, _, _ in string.Formatter().parse(template) if n} <= {"rel_a", "rel_b"}


def _patients_by_subject(tables):
    admissions = defaultdict(list)
    for row in tables["hosp/admissions"]:
        admissions[row["subject_id"]].append(row)
    codes = defaultdict(list)
    for row in tables["hosp/diagnoses_icd"]:
        codes[row["hadm_id"]].append((row["icd_code"], row["icd_version"]))
    return admissions, codes


def test_icd9_before_the_switch_icd10_after(tables):
    """Discharges before the real 2015-10-01 are ICD-9, later ones ICD-10. The shift is hidden, but anchor_year_group
    bounds it: real year of anchor_year is in [lo, hi], so the switch in shifted time lies between
    (2015 + anchor_year - hi)-10-01 and (2015 + anchor_year - lo)-10-01."""
    admissions, codes = _patients_by_subject(tables)
    proc_versions = defaultdict(set)
    for row in tables["hosp/procedures_icd"]:
        proc_versions[row["hadm_id"]].add(row["icd_version"])
    both = 0
    for patient in tables["hosp/patients"]:
        lo, hi = YEAR_GROUPS[patient["anchor_year_group"]]
        anchor = int(patient["anchor_year"])
        latest_switch, earliest_switch = datetime(2015 + anchor - lo, 10, 1), datetime(2015 + anchor - hi, 10, 1)
        versions_in_time = []
        for adm in sorted(admissions[patient["subject_id"]], key=lambda r: r["admittime"]):
            versions = {v for _, v in codes[adm["hadm_id"]]}
            assert len(versions) == 1, "one coding system per admission"
            version = versions.pop()
            assert proc_versions[adm["hadm_id"]] <= {version}
            disch = datetime.strptime(adm["dischtime"], FMT)
            if version == "9":
                assert disch < latest_switch
            else:
                assert disch >= earliest_switch
            versions_in_time.append(version)
        assert versions_in_time == sorted(versions_in_time, key=lambda v: v == "10"), "never back to ICD-9"
        both += len(set(versions_in_time)) == 2
    assert both > 0, "some patients are coded in both systems"


def test_chronic_conditions_persist_and_cross_the_switch(tables):
    admissions, codes = _patients_by_subject(tables)
    chronic9 = {c: v for cond in CHRONIC for v in cond.variants for c in v.icd9}
    persisted = crossed = 0
    for rows in admissions.values():
        rows = sorted(rows, key=lambda r: r["admittime"])
        seen = defaultdict(int)
        for adm in rows:
            for code in {c for c, _ in codes[adm["hadm_id"]]}:
                seen[code] += 1
        persisted += any(n >= 2 for code, n in seen.items() if code in chronic9)
        # the same condition as its ICD-9 code early and its ICD-10 code later
        early = {c for adm in rows for c, v in codes[adm["hadm_id"]] if v == "9"}
        late = {c for adm in rows for c, v in codes[adm["hadm_id"]] if v == "10"}
        crossed += any(set(chronic9[c].icd10) & late for c in early if c in chronic9)
    assert persisted > 0 and crossed > 0


def test_notes_link_to_admissions_and_have_mimic_ids(tables):
    admissions = {r["hadm_id"]: r for r in tables["hosp/admissions"]}
    discharge_per_admission = defaultdict(int)
    for row in tables["note/discharge"]:
        assert row["hadm_id"] in admissions
        discharge_per_admission[row["hadm_id"]] += 1
        assert row["note_id"] == f"{row['subject_id']}-DS-{row['note_seq']}" and row["note_type"] == "DS"
        assert TIMESTAMP.match(row["charttime"]) and (row["storetime"] == "" or TIMESTAMP.match(row["storetime"]))
        assert row["charttime"][:10] == admissions[row["hadm_id"]]["dischtime"][:10]
        assert admissions[row["hadm_id"]]["subject_id"] == row["subject_id"]
    assert max(discharge_per_admission.values()) == 1
    outpatient = 0
    for row in tables["note/radiology"]:
        assert row["note_id"] == f"{row['subject_id']}-RR-{row['note_seq']}" and row["note_type"] == "RR"
        assert TIMESTAMP.match(row["charttime"]) and TIMESTAMP.match(row["storetime"])
        if row["hadm_id"]:
            assert row["hadm_id"] in admissions
        else:
            outpatient += 1
    assert outpatient > 0, "some radiology reports are outpatient, with no hadm_id"
    note_ids = [r["note_id"] for r in tables["note/discharge"] + tables["note/radiology"]]
    assert len(set(note_ids)) == len(note_ids)


def test_discharge_notes_look_like_mimic(tables):
    notes = [row["text"] for row in tables["note/discharge"]]
    for text in notes:
        assert text.startswith(" \nName:  ___                     Unit No:   ___\n \nAdmission Date:  ___")
        assert "Attending: ___." in text
        positions = [text.index("\n" + heading + "\n") for heading in SECTIONS]
        assert positions == sorted(positions), "sections in MIMIC's order"
        assert "\n\n" not in text, "blank lines are ' \\n' as in MIMIC"
    assert sum(bool(NEGATION.search(t)) for t in notes) > 0.8 * len(notes), "notes rule conditions out"
    assert any("# " in t for t in notes), "problem-based hospital courses"
    for row in tables["note/radiology"]:
        text = row["text"]
        for heading in ("EXAMINATION:", "INDICATION:  ___", "TECHNIQUE:", "COMPARISON:", "FINDINGS:", "IMPRESSION:"):
            assert heading in text, heading


def test_notes_name_their_principal_diagnosis(tables):
    """The coded principal diagnosis is written in the note: one of its condition's surface forms or its title."""
    principal = {r["hadm_id"]: (r["icd_code"], r["icd_version"]) for r in tables["hosp/diagnoses_icd"]
                 if r["seq_num"] == "1"}
    forms = defaultdict(set)
    for cond in CONDITIONS.values():
        for variant in cond.variants:
            names = {t.lower() for t in (*cond.terms, *variant.terms)}
            forms[(variant.icd9[0], "9")] |= names
            forms[(variant.icd10[0], "10")] |= names
    checked = 0
    for row in tables["note/discharge"]:
        code = principal[row["hadm_id"]]
        system = "icd9cm" if code[1] == "9" else "icd10cm"
        names = forms[code] | {titles(system)[code[0]].lower()}
        diagnosis = row["text"].split("Discharge Diagnosis:")[1].lower()
        assert any(name in diagnosis for name in names), row["note_id"]
        checked += 1
    assert checked > 0


def test_procedure_claims_follow_the_procedures_done(tables):
    """A note says a stent was placed only when the admission has the PCI codes, and never shows a template marker."""
    pci = {"027034Z", "3607"}
    stented = {r["hadm_id"] for r in tables["hosp/procedures_icd"] if r["icd_code"] in pci}
    claims = 0
    for row in tables["note/discharge"]:
        for match in re.finditer(r"\[!?([a-z_|]+)\]", row["text"]):  # titles have brackets too: "adhesions [bands]"
            assert not all(k in PROCEDURES or k in CONDITIONS for k in match.group(1).split("|")), row["note_id"]
        if "drug-eluting stent to the culprit lesion" in row["text"]:
            claims += 1
            assert row["hadm_id"] in stented, row["note_id"]
    assert claims > 0


def test_some_notes_are_long(main_run, tables):
    _, summary = main_run
    long_notes = [r for r in tables["note/discharge"] if len(r["text"].split()) * 1.3 > 8192]
    assert long_notes and summary["long_discharge_notes"] == len(long_notes)
    assert all(len(r["text"]) < 131072 for r in tables["note/discharge"]), "fits csv's default field limit"


def test_csv_is_mimic_style_and_round_trips(main_run, tables):
    root, _ = main_run
    raw = gzip.open(root / "note/discharge.csv.gz", "rb").read()
    assert raw.startswith(b"note_id,subject_id,hadm_id,note_type,note_seq,charttime,storetime,text\n")
    assert b"\r\n" not in raw[:100_000]
    assert b'," \nName:  ___' in raw, "the text field is double-quoted"
    assert all("\n" in r["text"] for r in tables["note/discharge"])
    for name in EXPECTED_COLUMNS:
        data = (root / f"{name}.csv.gz").read_bytes()
        assert data[:2] == b"\x1f\x8b" and data[4:8] == b"\x00\x00\x00\x00", "gzip mtime 0"
        assert not data[3] & 0x08, "no file name in the gzip header"


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("small")
    runs = {"first25": base / "a", "other_seed": base / "b"}
    synthesize_mimic(runs["first25"], patients=25, seed=0)
    synthesize_mimic(runs["other_seed"], patients=25, seed=1)
    return runs


def test_same_seed_same_bytes_in_another_process(main_run):
    """A second run, in a fresh interpreter with a different hash seed, writes byte-identical files."""
    root, _ = main_run
    again = root.parent / "again"
    code = f"from cmbert.data.synth import synthesize_mimic; synthesize_mimic({str(again)!r}, {MAIN_PATIENTS}, seed=0)"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True, timeout=300)
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for name in files:
        assert (root / name).read_bytes() == (again / name).read_bytes(), name


def test_other_seed_differs(main_run, small_runs):
    root, _ = main_run
    ours = read(root, "hosp/patients")[:25]
    assert read(small_runs["other_seed"], "hosp/patients") != ours


def test_patient_k_does_not_depend_on_patient_count(tables, small_runs):
    small = small_runs["first25"]
    subjects = {r["subject_id"] for r in read(small, "hosp/patients")}
    assert read(small, "hosp/patients") == tables["hosp/patients"][:25]
    for name in ("hosp/admissions", "hosp/diagnoses_icd", "hosp/procedures_icd", "note/discharge", "note/radiology"):
        assert read(small, name) == [r for r in tables[name] if r["subject_id"] in subjects], name


def test_rejects_a_bad_patient_count(tmp_path):
    with pytest.raises(ValueError, match="patients"):
        synthesize_mimic(tmp_path, patients=0)
