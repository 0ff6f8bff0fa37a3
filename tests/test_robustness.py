"""`cmbert audit robustness` (finetune/robustness): each perturbation operator on crafted notes (exact texts and change
records; already-negated findings left alone; numeric within stays in its band and across crosses; skips counted),
LDFR / PCA / classifier on arrays with a known answer, and one end-to-end run on a tiny synthetic MIMIC tree with a
tiny encoder and ICD head, checking that note text stays under OUT/perturbed."""

from __future__ import annotations

import itertools
import json
import random
import re

import numpy as np
import pytest
from conftest import save_tiny_encoder

from cmbert.finetune.robustness.audit import (
    OTHER,
    bootstrap_ci,
    displacement,
    fit_latent_classifier,
    jaccard,
    latent_flips,
    merge_rare_classes,
    paired_difference,
)
from cmbert.finetune.robustness.perturb import (
    MASK,
    OPERATORS,
    QUANTITIES,
    band_of,
    clean_term,
    concept_surfaces,
    find_findings,
    find_quantities,
    perturb,
)

QUANTITY = {q.name: q for q in QUANTITIES}


def only_change(result):
    assert result.skip is None and len(result.changes) == 1
    return result.changes[0]


# ---------------------------------------------------------------------------------------------------------- lexicon


def test_clean_term_keeps_one_name_of_one_concept():
    assert clean_term("Fever, unspecified") == "fever"
    assert clean_term("Pyrexia NOS") == "pyrexia"
    assert clean_term("Essential (primary) hypertension") == "essential hypertension"
    assert clean_term("Unspecified atrial fibrillation") == "atrial fibrillation"
    assert clean_term("Seizure(s) (convulsive) NOS") == "seizure"
    assert clean_term("Type 2 diabetes mellitus without complications") == "type 2 diabetes mellitus"
    for joined in ("Syncope and collapse", "Other fatigue", "Fever with chills", "Hypo-osmolality and hyponatremia",
                   "Cellulitis and abscess of unspecified sites"):
        assert clean_term(joined) is None, joined


def test_synonyms_come_from_the_installed_ontologies():
    names = {s.text: s.source for s in concept_surfaces()["fever"]}
    assert names == {"fever": "curated", "pyrexia": "icd10cm:R50.9"}  # "hyperpyrexia" excluded: narrower
    kidney = {s.text: s.source for s in concept_surfaces()["hyperkalemia"]}
    assert kidney["hyperpotassemia"] == "icd9cm:2767"
    heart = {s.text: s.source for s in concept_surfaces()["heart failure"]}
    assert heart["CHF"] == "abbreviation" and heart["congestive heart failure"] == "icd10cm:I50.9"


def test_finding_contexts():
    text = ("She denies chest pain, nausea and vomiting but reports cough. No fevers. Possible pneumonia.\n"
            "Chest pain free on HD 2. DVT prophylaxis with heparin. Sepsis was ruled out.\n"
            "Family History:\nMother with hypertension.\n \nHTN, well controlled.")
    found = [(text[m.start:m.end], m.context) for m in find_findings(text)]
    assert found == [("chest pain", "negated"), ("nausea", "negated"), ("vomiting", "negated"),
                     ("cough", "affirmed"), ("fevers", "negated"), ("pneumonia", "uncertain"),
                     ("Chest pain", "negated"), ("DVT", "uncertain"), ("Sepsis", "negated"),
                     ("hypertension", "family"), ("HTN", "affirmed")]


def test_abbreviations_match_in_their_case_only():
    assert [m.concept for m in find_findings("h/o MI and CHF")] == ["myocardial infarction", "heart failure"]
    assert find_findings("mi casa, chf") == []
    assert find_findings("MICROBIOLOGY: no growth") == []


# ------------------------------------------------------------------------------------------------------------- mask


def test_mask_replaces_an_affirmed_finding_with_the_deid_placeholder():
    result = perturb("Patient reports fevers since Monday.", "mask", seed=0)
    assert result.text == f"Patient reports {MASK} since Monday."
    assert only_change(result).as_dict() == {"operator": "mask", "start": 16, "end": 22, "original": "fevers",
                                             "replacement": "___", "finding": "fever", "context": "affirmed"}


