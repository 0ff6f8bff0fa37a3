"""cmbert/data/inputs.py: every input shape (CSV, JSONL, JSON, plain text, stdin; gzipped too) and every kind of bad
input (a counted skip with its location, or a one-line error that never quotes note text). Files go in tmp_path."""

from __future__ import annotations

import csv
import gzip
import io
import json
import sys

import pytest

from cmbert.core.io import ReadError, SkipCounter
from cmbert.data.inputs import NoteInput, input_format, read_note_inputs

TEXT_A = 'Chief Complaint:\nchest pain, "pressure-like"\r\nHbA1c 7.2%, trop 0.04 -> 0.12; Café 5 µg ≥ 2\n'
TEXT_B = "IMPRESSION: No acute process."
SECRET = "Patient John Q Secret"  # text that must never appear in an error message


def write(path, data: bytes, gz: bool = False):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def csv_bytes(header, rows) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def jsonl_bytes(records) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records)


def read(path, counter=None):
    counter = counter if counter is not None else SkipCounter()
    kept_before = counter.kept
    notes = list(read_note_inputs(path, counter))
    assert counter.read == counter.kept + sum(counter.skipped.values())
    assert counter.kept - kept_before == len(notes)
    return notes, counter


# --------------------------------------------------------------------------------------------------------- formats


def test_input_format_by_name():
    assert input_format("a/notes.csv") == input_format("notes.CSV.gz") == "csv"
    assert input_format("x.jsonl") == input_format("x.jsonl.gz") == input_format("x.ndjson") == "jsonl"
    assert input_format("x.json") == input_format("x.json.gz") == "json"
    assert input_format("note.txt") == input_format("note") == input_format("note.txt.gz") == "text"
    assert input_format("-") == "text"


@pytest.mark.parametrize("gz", [False, True])
def test_mimic_csv(tmp_path, gz):
    header = ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"]
    rows = [["10000032-DS-21", "10000032", "22595853", "DS", "21", "2180-05-07", "", TEXT_A],
            ["10000032-RR-14", "10000032", "", "RR", "14", "2180-03-23", "", TEXT_B]]
    path = write(tmp_path / ("discharge.csv.gz" if gz else "discharge.csv"), csv_bytes(header, rows), gz)
    notes, counter = read(path)
    assert notes == [NoteInput("10000032-DS-21", TEXT_A), NoteInput("10000032-RR-14", TEXT_B)]
    assert counter.skipped == {}


def test_csv_columns_in_any_order_and_extra_columns_ignored(tmp_path):
    path = write(tmp_path / "n.csv", csv_bytes(["text", "extra", "note_id"], [[TEXT_B, "x", "n1"]]))
    assert read(path)[0] == [NoteInput("n1", TEXT_B)]


@pytest.mark.parametrize("gz", [False, True])
def test_jsonl(tmp_path, gz):
    records = [{"id": "a", "text": TEXT_A}, {"note_id": "b", "text": TEXT_B, "codes": ["I50.9"]},
               {"id": 7, "text": "x"}]
    path = write(tmp_path / ("in.jsonl.gz" if gz else "in.jsonl"), jsonl_bytes(records) + b"\n  \n", gz)
    notes, counter = read(path)
    assert notes == [NoteInput("a", TEXT_A), NoteInput("b", TEXT_B), NoteInput("7", "x")]
    assert counter.read == 3  # blank lines hold no record


def test_jsonl_id_key_wins_over_note_id(tmp_path):
    path = write(tmp_path / "in.jsonl", jsonl_bytes([{"id": "x", "note_id": "y", "text": "t"}]))
    assert read(path)[0] == [NoteInput("x", "t")]


def test_jsonl_byte_order_mark(tmp_path):
    path = write(tmp_path / "in.jsonl", b"\xef\xbb\xbf" + jsonl_bytes([{"id": "a", "text": "t"}]))
    assert read(path)[0] == [NoteInput("a", "t")]


