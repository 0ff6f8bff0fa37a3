"""`cmbert data synth`: a seeded synthetic MIMIC-IV tree (hosp/ + note/) with MIMIC's exact files, columns and formats.

What it writes under OUT:
- `hosp/{patients, admissions, diagnoses_icd, procedures_icd, d_icd_diagnoses, d_icd_procedures}.csv.gz`
- `note/{discharge, radiology}.csv.gz` (text double-quoted with embedded newlines, `___` at every de-identified span)
- `synth_report.json`, the summary `synthesize_mimic` returns.

How a patient is made (all of it from `random.Random` seeded by (seed, patient index), so patient k is the same
whatever the number of patients):
- Demographics, then chronic conditions drawn by age, sex and comorbidity (`cmbert.data.synth_catalog.CHRONIC`).
- One to many admissions over up to 12 years: each has a reason for admission drawn from the patient's state
  (a CHF patient gets CHF exacerbations, a cirrhotic variceal bleeds), complications, extra problems, procedures, a
  length of stay, maybe an ICU stay, maybe death. Between admissions chronic diseases progress (CKD 3 -> 4 -> ESRD on
  dialysis), new ones appear, and acute events leave history (an MI leaves CAD, old MI and a stent).
- Dates are shifted as MIMIC shifts them: each patient gets a whole-year shift into 2110-2210 and an
  `anchor_year_group` holding the real year of `anchor_year`. Admissions discharged before the real 2015-10-01 are
  coded in ICD-9-CM (and ICD-9 procedures), later ones in ICD-10-CM / ICD-10-PCS, so one chronic disease appears as
  its ICD-9 code early and its ICD-10 code later. Combination codes follow the coding rules (hypertension with CKD
  and heart failure -> I13.0 / 404.91, diabetes with CKD -> E11.22 / 250.40, ...).
- Notes: one discharge summary per admission (2 % of admissions have none, as in MIMIC) in MIMIC's section layout.
  Each coded condition is named through synonyms, abbreviations, its code's official title and its findings (BNP,
  EF, HbA1c, cultures, imaging); conditions that are not coded are ruled out ("CTA negative for PE"); some secondary
  conditions appear only late (the end of the hospital course, the discharge diagnoses). Sentences that claim a
  procedure are written only when that procedure was coded. A note's detail level (brief .. exhaustive) grows with the
  stay: long ICU stays list every lab draw and a day-by-day course, so some notes pass 8k tokens.
- Notes see a little ahead of the codes, as in real charts: before a chronic disease is first coded, the previous
  discharge summary often documents its precursor without coding it (an HbA1c in the prediabetes range before type 2
  diabetes, a low ejection fraction before heart failure, memory complaints before dementia), under "OUTPATIENT
  ISSUES" at the end of the hospital course (75 % of the time); 0.5 % of notes mention each precursor for a disease
  that never comes. This is what a next-visit model can learn from notes and not from codes. These sentences come
  from their own random stream, so the codes and the rest of every note are what they would be without them. Radiology reports
  cover the admission's studies (serial films in the ICU), plus some outpatient studies with no hadm_id.
- Speed: about 200 patients a second on one core, plus ~3 s to load the ontologies and write the d_icd tables.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from cmbert.core.errors import UserError
from cmbert.data.ontology import MIMIC_CODE_SYSTEMS, known_codes
from cmbert.data.synth_catalog import (
    ACUTE,
    ALLERGIES,
    CHRONIC,
    CONDITIONS,
    EXAM_EXTRAS,
    EXAMS,
    FAMILY_CONDITIONS,
    FAMILY_HISTORY,
    FINDINGS,
    IMAGING_BACKGROUND,
    PANELS,
    PMH_FILLERS,
    PROCEDURES,
    ROS_SYMPTOMS,
    ROUTINE_PANELS,
    SERIAL_CHANGES,
    VALUES,
    Condition,
    Procedure,
    ProcedureOption,
    Variant,
)

# MIMIC-IV v2.2 column order, file by file.
COLUMNS: dict[str, tuple[str, ...]] = {
    "hosp/patients": ("subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"),
    "hosp/admissions": ("subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "admission_type",
                        "admit_provider_id", "admission_location", "discharge_location", "insurance", "language",
                        "marital_status", "race", "edregtime", "edouttime", "hospital_expire_flag"),
    "hosp/diagnoses_icd": ("subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"),
    "hosp/procedures_icd": ("subject_id", "hadm_id", "seq_num", "chartdate", "icd_code", "icd_version"),
    "hosp/d_icd_diagnoses": ("icd_code", "icd_version", "long_title"),
    "hosp/d_icd_procedures": ("icd_code", "icd_version", "long_title"),
    "note/discharge": ("note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"),
    "note/radiology": ("note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"),
}

YEAR_GROUPS = ((2008, 2010), (2011, 2013), (2014, 2016), (2017, 2019))  # real years MIMIC-IV v2.2 covers
ICD10_SWITCH = (2015, 10, 1)  # real date: discharges from here on are coded in ICD-10
_FIRST_ADMISSION_SPAN_DAYS = (date(2019, 9, 30) - date(2008, 1, 1)).days
SHIFT_YEARS = (102, 191)  # 2008 + 102 = 2110, 2019 + 191 = 2210
MAX_ADMISSIONS = 32  # per patient: hadm_ids are reserved in blocks of this size
MAX_PATIENTS = 300_000  # 10^7 ids / 32 admissions each, rounded down
TOKENS_PER_WORD = 1.3  # the approximation the report uses for "tokens"
LONG_NOTE_TOKENS = 8192
# Notes stay under Python csv's default field limit (131,072 characters), so any reader can load them.
MAX_NOTE_CHARS = 100_000
MAX_LAB_DAYS, MAX_COURSE_DAYS = 24, 30

# MIMIC-IV v2.2 value sets (race and the rest as the hosp module spells them).
RACES = (("WHITE", 58), ("BLACK/AFRICAN AMERICAN", 14), ("HISPANIC/LATINO - PUERTO RICAN", 2.5), ("ASIAN", 2),
         ("UNKNOWN", 5), ("OTHER", 4), ("WHITE - OTHER EUROPEAN", 2.5), ("ASIAN - CHINESE", 1.5),
         ("HISPANIC OR LATINO", 1.5), ("UNABLE TO OBTAIN", 1), ("WHITE - RUSSIAN", 1), ("BLACK/CAPE VERDEAN", 1),
         ("HISPANIC/LATINO - DOMINICAN", 1), ("BLACK/CARIBBEAN ISLAND", 0.8), ("PATIENT DECLINED TO ANSWER", 0.8),
         ("ASIAN - SOUTH EAST ASIAN", 0.5), ("PORTUGUESE", 0.5), ("WHITE - BRAZILIAN", 0.4),
         ("AMERICAN INDIAN/ALASKA NATIVE", 0.3), ("WHITE - EASTERN EUROPEAN", 0.3), ("ASIAN - ASIAN INDIAN", 0.5))
OBSERVATION_TYPES = (("EU OBSERVATION", 50), ("OBSERVATION ADMIT", 30), ("DIRECT OBSERVATION", 15),
                     ("AMBULATORY OBSERVATION", 5))
EMERGENCY_TYPES = (("EW EMER.", 62), ("URGENT", 18), ("DIRECT EMER.", 12), ("OBSERVATION ADMIT", 8))
ELECTIVE_TYPES = (("SURGICAL SAME DAY ADMISSION", 60), ("ELECTIVE", 40))
LOCATIONS = {
    "EW EMER.": (("EMERGENCY ROOM", 90), ("WALK-IN/SELF REFERRAL", 4), ("TRANSFER FROM SKILLED NURSING FACILITY", 3),
                 ("INFORMATION NOT AVAILABLE", 3)),
    "EU OBSERVATION": (("EMERGENCY ROOM", 97), ("WALK-IN/SELF REFERRAL", 3)),
    "OBSERVATION ADMIT": (("EMERGENCY ROOM", 80), ("PHYSICIAN REFERRAL", 12), ("CLINIC REFERRAL", 8)),
    "DIRECT OBSERVATION": (("PHYSICIAN REFERRAL", 55), ("CLINIC REFERRAL", 30), ("PROCEDURE SITE", 15)),
    "AMBULATORY OBSERVATION": (("PROCEDURE SITE", 70), ("PACU", 30)),
    "URGENT": (("TRANSFER FROM HOSPITAL", 65), ("PHYSICIAN REFERRAL", 25), ("INTERNAL TRANSFER TO OR FROM PSYCH", 2),
               ("TRANSFER FROM SKILLED NURSING FACILITY", 8)),
    "DIRECT EMER.": (("PHYSICIAN REFERRAL", 60), ("CLINIC REFERRAL", 25), ("WALK-IN/SELF REFERRAL", 15)),
    "SURGICAL SAME DAY ADMISSION": (("PHYSICIAN REFERRAL", 100),),
    "ELECTIVE": (("PHYSICIAN REFERRAL", 85), ("AMBULATORY SURGERY TRANSFER", 15)),
}
FACILITY_DISCHARGES = ("SKILLED NURSING FACILITY", "REHAB", "CHRONIC/LONG TERM ACUTE CARE")

# Short names for "labs notable for ..." sentences.
LAB_SHORT = {"wbc": "WBC", "hgb": "Hgb", "plt": "plt", "na": "Na", "k": "K", "cr": "Cr", "bun": "BUN",
             "glu": "glucose", "lactate": "lactate", "trop": "TnT", "bnp": "proBNP", "inr": "INR", "tbili": "Tbili",
             "alb": "albumin", "lipase": "lipase", "ammonia": "ammonia", "hco3": "HCO3", "ast": "AST", "alt": "ALT",
             "alkp": "alk phos", "ck": "CK"}
ED_TREATMENT = {
    "pneumonia": "ceftriaxone and azithromycin", "sepsis": "vancomycin, cefepime and 2 L LR",
    "uti": "ceftriaxone 1 g IV", "pyelonephritis": "ceftriaxone and IV fluids", "chf_exacerbation": "furosemide 40 mg IV",
    "copd_exacerbation": "duonebs x3, methylprednisolone 125 mg IV and azithromycin", "mi": "aspirin 325 mg, heparin "
    "bolus and drip, and SL nitroglycerin", "gi_bleed": "pantoprazole 80 mg IV and 1 unit pRBC",
    "variceal_bleed": "octreotide, pantoprazole, ceftriaxone and 2 units pRBC", "afib_rvr": "diltiazem 10 mg IV x2",
    "alcohol_withdrawal": "diazepam 10 mg IV x3 and thiamine", "dka": "insulin drip and 3 L NS",
    "pancreatitis": "3 L LR and hydromorphone", "hip_fracture": "morphine 4 mg IV",
    "hyperkalemia": "calcium gluconate, insulin/D50 and albuterol", "cellulitis": "vancomycin 1 g IV",
    "cdiff": "PO vancomycin and IV fluids", "hepatic_encephalopathy": "lactulose 30 mL PO", "pe": "heparin drip",
}
# A condition is never ruled out in a note about a related one that is present ("no UTI" beside pyelonephritis).
NEGATION_CONFLICTS: dict[str, frozenset[str]] = {
    "uti": frozenset(("pyelonephritis", "sepsis")), "encephalopathy": frozenset(("hepatic_encephalopathy", "delirium")),
    "delirium": frozenset(("encephalopathy", "hepatic_encephalopathy")),
    "resp_failure": frozenset(("resp_failure_chronic",)), "resp_failure_chronic": frozenset(("resp_failure",)),
    "gi_bleed": frozenset(("variceal_bleed", "blood_loss_anemia")),
    "blood_loss_anemia": frozenset(("gi_bleed", "variceal_bleed", "hip_fracture")),
    "hypotension": frozenset(("septic_shock", "cardiogenic_shock", "sepsis")),
    "chf_exacerbation": frozenset(("volume_overload",)), "volume_overload": frozenset(("chf_exacerbation",)),
    "sepsis": frozenset(("septic_shock",)), "dehydration": frozenset(("volume_overload", "chf_exacerbation")),
}
# Panels drawn once a stay (HbA1c, TSH), never repeated day after day.
ONCE_ONLY_PANELS = frozenset(i for i, (_, keys) in enumerate(PANELS) if keys in (("a1c",), ("tsh",)))
# Chronic conditions usually treated with more than one drug (otherwise a condition's drugs are alternatives).
COMBINATION_THERAPY = frozenset(("hypertension", "chf", "cad", "cirrhosis", "copd", "ckd", "dm2", "insulin_use",
                                 "osteoporosis", "bph", "alcohol_use", "asthma", "hiv", "dementia"))
# The lab a day-by-day course quotes for each problem: (condition, value key, how notes name it).
TRACKED_LAB = {"aki": ("cr", "Cr"), "ckd": ("cr", "Cr"), "gi_bleed": ("hgb", "Hgb"), "variceal_bleed": ("hgb", "Hgb"),
               "blood_loss_anemia": ("hgb", "Hgb"), "sepsis": ("wbc", "WBC"), "pneumonia": ("wbc", "WBC"),
               "hyponatremia": ("na", "Na"), "hyperkalemia": ("k", "K"), "hypokalemia": ("k", "K"),
               "dka": ("hco3", "bicarb"), "thrombocytopenia": ("plt", "plt"), "pancreatitis": ("lipase", "lipase"),
               "hepatic_encephalopathy": ("ammonia", "ammonia"), "cdiff": ("wbc", "WBC"), "uti": ("wbc", "WBC"),
               "cellulitis": ("wbc", "WBC"), "mi": ("trop", "TnT"), "chf_exacerbation": ("cr", "Cr"),
               "septic_shock": ("lactate", "lactate"), "hypoglycemia": ("glu", "FSBG")}
PROGRESS = ("{T}: {lab}. {plan}", "{T} - {lab}; {plan}", "{T}: {plan} {lab}.", "{T}: {plan}")
PLANS = ("Continued current management.", "Improving.", "Plan discussed with the consult team.", "No changes today.",
         "Will continue to monitor.", "Stable overnight.", "Trending in the right direction.", "Monitoring closely.",
         "Plan unchanged.", "Slowly improving.")
# Clinical reasoning that fits any problem, for the longer problem paragraphs.
REASONING = (
    "The etiology of {t} was felt to be multifactorial.", "{T} was discussed at length with the patient and family.",
    "The plan for {t} was reviewed daily on multidisciplinary rounds.",
    "The ___ consult service was involved in the management of {t} and their recommendations were followed.",
    "Labs were trended daily and electrolytes repleted as needed.",
    "Medications were reviewed by pharmacy for interactions and renal dosing.",
    "{His} outpatient providers were updated regarding {his} {t}.",
    "{He} tolerated treatment well without adverse effects.",
    "By the time of discharge, symptoms related to {t} had substantially improved.",
    "{He} will need close outpatient follow-up for {t}.",
    "Education regarding {t} was provided, and {he} verbalized understanding.",
    "Further workup was deferred to the outpatient setting.", "Repeat labs the following morning were reassuring.",
    "Alternative explanations were considered, but the clinical picture was most consistent with {t}.",
    "Response to therapy was followed with serial exams.",
    "{His} home medications were adjusted in light of {t}.",
    "Nursing noted steady improvement in {his} functional status.",
    "Risks and benefits of the treatment options for {t} were discussed, and {he} agreed with the plan.",
    "{He} was seen by physical therapy, who recommended ___.",
    "Given {his} comorbidities, a conservative approach was favored.",
    "The team had a low threshold to escalate care, which was ultimately not needed.",
    "There were no further events related to {t} after hospital day {hd}.",
    "{His} {t} will be readdressed at {his} follow-up appointment.",
    "Outside records from ___ were obtained and reviewed.",
    "Serial examinations remained stable.",
    "The patient's daughter, ___, was updated by phone.",
)
NORMAL_EXAM = {
    "general": ("Alert, oriented, no acute distress", "Well-appearing, NAD", "Elderly, comfortable, lying in bed",
                "Pleasant, in no apparent distress"),
    "heent": ("Sclera anicteric, MMM, oropharynx clear", "NCAT, EOMI, PERRL, MMM", "Anicteric, moist mucous membranes"),
    "neck": ("Supple, JVP not elevated, no LAD", "Supple, no JVD"),
    "cv": ("Regular rate and rhythm, normal S1 + S2, no murmurs, rubs, gallops", "RRR, no m/r/g",
           "Regular rhythm, S1/S2 normal, no murmurs"),
    "lungs": ("Clear to auscultation bilaterally, no wheezes, rales, rhonchi", "CTAB, no crackles or wheezes",
              "Good air movement, clear bilaterally"),
    "abd": ("Soft, non-tender, non-distended, bowel sounds present, no organomegaly", "Soft, NT/ND, +BS",
            "Soft, nontender, nondistended, no rebound or guarding"),
    "ext": ("Warm, well perfused, 2+ pulses, no clubbing, cyanosis or edema", "WWP, no edema",
            "No lower extremity edema, calves nontender"),
    "skin": ("No rashes or lesions", "Warm and dry, no rash"),
    "neuro": ("CNII-XII intact, 5/5 strength upper/lower extremities, grossly normal sensation",
              "A&Ox3, moving all extremities", "Alert, fluent speech, strength grossly intact"),
}
OPTIONAL_EXAM = {
    "gu": ("No foley", "No CVA tenderness, no foley in place"),
    "pulses": ("2+ radial and DP pulses bilaterally", "Palpable distal pulses"),
    "psych": ("Appropriate mood and affect", "Calm, cooperative, linear thought process"),
}
EXAM_ORDER = ("general", "heent", "neck", "cv", "lungs", "chest", "abd", "rectal", "gu", "ext", "pulses", "skin",
              "neuro", "psych")
# Events for day-by-day hospital course paragraphs, with the conditions each one would contradict.
DAILY_EVENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Afebrile, hemodynamically stable.", ("sepsis",)), ("Worked with physical therapy.", ()),
    ("Tolerating a regular diet.", ()), ("Bowel regimen increased for constipation.", ("cdiff", "gastroenteritis")),
    ("Electrolytes repleted.", ()), ("Ambulating in the hallway with a walker.", ()),
    ("Spiked to 100.9; pan-cultured. UA and CXR without evidence of infection.", ("uti", "pneumonia")),
    ("Blood cultures from admission remain without growth.", ("sepsis",)),
    ("Family meeting held with ___ to update them on the plan.", ()),
    ("Slept poorly; melatonin added.", ()), ("Case management working on placement.", ()),
    ("Foley removed and voiding spontaneously.", ("urinary_retention",)),
    ("Repeat labs stable.", ()), ("Pain controlled on the current regimen.", ()),
    ("Nutrition following; calorie counts started.", ()), ("Lower extremity dopplers negative for DVT.", ("dvt",)),
    ("Mildly hypertensive overnight, improved with home medications.",
     ("hypotension", "septic_shock", "cardiogenic_shock", "sepsis", "gi_bleed", "variceal_bleed")),
    ("Episode of confusion overnight, resolved by morning with reorientation.", ()),
    ("Right arm PIV infiltrated; new access obtained.", ()), ("Seen by the consult team; recommendations appreciated.", ()),
)


# ----------------------------------------------------------------------------------------------------------------------
# Identities: scrambled but fixed by (seed, patient index), so they do not depend on how many patients are made.
_ID_SPACE = 10_000_000


def _scramble(x: int, seed: int, multiplier: int) -> int:
    """A bijection of [0, 10^7): multiplier is odd and not a multiple of 5, so coprime with 10^7."""
    return (x * multiplier + (seed * 2_654_435_761 + 97_531)) % _ID_SPACE


def subject_id_of(index: int, seed: int) -> int:
    return 10_000_000 + _scramble(index, seed, 7_654_321)


def hadm_id_of(index: int, admission: int, seed: int) -> int:
    return 20_000_000 + _scramble(index * MAX_ADMISSIONS + admission, seed, 3_141_593)


def icd10_switch(shift_years: int) -> datetime:
    """The shifted datetime at which this patient's admissions start being coded in ICD-10."""
    return datetime(ICD10_SWITCH[0] + shift_years, ICD10_SWITCH[1], ICD10_SWITCH[2])


# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class _Patient:
    index: int
    subject_id: int
    sex: str
    age: float  # at the first admission
    race: str
    language: str
    marital: str
    shift: int  # whole years added to real dates
    start: datetime  # first admission, shifted
    chronic: dict[str, int]  # condition key -> variant index (stage)
    rng: random.Random
    note_seq: int = 0
    rr_seq: int = 0

    @property
    def have(self) -> set[str]:
        return set(self.chronic)


@dataclass
class _Item:
    """One condition in one admission."""

    cond: Condition
    variant: Variant
    role: str  # principal | acute | chronic | status
    codes: tuple[str, ...] = ()
    coded: bool = True
    where: str = "full"  # full | late (hospital course end + diagnosis only) | dx_only | no_dx
    extra_terms: tuple[str, ...] = ()


@dataclass
class _Admission:
    hadm_id: int
    admit: datetime
    disch: datetime
    era: int
    items: list[_Item]
    procedures: list[tuple[Procedure, ProcedureOption, date]]
    icu: bool
    died: bool
    admission_type: str
    admission_location: str
    discharge_location: str
    insurance: str
    provider: str
    service: str
    age: int
    side: str
    values: dict[str, str] = field(default_factory=dict)
    admit_nums: dict[str, float] = field(default_factory=dict)
    base_nums: dict[str, float] = field(default_factory=dict)
    edreg: datetime | None = None
    edout: datetime | None = None
    prior: list[_Item] = field(default_factory=list)  # reasons for this patient's earlier admissions
    days_since_last: float | None = None
    precursors: list[str] = field(default_factory=list)  # uncoded findings that precede a chronic disease

    @property
    def los(self) -> float:
        return (self.disch - self.admit).total_seconds() / 86400

    @property
    def principal(self) -> _Item:
        return self.items[0]

    def has(self, key: str) -> bool:
        return any(it.cond.key == key for it in self.items)


# ----------------------------------------------------------------------------------------------------------------------
# Drawing conditions.
def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...] | list[tuple[str, float]]) -> str:
    return rng.choices([k for k, _ in weighted], [w for _, w in weighted])[0]


def _age_factor(age: float) -> float:
    return min(max((age - 25) / 40, 0.05), 1.6)


def _risk(cond: Condition, have: set[str], sex: str) -> float:
    out = 1.0
    for key, mult in cond.risk.items():
        if key in have or key == sex:
            out *= mult
    return out


def _eligible(cond: Condition, have: set[str], stages: dict[str, int], sex: str) -> bool:
    if cond.sex and cond.sex != sex:
        return False
    if cond.requires and not any(r in have for r in cond.requires):
        return False
    for ex in cond.excludes:
        key, _, stage = ex.partition(":")
        if key in have and (not stage or stages.get(key, -1) >= int(stage)):
            return False
    return not (_EXCLUDED_BY[cond.key] & have)


# key -> the conditions whose `excludes` name it without a stage (exclusion works both ways)
_EXCLUDED_BY: dict[str, frozenset[str]] = {
    key: frozenset(other.key for other in CONDITIONS.values() if key in other.excludes) for key in CONDITIONS}


def _variant_index(rng: random.Random, cond: Condition) -> int:
    if len(cond.variants) == 1:
        return 0
    return rng.choices(range(len(cond.variants)), [x.weight for x in cond.variants])[0]


def _initial_chronic(rng: random.Random, age: float, sex: str) -> dict[str, int]:
    chronic: dict[str, int] = {}
    for cond in CHRONIC:
        have = set(chronic)
        if not _eligible(cond, have, chronic, sex):
            continue
        chance = cond.prevalence * (_age_factor(age) if cond.age_related else 1.0) * _risk(cond, have, sex)
        if rng.random() < min(chance, 0.95):
            chronic[cond.key] = _variant_index(rng, cond)
    return chronic


def _evolve(patient: _Patient, years: float, age: float) -> None:
    """Between admissions: stages progress, new chronic diagnoses appear."""
    rng = patient.rng
    for cond in CHRONIC:
        if cond.key in patient.chronic:
            stage = patient.chronic[cond.key]
            if cond.progression and stage < len(cond.variants) - 1:
                if rng.random() < 1 - (1 - cond.progression) ** years:
                    patient.chronic[cond.key] = stage + 1
        elif cond.incidence and _eligible(cond, patient.have, patient.chronic, patient.sex):
            yearly = min(cond.incidence * (_age_factor(age) if cond.age_related else 1.0)
                         * _risk(cond, patient.have, patient.sex), 0.9)
            if rng.random() < 1 - (1 - yearly) ** years:
                patient.chronic[cond.key] = 0 if cond.progression else _variant_index(rng, cond)


def _acute_variant(rng: random.Random, cond: Condition, patient: _Patient, side: str) -> Variant:
    if cond.parallel and cond.requires[0] in patient.chronic:
        return cond.variants[min(patient.chronic[cond.requires[0]], len(cond.variants) - 1)]
    sided = [x for x in cond.variants if x.side == side]
    if sided:
        return sided[0]
    return cond.variants[_variant_index(rng, cond)]


# ----------------------------------------------------------------------------------------------------------------------
# Coding.
def _era_codes(variant: Variant, era: int) -> tuple[str, ...]:
    return variant.icd9 if era == 9 else variant.icd10


# Combination codes the coding rules assign, by (rule, icd_version).
COMBINATION_CODES: dict[tuple[str, int], str] = {
    ("hypertension+ckd", 9): "40390", ("hypertension+ckd", 10): "I129",
    ("hypertension+esrd", 9): "40391", ("hypertension+esrd", 10): "I120",
    ("hypertension+ckd+hf", 9): "40491", ("hypertension+ckd+hf", 10): "I130",
    ("hypertension+esrd+hf", 9): "40493", ("hypertension+esrd+hf", 10): "I132",
    ("hypertension+hf", 10): "I110",  # ICD-9 did not presume the link: 401.9 and 428.x stay separate
    ("dm2+ckd", 9): "25040", ("dm2+ckd", 10): "E1122",
    ("anemia+ckd", 9): "28521", ("anemia+ckd", 10): "D631",
    ("alcoholic_cirrhosis+ascites", 10): "K7031",  # ICD-9 keeps 571.2 + 789.59
}


def _apply_coding_rules(items: list[_Item], era: int, stages: dict[str, int]) -> None:
    """Combination codes, as coders assign them. Each rule also gives the note a phrase that says the combination."""
    by_key = {it.cond.key: it for it in items}
    ckd = stages.get("ckd") if "ckd" in by_key else None
    heart_failure = "chf" in by_key or "chf_exacerbation" in by_key
    if (htn := by_key.get("hypertension")) is not None:
        if ckd is not None:
            rule = "hypertension+" + ("esrd" if ckd >= 2 else "ckd") + ("+hf" if heart_failure else "")
            htn.codes = (COMBINATION_CODES[(rule, era)],)
            htn.extra_terms = (("hypertensive heart and kidney disease",) if heart_failure else
                               ("hypertensive chronic kidney disease", "hypertensive nephropathy"))
        elif heart_failure and era == 10:
            htn.codes = (COMBINATION_CODES[("hypertension+hf", era)],)
            htn.extra_terms = ("hypertensive heart disease with heart failure",)
    if (dm := by_key.get("dm2")) is not None:
        if ckd is not None:
            dm.codes = (COMBINATION_CODES[("dm2+ckd", era)],)
            dm.extra_terms = ("DM2 complicated by diabetic CKD", "diabetic nephropathy", "type 2 diabetes with "
                              "diabetic kidney disease")
        elif "dm_neuropathy" in by_key:
            dm.codes = ()  # the neuropathy code (250.60 / E11.40) carries the diabetes
    if (anemia := by_key.get("anemia")) is not None and ckd is not None:
        anemia.codes = (COMBINATION_CODES[("anemia+ckd", era)],)
        anemia.extra_terms = ("anemia of CKD", "anemia of chronic kidney disease")
    if era == 10 and (liver := by_key.get("cirrhosis")) is not None and (ascites := by_key.get("ascites")):
        if liver.codes == ("K7030",):
            liver.codes = (COMBINATION_CODES[("alcoholic_cirrhosis+ascites", era)],)
            ascites.codes = ()


def _diagnosis_codes(adm: _Admission) -> list[str]:
    out: list[str] = []
    for it in adm.items:
        if it.coded:
            out.extend(c for c in it.codes if c not in out)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Numbers: labs, vitals, study results.
def _fmt(key: str, value: float) -> str:
    decimals = VALUES[key][2] if key in VALUES else 1
    if key == "trop" and value < 0.01:
        return "<0.01"
    return f"{value:.{decimals}f}" if decimals else str(int(round(value)))


