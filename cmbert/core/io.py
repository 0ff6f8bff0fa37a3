"""Reading input files without losing anything silently: plain or gzip (a truncated gzip is an error, not a short
file), CSV with every malformed row counted by reason (`SkipCounter`), bad UTF-8 counted, and `ReadError`: one line
naming the file and the row, for input a user must fix."""

from __future__ import annotations

import csv
import gzip
import io
import re
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from cmbert.core.errors import UserError

GZIP_MAGIC = b"\x1f\x8b"


# The csv module's limit is per field, in characters, and process-wide. MIMIC's longest notes are ~10^5 characters;
# a field of 16 MB can only be a quote that never closed, so we cut it there instead of buffering the rest of the file.
FIELD_SIZE_LIMIT = 16 * 2**20


# `surrogateescape` turns each undecodable byte into one lone surrogate in this range.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


class ReadError(UserError):
    """A file that cannot be read on: the message is one line naming the file and where reading stopped."""


@dataclass
class SkipCounter:
    """How many records a reader saw, kept, and skipped per reason. Share one across files to get a source's total."""

    read: int = 0
    kept: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 5

    def skip(self, reason: str, where: str | None = None) -> None:
        self.skipped[reason] += 1
        if where is not None:
            kept_examples = self.examples.setdefault(reason, [])
            if len(kept_examples) < self.max_examples:
                kept_examples.append(where)

    def update(self, counts: dict) -> None:
        """Add the counts of another reader, given as `as_dict()` wrote them (e.g. one file of a source)."""
        self.read += counts["read"]
        self.kept += counts["kept"]
        self.skipped.update(counts["skipped"])
        for reason, places in counts.get("examples", {}).items():
            kept_examples = self.examples.setdefault(reason, [])
            kept_examples += places[: self.max_examples - len(kept_examples)]

    def as_dict(self) -> dict:
        report = {"read": self.read, "kept": self.kept, "skipped": dict(sorted(self.skipped.items()))}
        if self.examples:
            report["examples"] = {reason: list(places) for reason, places in sorted(self.examples.items())}
        return report


@contextmanager
def open_binary(path: Path) -> Iterator[BinaryIO]:
    """The file's bytes, gunzipped when the content starts with the gzip magic (whatever the name says)."""
    try:
        raw = open(path, "rb")
    except FileNotFoundError:
        raise ReadError(f"{path}: no such file") from None
    except OSError as exc:
        raise ReadError(f"{path}: cannot open ({exc.strerror or exc})") from None
    with raw:
        if raw.peek(2)[:2] == GZIP_MAGIC:
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield unzipped
        else:
            yield raw


def broken_stream(path: Path, exc: BaseException, done: str) -> ReadError:
    """The error for a stream that stops decoding mid-file: a truncated or corrupt gzip, or a failing disk."""
    what = "truncated gzip" if isinstance(exc, EOFError) else f"corrupt or unreadable data ({exc})"
    return ReadError(f"{path}: {what} after {done}")


def csv_records(path: Path, required: Sequence[str], counter: SkipCounter, kind: str) -> Iterator[tuple[str, dict]]:
    """(where, {column: value}) for every record that has the header's columns and is valid UTF-8; counts `read` and
    the skips `malformed_row` and `invalid_utf8`. The caller counts `kept` and its own skips."""
    csv.field_size_limit(FIELD_SIZE_LIMIT)
    with open_binary(path) as raw:
        # utf-8-sig: tolerate a byte-order mark from spreadsheet exports. newline="" hands quoted newlines to csv.
        lines = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
        # strict: a quote inside a quoted field that is not doubled is an error, not silently merged text.
        reader = csv.reader(lines, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise ReadError(f"{path}: empty file, expected a CSV header") from None
        except csv.Error:
            raise ReadError(f"{path}: unreadable CSV header") from None
        except (EOFError, OSError, zlib.error) as exc:
            raise broken_stream(path, exc, "0 rows") from None
        missing = [name for name in required if name not in header]
        if missing:
            # The header's own names are not echoed: a wrong file's first line could be note text.
            raise ReadError(f"{path}: not a {kind} file: missing column(s) {', '.join(missing)}")
        if len(set(header)) != len(header):
            raise ReadError(f"{path}: duplicate column names in the header")

        row = 0
        while True:
            first_line = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                row += 1
                if "unexpected end of data" in str(exc):
                    # A quote that never closes swallows everything after it: the rest of the file is lost.
                    raise ReadError(f"{path}: unterminated quoted field from line {first_line} to the end of the "
                                    f"file (row {row}); {row - 1} rows read before it") from None
                counter.read += 1
                counter.skip("malformed_row", f"{path.name} row {row} (lines {first_line}-{reader.line_num})")
                continue
            except (EOFError, OSError, zlib.error) as exc:
                raise broken_stream(path, exc, f"{row} rows") from None
            if not fields:  # a blank line between records holds no record
                continue
            row += 1
            counter.read += 1
            where = f"{path.name} row {row} (line {first_line})"
            if len(fields) != len(header):
                counter.skip("malformed_row", f"{where}: {len(fields)} fields, header has {len(header)}")
            elif any(_ESCAPED_BYTE.search(value) for value in fields):
                counter.skip("invalid_utf8", where)
            else:
                yield where, dict(zip(header, fields, strict=True))


def read_csv_table(path: str | Path, required: Sequence[str], counter: SkipCounter | None = None,
                   ) -> Iterator[dict[str, str]]:
    """Rows of a CSV / CSV.gz table (e.g. MIMIC hosp `admissions.csv.gz`) as {column: value}, every header column
    included, values as written (empty string for NULL). `required` columns must be in the header."""
    counter = counter if counter is not None else SkipCounter()
    for _where, record in csv_records(Path(path), required, counter, kind="table with these columns"):
        counter.kept += 1
        yield record