@pytest.mark.parametrize("gz", [False, True])
def test_json_array_and_single_object(tmp_path, gz):
    array = write(tmp_path / ("a.json.gz" if gz else "a.json"),
                  json.dumps([{"id": "a", "text": TEXT_A}, {"note_id": "b", "text": TEXT_B}]).encode(), gz)
    assert read(array)[0] == [NoteInput("a", TEXT_A), NoteInput("b", TEXT_B)]
    single = write(tmp_path / "s.json", json.dumps({"id": "s", "text": TEXT_B}).encode())
    assert read(single)[0] == [NoteInput("s", TEXT_B)]


@pytest.mark.parametrize("name,note_id", [("ed_visit.txt", "ed_visit"), ("note", "note"), ("n.2.txt", "n.2")])
def test_plain_text_note_id_is_the_stem(tmp_path, name, note_id):
    path = write(tmp_path / name, TEXT_A.encode())
    assert read(path)[0] == [NoteInput(note_id, TEXT_A)]


def test_plain_text_gz_and_byte_order_mark(tmp_path):
    path = write(tmp_path / "ed_visit.txt.gz", b"\xef\xbb\xbf" + TEXT_A.encode(), gz=True)
    assert read(path)[0] == [NoteInput("ed_visit", TEXT_A)]


def test_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(TEXT_A.encode())))
    assert read("-")[0] == [NoteInput("stdin", TEXT_A)]


def test_stdin_bad_utf8_is_counted(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"ok \xff")))
    notes, counter = read("-")
    assert notes == [] and counter.skipped == {"invalid_utf8": 1}
    assert counter.examples["invalid_utf8"] == ["<stdin> byte 3"]


def test_one_counter_across_files(tmp_path):
    counter = SkipCounter()
    read(write(tmp_path / "a.txt", b"one"), counter)
    read(write(tmp_path / "b.jsonl", jsonl_bytes([{"id": "b", "text": ""}])), counter)
    assert counter.as_dict()["read"] == 2 and counter.kept == 1 and counter.skipped == {"empty_text": 1}


# ------------------------------------------------------------------------------------------------------- bad input


def test_empty_text_is_a_counted_skip_in_every_format(tmp_path):
    csv_path = write(tmp_path / "n.csv", csv_bytes(["note_id", "text"], [["a", ""], ["b", " \n\t"], ["c", "ok"]]))
    notes, counter = read(csv_path)
    assert notes == [NoteInput("c", "ok")] and counter.skipped == {"empty_text": 2}
    assert counter.examples["empty_text"] == ["n.csv row 1 (line 2)", "n.csv row 2 (line 3)"]

    jsonl = write(tmp_path / "n.jsonl", jsonl_bytes([{"id": "a", "text": "   "}]))
    assert read(jsonl)[1].examples == {"empty_text": ["n.jsonl line 1"]}

    text = write(tmp_path / "empty.txt", b"\n \n")
    notes, counter = read(text)
    assert notes == [] and counter.examples == {"empty_text": ["empty.txt"]}


def test_jsonl_bad_lines_are_counted_with_line_numbers(tmp_path):
    lines = [
        {"id": "ok1", "text": "fine"},
        b'{"id": "x", "text": "' + SECRET.encode() + b'"',  # cut short: not JSON
        b"[1, 2]",  # JSON, but not an object
        {"id": "no_text"},
        {"id": "n", "text": 5},
        {"text": "no id"},
        {"id": "", "text": "blank id"},
        {"id": True, "text": "bool id"},
        {"id": "u", "text": "x"},  # replaced below by a line with bad bytes
        {"id": "ok1", "text": "again"},
        {"note_id": "ok2", "text": "fine"},
    ]
    data = jsonl_bytes(lines).replace(b'"x"}', b'"\xff"}', 1)
    notes, counter = read(write(tmp_path / "in.jsonl", data))
    assert notes == [NoteInput("ok1", "fine"), NoteInput("ok2", "fine")]
    assert counter.skipped == {"not_json": 2, "missing_text": 2, "missing_id": 3, "invalid_utf8": 1,
                               "duplicate_id": 1}
    assert counter.examples["not_json"] == ["in.jsonl line 2", "in.jsonl line 3"]
    assert counter.examples["missing_text"] == ["in.jsonl line 4", "in.jsonl line 5"]
    assert counter.examples["invalid_utf8"] == ["in.jsonl line 9"]
    assert counter.examples["duplicate_id"] == ["in.jsonl line 10: id ok1"]
    assert SECRET not in json.dumps(counter.as_dict())