def _draw_values(rng: random.Random, adm: _Admission, patient: _Patient) -> None:
    base = {key: rng.uniform(lo, hi) for key, (lo, hi, _, _) in VALUES.items()}
    base["trop"] = 0.005
    base["units"] = rng.randint(1, 4)
    for it in adm.items:
        if it.role in ("chronic", "status"):
            for ranges in (it.cond.labs, it.variant.labs):
                for key, (lo, hi) in ranges.items():
                    base[key] = rng.uniform(lo, hi)
    if adm.age > 70:
        base["bnp"] = rng.uniform(150, 900)
    admit = dict(base)
    for it in adm.items:
        if it.role in ("principal", "acute"):
            for ranges in (it.cond.labs, it.variant.labs):
                for key, (lo, hi) in ranges.items():
                    admit[key] = rng.uniform(lo, hi)
    if adm.has("aki"):  # acute kidney injury is a rise over the patient's own baseline
        admit["cr"] = max(admit["cr"], base["cr"] * rng.uniform(1.6, 3.0))
    for nums in (base, admit):
        nums["dbp"] = min(nums["dbp"], nums["sbp"] - rng.uniform(28, 50))
        nums["hct"] = nums["hgb"] * 3 + rng.uniform(-1.2, 1.2)
        nums["angap"] = nums["na"] - nums["cl"] - nums["hco3"]
        if nums["angap"] < 8:
            nums["cl"] = nums["na"] - nums["hco3"] - rng.uniform(9, 14)
            nums["angap"] = nums["na"] - nums["cl"] - nums["hco3"]
    adm.base_nums, adm.admit_nums = base, admit
    values = {key: _fmt(key, val) for key, val in admit.items()}
    values.update(
        bcr=_fmt("cr", base["cr"]), dc_cr=_fmt("cr", base["cr"] * rng.uniform(1.0, 1.25)),
        trop_peak=_fmt("trop", admit["trop"] * rng.uniform(2, 5)), ldl=str(rng.randint(62, 168)),
        packs=rng.choice(("1/2", "1", "1.5", "2")), drinks=str(rng.randint(4, 14)), home_o2=str(rng.randint(2, 4)),
        chads=str(rng.randint(2, 6)), wt_gain=str(rng.randint(5, 14)), net_neg=f"{rng.uniform(2.1, 9.4):.1f}",
        hd=str(rng.randint(2, max(2, int(adm.los)))), units=str(int(base["units"])),
        hct=_fmt("hct", admit["hct"]), angap=str(int(round(admit["angap"]))),
        o2="RA" if admit["spo2"] >= 93 else rng.choice(("2L NC", "3L NC", "4L NC", "NRB", "BiPAP")),
        age=str(adm.age) if adm.age <= 89 else "___",
        pt=("Mr. ___" if patient.sex == "M" else "Ms. ___"),
        he="he" if patient.sex == "M" else "she", He="He" if patient.sex == "M" else "She",
        his="his" if patient.sex == "M" else "her", His="His" if patient.sex == "M" else "Her",
        him="him" if patient.sex == "M" else "her", side=adm.side, Side=adm.side.capitalize(),
    )
    adm.values = values


# ----------------------------------------------------------------------------------------------------------------------
# One admission.
def _choose_principal(rng: random.Random, patient: _Patient, age: float) -> Condition:
    have = patient.have
    pool = []
    for cond in ACUTE:
        if cond.prevalence <= 0 or not _eligible(cond, have, patient.chronic, patient.sex):
            continue
        weight = cond.prevalence * _risk(cond, have, patient.sex)
        if cond.age_related:
            weight *= 0.3 + min(age, 95) / 70
        if cond.elective and age < 40:
            weight *= 0.1
        pool.append((cond.key, weight))
    return CONDITIONS[_pick(rng, pool)]


