"""Streaming readers for the raw corpora: MIMIC-IV CSV tables (notes and hosp) and PubMed XML.

Every reader is a generator that holds one record at a time, so memory stays flat however large the file. A record
that cannot be used is never dropped silently: it is counted in a `SkipCounter` under a reason, with the first few
locations (file, row or record number, PMID; never text) kept as examples for the corpus report. After a reader is
exhausted, `counter.read == counter.kept + sum(counter.skipped.values())`. Corruption that makes the rest of a file
unreadable (truncated gzip, broken XML, an unterminated quote running to the end) raises `ReadError`, a one-line
message naming the file and how far reading got; the records before it have already been yielded.

Both formats are detected by content, not by name: a file starting with the gzip magic bytes is decompressed.

CSV skip reasons (`read_csv_table`, `read_mimic_notes`):
- ``malformed_row``: the CSV parser could not split the record into the header's columns (wrong field count, a
  stray quote, a field over `FIELD_SIZE_LIMIT`). One broken quote can make a short run of these: the parser restarts
  at the next physical line and is back in step at the next line that starts a record. Examples give the line span.
- ``invalid_utf8``: the record holds bytes that are not UTF-8. We decode with `surrogateescape` and skip such rows
  rather than replace the bytes: MIMIC is valid UTF-8, so bad bytes mean a damaged record, and U+FFFD characters
  would otherwise land in the pretraining text unnoticed.
Notes only (`read_mimic_notes`): ``missing_note_id``, ``bad_subject_id`` (not a non-negative integer),
``bad_hadm_id`` / ``bad_note_seq`` (present but not an integer; empty means None), ``missing_text`` (empty field),
``empty_text`` (whitespace only).

ICD code tables only (`read_icd_codes`: hosp `diagnoses_icd`, `procedures_icd`): ``bad_subject_id``,
``bad_hadm_id``, ``bad_seq_num`` (not an integer), ``bad_icd_version`` (not 9 or 10), ``missing_code``, and
``unknown_code`` (a code that is not in the `known` dictionary of its version, when one is given).

PubMed skip reasons (`read_pubmed`): ``no_abstract`` (a title alone is too little text for pretraining),
``malformed_article`` (no numeric PMID, or no Article element), ``delete_citation`` (each PMID listed in an update
file's `<DeleteCitation>`: an instruction to drop an earlier citation, not an article, so it is read and skipped),
``not_an_article`` (any other record, e.g. `<PubmedBookArticle>`).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Container, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from cmbert.core.io import ReadError, SkipCounter, broken_stream, csv_records, open_binary

ICD_CODE_COLUMNS = ("subject_id", "hadm_id", "seq_num", "icd_code", "icd_version")
ICD_DICTIONARY_COLUMNS = ("icd_code", "icd_version", "long_title")
MIMIC_NOTE_COLUMNS = ("note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text")


@dataclass(frozen=True)
class MimicNote:
    note_id: str
    subject_id: int
    hadm_id: int | None  # radiology reports of outpatients have none
    note_type: str
    note_seq: int | None
    charttime: str
    storetime: str | None
    text: str  # as stored: de-identified spans stay `___`


@dataclass(frozen=True)
class IcdCode:
    """One row of hosp `diagnoses_icd` or `procedures_icd` (extra columns such as `chartdate` are not kept)."""

    subject_id: int
    hadm_id: int
    seq_num: int  # 1 is the principal diagnosis / first procedure
    code: str  # without dots, as MIMIC writes it
    version: int  # 9 or 10


@dataclass(frozen=True)
class PubmedCitation:
    pmid: str
    # Versioned citations (PMID Version="2"...) are new records under the same PMID: the 2021 update file holds one
    # PMID in versions 1-4. Deduplicating (keep the highest version) is the corpus builder's call, not the reader's.
    version: int
    title: str
    abstract_sections: list[tuple[str | None, str]]  # (Label, text); Label is None in unstructured abstracts
    # One entry per MeshHeading in MEDLINE's own form: the descriptor, then its qualifiers, joined by "/"
    # ("Dopamine/metabolism/pharmacology"). The descriptor alone is the part before the first "/".
    mesh: list[str]
    languages: list[str]  # e.g. ["eng"]
    year: int | None  # publication year (PubDate/Year, else the first year in MedlineDate)


# ---------------------------------------------------------------------------------------------------------------- IO


# --------------------------------------------------------------------------------------------------------------- CSV


def _is_number(value: str) -> bool:
    """Only ASCII digits: int() would also take " 12", "1_0" and "²"."""
    return value.isascii() and value.isdigit()


def _icd_code(value: str) -> str:
    """MIMIC's form of a code: no dots, upper case (tolerates "250.00" from other exports)."""
    return value.strip().replace(".", "").upper()