def test_duplicate_ids_keep_the_first(tmp_path):
    rows = [["a", "first"], ["b", "other"], ["a", "second"]]
    notes, counter = read(write(tmp_path / "n.csv", csv_bytes(["note_id", "text"], rows)))
    assert notes == [NoteInput("a", "first"), NoteInput("b", "other")]
    assert counter.examples == {"duplicate_id": ["n.csv row 3 (line 4): id a"]}


def test_csv_bad_rows_are_counted(tmp_path):
    data = csv_bytes(["note_id", "text"], [["a", "ok"], ["", "no id"]]) + b"c,bad \xff byte\nd,x,extra field\ne,ok\n"
    notes, counter = read(write(tmp_path / "n.csv", data))
    assert notes == [NoteInput("a", "ok"), NoteInput("e", "ok")]
    assert counter.skipped == {"missing_id": 1, "invalid_utf8": 1, "malformed_row": 1}


def test_plain_text_bad_utf8_is_counted(tmp_path):
    notes, counter = read(write(tmp_path / "latin1.txt", SECRET.encode() + b" caf\xe9"))
    assert notes == [] and counter.examples == {"invalid_utf8": [f"latin1.txt byte {len(SECRET) + 4}"]}


def test_csv_without_text_column_names_the_file_and_its_columns(tmp_path):
    path = write(tmp_path / "n.csv", csv_bytes(["note_id", "subject_id", "body"], [["a", "1", SECRET]]))
    with pytest.raises(ValueError, match=r"n\.csv.*missing text.*columns are: note_id, subject_id, body") as info:
        read(path)
    assert SECRET not in str(info.value)


def test_plain_text_named_csv_does_not_echo_its_first_line(tmp_path):
    path = write(tmp_path / "note.csv", f"{SECRET}, 45 y/o\nHPI: chest pain\n".encode())
    with pytest.raises(ValueError, match=r"note\.csv.*missing note_id, text.*does not look like a CSV header") as info:
        read(path)
    assert "John" not in str(info.value) and "45" not in str(info.value)


def test_unreadable_files_raise_one_line_errors(tmp_path):
    with pytest.raises(ReadError, match="no such file"):
        read(tmp_path / "missing.jsonl")
    truncated = tmp_path / "t.jsonl.gz"
    truncated.write_bytes(gzip.compress(jsonl_bytes([{"id": str(i), "text": "x" * 50} for i in range(200)]))[:-30])
    with pytest.raises(ReadError, match=r"t\.jsonl\.gz: truncated gzip"):
        read(truncated)
    empty_csv = write(tmp_path / "e.csv", b"")
    with pytest.raises(ReadError, match="empty file"):
        read(empty_csv)


def test_bad_json_file_raises_without_quoting_it(tmp_path):
    path = write(tmp_path / "a.json", jsonl_bytes([{"id": "a", "text": SECRET}, {"id": "b", "text": SECRET}]))
    with pytest.raises(ReadError, match=r"a\.json: not JSON.*named \.jsonl") as info:
        read(path)
    assert SECRET not in str(info.value)
    with pytest.raises(ReadError, match=r"b\.json: not UTF-8"):
        read(write(tmp_path / "b.json", b'{"id": "a", "text": "\xff"}'))


def test_json_bad_items_are_counted(tmp_path):
    path = write(tmp_path / "a.json", json.dumps([{"id": "a", "text": "ok"}, "just a string", {"id": "c"}]).encode())
    notes, counter = read(path)
    assert notes == [NoteInput("a", "ok")]
    assert counter.examples == {"not_json": ["a.json item 2"], "missing_text": ["a.json item 3"]}