def test_mask_and_negate_edit_the_same_mention():
    text = "PMH: HTN, CKD, CAD and COPD. Admitted with pneumonia."
    for seed in range(5):
        masked, negated = perturb(text, "mask", seed), perturb(text, "negate", seed)
        assert masked.changes[0].end == negated.changes[0].end
        assert masked.changes[0].finding == negated.changes[0].finding


def test_notes_with_nothing_to_perturb_are_counted_skips():
    assert perturb("Seen in clinic, doing well.", "mask").skip == "no_finding"
    assert perturb("Denies fever, chills or cough.", "mask").skip == "no_affirmed_finding"
    assert perturb("Family History:\nFather with COPD.\n", "negate").skip == "no_finding"
    assert perturb("Rash on both arms.", "synonym").skip == "no_synonym"
    assert perturb("Rash on both arms.", "numeric_within").skip == "no_quantity"
    assert perturb("   \n ", "negate").skip == "empty_text"
    for op in OPERATORS:
        assert perturb("Seen in clinic.", op).text is None


# ----------------------------------------------------------------------------------------------------------- negate


@pytest.mark.parametrize("text, expected", [
    ("She reports fever.", "She denies fever."),
    ("Pt c/o chest pain.", "Pt denies chest pain."),
    ("He complained of dysuria.", "He denied dysuria."),
    ("History of HTN.", "No history of HTN."),
    ("The patient has a fever today.", "The patient has no fever today."),
    ("Discharge Diagnosis:\nHypertension\n", "Discharge Diagnosis:\nNo hypertension\n"),
    ("- Hyperkalemia: repeat labs", "- No hyperkalemia: repeat labs"),
    ("Admitted with pneumonia and sepsis.", None),  # two affirmed mentions: checked below
    ("Denies chest pain but reports cough.", "Denies chest pain but denies cough."),
    ("Reports fever, cough.", None),
])
def test_negate(text, expected):
    result = perturb(text, "negate", seed=0)
    change = only_change(result)
    assert change.context == "affirmed" and change.operator == "negate"
    assert result.text == text[:change.start] + change.replacement + text[change.end:]
    if expected is not None:
        assert result.text == expected
    else:  # a list after the verb: "no" goes before the one mention, the verb stays
        assert change.replacement == "no " + change.original
    negated = {(m.start, m.end) for m in find_findings(result.text) if m.context == "negated"}
    mention_end = change.start + len(change.replacement)
    assert any(end == mention_end for _, end in negated)  # the edited mention now reads as negated


def test_negate_never_negates_a_negated_finding():
    text = "Denies chest pain. No fevers. Without signs of DVT. (-) cough, nausea. CTA negative for PE, but has CHF."
    for seed in range(10):
        change = only_change(perturb(text, "negate", seed))
        assert change.original == "CHF" and change.replacement == "no CHF"
    assert perturb("Denies chest pain. No fevers. (-) cough, nausea.", "negate").skip == "no_affirmed_finding"


# ---------------------------------------------------------------------------------------------------------- synonym


def test_synonym_from_icd_10_cm_keeps_capitalisation():
    result = perturb("Fever on admission, treated with acetaminophen.", "synonym", seed=0)
    assert result.text == "Pyrexia on admission, treated with acetaminophen."
    assert only_change(result).as_dict() == {"operator": "synonym", "start": 0, "end": 5, "original": "Fever",
                                             "replacement": "Pyrexia", "finding": "fever", "context": "affirmed",
                                             "source": "icd10cm:R50.9"}


def test_synonym_abbreviation_and_determinism():
    text = "Patient with HTN, on lisinopril."
    seen = set()
    for seed in range(20):
        result = perturb(text, "synonym", seed)
        change = only_change(result)
        assert change.original == "HTN" and change.replacement != "HTN"
        assert result.text == f"Patient with {change.replacement}, on lisinopril."
        assert result == perturb(text, "synonym", seed)  # deterministic given the seed
        seen.add((change.replacement, change.source))
    assert seen == {("hypertension", "curated"), ("essential hypertension", "icd10cm:I10"),
                    ("high blood pressure", "curated")}
    change = only_change(perturb("Admitted for hypertensive urgency; HYPERTENSION noted", "synonym", 1))
    assert change.replacement.isupper() or change.replacement == "HTN"


