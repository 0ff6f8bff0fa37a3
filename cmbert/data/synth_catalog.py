"""Clinical knowledge for the synthetic MIMIC-IV generator (`cmbert.data.synth`): conditions, procedures, imaging.

Plain data, written by hand for this project (no MIMIC text). Every ICD code is a real, billable code of its system
(ICD-9-CM v32, ICD-10-CM FY2026, ICD-9-CM procedures, ICD-10-PCS 2024), dotless as MIMIC stores it; `tests/test_synth.py`
checks each one against `cmbert.data.ontology.titles`. A concept carries its ICD-9 and its ICD-10 coding side by side, so
one chronic disease is coded ICD-9 before the 2015-10-01 switch and ICD-10 after it.

Templates are `str.format` strings filled per admission:
- `{t}` a surface form of the condition being written about (drawn again at each use: synonym, abbreviation or the
  code's official title), `{T}` the same with a capital first letter;
- `{pt}` "Mr. ___" / "Ms. ___", `{he} {He} {his} {His} {him}`, `{age}`, `{side}` (right/left);
- any measured value by its key in `VALUES` (`{bnp}`, `{cr}`, `{ef}`, ...), formatted as the admission measured it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# ----------------------------------------------------------------------------------------------------------------------
# Measured values: labs, vitals and a few study results. key -> (normal low, normal high, decimals, MIMIC lab label).
# Conditions move a value into an abnormal range; the generator flags out-of-range labs with "*" as MIMIC does.
VALUES: dict[str, tuple[float, float, int, str | None]] = {
    "wbc": (4.0, 10.0, 1, "WBC"), "rbc": (4.2, 5.4, 2, "RBC"), "hgb": (12.0, 15.8, 1, "Hgb"),
    "mcv": (82, 98, 0, "MCV"), "mch": (27.0, 32.0, 1, "MCH"), "mchc": (31.0, 35.0, 1, "MCHC"),
    "rdw": (11.5, 14.5, 1, "RDW"), "plt": (150, 400, 0, "Plt Ct"),
    "neuts": (50.0, 70.0, 1, "Neuts"), "lymphs": (20.0, 40.0, 1, "Lymphs"), "monos": (2.0, 8.0, 1, "Monos"),
    "eos": (0.0, 4.0, 1, "Eos"), "baso": (0.0, 1.0, 1, "Baso"),
    "glu": (70, 100, 0, "Glucose"), "bun": (6, 20, 0, "UreaN"), "cr": (0.5, 1.1, 1, "Creat"),
    "na": (135, 145, 0, "Na"), "k": (3.5, 5.1, 1, "K"), "cl": (96, 108, 0, "Cl"), "hco3": (22, 32, 0, "HCO3"),
    "alt": (5, 40, 0, "ALT"), "ast": (5, 40, 0, "AST"), "alkp": (40, 130, 0, "AlkPhos"),
    "tbili": (0.2, 1.2, 1, "TotBili"), "alb": (3.5, 5.2, 1, "Albumin"),
    "ca": (8.4, 10.3, 1, "Calcium"), "phos": (2.7, 4.5, 1, "Phos"), "mg": (1.6, 2.6, 1, "Mg"),
    "pt": (9.4, 12.5, 1, "PT"), "ptt": (25.0, 36.5, 1, "PTT"), "inr": (0.9, 1.1, 1, "INR(PT)"),
    "lactate": (0.5, 2.0, 1, "Lactate"), "trop": (0.0, 0.01, 2, "cTropnT"), "bnp": (20, 300, 0, "proBNP"),
    "a1c": (4.6, 5.9, 1, "%HbA1c"), "lipase": (10, 60, 0, "Lipase"), "tsh": (0.4, 4.2, 2, "TSH"),
    "ammonia": (10, 47, 0, "Ammonia"), "ck": (40, 200, 0, "CK(CPK)"),
    # vitals and study results (no lab line)
    "temp": (97.6, 99.1, 1, None), "hr": (62, 92, 0, None), "sbp": (112, 138, 0, None), "dbp": (62, 84, 0, None),
    "rr": (14, 18, 0, None), "spo2": (95, 99, 0, None), "ef": (55, 65, 0, None), "bmi": (21.0, 29.0, 1, None),
    "units": (1, 1, 0, None), "bcr": (0.6, 1.0, 1, None), "fev1": (70, 90, 0, None), "meld": (6, 9, 0, None),
    "nihss": (0, 0, 0, None), "gap_days": (2, 5, 0, None), "egfr": (75, 110, 0, None),
}
# Lab panels in the order a MIMIC "Pertinent Results" section lists them: (specimen, keys).
PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("BLOOD", ("wbc", "rbc", "hgb", "hct", "mcv", "mch", "mchc", "rdw", "plt")),
    ("BLOOD", ("neuts", "lymphs", "monos", "eos", "baso")),
    ("BLOOD", ("pt", "ptt", "inr")),
    ("BLOOD", ("glu", "bun", "cr", "na", "k", "cl", "hco3", "angap")),
    ("BLOOD", ("alt", "ast", "ck", "alkp", "tbili")),
    ("BLOOD", ("lipase",)),
    ("BLOOD", ("trop", "bnp")),
    ("BLOOD", ("alb", "ca", "phos", "mg")),
    ("BLOOD", ("a1c",)),
    ("BLOOD", ("tsh",)),
    ("BLOOD", ("ammonia",)),
    ("BLOOD", ("lactate",)),
)
# Panels drawn every lab day; the others only when a condition makes them relevant (its `labs` move one of them).
ROUTINE_PANELS = (0, 1, 3, 7)

Range = tuple[float, float]


@dataclass(frozen=True)
class Variant:
    """One way a condition is coded: its codes in each era and what the note says that only this variant means."""

    icd9: tuple[str, ...]
    icd10: tuple[str, ...]
    terms: tuple[str, ...] = ()
    evidence: tuple[str, ...] = ()
    weight: float = 1.0
    labs: dict[str, Range] = field(default_factory=dict)
    side: str | None = None  # laterality the note and the procedures must agree with


def v(icd9: str, icd10: str, *terms: str, weight: float = 1.0, evidence: tuple[str, ...] = (),
      labs: dict[str, Range] | None = None, side: str | None = None) -> Variant:
    """A variant from space-separated code lists: v("42823 4280", "I5023", "acute on chronic HFrEF")."""
    return Variant(tuple(icd9.split()), tuple(icd10.split()), terms, evidence, weight, labs or {}, side)


@dataclass(frozen=True)
class Condition:
    key: str
    kind: str  # "chronic" (persists, may progress), "status" (history / long-term use), "acute" (one admission)
    variants: tuple[Variant, ...]
    terms: tuple[str, ...]  # synonyms and abbreviations shared by all variants
    # chronic/status: chance of having it at the first admission (age-scaled when age_related); acute: weight as the
    # reason for admission. `secondary`: weight as an extra acute problem during an admission for something else.
    prevalence: float = 0.0
    secondary: float = 0.0
    age_related: bool = True
    sex: str | None = None  # only this sex has it
    risk: dict[str, float] = field(default_factory=dict)  # multiplier when the patient already has the key
    incidence: float = 0.0  # chronic/status: chance per year of a new diagnosis between admissions
    progression: float = 0.0  # chronic with ordered variants (stages): chance per year of the next stage
    requires: tuple[str, ...] = ()  # only for patients with any of these; `parallel`: variant index follows requires[0]
    parallel: bool = False
    excludes: tuple[str, ...] = ()  # never together with these (in the patient or this admission)
    replaces: tuple[str, ...] = ()  # acute exacerbations: the chronic condition's own codes drop out this admission
    complications: tuple[tuple[str, float], ...] = ()
    procedures: tuple[tuple[str, float], ...] = ()  # "key" or "key1|key2" (one of), probability
    imaging: tuple[tuple[str, str, float], ...] = ()  # (exam, finding, probability)
    leaves: tuple[tuple[str, float], ...] = ()  # chronic/status conditions the patient has after this admission
    differentials: tuple[str, ...] = ()  # conditions a note rules out when this one is the reason for admission
    symptoms: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    hpi: tuple[str, ...] = ()
    exam: tuple[tuple[str, str], ...] = ()  # (system, finding)
    evidence: tuple[str, ...] = ()
    course: tuple[str, ...] = ()
    daily: tuple[str, ...] = ()
    meds: tuple[str, ...] = ()
    negations: tuple[str, ...] = ()
    instructions: tuple[str, ...] = ()
    labs: dict[str, Range] = field(default_factory=dict)
    service: str = "MEDICINE"
    los: tuple[float, float] = (4.0, 0.55)  # median days, lognormal sigma
    mortality: float = 0.0
    elective: bool = False
    icu: float = 0.0  # chance this admission includes an ICU stay


# ----------------------------------------------------------------------------------------------------------------------
# Chronic conditions and status codes, in dependency order (a condition's `risk` and `requires` keys come first).
CHRONIC: tuple[Condition, ...] = (
    Condition(
        "tobacco", "chronic",
        (v("3051", "F17210", "current smoker", "active tobacco use", "nicotine dependence", weight=2,
           evidence=("Smokes about {packs} pack per day.",)),
         v("V1582", "Z87891", "former smoker", "remote tobacco use", "history of tobacco use", weight=3,
           evidence=("Quit smoking several years ago.",))),
        ("tobacco use", "smoking history", "cigarette smoking"),
        prevalence=0.28, age_related=False,
        meds=("Nicotine Patch 14 mg/day TD DAILY",),
        course=("Counseled on smoking cessation; nicotine patch offered.", "Smoking cessation was discussed at length."),
    ),
    Condition(
        "alcohol_use", "chronic",
        (v("30390", "F1020", "alcohol use disorder", "alcohol dependence", "EtOH dependence", weight=2),
         v("30500", "F1010", "alcohol abuse", "heavy EtOH use", weight=1)),
        ("EtOH use", "alcohol use"),
        prevalence=0.06, age_related=False, sex=None, incidence=0.005,
        evidence=("Reports drinking {drinks} drinks per day.", "Serum EtOH level was elevated on arrival."),
        meds=("Thiamine 100 mg PO DAILY", "FoLIC Acid 1 mg PO DAILY", "Multivitamins 1 TAB PO DAILY"),
        course=("Monitored on CIWA scale without significant withdrawal.", "Started on thiamine, folate and MVI. "
                "Social work consulted regarding alcohol cessation resources.")
    ),
    Condition(
        "obesity", "chronic",
        (v("27800", "E669", "obesity", weight=3, labs={"bmi": (30.5, 38.5)}),
         v("27801 V8541", "E6601 Z6841", "morbid obesity", "severe obesity", "class III obesity", weight=1,
           labs={"bmi": (40.2, 44.8)}, evidence=("BMI {bmi}.", "Weight-adjusted dosing used given BMI of {bmi}."))),
        ("obesity", "elevated BMI"),
        prevalence=0.2, age_related=False, incidence=0.01,
        evidence=("BMI {bmi}.",),
        course=("Nutrition consulted for weight management counseling.",),
    ),
    Condition(
        "hyperlipidemia", "chronic",
        (v("2724", "E785", "hyperlipidemia", "HLD", weight=3),
         v("2720", "E7800", "hypercholesterolemia", "high cholesterol", weight=1)),
        ("dyslipidemia", "HLD", "hyperlipidemia"),
        prevalence=0.34, risk={"obesity": 1.4}, incidence=0.03,
        evidence=("LDL {ldl} on last lipid panel.",),
        meds=("Atorvastatin 40 mg PO QPM", "Simvastatin 20 mg PO QPM", "Rosuvastatin Calcium 10 mg PO QPM"),
        course=("Continued home statin.", "Continued statin therapy."),
    ),
    Condition(
        "hypertension", "chronic",
        (v("4019", "I10", "essential hypertension", "HTN"),),
        ("hypertension", "HTN", "high blood pressure"),
        prevalence=0.46, risk={"obesity": 1.5}, incidence=0.04,
        labs={"sbp": (142, 172), "dbp": (82, 98)},
        evidence=("Blood pressure {sbp}/{dbp} on arrival.",),
        meds=("Amlodipine 10 mg PO DAILY", "Lisinopril 20 mg PO DAILY", "Losartan Potassium 50 mg PO DAILY",
              "Hydrochlorothiazide 25 mg PO DAILY", "Metoprolol Tartrate 25 mg PO BID"),
        course=("Blood pressures were well controlled on home regimen.", "Home antihypertensives were held on "
                "admission in the setting of soft pressures and restarted prior to discharge.",
                "Continued home antihypertensives."),
    ),
    Condition(
        "dm2", "chronic",
        (v("25000", "E119", "type 2 diabetes", "DM2", "T2DM", "non-insulin dependent diabetes", weight=4,
           labs={"a1c": (6.4, 7.9), "glu": (120, 210)}),
         v("25002", "E1165", "uncontrolled type 2 diabetes", "poorly controlled DM2", "T2DM with hyperglycemia",
           weight=1, labs={"a1c": (9.1, 12.8), "glu": (260, 420)},
           evidence=("Glucose {glu} on admission.", "Fingersticks persistently in the 300s."))),
        ("diabetes mellitus type 2", "DM2", "type 2 diabetes mellitus", "T2DM", "DMII", "diabetes"),
        prevalence=0.22, risk={"obesity": 2.5, "hypertension": 1.3}, incidence=0.02,
        labs={"a1c": (6.4, 8.4), "glu": (130, 230)},
        evidence=("HbA1c {a1c}%.", "Hemoglobin A1c was {a1c}%."),
        meds=("MetFORMIN (Glucophage) 1000 mg PO BID", "GlipiZIDE 5 mg PO DAILY", "Sitagliptin 100 mg PO DAILY"),
        course=("Oral hypoglycemics were held in house and the patient was covered with a humalog insulin sliding "
                "scale.", "Metformin held while inpatient; resumed on discharge.",
                "Fingersticks were monitored QID with ACHS insulin sliding scale."),
        instructions=("Please check your blood sugar before meals and at bedtime.",),
    ),
    Condition(
        "dm1", "chronic",
        (v("25001", "E109", "type 1 diabetes", "DM1", "T1DM", "insulin-dependent diabetes mellitus"),),
        ("type 1 diabetes mellitus", "DM1", "T1DM", "juvenile onset diabetes"),
        prevalence=0.012, age_related=False, excludes=("dm2",),
        labs={"a1c": (7.2, 9.8), "glu": (150, 260)},
        evidence=("HbA1c {a1c}%.",),
        meds=("Glargine 22 Units Bedtime", "Humalog 4 Units Breakfast\nHumalog 4 Units Lunch\nHumalog 4 Units Dinner"),
        course=("Continued basal-bolus insulin with close fingerstick monitoring; ___ consulted.",),
    ),
    Condition(
        "insulin_use", "status",
        (v("V5867", "Z794", "long-term insulin use", "insulin-requiring"),),
        ("insulin dependence", "on insulin"),
        prevalence=0.35, requires=("dm2", "dm1"), incidence=0.05,
        meds=("Glargine 20 Units Bedtime", "Insulin SC Sliding Scale using HUM Insulin"),
    ),
    Condition(
        "dm_neuropathy", "chronic",
        (v("25060 3572", "E1140", "diabetic neuropathy", "diabetic peripheral neuropathy", "DM2 with neuropathy"),),
        ("peripheral neuropathy", "diabetic polyneuropathy"),
        prevalence=0.2, requires=("dm2",), incidence=0.03,
        exam=(("neuro", "Decreased sensation to light touch in a stocking distribution bilaterally"),),
        meds=("Gabapentin 300 mg PO TID",),
        course=("Continued home gabapentin for neuropathic pain.",),
    ),
    Condition(
        "ckd", "chronic",
        (v("5853", "N1830", "CKD stage III", "CKD 3", "stage 3 chronic kidney disease", "moderate CKD",
           labs={"cr": (1.5, 2.3), "bun": (25, 42), "egfr": (33, 55)}, weight=6),
         v("5854", "N184", "CKD stage IV", "CKD 4", "stage 4 chronic kidney disease", "severe CKD",
           labs={"cr": (2.6, 3.9), "bun": (38, 65), "egfr": (17, 28)}, weight=2),
         v("5856 V4511", "N186 Z992", "ESRD on HD", "end stage renal disease on hemodialysis", "ESRD",
           "end-stage renal disease", "ESRD on dialysis", weight=1,
           labs={"cr": (5.4, 9.6), "bun": (40, 78), "k": (4.6, 5.6), "phos": (4.8, 7.2), "hgb": (8.6, 10.8)},
           evidence=("Dialyzes ___ via left arm AV fistula.", "On HD Tu/Th/Sa via tunneled line.",
                     "Dialysis schedule MWF, dry weight ___ kg."))),
        ("chronic kidney disease", "CKD", "chronic renal insufficiency", "CRI"),
        prevalence=0.11, risk={"dm2": 2.5, "hypertension": 2.0, "dm1": 2.0}, incidence=0.012, progression=0.14,
        evidence=("Creatinine {cr} (baseline {bcr}).", "Cr {cr}, near recent baseline."),
        meds=("Sevelamer CARBONATE 800 mg PO TID W/MEALS", "Calcitriol 0.25 mcg PO DAILY",
              "Sodium Bicarbonate 650 mg PO BID"),
        course=("Creatinine remained at baseline. Medications renally dosed.", "Renally dosed all medications and "
                "avoided nephrotoxins."),
        instructions=("Avoid NSAIDs such as ibuprofen or naproxen because of your kidney disease.",),
    ),
    Condition(
        "cad", "chronic",
        (v("41401", "I2510", "coronary artery disease", "CAD", "atherosclerotic heart disease",
           "coronary atherosclerosis"),),
        ("CAD", "coronary artery disease", "ischemic heart disease"),
        prevalence=0.17, risk={"hyperlipidemia": 1.6, "dm2": 1.6, "tobacco": 1.5, "hypertension": 1.4},
        incidence=0.015,
        evidence=("Prior cardiac catheterization with multivessel disease.", "Stress test ___ showed a fixed defect."),
        meds=("Aspirin 81 mg PO DAILY", "Clopidogrel 75 mg PO DAILY", "Metoprolol Succinate XL 50 mg PO DAILY",
              "Isosorbide Mononitrate (Extended Release) 30 mg PO DAILY"),
        course=("No chest pain during admission. Continued aspirin, statin and beta blocker.",
                "Continued aspirin and statin; no anginal symptoms."),
    ),
    Condition(
        "afib", "chronic",
        (v("42731", "I4891", "atrial fibrillation", "AF", weight=3),
         v("42731", "I480", "paroxysmal atrial fibrillation", "pAF", "paroxysmal AFib", weight=2),
         v("42731", "I4821", "permanent atrial fibrillation", "permanent AF", "chronic AFib", weight=1)),
        ("atrial fibrillation", "AFib", "AF", "afib"),
        prevalence=0.11, risk={"hypertension": 1.4, "obesity": 1.3}, incidence=0.015,
        exam=(("cv", "Irregularly irregular rhythm, no murmurs"),),
        evidence=("EKG with atrial fibrillation, rate {hr}.", "Telemetry with atrial fibrillation, rates "
                  "controlled in the 70s-90s.", "CHA2DS2-VASc score of {chads}."),
        meds=("Metoprolol Succinate XL 100 mg PO DAILY", "Diltiazem Extended-Release 180 mg PO DAILY",
              "Amiodarone 200 mg PO DAILY"),
        course=("Rate controlled on home metoprolol.", "Remained in rate-controlled AF on telemetry.",
                "Continued home rate control; anticoagulation was continued."),
    ),
    Condition(
        "chf", "chronic",
        (v("42822 4280", "I5022", "chronic systolic heart failure", "HFrEF", "chronic systolic CHF",
           "systolic CHF", "heart failure with reduced ejection fraction", weight=3, labs={"ef": (18, 35)},
           evidence=("TTE with LVEF {ef}% and global hypokinesis.", "Last echo with EF {ef}%.")),
         v("42832 4280", "I5032", "chronic diastolic heart failure", "HFpEF", "diastolic CHF",
           "heart failure with preserved ejection fraction", "chronic diastolic CHF", weight=3,
           labs={"ef": (55, 68)},
           evidence=("TTE with preserved LVEF ({ef}%) and grade II diastolic dysfunction.",
                     "Echo with EF >{ef}% and impaired relaxation.")),
         v("4280", "I509", "congestive heart failure", "CHF", "heart failure", weight=1)),
        ("congestive heart failure", "CHF", "heart failure"),
        prevalence=0.11, risk={"cad": 2.8, "afib": 2.0, "hypertension": 1.5, "dm2": 1.3}, incidence=0.015,
        evidence=("Dry weight ___ kg.",),
        meds=("Furosemide 40 mg PO DAILY", "Torsemide 20 mg PO DAILY", "Carvedilol 12.5 mg PO BID",
              "Spironolactone 25 mg PO DAILY", "Sacubitril-Valsartan (24mg-26mg) 1 TAB PO BID"),
        course=("Euvolemic on exam; continued home diuretic.", "Appeared euvolemic throughout admission; home "
                "diuretic continued at the same dose."),
        instructions=("Weigh yourself every morning, call your doctor if weight goes up more than 3 lbs.",
                      "Limit salt intake to 2 grams per day and fluids to 1.5 liters per day."),
    ),
    Condition(
        "copd", "chronic",
        (v("496", "J449", "COPD", "chronic obstructive pulmonary disease", "emphysema", "chronic obstructive lung "
           "disease"),),
        ("COPD", "chronic obstructive pulmonary disease", "emphysema"),
        prevalence=0.08, risk={"tobacco": 4.0}, incidence=0.008,
        labs={"fev1": (35, 60)},
        evidence=("PFTs with FEV1 {fev1}% predicted.", "On {home_o2}L home oxygen."),
        exam=(("lungs", "Diminished breath sounds throughout with prolonged expiratory phase"),),
        meds=("Tiotropium Bromide 1 CAP IH DAILY", "Fluticasone-Salmeterol Diskus (250/50) 1 INH IH BID",
              "Albuterol Inhaler 2 PUFF IH Q4H:PRN wheezing, shortness of breath"),
        course=("No evidence of exacerbation; continued home inhalers.", "Continued home inhalers; at baseline "
                "oxygen requirement."),
    ),
    Condition(
        "asthma", "chronic",
        (v("49390", "J45909", "asthma", "reactive airway disease"),),
        ("asthma",),
        prevalence=0.06, age_related=False, excludes=("copd",),
        meds=("Albuterol Inhaler 2 PUFF IH Q4H:PRN wheezing", "Fluticasone Propionate 110mcg 2 PUFF IH BID"),
        course=("Continued home inhalers without wheezing.",),
    ),
    Condition(
        "osa", "chronic",
        (v("32723", "G4733", "obstructive sleep apnea", "OSA"),),
        ("OSA", "obstructive sleep apnea", "sleep apnea"),
        prevalence=0.05, risk={"obesity": 3.0}, incidence=0.004,
        course=("Continued CPAP overnight.", "Used home CPAP at night."),
    ),
    Condition(
        "cirrhosis", "chronic",
        (v("5712", "K7030", "alcoholic cirrhosis", "EtOH cirrhosis", "alcohol-related cirrhosis", weight=2),
         v("5715", "K7469", "NASH cirrhosis", "cirrhosis secondary to NASH", "cryptogenic cirrhosis", weight=1)),
        ("cirrhosis", "cirrhosis of the liver", "end-stage liver disease", "ESLD"),
        prevalence=0.025, age_related=False, risk={"alcohol_use": 7.0, "obesity": 1.5}, incidence=0.003,
        labs={"tbili": (1.6, 3.4), "alb": (2.6, 3.3), "inr": (1.3, 1.8), "plt": (58, 118), "ast": (48, 96),
              "alt": (30, 60), "meld": (12, 22)},
        evidence=("MELD {meld}.", "Child-Pugh class B.", "Known grade II esophageal varices on last EGD."),
        exam=(("abd", "Soft, mildly distended, splenomegaly"), ("skin", "Spider angiomata on chest")),
        meds=("Lactulose 30 mL PO TID", "Rifaximin 550 mg PO BID", "Nadolol 20 mg PO DAILY",
              "Furosemide 40 mg PO DAILY", "Spironolactone 100 mg PO DAILY"),
        course=("MELD {meld} this admission; continued lactulose, rifaximin and nadolol.",
                "Continued home diuretics; no evidence of decompensation."),
    ),
    Condition(
        "hypothyroidism", "chronic",
        (v("2449", "E039", "hypothyroidism"),),
        ("hypothyroidism", "hypothyroid"),
        prevalence=0.07, risk={"F": 2.5}, incidence=0.004,
        meds=("Levothyroxine Sodium 75 mcg PO DAILY", "Levothyroxine Sodium 112 mcg PO DAILY"),
        course=("Continued home levothyroxine.",),
    ),
    Condition(
        "gerd", "chronic",
        (v("53081", "K219", "GERD", "gastroesophageal reflux disease", "acid reflux"),),
        ("GERD", "reflux"),
        prevalence=0.16, incidence=0.006,
        meds=("Omeprazole 20 mg PO DAILY", "Pantoprazole 40 mg PO Q24H", "Famotidine 20 mg PO BID"),
        course=("Continued home PPI.",),
    ),
    Condition(
        "depression", "chronic",
        (v("311", "F329", "depression", "depressive disorder", "major depressive disorder"),),
        ("depression", "MDD"),
        prevalence=0.15, age_related=False, incidence=0.008,
        meds=("Sertraline 100 mg PO DAILY", "Citalopram 20 mg PO DAILY", "Escitalopram Oxalate 10 mg PO DAILY",
              "BuPROPion XL (Once Daily) 150 mg PO DAILY"),
        course=("Mood stable, continued home SSRI.", "Continued home antidepressant."),
    ),
    Condition(
        "anxiety", "chronic",
        (v("30000", "F419", "anxiety", "anxiety disorder", "generalized anxiety"),),
        ("anxiety",),
        prevalence=0.1, age_related=False, incidence=0.006,
        meds=("LORazepam 0.5 mg PO Q8H:PRN anxiety", "BusPIRone 10 mg PO BID"),
        course=("Continued home anxiolytics.",),
    ),
    Condition(
        "dementia", "chronic",
        (v("2900", "F0390", "dementia", "senile dementia", "cognitive impairment", weight=2),
         v("3310 29410", "G309 F0280", "Alzheimer's dementia", "Alzheimer's disease", "dementia of Alzheimer's type",
           weight=1)),
        ("dementia", "cognitive decline"),
        prevalence=0.05, incidence=0.006,
        evidence=("Oriented to self only at baseline per family.", "At baseline, requires assistance with ADLs."),
        meds=("Donepezil 10 mg PO QHS", "Memantine 10 mg PO BID"),
        course=("Delirium precautions; continued home donepezil.", "At cognitive baseline per family."),
    ),
    Condition(
        "parkinson", "chronic",
        (v("3320", "G20A1", "Parkinson's disease", "PD", "parkinsonism"),),
        ("Parkinson's disease", "PD"),
        prevalence=0.018,
        exam=(("neuro", "Resting tremor of the right hand, cogwheel rigidity"),),
        meds=("Carbidopa-Levodopa (25-100) 1 TAB PO TID",),
        course=("Continued carbidopa-levodopa on home schedule.",),
    ),
    Condition(
        "bph", "chronic",
        (v("60000", "N400", "BPH", "benign prostatic hyperplasia", "enlarged prostate"),),
        ("BPH", "benign prostatic hypertrophy"),
        prevalence=0.12, sex="M",
        meds=("Tamsulosin 0.4 mg PO QHS", "Finasteride 5 mg PO DAILY"),
        course=("Continued home tamsulosin.",),
    ),
    Condition(
        "gout", "chronic",
        (v("2749", "M109", "gout", "gouty arthritis"),),
        ("gout",),
        prevalence=0.04, risk={"ckd": 2.0},
        meds=("Allopurinol 100 mg PO DAILY",),
        course=("Continued allopurinol, renally dosed.",),
    ),
    Condition(
        "osteoporosis", "chronic",
        (v("73300", "M810", "osteoporosis"),),
        ("osteoporosis",),
        prevalence=0.08, sex="F",
        meds=("Alendronate Sodium 70 mg PO 1X/WEEK (MO)", "Calcium Carbonate 500 mg PO BID",
              "Vitamin D 1000 UNIT PO DAILY"),
        course=("Continued calcium and vitamin D.",),
    ),
    Condition(
        "pvd", "chronic",
        (v("4439", "I739", "peripheral vascular disease", "PVD", "peripheral arterial disease", "PAD"),),
        ("PVD", "PAD", "peripheral vascular disease"),
        prevalence=0.05, risk={"tobacco": 2.5, "dm2": 2.0},
        exam=(("ext", "Diminished dorsalis pedis pulses bilaterally"),),
        course=("Continued aspirin and statin.",),
    ),
    Condition(
        "aortic_stenosis", "chronic",
        (v("4241", "I350", "aortic stenosis", "AS", "severe aortic stenosis"),),
        ("aortic stenosis", "AS"),
        prevalence=0.03,
        exam=(("cv", "III/VI harsh crescendo-decrescendo systolic murmur at the RUSB radiating to the carotids"),),
        evidence=("Echo with aortic valve area 0.9 cm2.",),
        course=("Avoided excessive preload reduction given aortic stenosis.",),
    ),
    Condition(
        "hiv", "chronic",
        (v("042", "B20", "HIV", "HIV/AIDS", "human immunodeficiency virus infection"),),
        ("HIV",),
        prevalence=0.01, age_related=False,
        evidence=("Last CD4 count ___, viral load undetectable.",),
        meds=("Emtricitabine-Tenofovir alafenamide 1 TAB PO DAILY", "Dolutegravir 50 mg PO DAILY"),
        course=("Continued home ART. ID aware.",),
    ),
    Condition(
        "lung_cancer", "chronic",
        (v("1629", "C3490", "lung cancer", "NSCLC", "non-small cell lung cancer", "lung adenocarcinoma"),),
        ("lung cancer", "NSCLC", "malignant neoplasm of the lung"),
        prevalence=0.012, risk={"tobacco": 4.0, "copd": 2.0}, incidence=0.002,
        evidence=("Followed by Dr. ___ in oncology, s/p ___ cycles of carboplatin/pemetrexed.",),
        course=("Outpatient oncology team aware of admission.",),
    ),
    Condition(
        "prostate_cancer", "chronic",
        (v("185", "C61", "prostate cancer", "prostate adenocarcinoma"),),
        ("prostate cancer",),
        prevalence=0.03, sex="M",
        meds=("Leuprolide ___ mg IM Q3 months",),
        course=("Continued outpatient androgen deprivation therapy.",),
    ),
    Condition(
        "colon_cancer", "chronic",
        (v("1539", "C189", "colon cancer", "colon adenocarcinoma"),),
        ("colon cancer", "colorectal cancer"),
        prevalence=0.01,
        course=("Oncology followup arranged.",),
    ),
    Condition(
        "hx_breast_cancer", "status",
        (v("V103", "Z853", "history of breast cancer", "breast cancer s/p lumpectomy and radiation",
           "h/o breast cancer"),),
        ("history of breast cancer",),
        prevalence=0.035, sex="F",
        meds=("Anastrozole 1 mg PO DAILY",),
    ),
    Condition(
        "anemia", "chronic",
        (v("2859", "D649", "anemia", "chronic anemia", "normocytic anemia"),),
        ("anemia",),
        prevalence=0.1, risk={"ckd": 3.0, "cirrhosis": 2.0}, incidence=0.01,
        labs={"hgb": (8.8, 10.9)},
        evidence=("Hgb {hgb}, at baseline.", "Hemoglobin stable at {hgb}."),
        meds=("Ferrous Sulfate 325 mg PO DAILY",),
        course=("Hgb stable at baseline, no signs of bleeding.",),
    ),
    Condition(
        "old_mi", "status",
        (v("412", "I252", "history of MI", "prior myocardial infarction", "old MI", "remote MI"),),
        ("history of myocardial infarction",),
        prevalence=0.05, risk={"cad": 5.0},
    ),
    Condition(
        "pci_status", "status",
        (v("V4582", "Z955", "s/p PCI", "s/p DES", "coronary stent"),),
        ("history of coronary stenting",),
        prevalence=0.05, requires=("cad",),
    ),
    Condition(
        "cabg_status", "status",
        (v("V4581", "Z951", "s/p CABG", "status post coronary artery bypass graft"),),
        ("history of CABG",),
        prevalence=0.06, requires=("cad",),
    ),
    Condition(
        "pacemaker", "status",
        (v("V4501", "Z950", "pacemaker", "s/p dual-chamber pacemaker", "PPM in place"),),
        ("pacemaker",),
        prevalence=0.02,
    ),
    Condition(
        "hx_stroke", "status",
        (v("V1254", "Z8673", "history of stroke", "prior CVA without residual deficits", "h/o TIA"),),
        ("history of stroke", "prior CVA"),
        prevalence=0.04, risk={"afib": 2.0, "hypertension": 1.5},
    ),
    Condition(
        "hx_vte", "status",
        (v("V1251", "Z86718", "history of DVT", "prior DVT", "h/o venous thromboembolism"),),
        ("history of VTE",),
        prevalence=0.03,
    ),
    Condition(
        "anticoagulation", "status",
        (v("V5861", "Z7901", "on anticoagulation", "long-term anticoagulant use", "chronic anticoagulation"),),
        ("anticoagulation",),
        prevalence=0.7, requires=("afib", "hx_vte"), incidence=0.5,
        meds=("Apixaban 5 mg PO BID", "Warfarin 5 mg PO DAILY16", "Rivaroxaban 20 mg PO DAILY"),
        course=("Continued home anticoagulation.",),
    ),
    Condition(
        "aspirin_use", "status",
        (v("V5866", "Z7982", "long-term aspirin use", "on daily aspirin"),),
        ("daily aspirin use",),
        prevalence=0.3, requires=("cad", "pvd", "hx_stroke"),
    ),
)

# ----------------------------------------------------------------------------------------------------------------------
# Acute conditions: reasons for admission and problems that arise during one.
_SEPSIS_LABS = {"wbc": (14.5, 26.0), "lactate": (2.4, 5.8), "temp": (100.9, 103.4), "hr": (104, 132),
                "sbp": (78, 98), "neuts": (82, 93), "bun": (24, 48)}
ACUTE: tuple[Condition, ...] = (
    Condition(
        "chf_exacerbation", "acute",
        (v("42823 4280", "I5023", "acute on chronic systolic heart failure", "acute on chronic HFrEF",
           "acute on chronic systolic CHF exacerbation", evidence=("TTE this admission with LVEF {ef}%.",)),
         v("42833 4280", "I5033", "acute on chronic diastolic heart failure", "acute on chronic HFpEF",
           "acute on chronic diastolic CHF", evidence=("TTE with LVEF {ef}% and elevated filling pressures.",)),
         v("4280", "I509", "CHF exacerbation", "decompensated heart failure")),
        ("CHF exacerbation", "acute decompensated heart failure", "ADHF", "volume overload", "heart failure "
         "exacerbation"),
        prevalence=28.0, requires=("chf",), parallel=True, replaces=("chf",),
        complications=(("aki", 0.25), ("hyponatremia", 0.12), ("resp_failure", 0.12), ("hypokalemia", 0.1)),
        procedures=(("thoracentesis", 0.06), ("central_line", 0.05)),
        imaging=(("cxr", "pulmonary_edema", 0.92), ("cxr", "effusions", 0.3)),
        differentials=("pneumonia", "mi", "pe"),
        symptoms=("shortness of breath", "orthopnea", "leg swelling", "weight gain"),
        cc=("Dyspnea", "Shortness of breath", "SOB, leg swelling", "Dyspnea on exertion"),
        hpi=("{pt} reports {gap_days} days of progressive dyspnea on exertion, now short of breath walking across "
             "the room, with three-pillow orthopnea and PND.",
             "{He} notes a {wt_gain} lb weight gain over the past week and increasing bilateral leg swelling. "
             "{He} admits to dietary indiscretion over the holidays.",
             "{He} ran out of {his} torsemide about a week ago and has since had worsening dyspnea and edema."),
        exam=(("neck", "JVP elevated to the angle of the jaw"), ("lungs", "Bibasilar crackles to the mid lung "
              "fields bilaterally"), ("ext", "2+ pitting edema to the knees bilaterally")),
        evidence=("proBNP {bnp}.", "BNP elevated to {bnp}.", "CXR with pulmonary vascular congestion and "
                  "bilateral pleural effusions.", "Net negative {net_neg} L over the admission.",
                  "Admission weight ___ kg, discharge weight ___ kg."),
        course=("Presented with dyspnea, orthopnea and weight gain with proBNP {bnp} and pulmonary edema on CXR, "
                "consistent with {t}.", "Diuresed with IV furosemide 80 mg BID with good urine output, net "
                "negative {net_neg} L.", "Transitioned to PO torsemide on hospital day {hd}.",
                "Precipitant felt to be dietary indiscretion and medication nonadherence.",
                "[thoracentesis]Underwent thoracentesis of a large right effusion with 1.2 L of transudative fluid "
                "removed.",
                "[!mi]Ischemic evaluation deferred as troponins were flat.", "Afterload reduction was uptitrated as "
                "blood pressure allowed."),
        daily=("Diuresed with IV furosemide, net negative 1.5 L.", "Continued IV diuresis; creatinine stable.",
               "Weight down 1.2 kg; still with bibasilar crackles.", "Breathing improved, weaned to room air."),
        meds=("Torsemide 40 mg PO DAILY", "Furosemide 80 mg PO BID", "Metolazone 2.5 mg PO ONCE weekly PRN"),
        negations=("no evidence of {t} on exam or CXR", "euvolemic on exam, not consistent with {t}",
                   "BNP not elevated, making {t} unlikely"),
        instructions=("You were admitted because of fluid in your lungs from your heart failure. We gave you "
                      "medicine through the IV to remove the fluid.",),
        labs={"bnp": (2800, 14500), "spo2": (86, 92), "rr": (22, 30), "sbp": (138, 176), "na": (131, 137),
              "trop": (0.02, 0.06)},
        los=(4.5, 0.55), mortality=0.03, icu=0.1,
    ),
    Condition(
        "copd_exacerbation", "acute",
        (v("49121", "J441", "COPD exacerbation", "acute exacerbation of COPD", "AECOPD"),),
        ("COPD exacerbation", "COPD flare", "acute exacerbation of chronic obstructive pulmonary disease"),
        prevalence=18.0, requires=("copd",), replaces=("copd",),
        complications=(("resp_failure_chronic", 0.25), ("pneumonia", 0.15)),
        procedures=(("bipap", 0.2),),
        imaging=(("cxr", "hyperinflation", 0.85),),
        differentials=("pneumonia", "chf_exacerbation", "pe"),
        symptoms=("shortness of breath", "wheezing", "productive cough"),
        cc=("Shortness of breath", "Wheezing", "Dyspnea, cough"),
        hpi=("{pt} presents with {gap_days} days of worsening dyspnea, wheezing and cough productive of "
             "green sputum.", "{He} has been using {his} albuterol inhaler every 2 hours without relief.",
             "On EMS arrival {he} was tripoding with SpO2 {spo2}% on {his} home oxygen."),
        exam=(("lungs", "Diffuse expiratory wheezes with poor air movement, prolonged expiratory phase"),
              ("general", "Speaking in 3-4 word sentences, using accessory muscles")),
        evidence=("VBG 7.31/62.", "CXR hyperinflated without focal consolidation."),
        course=("Treated with prednisone 40 mg daily for a 5 day course, azithromycin and standing "
                "DuoNebs, with improvement in wheezing.", "[bipap]Required BiPAP briefly in the ED for hypercarbia.",
                "Weaned back to {his} home oxygen requirement by discharge.", "Steroid taper was not needed."),
        daily=("Continued nebs and prednisone; air movement improving.", "Ambulated with O2 sat in the low 90s."),
        meds=("PredniSONE 40 mg PO DAILY Duration: 2 Days", "Azithromycin 250 mg PO Q24H Duration: 2 Days"),
        negations=("no wheezing to suggest {t}",),
        instructions=("You were admitted for a COPD flare. You were treated with steroids, antibiotics and "
                      "breathing treatments.",),
        labs={"spo2": (84, 91), "rr": (24, 32), "wbc": (10.5, 14.8), "hco3": (31, 38)},
        los=(3.5, 0.5), mortality=0.02, icu=0.1,
    ),
    Condition(
        "pneumonia", "acute",
        (v("486", "J189", "community-acquired pneumonia", "CAP", weight=6),
         v("4829", "J159", "bacterial pneumonia", weight=1),
         v("481", "J13", "pneumococcal pneumonia", "Streptococcus pneumoniae pneumonia", weight=1,
           evidence=("Urine Legionella antigen negative; urine Streptococcus pneumoniae antigen positive.",)),
         v("5070", "J690", "aspiration pneumonia", "aspiration pneumonitis", weight=2,
           evidence=("Speech and swallow evaluation showed silent aspiration with thin liquids.",)),
         v("4821", "J151", "Pseudomonas pneumonia", "pneumonia due to Pseudomonas aeruginosa", weight=0.5,
           evidence=("Sputum culture grew PSEUDOMONAS AERUGINOSA, sensitive to cefepime.",)),
         v("48241", "J15211", "MSSA pneumonia", "methicillin-susceptible Staph aureus pneumonia", weight=0.5,
           evidence=("Sputum culture with STAPH AUREUS COAG +, oxacillin sensitive.",))),
        ("pneumonia", "PNA", "lobar pneumonia", "infiltrate", "lower respiratory tract infection"),
        prevalence=12.0, secondary=1.5, age_related=False,
        complications=(("sepsis", 0.12), ("resp_failure", 0.12), ("hyponatremia", 0.08), ("aki", 0.1)),
        procedures=(("thoracentesis", 0.03),),
        imaging=(("cxr", "consolidation", 0.95), ("ct_chest", "consolidation", 0.15)),
        differentials=("chf_exacerbation", "pe", "lung_cancer"),
        symptoms=("cough", "fevers", "chills", "shortness of breath"),
        cc=("Fever, cough", "Cough and shortness of breath", "Fevers"),
        hpi=("{pt} presents with {gap_days} days of productive cough, fevers to 102 and chills.",
             "{He} reports pleuritic right-sided chest pain and malaise.",
             "Family notes increasing confusion and poor PO intake over the last few days."),
        exam=(("lungs", "Rhonchi and egophony at the right base"), ("general", "Ill-appearing, diaphoretic")),
        evidence=("CXR with right lower lobe consolidation.", "WBC {wbc} with {neuts}% neutrophils.",
                  "Sputum gram stain with many PMNs."),
        course=("Treated for {t} with ceftriaxone and azithromycin, narrowed to levofloxacin to complete a 5 "
                "day course.", "Fever curve down-trended and oxygen requirement resolved.",
                "Given risk factors, covered with vancomycin and cefepime "
                "initially, then de-escalated based on cultures."),
        daily=("Afebrile on antibiotics, O2 weaned to 1L.", "Tolerating PO, ambulating with PT."),
        meds=("Levofloxacin 750 mg PO Q24H Duration: 3 Days", "Amoxicillin-Clavulanic Acid 875 mg PO Q12H "
              "Duration: 4 Days", "Cefpodoxime Proxetil 200 mg PO Q12H Duration: 3 Days"),
        negations=("CXR without focal consolidation to suggest {t}", "no evidence of {t}", "{T} was considered "
                   "but CXR was clear and {he} remained afebrile", "low suspicion for {t}"),
        instructions=("You were admitted with a lung infection (pneumonia). You were treated with antibiotics.",),
        labs={"wbc": (12.5, 21.0), "temp": (100.6, 102.9), "spo2": (88, 94), "rr": (20, 26), "neuts": (78, 91),
              "hr": (96, 118)},
        los=(4.0, 0.55), mortality=0.04, icu=0.12,
    ),
    Condition(
        "sepsis", "acute",
        (v("0389 99591", "A419", "sepsis", weight=4),
         v("03842 99591", "A4151", "E. coli sepsis", "E. coli bacteremia with sepsis", weight=1.5,
           evidence=("Blood cultures ___ with ESCHERICHIA COLI, pan-sensitive.",)),
         v("0382 99591", "A403", "pneumococcal sepsis", weight=0.5,
           evidence=("Blood cultures grew STREPTOCOCCUS PNEUMONIAE.",)),
         v("03811 99591", "A4101", "MSSA bacteremia", "MSSA sepsis", weight=0.6,
           evidence=("Blood cultures 2/2 bottles with STAPH AUREUS COAG +, oxacillin sensitive.",))),
        ("sepsis", "SIRS with infection", "septicemia"),
        prevalence=8.0, secondary=0.5,
        complications=(("uti", 0.35), ("pneumonia", 0.3), ("cellulitis", 0.08), ("septic_shock", 0.3),
                       ("aki", 0.4), ("encephalopathy", 0.15), ("thrombocytopenia", 0.1), ("hypotension", 0.15)),
        procedures=(("central_line", 0.35), ("arterial_line", 0.15)),
        imaging=(("cxr", "normal", 0.6),),
        differentials=("pneumonia", "cdiff", "cholecystitis"),
        symptoms=("fevers", "rigors", "confusion"),
        cc=("Fever, hypotension", "Altered mental status, fever", "Rigors"),
        hpi=("{pt} was brought in by EMS with fever to 103, rigors and confusion.", "In the ED {he} met SIRS criteria "
             "with HR {hr}, temp {temp} and WBC {wbc}; lactate was {lactate}.", "{He} received 30 cc/kg IV fluids "
             "and broad spectrum antibiotics in the ED."),
        exam=(("general", "Lethargic, flushed, rigors"), ("cv", "Tachycardic, regular")),
        evidence=("Lactate {lactate}, cleared to 1.4 after fluids.", "WBC {wbc}.", "Two sets of blood cultures "
                  "drawn."),
        course=("Met criteria for {t} on admission with lactate {lactate} and WBC {wbc}.", "Started on "
                "vancomycin and piperacillin-tazobactam, later narrowed to ceftriaxone per sensitivities.",
                "Repeat blood cultures were drawn to document clearance. Plan for 14 days total antibiotics.",
                "Infectious disease was consulted and agreed with the antibiotic plan."),
        daily=("Afebrile for 24 hours, lactate normalized.", "Hemodynamically stable, off pressors.",
               "ID recommendations appreciated."),
        meds=("Ciprofloxacin HCl 500 mg PO Q12H Duration: 10 Days", "Cefpodoxime Proxetil 400 mg PO Q12H "
              "Duration: 9 Days"),
        negations=("no evidence of {t}", "did not meet criteria for {t}", "afebrile without leukocytosis, "
                   "{t} unlikely"),
        instructions=("You were admitted with a serious blood infection (sepsis). You were treated with IV fluids "
                      "and antibiotics.",),
        labs=_SEPSIS_LABS,
        los=(6.0, 0.6), mortality=0.1, icu=0.45,
    ),
    Condition(
        "septic_shock", "acute",
        (v("99592 78552", "R6521", "septic shock", "severe sepsis with septic shock",
           evidence=("Required norepinephrine up to 0.2 mcg/kg/min.",)),),
        ("septic shock", "distributive shock"),
        secondary=0.0, requires=("sepsis",),
        procedures=(("central_line", 0.8), ("ventilation", 0.3), ("arterial_line", 0.5)),
        course=("Hypotensive despite 4 L of crystalloid, requiring norepinephrine and ICU admission for "
                "{t}.", "Weaned off pressors on hospital day {hd}."),
        daily=("Pressors weaned, MAPs >65.", "Remains on low-dose norepinephrine."),
        negations=("never required pressors, no evidence of {t}",),
        labs={"sbp": (68, 84), "lactate": (4.2, 8.6)},
        mortality=0.25, icu=1.0,
    ),
    Condition(
        "uti", "acute",
        (v("5990", "N390", "UTI", "urinary tract infection", "cystitis", weight=4),
         v("5990 04149", "N390 B9620", "E. coli UTI", "UTI with E. coli", weight=2,
           evidence=("Urine culture grew >100,000 CFU/mL ESCHERICHIA COLI.",))),
        ("UTI", "urinary tract infection", "complicated UTI"),
        prevalence=6.0, secondary=3.0, age_related=False,
        complications=(("aki", 0.12), ("encephalopathy", 0.12)),
        imaging=(("renal_us", "normal", 0.2),),
        differentials=("pyelonephritis", "sepsis"),
        symptoms=("dysuria", "urinary frequency", "suprapubic pain"),
        cc=("Dysuria", "Confusion", "Urinary frequency"),
        hpi=("{pt} reports {gap_days} days of dysuria, frequency and suprapubic discomfort.",
             "Per the nursing home, {he} has been more confused with foul-smelling urine."),
        exam=(("abd", "Mild suprapubic tenderness, no CVA tenderness"),),
        evidence=("UA with large leukocyte esterase, positive nitrites and >182 WBC.",
                  "Urine culture with >100,000 CFU/mL gram negative rods."),
        course=("Treated for {t} with ceftriaxone, transitioned to oral antibiotics to complete 7 days.",
                "Urine culture speciated and sensitivities reviewed.", "Foley removed and voiding trial passed."),
        meds=("Nitrofurantoin Monohyd (MacroBID) 100 mg PO Q12H Duration: 5 Days", "Cephalexin 500 mg PO Q6H "
              "Duration: 4 Days", "Sulfameth/Trimethoprim DS 1 TAB PO BID Duration: 3 Days"),
        negations=("UA bland, no evidence of {t}", "urinalysis negative for infection", "UA not consistent with {t}"),
        labs={"wbc": (10.8, 15.5), "temp": (99.5, 101.2)},
        los=(3.0, 0.5), mortality=0.01,
    ),
    Condition(
        "pyelonephritis", "acute",
        (v("59010", "N10", "pyelonephritis", "acute pyelonephritis", "pyelo"),),
        ("pyelonephritis", "upper urinary tract infection"),
        prevalence=2.0, age_related=False,
        complications=(("sepsis", 0.15), ("aki", 0.15)),
        imaging=(("ct_abd", "pyelonephritis", 0.6), ("renal_us", "normal", 0.3)),
        differentials=("nephrolithiasis", "appendicitis"),
        symptoms=("flank pain", "fevers", "dysuria", "nausea"),
        cc=("Flank pain, fever", "Fever, dysuria"),
        hpi=("{pt} presents with right flank pain, fevers to 102.5, nausea and dysuria for {gap_days} days.",),
        exam=(("abd", "Right CVA tenderness"),),
        evidence=("CT with striated nephrogram of the right kidney.", "UA with pyuria and bacteriuria."),
        course=("Treated for {t} with IV ceftriaxone with defervescence, then transitioned to oral ciprofloxacin "
                "to complete a 10 to 14 day course.",),
        meds=("Ciprofloxacin HCl 500 mg PO Q12H Duration: 10 Days",),
        negations=("no CVA tenderness, {t} unlikely", "no evidence of {t} on CT"),
        labs={"wbc": (13.0, 19.0), "temp": (101.0, 103.0)},
        los=(3.0, 0.45), mortality=0.005,
    ),
    Condition(
        "aki", "acute",
        (v("5849", "N179", "acute kidney injury", "AKI", "acute renal failure", "ARF", weight=4),
         v("5845", "N170", "acute tubular necrosis", "ATN", "AKI due to ATN", weight=1,
           evidence=("Urine sediment with muddy brown granular casts.",))),
        ("AKI", "acute kidney injury", "acute renal failure"),
        prevalence=2.5, secondary=4.0, excludes=("ckd:2",),
        imaging=(("renal_us", "normal", 0.5),),
        symptoms=("decreased urine output",),
        cc=("Abnormal labs", "Decreased urine output"),
        hpi=("{pt} was sent in by {his} PCP for creatinine of {cr}, up from a baseline of {bcr}.",),
        evidence=("Creatinine {cr} on admission from a baseline of {bcr}.", "FeNa 0.4%, consistent with a "
                  "prerenal etiology.", "Renal ultrasound without hydronephrosis."),
        course=("Creatinine peaked at {cr} (baseline {bcr}), felt to be prerenal in the setting of poor PO intake "
                "and diuretics.", "Improved with IV fluids and holding of ACE inhibitor and diuretics.",
                "Discharge creatinine {dc_cr}.", "Medications were renally dosed and nephrotoxins avoided."),
        daily=("Cr downtrending with IVF.", "Good urine output, Cr improving."),
        negations=("creatinine at baseline, no {t}", "no evidence of {t}", "renal function remained stable "
                   "without {t}"),
        instructions=("Your kidney function was worse on admission and improved with IV fluids.",),
        labs={"cr": (2.1, 4.6), "bun": (42, 88), "k": (4.9, 5.8), "hco3": (17, 21)},
        los=(3.5, 0.5), mortality=0.02,
    ),
    Condition(
        "gi_bleed", "acute",
        (v("5789", "K922", "GI bleed", "gastrointestinal hemorrhage", "GIB", weight=2),
         v("5781", "K921", "melena", "upper GI bleed with melena", weight=2),
         v("5780", "K920", "hematemesis", "coffee-ground emesis", weight=1),
         v("53100", "K250", "bleeding gastric ulcer", "acute gastric ulcer with hemorrhage", weight=1,
           evidence=("[egd]EGD with a 1 cm clean-based gastric ulcer with a visible vessel, treated with clips and "
                     "epinephrine.", "Gastric ulcer suspected given NSAID use and epigastric pain.")),
         v("53240", "K264", "bleeding duodenal ulcer", "duodenal ulcer with hemorrhage", weight=1,
           evidence=("[egd]EGD with a duodenal bulb ulcer with adherent clot.", "H. pylori serology positive.")),
         v("56212", "K5731", "diverticular bleed", "diverticulosis with hemorrhage", "lower GI bleed",
           weight=1.2, evidence=("[colonoscopy]Colonoscopy with pan-diverticulosis and no active bleeding.",
                                 "Painless hematochezia in the setting of known diverticulosis."))),
        ("GI bleed", "GIB", "gastrointestinal bleeding", "blood loss"),
        prevalence=8.0, excludes=("cirrhosis",),
        complications=(("blood_loss_anemia", 0.7), ("aki", 0.1), ("hypotension", 0.1)),
        procedures=(("egd", 0.7), ("transfusion", 0.6), ("colonoscopy", 0.25)),
        differentials=("variceal_bleed",),
        symptoms=("black stools", "lightheadedness", "blood in stool"),
        cc=("Melena", "Bright red blood per rectum", "Hematemesis", "Dark stools"),
        hpi=("{pt} reports {gap_days} days of black, tarry stools and lightheadedness on standing.",
             "{He} takes ibuprofen several times a day for back pain.", "Rectal exam in the ED showed maroon "
             "stool, guaiac positive."),
        exam=(("rectal", "Guaiac positive dark stool in the vault"), ("general", "Pale, orthostatic")),
        evidence=("Hgb {hgb} on admission from a baseline of 12.", "[transfusion]Transfused {units} units PRBC.",
                  "BUN {bun}, elevated out of proportion to creatinine."),
        course=("Presented with {t} and Hgb {hgb}. Two large bore IVs placed and started on IV pantoprazole BID.",
                "[egd|colonoscopy]GI consulted and performed endoscopy on hospital day {hd}.", "[transfusion]Received "
                "{units} units pRBCs with appropriate rise in hemoglobin, which remained stable thereafter.",
                "[!transfusion]Hemoglobin remained stable without transfusion.", "Discharged on PPI BID for "
                "8 weeks, with repeat endoscopy in 8 weeks.", "NSAIDs were discontinued."),
        daily=("Hct stable x3.", "No further melena, diet advanced."),
        meds=("Pantoprazole 40 mg PO Q12H",),
        negations=("guaiac negative, no evidence of {t}", "no signs of {t}, Hgb stable", "no {t}"),
        instructions=("You were admitted because of bleeding from your stomach/intestines. Please avoid NSAIDs "
                      "such as ibuprofen, Advil, Motrin, Aleve.",),
        labs={"hgb": (6.4, 8.6), "bun": (34, 62), "hr": (98, 118), "sbp": (92, 108)},
        los=(3.5, 0.5), mortality=0.025, icu=0.2,
    ),
    Condition(
        "variceal_bleed", "acute",
        (v("45620", "I8511", "variceal bleed", "bleeding esophageal varices", "variceal hemorrhage"),),
        ("variceal bleed", "upper GI bleed from varices"),
        prevalence=5.0, requires=("cirrhosis",),
        complications=(("blood_loss_anemia", 0.8), ("hepatic_encephalopathy", 0.2)),
        procedures=(("banding", 0.9), ("transfusion", 0.85), ("ventilation", 0.15)),
        symptoms=("vomiting blood", "black stools"),
        cc=("Hematemesis",),
        hpi=("{pt} with known cirrhosis presents with large-volume hematemesis x2 and melena.",),
        exam=(("general", "Pale, blood in oropharynx"),),
        evidence=("[banding]EGD with large esophageal varices with stigmata of recent bleeding, 4 bands placed.",
                  "Known large esophageal varices on prior endoscopy."),
        course=("Started on octreotide drip, IV pantoprazole and ceftriaxone for SBP prophylaxis for {t}.",
                "[banding]Underwent EGD with banding of esophageal varices x4.", "[transfusion]Transfused {units} units "
                "pRBCs.",
                "Restarted on nadolol prior to discharge."),
        meds=("Ciprofloxacin HCl 500 mg PO Q24H Duration: 4 Days", "Nadolol 20 mg PO DAILY"),
        negations=("EGD without varices", "no stigmata of {t}"),
        labs={"hgb": (6.2, 8.2), "hr": (104, 124), "sbp": (84, 102), "bun": (38, 58)},
        los=(5.0, 0.5), mortality=0.12, icu=0.6,
    ),
    Condition(
        "hepatic_encephalopathy", "acute",
        (v("5722", "K7682", "hepatic encephalopathy", "HE"),),
        ("hepatic encephalopathy", "HE", "encephalopathy from liver disease"),
        prevalence=6.0, secondary=0.4, requires=("cirrhosis",),
        complications=(("hyponatremia", 0.2), ("aki", 0.15)),
        imaging=(("ct_head", "normal", 0.5),),
        differentials=("sepsis", "stroke"),
        symptoms=("confusion", "somnolence"),
        cc=("Confusion", "Altered mental status"),
        hpi=("Family reports {he} has been increasingly confused and sleepy for {gap_days} days and has not been "
             "taking {his} lactulose.",),
        exam=(("neuro", "Oriented to self only, asterixis present"),),
        evidence=("Ammonia {ammonia}.", "Asterixis on exam.", "Infectious workup including UA and CXR negative."),
        course=("Grade II {t}, precipitant felt to be lactulose nonadherence.", "Lactulose titrated to 3-4 bowel "
                "movements daily and rifaximin continued, with return to mental status baseline.",
                "Infectious workup was negative."),
        negations=("no asterixis, {t} unlikely",),
        labs={"ammonia": (92, 184)},
        los=(4.0, 0.5), mortality=0.05,
    ),
    Condition(
        "ascites", "acute",
        (v("78959", "R188", "ascites", "tense ascites", "worsening ascites"),),
        ("ascites", "volume overload from cirrhosis"),
        prevalence=4.0, secondary=1.0, requires=("cirrhosis",),
        complications=(("sbp", 0.25), ("hyponatremia", 0.25)),
        procedures=(("paracentesis", 0.9),),
        imaging=(("ruq_us", "cirrhosis", 0.7),),
        symptoms=("abdominal distention", "shortness of breath"),
        cc=("Abdominal distention",),
        hpi=("{pt} presents with increasing abdominal girth and early satiety.",),
        exam=(("abd", "Tense, distended, positive fluid wave"),),
        evidence=("[paracentesis]Therapeutic paracentesis removed 5.2 L of straw-colored fluid.",
                  "Shifting dullness and a positive fluid wave on exam."),
        course=("[paracentesis]Underwent large volume paracentesis with albumin repletion for {t}.",
                "[!paracentesis]Managed with diuretics alone; paracentesis was not required.",
                "Diuretics were uptitrated with goal 0.5-1 kg weight loss daily."),
        negations=("no {t} on ultrasound",),
        los=(3.0, 0.5), mortality=0.03,
    ),
    Condition(
        "sbp", "acute",
        (v("56723", "K652", "spontaneous bacterial peritonitis", "SBP"),),
        ("SBP", "spontaneous bacterial peritonitis"),
        requires=("cirrhosis",),
        evidence=("[paracentesis]Diagnostic paracentesis with 640 PMNs.", "Abdominal tenderness and fever in a "
                  "patient with ascites."),
        course=("[paracentesis]Peritoneal fluid with >250 PMNs consistent with {t}; treated with ceftriaxone and "
                "albumin on days 1 and 3.", "Treated for {t} with ceftriaxone and albumin."),
        negations=("paracentesis negative for {t}", "no {t}"),
        meds=("Ciprofloxacin HCl 500 mg PO Q24H",),
        mortality=0.06,
    ),
    Condition(
        "mi", "acute",
        (v("41071", "I214", "NSTEMI", "non-ST elevation myocardial infarction", "type 1 NSTEMI", weight=3,
           evidence=("EKG with ST depressions in V4-V6.",)),
         v("41041", "I2119", "inferior STEMI", "ST elevation MI of the inferior wall", weight=1,
           evidence=("EKG with ST elevations in II, III and aVF.",)),
         v("41011", "I2109", "anterior STEMI", "ST elevation MI of the anterior wall", weight=1,
           evidence=("EKG with ST elevations in V1-V4.",))),
        ("myocardial infarction", "MI", "acute coronary syndrome", "ACS", "heart attack"),
        prevalence=3.0, risk={"cad": 2.0, "dm2": 1.3, "tobacco": 1.3},
        complications=(("chf_exacerbation", 0.1), ("aki", 0.08), ("cardiogenic_shock", 0.05)),
        procedures=(("cath_pci|cath_pci|cath_pci|cath", 0.9),),
        imaging=(("cxr", "normal", 0.7),),
        leaves=(("cad", 1.0), ("old_mi", 1.0), ("aspirin_use", 0.5)),
        differentials=("pe", "gerd"),
        symptoms=("chest pain", "diaphoresis", "nausea"),
        cc=("Chest pain", "Chest pressure", "Substernal chest pain"),
        hpi=("{pt} developed substernal chest pressure radiating to the left arm with diaphoresis while shoveling "
             "snow.", "Pain began at rest about ___ hours prior to arrival, 8/10, associated with nausea.",
             "Initial troponin was {trop}."),
        exam=(("general", "Diaphoretic, uncomfortable"),),
        evidence=("Troponin T peaked at {trop_peak}.", "TTE with LVEF {ef}% and inferior hypokinesis.",
                  "[cath_pci]Cardiac catheterization with 90% stenosis of the mid RCA.",
                  "[cath]Cardiac catheterization with diffuse disease not amenable to PCI."),
        course=("Presented with chest pain and troponin {trop}, consistent with {t}. Loaded with aspirin "
                "325 mg and ticagrelor and started on heparin drip.", "[cath_pci]Underwent cardiac catheterization with "
                "drug-eluting stent to the culprit lesion.", "[!cath_pci]Managed medically with a 48-hour heparin "
                "drip.", "Started on high-intensity statin, beta blocker "
                "and ACE inhibitor.", "Cardiac rehab referral placed."),
        daily=("Chest pain free, troponins downtrending.", "Ambulated without symptoms."),
        meds=("Ticagrelor 90 mg PO BID", "Atorvastatin 80 mg PO QPM", "Aspirin 81 mg PO DAILY",
              "Metoprolol Succinate XL 25 mg PO DAILY", "Nitroglycerin SL 0.4 mg SL Q5MIN:PRN chest pain"),
        negations=("ruled out for {t} with troponins negative x2", "troponins flat, no evidence of {t}",
                   "{T} was ruled out", "EKG without ischemic changes, {t} ruled out"),
        instructions=("You had a heart attack. A stent was placed to open a blocked artery in your heart. Do not "
                      "stop taking ticagrelor or aspirin unless your cardiologist tells you to.",),
        labs={"trop": (0.12, 1.8), "ck": (240, 1600), "hr": (88, 104)},
        service="CARDIOLOGY", los=(3.5, 0.5), mortality=0.06, icu=0.35,
    ),
    Condition(
        "cardiogenic_shock", "acute",
        (v("78551", "R570", "cardiogenic shock"),),
        ("cardiogenic shock",),
        procedures=(("central_line", 0.9), ("ventilation", 0.4)),
        course=("Developed {t} requiring dobutamine and norepinephrine.",),
        negations=("no evidence of {t}",),
        labs={"sbp": (70, 86), "lactate": (3.4, 7.8)},
        mortality=0.35, icu=1.0,
    ),
    Condition(
        "chest_pain", "acute",
        (v("78650", "R079", "chest pain", "atypical chest pain", "chest pain, noncardiac"),),
        ("chest pain", "CP", "chest discomfort"),
        prevalence=6.0,
        imaging=(("cxr", "normal", 0.9),),
        differentials=("mi", "pe"),
        symptoms=("chest pain",),
        cc=("Chest pain",),
        hpi=("{pt} reports intermittent left-sided chest pain for {gap_days} days, non-exertional, without "
             "radiation.", "Pain is reproducible on palpation and worse with deep inspiration."),
        exam=(("chest", "Tender to palpation over the left costochondral junctions"),),
        evidence=("Troponins negative x2.", "Exercise stress test without ischemic EKG changes."),
        course=("Admitted for {t}. Troponins negative x2 and EKG without ischemic changes.",
                "Underwent exercise stress test with no evidence of ischemia.", "Likely musculoskeletal; "
                "treated with acetaminophen and lidocaine patch."),
        meds=("Lidocaine 5% Patch 1 PTCH TD QAM",),
        negations=("denies {t}", "no {t}"),
        los=(1.5, 0.4),
    ),
    Condition(
        "afib_rvr", "acute",
        (v("42731", "I4891", "atrial fibrillation with RVR", "AF with rapid ventricular response"),
         v("42731", "I480", "paroxysmal atrial fibrillation with RVR"),
         v("42731", "I4821", "permanent AF with RVR")),
        ("AF with RVR", "afib with RVR", "rapid atrial fibrillation"),
        prevalence=6.0, requires=("afib",), parallel=True, replaces=("afib",),
        procedures=(("cardioversion", 0.15),),
        imaging=(("cxr", "normal", 0.6),),
        differentials=("mi", "pe", "hypothyroidism"),
        symptoms=("palpitations", "lightheadedness", "shortness of breath"),
        cc=("Palpitations",),
        hpi=("{pt} reports palpitations and lightheadedness since this morning; {he} missed several doses of {his} "
             "metoprolol.",),
        exam=(("cv", "Irregularly irregular, tachycardic to the 140s"),),
        evidence=("EKG with atrial fibrillation at 142 bpm.", "TSH normal."),
        course=("Presented in {t} with rates to the 140s. Rate controlled with IV diltiazem then uptitrated oral "
                "metoprolol.", "[cardioversion]Underwent TEE-guided DC cardioversion with return to sinus rhythm.",
                "Anticoagulation continued.", "TTE obtained to assess LV function."),
        meds=("Metoprolol Succinate XL 100 mg PO DAILY",),
        negations=("in sinus rhythm, no {t}",),
        labs={"hr": (128, 156)},
        service="CARDIOLOGY", los=(2.5, 0.45), mortality=0.005,
    ),
    Condition(
        "heart_block", "acute",
        (v("4260", "I442", "complete heart block", "third degree AV block", "CHB"),
         v("42781", "I495", "sick sinus syndrome", "sinus node dysfunction", "tachy-brady syndrome")),
        ("heart block", "symptomatic bradycardia"),
        prevalence=1.5,
        procedures=(("pacemaker_insertion", 0.9),),
        leaves=(("pacemaker", 1.0),),
        symptoms=("lightheadedness", "syncope", "fatigue"),
        cc=("Bradycardia", "Lightheadedness"),
        hpi=("{pt} had a near-syncopal episode at home and was found by EMS to have heart rate in the 30s.",),
        evidence=("EKG with complete heart block, ventricular escape rate 38.",),
        course=("Found to have {t}; EP consulted.", "[pacemaker_insertion]Dual-chamber pacemaker placed on hospital "
                "day {hd}.", "[!pacemaker_insertion]Temporary wire considered; rhythm recovered after holding nodal "
                "agents.",
                "Post-procedure device interrogation normal; arm precautions reviewed."),
        meds=("Cephalexin 500 mg PO Q6H Duration: 2 Days",),
        negations=("no AV block on telemetry",),
        labs={"hr": (32, 44)},
        service="CARDIOLOGY", los=(2.5, 0.4), mortality=0.005,
    ),
    Condition(
        "stroke", "acute",
        (v("43491", "I639", "ischemic stroke", "acute ischemic stroke", "CVA", weight=3,
           evidence=("MRI with acute infarct in the left MCA territory.",)),
         v("43411", "I6340", "embolic stroke", "cardioembolic stroke", weight=1,
           evidence=("MRI with scattered acute infarcts in multiple vascular territories, suggestive of an embolic "
                     "source.",))),
        ("stroke", "CVA", "cerebral infarction", "acute infarct"),
        prevalence=3.5, risk={"afib": 2.0, "hypertension": 1.2, "hx_stroke": 1.5},
        complications=(("hemiplegia", 0.45), ("dysphagia", 0.35), ("aphasia", 0.25), ("pneumonia", 0.06),
                       ("uti", 0.08)),
        procedures=(("tpa", 0.15), ("peg", 0.05)),
        imaging=(("ct_head", "infarct", 0.9), ("mri_brain", "infarct", 0.6)),
        leaves=(("hx_stroke", 0.9),),
        differentials=("hepatic_encephalopathy",),
        symptoms=("weakness", "slurred speech", "facial droop"),
        cc=("Right sided weakness", "Slurred speech", "Code stroke"),
        hpi=("{pt} was last seen well at ___ when {his} spouse noted slurred speech and right facial droop.",
             "A code stroke was called in the ED; NIHSS was {nihss}.", "CT head showed no hemorrhage."),
        exam=(("neuro", "Right lower facial droop, right arm pronator drift, dysarthric speech"),),
        evidence=("NIHSS {nihss} on arrival.", "CTA head and neck without large vessel occlusion.",
                  "LDL {ldl}, HbA1c {a1c}%."),
        course=("Presented with acute right-sided weakness and dysarthria with NIHSS {nihss}; MRI confirmed {t}.",
                "Outside the window for thrombectomy.", "[tpa]Received IV tPA in the ED without hemorrhagic "
                "conversion on follow-up imaging.", "Started on aspirin and high-dose atorvastatin; permissive "
                "hypertension for the first 24 hours.", "Monitored on telemetry for 48 hours.",
                "Speech and swallow evaluation; diet advanced to soft solids.", "PT/OT recommended acute rehab."),
        daily=("Neuro exam stable.", "Passed bedside swallow."),
        meds=("Aspirin 81 mg PO DAILY", "Atorvastatin 80 mg PO QPM"),
        negations=("MRI without acute infarct, {t} ruled out", "no evidence of {t} on imaging", "no focal deficits "
                   "to suggest {t}"),
        instructions=("You were admitted because of a stroke. Call 911 if you develop new weakness, numbness, "
                      "trouble speaking or facial droop.",),
        labs={"nihss": (3, 14), "sbp": (160, 196)},
        service="NEUROLOGY", los=(4.5, 0.55), mortality=0.07, icu=0.2,
    ),
    Condition(
        "tia", "acute",
        (v("4359", "G459", "TIA", "transient ischemic attack"),),
        ("TIA", "transient ischemic attack"),
        prevalence=3.0, risk={"afib": 2.0, "hypertension": 1.3},
        imaging=(("ct_head", "normal", 0.9), ("mri_brain", "normal", 0.6)),
        leaves=(("hx_stroke", 0.8),),
        differentials=("stroke",),
        symptoms=("transient numbness", "word-finding difficulty"),
        cc=("Transient aphasia", "Left arm numbness"),
        hpi=("{pt} had 20 minutes of word-finding difficulty that completely resolved prior to arrival.",),
        evidence=("MRI without acute infarct.",),
        course=("Symptoms resolved completely, consistent with {t}. MRI without infarct.", "Started on aspirin and "
                "statin; outpatient neurology follow up arranged."),
        meds=("Aspirin 81 mg PO DAILY",),
        negations=("no {t}",),
        service="NEUROLOGY", los=(1.8, 0.4),
    ),
    Condition(
        "syncope", "acute",
        (v("7802", "R55", "syncope", "syncope and collapse", "vasovagal syncope", "loss of consciousness"),),
        ("syncope", "syncopal episode", "LOC"),
        prevalence=4.0,
        complications=(("dehydration", 0.2),),
        imaging=(("ct_head", "normal", 0.75),),
        differentials=("mi", "heart_block", "seizure", "pe"),
        symptoms=("loss of consciousness", "lightheadedness"),
        cc=("Syncope", "Fall, loss of consciousness"),
        hpi=("{pt} had a witnessed loss of consciousness lasting less than a minute after standing up from the "
             "toilet, without tongue biting or incontinence.",),
        evidence=("Orthostatic vital signs positive.", "Telemetry without arrhythmia.",
                  "TTE with normal biventricular function."),
        course=("Admitted for {t}, felt to be orthostatic in the setting of poor PO intake. No events on "
                "telemetry.", "TTE unremarkable.", "Antihypertensives were reduced."),
        negations=("no {t}", "denies {t}"),
        los=(2.0, 0.4),
    ),
    Condition(
        "pe", "acute",
        (v("41519", "I2699", "pulmonary embolism", "PE", "segmental PE", "bilateral pulmonary emboli"),),
        ("PE", "pulmonary embolus", "pulmonary embolism"),
        prevalence=3.0, age_related=False,
        imaging=(("cta_chest", "pe", 1.0), ("le_duplex", "dvt", 0.35)),
        leaves=(("hx_vte", 1.0), ("anticoagulation", 0.9)),
        differentials=("pneumonia", "mi"),
        symptoms=("pleuritic chest pain", "shortness of breath"),
        cc=("Shortness of breath, pleuritic chest pain",),
        hpi=("{pt} reports sudden onset pleuritic chest pain and dyspnea, {gap_days} days after a long car trip.",),
        evidence=("CTA chest with bilateral segmental pulmonary emboli.", "TTE without RV strain."),
        course=("Diagnosed with {t} on CTA. Started on heparin drip and transitioned to apixaban.",
                "No RV strain on echo; did not require thrombolysis."),
        meds=("Apixaban 10 mg PO BID for 7 days, then 5 mg BID",),
        negations=("CTA negative for {t}", "{T} was ruled out with CTA", "low Wells score, {t} unlikely",
                   "no evidence of {t}"),
        labs={"hr": (104, 122), "spo2": (88, 93)},
        los=(3.0, 0.45), mortality=0.02, icu=0.1,
    ),
    Condition(
        "dvt", "acute",
        (v("45340", "I82401", "right leg DVT", "deep venous thrombosis of the right lower extremity", side="right"),
         v("45340", "I82402", "left leg DVT", "deep venous thrombosis of the left lower extremity", side="left")),
        ("DVT", "deep vein thrombosis", "venous thromboembolism"),
        prevalence=1.5, secondary=0.5, age_related=False,
        imaging=(("le_duplex", "dvt", 1.0),),
        leaves=(("hx_vte", 1.0), ("anticoagulation", 0.9)),
        symptoms=("leg swelling", "calf pain"),
        cc=("Leg swelling",),
        hpi=("{pt} reports {side} calf pain and swelling for {gap_days} days.",),
        exam=(("ext", "{Side} calf swollen and tender, +2 pitting edema"),),
        evidence=("Lower extremity duplex with occlusive thrombus of the {side} femoral and popliteal veins.",),
        course=("Found to have {t}; started on enoxaparin and transitioned to apixaban.",),
        meds=("Apixaban 5 mg PO BID",),
        negations=("LENIs negative for {t}", "no {t}", "no calf tenderness, {t} unlikely"),
        los=(2.5, 0.4), mortality=0.005,
    ),
    Condition(
        "cellulitis", "acute",
        (v("6826", "L03115", "right lower extremity cellulitis", "cellulitis of the right leg", side="right"),
         v("6826", "L03116", "left lower extremity cellulitis", "cellulitis of the left leg", side="left")),
        ("cellulitis", "skin and soft tissue infection", "SSTI"),
        prevalence=3.0, secondary=0.3, age_related=False, risk={"dm2": 1.5, "obesity": 1.5},
        imaging=(("le_duplex", "normal", 0.3),),
        differentials=("dvt",),
        symptoms=("leg redness", "leg swelling", "fevers"),
        cc=("Leg redness", "Leg pain and swelling"),
        hpi=("{pt} noted redness and warmth of the {side} shin starting {gap_days} days ago, spreading despite "
             "oral cephalexin.",),
        exam=(("ext", "{Side} lower extremity with erythema, warmth and induration to the mid calf, borders "
               "marked"),),
        evidence=("Erythema receded from marked borders on antibiotics.",),
        course=("Treated for {t} with IV vancomycin with improvement, transitioned to oral doxycycline and "
                "cephalexin.", "Leg elevation encouraged.", "Margins were marked and followed daily."),
        meds=("Doxycycline Hyclate 100 mg PO Q12H Duration: 6 Days", "Cephalexin 500 mg PO Q6H Duration: 6 Days"),
        negations=("no erythema to suggest {t}", "skin intact without {t}"),
        labs={"wbc": (10.5, 15.0), "temp": (99.8, 101.4)},
        los=(3.0, 0.45), mortality=0.003,
    ),
    Condition(
        "hip_fracture", "acute",
        (v("82000 E8889", "S72001A W19XXXA", "right hip fracture", "right femoral neck fracture", side="right"),
         v("82000 E8889", "S72002A W19XXXA", "left hip fracture", "left femoral neck fracture", side="left")),
        ("hip fracture", "femoral neck fracture", "hip fx"),
        prevalence=4.0, risk={"osteoporosis": 3.0, "dementia": 2.0, "parkinson": 2.0},
        complications=(("blood_loss_anemia", 0.45), ("delirium", 0.2), ("uti", 0.08)),
        procedures=(("hip_orif|hip_hemiarthroplasty", 0.95), ("transfusion", 0.3)),
        imaging=(("hip_xr", "fracture", 1.0), ("cxr", "normal", 0.8), ("ct_head", "normal", 0.4)),
        symptoms=("hip pain", "inability to bear weight"),
        cc=("Fall, hip pain", "{Side} hip pain"),
        hpi=("{pt} had a mechanical fall at home, tripping over a rug, with immediate {side} hip pain and inability "
             "to bear weight. No head strike or loss of consciousness.",),
        exam=(("ext", "{Side} lower extremity shortened and externally rotated"),),
        evidence=("Hip films with a displaced {side} femoral neck fracture.",),
        course=("[hip_orif|hip_hemiarthroplasty]Taken to the OR for operative repair of {t} on hospital day {hd}, "
                "uncomplicated.", "[!hip_orif|hip_hemiarthroplasty]Nonoperative management was chosen after discussion "
                "of surgical risk.",
                "Pain controlled with oxycodone and acetaminophen.", "Enoxaparin for DVT prophylaxis for 4 weeks.",
                "PT recommended rehab.", "Osteoporosis workup recommended as outpatient."),
        meds=("Enoxaparin Sodium 40 mg SC DAILY Duration: 4 Weeks", "OxyCODONE (Immediate Release) 2.5 mg PO "
              "Q4H:PRN pain", "Acetaminophen 1000 mg PO Q8H", "Senna 8.6 mg PO BID"),
        negations=("films negative for {t}", "no {t}"),
        instructions=("You were admitted after a fall and broke your hip. You had surgery to repair it. You may "
                      "bear weight as tolerated.",),
        service="ORTHOPAEDICS", los=(5.0, 0.4), mortality=0.03, icu=0.05,
    ),
    Condition(
        "dka", "acute",
        (v("25013", "E1010", "DKA", "diabetic ketoacidosis", "type 1 diabetes with ketoacidosis"),),
        ("DKA", "diabetic ketoacidosis"),
        prevalence=12.0, requires=("dm1",), replaces=("dm1",),
        complications=(("aki", 0.2), ("hypokalemia", 0.3)),
        symptoms=("nausea", "vomiting", "abdominal pain", "polyuria"),
        cc=("Nausea, vomiting", "Hyperglycemia"),
        hpi=("{pt} presents with {gap_days} days of polyuria, polydipsia, nausea and vomiting after running out "
             "of insulin.",),
        evidence=("Anion gap {angap} with bicarbonate {hco3}.", "Serum beta-hydroxybutyrate elevated."),
        course=("Admitted to the ICU for {t} on insulin drip with aggressive IV fluids and potassium repletion; "
                "gap closed within 18 hours.", "Transitioned to subcutaneous insulin with overlap.",
                "Diabetes educator saw patient."),
        negations=("anion gap normal, no {t}",),
        labs={"glu": (420, 690), "hco3": (8, 14), "k": (5.2, 6.1)},
        los=(2.5, 0.4), mortality=0.005, icu=0.7,
    ),
    Condition(
        "hypoglycemia", "acute",
        (v("25080", "E11649", "hypoglycemia", "hypoglycemia due to sulfonylurea", "insulin-induced hypoglycemia"),),
        ("hypoglycemia", "low blood sugar"),
        prevalence=1.5, requires=("dm2",),
        cc=("Hypoglycemia", "Altered mental status"),
        symptoms=("confusion", "sweating"),
        hpi=("EMS found {pt} diaphoretic and confused with fingerstick of 38.",),
        evidence=("Fingerstick glucose 38 on EMS arrival.",),
        course=("{T} in the setting of glipizide use and poor PO intake, required D10 infusion for 12 hours.",
                "Glipizide was discontinued."),
        negations=("no episodes of {t}",),
        labs={"glu": (32, 52)},
        los=(2.0, 0.4),
    ),
    Condition(
        "hyponatremia", "acute",
        (v("2761", "E871", "hyponatremia", "hypo-osmolar hyponatremia", "SIADH"),),
        ("hyponatremia", "low sodium"),
        prevalence=2.0, secondary=2.5,
        symptoms=("fatigue", "confusion"),
        cc=("Low sodium", "Weakness"),
        hpi=("Sent in by PCP for sodium of {na} on routine labs.",),
        evidence=("Na {na} on admission.", "Urine osm 480, serum osm 262."),
        course=("Na {na} on admission, likely hypovolemic vs thiazide-induced. Improved with fluid restriction "
                "and holding hydrochlorothiazide.", "Sodium corrected no more than 8 mEq in 24 hours."),
        daily=("Na improving with fluid restriction.", "Na checked q6h, correcting appropriately."),
        negations=("sodium within normal limits",),
        labs={"na": (118, 129)},
        los=(3.0, 0.4),
    ),
    Condition(
        "hyperkalemia", "acute",
        (v("2767", "E875", "hyperkalemia", "elevated potassium"),),
        ("hyperkalemia",),
        prevalence=1.5, secondary=1.5, risk={"ckd": 4.0},
        evidence=("K {k} on admission with peaked T waves.",),
        course=("{T} to {k} treated with calcium gluconate, insulin/dextrose and Lokelma.",),
        negations=("no {t}",),
        labs={"k": (6.0, 7.2)},
        los=(2.0, 0.4),
    ),
    Condition(
        "hypokalemia", "acute",
        (v("2768", "E876", "hypokalemia", "low potassium"),),
        ("hypokalemia",),
        secondary=2.5,
        evidence=("K {k}.",),
        course=("{T} repleted with oral and IV potassium.",),
        labs={"k": (2.6, 3.3)},
    ),
    Condition(
        "volume_overload", "acute",
        (v("27669", "E8770", "volume overload", "fluid overload"),),
        ("volume overload", "hypervolemia"),
        prevalence=5.0, requires=("ckd",), excludes=("chf",),
        procedures=(("hemodialysis", 0.8),),
        imaging=(("cxr", "pulmonary_edema", 0.8),),
        symptoms=("shortness of breath", "leg swelling"),
        cc=("Shortness of breath",),
        hpi=("{pt} missed {his} last dialysis session and presents with dyspnea and leg edema.",),
        evidence=("CXR with pulmonary edema.",),
        course=("[hemodialysis]{T} after a missed session, improved with urgent hemodialysis and ultrafiltration of "
                "3 L.", "[!hemodialysis]{T} managed with fluid restriction and IV diuretics."),
        negations=("euvolemic, no {t}",),
        labs={"spo2": (86, 92), "k": (5.4, 6.4)},
        los=(2.0, 0.4), mortality=0.01,
    ),
    Condition(
        "pancreatitis", "acute",
        (v("5770", "K8590", "acute pancreatitis", "pancreatitis"),),
        ("pancreatitis", "acute pancreatitis"),
        prevalence=3.0, age_related=False, risk={"alcohol_use": 4.0},
        imaging=(("ct_abd", "pancreatitis", 0.7), ("ruq_us", "normal", 0.5)),
        differentials=("cholecystitis",),
        symptoms=("epigastric pain", "nausea", "vomiting"),
        cc=("Abdominal pain", "Epigastric pain radiating to the back"),
        hpi=("{pt} presents with severe epigastric pain radiating to the back, with nausea and vomiting, after an "
             "alcohol binge.",),
        exam=(("abd", "Epigastric tenderness with voluntary guarding"),),
        evidence=("Lipase {lipase}.", "CT with peripancreatic fat stranding without necrosis."),
        course=("Treated for {t} with aggressive IV fluids, pain control and bowel rest; diet advanced as "
                "tolerated.", "RUQ ultrasound without gallstones.", "Triglycerides normal."),
        negations=("lipase normal, {t} unlikely", "no {t}"),
        labs={"lipase": (680, 4200), "wbc": (11.0, 16.0)},
        los=(4.0, 0.5), mortality=0.02, icu=0.1,
    ),
    Condition(
        "cholecystitis", "acute",
        (v("57400", "K8000", "acute cholecystitis", "calculous cholecystitis", "cholecystitis with cholelithiasis"),),
        ("cholecystitis", "acute calculous cholecystitis"),
        prevalence=3.0, age_related=False, risk={"obesity": 1.8},
        procedures=(("lap_chole", 0.9),),
        imaging=(("ruq_us", "cholecystitis", 1.0),),
        differentials=("pancreatitis",),
        symptoms=("right upper quadrant pain", "nausea", "fevers"),
        cc=("RUQ pain",),
        hpi=("{pt} reports right upper quadrant pain after fatty meals, now constant for 2 days with fever.",),
        exam=(("abd", "Tender in the RUQ with positive Murphy's sign"),),
        evidence=("RUQ ultrasound with gallstones, gallbladder wall thickening and pericholecystic fluid.",),
        course=("[lap_chole]Taken to the OR for laparoscopic cholecystectomy for {t}, without complication.",
                "[!lap_chole]Treated with IV antibiotics given surgical risk; interval cholecystectomy planned.",
                "Diet advanced; pain controlled on oral medications."),
        meds=("OxyCODONE (Immediate Release) 5 mg PO Q4H:PRN pain", "Docusate Sodium 100 mg PO BID"),
        negations=("RUQ US without {t}", "no gallbladder wall thickening to suggest {t}"),
        labs={"wbc": (12.0, 17.0), "alkp": (110, 190), "tbili": (1.0, 1.9)},
        service="SURGERY", los=(2.5, 0.4), mortality=0.003,
    ),
    Condition(
        "appendicitis", "acute",
        (v("5409", "K3580", "acute appendicitis", "appendicitis"),),
        ("appendicitis",),
        prevalence=2.5, age_related=False,
        procedures=(("lap_appy", 0.95),),
        imaging=(("ct_abd", "appendicitis", 1.0),),
        symptoms=("right lower quadrant pain", "anorexia", "nausea"),
        cc=("Abdominal pain", "RLQ pain"),
        hpi=("{pt} reports periumbilical pain that migrated to the right lower quadrant over 24 hours, with "
             "anorexia and nausea.",),
        exam=(("abd", "Tender at McBurney's point with rebound"),),
        evidence=("CT with a dilated appendix to 12 mm with periappendiceal stranding.",),
        course=("[lap_appy]Underwent uncomplicated laparoscopic appendectomy for {t}.",
                "[!lap_appy]Treated nonoperatively with antibiotics for {t}.", "Tolerated regular diet on "
                "post-operative day 1."),
        meds=("Acetaminophen 650 mg PO Q6H:PRN pain",),
        negations=("appendix normal on CT, no {t}",),
        labs={"wbc": (12.5, 17.5)},
        service="SURGERY", los=(1.5, 0.35),
    ),
    Condition(
        "sbo", "acute",
        (v("56081", "K5651", "partial small bowel obstruction due to adhesions", "adhesive SBO", "pSBO"),
         v("56089", "K56699", "small bowel obstruction", "SBO")),
        ("SBO", "small bowel obstruction", "bowel obstruction"),
        prevalence=2.5,
        procedures=(("ngt|ngt|exlap", 0.5),),
        imaging=(("ct_abd", "sbo", 1.0),),
        symptoms=("abdominal pain", "vomiting", "abdominal distention", "obstipation"),
        cc=("Abdominal pain, vomiting",),
        hpi=("{pt} with prior abdominal surgeries presents with crampy abdominal pain, distention, bilious emesis "
             "and no flatus for 24 hours.",),
        exam=(("abd", "Distended, tympanic, diffusely tender without peritoneal signs"),),
        evidence=("CT with dilated loops of small bowel and a transition point in the right lower quadrant.",),
        course=("[!exlap]Managed conservatively for {t} with NGT decompression, bowel rest and IV fluids.",
                "[exlap]Failed conservative management of {t} and underwent exploratory laparotomy with lysis of "
                "adhesions.",
                "Gastrografin challenge passed with contrast in the colon at 8 hours.", "Diet advanced."),
        negations=("no evidence of {t} on imaging",),
        service="SURGERY", los=(4.0, 0.5), mortality=0.01,
    ),
    Condition(
        "diverticulitis", "acute",
        (v("56211", "K5732", "diverticulitis", "sigmoid diverticulitis", "acute diverticulitis"),),
        ("diverticulitis",),
        prevalence=2.5,
        imaging=(("ct_abd", "diverticulitis", 1.0),),
        symptoms=("left lower quadrant pain", "fevers"),
        cc=("LLQ pain",),
        hpi=("{pt} presents with left lower quadrant pain and low-grade fevers for {gap_days} days.",),
        exam=(("abd", "Tender in the LLQ without rebound"),),
        evidence=("CT with sigmoid diverticulitis without abscess or perforation.",),
        course=("Treated for uncomplicated {t} with IV ciprofloxacin and metronidazole, then oral antibiotics.",
                "Outpatient colonoscopy in 6-8 weeks recommended."),
        meds=("Ciprofloxacin HCl 500 mg PO Q12H Duration: 7 Days", "MetroNIDAZOLE 500 mg PO Q8H Duration: 7 Days"),
        negations=("no {t}",),
        labs={"wbc": (11.5, 16.0)},
        service="SURGERY", los=(3.0, 0.4),
    ),
    Condition(
        "cdiff", "acute",
        (v("00845", "A0472", "C. diff colitis", "Clostridium difficile infection", "C. difficile colitis",
           "CDI"),),
        ("C. diff", "C diff colitis", "Clostridioides difficile infection"),
        prevalence=2.0, secondary=0.8,
        complications=(("aki", 0.2), ("dehydration", 0.3), ("hypokalemia", 0.3)),
        symptoms=("diarrhea", "abdominal cramping"),
        cc=("Diarrhea",),
        hpi=("{pt} recently completed a course of clindamycin and now reports 8-10 watery bowel movements daily.",),
        evidence=("Stool C. difficile PCR positive.", "WBC {wbc}."),
        course=("Stool C. diff PCR positive; treated for {t} with oral vancomycin for a 10 day course.",
                "Contact precautions."),
        meds=("Vancomycin Oral Liquid ___ mg PO Q6H Duration: 8 Days",),
        negations=("C. diff negative", "stool studies negative for {t}"),
        labs={"wbc": (13.0, 24.0)},
        los=(4.0, 0.5), mortality=0.02,
    ),
    Condition(
        "alcohol_withdrawal", "acute",
        (v("29181", "F10239", "alcohol withdrawal", "EtOH withdrawal", weight=3),
         v("2910", "F10231", "delirium tremens", "DTs", "alcohol withdrawal delirium", weight=1,
           evidence=("Visual hallucinations and autonomic instability on hospital day 2.",))),
        ("alcohol withdrawal", "EtOH withdrawal"),
        prevalence=10.0, requires=("alcohol_use",),
        complications=(("hypokalemia", 0.3), ("thrombocytopenia", 0.2)),
        procedures=(("ventilation", 0.05),),
        symptoms=("tremors", "anxiety", "sweating"),
        cc=("Alcohol withdrawal", "Tremors"),
        hpi=("{pt} reports last drink ___ days ago and presents with tremor, diaphoresis and anxiety.",),
        exam=(("neuro", "Coarse tremor of the outstretched hands"),),
        evidence=("CIWA scores up to 22.", "Serum EtOH negative on arrival."),
        course=("Treated for {t} with CIWA-guided diazepam, requiring up to 80 mg in the first 24 hours.",
                "Thiamine, folate and multivitamin given.", "Social work and addiction psychiatry consulted."),
        negations=("no signs of {t}, CIWA <10", "did not withdraw"),
        labs={"hr": (104, 126), "sbp": (152, 178)},
        los=(3.5, 0.5), mortality=0.01, icu=0.15,
    ),
    Condition(
        "resp_failure", "acute",
        (v("51881", "J9601", "acute hypoxic respiratory failure", "AHRF", "hypoxemic respiratory failure"),),
        ("respiratory failure", "acute respiratory failure", "hypoxemia"),
        prevalence=2.0, secondary=0.2, excludes=("copd",),
        procedures=(("ventilation", 0.55), ("bipap", 0.2)),
        course=("[ventilation]Developed {t} requiring intubation on hospital day {hd}; extubated after improvement.",
                "[!ventilation]Required high-flow nasal cannula for {t}, weaned to room air."),
        negations=("no hypoxia", "no supplemental oxygen requirement"),
        labs={"spo2": (80, 88), "rr": (26, 34)},
        los=(6.0, 0.5), mortality=0.12, icu=0.9,
    ),
    Condition(
        "resp_failure_chronic", "acute",
        (v("51884", "J9621", "acute on chronic hypoxic respiratory failure", "acute on chronic respiratory "
           "failure"),),
        ("respiratory failure", "acute on chronic hypercarbic respiratory failure"),
        prevalence=1.0, requires=("copd",),
        procedures=(("ventilation", 0.35), ("bipap", 0.5)),
        course=("[ventilation]Developed {t} requiring BiPAP, then intubation; extubated on hospital day {hd}.",
                "[!ventilation]Developed {t}, managed with BiPAP and nebulizers without intubation."),
        negations=("no hypercarbia",),
        labs={"spo2": (80, 87), "hco3": (34, 40)},
        los=(6.0, 0.5), mortality=0.1, icu=0.9,
    ),
    Condition(
        "encephalopathy", "acute",
        (v("34831", "G9341", "toxic metabolic encephalopathy", "metabolic encephalopathy", "TME"),),
        ("encephalopathy", "altered mental status", "AMS"),
        prevalence=1.0, secondary=1.2, excludes=("cirrhosis",),
        imaging=(("ct_head", "normal", 0.8),),
        course=("{T} in the setting of infection, improved with treatment of the underlying cause.",
                "At mental status baseline by discharge per family."),
        negations=("alert and oriented x3, no {t}", "mentating well"),
        los=(4.0, 0.5), mortality=0.03,
    ),
    Condition(
        "delirium", "acute",
        (v("2930", "F05", "delirium", "hospital-acquired delirium", "acute delirium"),),
        ("delirium", "sundowning"),
        secondary=1.2, risk={"dementia": 4.0},
        course=("Developed {t} overnight, managed with delirium precautions, reorientation and low-dose "
                "quetiapine at night.",),
        negations=("no delirium",),
    ),
    Condition(
        "blood_loss_anemia", "acute",
        (v("2851", "D62", "acute blood loss anemia", "ABLA", "acute posthemorrhagic anemia"),),
        ("acute blood loss anemia", "ABLA"),
        secondary=0.6,
        procedures=(("transfusion", 0.6),),
        evidence=("Hgb nadir {hgb}.",),
        course=("[transfusion]{T} with Hgb nadir {hgb}, transfused {units} units pRBC with appropriate response.",
                "[!transfusion]{T} with Hgb nadir {hgb}, monitored without need for transfusion."),
        negations=("H/H stable, no {t}",),
        labs={"hgb": (6.6, 8.4)},
    ),
    Condition(
        "thrombocytopenia", "acute",
        (v("2875", "D696", "thrombocytopenia", "low platelets"),),
        ("thrombocytopenia",),
        secondary=0.8,
        course=("{T} to {plt}, HIT antibody negative; resolved with treatment of underlying illness.",),
        negations=("platelets normal",),
        labs={"plt": (42, 98)},
    ),
    Condition(
        "hypotension", "acute",
        (v("4589", "I959", "hypotension", "low blood pressure"),),
        ("hypotension",),
        secondary=0.8,
        course=("Transient {t} responsive to IV fluid boluses; antihypertensives held.",),
        negations=("normotensive throughout", "no {t}"),
        labs={"sbp": (76, 90)},
    ),
    Condition(
        "dehydration", "acute",
        (v("27651", "E860", "dehydration", "volume depletion", "hypovolemia"),),
        ("dehydration", "volume depletion"),
        secondary=1.2,
        course=("{T} from poor PO intake, improved with IV fluids.",),
        negations=("appears euvolemic",),
        labs={"bun": (28, 46)},
    ),
    Condition(
        "urinary_retention", "acute",
        (v("78820", "R339", "urinary retention", "acute urinary retention"),),
        ("urinary retention",),
        secondary=0.8, risk={"bph": 4.0},
        procedures=(("foley", 0.7),),
        course=("[foley]{T} with post-void residual of 850 cc, Foley placed; tamsulosin started and voiding trial "
                "passed prior to discharge.", "[!foley]{T} with post-void residual of 450 cc, managed with "
                "straight catheterization as needed and tamsulosin."),
        negations=("voiding without difficulty", "PVR <100 cc"),
    ),
    Condition(
        "malnutrition", "acute",
        (v("2630", "E440", "moderate protein-calorie malnutrition", "moderate malnutrition"),
         v("2639", "E46", "protein-calorie malnutrition", "malnutrition")),
        ("malnutrition", "poor nutritional status"),
        secondary=0.7, risk={"cirrhosis": 3.0, "lung_cancer": 3.0, "dementia": 2.0},
        course=("Nutrition consulted for {t} meeting ASPEN criteria; started on Ensure supplements TID.",),
        negations=("well nourished",),
        labs={"alb": (2.2, 3.0)},
    ),
    Condition(
        "pressure_ulcer", "acute",
        (v("70703", "L89159", "sacral pressure ulcer", "sacral decubitus ulcer", "pressure injury of the sacrum"),),
        ("pressure ulcer", "decubitus ulcer"),
        secondary=0.5, risk={"dementia": 3.0},
        course=("{T} present on admission; wound care nursing followed with frequent repositioning.",),
        negations=("skin intact, no pressure injuries",),
    ),
    Condition(
        "hemiplegia", "acute",
        (v("34290", "G8191", "right hemiparesis", "right-sided hemiplegia"),),
        ("hemiparesis", "hemiplegia"),
        requires=("stroke",),
        course=("Residual {t}; PT/OT recommended acute rehab.",),
    ),
    Condition(
        "dysphagia", "acute",
        (v("78720", "R1310", "dysphagia", "oropharyngeal dysphagia"),),
        ("dysphagia", "swallowing difficulty"),
        secondary=0.2,
        course=("{T} on speech and swallow evaluation; diet modified to nectar-thick liquids.",),
        negations=("passed swallow evaluation",),
    ),
    Condition(
        "aphasia", "acute",
        (v("7843", "R4701", "aphasia", "expressive aphasia"),),
        ("aphasia", "word-finding difficulty"),
        requires=("stroke",),
        course=("{T} improving with speech therapy.",),
    ),
    Condition(
        "seizure", "acute",
        (v("78039", "R569", "seizure", "convulsion", "generalized tonic-clonic seizure", weight=2),
         v("34590", "G40909", "epilepsy", "breakthrough seizure in setting of epilepsy", "seizure disorder",
           weight=1)),
        ("seizure", "seizures"),
        prevalence=2.0, age_related=False,
        imaging=(("ct_head", "normal", 0.85), ("mri_brain", "normal", 0.4)),
        differentials=("syncope", "stroke"),
        symptoms=("shaking", "tongue biting", "confusion"),
        cc=("Seizure",),
        hpi=("{pt} had a witnessed generalized tonic-clonic seizure lasting 2 minutes with tongue biting and "
             "urinary incontinence, followed by postictal confusion.",),
        evidence=("EEG without epileptiform discharges.", "Levetiracetam level subtherapeutic."),
        course=("Admitted after {t}; loaded with levetiracetam. No further events on EEG monitoring.",
                "Counseled not to drive per state law."),
        meds=("LevETIRAcetam 500 mg PO BID",),
        negations=("no seizure activity", "no tongue biting or incontinence to suggest {t}"),
        service="NEUROLOGY", los=(2.5, 0.45), mortality=0.005,
    ),
    Condition(
        "nephrolithiasis", "acute",
        (v("5920", "N200", "nephrolithiasis", "kidney stone", "renal calculus"),),
        ("kidney stone", "nephrolithiasis"),
        prevalence=1.5, age_related=False,
        imaging=(("ct_abd", "stone", 1.0),),
        symptoms=("flank pain", "hematuria"),
        cc=("Flank pain",),
        hpi=("{pt} reports sudden severe colicky left flank pain radiating to the groin with hematuria.",),
        evidence=("CT with a 5 mm left proximal ureteral stone with mild hydronephrosis.",),
        course=("{T} managed with IV fluids, ketorolac and tamsulosin; passed stone on hospital day {hd}.",),
        meds=("Tamsulosin 0.4 mg PO QHS",),
        negations=("no nephrolithiasis or hydronephrosis",),
        service="UROLOGY", los=(1.5, 0.4),
    ),
    Condition(
        "gastroenteritis", "acute",
        (v("5589", "K529", "gastroenteritis", "colitis", "noninfectious gastroenteritis"),),
        ("gastroenteritis", "enteritis"),
        prevalence=2.0, age_related=False,
        complications=(("dehydration", 0.5), ("hypokalemia", 0.3), ("aki", 0.15)),
        symptoms=("nausea", "vomiting", "diarrhea"),
        cc=("Nausea, vomiting, diarrhea",),
        hpi=("{pt} presents with {gap_days} days of nausea, non-bloody emesis and diarrhea, unable to tolerate PO.",),
        evidence=("Stool studies negative.",),
        course=("{T} managed supportively with IV fluids and antiemetics; tolerating a regular diet at discharge.",),
        negations=("no diarrhea",),
        los=(2.0, 0.4),
    ),
    Condition(
        "knee_oa", "acute",
        (v("71536", "M1711", "right knee osteoarthritis", "right knee DJD", side="right"),
         v("71536", "M1712", "left knee osteoarthritis", "left knee DJD", side="left")),
        ("osteoarthritis", "degenerative joint disease", "DJD"),
        prevalence=4.0, elective=True,
        procedures=(("tka", 1.0),),
        complications=(("blood_loss_anemia", 0.15),),
        symptoms=("knee pain",),
        cc=("{Side} knee pain",),
        hpi=("{pt} has long-standing {side} knee pain from osteoarthritis that has failed conservative management "
             "including injections and physical therapy. {He} presents for elective total knee arthroplasty.",),
        evidence=("Preoperative films with tricompartmental joint space narrowing.",),
        course=("Underwent uncomplicated {side} total knee arthroplasty for {t}.", "Weight bearing as tolerated; "
                "PT cleared for home.", "Enoxaparin for DVT prophylaxis."),
        meds=("Enoxaparin Sodium 40 mg SC DAILY Duration: 4 Weeks", "OxyCODONE (Immediate Release) 5 mg PO Q4H:PRN "
              "pain"),
        negations=("no degenerative joint disease",),
        service="ORTHOPAEDICS", los=(2.0, 0.3),
    ),
    Condition(
        "hip_oa", "acute",
        (v("71535", "M1611", "right hip osteoarthritis", side="right"),
         v("71535", "M1612", "left hip osteoarthritis", side="left")),
        ("osteoarthritis of the hip", "hip DJD"),
        prevalence=3.0, elective=True,
        procedures=(("tha", 1.0),),
        symptoms=("hip pain",),
        cc=("{Side} hip pain",),
        hpi=("{pt} has progressive {side} hip pain limiting ambulation, failed conservative therapy, and presents "
             "for elective total hip arthroplasty.",),
        course=("Underwent {side} total hip arthroplasty for {t} without complication.", "Posterior hip precautions "
                "reviewed with PT."),
        meds=("Aspirin 325 mg PO BID Duration: 4 Weeks",),
        negations=("no hip arthritis",),
        service="ORTHOPAEDICS", los=(2.0, 0.3),
    ),
    Condition(
        "cad_surgery", "acute",
        (v("41401", "I2510", "multivessel coronary artery disease", "three vessel CAD"),),
        ("coronary artery disease", "CAD"),
        prevalence=1.2, requires=("cad",), replaces=("cad",), elective=True,
        procedures=(("cabg", 1.0),),
        complications=(("blood_loss_anemia", 0.4),),
        leaves=(("cabg_status", 1.0),),
        symptoms=("exertional chest pain",),
        cc=("Exertional angina",),
        hpi=("{pt} with progressive exertional angina; cardiac catheterization showed three vessel disease and "
             "{he} was referred for surgical revascularization.",),
        evidence=("Cardiac catheterization with left main and three vessel coronary artery disease.",),
        course=("Underwent CABG x2 (LIMA-LAD, SVG-OM) for {t}, uncomplicated; extubated the evening of surgery.",
                "Chest tubes and pacing wires removed per protocol.", "Diuresed to preoperative weight."),
        meds=("Aspirin 81 mg PO DAILY", "Metoprolol Tartrate 25 mg PO BID", "Furosemide 20 mg PO DAILY Duration: "
              "7 Days"),
        instructions=("No lifting more than 10 pounds for 10 weeks. No driving for one month.",),
        service="CARDIOTHORACIC", los=(6.0, 0.3), mortality=0.02, icu=1.0,
    ),
    # Per-admission statuses the generator adds itself (code status, comfort care), never drawn as problems.
    Condition(
        "dnr", "acute",
        (v("V4986", "Z66", "DNR/DNI", "do not resuscitate", "DNR"),),
        ("DNR/DNI", "DNR"),
        course=("Code status was discussed with the patient and family; {he} is {t}.",),
    ),
    Condition(
        "palliative", "acute",
        (v("V667", "Z515", "comfort measures only", "CMO", "palliative care"),),
        ("comfort care", "hospice-level care"),
        course=("After a family meeting, goals of care were transitioned to {t}.",),
    ),
)

CONDITIONS: dict[str, Condition] = {c.key: c for c in (*CHRONIC, *ACUTE)}


# ----------------------------------------------------------------------------------------------------------------------
# Procedures. Options differ by laterality or duration; `leaves` adds a status condition after discharge.
@dataclass(frozen=True)
class ProcedureOption:
    icd9: tuple[str, ...]
    icd10: tuple[str, ...]
    side: str | None = None
    min_days: int = 0  # the stay lasts at least this long (long ventilation)
    weight: float = 1.0


@dataclass(frozen=True)
class Procedure:
    key: str
    options: tuple[ProcedureOption, ...]
    terms: tuple[str, ...]  # how "Major Surgical or Invasive Procedure" lists it
    leaves: tuple[str, ...] = ()
    icu: bool = False


def p(icd9: str, icd10: str, side: str | None = None, min_days: int = 0, weight: float = 1.0) -> ProcedureOption:
    return ProcedureOption(tuple(icd9.split()), tuple(icd10.split()), side, min_days, weight)


PROCEDURES: dict[str, Procedure] = {x.key: x for x in (
    Procedure("hemodialysis", (p("3995", "5A1D70Z"),), ("Hemodialysis", "HD", "Hemodialysis via tunneled line")),
    Procedure("cath", (p("3722 8856", "4A023N7 B2111ZZ"),),
              ("Cardiac catheterization", "Left heart catheterization and coronary angiography")),
    Procedure("cath_pci", (p("3722 8856 0066 3607 0040 0045", "027034Z 4A023N7 B2111ZZ"),),
              ("Cardiac catheterization with drug-eluting stent x1", "Left heart cath, PCI with DES"),
              leaves=("pci_status",)),
    Procedure("ventilation", (p("9604 9671", "0BH17EZ 5A1935Z", weight=2), p("9604 9671", "0BH17EZ 5A1945Z",
                                                                              min_days=3, weight=3),
                              p("9604 9672", "0BH17EZ 5A1955Z", min_days=7, weight=2)),
              ("Endotracheal intubation and mechanical ventilation", "Intubation"), icu=True),
    Procedure("bipap", (p("9390", "5A09357"),), ("BiPAP", "Non-invasive positive pressure ventilation")),
    Procedure("transfusion", (p("9904", "30233N1"),), ("Transfusion of packed red blood cells", "pRBC transfusion")),
    Procedure("egd", (p("4516", "0DB68ZX"), p("4513", "0DJ08ZZ"), p("4443", "0DQ48ZZ", weight=0.5)),
              ("EGD", "Esophagogastroduodenoscopy", "Upper endoscopy")),
    Procedure("colonoscopy", (p("4523", "0DJD8ZZ"),), ("Colonoscopy",)),
    Procedure("banding", (p("4233", "06L34CZ"),), ("EGD with variceal banding", "Esophageal band ligation")),
    Procedure("central_line", (p("3893", "02HV33Z"),), ("Central venous line placement", "Right IJ central line")),
    Procedure("arterial_line", (p("3891", "03HC3DZ"),), ("Arterial line placement",)),
    Procedure("paracentesis", (p("5491", "0W9G3ZZ"),), ("Paracentesis", "Large volume paracentesis",
                                                        "Diagnostic and therapeutic paracentesis")),
    Procedure("thoracentesis", (p("3491", "0W993ZZ", side="right"), p("3491", "0W9B3ZZ", side="left")),
              ("Thoracentesis", "Ultrasound-guided thoracentesis")),
    Procedure("hip_orif", (p("7935", "0QS604Z", side="right"), p("7935", "0QS704Z", side="left")),
              ("Open reduction internal fixation of hip fracture", "ORIF hip")),
    Procedure("hip_hemiarthroplasty", (p("8152", "0SRR0JZ", side="right"), p("8152", "0SRS0JZ", side="left")),
              ("Hip hemiarthroplasty",)),
    Procedure("tha", (p("8151", "0SR90JZ", side="right"), p("8151", "0SRB0JZ", side="left")),
              ("Total hip arthroplasty", "THA")),
    Procedure("tka", (p("8154", "0SRC0JZ", side="right"), p("8154", "0SRD0JZ", side="left")),
              ("Total knee arthroplasty", "TKA", "Total knee replacement")),
    Procedure("lap_chole", (p("5123", "0FT44ZZ"),), ("Laparoscopic cholecystectomy",)),
    Procedure("lap_appy", (p("4701", "0DTJ4ZZ"),), ("Laparoscopic appendectomy",)),
    Procedure("exlap", (p("5459", "0DNW0ZZ"),), ("Exploratory laparotomy with lysis of adhesions",)),
    Procedure("ngt", (p("9607", "0D9670Z"),), ("Nasogastric tube placement",)),
    Procedure("cabg", (p("3612 3615 3961", "021109W 02100Z9 5A1221Z"),),
              ("CABG x2 (LIMA-LAD, SVG-OM)", "Coronary artery bypass grafting x2"), icu=True),
    Procedure("pacemaker_insertion", (p("3783 3772", "0JH606Z 02H63JZ 02HK3JZ"),),
              ("Dual chamber pacemaker placement", "PPM placement"), leaves=("pacemaker",)),
    Procedure("cardioversion", (p("9961", "5A2204Z"),), ("TEE/DC cardioversion", "Electrical cardioversion")),
    Procedure("tpa", (p("9910", "3E03317"),), ("IV tPA administration",)),
    Procedure("peg", (p("4311", "0DH63UZ"),), ("Percutaneous endoscopic gastrostomy (PEG) tube placement",)),
    Procedure("foley", (p("5794", "0T9B70Z"),), ("Foley catheter placement",)),
)}

# ----------------------------------------------------------------------------------------------------------------------
# Radiology. Exams: (names, technique). Findings: (exam, finding) -> (findings sentences, impression sentences,
# what the ordering clinician asked about).
EXAMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "cxr": (("CHEST (PA AND LAT)", "CHEST (PORTABLE AP)", "CHEST (PRE-OP PA & LAT)"),
            ("Chest PA and lateral", "Portable AP chest radiograph", "Frontal and lateral views of the chest")),
    "ct_chest": (("CT CHEST W/CONTRAST", "CT CHEST W/O CONTRAST"),
                 ("Axial helical MDCT images of the chest were obtained with coronal and sagittal reformats.",)),
    "cta_chest": (("CTA CHEST",),
                  ("Helical images of the chest were acquired after intravenous contrast in the pulmonary arterial "
                   "phase, with multiplanar reformats.",)),
    "ct_head": (("CT HEAD W/O CONTRAST",),
                ("Contiguous axial images of the brain were obtained without intravenous contrast; sagittal and "
                 "coronal reformats were reviewed.",)),
    "mri_brain": (("MR HEAD W/O CONTRAST", "MRI BRAIN WITH AND WITHOUT CONTRAST"),
                  ("Multiplanar, multisequence MR images of the brain including diffusion weighted imaging.",)),
    "ct_abd": (("CT ABD & PELVIS WITH CONTRAST", "CT ABD & PELVIS W/O CONTRAST"),
               ("MDCT images of the abdomen and pelvis were obtained after oral and intravenous contrast; "
                "coronal and sagittal reformats were generated.",)),
    "renal_us": (("RENAL U.S.",), ("Grayscale and color Doppler ultrasound images of the kidneys and bladder.",)),
    "ruq_us": (("LIVER OR GALLBLADDER US (SINGLE ORGAN)", "ABDOMEN US (COMPLETE STUDY)"),
               ("Grayscale and color Doppler ultrasound images of the abdomen.",)),
    "le_duplex": (("UNILAT LOWER EXT VEINS", "BILAT LOWER EXT VEINS"),
                  ("Grayscale, color and spectral Doppler evaluation of the deep veins of the lower extremity.",)),
    "hip_xr": (("HIP (UNILAT 2 VIEWS)", "HIP NAILING IN OR W/FILMS & FLUORO"), ("Two views of the hip.",)),
}
FINDINGS: dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...], str]] = {
    ("cxr", "normal"): (
        ("The lungs are clear without focal consolidation, pleural effusion or pneumothorax.",
         "Heart size is normal. Mediastinal and hilar contours are unremarkable.",
         "No pulmonary edema. No acute osseous abnormality."),
        ("No acute cardiopulmonary process.", "No evidence of pneumonia."), "evaluate for pneumonia"),
    ("cxr", "pulmonary_edema"): (
        ("There is moderate pulmonary edema with perihilar haziness and vascular cephalization.",
         "Small bilateral pleural effusions with adjacent atelectasis.", "The heart is moderately enlarged."),
        ("Moderate pulmonary edema with small bilateral effusions.", "Cardiomegaly with findings of volume "
         "overload."), "evaluate for pulmonary edema"),
    ("cxr", "effusions"): (
        ("Moderate right and small left pleural effusions have increased since the prior study.",),
        ("Bilateral pleural effusions, right greater than left.",), "evaluate for effusion"),
    ("cxr", "consolidation"): (
        ("There is a new consolidation in the right lower lobe with air bronchograms.",
         "No pleural effusion or pneumothorax.", "Cardiomediastinal silhouette is within normal limits."),
        ("Right lower lobe consolidation concerning for pneumonia.", "Findings compatible with pneumonia in the "
         "appropriate clinical setting."), "evaluate for pneumonia"),
    ("cxr", "hyperinflation"): (
        ("The lungs are hyperinflated with flattening of the diaphragms, consistent with emphysema.",
         "No focal consolidation. No pleural effusion."),
        ("Hyperinflation consistent with COPD. No acute process.",), "evaluate for infiltrate"),
    ("ct_chest", "consolidation"): (
        ("Dense consolidation of the right lower lobe with surrounding ground-glass opacity.",
         "Mildly enlarged reactive mediastinal lymph nodes."),
        ("Right lower lobe pneumonia.",), "evaluate for pneumonia or abscess"),
    ("cta_chest", "pe"): (
        ("Filling defects are seen in segmental branches of the right lower and left upper lobe pulmonary arteries.",
         "The RV to LV ratio is less than 1.", "No consolidation."),
        ("Bilateral segmental pulmonary emboli without CT evidence of right heart strain.",), "evaluate for PE"),
    ("cta_chest", "normal"): (
        ("The pulmonary arteries opacify well without filling defect.", "Lungs are clear."),
        ("No pulmonary embolism.",), "evaluate for PE"),
    ("ct_head", "normal"): (
        ("There is no evidence of hemorrhage, edema, mass effect or acute large territory infarction.",
         "The ventricles and sulci are normal in size and configuration for age.",
         "Mild periventricular white matter hypodensities likely reflect chronic small vessel disease."),
        ("No acute intracranial process.", "No intracranial hemorrhage."), "evaluate for intracranial hemorrhage"),
    ("ct_head", "infarct"): (
        ("There is an area of loss of gray-white differentiation in the left frontal lobe in the MCA territory.",
         "No intracranial hemorrhage. No midline shift."),
        ("Evolving left MCA territory infarct without hemorrhagic conversion.",), "evaluate for stroke"),
    ("mri_brain", "infarct"): (
        ("There is restricted diffusion in the left corona radiata and frontal cortex, consistent with acute "
         "infarction.", "No susceptibility artifact to suggest hemorrhage."),
        ("Acute left MCA territory infarction.",), "evaluate for acute infarct"),
    ("mri_brain", "normal"): (
        ("No restricted diffusion to suggest acute infarction.", "No mass or hemorrhage."),
        ("No acute infarct.",), "evaluate for acute infarct"),
    ("ct_abd", "pyelonephritis"): (
        ("The right kidney is enlarged with a striated nephrogram and perinephric stranding.",
         "No hydronephrosis or renal calculus."),
        ("Findings consistent with right pyelonephritis. No abscess.",), "evaluate for pyelonephritis"),
    ("ct_abd", "pancreatitis"): (
        ("The pancreas is edematous with peripancreatic fat stranding and a small amount of free fluid.",
         "The pancreas enhances homogeneously without necrosis."),
        ("Acute interstitial edematous pancreatitis without necrosis.",), "evaluate for pancreatitis"),
    ("ct_abd", "appendicitis"): (
        ("The appendix is dilated to 12 mm with wall thickening and periappendiceal fat stranding.",
         "No free air or drainable fluid collection."),
        ("Acute uncomplicated appendicitis.",), "evaluate for appendicitis"),
    ("ct_abd", "sbo"): (
        ("Multiple dilated fluid-filled loops of small bowel with a transition point in the right lower quadrant.",
         "Distal small bowel and colon are decompressed. No pneumatosis or free air."),
        ("Small bowel obstruction with a transition point in the right lower quadrant, likely adhesive.",),
        "evaluate for obstruction"),
    ("ct_abd", "diverticulitis"): (
        ("Sigmoid diverticulosis with wall thickening and pericolonic fat stranding.", "No abscess or free air."),
        ("Acute uncomplicated sigmoid diverticulitis.",), "evaluate for diverticulitis"),
    ("ct_abd", "stone"): (
        ("A 5 mm calculus in the proximal left ureter with mild upstream hydroureteronephrosis.",),
        ("Obstructing 5 mm left proximal ureteral stone.",), "evaluate for nephrolithiasis"),
    ("ct_abd", "normal"): (
        ("The liver, gallbladder, pancreas, spleen and adrenal glands are unremarkable.",
         "No bowel obstruction or free fluid.", "No hydronephrosis."),
        ("No acute abdominopelvic process.",), "evaluate for acute process"),
    ("renal_us", "normal"): (
        ("Both kidneys are normal in size without hydronephrosis, stones or masses.", "The bladder is unremarkable."),
        ("No hydronephrosis.",), "evaluate for obstruction"),
    ("ruq_us", "cirrhosis"): (
        ("The liver is coarsened and nodular in contour. Moderate ascites is present.",
         "Splenomegaly measuring 15 cm. Main portal vein is patent with hepatopetal flow."),
        ("Cirrhotic liver with moderate ascites and splenomegaly. Patent portal vein.",),
        "evaluate for ascites and portal vein thrombosis"),
    ("ruq_us", "cholecystitis"): (
        ("Gallbladder contains multiple stones with wall thickening to 6 mm and pericholecystic fluid.",
         "Sonographic Murphy's sign is positive. The common bile duct measures 4 mm."),
        ("Findings consistent with acute calculous cholecystitis.",), "evaluate for cholecystitis"),
    ("ruq_us", "normal"): (
        ("The liver is normal in echotexture. The gallbladder is normal without stones.",
         "The common bile duct is not dilated."),
        ("Normal right upper quadrant ultrasound.", "No cholelithiasis."), "evaluate for cholelithiasis"),
    ("le_duplex", "dvt"): (
        ("There is noncompressible occlusive thrombus within the common femoral and popliteal veins.",
         "No flow is seen on color Doppler within the thrombosed segments."),
        ("Occlusive deep vein thrombosis of the femoral and popliteal veins.",), "evaluate for DVT"),
    ("le_duplex", "normal"): (
        ("Normal compressibility, flow and augmentation of the common femoral, femoral and popliteal veins.",),
        ("No evidence of deep venous thrombosis.",), "evaluate for DVT"),
    ("hip_xr", "fracture"): (
        ("There is a displaced subcapital fracture of the femoral neck with varus angulation.",
         "Degenerative changes of the hip joint. No dislocation."),
        ("Displaced femoral neck fracture.",), "evaluate for fracture"),
}
# Incidental sentences a radiologist may add to any study of that kind ({n} is a random measurement).
EXAM_EXTRAS: dict[str, tuple[str, ...]] = {
    "cxr": ("No pneumothorax.", "Degenerative changes of the thoracic spine.", "Atherosclerotic calcification of the "
            "aortic knob.", "Low lung volumes accentuate the bronchovascular markings.", "Costophrenic angles are "
            "sharp.", "Surgical clips project over the right upper quadrant.", "Osseous structures are unremarkable.",
            "Mild elevation of the right hemidiaphragm."),
    "ct_chest": ("Scattered calcified granulomas.", "A {n} mm nodule in the right middle lobe is likely benign.",
                 "Coronary artery calcifications.", "No pathologically enlarged axillary lymph nodes."),
    "cta_chest": ("The thoracic aorta is normal in caliber.", "Mild bibasilar atelectasis.",
                  "A {n} mm subpleural nodule is noted."),
    "ct_head": ("The paranasal sinuses and mastoid air cells are clear.", "Mild age-appropriate global volume loss.",
                "Calcification of the cavernous carotid arteries.", "The orbits are unremarkable."),
    "mri_brain": ("Scattered T2 hyperintensities in the periventricular white matter.", "Normal flow voids.",
                  "Mild mucosal thickening of the maxillary sinuses."),
    "ct_abd": ("A {n} mm hypodensity in the liver is too small to characterize.", "Atherosclerotic calcifications of "
               "the abdominal aorta.", "Colonic diverticulosis without diverticulitis.", "Degenerative changes of "
               "the lumbar spine.", "A simple renal cyst measures {n} mm."),
    "renal_us": ("The right kidney measures {n} cm.", "The left kidney measures {n} cm.", "The bladder is "
                 "moderately distended.", "A {n} mm simple cyst arises from the lower pole."),
    "ruq_us": ("The pancreas is partially obscured by bowel gas.", "The spleen measures {n} cm.",
               "No intrahepatic biliary dilatation."),
    "le_duplex": ("Normal color flow and waveforms in the posterior tibial and peroneal veins.",
                  "Subcutaneous edema of the calf.", "A {n} cm Baker's cyst is seen in the popliteal fossa."),
    "hip_xr": ("Osteopenia.", "Vascular calcifications.", "The pubic symphysis and sacroiliac joints are intact."),
}
SERIAL_CHANGES = ("Compared to the prior study, there is no significant interval change.",
                  "Compared to the prior radiograph, there is interval improvement.",
                  "Since the prior exam, findings are slightly worse.", "Stable appearance of the chest.",
                  "Interval removal of the enteric tube.", "Lung volumes are lower than on the prior study.")

# Chronic conditions that leave a mark on a study of any indication: (exam, condition[:min stage]) -> (sentence, the
# start of a normal-study sentence it replaces, or None).
IMAGING_BACKGROUND: dict[tuple[str, str], tuple[str, str | None]] = {
    ("cxr", "chf"): ("Mild cardiomegaly is unchanged.", "Heart size is normal"),
    ("cxr", "copd"): ("The lungs are hyperinflated.", None),
    ("cxr", "pacemaker"): ("A left chest wall dual-chamber pacemaker is in place with leads in the right atrium and "
                           "ventricle.", None),
    ("cxr", "cabg_status"): ("Median sternotomy wires and mediastinal clips are intact.", None),
    ("cxr", "ckd:2"): ("A right internal jugular dialysis catheter terminates in the right atrium.", None),
    ("renal_us", "ckd"): ("Both kidneys are small and echogenic, consistent with medical renal disease, without "
                          "hydronephrosis.", "Both kidneys are normal in size"),
    ("ruq_us", "cirrhosis"): ("The liver is coarsened and nodular in contour.", "The liver is normal in echotexture"),
    ("ct_head", "hx_stroke"): ("An old lacunar infarct is again seen in the right basal ganglia.", None),
    ("ct_abd", "cirrhosis"): ("The liver is nodular in contour with splenomegaly.", "The liver, gallbladder"),
}

# ----------------------------------------------------------------------------------------------------------------------
# Text that is not tied to one condition.
PMH_FILLERS = ("s/p cholecystectomy (remote)", "cataracts s/p bilateral surgery", "seasonal allergies",
               "s/p appendectomy as a child", "hemorrhoids", "lumbar spinal stenosis", "s/p tonsillectomy",
               "bilateral hearing loss", "chronic low back pain", "s/p hysterectomy", "s/p inguinal hernia repair",
               "plantar fasciitis", "remote kidney stones", "glaucoma", "restless leg syndrome", "migraines")
ALLERGIES = ("No Known Allergies / Adverse Drug Reactions",) * 6 + (
    "Penicillins", "Sulfa (Sulfonamide Antibiotics)", "Codeine", "Penicillins / Sulfa (Sulfonamide Antibiotics)",
    "lisinopril", "Iodinated Contrast Media - IV Dye", "morphine", "Patient recorded as having No Known Allergies "
    "to Drugs", "Latex", "Statins-Hmg-Coa Reductase Inhibitors")
ROS_SYMPTOMS = ("fevers", "chills", "night sweats", "headache", "vision changes", "chest pain", "palpitations",
                "shortness of breath", "cough", "abdominal pain", "nausea", "vomiting", "diarrhea",
                "constipation", "black stools", "blood in stool", "dysuria", "hematuria", "leg swelling",
                "rash", "focal weakness", "numbness")
FAMILY_HISTORY = ("Mother with {rel_a}. Father with {rel_b}.", "Father died of {rel_b} in his ___. Mother with "
                  "{rel_a}.", "Noncontributory.", "No family history of {rel_a}.", "Brother with {rel_a}; "
                  "otherwise noncontributory.", "Mother - {rel_a}, deceased. Father - {rel_b}. Sister - healthy.")
FAMILY_CONDITIONS = ("diabetes", "breast cancer", "colon cancer", "coronary artery disease", "early MI",
                     "stroke", "hypertension", "lung cancer", "Alzheimer's dementia", "kidney disease")
