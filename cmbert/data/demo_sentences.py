"""Generated clinical-style sentences for the generic recipes' demos and tests (made up here; no patient data).

    cmbert data sentences --out runs/generic-data --examples 300
    -> runs/generic-data/classify/{train,validation,test}.csv    text, label (body system of the presenting
                                                                  problem), systems ("|"-joined, every affirmed one)
       runs/generic-data/tokens/{train,validation,test}.jsonl     tokens, tags (IOB2: PROBLEM, DRUG, TEST)
       runs/generic-data/nli/{train,validation,test}.jsonl        sentence1, sentence2, gold_label (MedNLI's keys:
                                                                  entailment, contradiction, neutral)

Classification sentences name one or two affirmed problems and sometimes a denied one of another system ("Denies
chest pain."), so a model must do a little more than spot one system's words. Sentence pairs (MedNLI-style) put a
premise that affirms one problem and may deny another beside a hypothesis about the patient; the label depends on
both texts (the same hypothesis entails one premise and contradicts the next), so the pair has to be read together.
Splits are 70 / 15 / 15 of one seeded stream.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

SYSTEMS = {
    "cardiac": ["chest pain", "palpitations", "atrial fibrillation", "heart failure exacerbation", "elevated troponin",
                "bradycardia", "exertional angina"],
    "respiratory": ["shortness of breath", "productive cough", "wheezing", "pneumonia", "hypoxia",
                    "COPD exacerbation", "pleural effusion"],
    "gastrointestinal": ["abdominal pain", "nausea and vomiting", "melena", "diarrhea", "elevated lipase",
                         "hematemesis", "jaundice"],
    "neurological": ["headache", "left-sided weakness", "seizure", "slurred speech", "confusion", "vertigo",
                     "facial droop"],
}
OPENINGS = ["Patient presents with", "Pt reports", "Admitted for", "Chief complaint:", "He was evaluated for",
            "She describes", "Seen in clinic for", "ED visit for"]
TIMES = ["since yesterday", "for two days", "worsening over the past week", "that started this morning",
         "on and off for a month", ""]
SECOND = ["Also notes", "Additionally reports", "Course complicated by", "Found to have"]
FILLERS = ["Vitals stable.", "Afebrile.", "Family at bedside.", "Labs pending.", "Seen by the resident.", ""]

ENTITIES = {
    "PROBLEM": ["atrial fibrillation", "community acquired pneumonia", "type 2 diabetes mellitus",
                "acute kidney injury", "chest pain", "cellulitis", "urinary tract infection", "hyperkalemia",
                "congestive heart failure", "sepsis"],
    "DRUG": ["metoprolol", "ceftriaxone", "insulin glargine", "furosemide", "aspirin", "vancomycin", "lisinopril",
             "heparin drip", "amoxicillin", "acetaminophen"],
    "TEST": ["chest x-ray", "CT abdomen", "echocardiogram", "basic metabolic panel", "urinalysis", "ECG",
             "MRI brain", "blood cultures", "troponin level", "lactate"],
}
TAGGED_TEMPLATES = [
    "Patient with {PROBLEM} was started on {DRUG} .",
    "{TEST} showed {PROBLEM} .",
    "Continue {DRUG} 40 mg daily for {PROBLEM} .",
    "{TEST} was unremarkable ; no evidence of {PROBLEM} .",
    "Admitted for {PROBLEM} , treated with {DRUG} and {DRUG} .",
    "Repeat {TEST} in the morning .",
    "Held {DRUG} given {PROBLEM} on {TEST} .",
    "History of {PROBLEM} , on {DRUG} at home .",
]


def classify_example(rng: random.Random) -> dict:
    systems = list(SYSTEMS)
    primary = rng.choice(systems)
    affirmed = [primary] + ([rng.choice([s for s in systems if s != primary])] if rng.random() < 0.3 else [])
    parts = [f"{rng.choice(OPENINGS)} {rng.choice(SYSTEMS[primary])} {rng.choice(TIMES)}".strip() + "."]
    if len(affirmed) > 1:
        parts.append(f"{rng.choice(SECOND)} {rng.choice(SYSTEMS[affirmed[1]])}.")
    if rng.random() < 0.4:
        denied = rng.choice([s for s in systems if s not in affirmed])
        parts.append(f"Denies {rng.choice(SYSTEMS[denied])}.")
    parts.append(rng.choice(FILLERS))
    return {"text": " ".join(p for p in parts if p), "label": primary, "systems": "|".join(sorted(affirmed))}


def tagged_example(rng: random.Random) -> dict:
    words, tags = [], []
    for piece in rng.choice(TAGGED_TEMPLATES).split():
        if piece.startswith("{"):
            kind = piece.strip("{}")
            entity = rng.choice(ENTITIES[kind]).split()
            words += entity
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(entity) - 1)
        else:
            words.append(piece)
            tags.append("O")
    return {"tokens": words, "tags": tags}


# Hypotheses of MedNLI's three classes: {problem} is a problem the hypothesis names, {system} its body system.
AFFIRM = ["The patient has {problem}.", "The patient has a {system} problem.", "Patient is experiencing {problem}.",
          "The patient presents with a {system} complaint."]
NEGATE = ["The patient does not have {problem}.", "The patient has no {system} complaint.",
          "Patient denies any {system} symptoms.", "There is no evidence of {problem}."]
UNRELATED = ["The patient has a history of diabetes.", "The patient lives alone.", "The patient is a smoker.",
             "The patient was seen last year.", "The patient takes aspirin at home.", "The patient is over 60."]


def nli_example(rng: random.Random) -> dict:
    """A premise (one affirmed problem, sometimes a denied one) and a hypothesis about the affirmed problem (entailed
    when affirmed, contradicted when negated), about the denied one (contradicted when affirmed, entailed when
    negated), or about something the premise does not say (neutral)."""
    systems = list(SYSTEMS)
    affirmed = rng.choice(systems)
    problem = rng.choice(SYSTEMS[affirmed])
    premise = f"{rng.choice(OPENINGS)} {problem} {rng.choice(TIMES)}".strip() + "."
    denied = rng.choice([s for s in systems if s != affirmed]) if rng.random() < 0.5 else None
    denied_problem = rng.choice(SYSTEMS[denied]) if denied else None
    if denied:
        premise += f" Denies {denied_problem}."
    label = rng.choice(("entailment", "contradiction", "neutral"))
    if label == "neutral":
        # Unstated: a fact the premise does not touch, or a problem of a system it neither affirms nor denies.
        silent = [s for s in systems if s not in (affirmed, denied)]
        other = rng.choice(silent)
        hypothesis = (rng.choice(UNRELATED) if rng.random() < 0.5 else
                      rng.choice(AFFIRM).format(problem=rng.choice(SYSTEMS[other]), system=other))
    else:
        about_denied = denied is not None and rng.random() < 0.4
        system, named = (denied, denied_problem) if about_denied else (affirmed, problem)
        affirm = (label == "entailment") != about_denied  # affirming a denied problem contradicts the premise
        hypothesis = rng.choice(AFFIRM if affirm else NEGATE).format(problem=named, system=system)
    return {"sentence1": premise, "sentence2": hypothesis, "gold_label": label}


def write_demo_data(out: str | Path, examples: int = 300, seed: int = 0) -> dict[str, dict[str, Path]]:
    """Each task's train / validation / test files under `out`; returns their paths by task and split.

    Args:
        out: output folder (gets classify/, tokens/ and nli/)
        examples: examples per task, all splits together
        seed: same seed, same files

    Example: cmbert data sentences --out runs/generic-data --examples 300
    """
    out = Path(out)
    rng = random.Random(seed)
    bounds = {"train": (0, int(0.7 * examples)), "validation": (int(0.7 * examples), int(0.85 * examples)),
              "test": (int(0.85 * examples), examples)}
    rows = {"classify": [classify_example(rng) for _ in range(examples)],
            "tokens": [tagged_example(rng) for _ in range(examples)],
            "nli": [nli_example(rng) for _ in range(examples)]}
    paths: dict[str, dict[str, Path]] = {task: {} for task in rows}
    for task in rows:
        folder = out / task
        folder.mkdir(parents=True, exist_ok=True)
        for split, (start, end) in bounds.items():
            if task == "classify":
                path = folder / f"{split}.csv"
                with path.open("w", newline="", encoding="utf-8") as f:
                    writer = csv.DictWriter(f, fieldnames=["text", "label", "systems"])
                    writer.writeheader()
                    writer.writerows(rows[task][start:end])
            else:
                path = folder / f"{split}.jsonl"
                path.write_text("".join(json.dumps(r) + "\n" for r in rows[task][start:end]), encoding="utf-8")
            paths[task][split] = path
    return paths