def read_icd_dictionary(path: str | Path, counter: SkipCounter | None = None) -> dict[int, dict[str, str]]:
    """MIMIC's `d_icd_diagnoses` / `d_icd_procedures`: {icd_version: {code: long_title}}, the codes a MIMIC release
    can use. Rows with a version other than 9 or 10 or no code are counted skips."""
    counter = counter if counter is not None else SkipCounter()
    known: dict[int, dict[str, str]] = {9: {}, 10: {}}
    for where, record in csv_records(Path(path), ICD_DICTIONARY_COLUMNS, counter, kind="MIMIC ICD dictionary"):
        version, code = record["icd_version"].strip(), _icd_code(record["icd_code"])
        if version not in ("9", "10"):
            counter.skip("bad_icd_version", where)
        elif not code:
            counter.skip("missing_code", where)
        else:
            counter.kept += 1
            known[int(version)][code] = record["long_title"]
    return known


def read_icd_codes(path: str | Path, known: Mapping[int, Container[str]] | None = None,
                   counter: SkipCounter | None = None) -> Iterator[IcdCode]:
    """Coded rows of MIMIC's `diagnoses_icd` / `procedures_icd`. `known`: {icd_version: codes} (e.g. from
    `read_icd_dictionary` of the release's d_icd table, or `cmbert.data.ontology.known_codes`); a code outside it is
    skipped as ``unknown_code`` rather than becoming a label no model can learn from its title."""
    counter = counter if counter is not None else SkipCounter()
    for where, record in csv_records(Path(path), ICD_CODE_COLUMNS, counter, kind="MIMIC ICD code table"):
        version, code = record["icd_version"].strip(), _icd_code(record["icd_code"])
        if not _is_number(record["subject_id"]):
            counter.skip("bad_subject_id", where)
        elif not _is_number(record["hadm_id"]):
            counter.skip("bad_hadm_id", where)
        elif not _is_number(record["seq_num"]):
            counter.skip("bad_seq_num", where)
        elif version not in ("9", "10"):
            counter.skip("bad_icd_version", where)
        elif not code:
            counter.skip("missing_code", where)
        elif known is not None and code not in known.get(int(version), ()):
            counter.skip("unknown_code", f"{where}: ICD-{version} {code}")
        else:
            counter.kept += 1
            yield IcdCode(subject_id=int(record["subject_id"]), hadm_id=int(record["hadm_id"]),
                          seq_num=int(record["seq_num"]), code=code, version=int(version))


def read_mimic_notes(path: str | Path, counter: SkipCounter | None = None) -> Iterator[MimicNote]:
    """Notes of a MIMIC-IV-Note file (`discharge.csv.gz`, `radiology.csv.gz`, or the same as plain CSV). Columns are
    found by header name, so their order may differ and extra columns are ignored."""
    counter = counter if counter is not None else SkipCounter()
    for where, record in csv_records(Path(path), MIMIC_NOTE_COLUMNS, counter, kind="MIMIC note"):
        hadm_id, note_seq, text = record["hadm_id"], record["note_seq"], record["text"]
        if not record["note_id"]:
            counter.skip("missing_note_id", where)
        elif not _is_number(record["subject_id"]):
            counter.skip("bad_subject_id", where)
        elif hadm_id and not _is_number(hadm_id):  # empty is NULL: outpatient radiology
            counter.skip("bad_hadm_id", where)
        elif note_seq and not _is_number(note_seq):
            counter.skip("bad_note_seq", where)
        elif not text:
            counter.skip("missing_text", where)
        elif text.isspace():
            counter.skip("empty_text", where)
        else:
            counter.kept += 1
            yield MimicNote(
                note_id=record["note_id"], subject_id=int(record["subject_id"]),
                hadm_id=int(hadm_id) if hadm_id else None, note_type=record["note_type"],
                note_seq=int(note_seq) if note_seq else None, charttime=record["charttime"],
                storetime=record["storetime"] or None, text=text,
            )


# ------------------------------------------------------------------------------------------------------------ PubMed


def _joined_text(element: ET.Element | None) -> str:
    """An element's text with its inline markup (<i>, <sup>, <b>…) dropped and the words kept."""
    return "".join(element.itertext()).strip() if element is not None else ""