# ---------------------------------------------------------------------------------------------------------- numeric


def test_find_quantities_reads_vitals_and_blood_lab_lines_only():
    text = ("VS: T 99.9 BP 160/84 HR 75 RR 17 O2 95% RA\n"
            "___ 02:37PM BLOOD WBC-14.5* Hgb-9.2* Plt Ct-203\n"
            "___ 02:37PM URINE RBC-20* WBC-18*\n"
            "KCl 20 mEq PO; Vitamin K 5 mg; HR 84-109; SBPs in the 150s; T4 fracture")
    found = [(q.quantity, q.value, q.flag) for q in find_quantities(text)]
    assert found == [("temperature_f", 99.9, None), ("systolic_bp", 160, None), ("diastolic_bp", 84, None),
                     ("heart_rate", 75, None), ("respiratory_rate", 17, None), ("spo2", 95, None),
                     ("wbc", 14.5, "*"), ("hemoglobin", 9.2, "*"), ("platelets", 203, "")]
    real_style = "Vitals: T: 98.2 P: 88 BP: 120/80 R: 18 O2: 97%RA. Plan: R 4th finger splint, P 2 lateral view."
    assert [(q.quantity, q.value) for q in find_quantities(real_style)] == [
        ("temperature_f", 98.2), ("heart_rate", 88), ("systolic_bp", 120), ("diastolic_bp", 80),
        ("respiratory_rate", 18), ("spo2", 97)]


@pytest.mark.parametrize("text, quantity, value", [
    ("HR 96 on arrival.", "heart_rate", 96),
    ("Tmax 99.8 overnight.", "temperature_f", 99.8),
    ("SpO2 94% on RA.", "spo2", 94),
    ("___ 06:00AM BLOOD Glucose-185*", "glucose", 185),
    ("Creatinine 1.0 at discharge.", "creatinine", 1.0),
    ("Labs: Na 133, repeat in AM.", "sodium", 133),
])
def test_numeric_within_stays_on_its_side_and_across_crosses(text, quantity, value):
    q = QUANTITY[quantity]
    for seed in range(8):
        within = only_change(perturb(text, "numeric_within", seed))
        across = only_change(perturb(text, "numeric_across", seed))
        assert (within.start, within.quantity, within.value_before) == (across.start, quantity, value)
        assert within.threshold == across.threshold and across.threshold in q.thresholds
        assert not within.crossed and band_of(q, within.value_after) == band_of(q, value) != band_of(
            q, across.value_after)
        assert across.crossed and (value - across.threshold) * (across.value_after - across.threshold) < 0
        assert within.value_after != value
        # the same size of change where the band allows it
        assert abs(within.value_after - value) <= abs(across.value_after - value) + 1e-9
        for change in (within, across):
            decimals = len(change.original.rstrip("*").partition(".")[2])
            number = f"{change.value_after:.{decimals}f}"
            assert change.replacement.rstrip("*") == number
            assert perturb(text, change.operator, seed).text == text[:change.start] + change.replacement + \
                text[change.end:]
            assert change.band_before == q.bands[band_of(q, value)]
            assert change.band_after == q.bands[band_of(q, change.value_after)]


def test_numeric_pair_moves_by_the_same_amount():
    within = only_change(perturb("HR 96 on arrival.", "numeric_within", 0))
    across = only_change(perturb("HR 96 on arrival.", "numeric_across", 0))
    assert across.value_after > 100 and within.value_after == 96 - (across.value_after - 96)


