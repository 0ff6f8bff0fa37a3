"""Made-up radiology reports with questions, for the QA recipe's demo and tests (no patient data), in the SQuAD v2.0
layout RadQA uses.

    cmbert data qa --out runs/qa-data --reports 200
    -> runs/qa-data/{train,validation,test}.json

Each report is a chest CT or radiograph report (EXAMINATION, COMPARISON, FINDINGS, IMPRESSION) assembled from
templates: a pulmonary nodule (size, lobe) or none, a lymph node or none, a pleural effusion (side) or none, a
pneumothorax or not, a follow-up recommendation or none, between routine normal sentences in random order. Each report
gets up to eight questions ("What is the size of the nodule?" -> "8 mm"); those about something the report does not
describe have no answer (about a third), and several sizes in one report (nodule, lymph node) make "the number after
the noun" the skill to learn rather than "any number". Some reports carry many routine sentences, so their contexts
need several windows at small window lengths. Splits are 70 / 15 / 15 of one seeded stream of reports.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

EXAMS = ["CT chest without contrast", "CT chest with contrast", "CT angiography of the chest",
         "Chest radiograph, PA and lateral", "Portable chest radiograph", "Low-dose CT chest for lung cancer screening"]
PRIORS = ["CT chest from {month} {year}", "chest radiograph dated {month} {year}", "PET-CT from {month} {year}",
          "outside CT from {month} {year}"]
MONTHS = ["January", "March", "April", "June", "August", "September", "November"]
LOBES = ["right upper lobe", "right middle lobe", "right lower lobe", "left upper lobe", "lingula", "left lower lobe"]
NODULE_KINDS = ["solid", "part-solid", "ground-glass", "calcified", "spiculated"]
NODES = ["subcarinal", "right paratracheal", "left hilar", "prevascular", "right hilar"]
SIDES = ["left", "right", "bilateral"]
AMOUNTS = ["small", "moderate", "large", "trace"]
FOLLOW_UP = ["follow-up CT in {n} months", "PET-CT for further characterization",
             "short-interval follow-up chest CT in {n} months", "tissue sampling", "pulmonology referral"]
ROUTINE = [
    "The airways are patent to the level of the segmental bronchi.",
    "The heart is normal in size.",
    "There is no pericardial effusion.",
    "Mild atherosclerotic calcification of the thoracic aorta.",
    "The thyroid gland is unremarkable.",
    "Mild degenerative changes of the thoracic spine.",
    "The visualized upper abdomen is unremarkable.",
    "No acute osseous abnormality.",
    "The esophagus is normal in caliber.",
    "Mild bibasilar dependent atelectasis.",
    "The main pulmonary artery is normal in caliber.",
    "No axillary lymphadenopathy.",
    "Stable appearance of the mediastinal contours.",
    "Postsurgical changes from prior sternotomy.",
    "Small hiatal hernia.",
    "Scattered coronary artery calcifications.",
    "The central venous catheter terminates in the superior vena cava.",
    "Biapical pleural-parenchymal scarring.",
]
QUESTIONS = {
    "exam": ["What examination was performed?", "What type of study is this?"],
    "comparison": ["What is the comparison study?", "What prior imaging was this compared with?"],
    "nodule_size": ["What is the size of the nodule?", "How large is the pulmonary nodule?", "Nodule size?"],
    "nodule_site": ["Where is the nodule located?", "Which lobe contains the nodule?"],
    "node_size": ["What is the size of the lymph node?", "How big is the enlarged lymph node?"],
    "effusion_side": ["Which side is the pleural effusion on?", "What is the laterality of the effusion?"],
    "pneumothorax": ["Is there a pneumothorax?", "Any pneumothorax?"],
    "follow_up": ["What follow-up is recommended?", "What is the recommendation?"],
}


class ReportBuilder:
    """Text assembled piece by piece, remembering where each answer lands (so answer_start is exact)."""

    def __init__(self):
        self.text, self.spans = "", {}

    def add(self, template: str, **answers: str) -> None:
        """Append `template` with {key} slots filled by `answers`; each slot's span is recorded under its key."""
        out, rest = self.text, template
        while "{" in rest:
            before, _, after = rest.partition("{")
            key, _, rest = after.partition("}")
            out += before
            self.spans.setdefault(key, (answers[key], len(out)))
            out += answers[key]
        self.text = out + rest


