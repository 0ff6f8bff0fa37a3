"""Notes to run a model on (`cmbert predict icd`, `cmbert embed`): one reader for the three shapes a user has them in.

The format is chosen by the file name (a trailing `.gz` is looked through; the bytes are gunzipped when they start with
the gzip magic, whatever the name says, as in `cmbert.data.readers`):
- ``.csv``: a MIMIC-style notes table. The header must name ``note_id`` and ``text``; other columns (subject_id,
  note_type, ...) are ignored, so MIMIC-IV-Note's `discharge.csv.gz` is read as it is.
- ``.jsonl`` / ``.ndjson``: one JSON object per line, ``{"id": ..., "text": ...}``; ``note_id`` is accepted as the id
  key (our ICD dataset splits use it). Integer ids are turned into strings. Blank lines hold no record.
- ``.json``: one such object, or a JSON array of them (read whole: meant for a handful of notes).
- anything else: one plain-text note whose id is the file stem, ".gz" looked through (`notes/ed_visit.txt.gz` ->
  ``ed_visit``). ``-`` reads one plain-text note from stdin, id ``stdin``.

Bad records are never dropped silently: each is counted in a `cmbert.data.readers.SkipCounter` under a reason, with the
first few locations (file and line / row / item; never text) kept as examples, so the caller can report them. After
the reader is exhausted, `counter.read == counter.kept + sum(counter.skipped.values())`. Reasons:
- ``empty_text``: the text is empty or whitespace only (in every format, a plain-text file included).
- ``missing_text``: a JSON record without a string ``text``.
- ``missing_id``: an empty ``note_id`` cell, or a JSON record without a string / integer id.
- ``duplicate_id``: an id seen before in this call; the first note with the id is kept. A skip rather than an error
  because outputs are keyed by id (two rows for one id would be ambiguous) while one repeated row should not cost a
  run over a whole MIMIC table; the count and examples make it visible.
- ``not_json``: a JSON Lines line that does not parse, or parses to something other than an object.
- ``invalid_utf8``: bytes that are not UTF-8 (a CSV row, a JSON line, or a whole plain-text note). Counted, as
  `cmbert.data.readers` counts them, rather than decoded with replacement characters the model would then read.
- ``malformed_row``: a CSV record the parser could not split into the header's columns (from `cmbert.data.readers`).
Errors (the file as a whole cannot be used) are one line naming the file and never quoting note text: a CSV without a
``note_id`` or ``text`` column is a ValueError that lists the header's columns when they look like column names;
unreadable files (missing, truncated gzip, an unterminated quote, a `.json` that is not UTF-8 or does not parse) raise
`cmbert.data.readers.ReadError`.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cmbert.core.config import SPLIT_NAMES
from cmbert.core.errors import UserError
from cmbert.core.io import ReadError, SkipCounter, broken_stream, csv_records, open_binary

NOTE_CSV_COLUMNS = ("note_id", "text")
JSON_ID_KEYS = ("id", "note_id")  # the first present one is the id
STDIN = "-"
# A header cell we are willing to echo in an error: an identifier, as column names are. Anything else may be the first
# line of a note (a misnamed plain-text file), which must not reach a log.
_COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True)
class NoteInput:
    id: str
    text: str  # as given: not stripped or normalized, the model's tokenizer sees it as the user wrote it


def input_format(path: str | Path) -> str:
    """The format of `path` from its name (".gz" looked through): "csv", "jsonl", "json" or "text" ("-" is text)."""
    if str(path) == STDIN:
        return "text"
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes[-1:] == [".gz"]:
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    return {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json"}.get(last, "text")


def read_note_inputs(path: str | Path, counter: SkipCounter | None = None) -> Iterator[NoteInput]:
    """The usable notes of `path` (see the module docstring for formats and skip reasons), streamed in file order."""
    counter = counter if counter is not None else SkipCounter()
    kind = input_format(path)
    if kind == "text":
        records = _text_records(path, counter)
    else:
        path = Path(path)
        records = {"csv": _csv_note_records, "jsonl": _jsonl_records, "json": _json_records}[kind](path, counter)
    seen: set[str] = set()
    # Each record arrives already counted in `read`; here it is kept or skipped once, so the counts add up.
    for where, record in records:
        if isinstance(record, str):  # a skip reason found while parsing
            counter.skip(record, where)
            continue
        note_id, text = record
        if not text or text.isspace():
            counter.skip("empty_text", where)
        elif note_id in seen:
            counter.skip("duplicate_id", f"{where}: id {note_id}")
        else:
            seen.add(note_id)
            counter.kept += 1
            yield NoteInput(id=note_id, text=text)


# The format readers yield (where, (id, text)) for a record to check further, or (where, reason) for a skip; each has
# already counted the record in `counter.read`.
Record = tuple[str, tuple[str, str] | str]


def _text_records(path: str | Path, counter: SkipCounter) -> Iterator[Record]:
    if str(path) == STDIN:
        name, note_id, data = "<stdin>", "stdin", sys.stdin.buffer.read()
    else:
        path = Path(path)
        name = path.name
        # The stem, ".gz" looked through: ed_visit.txt.gz -> ed_visit.
        note_id = Path(name[: -len(".gz")] if name.lower().endswith(".gz") else name).stem
        with open_binary(path) as raw:
            try:
                data = raw.read()
            except (EOFError, OSError, zlib.error) as exc:
                raise broken_stream(path, exc, "0 bytes of text") from None
    counter.read += 1
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        yield f"{name} byte {exc.start}", "invalid_utf8"
        return
    yield name, (note_id, text)


def _csv_header(path: Path) -> list[str] | None:
    """The first line of a CSV split into cells, or None when it cannot be read (the CSV reader then says why)."""
    try:
        with open_binary(path) as raw:
            lines = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
            return next(csv.reader(lines), None)
    except (ReadError, csv.Error, EOFError, OSError, zlib.error):
        return None


def _csv_note_records(path: Path, counter: SkipCounter) -> Iterator[Record]:
    header = _csv_header(path)
    if header is not None and not all(name in header for name in NOTE_CSV_COLUMNS):
        missing = ", ".join(name for name in NOTE_CSV_COLUMNS if name not in header)
        if all(_COLUMN_NAME.fullmatch(name) for name in header) and len(header) <= 100:
            has = f"its columns are: {', '.join(header)}"
        else:
            has = "its first line does not look like a CSV header (is it a plain-text note named .csv?)"
        raise UserError(f"{path}: a notes CSV needs the columns note_id and text; missing {missing}; {has}")
    # csv_records counts `read`, `malformed_row` and `invalid_utf8` and leaves kept / our own skips to us.
    for where, record in csv_records(path, NOTE_CSV_COLUMNS, counter, kind="notes CSV"):
        note_id = record["note_id"].strip()
        yield where, ((note_id, record["text"]) if note_id else "missing_id")


def _json_note(value: object) -> tuple[str, str] | str:
    """(id, text) of one parsed JSON record, or the skip reason."""
    if not isinstance(value, dict):
        return "not_json"
    note_id = next((value[key] for key in JSON_ID_KEYS if key in value), None)
    if isinstance(note_id, int) and not isinstance(note_id, bool):
        note_id = str(note_id)
    if not isinstance(note_id, str) or not note_id.strip():
        return "missing_id"
    text = value.get("text")
    if not isinstance(text, str):
        return "missing_text"
    return note_id.strip(), text


def json_lines(path: Path, counter: SkipCounter) -> Iterator[tuple[str, object, str | None]]:
    """(where, parsed value, None) for each non-empty line of a JSONL(.gz) file, or (where, None, skip reason) for a
    line that is not UTF-8 or not JSON; counts lines read. A truncated or corrupt gzip stream is an error."""
    line_number = 0
    with open_binary(path) as raw:
        lines = iter(raw)
        while True:
            try:
                line = next(lines, None)
            except (EOFError, OSError, zlib.error) as exc:
                raise broken_stream(path, exc, f"{line_number} lines") from None
            if line is None:
                return
            line_number += 1
            if line_number == 1 and line.startswith(b"\xef\xbb\xbf"):  # a byte-order mark from Windows tools
                line = line[3:]
            if not line.strip():
                continue
            counter.read += 1
            where = f"{path.name} line {line_number}"
            try:
                yield where, json.loads(line.decode("utf-8")), None
            except UnicodeDecodeError:
                yield where, None, "invalid_utf8"
            except json.JSONDecodeError:
                yield where, None, "not_json"


def _jsonl_records(path: Path, counter: SkipCounter) -> Iterator[Record]:
    for where, value, skip in json_lines(path, counter):
        yield where, skip or _json_note(value)


def _json_records(path: Path, counter: SkipCounter) -> Iterator[Record]:
    with open_binary(path) as raw:
        try:
            data = raw.read()
        except (EOFError, OSError, zlib.error) as exc:
            raise broken_stream(path, exc, "0 bytes") from None
    try:
        value = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ReadError(f"{path}: not UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        # exc.msg is the parser's description ("Expecting value"), never the document's text.
        raise ReadError(f"{path}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); a file of one "
                        "object per line should be named .jsonl") from None
    for item, element in enumerate(value if isinstance(value, list) else [value], start=1):
        counter.read += 1
        yield f"{path.name} item {item}", _json_note(element)


def dataset_records(path: Path, role: str, counter: SkipCounter) -> tuple[Iterator[tuple[str, dict]], list[str]]:
    """The rows of a `datasets` folder (the `role` split of a DatasetDict), ClassLabel ids turned into names."""
    import datasets

    loaded = datasets.load_from_disk(str(path))
    name = role
    if isinstance(loaded, datasets.DatasetDict):
        name = next((n for n in SPLIT_NAMES[role] if n in loaded), None)
        if name is None:
            raise UserError(f"{path}: DatasetDict has no {role} split (its splits: {', '.join(loaded)})")
        loaded = loaded[name]
    names = {}
    for column, feature in loaded.features.items():
        inner = getattr(feature, "feature", None)
        if isinstance(feature, datasets.ClassLabel):
            names[column] = (feature.names, False)
        elif isinstance(inner, datasets.ClassLabel):
            names[column] = (inner.names, True)

    def rows():
        for i, row in enumerate(loaded):
            counter.read += 1
            for column, (labels, is_list) in names.items():
                value = row[column]
                if is_list and value is not None:
                    row[column] = [labels[v] for v in value]
                elif value is not None:
                    row[column] = labels[value]
            yield f"{path.name}[{name}] row {i + 1}", row

    return rows(), list(loaded.column_names)
