"""What the task dataset builders (`finetune icd prepare`, `finetune trajectory prepare`, `bhc prepare`) share:
finding a MIMIC-IV table, refusing an output folder that is not theirs, building into OUT.partial/ and renaming it at
the end, gzip files whose bytes depend on their content only, and patient-level splits (seeded, or fixed by another
task's split.csv)."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cmbert.core.errors import MissingInput, OutputInTheWay, UserError
from cmbert.core.io import ReadError, read_csv_table


def mimic_table(mimic: Path, name: str, needs: str, required: bool = True) -> Path | None:
    """`mimic/name.csv.gz`, or the plain `.csv` (the readers detect gzip by content); None for a missing optional
    table. `needs` ends the error of a missing required one (which tables the builder reads)."""
    for suffix in (".csv.gz", ".csv"):
        if (mimic / f"{name}{suffix}").is_file():
            return mimic / f"{name}{suffix}"
    if required:
        raise MissingInput(f"{mimic / (name + '.csv.gz')}: no such file ({needs})")
    return None


def check_split_sizes(test_size: float, val_size: float) -> None:
    if not (0 < test_size < 1 and 0 < val_size < 1 and test_size + val_size < 1):
        raise UserError(f"test_size and val_size must be in (0, 1) with a sum below 1, got {test_size} and {val_size}")


def check_output(out: Path, overwrite: bool, files: tuple[str, ...], required: set[str], kind: str) -> None:
    """Refuse an OUT that holds something else, or a finished dataset unless `overwrite`. Overwriting deletes the
    folder: only one that holds the `required` files and nothing but `files` counts as a `kind` dataset."""
    if out.exists() and not out.is_dir():
        raise OutputInTheWay(f"{out}: exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    names = {entry.name for entry in out.iterdir()}
    if not required <= names or not names <= set(files):
        raise OutputInTheWay(f"{out}: folder exists and is not {kind}; choose an empty or new folder")
    if not overwrite:
        raise OutputInTheWay(f"{out}: {kind} is already there (pass overwrite to rebuild it)")


def stderr_log(command: str, verbose: bool = True) -> Callable[[str], None]:
    """A builder's progress log: `<command>: message` lines on stderr (never stdout, which holds the command's
    result), or nothing when not verbose."""
    def log(message: str) -> None:
        if verbose:
            print(f"{command}: {message}", file=sys.stderr, flush=True)

    return log


def build_atomically(out: Path, marker: str, command: str, build: Callable[[Path], dict],
                     log: Callable[[str], None]) -> dict:
    """Run `build(work)` in OUT.partial/ (marked as ours by the file `marker`), write its report to report.json last,
    then replace OUT with it: a killed run never leaves a folder that looks complete, and a rerun removes what it
    left. A failed run leaves nothing."""
    work = out.with_name(out.name + ".partial")
    if work.exists():
        if not (work / marker).is_file():
            raise OutputInTheWay(f"{work}: exists and was not left by an earlier `{command}`; move it away")
        log(f"removing {work} left by an interrupted run")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / marker).touch()
    try:
        report = build(work)
        (work / marker).unlink()
        (work / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)  # a failed run leaves nothing (a killed one leaves OUT.partial)
        raise
    if out.exists():  # empty, or an earlier dataset the caller asked to overwrite (checked by check_output)
        shutil.rmtree(out)
    work.rename(out)
    return report


def gzip_text_writer(path: Path) -> io.TextIOWrapper:
    """A gzip text file whose bytes depend on its content only (no timestamp, no file name in the header). Closing
    it closes the file on disk too: GzipFile leaves a file object it was handed open unless it is its `myfileobj`
    (what `gzip.open(filename)` sets), and an unclosed file loses its last buffered bytes until garbage collection."""
    raw = open(path, "wb")
    zipped = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6)
    zipped.myfileobj = raw
    return io.TextIOWrapper(zipped, encoding="utf-8", newline="\n")


def split_file_paths(split_from) -> list[Path]:
    """`--split-from` files as paths, each checked to exist before any work starts."""
    paths = [Path(p) for p in split_from or ()]
    for path in paths:
        if not path.is_file():
            raise MissingInput(f"{path}: no such split file")
    return paths


def read_split_files(paths: list[Path]) -> dict[int, str]:
    """{subject_id: split} from split.csv files (subject_id,split). A patient held out in any file is held out (test
    before val), so a patient the pretraining corpus excluded never lands in train."""
    rank = {"train": 0, "val": 1, "test": 2}
    fixed: dict[int, str] = {}
    for path in paths:
        for record in read_csv_table(path, ("subject_id", "split")):
            subject, split = record["subject_id"].strip(), record["split"].strip()
            if not subject.isdigit() or split not in rank:
                raise ReadError(f"{path}: expected subject_id,split rows with split in train/val/test")
            old = fixed.get(int(subject))
            if old is None or rank[split] > rank[old]:
                fixed[int(subject)] = split
    return fixed


def assign_splits(subjects: list[int], fixed: dict[int, str] | None, seed: int, test_size: float,
                  val_size: float) -> dict[int, str]:
    """{subject_id: split} of a seeded patient-level shuffle (test first, then val, of rounded shares), or the split
    `fixed` gives (patients it does not list go to train)."""
    if fixed is not None:
        return {s: fixed.get(s, "train") for s in subjects}
    order = np.random.default_rng(seed).permutation(len(subjects))
    n_test, n_val = round(test_size * len(subjects)), round(val_size * len(subjects))
    splits = {}
    for position, index in enumerate(order):
        splits[subjects[index]] = "test" if position < n_test else "val" if position < n_test + n_val else "train"
    return splits


def split_patients(patient_columns: list[np.ndarray], n_labels: int, seed: int, test_size: float,
                    val_size: float) -> list[str]:
    """The split of each patient, given each patient's label columns. Test is cut first, then val from the rest
    with val_size / (1 - test_size), as Edin. The matrix is built here so that this frame holds its only reference
    and can free it before the second cut."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    if len(patient_columns) < 3:
        raise UserError(f"too few patients to split into train/val/test: {len(patient_columns)}")
    # iterstrat only takes a multilabel-indicator target (two columns or more); an all-False column is never chosen
    # by the stratifier (it picks the rarest label with at least one example left) and changes nothing.
    matrix = np.zeros((len(patient_columns), max(n_labels, 2)), dtype=bool)
    for row, columns in enumerate(patient_columns):
        matrix[row, columns] = True

    def cut(rows: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
        splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        keep, held = next(splitter.split(np.zeros(len(rows)), rows))
        return keep, held

    rest, test = cut(matrix, test_size)
    rest_matrix = matrix[rest]
    del matrix
    train, val = cut(rest_matrix, val_size / (1 - test_size))
    splits = ["test"] * len(patient_columns)
    for index in rest[val]:
        splits[index] = "val"
    for index in rest[train]:
        splits[index] = "train"
    return splits
