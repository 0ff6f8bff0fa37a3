"""ICD coding datasets from MIMIC-IV, built as Edin et al. (2023, "Automated Medical Coding on MIMIC-III and
MIMIC-IV: A Critical Review and Replicability Study"; repo JoakimEdin/medical-coding-reproducibility, scripts
`prepare_data/prepare_mimiciv.py` and `generate_mimiciv_splits.py`) build theirs, and read back for training.

`prepare_icd_dataset` (behind `cmbert finetune icd prepare`) writes one dataset per ICD version:
1. Labels: the rows of hosp `diagnoses_icd` and `procedures_icd` joined on hadm_id into one label set, so diagnoses
   and procedures are predicted together. Rows with no code, or with a code absent from the release's own
   `d_icd_*` table, are counted skips; (hadm_id, code) pairs are de-duplicated. Codes are dotted as Edin's
   `reformat_icd9/10` do: ICD-9 diagnoses after 3 characters (E-codes after 4), ICD-9 procedures after 2, ICD-10-CM
   after 3, ICD-10-PCS never. Diagnosis ICD-9 "0011" (001.1) and procedure "0011" (00.11) are different labels.
2. Notes: the discharge summaries of admissions coded in the requested version (an admission with rows of both
   versions, if any, keeps the rows of the requested one, as Edin's left join does; the report counts them). A note
   without hadm_id, one whose admission has no code rows, one coded only in the other version or only in unknown
   codes, and a second note with the same hadm_id and text (Edin drops those duplicates) are counted skips. A
   patient with admissions in both versions is in both datasets, as in Edin.
3. Frequency filter: codes on fewer than `min_count` notes (Edin: 10) are dropped, then notes left without codes.
   Optionally only the `top_k` most frequent codes are kept, and again notes left without codes are dropped.
4. Text: as stored, or Edin's preprocessing (`edin_preprocess`); optionally the first `max_words` whitespace words
   (Edin truncates every model's input to 4,000 words at training time; our default keeps the whole note).
5. Split by patient: subject_ids are split 75/10/15 by iterative multi-label stratification (Sechidis et al. 2011,
   the `iterative-stratification` package) on each patient's codes over all their notes: test first, then val from
   the rest, so no patient is in two splits and every frequent code reaches every split. Stratification comes before
   exact sizes: on 450-650 synthetic patients the patient fractions came out ~70/12.5/17.5.

Bounded memory: the code tables become {hadm_id: code ids} (for MIMIC-IV ~2M pairs, ~100 MB). Note text is never
held: pass 1 streams `discharge.csv.gz` and appends each selected note's (preprocessed) text, zlib-compressed, to a
staging file, keeping only (note_id, subject_id, hadm_id, offset, size, words, codes) per note; after the split,
pass 2 reads the staging file in order and writes the three jsonl.gz files. The largest allocation is the dense
patient x label matrix the stratifier needs: bool (1 byte a cell, the smallest type it accepts: it casts to bool
anyway), and iterstrat holds about three more copies of it while it runs (measured: peak ~4x the matrix). MIMIC-IV
ICD-10 (roughly 65k patients x 7.9k codes) is ~0.5 GB a copy, ~2 GB at peak; ICD-9 (roughly 100k x 6.1k) ~0.6 GB,
~2.5 GB at peak. The stratifier's time grows ~ patients x labels^2 (16k x 4k: 70 s on one core), so the full MIMIC-IV split
takes tens of minutes; synthetic trees of a few thousand patients take seconds.

A killed run never leaves a folder that looks complete: everything is written into `OUT.partial/` (report.json
last), which is renamed to OUT at the end; a leftover `OUT.partial/` from an earlier run is removed first.

Where we differ from Edin's code, on purpose:
- Edin's `reformat_icd10` writes a trailing dot on 3-character ICD-10-CM codes ("I10."); we write "I10".
- Codes outside the release's d_icd tables are dropped (Edin keeps every non-NaN code); the number is reported.
- The stratifier sees each patient's codes as presence (bool), not as counts summed over notes: Edin's own
  `iterative_stratification` weighs a patient with a code on 3 notes 3 times; iterstrat binarises its input.
- A note whose Edin-preprocessed text is empty is a counted skip (Edin keeps it, with no input at all).
- With `preprocess="none"`, `max_words` keeps the original text up to the end of the N-th word (layout intact);
  on Edin-preprocessed text this equals Edin's `" ".join(text.split()[:N])`.
- The split is ours (iterstrat, `seed`), not the split files Edin ships (`mimiciv_icd{9,10}_split.feather`, made
  by their own implementation with `random.seed(10)`): same protocol, different patients in each split.
- No training subsets (Edin's 10k..125k-note stratified subsets of train); `top_k` replaces MIMIC-III "top 50".

The folder format (train/val/test.jsonl.gz, labels.json, split.csv, exclude_subjects.txt, report.json) is the
contract in docs/icd.md ("The prepared dataset folder"); `load_labels`, `read_split` and `label_matrix` read it.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cmbert.core.builds import (
    build_atomically,
    check_output,
    check_split_sizes,
    gzip_text_writer,
    mimic_table,
    split_patients,
    stderr_log,
)
from cmbert.core.errors import MissingInput, UserError
from cmbert.core.io import SkipCounter
from cmbert.core.notes import PREPROCESSING, preprocess_text
from cmbert.data.icd_dataset import SPLITS
from cmbert.data.ontology import MIMIC_CODE_SYSTEMS, dotted
from cmbert.data.readers import read_icd_codes, read_icd_dictionary, read_mimic_notes

KINDS = ("diagnosis", "procedure")
# kind -> (codes table, dictionary table, `cmbert.data.ontology.MIMIC_CODE_SYSTEMS` key); the tables relative to the MIMIC-IV root, without ".csv.gz".
TABLES = {
    "diagnosis": ("hosp/diagnoses_icd", "hosp/d_icd_diagnoses", "diagnoses"),
    "procedure": ("hosp/procedures_icd", "hosp/d_icd_procedures", "procedures"),
}
NOTES_TABLE = "note/discharge"
PARTIAL_MARKER = ".icd_prepare_partial"  # marks OUT.partial/ as ours, so a leftover one may be removed
STAGING_FILE = "notes.staging"
DATASET_FILES = ("train.jsonl.gz", "val.jsonl.gz", "test.jsonl.gz", "labels.json", "split.csv",
                 "exclude_subjects.txt", "report.json")



# ------------------------------------------------------------------------------------------------------- reading API


# ---------------------------------------------------------------------------------------------------- preparation


@dataclass(slots=True)
class _StagedNote:
    """What pass 1 keeps of a note: everything but its text, which sits in the staging file at [offset, +size)."""

    note_id: str
    subject_id: int
    hadm_id: int
    offset: int
    size: int
    words: int
    codes: tuple[int, ...]  # code ids (see _CodeTable), before the frequency filter


@dataclass
class _CodeTable:
    """The requested version's codes per admission, as small ids into `keys` ((kind, raw MIMIC code))."""

    version: int
    keys: list[tuple[str, str]] = field(default_factory=list)
    ids: dict[tuple[str, str], int] = field(default_factory=dict)
    pending: dict[int, list[int]] = field(default_factory=dict)  # as read, duplicates included
    by_hadm: dict[int, tuple[int, ...]] = field(default_factory=dict)  # after `finish`: unique, sorted
    versions_by_hadm: dict[int, int] = field(default_factory=dict)  # bit 1: ICD-9 rows, bit 2: ICD-10 rows
    rows: Counter[str] = field(default_factory=Counter)  # per kind: rows of this version (before de-duplication)

    def mark(self, hadm_id: int, version: int) -> None:
        """Note that the admission has a code row of `version`."""
        self.versions_by_hadm[hadm_id] = self.versions_by_hadm.get(hadm_id, 0) | (1 if version == 9 else 2)

    def add(self, kind: str, hadm_id: int, code: str, version: int) -> None:
        self.mark(hadm_id, version)
        if version != self.version:
            return
        self.rows[kind] += 1
        key = (kind, code)
        code_id = self.ids.get(key)
        if code_id is None:
            code_id = self.ids[key] = len(self.keys)
            self.keys.append(key)
        self.pending.setdefault(hadm_id, []).append(code_id)

    def finish(self) -> dict[str, int]:
        """De-duplicate (hadm_id, code) and freeze each admission's codes; returns the duplicates removed per kind."""
        duplicates: Counter[str] = Counter()
        for hadm_id, code_ids in self.pending.items():
            unique = tuple(sorted(set(code_ids)))
            for code_id in unique:
                duplicates[self.keys[code_id][0]] += code_ids.count(code_id) - 1
            self.by_hadm[hadm_id] = unique
        self.pending.clear()
        return {kind: duplicates[kind] for kind in KINDS}