def report_with_questions(rng: random.Random, report_id: str) -> dict:
    """One SQuAD v2 paragraph: a report and its questions."""
    b = ReportBuilder()
    b.add("EXAMINATION: {exam}.\n", exam=rng.choice(EXAMS))
    b.add("INDICATION: " + rng.choice(["Cough.", "Shortness of breath.", "Follow-up of known nodule.",
                                       "Lung cancer screening.", "Chest pain.", "Fever."]) + "\n")
    if rng.random() < 0.6:
        prior = rng.choice(PRIORS).format(month=rng.choice(MONTHS), year=rng.randint(2015, 2023))
        b.add("COMPARISON: {comparison}.\n", comparison=prior)
    else:
        b.add("COMPARISON: None.\n")
    findings, impression = [], []
    if rng.random() < 0.6:
        size, site = f"{rng.randint(3, 28)} mm", rng.choice(LOBES)
        kind = rng.choice(NODULE_KINDS)
        findings.append((f"There is a {{nodule_size}} {kind} nodule in the {{nodule_site}}.",
                         {"nodule_size": size, "nodule_site": site}))
        impression.append(f"{size} {kind} nodule in the {site}.")
    else:
        findings.append(("No suspicious pulmonary nodules.", {}))
    if rng.random() < 0.4:
        node = f"{rng.randint(11, 25)} mm"
        findings.append((f"An enlarged {rng.choice(NODES)} lymph node measures {{node_size}}.", {"node_size": node}))
        impression.append("Mediastinal lymphadenopathy.")
    if rng.random() < 0.5:
        side = rng.choice(SIDES)
        findings.append((f"{rng.choice(AMOUNTS).capitalize()} {{effusion_side}} pleural effusion.",
                         {"effusion_side": side}))
        impression.append(f"{side.capitalize()} pleural effusion.")
    else:
        findings.append(("No pleural effusion.", {}))
    if rng.random() < 0.25:
        findings.append(("There is a {pneumothorax}.", {"pneumothorax": f"small {rng.choice(['right', 'left'])} "
                                                                          "apical pneumothorax"}))
    else:
        findings.append(("{pneumothorax}.", {"pneumothorax": "No pneumothorax"}))
    # Mostly short reports, some long ones: at 128-token windows about a third of the questions need two or more.
    routine = rng.sample(ROUTINE, rng.choice([1, 2, 3, 4, 5, 6, 10, 16]))
    findings += [(sentence, {}) for sentence in routine]
    rng.shuffle(findings)
    b.add("FINDINGS:\n")
    for sentence, answers in findings:
        b.add(sentence + " ", **answers)
    b.add("\nIMPRESSION:\n")
    for i, line in enumerate(impression or ["No acute cardiopulmonary process."], start=1):
        b.add(f"{i}. {line}\n")
    if rng.random() < 0.5:
        b.add("Recommend {follow_up}.\n", follow_up=rng.choice(FOLLOW_UP).format(n=rng.choice([3, 6, 12])))
    qas = []
    for q, (key, phrasings) in enumerate(QUESTIONS.items()):
        answer = b.spans.get(key)
        qas.append({"id": f"{report_id}-q{q + 1}", "question": rng.choice(phrasings),
                    "answers": [{"text": answer[0], "answer_start": answer[1]}] if answer else [],
                    "is_impossible": answer is None})
    return {"context": b.text, "qas": qas}


def write_qa_demo_data(out: str | Path, reports: int = 200, seed: int = 0) -> dict[str, Path]:
    """SQuAD v2.0 files train / validation / test (70 / 15 / 15 of the reports); returns their paths.

    Args:
        out: output folder
        reports: reports (8 questions each), all splits together
        seed: same seed, same files

    Example: cmbert data qa --out runs/qa-data --reports 200
    """
    rng = random.Random(seed)
    paragraphs = [report_with_questions(rng, f"report-{i + 1:05d}") for i in range(reports)]
    n_train, n_val = int(0.7 * reports), int(0.15 * reports)
    parts = {"train": paragraphs[:n_train], "validation": paragraphs[n_train : n_train + n_val],
             "test": paragraphs[n_train + n_val :]}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, items in parts.items():
        data = {"version": "v2.0", "data": [{"title": p["qas"][0]["id"].rsplit("-", 1)[0], "paragraphs": [p]}
                                            for p in items]}
        paths[split] = out / f"{split}.json"
        paths[split].write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return paths