def _build_admission(patient: _Patient, j: int, seed: int, admit: datetime, providers: list[str]) -> _Admission:
    rng = patient.rng
    age = patient.age + (admit - patient.start).days / 365.25
    side = rng.choice(("right", "left"))
    principal = _choose_principal(rng, patient, age)
    p_variant = _acute_variant(rng, principal, patient, side)
    side = p_variant.side or side
    items = [_Item(principal, p_variant, "principal")]
    acute_keys = {principal.key}

    def context() -> set[str]:
        return patient.have | acute_keys

    # complications (two levels: sepsis from pneumonia can bring septic shock), then unrelated extra problems
    queue = [(principal, 1.0)]
    while queue:
        source, scale = queue.pop(0)
        for key, prob in source.complications:
            cond = CONDITIONS[key]
            if key in acute_keys or cond.kind != "acute" or not _eligible(cond, context(), patient.chronic,
                                                                          patient.sex):
                continue
            if rng.random() < prob * scale:
                items.append(_Item(cond, _acute_variant(rng, cond, patient, side), "acute"))
                acute_keys.add(key)
                if scale == 1.0:
                    queue.append((cond, 0.6))
    n_extra = rng.choices((0, 1, 2, 3), (0.42, 0.33, 0.17, 0.08))[0] + (age > 75 and rng.random() < 0.3)
    for _ in range(n_extra):
        pool = [(c.key, c.secondary * _risk(c, context(), patient.sex)) for c in ACUTE
                if c.secondary > 0 and c.key not in acute_keys and _eligible(c, context(), patient.chronic,
                                                                              patient.sex)]
        if not pool:
            break
        cond = CONDITIONS[_pick(rng, pool)]
        items.append(_Item(cond, _acute_variant(rng, cond, patient, side), "acute"))
        acute_keys.add(cond.key)
    replaced = {key for it in items for key in it.cond.replaces}
    for key, stage in patient.chronic.items():
        cond = CONDITIONS[key]
        item = _Item(cond, cond.variants[stage], "status" if cond.kind == "status" else "chronic")
        item.coded = key not in replaced and rng.random() < (0.93 if cond.kind == "chronic" else 0.85)
        items.append(item)

    # length of stay, ICU, procedures, death
    los = principal.los[0] * math.exp(rng.gauss(0, principal.los[1]))
    los += 0.7 * sum(1 for it in items if it.role == "acute")
    icu = rng.random() < max(it.cond.icu for it in items)
    if icu:
        los += rng.uniform(1.0, 4.0)
    if rng.random() < 0.06:  # the long tail: complicated courses, placement delays
        los *= rng.uniform(2.5, 7.0)
    for _ in range(min(int(los // 6), 4)):  # long stays accumulate problems: delirium, C. diff, hypokalemia...
        pool = [(c.key, c.secondary * _risk(c, context(), patient.sex)) for c in ACUTE
                if c.secondary > 0 and c.key not in acute_keys and _eligible(c, context(), patient.chronic,
                                                                              patient.sex)]
        if pool and rng.random() < 0.75:
            cond = CONDITIONS[_pick(rng, pool)]
            items.insert(len(acute_keys), _Item(cond, _acute_variant(rng, cond, patient, side), "acute"))
            acute_keys.add(cond.key)
    procedures: list[tuple[Procedure, ProcedureOption]] = []
    specs = [spec for it in items if it.role in ("principal", "acute") for spec in it.cond.procedures]
    if patient.chronic.get("ckd") == 2:
        specs.append(("hemodialysis", 0.6))
    if icu:
        specs.append(("central_line", 0.45))
    for spec, prob in specs:
        if rng.random() >= prob:
            continue
        proc = PROCEDURES[rng.choice(spec.split("|"))]
        if proc.key in (p.key for p, _ in procedures):
            continue
        options = [o for o in proc.options if o.side in (None, side)]
        option = rng.choices(options, [o.weight for o in options])[0]
        procedures.append((proc, option))
        los = max(los, option.min_days + rng.uniform(1.0, 3.0))
        icu = icu or proc.icu
    # many stays are short observation stays (MIMIC's EU OBSERVATION / OBSERVATION ADMIT)
    short_stay = (not principal.elective and not icu and not procedures and principal.mortality < 0.05
                  and rng.random() < 0.22)
    if short_stay:
        los = rng.uniform(0.3, 1.5)
    los = min(max(los, 0.3), 150.0)

    death_risk = 0.6 * sum(it.cond.mortality for it in items if it.role in ("principal", "acute"))
    death_risk *= 1.9 if age > 85 else 1.4 if age > 75 else 0.6 if age < 50 else 1.0
    died = rng.random() < min(death_risk, 0.6)
    dnr = (age > 80 and rng.random() < 0.35) or (died and rng.random() < 0.7)
    if dnr:
        items.append(_Item(CONDITIONS["dnr"], CONDITIONS["dnr"].variants[0], "acute"))
    if died and rng.random() < 0.5:
        items.append(_Item(CONDITIONS["palliative"], CONDITIONS["palliative"].variants[0], "acute"))

    # admission type, locations, times
    observation = not principal.elective and not died and los < 1.6 and rng.random() < 0.85
    if principal.elective:
        admission_type = _pick(rng, ELECTIVE_TYPES)
        admit = admit.replace(hour=rng.randint(5, 9), minute=rng.randrange(60))
    elif observation:
        admission_type = _pick(rng, OBSERVATION_TYPES)
    else:
        admission_type = _pick(rng, EMERGENCY_TYPES)
    location = _pick(rng, LOCATIONS[admission_type])
    disch = admit + timedelta(days=los)
    if not died:  # people leave in the daytime
        disch = disch.replace(hour=rng.randint(10, 19), minute=rng.randrange(60))
        if disch < admit + timedelta(hours=5):
            disch = admit + timedelta(hours=rng.randint(5, 12), minutes=rng.randrange(60))
    edreg = edout = None
    if location == "EMERGENCY ROOM":
        edreg = admit - timedelta(minutes=rng.randint(90, 720))
        edout = admit + timedelta(minutes=rng.randint(5, 90))
    if died:
        discharge_location = "DIED"
    elif observation and rng.random() < 0.6:
        discharge_location = ""
    elif principal.elective:
        discharge_location = _pick(rng, (("HOME HEALTH CARE", 55), ("HOME", 25), ("REHAB", 12),
                                         ("SKILLED NURSING FACILITY", 8)))
    else:
        frail = age > 78 or los > 10
        discharge_location = _pick(rng, (
            ("HOME", 40 if not frail else 12), ("HOME HEALTH CARE", 30), ("SKILLED NURSING FACILITY", 8 if not frail
                                                                          else 34),
            ("REHAB", 4 if not frail else 10), ("CHRONIC/LONG TERM ACUTE CARE", 0.5 if los < 14 else 8),
            ("HOSPICE", 0.5 if not frail else 3), ("AGAINST ADVICE", 1.2), ("ACUTE HOSPITAL", 0.8),
            ("PSYCH FACILITY", 0.3), ("ASSISTED LIVING", 1.0 if not frail else 3), ("OTHER FACILITY", 0.5)))
    if age >= 65:
        insurance = _pick(rng, (("Medicare", 86), ("Other", 9), ("Medicaid", 5)))
    else:
        insurance = _pick(rng, (("Other", 62), ("Medicaid", 30), ("Medicare", 8)))

    switch = icd10_switch(patient.shift)
    era = 9 if disch < switch else 10
    adm = _Admission(
        hadm_id=hadm_id_of(patient.index, j, seed), admit=admit, disch=disch, era=era, items=items,
        procedures=[], icu=icu, died=died, admission_type=admission_type, admission_location=location,
        discharge_location=discharge_location, insurance=insurance, provider=rng.choice(providers),
        service=principal.service, age=int(age), side=side, edreg=edreg, edout=edout,
    )
    for it in items:
        it.codes = _era_codes(it.variant, era)
    _apply_coding_rules(items, era, patient.chronic)
    # chronic problems in a coder's order: the heavier ones first, history and status codes last
    chronic_items = [it for it in items if it.role in ("chronic", "status")]
    weight = {c.key: i for i, c in enumerate(reversed(CHRONIC))}
    chronic_items.sort(key=lambda it: (it.role == "status", weight[it.cond.key] * 0.5 + rng.random() * 20))
    adm.items = [it for it in items if it.role in ("principal", "acute")] + chronic_items
    for proc, option in procedures:
        first_day = 0 if principal.elective or proc.key in ("ventilation", "central_line", "tpa", "bipap") else 1
        day = rng.randint(min(first_day, int(los)), max(first_day, int(los * 0.6)))
        adm.procedures.append((proc, option, (admit + timedelta(days=day)).date()))
    _draw_values(rng, adm, patient)
    _choose_visibility(rng, adm)
    return adm


def _choose_visibility(rng: random.Random, adm: _Admission) -> None:
    """Where each condition shows in the note: most everywhere; some only late (the end of the hospital course and
    the discharge diagnoses) or only in the discharge diagnoses; a few chronic ones never in the diagnosis list."""
    for it in adm.items[1:]:
        roll = rng.random()
        if it.cond.key in ("dnr", "palliative"):  # code status is always stated in the course
            it.where = "full"
        elif it.role == "acute":
            it.where = "late" if roll < 0.12 else "dx_only" if roll < 0.18 else "full"
        else:
            it.where = "late" if roll < 0.08 else "dx_only" if roll < 0.15 else "no_dx" if roll < 0.3 else "full"


# ----------------------------------------------------------------------------------------------------------------------
# Precursors: what a discharge summary documents, uncoded, before a chronic disease is first coded (module docstring).
PRECURSORS: dict[str, tuple[str, ...]] = {
    "dm2": ("HbA1c {a1c}%, in the prediabetes range; counseled on diet and exercise, repeat HbA1c in 3 months.",
            "Fasting glucose {glucose} on two mornings; impaired fasting glucose, outpatient HbA1c recommended."),
    "hypertension": ("BP persistently {sbp}/{dbp} off medications during the admission; recheck at PCP follow-up and "
                     "consider starting an antihypertensive.",),
    "hyperlipidemia": ("Lipid panel with LDL {ldl} mg/dL; discuss statin therapy at follow-up.",),
    "ckd": ("Creatinine {cr} at discharge with eGFR {egfr} and trace proteinuria; recheck renal function in 3 months, "
            "possible early renal insufficiency.",),
    "chf": ("Echo with LVEF {lvef}% and grade II diastolic dysfunction; BNP {bnp}; outpatient cardiology referral.",),
    "afib": ("Runs of paroxysmal atrial tachyarrhythmia on telemetry; outpatient Holter monitor recommended.",),
    "cad": ("Reports exertional chest pressure relieved by rest over the past months; outpatient stress test "
            "recommended.",),
    "copd": ("Chronic productive cough and exertional dyspnea; outpatient PFTs recommended (FEV1/FVC {ratio} on "
             "bedside spirometry).",),
    "dementia": ("Family reports progressive forgetfulness; MoCA {moca}/30 before discharge, outpatient "
                 "neurocognitive evaluation.",),
    "cirrhosis": ("AST {ast} / ALT {alt} with an echogenic liver on ultrasound; hepatology referral, counsel "
                  "alcohol cessation.",),
    "depression": ("Endorses low mood and anhedonia, PHQ-9 {phq}; outpatient behavioral health follow-up.",),
    "anemia": ("Hgb {hgb} with normal MCV, down from prior; outpatient workup for anemia.",),
    "osa": ("Loud snoring and witnessed apneas reported by spouse; outpatient sleep study.",),
    "hypothyroidism": ("TSH {tsh} on admission labs; repeat thyroid function tests in 6 weeks.",),
    "lung_cancer": ("Incidental {nodule} mm spiculated right upper lobe nodule on CT; repeat CT chest in 3 months.",),
    "dm_neuropathy": ("Decreased vibration sense and numbness in both feet on exam; monitor for neuropathy.",),
}
PRECURSOR_DOCUMENTED, PRECURSOR_FALSE = 0.75, 0.005


def _precursor_values(rng: random.Random) -> dict[str, str]:
    return {"a1c": f"{rng.uniform(5.8, 6.4):.1f}", "glucose": str(rng.randint(104, 125)),
            "sbp": str(rng.randint(142, 162)), "dbp": str(rng.randint(88, 98)), "ldl": str(rng.randint(165, 210)),
            "cr": f"{rng.uniform(1.3, 1.6):.1f}", "egfr": str(rng.randint(52, 62)), "lvef": str(rng.randint(42, 50)),
            "bnp": str(rng.randint(180, 420)), "ratio": f"{rng.uniform(0.62, 0.69):.2f}", "moca": str(rng.randint(19, 24)),
            "ast": str(rng.randint(90, 160)), "alt": str(rng.randint(40, 70)), "phq": str(rng.randint(11, 17)),
            "hgb": f"{rng.uniform(10.2, 11.6):.1f}", "tsh": f"{rng.uniform(6.5, 11.0):.1f}",
            "nodule": str(rng.randint(7, 14))}


def _chronic_keys(adm: _Admission) -> set[str]:
    return {it.cond.key for it in adm.items if it.role in ("chronic", "status")}


def _plan_precursors(patient: _Patient, admissions: list[_Admission], seed: int) -> None:
    """Set each admission's `precursors` (sentences) from the chronic diseases first coded at the next one."""
    rng = random.Random(f"cmbert-synth:{seed}:{patient.index}:precursors")
    for j, adm in enumerate(admissions):
        have = _chronic_keys(adm)
        upcoming = _chronic_keys(admissions[j + 1]) - have if j + 1 < len(admissions) else set()
        chosen = []
        for key, templates in PRECURSORS.items():
            if key in have:
                continue
            if rng.random() < (PRECURSOR_DOCUMENTED if key in upcoming else PRECURSOR_FALSE):
                chosen.append(rng.choice(templates).format_map(_precursor_values(rng)))
        adm.precursors = chosen


# ----------------------------------------------------------------------------------------------------------------------
# Note text.
def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def _drug(med: str) -> str:
    """ "Sodium Bicarbonate 650 mg PO BID" -> "sodium bicarbonate": the words before the dose, as notes name a drug."""
    words = []
    for word in med.split(" "):
        if any(ch.isdigit() for ch in word) or word in ("PO", "SC", "IH", "TD", "SL", "IM") or len(words) == 3:
            break
        words.append(word if word.isupper() else word.lower())
    return " ".join(words) or med.split(" ")[0].lower()


def _mimic_blank_lines(text: str) -> str:
    """MIMIC's notes write an empty line as a single space."""
    while "\n\n" in text:
        text = text.replace("\n\n", "\n \n")
    return text


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _join_and(parts: list[str]) -> str:
    if not parts:
        return ""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


class _Slots:
    """`str.format_map` mapping: admission values plus `{t}`/`{T}`, a fresh surface form of the current item."""

    __slots__ = ("values", "surface")

    def __init__(self, values: dict[str, str], surface):
        self.values, self.surface = values, surface

    def __getitem__(self, key: str) -> str:
        if key == "t":
            return self.surface()
        if key == "T":
            return _cap(self.surface())
        return self.values[key]


class _NoteWriter:
    def __init__(self, patient: _Patient, adm: _Admission, title_of: dict[int, dict[str, str]]):
        self.p, self.a, self.rng = patient, adm, patient.rng
        self.title_of = title_of
        self.male = patient.sex == "M"
        self.v = adm.values
        self.happened = {p.key for p, _, _ in adm.procedures} | {it.cond.key for it in adm.items}
        self.detail = 1  # set per note by pick_detail()
        self._cc: str | None = None
        self.ed_study: tuple[str, str] | None = None
        self.item_meds: dict[str, list[str]] = {}
        seen: set[str] = set()
        for it in adm.items:
            if it.role in ("chronic", "status") and it.cond.meds:
                # one drug per condition, two where combinations are the rule (alternatives of one class otherwise)
                n = self.rng.randint(1, 2) if it.cond.key in COMBINATION_THERAPY else 1
                picks = self.rng.sample(it.cond.meds, min(len(it.cond.meds), n))
                picks = [m for m in picks if m.split(" ")[0] not in seen]
                seen.update(m.split(" ")[0] for m in picks)
                self.item_meds[it.cond.key] = picks

    # -- surface forms ---------------------------------------------------------------------------------------------
    def title(self, it: _Item) -> str | None:
        codes = it.codes or _era_codes(it.variant, self.a.era)
        return self.title_of[self.a.era].get(codes[0]) if codes else None

    def surface(self, it: _Item, specific: bool = True) -> str:
        forms: list[str] = []
        weights: list[float] = []
        if specific:
            for term in (*it.variant.terms, *it.extra_terms):
                forms.append(term)
                weights.append(3.0)
        for term in it.cond.terms:
            forms.append(term)
            weights.append(2.0 if specific else 1.0)
        if specific and (title := self.title(it)):
            forms.append(_lower_first(title))
            weights.append(1.5)
        return self.rng.choices(forms, weights)[0]

    def short(self, it: _Item) -> str:
        forms = [t for t in (*it.variant.terms, *it.cond.terms) if len(t) <= 14] or list(it.variant.terms or
                                                                                           it.cond.terms)
        return self.rng.choice(forms)

    def fill(self, template: str, it: _Item | None = None, specific: bool = True) -> str:
        surface = (lambda: self.surface(it, specific)) if it is not None else (lambda: "this condition")
        return template.format_map(_Slots(self.v, surface))

    def applicable(self, templates: tuple[str, ...]) -> tuple[str, ...]:
        """Templates whose condition holds, marker stripped: "[egd]..." only when an EGD was done (any of "[a|b]"),
        "[!egd]..." only when none was; keys name procedures or conditions of this admission."""
        out = []
        for template in templates:
            if template.startswith("["):
                marker, _, rest = template[1:].partition("]")
                negate = marker.startswith("!")
                hit = any(k in self.happened for k in marker.lstrip("!").split("|"))
                if hit == negate:
                    continue
                template = rest
            out.append(template)
        return tuple(out)

    def sentences(self, templates: tuple[str, ...], it: _Item, k: int, keep_first: bool = False) -> list[str]:
        """k of the templates, filled, in catalog order (which is the order a story is told in)."""
        templates = self.applicable(templates)
        if not templates:
            return []
        rest = range(1 if keep_first else 0, len(templates))
        chosen = sorted(self.rng.sample(rest, min(k - keep_first, len(rest))) + ([0] if keep_first else []))
        return [self.fill(templates[i], it) for i in chosen]

    def negatable(self) -> list[_Item]:
        """Conditions the note may rule out: the principal's differentials first, then others the patient lacks."""
        present = {it.cond.key for it in self.a.items} | self.p.have
        blocked = present | {k for k, related in NEGATION_CONFLICTS.items() if present & related}
        keys = [k for k in self.a.principal.cond.differentials if k not in blocked]
        others = [c.key for c in ACUTE if c.negations and c.key not in blocked and c.key not in keys
                  and _eligible(c, present, self.p.chronic, self.p.sex)]
        keys += self.rng.sample(others, min(len(others), self.rng.randint(1, 3)))
        return [_Item(CONDITIONS[k], CONDITIONS[k].variants[0], "negated") for k in keys]

    def negation(self, it: _Item) -> str:
        generic = ("no evidence of {t}", "{t} was ruled out", "without signs of {t}", "negative for {t}",
                   "{t} felt to be unlikely")
        pool = it.cond.negations if it.cond.negations and self.rng.random() < 0.8 else generic
        template = self.rng.choice(pool)
        return _cap(self.fill(template, it, specific=False)) + "."

    # -- sections --------------------------------------------------------------------------------------------------
    def header(self) -> str:
        sex = "M" if self.male else "F"
        allergies = self.rng.choice(ALLERGIES)
        return (f" \nName:  ___                     Unit No:   ___\n \nAdmission Date:  ___              "
                f"Discharge Date:   ___\n \nDate of Birth:  ___             Sex:   {sex}\n \nService: {self.a.service}"
                f"\n \nAllergies: \n{allergies}\n \nAttending: ___.\n \n")

    def visible(self, *wheres: str) -> list[_Item]:
        return [it for it in self.a.items[1:] if it.where in wheres]

    def pmh_summary(self) -> str:
        chronic = [it for it in self.visible("full", "no_dx") if it.role in ("chronic", "status")]
        shown = [self.short(it) for it in chronic[:5]]
        if not shown:
            return "no significant past medical history"
        return _join_and(shown)

    def chief_complaint(self) -> str:
        if self._cc is None:
            p = self.a.principal
            self._cc = self.fill(self.rng.choice(p.cond.cc), p) if p.cond.cc else _cap(self.short(p))
        return self._cc

    def procedures_section(self) -> str:
        if not self.a.procedures:
            return self.rng.choice(("None", "None.", "none"))
        return "\n".join(f"- {self.rng.choice(proc.terms)} (___)" if self.rng.random() < 0.4
                         else self.rng.choice(proc.terms) for proc, _, _ in self.a.procedures)

    def hpi(self, negations: list[_Item]) -> str:
        rng, a, v = self.rng, self.a, self.v
        man = "man" if self.male else "woman"
        sexletter = "M" if self.male else "F"
        p = a.principal
        opener = rng.choice((
            "{pt} is a {age} year old {man} with {pmh} who presents with {cc}.",
            "{pt} is a {age} y/o {sx} with a history of {pmh} who presented to the ED with {cc}.",
            "Patient is a {age}-year-old {man} with PMH notable for {pmh}, presenting with {cc}.",
            "{age}{sx} with {pmh} presenting with {cc}.",
        )).format(pt=v["pt"], age=v["age"], man=man, sx=sexletter, pmh=self.pmh_summary(),
                  cc=_lower_first(self.chief_complaint()))
        parts = [opener]
        parts += self.sentences(p.cond.hpi, p, rng.randint(1, max(1, len(p.cond.hpi))))
        if a.prior and rng.random() < 0.7:
            last = a.prior[-1]
            if a.days_since_last is not None and a.days_since_last < 30:
                parts.append(f"Of note, {v['he']} was recently discharged on ___ after an admission for "
                             f"{self.surface(last, specific=False)}.")
            else:
                parts.append(rng.choice(("{He} was last admitted in ___ for {x}.", "Prior admissions include ___ "
                                         "for {x}.", "Of note, {he} was previously hospitalized for {x}.")).format(
                    He=v["He"], he=v["he"], x=self.surface(last, specific=False)))
        known = [it for it in self.visible("full", "no_dx") if it.role == "chronic"
                 and self.applicable(it.variant.evidence + it.cond.evidence)]
        for it in rng.sample(known, min(len(known), rng.randint(0, 2))):
            evidence = self.fill(rng.choice(self.applicable(it.variant.evidence + it.cond.evidence)), it)
            parts.append(f"Regarding {v['his']} {self.short(it)}, {_lower_first(evidence)}")
        symptoms = {s for it in a.items for s in it.cond.symptoms}
        denied = [s for s in ROS_SYMPTOMS if s not in symptoms]
        denied = rng.sample(denied, min(len(denied), rng.randint(3, 7)))
        parts.append(rng.choice(("{He} denies {x}.", "Denies {x}.", "No {x}.", "ROS negative for {x}.")).format(
            He=v["He"], x=_join_and(denied)))
        if rng.random() < 0.5:
            parts.append(rng.choice((
                "At baseline, {he} lives {where} and is independent in ADLs.",
                "At baseline {he} ambulates with a walker and requires help with IADLs.",
                "{He} is normally quite active, walking daily.",
                "At baseline {he} uses a cane and lives {where}.")).format(
                he=v["he"], He=v["He"], where=rng.choice(("at home with family", "alone", "with " + v["his"] + " spouse"))))
        if a.admission_location == "EMERGENCY ROOM":
            parts.append(rng.choice((
                "In the ED, initial vitals were: T {temp} HR {hr} BP {sbp}/{dbp} RR {rr} SpO2 {spo2}% {o2}.",
                "In the ED, initial VS: {temp} {hr} {sbp}/{dbp} {rr} {spo2}% on {o2}.",
                "ED vitals: T {temp}, HR {hr}, BP {sbp}/{dbp}, RR {rr}, O2 sat {spo2}% {o2}.")).format_map(v))
            abnormal = [f"{LAB_SHORT[k]} {v[k]}" for k in LAB_SHORT if self._abnormal(k, a.admit_nums[k])]
            if abnormal:
                parts.append(f"Labs were notable for {_join_and(abnormal[:7])}.")
            if self.ed_study:
                parts.append(rng.choice(("{x} showed: {y}", "Imaging in the ED ({x}): {y}", "{x} was notable for: {y}"))
                             .format(x=self.ed_study[0], y=self.ed_study[1]))
            if (neg := negations[:1]):
                parts.append(self.negation(neg[0]))
            if rng.random() < 0.3:
                parts.append(f"{rng.choice(('Cardiology', 'Surgery', 'GI', 'Renal', 'Neurology', 'Social work'))} "
                             f"was consulted in the ED.")
            given = ED_TREATMENT.get(p.cond.key) or rng.choice(("1 L NS", "acetaminophen", "IV fluids and ondansetron"))
            if p.cond.key == "stroke":
                given = "IV tPA after CT excluded hemorrhage" if "tpa" in self.happened else "aspirin 300 mg PR"
            parts.append(f"{v['He']} received {given}.")
            parts.append(rng.choice(("On arrival to the floor, {he} reports feeling better.",
                                     "On arrival to the floor, {he} was comfortable.",
                                     "Upon arrival to the floor, {he} endorses the history above.")).format_map(v))
        text = " ".join(parts) if rng.random() < 0.5 else "\n".join(parts)
        if self.detail >= 1 and rng.random() < 0.6:
            positives = sorted(symptoms)[:4]
            negatives = [x for x in ROS_SYMPTOMS if x not in symptoms]
            text += "\n \nREVIEW OF SYSTEMS:\n" + (f"(+) {_join_and(positives)}\n" if positives else "(+) per HPI\n")
            text += f"(-) {', '.join(negatives)}. All other systems reviewed and negative."
        return text

    @staticmethod
    def _abnormal(key: str, value: float) -> bool:
        lo, hi, _, _ = VALUES[key]
        return value < lo or value > hi

    def past_history(self) -> str:
        rng = self.rng
        lines = []
        for it in self.visible("full", "no_dx"):
            if it.role not in ("chronic", "status"):
                continue
            text = self.surface(it)
            if (evidence := self.applicable(it.variant.evidence)) and rng.random() < 0.4:
                text += f" ({_lower_first(self.fill(rng.choice(evidence), it).rstrip('.'))})"
            lines.append(text)
        lines += rng.sample(PMH_FILLERS, rng.randint(0, 3))
        if not lines:
            return "None"
        style = rng.random()
        if style < 0.4:
            return "\n".join(f"- {x}" for x in lines)
        if style < 0.7:
            return "\n".join(f"{i}. {x}" for i, x in enumerate(lines, 1))
        text = "PAST MEDICAL HISTORY:\n" + "\n".join(lines)
        surgeries = [proc for it in self.a.prior for proc in it.cond.procedures if "|" not in proc[0]]
        if surgeries and rng.random() < 0.5:
            text += "\n \nPAST SURGICAL HISTORY:\n" + "\n".join(
                f"- {PROCEDURES[key].terms[0]} (___)" for key, _ in surgeries[:3])
        return text

    def social(self) -> str:
        rng, have, v = self.rng, self.p.have, self.v
        if rng.random() < 0.45:
            return "___"
        lines = [rng.choice(("Lives with {his} spouse in ___.", "Lives alone in an apartment.", "Lives with {his} "
                             "daughter.", "Resides at ___ nursing facility.", "Retired ___, lives with family."))]
        if "tobacco" in have:
            current = self.p.chronic["tobacco"] == 0
            lines.append(f"Tobacco: {'current, ' + v['packs'] + ' ppd' if current else 'former, quit ___ years ago'}")
        else:
            lines.append("Tobacco: never")
        drinking = v["drinks"] + " drinks daily" if "alcohol_use" in have else rng.choice(("social", "none", "rare"))
        lines.append(f"EtOH: {drinking}")
        lines.append("Illicits: " + rng.choice(("denies", "none", "denies IVDU")))
        return "\n".join(line.format_map(v) for line in lines)

    def family(self) -> str:
        a, b = self.rng.sample(FAMILY_CONDITIONS, 2)
        return self.rng.choice(FAMILY_HISTORY).format(rel_a=a, rel_b=b)

    def exam(self, discharge: bool) -> str:
        rng, v, a = self.rng, self.v, self.a
        findings: dict[str, str] = {}
        for it in reversed(a.items):  # the principal last, so it wins
            if discharge and it.role in ("principal", "acute"):
                continue
            for system, text in it.cond.exam:
                findings[system] = self.fill(text, it)
        if discharge:
            vitals = (f"VS: {rng.uniform(97.6, 98.9):.1f} {rng.randint(108, 142)}/{rng.randint(60, 86)} "
                      f"{rng.randint(62, 92)} {rng.randint(14, 18)} {rng.randint(93, 99)}% RA")
        else:
            vitals = f"VS: T {v['temp']} BP {v['sbp']}/{v['dbp']} HR {v['hr']} RR {v['rr']} O2 {v['spo2']}% {v['o2']}"
        lines = [vitals]
        for system in EXAM_ORDER:
            text = findings.get(system) or (rng.choice(NORMAL_EXAM[system]) if system in NORMAL_EXAM else None)
            if text is None and system in OPTIONAL_EXAM and rng.random() < 0.4:
                text = rng.choice(OPTIONAL_EXAM[system])
            if text:
                lines.append(f"{system.upper() if system != 'cv' else 'CV'}: {text}")
        return "\n".join(lines)

    def physical_exam(self) -> str:
        admission = self.exam(False)
        if self.a.died:
            discharge = ("Patient expired. No heart sounds, no breath sounds, pupils fixed and unreactive, no response "
                         "to painful stimuli.")
        else:
            discharge = self.exam(True)
        if self.rng.random() < 0.5:
            return f"ADMISSION PHYSICAL EXAM:\n{admission}\n \nDISCHARGE PHYSICAL EXAM:\n{discharge}"
        return f"ON ADMISSION:\n{admission}\n \nON DISCHARGE:\n{discharge}"

    # -- labs ------------------------------------------------------------------------------------------------------
    def lab_lines(self, nums: dict[str, float], when: str, panels: list[int]) -> list[str]:
        lines = []
        for index in panels:
            specimen, keys = PANELS[index]
            cells = []
            for key in keys:
                if key == "hct":
                    cells.append(f"Hct-{nums['hct']:.1f}" + ("*" if not 34 <= nums["hct"] <= 47 else ""))
                    continue
                if key == "angap":
                    cells.append(f"AnGap-{int(round(nums['angap']))}" + ("*" if nums["angap"] > 16 else ""))
                    continue
                lo, hi, _, label = VALUES[key]
                flag = "*" if (nums[key] < lo or nums[key] > hi) and key not in ("neuts", "lymphs") else ""
                cells.append(f"{label}-{_fmt(key, nums[key])}{flag}")
            lines.append(f"___ {when} {specimen} " + " ".join(cells))
        return lines

    def relevant_panels(self, admission: bool = False) -> list[int]:
        moved = {k for it in self.a.items if it.role in ("principal", "acute") for k in it.cond.labs}
        moved |= {k for it in self.a.items for k in it.variant.labs}
        routine = set(ROUTINE_PANELS) | ({2, 4} if admission else set())
        extra = [i for i, (_, keys) in enumerate(PANELS) if i not in routine and moved & set(keys)]
        return sorted(routine | set(extra))

    def urinalysis(self, when: str) -> list[str]:
        a, rng = self.a, self.rng
        infected = a.has("uti") or a.has("pyelonephritis")
        if not infected and rng.random() < 0.6:
            return []
        if infected:
            return [f"___ {when} URINE Color-Yellow Appear-Cloudy Sp ___",
                    f"___ {when} URINE Blood-MOD Nitrite-{rng.choice(('POS', 'NEG'))} Protein-30 Glucose-NEG "
                    f"Ketone-NEG Bilirub-NEG Urobiln-NEG pH-6.5 Leuks-LG",
                    f"___ {when} URINE RBC-{rng.randint(6, 40)}* WBC->182* Bacteri-MANY Yeast-NONE "
                    f"Epi-{rng.randint(0, 4)}"]
        return [f"___ {when} URINE Color-Straw Appear-Clear Sp ___",
                f"___ {when} URINE Blood-NEG Nitrite-NEG Protein-NEG Glucose-NEG Ketone-NEG Bilirub-NEG "
                "Urobiln-NEG pH-6.0 Leuks-NEG",
                f"___ {when} URINE RBC-{rng.randint(0, 2)} WBC-{rng.randint(0, 3)} Bacteri-NONE Yeast-NONE Epi-0"]

    def day_nums(self, fraction: float) -> dict[str, float]:
        """Values a fraction of the way from admission (0) to discharge (1), with day-to-day noise."""
        a, rng = self.a, self.rng
        out = {}
        recovered = 1 - (1 - fraction) ** 2.5  # acute abnormalities settle early in the stay
        for key, start in a.admit_nums.items():
            end = a.base_nums[key]
            value = start + (end - start) * recovered
            out[key] = value * (1 + rng.uniform(-0.025, 0.025))
        out["angap"] = out["na"] - out["cl"] - out["hco3"]
        return out

    @staticmethod
    def clock(rng: random.Random) -> str:
        hour = rng.randint(1, 12)
        return f"{hour:02d}:{rng.randrange(60):02d}{rng.choice(('AM', 'PM'))}"

    def draw_time(self, afternoon: bool = False) -> str:
        rng = self.rng
        return (f"{rng.randint(1, 11):02d}:{rng.randrange(60):02d}PM" if afternoon
                else f"{rng.randint(3, 8):02d}:{rng.randrange(60):02d}AM")

    def results(self, reports: list[tuple[str, str, str]]) -> str:
        """Labs (admission, interval, discharge), micro, imaging, EKG/echo. How much depends on the note's detail:
        brief notes give admission and discharge labs; exhaustive ones every draw of every day."""
        rng, a, detail = self.rng, self.a, self.detail
        panels = self.relevant_panels()
        when = self.clock(rng)
        out = ["ADMISSION LABS:", *self.lab_lines(a.admit_nums, when, self.relevant_panels(admission=True)),
               *self.urinalysis(when), ""]
        days = max(int(a.los), 1)
        if days > 2 and detail > 0:
            if detail == 1:
                interval = sorted(rng.sample(range(1, days), min(days - 1, 2)))
            elif detail == 2:
                interval = list(range(1, days, 2))
            else:
                interval = list(range(1, days))
            if len(interval) > MAX_LAB_DAYS:  # very long stays: evenly spaced days, as a summarizing author would
                interval = sorted({interval[i * len(interval) // MAX_LAB_DAYS] for i in range(MAX_LAB_DAYS)})
            out.append("PERTINENT INTERVAL LABS:" if detail == 1 else "INTERVAL LABS:")
            daily_panels = sorted((set(panels) | {2, 4}) - ONCE_ONLY_PANELS)
            icu_days = max(2, int(days * rng.uniform(0.4, 0.9))) if a.icu else 0
            for day in interval:
                nums = self.day_nums(min(day / max(days - 1, 1), 1.0))
                out += self.lab_lines(nums, self.draw_time(), daily_panels if detail == 3 else [0, 3])
                draws = (3 if day <= icu_days else 1 if rng.random() < 0.6 else 0) if detail == 3 else 0
                for draw in range(draws):
                    nums = self.day_nums(min((day + 0.3 * (draw + 1)) / max(days - 1, 1), 1.0))
                    time = self.draw_time(afternoon=True)
                    out += self.lab_lines(nums, time, [0, 3] if draw == 0 else [3, 7] if draw == 1 else [3])
                    if day <= icu_days:
                        out.append(f"___ {time} BLOOD Type-ART pO2-{rng.randint(62, 140)}* "
                                   f"pCO2-{rng.randint(34, 58)} pH-7.{rng.randint(28, 45)} calTCO2-{rng.randint(20, 30)}"
                                   f" Base XS-{rng.randint(-6, 3)}")
                        out.append(f"___ {time} BLOOD Lactate-{nums['lactate']:.1f}"
                                   + ("*" if nums["lactate"] > 2 else ""))
                        if day % 2 == 0 and not a.has("sepsis"):
                            out.append(f"___ {self.clock(rng).lower()} BLOOD CULTURE      Source: Line-___. "
                                       "Blood Culture, Routine (Pending): NO GROWTH TO DATE.")
            out.append("")
        micro = self.micro()
        if micro:
            out += ["MICROBIOLOGY:", *micro, ""]
        if reports:
            out.append("IMAGING:" if rng.random() < 0.5 else "IMAGING/STUDIES:")
            full_reports = len(reports) if detail == 3 else 3 if detail == 2 else 0
            for n, (exam, impression, full) in enumerate(reports):
                out.append(f"{exam} (___): " + (f"\n{full}" if n < full_reports else impression))
            out.append("")
        cardiac = [it for it in a.items if it.cond.key in ("mi", "chf_exacerbation", "afib_rvr", "heart_block",
                                                          "syncope", "chest_pain")]
        if cardiac:
            ekg = rng.choice(("Sinus rhythm at {hr}, normal axis, no acute ST changes.", "Sinus tachycardia, "
                              "nonspecific T wave flattening.", "NSR, LAD, poor R wave progression."))
            for it in cardiac:
                ekg = next((e for e in self.applicable(it.variant.evidence + it.cond.evidence)
                            if e.startswith("EKG")), ekg)
            out += ["EKG: " + self.fill(ekg, cardiac[0]), ""]
            if "chf" in self.p.have or a.has("mi"):
                out += [self.echo(), ""]
        if not a.died and days > 1:
            out += ["DISCHARGE LABS:", *self.lab_lines(self.day_nums(1.0), self.draw_time(), [0, 3, 7]), ""]
        return "\n".join(out).rstrip().replace("\n\n", "\n \n")

    def echo(self) -> str:
        rng, ef = self.rng, int(self.v["ef"])
        if self.detail < 2:
            return f"TTE (___): LVEF {ef}%. " + rng.choice(("Mild mitral regurgitation. Normal RV function.",
                                                             "Moderate left atrial enlargement.",
                                                             "No pericardial effusion."))
        wall = "normal regional and global biventricular systolic function" if ef >= 50 else (
            "severe global left ventricular hypokinesis with regional akinesis of the inferior and inferolateral walls")
        return (f"TTE (___): The left atrium is {rng.choice(('normal in size', 'mildly dilated', 'moderately dilated'))}"
                f". There is {rng.choice(('mild', 'moderate', 'no'))} symmetric left ventricular hypertrophy. There is "
                f"{wall}. The visually estimated left ventricular ejection fraction is {ef}%. Right ventricular "
                f"chamber size and free wall motion are {rng.choice(('normal', 'mildly depressed'))}. The aortic "
                f"valve leaflets are mildly thickened. {rng.choice(('Mild (1+)', 'Moderate (2+)', 'Trace'))} mitral "
                "regurgitation is seen. The estimated pulmonary artery systolic pressure is "
                f"{rng.choice(('normal', 'mildly elevated', 'moderately elevated'))}. There is no pericardial effusion."
                "\nIMPRESSION: " + ("Preserved biventricular systolic function." if ef >= 50 else
                                    "Severely depressed left ventricular systolic function."))

    def micro(self) -> list[str]:
        a, rng = self.a, self.rng
        keys = {it.cond.key: it for it in a.items}
        lines = []
        if "sepsis" in keys:
            organism = {"A4151": "ESCHERICHIA COLI", "A403": "STREPTOCOCCUS PNEUMONIAE", "A4101": "STAPH AUREUS COAG +"}
            bug = organism.get(keys["sepsis"].variant.icd10[0])
            lines.append(f"___ {self.clock(rng).lower()} BLOOD CULTURE      Source: Venipuncture.\n"
                         f"   Blood Culture, Routine (Final ___): {bug + '.' if bug else 'NO GROWTH.'}")
        elif any(k in keys for k in ("pneumonia", "uti", "cellulitis", "pyelonephritis")) or rng.random() < 0.2:
            lines.append(f"___ {self.clock(rng).lower()} BLOOD CULTURE      Source: Venipuncture.\n"
                         "   Blood Culture, Routine (Pending): NO GROWTH TO DATE.")
        if "uti" in keys or "pyelonephritis" in keys:
            bug = "ESCHERICHIA COLI" if keys.get("uti") and "B9620" in keys["uti"].variant.icd10 else \
                rng.choice(("GRAM NEGATIVE ROD(S)", "KLEBSIELLA PNEUMONIAE", "ESCHERICHIA COLI"))
            lines.append(f"___ {self.clock(rng).lower()} URINE     Source: ___.\n"
                         f"   URINE CULTURE (Final ___):\n      {bug}.    >100,000 CFU/mL.")
        elif rng.random() < 0.25 and not a.has("uti"):
            lines.append(f"___ {self.clock(rng).lower()} URINE     Source: ___.\n"
                         "   URINE CULTURE (Final ___):    NO GROWTH.")
        if "cdiff" in keys:
            lines.append(f"___ {self.clock(rng).lower()} STOOL     CONSISTENCY: WATERY\n"
                         "   C. difficile PCR (Final ___): POSITIVE.")
        return lines

    # -- hospital course -------------------------------------------------------------------------------------------
    def course(self, negations: list[_Item]) -> str:
        rng, a, v = self.rng, self.a, self.v
        p = a.principal
        man = "man" if self.male else "woman"
        opener = rng.choice((
            "{pt} is a {age} year old {man} with {pmh} who presented with {cc}, found to have {dx}.",
            "{age}{sx} with {pmh} admitted with {dx}.",
            "BRIEF SUMMARY: {pt} is a {age} y/o {man} with {pmh} who was admitted for {dx}.",
        )).format(pt=v["pt"], age=v["age"], man=man, sx="M" if self.male else "F", pmh=self.pmh_summary(),
                  cc=_lower_first(self.chief_complaint()), dx=self.surface(p))
        blocks = [opener, ""]
        if rng.random() < 0.5:
            blocks.append("ACUTE ISSUES:" if rng.random() < 0.5 else "ACTIVE ISSUES:")
        blocks.append(self.problem(p, negations, principal=True))
        late_blocks = []
        for it in a.items[1:]:
            if it.role != "acute" or it.where == "dx_only":
                continue
            (late_blocks if it.where == "late" else blocks).append(self.problem(it, []))
        if a.icu:
            blocks.append(self.icu_course())
        if self.detail >= 2 and a.los >= 4:
            blocks.append(self.daily_course())
        chronic = [it for it in a.items if it.role in ("chronic", "status") and it.where in ("full", "no_dx")
                   and (it.cond.course or it.cond.meds)]
        if chronic:
            blocks.append("CHRONIC ISSUES:" if rng.random() < 0.6 else "STABLE ISSUES:")
            for it in chronic:
                blocks.append(self.chronic_problem(it))
        late_blocks += [self.chronic_problem(it) for it in a.items
                        if it.role in ("chronic", "status") and it.where == "late"]
        blocks += late_blocks
        if a.died:
            blocks.append(rng.choice((
                "Despite maximal medical therapy {he} continued to decline. After discussion with the family, "
                "{he} was made comfort measures only and passed away on ___ with family at the bedside.",
                "{His} condition worsened despite treatment. Goals of care were readdressed with the health care "
                "proxy and the decision was made to pursue comfort care. {He} expired on ___.")).format_map(v))
        else:
            blocks.append(self.transitional())
        return "\n".join(b for b in blocks).replace("\n\n\n", "\n\n").replace("\n\n", "\n \n")

    def problem(self, it: _Item, negations: list[_Item], principal: bool = False) -> str:
        rng, detail = self.rng, self.detail
        head = f"# {_cap(self.surface(it))}:"
        k = (rng.randint(2, 5) if principal else rng.randint(1, 3)) + max(detail - 1, 0) * 2 - (detail == 0)
        body = self.sentences(it.cond.course, it, max(k, 1), keep_first=principal)
        evidence = it.variant.evidence + it.cond.evidence
        if evidence:
            body[1:1] = self.sentences(evidence, it, rng.randint(1, 2) + max(detail - 1, 0))
        if detail >= 2:
            reasoning = rng.sample(REASONING, rng.randint(1, 2) if detail == 2 else rng.randint(3, 6))
            for template in reasoning:
                body.insert(rng.randint(1, len(body)), self.fill(template, it))
        if detail == 3 and self.a.los >= 4:
            body += self.timeline(it)
        for neg in negations:
            body.insert(rng.randint(0, len(body)), self.negation(neg))
        if not body:
            body = [f"Treated for {self.surface(it)}."]
        return f"{head} {' '.join(body)}" if rng.random() < 0.6 else f"{head}\n{' '.join(body)}"

    def timeline(self, it: _Item) -> list[str]:
        """Dated steps of one problem through the stay: its lab on chosen days, its daily notes, the plan."""
        rng, days = self.rng, int(self.a.los)
        tracked = TRACKED_LAB.get(it.cond.key)
        daily = self.applicable(it.cond.daily)
        steps = max(2, days // 2) if tracked or daily else 2  # untracked problems get a short timeline
        chosen = sorted(rng.sample(range(1, days), min(days - 1, steps, 12)))
        out = []
        for day in chosen:
            roll = rng.random()
            if tracked and roll < 0.55:
                key, label = tracked
                value = _fmt(key, self.day_nums(day / days)[key])
                out.append(rng.choice(("On HD {d}, {l} was {x}.", "{L} {x} on HD {d}.", "By HD {d} the {l} was "
                                       "{x}.")).format(d=day, l=label, L=_cap(label), x=value))
            elif daily and roll < 0.85:
                out.append(f"On HD {day}: {_lower_first(self.fill(rng.choice(daily), it))}")
            else:
                out.append(f"Reassessed on HD {day}: {_lower_first(rng.choice(PLANS))}")
        return out

    def chronic_problem(self, it: _Item) -> str:
        rng = self.rng
        body = []
        if it.cond.course:
            body += self.sentences(it.cond.course, it, 1 + (self.detail == 3))
        if self.detail == 3 and (evidence := self.applicable(it.variant.evidence + it.cond.evidence)):
            body.append(self.fill(rng.choice(evidence), it))
        if self.item_meds.get(it.cond.key) and rng.random() < 0.6:
            med = self.item_meds[it.cond.key][0]
            body.append(rng.choice(("Continued home {m}.", "Continued {m} at home dose.", "On {m}, continued.",
                                    "Home {m} was continued.")).format(m=_drug(med)))
        if not body:
            body.append("Stable.")
        return f"# {_cap(self.surface(it))}: {' '.join(body)}"

    def icu_course(self) -> str:
        rng, v = self.rng, self.v
        text = ["ICU COURSE:" if rng.random() < 0.5 else "# MICU course:",
                rng.choice(("Transferred to the MICU on hospital day {hd} for closer monitoring.",
                            "Admitted directly to the ICU from the ED for closer monitoring.",
                            "Required ICU level of care for the first several days.")).format_map(v)]
        if any(p.key == "ventilation" for p, _, _ in self.a.procedures):
            text.append("Intubated for airway protection and hypoxemia; sedated with propofol and fentanyl. "
                        "Extubated successfully after spontaneous breathing trial.")
        if any(p.key == "central_line" for p, _, _ in self.a.procedures):
            text.append("Central venous access obtained for pressors and frequent lab draws.")
        text.append("Called out to the floor once stable.")
        if self.detail < 2:
            return " ".join(text)
        return " ".join(text) + "\n" + self.icu_by_system()

    def icu_by_system(self) -> str:
        """The ICU course by organ system, each line following what this admission actually had."""
        a, rng, v = self.a, self.rng, self.v
        has = a.has
        procs = {p.key for p, _, _ in a.procedures}
        infection = [k for k in ("sepsis", "pneumonia", "uti", "pyelonephritis", "cellulitis", "cdiff", "sbp")
                     if has(k)]
        lines = []
        if "ventilation" in procs:
            lines.append("NEURO: Sedated with propofol and fentanyl while intubated with daily sedation holidays; "
                         "CAM-ICU negative after extubation.")
        elif has("encephalopathy") or has("delirium") or has("hepatic_encephalopathy"):
            lines.append("NEURO: Waxing and waning mental status, improving with treatment of the underlying cause.")
        else:
            lines.append("NEURO: Alert and oriented throughout the ICU stay.")
        if has("septic_shock") or has("cardiogenic_shock") or has("hypotension"):
            lines.append("CV: Required norepinephrine for a MAP goal above 65, weaned off on hospital day {hd}. "
                         "Home antihypertensives held.".format_map(v))
        else:
            lines.append("CV: Hemodynamically stable on telemetry; home cardiac medications continued as tolerated.")
        if "ventilation" in procs:
            lines.append("PULM: Intubated on AC ventilation, weaned to pressure support and extubated after a "
                         "successful spontaneous breathing trial.")
        elif "bipap" in procs:
            lines.append("PULM: Intermittent BiPAP with improvement in work of breathing; weaned to nasal cannula.")
        else:
            lines.append("PULM: Weaned to room air; incentive spirometry encouraged.")
        if "hemodialysis" in procs:
            lines.append("RENAL: Hemodialysis per the renal team on the usual schedule.")
        elif has("aki"):
            lines.append(f"RENAL: Creatinine peaked at {v['cr']}; medications renally dosed and nephrotoxins avoided.")
        else:
            lines.append("RENAL: Urine output adequate, creatinine at baseline.")
        if infection:
            lines.append("ID: Broad-spectrum antibiotics narrowed according to culture data; surveillance "
                         "cultures without growth.")
        else:
            lines.append("ID: No source of infection identified; antibiotics were not required.")
        if has("gi_bleed") or has("variceal_bleed") or has("blood_loss_anemia"):
            lines.append(f"HEME: Transfused {v['units']} units pRBC for a goal hemoglobin above 7; H/H then stable.")
        else:
            lines.append("HEME: H/H stable without transfusion. Subcutaneous heparin for DVT prophylaxis.")
        if "dm2" in self.p.have or "dm1" in self.p.have:
            lines.append("ENDO: Glucose managed with glargine and a humalog sliding scale.")
        else:
            lines.append("ENDO: Fingersticks within goal without insulin.")
        lines.append("FEN: " + ("Tube feeds via OGT while intubated; " if "ventilation" in procs else
                                "Diet advanced as tolerated; ") + "electrolytes repleted per ICU protocol.")
        access = ["PIV x2"] + (["R IJ CVL"] if "central_line" in procs else []) + (
            ["L radial arterial line"] if "arterial_line" in procs else [])
        lines.append(f"ACCESS: {', '.join(access)}.")
        lines.append(f"CODE: {'DNR/DNI' if has('dnr') else rng.choice(('Full code', 'Full (confirmed)'))}.")
        return "\n".join(lines)

    def daily_course(self) -> str:
        """Hospital day by day: each active problem with its lab trend, plus the day's other events."""
        rng, a = self.rng, self.a
        present = {it.cond.key for it in a.items} | self.p.have
        generic = [e for e, contradicts in DAILY_EVENTS if not present & set(contradicts)]
        problems = [it for it in a.items if it.role in ("principal", "acute") and it.where == "full"
                    and it.cond.key not in ("dnr", "palliative")]
        days = min(int(a.los), MAX_COURSE_DAYS)
        lines = ["HOSPITAL COURSE BY DAY:" if rng.random() < 0.5 else "DETAILED COURSE:"]
        previous: dict[str, str] = {}
        skip = 0.2 if self.detail == 3 else 0.55
        infections = [(drug, rng.choice((5, 7, 10, 14))) for key, drug in (
            ("pneumonia", "Ceftriaxone/azithromycin"), ("sepsis", "Vanc/cefepime"), ("uti", "Ceftriaxone"),
            ("cellulitis", "Vancomycin"), ("pyelonephritis", "Ceftriaxone"), ("cdiff", "PO vancomycin")) if a.has(key)]
        for day in range(1, days + 1):
            nums = self.day_nums(min(day / max(days, 1), 1.0))
            entries = []
            for it in problems:
                if rng.random() < skip:
                    continue
                if (daily := self.applicable(it.cond.daily)) and rng.random() < 0.5:
                    entries.append(f"{_cap(self.short(it))}: {self.fill(rng.choice(daily), it)}")
                    if self.detail < 3:
                        continue
                tracked = TRACKED_LAB.get(it.cond.key)
                lab = ""
                if tracked:
                    key, label = tracked
                    value = _fmt(key, nums[key])
                    lab = f"{label} {value}" + (f" (from {previous[key]})" if previous.get(key, value) != value else "")
                    previous[key] = value
                template = rng.choice(PROGRESS if lab else PROGRESS[-1:])
                entries.append(template.format(T=_cap(self.short(it)), lab=lab, plan=rng.choice(PLANS)))
            entries += rng.sample(generic, min(len(generic), rng.randint(1, 3) if self.detail == 2 else
                                               rng.randint(3, 6)))
            if self.detail == 3:
                low, high = nums["hr"] * 0.85, nums["hr"] * 1.1
                entries.insert(0, f"Tmax {min(max(nums['temp'], 97.9) + rng.uniform(0, 0.6), 103.5):.1f}, HR {low:.0f}-{high:.0f}, BP "
                                  f"{nums['sbp'] * 0.9:.0f}-{nums['sbp'] * 1.08:.0f}/{nums['dbp'] * 0.9:.0f}-"
                                  f"{nums['dbp'] * 1.1:.0f}, RR {nums['rr']:.0f}, SpO2 {min(nums['spo2'], 100):.0f}%. "
                                  f"I/O {rng.uniform(0.8, 2.8):.1f}L/{rng.uniform(0.6, 3.2):.1f}L.")
                for drug, course_days in infections:
                    if day <= course_days:
                        entries.append(f"{drug} day {day} of {course_days}.")
            lines.append(f"HD {day}: " + " ".join(e if e.endswith(".") else e + "." for e in entries))
        return "\n".join(lines)

    def outpatient_issues(self) -> str:
        """The precursors planned for this admission (`_plan_precursors`); empty when there are none."""
        if not self.a.precursors:
            return ""
        return "\n \nOUTPATIENT ISSUES:\n" + "\n".join(f"- {x}" for x in self.a.precursors)

    def transitional(self) -> str:
        rng, a = self.rng, self.a
        lines = ["TRANSITIONAL ISSUES:"]
        options = ["Please check CBC and chem-7 at follow-up appointment.", "Follow up pending blood cultures.",
                   "Reconcile the discharge medication list at the first visit.", "Assess need for home PT.",
                   "Consider outpatient colonoscopy if not up to date.", "Repeat lipid panel in 3 months.",
                   "Consider outpatient sleep study.", "Please reassess volume status and titrate diuretics.",
                   "Ensure follow up with PCP within 1 week.", "Recommend repeat imaging in 6 weeks.",
                   "Medication changes: see discharge medication list."]
        for it in a.items:
            if it.role in ("principal", "acute") and it.where == "full" and self.detail >= 1 and rng.random() < 0.6:
                lines.append(f"- {_cap(self.short(it))}: " + rng.choice((
                    "please reassess at follow-up.", "repeat labs within 1 week.", "consider outpatient workup.",
                    "ensure symptoms have resolved.", "follow up with the appropriate specialist.")))
        lines += [f"- {x}" for x in rng.sample(options, rng.randint(2, 4 + self.detail))]
        code = "DNR/DNI" if a.has("dnr") else rng.choice(("Full code", "Full code (presumed)"))
        lines += [f"- Code status: {code}", "- Contact: ___ (___) ___"]
        return "\n".join(lines)

    # -- medications, diagnoses, instructions ----------------------------------------------------------------------
    def home_meds(self) -> list[str]:
        rng = self.rng
        meds = [m for picks in self.item_meds.values() for m in picks]
        for med in ("Acetaminophen 500 mg PO Q6H:PRN pain", "Docusate Sodium 100 mg PO BID",
                    "Multivitamins 1 TAB PO DAILY", "Vitamin D 1000 UNIT PO DAILY", "Senna 8.6 mg PO BID:PRN "
                    "constipation", "Fish Oil (Omega 3) 1000 mg PO DAILY", "Melatonin 3 mg PO QHS:PRN insomnia",
                    "Polyethylene Glycol 17 g PO DAILY:PRN constipation", "Cyanocobalamin 1000 mcg PO DAILY"):
            if rng.random() < 0.3:
                meds.append(med)
        return meds

    def medication_sections(self) -> tuple[str, str]:
        rng = self.rng
        home = self.home_meds()
        if not home:
            admission = "None"
        else:
            admission = ("The Preadmission Medication list is accurate and complete.\n" if rng.random() < 0.7 else
                         "") + "\n".join(f"{i}. {m}" for i, m in enumerate(home, 1))
        if self.a.died:
            return admission, "None"
        new = [m for it in self.a.items if it.role in ("principal", "acute") for m in
               rng.sample(it.cond.meds, min(len(it.cond.meds), rng.randint(1, 2)))]
        lines = []
        for med in new:
            if rng.random() < 0.5:
                drug = _drug(med)
                med += (f" \nRX *{drug} {' '.join(med.split(' ')[1:3])} 1 tablet(s) by mouth as directed Disp #*"
                        f"{rng.choice((7, 10, 14, 20, 28, 30, 60, 90))} Tablet Refills:*{rng.choice((0, 0, 1, 2))}")
            lines.append(med)
        for med in home:
            roll = rng.random()
            if roll < 0.08:
                lines.append(f"HELD- {med}  This medication was held. Do not restart {_drug(med)} until "
                             "your doctor tells you to.")
            else:
                lines.append(med)
        return admission, "\n".join(f"{i}. {m}" for i, m in enumerate(lines, 1)) or "None"

    def disposition(self) -> str:
        loc = self.a.discharge_location
        if self.a.died:
            return "Expired"
        if loc in FACILITY_DISCHARGES or loc in ("HOSPICE", "OTHER FACILITY", "ACUTE HOSPITAL", "PSYCH FACILITY"):
            return "Extended Care\n \nFacility:\n___"
        if loc in ("HOME HEALTH CARE", "ASSISTED LIVING"):
            return "Home With Service\n \nFacility:\n___"
        return "Home"

    def diagnosis(self) -> str:
        rng, a = self.rng, self.a

        def name(it: _Item) -> str:
            if rng.random() < 0.3 and (title := self.title(it)):
                return title
            return _cap(self.surface(it))

        primary = [a.principal] + [it for it in a.items[1:] if it.role == "acute" and it.cond.key not in
                                   ("dnr", "palliative")]
        secondary = [it for it in a.items[1:] if it.role in ("chronic", "status") and it.where != "no_dx"]
        head_p, head_s = rng.choice((("Primary:", "Secondary:"), ("PRIMARY DIAGNOSIS:", "SECONDARY DIAGNOSES:"),
                                     ("Primary diagnosis", "Secondary diagnoses"),
                                     ("PRIMARY:", "SECONDARY:")))
        bullet = rng.choice(("", "- ", "# "))
        text = head_p + "\n" + "\n".join(bullet + name(it) for it in primary)
        if secondary:
            text += "\n \n" + head_s + "\n" + "\n".join(bullet + name(it) for it in secondary)
        return text

    def condition(self) -> str:
        if self.a.died:
            return "Expired"
        rng = self.rng
        mental = rng.choice(("Clear and coherent.", "Confused - sometimes.", "Clear and coherent."))
        level = rng.choice(("Alert and interactive.", "Lethargic but arousable.", "Alert and interactive."))
        activity = rng.choice(("Ambulatory - Independent.", "Ambulatory - requires assistance or aid (walker or "
                               "cane).", "Out of Bed with assistance to chair or wheelchair."))
        return f"Mental Status: {mental}\nLevel of Consciousness: {level}\nActivity Status: {activity}"

    def instructions(self) -> str:
        a, v = self.a, self.v
        if a.died:
            return "N/A"
        rng = self.rng
        why = [self.fill(x, a.principal) for x in a.principal.cond.instructions] or [
            f"You were admitted for {self.surface(a.principal, specific=False)}."]
        what = []
        for it in a.items:
            if it.role in ("principal", "acute") and it.where == "full" and it.cond.key not in ("dnr", "palliative"):
                what.append(rng.choice(("You were treated for {x}.", "We found that you had {x} and treated it.",
                                        "You were also found to have {x}, which improved with treatment.")).format(
                    x=self.surface(it, specific=False)))
        for proc, _, _ in a.procedures:
            what.append(f"You had a procedure: {_lower_first(rng.choice(proc.terms))}.")
        if a.icu:
            what.append("You spent part of your stay in the intensive care unit.")
        home = [x for it in a.items if it.role in ("chronic", "status") for x in it.cond.instructions]
        home += ["Please take all of your medications as prescribed.", "Please attend all of your follow-up "
                 "appointments."]
        warning = sorted({s for it in a.items if it.role in ("principal", "acute") for s in it.cond.symptoms})
        warning = warning[:5] or ["fevers", "chest pain", "shortness of breath"]
        home.append(f"Call your doctor or return to the emergency department if you have worsening {_join_and(warning)}"
                    ", fevers above 101, or any other concerning symptoms.")
        if rng.random() < 0.5:
            body = [*why, "", "While you were here:",
                    *[f"- {x}" for x in what], "", "When you go home:", *[f"- {x}" for x in home]]
            parts = [f"Dear {v['pt']},", "", "You were admitted to ___ for the following reason(s).", "", *body, "",
                     "It was a pleasure taking care of you.", "", "Your ___ Team"]
        else:
            parts = [f"Dear {v['pt']},", "", "It was a pleasure taking care of you at ___.", "",
                     "WHY WERE YOU ADMITTED TO THE HOSPITAL?", *[f"- {x}" for x in why], "",
                     "WHAT HAPPENED WHILE YOU WERE IN THE HOSPITAL?", *[f"- {x}" for x in what], "",
                     "WHAT SHOULD YOU DO WHEN YOU GO HOME?", *[f"- {x}" for x in home], "",
                     "We wish you the best!", "", "Sincerely,", "Your ___ Care Team"]
        if self.detail >= 1:
            parts[-3:-3] = ["Your weight at discharge is ___ lbs.", "", "Please review the medication list carefully: "
                            "some of your medications were changed, stopped or started during this admission. Bring "
                            "this list to your follow-up appointments.", ""]
        return "\n".join(parts).replace("\n\n", "\n \n")

    def pick_detail(self) -> int:
        """0 brief, 1 standard, 2 detailed, 3 exhaustive. Authors differ; long and ICU stays get the long notes."""
        a = self.a
        if a.los >= 8:
            weights = (0.0, 0.1, 0.2, 0.7)
        elif a.los >= 5 or a.icu:
            weights = (0.05, 0.2, 0.3, 0.45)
        else:
            weights = (0.2, 0.52, 0.2, 0.08)
        return self.rng.choices(range(4), weights)[0]

    # -- the whole note --------------------------------------------------------------------------------------------
    def discharge_summary(self, reports: list[tuple[str, str, str]]) -> str:
        self.detail = self.pick_detail()
        text = self.compose(reports)
        while len(text) > MAX_NOTE_CHARS and self.detail > 0:
            self.detail -= 1
            text = self.compose(reports)
        return text

    def compose(self, reports: list[tuple[str, str, str]]) -> str:
        self.ed_study = (reports[0][0], reports[0][1]) if reports and self.a.edreg is not None else None
        negations = self.negatable()
        hpi_negations, course_negations = negations[:1], negations[1:]
        admission_meds, discharge_meds = self.medication_sections()
        sections = [
            ("Chief Complaint", self.chief_complaint()),
            ("Major Surgical or Invasive Procedure", self.procedures_section()),
            ("History of Present Illness", self.hpi(hpi_negations)),
            ("Past Medical History", self.past_history()),
            ("Social History", self.social()),
            ("Family History", self.family()),
            ("Physical Exam", self.physical_exam()),
            ("Pertinent Results", self.results(reports)),
            ("Brief Hospital Course", self.course(course_negations) + self.outpatient_issues()),
            ("Medications on Admission", admission_meds),
            ("Discharge Medications", discharge_meds),
            ("Discharge Disposition", self.disposition()),
            ("Discharge Diagnosis", self.diagnosis()),
            ("Discharge Condition", self.condition()),
            ("Discharge Instructions", self.instructions()),
            ("Followup Instructions", "___"),
        ]
        return _mimic_blank_lines(self.header() + "".join(f"{name}:\n{body}\n \n" for name, body in sections))


# ----------------------------------------------------------------------------------------------------------------------
# Radiology.
def _radiology_text(rng: random.Random, patient: _Patient, exam: str, finding: str, context: str,
                    extras: list[str], outpatient: bool = False) -> tuple[str, str, str]:
    """(exam name, impression, full report text)."""
    names, techniques = EXAMS[exam]
    sentences, impressions, question = FINDINGS[(exam, finding)]
    name = names[0] if outpatient else rng.choice(names)
    technique = techniques[0] if outpatient else rng.choice(techniques)
    # the lead finding always, the others most of the time, plus the radiologist's incidental observations
    findings = [sentences[0]] + [x for x in sentences[1:] if rng.random() < 0.75]
    extras_pool = EXAM_EXTRAS.get(exam, ())
    for sentence in rng.sample(extras_pool, min(len(extras_pool), rng.randint(0, 3))):
        measure = f"{rng.uniform(8.5, 12.5):.1f}" if " cm" in sentence else str(rng.randint(3, 14))
        findings.append(sentence.format(n=measure))
    for (where, condition), (sentence, replaces) in IMAGING_BACKGROUND.items():
        key, _, stage = condition.partition(":")
        if where == exam and key in patient.chronic and (not stage or patient.chronic[key] >= int(stage)) \
                and finding != "cirrhosis":  # a cirrhosis study already describes the liver
            findings = [f for f in findings if not (replaces and f.startswith(replaces))] + [sentence]
    findings += extras
    man = "man" if patient.sex == "M" else "woman"
    indication = rng.choice((f"___ year old {man} with {context}  // {question}",
                             f"___ with {context}. {_cap(question)}.",
                             f"___ year old {man} with {context}, {question}"))
    impression_lines = list(impressions[:1]) + ([rng.choice(impressions[1:])] if len(impressions) > 1 and
                                                 rng.random() < 0.5 else [])
    impression = (impression_lines[0] if len(impression_lines) == 1 else
                  "\n".join(f"{i}. {x}" for i, x in enumerate(impression_lines, 1)))
    comparison = rng.choice(("___", "___", "___.", "None.", f"Prior {exam.replace('_', ' ')} from ___."))
    text = (f"EXAMINATION:  {name}\n \nINDICATION:  {indication}\n \nTECHNIQUE:  {technique}\n \n"
            f"COMPARISON:  {comparison}\n \nFINDINGS: \n \n{' '.join(findings)}\n \nIMPRESSION: \n \n{impression}\n")
    return name, " ".join(impression_lines), text


def _plan_studies(rng: random.Random, adm: _Admission) -> list[tuple[str, str, _Item]]:
    """(exam, finding, item) for the studies this admission gets, in the order they were done."""
    studies = []
    seen = set()
    for it in adm.items:
        if it.role not in ("principal", "acute"):
            continue
        for exam, finding, prob in it.cond.imaging:
            if (exam, finding) not in seen and rng.random() < prob:
                studies.append((exam, finding, it))
                seen.add((exam, finding))
    if adm.icu:  # serial portable films in the ICU
        for _ in range(min(int(adm.los * rng.uniform(0.3, 0.8)), 25)):
            chest = next((f for e, f, _ in studies if e == "cxr"), "normal")
            studies.append(("cxr", chest, adm.items[0]))
    return studies


# ----------------------------------------------------------------------------------------------------------------------
# Output.
class _GzCsv:
    """A gzip'd CSV written the way MIMIC's are (QUOTE_MINIMAL, "\\n" line ends), byte-reproducible: gzip mtime 0 and
    no file name in the header."""

    def __init__(self, path: Path, header: tuple[str, ...]):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.raw = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.gz = gzip.GzipFile(filename="", mode="wb", fileobj=self.raw, mtime=0, compresslevel=6)
        self.text = io.TextIOWrapper(self.gz, encoding="utf-8", newline="")
        self.writer = csv.writer(self.text, lineterminator="\n")
        self.writer.writerow(header)
        self.rows = 0

    def write(self, row: list | tuple) -> None:
        self.writer.writerow(row)
        self.rows += 1

    def close(self) -> None:
        self.text.close()
        self.raw.close()


def _ts(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S") if when is not None else ""


def _providers(seed: int) -> list[str]:
    rng = random.Random(f"cmbert-synth-providers:{seed}")
    alphabet = "0123456789ABCDEF"
    return ["P" + "".join(rng.choice(alphabet) for _ in range(5)) for _ in range(600)]


def _make_patient(index: int, seed: int) -> _Patient:
    rng = random.Random(f"cmbert-synth:{seed}:{index}")
    sex = "F" if rng.random() < 0.52 else "M"
    age = min(max(rng.gauss(61, 18), 18.0), 101.0)
    shift = rng.randint(*SHIFT_YEARS)
    real_offset = rng.randrange(_FIRST_ADMISSION_SPAN_DAYS)
    start = datetime(2008 + shift, 1, 1) + timedelta(days=real_offset, hours=rng.randrange(24),
                                                     minutes=rng.randrange(60))
    marital = _pick(rng, (("MARRIED", 42), ("SINGLE", 30), ("WIDOWED", 10 if age < 70 else 30), ("DIVORCED", 8),
                          ("", 8)))
    return _Patient(
        index=index, subject_id=subject_id_of(index, seed), sex=sex, age=age, race=_pick(rng, RACES),
        language="ENGLISH" if rng.random() < 0.9 else "?", marital=marital, shift=shift, start=start,
        chronic=_initial_chronic(rng, age, sex), rng=rng,
    )


def _simulate(index: int, seed: int, providers: list[str]):
    """One patient's story: (patient, admissions in time order, outpatient study times as (index of the admission
    they follow, datetime), date of death or None)."""
    patient = _make_patient(index, seed)
    rng = patient.rng
    burden = len(patient.chronic)
    keep_going = min(0.42 + 0.045 * burden, 0.86)
    target = 1
    while target < MAX_ADMISSIONS and rng.random() < keep_going:
        target += 1
    data_end = datetime(2020 + patient.shift, 1, 1)
    admissions = []
    outpatient = []
    when = patient.start
    dod: date | None = None
    for j in range(target):
        adm = _build_admission(patient, j, seed, when, providers)
        if adm.disch >= data_end:
            break
        adm.prior = [a.principal for a in admissions]
        adm.days_since_last = (adm.admit - admissions[-1].disch).days if admissions else None
        admissions.append(adm)
        if adm.died:
            dod = adm.disch.date()
            break
        # what this admission leaves behind
        for it in adm.items:
            for key, prob in it.cond.leaves:
                cond = CONDITIONS[key]
                if key not in patient.chronic and rng.random() < prob and _eligible(cond, patient.have,
                                                                                    patient.chronic, patient.sex):
                    patient.chronic[key] = 0
        for proc, _, _ in adm.procedures:
            for key in proc.leaves:
                patient.chronic.setdefault(key, 0)
        gap = rng.uniform(3, 30) if rng.random() < 0.15 else rng.expovariate(1 / (640 / (1 + 0.18 * burden)))
        next_admit = adm.disch + timedelta(days=gap, hours=rng.uniform(-12, 12))
        if rng.random() < 0.2 and gap > 20:
            outpatient.append((j, adm.disch + timedelta(days=rng.uniform(7, gap - 7))))
        _evolve(patient, gap / 365.25, adm.age)
        when = next_admit
        if when >= data_end:
            break
    if not admissions:  # the first admission ran past the end of the data: pull it back a year
        patient.rng = rng = random.Random(f"cmbert-synth:{seed}:{index}:retry")
        patient.start = patient.start - timedelta(days=400)
        admissions.append(_build_admission(patient, 0, seed, patient.start, providers))
        if admissions[0].died:
            dod = admissions[0].disch.date()
    last = admissions[-1]
    if dod is None:
        age = last.age
        chance = (0.28 if age > 85 else 0.16 if age > 75 else 0.07 if age > 60 else 0.03) * (1 + 0.05 * burden)
        if rng.random() < chance:
            candidate = (last.disch + timedelta(days=rng.uniform(5, 365))).date()
            if candidate < data_end.date():
                dod = candidate
    return patient, admissions, outpatient, dod


def _patient_row(patient: _Patient, dod: date | None) -> list:
    anchor_year = patient.start.year
    real_year = anchor_year - patient.shift
    group = next(g for g in YEAR_GROUPS if g[0] <= real_year <= g[1])
    anchor_age = int(patient.age)
    return [patient.subject_id, patient.sex, 91 if anchor_age > 89 else anchor_age, anchor_year,
            f"{group[0]} - {group[1]}", dod.isoformat() if dod else ""]


def _write_dictionaries(out: Path) -> dict[str, int]:
    counts = {}
    for table_kind in MIMIC_CODE_SYSTEMS:
        name = f"d_icd_{table_kind}"
        table = _GzCsv(out / "hosp" / f"{name}.csv.gz", COLUMNS[f"hosp/{name}"])
        known = known_codes(table_kind)
        for version, codes in known.items():
            table.writer.writerows((code, version, title) for code, title in codes.items())
        counts[name] = sum(map(len, known.values()))
        table.close()
    return counts


def synthesize_mimic(out: str | Path, patients: int = 1000, seed: int = 0) -> dict:
    """Write a synthetic MIMIC-IV tree under `out` (hosp/ and note/ CSV.gz files with MIMIC-IV v2.2's exact columns
    and formats) for `patients` patients, and return a summary (also written to `out/synth_report.json`). The same
    seed gives the same bytes; patient k is the same whatever `patients` is.

    Args:
        out: output folder (gets hosp/ and note/)
        patients: synthetic patients
        seed: same seed, same bytes

    Example: cmbert data synth --out runs/mimic --patients 2000 --seed 0
    """
    if not 1 <= patients <= MAX_PATIENTS:
        raise UserError(f"patients must be between 1 and {MAX_PATIENTS:,}, got {patients}")
    out = Path(out)
    title_of = known_codes("diagnoses")
    writers = {name: _GzCsv(out / f"{name}.csv.gz", columns) for name, columns in COLUMNS.items()
               if not name.startswith("hosp/d_icd")}
    providers = _providers(seed)
    totals: Counter = Counter()
    dx_codes: Counter = Counter()
    px_codes: set[tuple[str, int]] = set()
    note_words: list[int] = []
    try:
        for index in range(patients):
            patient, admissions, outpatient, dod = _simulate(index, seed, providers)
            _plan_precursors(patient, admissions, seed)
            rng = patient.rng
            writers["hosp/patients"].write(_patient_row(patient, dod))
            patient.note_seq = rng.randint(1, 24)
            patient.rr_seq = rng.randint(1, 40)
            totals["patients_with_both_versions"] += len({a.era for a in admissions}) == 2
            for j, adm in enumerate(admissions):
                _write_admission(writers, patient, adm, title_of, totals, dx_codes, px_codes, note_words)
                for after, when in outpatient:
                    if after == j and (j + 1 == len(admissions) or when < admissions[j + 1].admit):
                        _write_outpatient_report(writers, patient, when)
            totals["deaths"] += dod is not None
    finally:
        for writer in writers.values():
            writer.close()
    dictionaries = _write_dictionaries(out)
    note_words.sort()
    long_notes = sum(1 for w in note_words if w * TOKENS_PER_WORD > LONG_NOTE_TOKENS)

    def pct(q: float) -> int:
        return note_words[min(int(q * len(note_words)), len(note_words) - 1)] if note_words else 0

    summary = {
        "seed": seed,
        "patients": writers["hosp/patients"].rows,
        "admissions": writers["hosp/admissions"].rows,
        "diagnoses_icd": writers["hosp/diagnoses_icd"].rows,
        "procedures_icd": writers["hosp/procedures_icd"].rows,
        "discharge_notes": writers["note/discharge"].rows,
        "radiology_reports": writers["note/radiology"].rows,
        "d_icd_diagnoses": dictionaries["d_icd_diagnoses"],
        "d_icd_procedures": dictionaries["d_icd_procedures"],
        "icd9_admissions": totals["icd9_admissions"],
        "icd10_admissions": totals["icd10_admissions"],
        "patients_with_both_icd_versions": totals["patients_with_both_versions"],
        "in_hospital_deaths": totals["in_hospital_deaths"],
        "patients_with_dod": totals["deaths"],
        "distinct_diagnosis_codes": len(dx_codes),
        "distinct_procedure_codes": len(px_codes),
        "discharge_note_words": {"p10": pct(0.1), "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99),
                                 "max": note_words[-1] if note_words else 0},
        "long_discharge_notes": long_notes,
        "long_note_rule": f"words x {TOKENS_PER_WORD} > {LONG_NOTE_TOKENS}",
    }
    (out / "synth_report.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _write_admission(writers, patient: _Patient, adm: _Admission, title_of, totals, dx_codes, px_codes,
                     note_words) -> None:
    rng = patient.rng
    sid, hid = patient.subject_id, adm.hadm_id
    writers["hosp/admissions"].write([
        sid, hid, _ts(adm.admit), _ts(adm.disch), _ts(adm.disch) if adm.died else "", adm.admission_type,
        adm.provider, adm.admission_location, adm.discharge_location, adm.insurance, patient.language,
        patient.marital, patient.race, _ts(adm.edreg), _ts(adm.edout), int(adm.died)])
    totals[f"icd{adm.era}_admissions"] += 1
    totals["in_hospital_deaths"] += adm.died
    for seq, code in enumerate(_diagnosis_codes(adm), 1):
        writers["hosp/diagnoses_icd"].write([sid, hid, seq, code, adm.era])
        dx_codes[(code, adm.era)] += 1
    seq = 0
    for _, option, chartdate in adm.procedures:
        for code in (option.icd9 if adm.era == 9 else option.icd10):
            seq += 1
            writers["hosp/procedures_icd"].write([sid, hid, seq, chartdate.isoformat(), code, adm.era])
            px_codes.add((code, adm.era))

    writer = _NoteWriter(patient, adm, title_of)
    studies = _plan_studies(rng, adm)
    reports = []
    vent = any(p.key == "ventilation" for p, _, _ in adm.procedures)
    line = any(p.key == "central_line" for p, _, _ in adm.procedures)
    for n, (exam, finding, it) in enumerate(studies):
        extras = []
        if exam == "cxr" and adm.icu and n > 0:
            extras = [rng.choice(SERIAL_CHANGES)] + (["Endotracheal tube terminates 4 cm above the carina. An enteric tube courses below the "
                       "diaphragm."] if vent else []) + (["Right internal jugular central venous catheter terminates "
                                                          "in the mid SVC."] if line else [])
        context = writer.fill(rng.choice(it.cond.symptoms) if it.cond.symptoms else "{t}", it)
        if patient.chronic and rng.random() < 0.5:
            chronic = next(i for i in adm.items if i.role in ("chronic", "status")) if any(
                i.role in ("chronic", "status") for i in adm.items) else None
            if chronic is not None:
                context = f"h/o {writer.short(chronic)}, now with {context}"
        name, impression, text = _radiology_text(rng, patient, exam, finding, context, extras)
        span = max((adm.disch - adm.admit).total_seconds(), 3600)
        when = adm.admit + timedelta(seconds=span * (n / max(len(studies), 1)) * 0.9)
        if n == 0 and adm.edreg is not None:
            when = adm.edreg + timedelta(minutes=rng.randint(20, 90))
        patient.rr_seq += 1
        writers["note/radiology"].write([
            f"{sid}-RR-{patient.rr_seq}", sid, hid, "RR", patient.rr_seq, _ts(when.replace(second=0)),
            _ts((when + timedelta(minutes=rng.randint(25, 600))).replace(second=0)), text])
        reports.append((name, impression, text.strip()))
    if rng.random() < 0.02:  # a few admissions have no discharge summary, as in MIMIC
        return
    text = writer.discharge_summary(reports)
    patient.note_seq += 1 + (rng.random() < 0.1)
    store = "" if rng.random() < 0.01 else _ts((adm.disch + timedelta(hours=rng.uniform(0.5, 60))).replace(second=0))
    writers["note/discharge"].write([
        f"{sid}-DS-{patient.note_seq}", sid, hid, "DS", patient.note_seq,
        _ts(datetime.combine(adm.disch.date(), datetime.min.time())), store, text])
    note_words.append(len(text.split()))


def _write_outpatient_report(writers, patient: _Patient, when: datetime) -> None:
    rng = patient.rng
    have = patient.chronic
    options = [("cxr", "normal", "routine follow-up")]
    if "copd" in have:
        options.append(("cxr", "hyperinflation", "COPD, chronic cough"))
    if "ckd" in have:
        options.append(("renal_us", "normal", "chronic kidney disease"))
    if "cirrhosis" in have:
        options.append(("ruq_us", "cirrhosis", "cirrhosis, HCC surveillance"))
    if "chf" in have:
        options.append(("cxr", "effusions", "heart failure, dyspnea"))
    exam, finding, context = rng.choice(options)
    _, _, text = _radiology_text(rng, patient, exam, finding, context, [], outpatient=True)
    patient.rr_seq += 1
    sid = patient.subject_id
    writers["note/radiology"].write([
        f"{sid}-RR-{patient.rr_seq}", sid, "", "RR", patient.rr_seq, _ts(when.replace(second=0)),
        _ts((when + timedelta(minutes=rng.randint(25, 600))).replace(second=0)), text])
