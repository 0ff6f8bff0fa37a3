"""The BHC summarisation dataset: `cmbert bhc prepare --mimic DIR --out DIR [--tokenizer DIR]`.

From each discharge summary of MIMIC-IV-Note `note/discharge.csv.gz` (or a discharge CSV given directly), a pair:
source = the note without its Brief Hospital Course section, target = that section (the split rules, headings and
the choices about TRANSITIONAL ISSUES, repeated BHC headings and `source_sections` are in `cmbert.finetune.bhc.sections`).

Cleaning, in this order (every note read ends as a pair or as a skip counted by reason in report.json):
1. The reader's own checks (`cmbert.data.readers.read_mimic_notes`): ``malformed_row``, ``invalid_utf8``,
   ``missing_note_id``, ``bad_subject_id``, ``bad_hadm_id``, ``bad_note_seq``, ``missing_text``, ``empty_text``. A
   truncated gzip or an unterminated quote stops the build with a one-line error (`ReadError`).
2. ``not_discharge_summary``: a note_type other than DS (e.g. a radiology file passed by mistake). An empty
   note_type is accepted. A DS note without hadm_id is kept (its record has `"hadm_id": null`).
3. ``duplicate_note``: a note_id seen before in the file (the first is kept).
4. Whitespace: CRLF / CR become LF, trailing spaces and tabs go from every line (MIMIC writes its blank lines as
   " \\n"), runs of blank lines collapse to one, and the text is stripped. Spaces inside a line are kept (lab tables
   are aligned with them).
5. The split: ``no_bhc_section``, ``multiple_bhc_sections``, ``empty_bhc_section``.
6. ``deid_target``: a target whose words are mostly (> 50 %) de-identification placeholders `___`.
7. ``boilerplate_target``: a target that only refers elsewhere ("See above.", "Please refer to the discharge
   summary", "N/A", "Dictated separately") or holds no letters, judged after removing `___` and punctuation.
8. ``short_target`` (fewer than `min_target_words` whitespace words, default 20) and ``short_source`` (fewer than
   `min_source_words`, default 100). No maximum: long sources are kept and measured (the fit-by-budget table).
9. De-identification placeholders `___` (exactly three underscores) stay as they are by default: they are in the
   real data, and our tokenizer has them as one token. `deid_token` (e.g. "[DEID]") replaces each one, in source and
   target, after the checks above.

Splits by patient (no patient in two splits): subject ids of the kept pairs are shuffled with `seed` into
train / validation / test (`test_size`, `val_size` of patients; default 80/10/10) by
`cmbert.core.builds.assign_splits`, as the trajectory builder does. `split_from` (split.csv files of other tasks, e.g.
the ICD dataset's) fixes the split of every patient it lists (held out in any file wins) and sends unlisted patients
to train, so the patients the pretraining corpus excluded are the held-out ones here too.

Bounded memory, two passes: pass 1 streams the notes, applies the rules above and appends each kept pair,
zlib-compressed, to a staging file in the output folder, keeping only ids and lengths per pair (MIMIC-IV: ~330k
pairs, tens of MB). After the split, pass 2 reads the staging file in order, counts tokens in batches when a
tokenizer is given, and writes each split's file. Nothing holds more than a batch of note text.

Output folder (built in OUT.partial/ and renamed at the end; report.json is written last, so a folder with one is
complete):
- `train.jsonl.gz`, `validation.jsonl.gz`, `test.jsonl.gz`: one pair a line, `{"note_id", "subject_id", "hadm_id",
  "source", "target"}`, in discharge-file order (`read_pairs` reads them).
- `split.csv` (subject_id,split; the validation split is written `val`, as the ICD and trajectory builders write it,
  so any of these files can be another builder's `--split-from`), `exclude_subjects.txt` (validation + test
  subjects, for `cmbert corpus build --exclude-subjects`).
- `report.json`: settings, counts (read / kept / skipped by reason), BHC heading variants, per split patients and
  pairs, and lengths: source and target in words and characters, and in tokens with `tokenizer` (percentiles p10 /
  p50 / p90 / max, the target/source compression ratio), and how many sources fit whole in each context budget
  (512, 2048, 4096, 8192 tokens, the tokenizer's special tokens counted). Counts, lengths and ids only: no text.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmbert.core import builds
from cmbert.core.errors import MissingInput, UserError
from cmbert.core.io import SkipCounter
from cmbert.data.readers import read_mimic_notes
from cmbert.finetune.bhc.sections import SOURCE_SECTIONS, BhcSplit, split_bhc

SPLITS = ("train", "validation", "test")
# `cmbert.core.builds.assign_splits` and split.csv name the validation split "val" (the ICD and trajectory convention).
_SPLIT_OF_LABEL = {"train": "train", "val": "validation", "test": "test"}
BUDGETS = (512, 2048, 4096, 8192)
NOTES_TABLE = "note/discharge"
PARTIAL_MARKER = ".bhc_prepare_partial"
STAGING_FILE = "pairs.staging"
DATASET_FILES = ("train.jsonl.gz", "validation.jsonl.gz", "test.jsonl.gz", "split.csv", "exclude_subjects.txt",
                 "report.json", "config.yaml", "provenance.json")  # the last two: `cmbert bhc prepare` writes them
TOKEN_BATCH = 64  # pairs per tokenizer call: the fast tokenizer spreads a batch over the cores

_BLANK_LINES = re.compile(r"\n{3,}")
_DEID = re.compile(r"(?<!_)___(?!_)")
_NOT_LETTERS = re.compile(r"[^a-z]+")
_TRANSITIONAL = re.compile(r"^[ \t#-]*transitional issues", re.IGNORECASE | re.MULTILINE)
# A whole target that only points elsewhere, after lower-casing, `___` removal and punctuation -> spaces.
_BOILERPLATE = re.compile(
    r"(?:please )?(?:see|refer to|as per|per|as in|as noted in) (?:the )?(?:above|below|hpi|h p|history of present "
    r"illness|(?:discharge |transfer |admission |separate |previous |prior |attached )?(?:summary|note|notes|report)"
    r"|chart|omr|details above)(?: for (?:details|more information|further details))?"
    r"|as above|see above|n a|na|none|not applicable|deferred|dictated separately|to be dictated|see attached"
)


def normalise_whitespace(text: str) -> str:
    """Rule 4 of the module docstring: LF line ends, no trailing spaces, at most one blank line in a row, stripped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # rstrip per line: 6x faster than a multiline `[ \t]+$` substitution on MIMIC-sized notes.
    text = "\n".join(line.rstrip(" \t") for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


def is_boilerplate(target: str) -> bool:
    """Rule 7: the target only refers the reader elsewhere ("See above.", "N/A")."""
    letters = _NOT_LETTERS.sub(" ", _DEID.sub(" ", target).lower()).strip()
    return not letters or _BOILERPLATE.fullmatch(letters) is not None


def deid_share(text: str) -> float:
    """The share of whitespace words that hold a `___` placeholder ("___", "(___)", "___."), 0 for no words."""
    words = text.split()
    return sum("___" in word for word in words) / len(words) if words else 0.0


@dataclass(frozen=True)
class CleaningRules:
    source_sections: str = "all"  # "all" | "before" (see cmbert.finetune.bhc.sections)
    min_target_words: int = 20
    min_source_words: int = 100
    deid_token: str | None = None  # None keeps MIMIC's `___`
    max_deid_share: float = 0.5

    def check(self) -> None:
        if self.source_sections not in SOURCE_SECTIONS:
            raise UserError(f"source_sections must be one of {', '.join(SOURCE_SECTIONS)}, "
                            f"got {self.source_sections!r}")
        if self.min_target_words < 1 or self.min_source_words < 1:
            raise UserError("min_target_words and min_source_words must be at least 1, got "
                            f"{self.min_target_words} and {self.min_source_words}")
        if self.deid_token is not None and not self.deid_token.strip():
            raise UserError("deid_token must be a visible placeholder such as [DEID]")


def make_pair(text: str, rules: CleaningRules) -> BhcSplit | str:
    """Rules 4-9 of the module docstring on one note's text: the cleaned pair, or the skip reason."""
    split = split_bhc(normalise_whitespace(text), rules.source_sections)
    if isinstance(split, str):
        return split
    if deid_share(split.target) > rules.max_deid_share:
        return "deid_target"
    if is_boilerplate(split.target):
        return "boilerplate_target"
    if len(split.target.split()) < rules.min_target_words:
        return "short_target"
    if len(split.source.split()) < rules.min_source_words:
        return "short_source"
    if rules.deid_token is None:
        return split
    return BhcSplit(source=_DEID.sub(rules.deid_token, split.source), target=_DEID.sub(rules.deid_token, split.target),
                    heading=split.heading, continued=split.continued)


# ---------------------------------------------------------------------------------------------------- statistics


def length_summary(values: list[float] | np.ndarray, digits: int = 1) -> dict:
    """p10 / p50 / p90 (numpy's linear interpolation), max and mean of a list of lengths or ratios."""
    if len(values) == 0:
        return {"p10": None, "p50": None, "p90": None, "max": None, "mean": None}
    array = np.asarray(values, dtype=float)
    p10, p50, p90 = (round(float(v), digits) for v in np.percentile(array, (10, 50, 90)))
    top = float(array.max())
    return {"p10": p10, "p50": p50, "p90": p90, "max": int(top) if top.is_integer() else round(top, digits),
            "mean": round(float(array.mean()), digits)}


def budget_fits(source_tokens: list[int] | np.ndarray, special_tokens: int, budgets: tuple[int, ...] = BUDGETS,
                ) -> dict[str, dict]:
    """{budget: {"count", "share"}}: the sources whose tokens plus the special tokens the encoder adds ([CLS], [SEP])
    fit whole in `budget`."""
    lengths = np.asarray(source_tokens, dtype=np.int64) + special_tokens
    n = len(lengths)
    return {str(budget): {"count": int((lengths <= budget).sum()),
                          "share": round(float((lengths <= budget).sum()) / n, 4) if n else None}
            for budget in budgets}


def _split_lengths(pairs: list[_StagedPair], special_tokens: int | None) -> dict:
    """The length block of report.json for one split (or all pairs)."""
    source_words = np.array([p.source_words for p in pairs], dtype=np.int64)
    target_words = np.array([p.target_words for p in pairs], dtype=np.int64)
    block = {
        "source_words": length_summary(source_words),
        "target_words": length_summary(target_words),
        "source_chars": length_summary([p.source_chars for p in pairs]),
        "target_chars": length_summary([p.target_chars for p in pairs]),
        "compression_words": length_summary(target_words / np.maximum(source_words, 1), digits=4),
    }
    if special_tokens is not None:
        source_tokens = np.array([p.source_tokens for p in pairs], dtype=np.int64)
        target_tokens = np.array([p.target_tokens for p in pairs], dtype=np.int64)
        block["source_tokens"] = length_summary(source_tokens)
        block["target_tokens"] = length_summary(target_tokens)
        block["compression_tokens"] = length_summary(target_tokens / np.maximum(source_tokens, 1), digits=4)
        block["source_fits"] = budget_fits(source_tokens, special_tokens)
    return block


# -------------------------------------------------------------------------------------------------------- reading


def split_path(data: str | Path, split: str) -> Path:
    """One split's file in a finished prepared folder (report.json, written last, marks it finished)."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    data = Path(data)
    if not (data / "report.json").is_file():
        raise MissingInput(f"{data}: no report.json (not a finished `cmbert bhc prepare` folder)")
    path = data / f"{split}.jsonl.gz"
    if not path.is_file():
        raise MissingInput(f"{path}: no such split file")
    return path


def read_pairs(dataset: str | Path, split: str) -> Iterator[dict]:
    """The pairs of one split ("train", "validation" or "test") of a prepared folder, streamed in file order:
    {"note_id", "subject_id", "hadm_id", "source", "target"}."""
    with gzip.open(split_path(dataset, split), "rt", encoding="utf-8") as file:
        for line in file:
            yield json.loads(line)


# ---------------------------------------------------------------------------------------------------- preparation


@dataclass(slots=True)
class _StagedPair:
    """What pass 1 keeps of a pair: ids and lengths; its text sits in the staging file at [offset, offset + size)."""

    note_id: str
    subject_id: int
    hadm_id: int | None
    offset: int
    size: int
    source_words: int
    target_words: int
    source_chars: int
    target_chars: int
    source_tokens: int = 0  # pass 2, with a tokenizer
    target_tokens: int = 0


class _TokenCounter:
    """Token counts with a local tokenizer folder (AutoTokenizer, never a hub name): content tokens without the
    special tokens, which `special` says how many the encoder adds to one sequence."""

    def __init__(self, folder: Path):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.special = tokenizer.num_special_tokens_to_add(pair=False)
        # The backend tokenizer of a fast one: batched over the cores, and no "longer than the maximum" warning for
        # long notes (we measure them; nothing is fed to a model here).
        self._fast = tokenizer.backend_tokenizer if tokenizer.is_fast else None
        self._slow = tokenizer

    def count(self, texts: list[str]) -> list[int]:
        if self._fast is not None:
            return [len(encoding.ids) for encoding in self._fast.encode_batch(texts, add_special_tokens=False)]
        return [len(self._slow.encode(text, add_special_tokens=False)) for text in texts]


def _notes_path(mimic: Path) -> Path:
    """--mimic is a MIMIC-IV root (note/discharge.csv.gz under it) or the discharge file itself."""
    if mimic.is_file():
        return mimic
    if not mimic.is_dir():
        raise MissingInput(f"{mimic}: no such file or folder (expected a MIMIC-IV root with "
                           "note/discharge.csv.gz, or that file)")
    return builds.mimic_table(mimic, NOTES_TABLE, "the BHC dataset reads MIMIC-IV-Note note/discharge.csv.gz")


def _check_not_beside_input(out: Path, notes_path: Path, mimic: Path) -> None:
    """Never write into the raw data: derived text beside the raw files is how it gets copied along with them. A
    MIMIC root (given, or the parent of a `note/` folder holding the file given) is off limits at any depth; a lone
    discharge file's folder is off limits itself and for direct subfolders (`--out` beside the file)."""
    out_abs, folder = out.resolve(), notes_path.resolve().parent
    roots = [mimic.resolve()] if mimic.is_dir() else [folder.parent] if folder.name == "note" else []
    for root in roots:
        if out_abs == root or root in out_abs.parents:
            raise UserError(f"{out}: inside the MIMIC-IV folder {root}; write the dataset somewhere else")
    if out_abs == folder or out_abs.parent == folder:
        raise UserError(f"{out}: beside the input file {notes_path}; write the dataset somewhere else")


def _build(work: Path, notes_path: Path, rules: CleaningRules, tokenizer: Path | None, seed: int, test_size: float,
           val_size: float, split_files: list[Path], log: Callable[[str], None]) -> dict:
    """Everything but report.json into `work`; returns the report."""
    counter = _TokenCounter(tokenizer) if tokenizer is not None else None

    # --- Pass 1: pairs staged, ids and lengths kept.
    notes = SkipCounter()

    def drop(reason: str, note_id: str) -> None:
        notes.kept -= 1  # the reader counted the note as kept; read == kept + skipped still holds
        notes.skip(reason, f"note_id {note_id}")

    seen: set[str] = set()
    staged: list[_StagedPair] = []
    headings: Counter[str] = Counter()
    continued = transitional = 0
    with open(work / STAGING_FILE, "wb") as staging:
        for note in read_mimic_notes(notes_path, notes):
            if notes.read % 50_000 == 0:
                log(f"{notes.read:,} notes read, {len(staged):,} pairs")
            if note.note_type.strip() not in ("DS", ""):
                drop("not_discharge_summary", note.note_id)
                continue
            if note.note_id in seen:
                drop("duplicate_note", note.note_id)
                continue
            seen.add(note.note_id)
            pair = make_pair(note.text, rules)
            if isinstance(pair, str):
                drop(pair, note.note_id)
                continue
            headings[pair.heading] += 1
            continued += pair.continued
            transitional += _TRANSITIONAL.search(pair.target) is not None
            blob = zlib.compress(json.dumps([pair.source, pair.target], ensure_ascii=False).encode("utf-8"), 1)
            staged.append(_StagedPair(note.note_id, note.subject_id, note.hadm_id, staging.tell(), len(blob),
                                      len(pair.source.split()), len(pair.target.split()), len(pair.source),
                                      len(pair.target)))
            staging.write(blob)
    del seen
    if not staged:
        skipped = ", ".join(f"{reason} {n:,}" for reason, n in notes.skipped.most_common()) or "none"
        raise UserError(f"{notes_path}: no BHC pairs from {notes.read:,} notes (skipped: {skipped})")
    log(f"{notes.read:,} notes read, {len(staged):,} pairs staged")

    # --- Split by patient.
    subjects = sorted({pair.subject_id for pair in staged})
    fixed = builds.read_split_files(split_files) if split_files else None
    split_of = {subject: _SPLIT_OF_LABEL[label]
                for subject, label in builds.assign_splits(subjects, fixed, seed, test_size, val_size).items()}
    unlisted = sum(1 for subject in subjects if subject not in fixed) if fixed is not None else 0

    # --- Pass 2: the split files, tokens counted a batch at a time.
    writers = {split: builds.gzip_text_writer(work / f"{split}.jsonl.gz") for split in SPLITS}
    try:
        with open(work / STAGING_FILE, "rb") as staging:
            for first in range(0, len(staged), TOKEN_BATCH):
                batch = staged[first:first + TOKEN_BATCH]
                texts = []
                for pair in batch:
                    staging.seek(pair.offset)
                    texts.append(json.loads(zlib.decompress(staging.read(pair.size)).decode("utf-8")))
                if counter is not None:
                    lengths = counter.count([text for source_target in texts for text in source_target])
                    for index, pair in enumerate(batch):
                        pair.source_tokens, pair.target_tokens = lengths[2 * index], lengths[2 * index + 1]
                for pair, (source, target) in zip(batch, texts, strict=True):
                    record = {"note_id": pair.note_id, "subject_id": pair.subject_id, "hadm_id": pair.hadm_id,
                              "source": source, "target": target}
                    writers[split_of[pair.subject_id]].write(json.dumps(record, ensure_ascii=False) + "\n")
                if (first // TOKEN_BATCH) % 500 == 499:
                    log(f"{first + len(batch):,} of {len(staged):,} pairs written")
    finally:
        for writer in writers.values():
            writer.close()
    (work / STAGING_FILE).unlink()

    # --- split.csv, exclude_subjects.txt; the report (written last by builds.build_atomically).
    label_of = {name: label for label, name in _SPLIT_OF_LABEL.items()}
    with open(work / "split.csv", "w", encoding="utf-8", newline="\n") as file:
        file.write("subject_id,split\n")
        file.writelines(f"{subject},{label_of[split_of[subject]]}\n" for subject in subjects)
    (work / "exclude_subjects.txt").write_text(
        "".join(f"{subject}\n" for subject in subjects if split_of[subject] != "train"), encoding="utf-8")

    special = counter.special if counter is not None else None
    by_split = {split: [pair for pair in staged if split_of[pair.subject_id] == split] for split in SPLITS}
    return {
        "inputs": {"notes": str(notes_path), "tokenizer": str(tokenizer) if tokenizer is not None else None,
                   "split_from": [str(path) for path in split_files]},
        "settings": {"source_sections": rules.source_sections, "min_target_words": rules.min_target_words,
                     "min_source_words": rules.min_source_words, "max_deid_share": rules.max_deid_share,
                     "deid_token": rules.deid_token, "seed": seed, "test_size": test_size, "val_size": val_size,
                     "budgets": list(BUDGETS), "special_tokens": special},
        "notes": notes.as_dict(),
        "pairs": len(staged),
        "patients": len(subjects),
        "bhc_headings": dict(headings.most_common()),
        "targets_continued_by_second_bhc_heading": continued,
        "targets_with_transitional_issues": transitional,
        "split_from_unlisted_patients_to_train": unlisted,
        "splits": {split: {"patients": len({pair.subject_id for pair in members}), "pairs": len(members),
                           "lengths": _split_lengths(members, special)} for split, members in by_split.items()},
        "lengths": _split_lengths(staged, special),
    }


def prepare_bhc_dataset(mimic: str | Path, out: str | Path, tokenizer: str | Path | None = None,
                        rules: CleaningRules | None = None, seed: int = 10, test_size: float = 0.1,
                        val_size: float = 0.1, split_from: list[str | Path] | None = None, overwrite: bool = False,
                        verbose: bool = True) -> dict:
    """Build the BHC dataset of a MIMIC-IV tree (or one discharge CSV) into `out` (the format in this module's
    docstring) and return its report (also `out/report.json`). The same inputs and seed give the same bytes. `out`
    must be new, empty, or (with `overwrite`) an earlier BHC dataset. Progress lines (counts only, never text) go to
    stderr unless `verbose` is False."""
    rules = rules or CleaningRules()
    rules.check()
    builds.check_split_sizes(test_size, val_size)
    mimic, out = Path(mimic), Path(out)
    notes_path = _notes_path(mimic)
    _check_not_beside_input(out, notes_path, mimic)
    tokenizer = Path(tokenizer) if tokenizer is not None else None
    if tokenizer is not None and not tokenizer.is_dir():
        raise MissingInput(f"{tokenizer}: no such folder (--tokenizer takes a local tokenizer or model folder, "
                           "never a hub name)")
    split_files = builds.split_file_paths(split_from)
    builds.check_output(out, overwrite, DATASET_FILES, {"report.json"}, "a BHC dataset")

    log = builds.stderr_log("bhc prepare", verbose)

    report = builds.build_atomically(out, PARTIAL_MARKER, "bhc prepare", lambda work: _build(
        work, notes_path, rules, tokenizer, seed, test_size, val_size, split_files, log), log)
    log(f"wrote {out}: {report['pairs']:,} pairs of {report['patients']:,} patients")
    return report



def prepare_from_config(cfg) -> dict:
    """`prepare_bhc_dataset` with the settings of a `BhcPrepareConfig` (cmbert.finetune.bhc.config)."""
    rules = CleaningRules(source_sections=cfg.source_sections, min_target_words=cfg.min_target_words,
                          min_source_words=cfg.min_source_words, deid_token=cfg.deid_token)
    return prepare_bhc_dataset(cfg.mimic, cfg.out, tokenizer=cfg.tokenizer, rules=rules, seed=cfg.seed,
                               split_from=cfg.split_from, overwrite=cfg.overwrite)


def format_prepared(report: dict, out: str) -> str:
    """`format_summary` and where the dataset is: what `cmbert bhc prepare` prints."""
    return (f"{format_summary(report)}\ndataset in {out} (report.json; exclude_subjects.txt for `cmbert corpus build "
            "--exclude-subjects`)")
def format_summary(report: dict) -> str:
    """The lines `cmbert bhc prepare` prints: counts, skips, and per split the median lengths and how many sources
    fit whole in each budget. Counts and lengths only."""
    notes = report["notes"]
    skipped = ", ".join(f"{reason} {n:,}" for reason, n in sorted(notes["skipped"].items(), key=lambda kv: -kv[1]))
    lines = [f"{notes['read']:,} notes read, {report['pairs']:,} pairs kept; skipped: {skipped or 'none'}"]
    tokens = report["settings"]["special_tokens"] is not None
    unit = "tokens" if tokens else "words"
    header = f"{'split':<11}{'patients':>9}{'pairs':>8}{'source p50':>12}{'target p50':>12}"
    if tokens:
        header += "".join(f"{'fit ' + str(b):>17}" for b in BUDGETS)
    lines.append(header + f"   ({unit})")
    for name, block in [*report["splits"].items(), ("all", {"patients": report["patients"], "pairs": report["pairs"],
                                                             "lengths": report["lengths"]})]:
        lengths = block["lengths"]
        row = (f"{name:<11}{block['patients']:>9,}{block['pairs']:>8,}"
               f"{_number(lengths[f'source_{unit}']['p50']):>12}{_number(lengths[f'target_{unit}']['p50']):>12}")
        if tokens:
            row += "".join(f"{_fit(lengths['source_fits'][str(b)]):>17}" for b in BUDGETS)
        lines.append(row)
    if not tokens:
        lines.append("(pass --tokenizer DIR for token lengths and how many sources fit 512 / 2k / 4k / 8k tokens)")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _fit(fit: dict) -> str:
    """ "2,042 (56.9 %)": sources that fit whole, and their share of the split."""
    return "-" if fit["share"] is None else f"{fit['count']:,} ({100 * fit['share']:.1f} %)"