# A missing required table's error says what the ICD builder reads.
_NEEDS = ("the MIMIC-IV tree needs hosp/diagnoses_icd, hosp/procedures_icd, hosp/d_icd_diagnoses, "
          "hosp/d_icd_procedures and note/discharge")


def _check_arguments(version: int, min_count: int, top_k: int | None, preprocess: str, max_words: int | None,
                     test_size: float, val_size: float) -> None:
    if version not in (9, 10):
        raise UserError(f"ICD version must be 9 or 10, got {version!r}")
    if min_count < 1:
        raise UserError(f"min_count must be at least 1, got {min_count}")
    if top_k is not None and top_k < 1:
        raise UserError(f"top_k must be at least 1, got {top_k}")
    if preprocess not in PREPROCESSING:
        raise UserError(f"preprocess must be one of {', '.join(PREPROCESSING)}, got {preprocess!r}")
    if max_words is not None and max_words < 1:
        raise UserError(f"max_words must be at least 1, got {max_words}")
    check_split_sizes(test_size, val_size)


def _words_summary(words: list[int]) -> dict:
    if not words:
        return {"mean": 0.0, "median": 0.0, "p95": 0.0, "max": 0}
    return {"mean": round(statistics.fmean(words), 1), "median": round(float(np.median(words)), 1),
            "p95": round(float(np.percentile(words, 95)), 1), "max": max(words)}