def _publication_year(article: ET.Element) -> int | None:
    pub_date = article.find("Journal/JournalIssue/PubDate")
    if pub_date is None:
        return None
    found = re.search(r"\d{4}", pub_date.findtext("Year") or pub_date.findtext("MedlineDate") or "")
    return int(found.group()) if found else None


def _citation(record: ET.Element) -> PubmedCitation | str:
    """A <PubmedArticle> as a citation, or the skip reason."""
    citation = record.find("MedlineCitation")
    pmid = (citation.findtext("PMID") or "").strip() if citation is not None else ""
    article = citation.find("Article") if citation is not None else None
    if not _is_number(pmid) or article is None:
        return "malformed_article"
    sections = [(part.get("Label") or None, text) for part in article.iterfind("Abstract/AbstractText")
                if (text := _joined_text(part))]
    if not sections:
        return "no_abstract"
    mesh = []
    for heading in citation.iterfind("MeshHeadingList/MeshHeading"):
        descriptor = _joined_text(heading.find("DescriptorName"))
        if descriptor:
            mesh.append("/".join([descriptor, *(_joined_text(q) for q in heading.iterfind("QualifierName"))]))
    version = citation.find("PMID").get("Version", "1")
    return PubmedCitation(
        pmid=pmid,
        version=int(version) if _is_number(version) else 1,
        # Non-English articles carry a bracketed English ArticleTitle; the original one is the VernacularTitle.
        title=_joined_text(article.find("ArticleTitle")) or _joined_text(article.find("VernacularTitle")),
        abstract_sections=sections,
        mesh=mesh,
        languages=[lang.text.strip() for lang in article.iterfind("Language") if lang.text and lang.text.strip()],
        year=_publication_year(article),
    )


def read_pubmed(path: str | Path, counter: SkipCounter | None = None) -> Iterator[PubmedCitation]:
    """Citations with an abstract from a PubMed baseline or update file (`pubmedYYnNNNN.xml[.gz]`), streamed: each
    record is cleared from the tree once read."""
    counter = counter if counter is not None else SkipCounter()
    path = Path(path)
    records = 0
    with open_binary(path) as raw:
        root = None
        depth = 0
        try:
            # "start" events only to find the root and the depth; records are the root's children, handled at "end".
            for event, element in ET.iterparse(raw, events=("start", "end")):
                if event == "start":
                    if root is None:
                        root = element
                        if element.tag != "PubmedArticleSet":
                            raise ReadError(f"{path}: not a PubMed XML file (root element <{element.tag}>, "
                                            "expected <PubmedArticleSet>)")
                    depth += 1
                    continue
                depth -= 1
                if depth != 1:
                    continue
                records += 1
                where = f"{path.name} record {records}"
                if element.tag == "PubmedArticle":
                    counter.read += 1
                    citation = _citation(element)
                    if isinstance(citation, str):
                        pmid = element.findtext("MedlineCitation/PMID")
                        counter.skip(citation, f"{where} (PMID {pmid.strip()})" if pmid and pmid.strip() else where)
                    else:
                        counter.kept += 1
                        yield citation
                elif element.tag == "DeleteCitation":
                    for pmid in element.iterfind("PMID"):
                        counter.read += 1
                        counter.skip("delete_citation", f"{where} (PMID {(pmid.text or '').strip()})")
                else:
                    counter.read += 1
                    counter.skip("not_an_article", f"{where} (<{element.tag}>)")
                # Drop the finished record and the root's reference to it: memory stays one record deep.
                root.clear()
        except ET.ParseError as exc:
            line, column = exc.position
            raise ReadError(f"{path}: malformed XML at line {line}, column {column} (after {records} records): "
                            f"{exc.msg.split(':')[0]}") from None
        except (EOFError, OSError, zlib.error) as exc:
            raise broken_stream(path, exc, f"{records} records") from None


def pubmed_text(citation: PubmedCitation) -> str:
    """The pretraining document: the title, one line per abstract section ("BACKGROUND: …" where the abstract is
    structured), and a last line "MeSH terms: a; b/qualifier; c" when indexed, so the model sees the curated
    vocabulary beside the prose it indexes."""
    lines = [citation.title] if citation.title else []
    lines += [f"{label}: {text}" if label else text for label, text in citation.abstract_sections]
    if citation.mesh:
        lines.append("MeSH terms: " + "; ".join(citation.mesh))
    return "\n".join(lines)
