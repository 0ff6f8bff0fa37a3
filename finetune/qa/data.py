"""Extractive QA data: questions over contexts with answer spans, read from the layouts QA sets ship in.

Inputs (a split is read whole into memory: QA sets are user-sized, and SQuAD files are one JSON document):
- SQuAD ``.json`` (v1.1 and v2.0; RadQA ships in the v2.0 layout):
  ``{"version": ..., "data": [{"title": ..., "paragraphs": [{"context": ..., "qas": [{"id", "question",
  "answers": [{"text", "answer_start"}], "is_impossible"}]}]}]}``. A top-level JSON array of flat records (below) is
  read too.
- ``.jsonl`` / ``.ndjson`` of flat records, the `datasets` squad layout: ``{"id", "question", "context",
  "answers": {"text": [...], "answer_start": [...]}}``; ``answers`` may also be a list of ``{"text",
  "answer_start"}`` objects, and ``is_impossible`` may be given. Either format may be gzipped (detected by content).
- a local `datasets` folder (`save_to_disk`) of flat records; a DatasetDict gives the split of the role being read
  (`validation` also answers to `val` and `dev`). Never a hub name.

A question is unanswerable when ``is_impossible`` is true (its ``plausible_answers`` are ignored) or its answer list
is empty. Answers are character spans of the context: the text must sit at ``answer_start``. Surrounding whitespace
is trimmed from an answer (the span moves with it); an answer whose text is elsewhere in the context is moved to the
nearest occurrence (counted as ``answers_repaired``: exporters are often off by a few characters); one whose text
is nowhere in the context is dropped (``answers_dropped``), and a question left with no answer is skipped. A record
without an ``answers`` key is read as unanswerable (inputs to `cmbert predict qa` need none) and counted
(``answers_key_missing``), so a misnamed key shows in the report.

Skips are counted per split by reason, with the first few locations (file and position, or the question's id;
never text, which may be a clinical note): ``missing_id``, ``duplicate_id`` (the first is kept: predictions are
keyed by id), ``missing_question`` / ``empty_question``, ``missing_context`` / ``empty_context``,
``malformed_answers`` (not a list of {text, answer_start}, or text and answer_start lists of different lengths),
``answer_not_in_context``, ``unanswerable`` (only with ``data.unanswerable=false``, SQuAD v1.1), ``malformed_record``
(a record, article or paragraph that is not an object, or a paragraph without a ``qas`` list), ``not_json`` /
``invalid_utf8`` (unreadable JSONL lines). Errors: a missing file, a ``.json`` that does not parse or is not UTF-8,
and a top-level structure that is neither ``{"data": [...]}`` nor a list of records.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cmbert.core.errors import MissingInput, UserError
from cmbert.core.io import ReadError, SkipCounter, open_binary
from cmbert.data.inputs import dataset_records, json_lines


@dataclass
class QaExample:
    id: str
    question: str
    context: str
    answers: list[tuple[str, int]]  # (text, character start), exact substrings of the context; [] = unanswerable
    where: str = ""  # file and position, for predictions and errors (never text)

    @property
    def answerable(self) -> bool:
        return bool(self.answers)


@dataclass
class QaSplit:
    name: str
    source: str
    examples: list[QaExample]
    counter: SkipCounter
    answer_fixes: Counter[str] = field(default_factory=Counter)  # answers_repaired, answers_dropped

    def report(self) -> dict:
        unanswerable = sum(not e.answerable for e in self.examples)
        return {"source": self.source, **self.counter.as_dict(), "questions": len(self.examples),
                "unanswerable": unanswerable, "contexts": len({e.context for e in self.examples}),
                **dict(sorted(self.answer_fixes.items()))}


def input_format(path: str | Path, configured: str = "auto") -> str:
    if configured != "auto":
        return configured
    path = Path(path)
    if path.is_dir():
        return "datasets"
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] == [".gz"]:
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last == ".json":
        return "squad"
    if last in (".jsonl", ".ndjson"):
        return "jsonl"
    raise UserError(f"{path}: cannot tell the QA format from the name (.json = SQuAD layout, .jsonl = one record "
                    "per line, a folder = `datasets`); set data.format")


def read_qa_split(path: str | Path, role: str, format: str = "auto", unanswerable: bool = True) -> QaSplit:
    """The usable questions of one split, with skip counts (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise MissingInput(f"{path} does not exist")
    counter, fixes = SkipCounter(), Counter()
    kind = input_format(path, format)
    records = {"squad": _squad_records, "jsonl": _jsonl_records, "datasets": _dataset_records}[kind](path, role,
                                                                                                  counter)
    examples, seen = [], set()
    for where, record in records:
        example = _example(record, where, counter, fixes, unanswerable)
        if example is None:
            continue
        if example.id in seen:
            counter.skip("duplicate_id", where)
            continue
        seen.add(example.id)
        counter.kept += 1
        examples.append(example)
    return QaSplit(role, str(path), examples, counter, fixes)


# ---------------------------------------------------------------------------------------------------------- records


def _read_json(path: Path):
    try:
        with open_binary(path) as f:
            raw = f.read()
    except (EOFError, OSError, zlib.error) as exc:
        raise ReadError(f"{path}: unreadable ({type(exc).__name__})") from None
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ReadError(f"{path}: not UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ReadError(f"{path}: not JSON (line {exc.lineno} column {exc.colno}: {exc.msg})") from None


def _listed(record, key: str, where: str, counter: SkipCounter) -> list:
    """record[key] when it is a list; else nothing, the record counted as read and skipped as malformed."""
    value = record.get(key) if isinstance(record, dict) else None
    if isinstance(value, list):
        return value
    counter.read += 1
    counter.skip("malformed_record", where)
    return []


def _squad_records(path: Path, role: str, counter: SkipCounter) -> Iterator[tuple[str, dict | None]]:
    """(where, flat record) per question of a SQuAD file; None for a record that is not an object."""
    data = _read_json(path)
    if isinstance(data, list):  # a JSON array of flat records
        for i, record in enumerate(data):
            counter.read += 1
            yield f"{path.name} item {i + 1}", record
        return
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        found = type(data).__name__ if not isinstance(data, dict) else f"keys {sorted(data)[:8]}"
        raise UserError(f"{path}: not a SQuAD file (expected {{\"data\": [{{\"paragraphs\": [...]}}]}} or a list "
                        f"of records at the top level, found {found})")
    for a, article in enumerate(data["data"]):
        paragraphs = _listed(article, "paragraphs", f"{path.name} data[{a}]", counter)
        for p, paragraph in enumerate(paragraphs):
            qas = _listed(paragraph, "qas", f"{path.name} data[{a}].paragraphs[{p}]", counter)
            for q, qa in enumerate(qas):
                counter.read += 1
                where = f"{path.name} data[{a}].paragraphs[{p}].qas[{q}]"
                # The flat layout of one question; a context that is missing stays missing (skipped there).
                yield where, {**qa, "context": paragraph.get("context")} if isinstance(qa, dict) else None


def _jsonl_records(path: Path, role: str, counter: SkipCounter) -> Iterator[tuple[str, dict | None]]:
    for where, value, skip in json_lines(path, counter):
        if skip:
            counter.skip(skip, where)
            continue
        yield where, value


def _dataset_records(path: Path, role: str, counter: SkipCounter) -> Iterator[tuple[str, dict | None]]:
    return dataset_records(path, role, counter)[0]


# ---------------------------------------------------------------------------------------------------------- checks


def _answer_list(answers) -> list[tuple[object, object]] | None:
    """[(text, start)] from either answers layout; None when it is neither."""
    if isinstance(answers, dict):
        texts, starts = answers.get("text"), answers.get("answer_start")
        if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
            return None
        return list(zip(texts, starts, strict=True))
    if isinstance(answers, list) and all(isinstance(a, dict) for a in answers):
        return [(a.get("text"), a.get("answer_start")) for a in answers]
    return None


def locate_answer(context: str, text: str, start: int) -> int | None:
    """Where `text` sits in `context`: at `start` if it does, else its occurrence nearest to `start`, else None."""
    if context.startswith(text, start):
        return start
    best, i = None, context.find(text)
    while i >= 0:
        if best is None or abs(i - start) < abs(best - start):
            best = i
        i = context.find(text, i + 1)
    return best


def _example(record, where: str, counter: SkipCounter, fixes: Counter, unanswerable: bool) -> QaExample | None:
    if not isinstance(record, dict):
        counter.skip("malformed_record", where)
        return None
    qid = record.get("id")
    if isinstance(qid, bool) or not isinstance(qid, (str, int)) or str(qid) == "":
        counter.skip("missing_id", where)
        return None
    qid = str(qid)
    where = f"{where} (id {qid})" if len(qid) <= 64 else where
    question, context = record.get("question"), record.get("context")
    for key, value in (("question", question), ("context", context)):
        if not isinstance(value, str):
            counter.skip(f"missing_{key}", where)
            return None
        if not value.strip():
            counter.skip(f"empty_{key}", where)
            return None
    impossible = record.get("is_impossible") is True
    if not impossible and "answers" not in record:
        fixes["answers_key_missing"] += 1  # read as unanswerable; counted, as a misnamed key would look the same
    given = [] if impossible else _answer_list(record.get("answers", []))
    if given is None or any(not isinstance(t, str) or isinstance(s, bool) or not isinstance(s, int)
                            for t, s in given):
        counter.skip("malformed_answers", where)
        return None
    answers = []
    for text, start in given:
        stripped = text.strip()
        if not stripped:
            fixes["answers_dropped"] += 1  # an empty gold answer: the official metric drops it too
            continue
        start += len(text) - len(text.lstrip())
        found = locate_answer(context, stripped, start)
        if found is None:
            fixes["answers_dropped"] += 1
            continue
        if found != start:
            fixes["answers_repaired"] += 1
        answers.append((stripped, found))
    if given and not answers:
        counter.skip("answer_not_in_context", where)
        return None
    if not answers and not unanswerable:
        counter.skip("unanswerable", where)
        return None
    return QaExample(qid, question, context, answers, where)