def _build_dataset(work: Path, inputs: dict[str, tuple[Path, Path]], notes_path: Path, version: int, min_count: int,
                   top_k: int | None, preprocess: str, max_words: int | None, seed: int, test_size: float,
                   val_size: float, log: Callable[[str], None]) -> dict:
    """Everything but report.json into `work`; returns the report. The steps of the module docstring, in order."""
    # --- Codes: {hadm_id: code ids} of this version, from the rows whose code the release's dictionary knows.
    titles: dict[str, dict[int, dict[str, str]]] = {}
    dictionary_counters = {kind: SkipCounter() for kind in KINDS}
    code_counters = {kind: SkipCounter() for kind in KINDS}
    table = _CodeTable(version)
    for kind in KINDS:
        codes_path, dictionary_path = inputs[kind]
        titles[kind] = read_icd_dictionary(dictionary_path, dictionary_counters[kind])
        counter = code_counters[kind]
        # `known` is applied here, not in the reader, so that an admission whose codes are all unknown is still
        # seen as coded (its note is then skipped as ``no_known_codes``, not ``admission_not_coded``).
        for row in read_icd_codes(codes_path, None, counter):
            if row.code in titles[kind][row.version]:
                table.add(kind, row.hadm_id, row.code, row.version)
            else:
                table.mark(row.hadm_id, row.version)
                counter.kept -= 1
                counter.skip("unknown_code", f"{codes_path.name}: ICD-{row.version} {row.code} (hadm_id {row.hadm_id})")
    duplicates = table.finish()
    log(f"{len(table.by_hadm):,} admissions coded in ICD-{version}, {len(table.keys):,} distinct codes")

    # --- Pass 1: select the notes, stage their text, keep their metadata.
    notes = SkipCounter()

    def drop(reason: str, note_id: str) -> None:
        # The reader counted the note as kept; moving it to a skip keeps read == kept + skipped for the report.
        notes.kept -= 1
        notes.skip(reason, f"note_id {note_id}")

    this_version_bit = 1 if version == 9 else 2
    seen: set[bytes] = set()
    staged: list[_StagedNote] = []
    mixed_notes = 0
    with open(work / STAGING_FILE, "wb") as staging:
        for note in read_mimic_notes(notes_path, notes):
            if note.hadm_id is None:
                drop("no_hadm_id", note.note_id)
                continue
            bits = table.versions_by_hadm.get(note.hadm_id, 0)
            if not bits:
                drop("admission_not_coded", note.note_id)
                continue
            if not bits & this_version_bit:
                drop("other_icd_version", note.note_id)
                continue
            if note.hadm_id not in table.by_hadm:  # its rows of this version all had unknown codes
                drop("no_known_codes", note.note_id)
                continue
            fingerprint = hashlib.blake2b(f"{note.hadm_id}\n{note.text}".encode(), digest_size=16).digest()
            if fingerprint in seen:
                drop("duplicate_note", note.note_id)
                continue
            seen.add(fingerprint)
            text = preprocess_text(note.text, preprocess, max_words)
            if not text.strip():
                drop("empty_after_preprocessing", note.note_id)
                continue
            mixed_notes += bits == 3
            blob = zlib.compress(text.encode("utf-8"), 1)
            staged.append(_StagedNote(note.note_id, note.subject_id, note.hadm_id, staging.tell(), len(blob),
                                      len(text.split()), table.by_hadm[note.hadm_id]))
            staging.write(blob)
    del seen
    log(f"{notes.read:,} notes read, {len(staged):,} of ICD-{version} admissions staged")

    # --- Frequency filter (per code: Edin filters per column, diagnoses and procedures, which is the same thing as
    # the two kinds never share a dotted code), then top-k; notes left without codes are dropped.
    occurrences = Counter(code_id for entry in staged for code_id in entry.codes)
    kept_ids = {code_id for code_id, n in occurrences.items() if n >= min_count}
    code_counts = {kind: {"before_min_count": sum(1 for c in occurrences if table.keys[c][0] == kind),
                          "after_min_count": sum(1 for c in kept_ids if table.keys[c][0] == kind)} for kind in KINDS}

    def dotted_code(code_id: int) -> str:
        kind, raw = table.keys[code_id]
        return dotted(raw, MIMIC_CODE_SYSTEMS[TABLES[kind][2]][version])

    if top_k is not None:
        ranked = sorted(kept_ids, key=lambda c: (-occurrences[c], dotted_code(c)))
        kept_ids = set(ranked[:top_k])
        for kind in KINDS:
            code_counts[kind]["after_top_k"] = sum(1 for c in kept_ids if table.keys[c][0] == kind)
    selected: list[_StagedNote] = []
    for entry in staged:
        entry.codes = tuple(c for c in entry.codes if c in kept_ids)
        if entry.codes:
            selected.append(entry)
        else:
            notes.kept -= 1
            reason = "no_codes_after_min_count" if top_k is None or not any(
                occurrences[c] >= min_count for c in table.by_hadm[entry.hadm_id]) else "no_codes_in_top_k"
            notes.skip(reason, f"note_id {entry.note_id}")
    label_ids = sorted(kept_ids, key=lambda c: (-occurrences[c], dotted_code(c)))
    column_of = {code_id: column for column, code_id in enumerate(label_ids)}
    codes_dotted = [dotted_code(c) for c in label_ids]
    if len(set(codes_dotted)) != len(codes_dotted):
        raise ValueError("two ICD codes of different kinds have the same dotted form; cannot label them apart")
    if not selected:
        raise UserError(f"no ICD-{version} notes are left after the filters (min_count={min_count}, top_k={top_k})")

    # --- Split by patient: each patient's labels over all their notes (presence), iteratively stratified.
    subjects = sorted({entry.subject_id for entry in selected})
    row_of = {subject: row for row, subject in enumerate(subjects)}
    columns_of: list[set[int]] = [set() for _ in subjects]
    for entry in selected:
        columns_of[row_of[entry.subject_id]].update(column_of[c] for c in entry.codes)
    patient_columns = [np.fromiter(sorted(columns), dtype=np.int32, count=len(columns)) for columns in columns_of]
    del columns_of, row_of
    log(f"splitting {len(subjects):,} patients x {len(label_ids):,} codes "
        f"({len(subjects) * len(label_ids) / 2**20:,.1f} MiB bool matrix, ~4x that at peak)")
    split_of = dict(zip(subjects, split_patients(patient_columns, len(label_ids), seed, test_size, val_size),
                        strict=True))
    del patient_columns

    # --- Pass 2: the three jsonl.gz files, in discharge-file order within each split.
    train_counts = Counter()
    per_split = {split: {"notes": 0, "patients": set(), "codes": 0, "words": [], "present": set()} for split in SPLITS}
    writers = {split: gzip_text_writer(work / f"{split}.jsonl.gz") for split in SPLITS}
    try:
        with open(work / STAGING_FILE, "rb") as staging:
            for entry in selected:
                staging.seek(entry.offset)
                text = zlib.decompress(staging.read(entry.size)).decode("utf-8")
                split = split_of[entry.subject_id]
                columns = sorted(column_of[c] for c in entry.codes)
                record = {"note_id": entry.note_id, "subject_id": entry.subject_id, "hadm_id": entry.hadm_id,
                          "text": text, "codes": [codes_dotted[col] for col in columns]}
                writers[split].write(json.dumps(record, ensure_ascii=False) + "\n")
                stats = per_split[split]
                stats["notes"] += 1
                stats["patients"].add(entry.subject_id)
                stats["codes"] += len(columns)
                stats["words"].append(entry.words)
                stats["present"].update(columns)
                if split == "train":
                    train_counts.update(columns)
    finally:
        for writer in writers.values():
            writer.close()
    (work / STAGING_FILE).unlink()

    # --- labels.json, split.csv, exclude_subjects.txt, then report.json last.
    entries = []
    for column, code_id in enumerate(label_ids):
        kind, raw = table.keys[code_id]
        entries.append({"code": codes_dotted[column], "raw": raw, "kind": kind, "title": titles[kind][version][raw],
                        "count": occurrences[code_id], "train_count": train_counts[column]})
    labels_meta = {"version": version, "min_count": min_count, "top_k": top_k, "preprocess": preprocess,
                   "max_words": max_words, "codes": entries}
    (work / "labels.json").write_text(json.dumps(labels_meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    with open(work / "split.csv", "w", encoding="utf-8", newline="\n") as file:
        file.write("subject_id,split\n")
        file.writelines(f"{subject},{split_of[subject]}\n" for subject in subjects)
    held_out = sorted(subject for subject in subjects if split_of[subject] != "train")
    (work / "exclude_subjects.txt").write_text("".join(f"{subject}\n" for subject in held_out), encoding="utf-8")

    zero_train = [codes_dotted[col] for col in range(len(label_ids)) if train_counts[col] == 0]
    all_words = [entry.words for entry in selected]
    report = {
        "version": version, "min_count": min_count, "top_k": top_k, "preprocess": preprocess, "max_words": max_words,
        "seed": seed, "test_size": test_size, "val_size": val_size,
        "inputs": {"notes": str(notes_path), **{f"{kind}_codes": str(paths[0]) for kind, paths in inputs.items()},
                   **{f"{kind}_dictionary": str(paths[1]) for kind, paths in inputs.items()}},
        "notes": notes.as_dict(),
        "code_rows": {kind: {**code_counters[kind].as_dict(), f"icd{version}_rows": table.rows[kind],
                             "duplicate_rows": duplicates[kind]} for kind in KINDS},
        "dictionary_rows": {kind: dictionary_counters[kind].as_dict() for kind in KINDS},
        "admissions": {f"coded_icd{version}": len(table.by_hadm),
                       "mixed_icd_versions": sum(1 for bits in table.versions_by_hadm.values() if bits == 3),
                       "notes_from_mixed_admissions": mixed_notes},
        "codes": code_counts,
        "labels": len(label_ids),
        "patients": len(subjects),
        "text_words": _words_summary(all_words),
        "splits": {split: {"notes": stats["notes"], "patients": len(stats["patients"]),
                           "patient_fraction": round(len(stats["patients"]) / len(subjects), 4),
                           "note_fraction": round(stats["notes"] / len(selected), 4),
                           "label_cardinality_mean": round(stats["codes"] / max(stats["notes"], 1), 3),
                           "codes_absent": len(label_ids) - len(stats["present"]),
                           "text_words": _words_summary(stats["words"])}
                   for split, stats in per_split.items()},
        "codes_with_zero_train_examples": len(zero_train),
        "codes_with_zero_train_examples_first": zero_train[:10],
    }
    return report


def prepare_icd_dataset(mimic: str | Path, out: str | Path, version: int, min_count: int = 10,
                        top_k: int | None = None, preprocess: str = "none", max_words: int | None = None,
                        seed: int = 10, test_size: float = 0.15, val_size: float = 0.10, overwrite: bool = False,
                        verbose: bool = True) -> dict:
    """Build the ICD-`version` coding dataset of a MIMIC-IV tree into `out` (the format of docs/icd.md) and
    return its report (also written to `out/report.json`). The same inputs and seed give the same bytes.

    `mimic` holds hosp/{diagnoses_icd, procedures_icd, d_icd_diagnoses, d_icd_procedures}.csv.gz and
    note/discharge.csv.gz. `out` must be new, empty, or (with `overwrite`) an earlier dataset. Progress lines (counts
    only, never text) go to stderr unless `verbose` is False.

    Args:
        mimic: MIMIC-IV root with hosp/ and note/discharge.csv.gz
        version: ICD version of the dataset: 9 or 10
        out: the dataset folder
        min_count: drop codes of fewer notes (Edin's: 10)
        top_k: keep only the K most frequent codes (e.g. 50)
        preprocess: none, or edin: lowercase, alphanumerics only, no standalone numbers (Edin et al.'s rules)
        max_words: keep the first N words (Edin: 4000)
        seed: split seed (Edin's: 10)
        overwrite: replace a dataset already in out

    Example: cmbert finetune icd prepare --mimic ~/mimic-iv --version 10 --out runs/icd10-data
    """
    _check_arguments(version, min_count, top_k, preprocess, max_words, test_size, val_size)
    mimic, out = Path(mimic), Path(out)
    if not mimic.is_dir():
        raise MissingInput(f"{mimic}: no such folder (expected a MIMIC-IV tree with hosp/ and note/)")
    inputs = {kind: (mimic_table(mimic, codes, _NEEDS), mimic_table(mimic, dictionary, _NEEDS))
              for kind, (codes, dictionary, _) in TABLES.items()}
    notes_path = mimic_table(mimic, NOTES_TABLE, _NEEDS)
    check_output(out, overwrite, DATASET_FILES, {"report.json", "labels.json"}, "an ICD dataset")

    log = stderr_log("icd prepare", verbose)

    report = build_atomically(out, PARTIAL_MARKER, "icd prepare", lambda work: _build_dataset(
        work, inputs, notes_path, version, min_count, top_k, preprocess, max_words, seed, test_size, val_size, log),
        log)
    fractions = ", ".join(f"{split} {report['splits'][split]['patient_fraction']:.3f}" for split in SPLITS)
    log(f"wrote {out}: {report['notes']['kept']:,} notes, {report['labels']:,} codes, patients {fractions}")
    return report