def test_numeric_keeps_mimic_lab_flags_right():
    text = "___ 08:00AM BLOOD K-5.3*"  # potassium reference 3.5-5.1: flagged; threshold 5.5
    assert perturb(text, "numeric_within", 0).text == "___ 08:00AM BLOOD K-5.2*"  # the only room left in band
    across = only_change(perturb(text, "numeric_across", 0))
    assert across.value_after > 5.5 and across.replacement.endswith("*")
    text = "___ 08:00AM BLOOD Creat-1.3*"
    across = only_change(perturb(text, "numeric_across", 0))
    assert across.value_after < 1.2 and re.fullmatch(r"\d\.\d", across.replacement)  # back in range: no flag
    within = only_change(perturb(text, "numeric_within", 0))
    assert within.value_after > 1.2 and within.replacement.endswith("*")


def test_numeric_skips_values_it_cannot_move_meaningfully():
    assert perturb("HR 100 on arrival.", "numeric_across").skip == "no_value_near_threshold"  # on the threshold
    assert perturb("___ BLOOD Na-165*", "numeric_across").skip == "no_value_near_threshold"  # far from 145
    assert perturb("___ URINE WBC-20*", "numeric_within").skip == "no_quantity"
    assert perturb("Potassium chloride 20 mEq, vitamin K 5 mg", "numeric_within").skip == "no_quantity"


def test_edits_change_several_spans():
    text = "She reports fever. He has cough. PMH of HTN and CKD."
    result = perturb(text, "mask", seed=0, edits=3)
    assert len(result.changes) == 3 and result.text.count(MASK) == 3
    assert perturb(text, "mask", seed=0, edits=3) == result


# ------------------------------------------------------------------------------------------------ LDFR on arrays


def two_clusters(n_per_class: int = 20, dim: int = 8, seed: int = 0):
    """Class A at x0 = +3, class B at x0 = -3, small noise elsewhere: any sensible boundary is x0 = 0."""
    rng = np.random.default_rng(seed)
    clean = rng.normal(0, 0.3, size=(2 * n_per_class, dim))
    clean[:n_per_class, 0] += 3
    clean[n_per_class:, 0] -= 3
    labels = ["A"] * n_per_class + ["B"] * n_per_class
    return clean, labels


@pytest.mark.parametrize("classifier", ["logistic", "centroid"])
def test_ldfr_known_answer(classifier):
    clean, labels = two_clusters()
    model = fit_latent_classifier(clean, labels, components=2, classifier=classifier)
    assert [model.classes[c] for c in model.predict(clean)] == labels
    # op1 changed 25 notes (rows 0..24): the first 7 (class A) are moved across the boundary, the rest nudged.
    rows = np.arange(25)
    moved = clean[rows].copy()
    moved[:7, 0] = -3.0
    moved[7:, 1:] += 0.05
    # op2 changed 10 notes and moved none across; op3 changed nothing (all skipped).
    flips = latent_flips(model, clean, {"op1": (rows, moved), "op2": (np.arange(10), clean[:10] + 0.01),
                                        "op3": (np.zeros(0, dtype=np.int64), np.zeros((0, 8)))}, bootstrap=200)
    assert flips["op1"]["ldfr"] == pytest.approx(7 / 25) and flips["op1"]["flips"] == 7
    low, high = flips["op1"]["ldfr_ci95"]
    assert low <= 7 / 25 <= high and 0 < low and high < 1
    assert flips["op2"]["ldfr"] == 0.0 and flips["op2"]["ldfr_ci95"] == [0.0, 0.0]
    assert flips["op3"]["ldfr"] is None and flips["op3"]["n"] == 0
    assert flips["op1"]["per_note"]["flipped"].tolist() == [True] * 7 + [False] * 18


def test_pca_is_fit_on_clean_embeddings_only():
    clean, labels = two_clusters()
    model = fit_latent_classifier(clean, labels, components=3)
    assert model.pca.n_components_ == 3
    big = fit_latent_classifier(clean, labels, components=500)  # capped by n - 1 and the dimension
    assert big.pca.n_components_ == 8
    before = model.pca.components_.copy()
    latent_flips(model, clean, {"op": (np.arange(5), clean[:5] * 100)})
    assert np.array_equal(model.pca.components_, before)


