"""`cmbert finetune trajectory ...`, `cmbert predict trajectory`. COMMANDS and GROUPS are literals that `cmbert.cli`
reads without importing this package (the format is in its docstring); the prediction command, which reads a history
one of two ways, and the formatters are below."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

GROUPS = {("finetune", "trajectory"): "next-visit disease prediction from coded history and notes (visit-sequence "
                                      "transformer)"}

COMMANDS = {
    ("finetune", "trajectory", "prepare"): {
        "run": "cmbert.finetune.trajectory.data:prepare_trajectories",
        "show": "cmbert.finetune.trajectory.commands:format_prepare",
        "help": "build per-patient visit sequences (admissions by admittime, diagnoses mapped to CCS/CCSR/ICD-10 "
                "categories, discharge notes), split by patient",
    },
    ("finetune", "trajectory", "train"): {
        "config": "cmbert.finetune.trajectory.config:load_trajectory_config",
        "run": "cmbert.finetune.trajectory.train:main",
        "show": "cmbert.finetune.trajectory.train:format_table",
        "example": "cmbert finetune trajectory train --config configs/finetune/trajectory/demo.yaml "
                   "data=runs/trajectory-data model.init_from=runs/demo/model inputs=[codes]",
        "help": "train the visit-sequence model on codes, notes and both, next to the baselines; writes models, "
                "report.json and comparison.png",
    },
    ("predict", "trajectory"): {
        "run": "cmbert.finetune.trajectory.commands:predict_trajectory",
        "show": "cmbert.finetune.trajectory.commands:format_prediction",
        "help": "the next visit's most likely categories, with names and scores, from a patient's history",
    },
}


def predict_trajectory(model: str, mimic: str | None = None, subject_id: int | None = None,
                       history: str | None = None, top_k: int = 20, encoder: str | None = None,
                       out: str | None = None, device: Literal["auto", "cpu", "cuda"] = "auto") -> dict:
    """The ranked next-visit categories for one patient's history, also written to `out` when given.

    Args:
        model: a model folder from `cmbert finetune trajectory train`
        mimic: a MIMIC-IV root (with --subject-id)
        subject_id: the patient whose visits are read from --mimic
        history: a JSON history instead: {"visits": [{"diagnoses": ["10:I5023"], "note": "..."}, ...]} (see
            cmbert/finetune/trajectory/predict.py)
        top_k: categories to list
        encoder: the note encoder folder, if it moved since training
        out: write the JSON here instead of stdout
        device: where the model runs

    Example: cmbert predict trajectory --model runs/trajectory/both/model --mimic ~/mimic-iv --subject-id 10000032
        --top-k 20
    """
    from cmbert.core.errors import UserError
    from cmbert.finetune.trajectory.model import TrajectoryMeta
    from cmbert.finetune.trajectory.predict import history_from_json, history_from_mimic, predict_next

    if (history is None) == (mimic is None or subject_id is None):
        raise UserError("give either --history FILE or both --mimic DIR and --subject-id ID")
    vocabulary = TrajectoryMeta.read(model).vocabulary
    visits, notes = (history_from_json(history, vocabulary) if history else
                     history_from_mimic(mimic, subject_id, vocabulary))
    ranked = predict_next(model, visits, notes, top_k=top_k, encoder=encoder, device=device)
    result = {"visits_read": len(visits), "notes_read": len(notes), "next_visit": ranked}
    if out:
        Path(out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


def format_prediction(result: dict, out: str | None) -> str | None:
    return None if out else json.dumps(result, indent=1)


def format_prepare(report: dict, out: str, vocabulary: str, min_visits: int) -> str:
    lines = []
    for split in ("train", "val", "test"):
        s = report["splits"][split]
        lines.append(f"{split}: {s['samples']:,} samples from {s['patients']:,} patients ({s['visits']:,} visits)")
    excluded = sum(report["excluded_patients"].values())
    lines.append(f"{report['categories']:,} {vocabulary} categories; {excluded:,} patients excluded (fewer than "
                 f"{min_visits} visits); dataset in {out} (report.json)")
    return "\n".join(lines)