def test_paired_difference_displacement_bootstrap_jaccard():
    a = {"per_note": {"rows": np.array([0, 1, 2, 3]), "flipped": np.array([True, True, False, False])}}
    b = {"per_note": {"rows": np.array([1, 2, 3, 4]), "flipped": np.array([False, False, False, True])}}
    diff = paired_difference(a, b, bootstrap=100, seed=0)
    assert diff["n"] == 3 and diff["difference"] == pytest.approx(1 / 3)
    cosine, l2 = displacement(np.array([[1.0, 0.0], [2.0, 0.0]]), np.array([[0.0, 1.0], [2.0, 0.0]]))
    assert cosine.tolist() == pytest.approx([1.0, 0.0]) and l2.tolist() == pytest.approx([2 ** 0.5, 0.0])
    assert bootstrap_ci(np.ones(10), 50) == [1.0, 1.0] and bootstrap_ci(np.zeros(0)) is None
    assert jaccard(set(), set()) == 1.0 and jaccard({"A"}, {"A", "B"}) == 0.5


def test_rare_classes_merge_into_other():
    merged, info = merge_rare_classes(["CIR"] * 5 + ["RSP"] * 2 + ["DIG"] * 2 + ["GEN"], min_notes=3)
    assert merged == ["CIR"] * 5 + [OTHER] * 5
    assert info == {"merged_into_other": {"DIG": 2, "GEN": 1, "RSP": 2}, "dropped_small_other": 0}
    merged, info = merge_rare_classes(["CIR"] * 5 + ["RSP"] * 4 + ["GEN"], min_notes=3)
    assert merged == ["CIR"] * 5 + ["RSP"] * 4 + [None] and info["dropped_small_other"] == 1


def test_too_few_classes_is_a_clear_error():
    clean, _ = two_clusters()
    with pytest.raises(ValueError, match="at least 2 gold classes"):
        fit_latent_classifier(clean, ["A"] * len(clean))


# -------------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 40-patient synthetic MIMIC tree, its ICD-10 dataset, a tiny encoder with a tokenizer trained on the notes,
    and an untrained ICD head on that encoder (priors near 0.5, so its code sets move)."""
    from cmbert.core.label_attention import IcdMeta, IcdModel
    from cmbert.core.tokenizer_files import save_tokenizer
    from cmbert.data.readers import read_mimic_notes
    from cmbert.data.synth import synthesize_mimic
    from cmbert.finetune.icd.data import prepare_icd_dataset
    from cmbert.pretrain.tokenizer import train_tokenizer

    work = tmp_path_factory.mktemp("robustness")
    synthesize_mimic(work / "mimic", patients=60, seed=5)
    prepare_icd_dataset(work / "mimic", work / "data", version=10, min_count=3, test_size=0.4, val_size=0.1,
                        verbose=False)
    texts = [n.text for n in itertools.islice(read_mimic_notes(work / "mimic/note/discharge.csv.gz"), 40)]
    save_tokenizer(train_tokenizer(texts, vocab_size=512), work / "tokenizer")
    save_tiny_encoder(work / "encoder", work / "tokenizer")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(work / "tokenizer")
    codes = json.loads((work / "data/labels.json").read_text())["codes"][:4]
    meta = IcdMeta(head="laat", codes=[c["code"] for c in codes], titles=[c["title"] for c in codes],
                   kinds=["diagnosis"] * 4, train_counts=[50] * 4, icd_version=10, max_length=128, max_chunks=4,
                   attention_dim=16)
    IcdModel.from_encoder(work / "encoder", meta, n_train=100, tokenizer=tokenizer).save(work / "icd", tokenizer)
    return work


@pytest.mark.usefixtures("one_thread")
def test_cmbert_audit_robustness_end_to_end(tiny_run, capsys):
    from cmbert.cli import main

    out = tiny_run / "audit"
    main(["audit", "robustness", "--mimic", str(tiny_run / "mimic"), "--data", str(tiny_run / "data"),
          "--model", str(tiny_run / "encoder"), "--icd-model", str(tiny_run / "icd"), "--out", str(out),
          "--max-notes", "14", "--min-class-notes", "3", "--components", "4", "--max-tokens", "384",
          "--bootstrap", "50", "--cache", str(tiny_run / "cache"), "--device", "cpu"])
    captured = capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    assert (out / "robustness.png").stat().st_size > 10_000
    assert set(report["operators"]) == set(OPERATORS)
    assert report["held_out"]["source"] == "icd-data" and report["held_out"]["notes_used"] >= 10
    assert report["latent"]["components"] == 4 and report["latent"]["clean_cv"]["folds"] >= 2
    assert report["icd_model"]["threshold"] == 0.5
    for op, entry in report["operators"].items():
        assert entry["notes_changed"] + sum(entry["skipped"].values()) == report["held_out"]["notes_used"]
        assert {"ldfr", "ldfr_ci95", "cosine_distance_mean", "relative_l2_mean", "surface"} <= set(entry), op
        if entry["notes_changed"]:
            assert 0 <= entry["ldfr"] <= 1 and 0 <= entry["surface"]["jaccard_mean"] <= 1
    assert report["numeric_across_minus_within"]["n"] == report["operators"]["numeric_across"]["notes_changed"]

    # The perturbed notes are on disk under OUT/perturbed, one line per note and operator, and nowhere else.
    snippets = set()
    for op in OPERATORS:
        lines = [json.loads(line) for line in (out / "perturbed" / f"{op}.jsonl").read_text().splitlines()]
        assert len(lines) == report["held_out"]["notes_used"]
        for record in lines:
            if "text" in record:
                change = record["changes"][0]
                assert record["text"][change["start"]:change["start"] + len(change["replacement"])] == \
                    change["replacement"]
                snippets |= {line.strip() for line in record["text"].splitlines() if len(line.strip()) > 25}
    assert len(snippets) > 50
    shown = captured.out + captured.err + (out / "report.json").read_text() + (out / "per_note.csv").read_text()
    assert not [s for s in snippets if s in shown]
    assert "mask" in captured.out and "LDFR" in captured.out

    # A second run into the same folder needs --overwrite; a wrong folder is refused.
    with pytest.raises(SystemExit):
        main(["audit", "robustness", "--mimic", str(tiny_run / "mimic"), "--model", str(tiny_run / "encoder"),
              "--out", str(out)])
    assert "already there" in capsys.readouterr().err


def test_own_split_and_clear_errors(tiny_run, capsys):
    from cmbert.finetune.robustness.audit import held_out_notes

    notes, info = held_out_notes(tiny_run / "mimic", None, ["test"], seed=0, max_notes=None, test_size=0.3,
                                 log=lambda message: None)
    assert info["source"] == "own-split" and info["notes_sampled"] == len(notes) > 0
    assert all(n.gold and n.text for n in notes)
    again, _ = held_out_notes(tiny_run / "mimic", None, ["test"], seed=0, max_notes=5, test_size=0.3,
                              log=lambda message: None)
    assert [n.note_id for n in again] == [n.note_id for n in held_out_notes(
        tiny_run / "mimic", None, ["test"], seed=0, max_notes=5, test_size=0.3, log=lambda m: None)[0]]

    from cmbert.cli import main

    with pytest.raises(SystemExit):
        main(["audit", "robustness", "--mimic", str(tiny_run / "mimic"), "--model", str(tiny_run / "encoder"),
              "--out", str(tiny_run / "few"), "--max-notes", "4", "--device", "cpu"])
    assert "at least 10 held-out notes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["audit", "robustness", "--mimic", str(tiny_run / "data"), "--model", str(tiny_run / "encoder"),
              "--out", str(tiny_run / "bad")])
    assert "diagnoses_icd.csv.gz: no such file" in capsys.readouterr().err
    assert not (tiny_run / "few").exists() and not (tiny_run / "bad").exists()


def test_operators_on_synthetic_notes_are_deterministic_and_count_every_note(tiny_run):
    from cmbert.data.readers import read_mimic_notes

    texts = [n.text for n in itertools.islice(read_mimic_notes(tiny_run / "mimic/note/discharge.csv.gz"), 30)]
    rng = random.Random(0)
    for text in rng.sample(texts, 10):
        for op in OPERATORS:
            result = perturb(text, op, seed=3)
            assert result == perturb(text, op, seed=3)
            assert (result.text is None) == (result.skip is not None)
            if result.text is not None:
                assert result.text != text
