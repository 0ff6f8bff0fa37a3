"""`cmbert finetune icd ...`, `cmbert finetune sweep`, `cmbert predict icd`. COMMANDS and GROUPS are literals that
`cmbert.cli` reads without importing this package (the format is in its docstring); the two commands that combine
library calls and the formatters are below."""

from __future__ import annotations

from typing import Literal

GROUPS = {("finetune", "icd"): "ICD coding from discharge summaries (Edin et al.'s MIMIC-IV protocol)"}

COMMANDS = {
    ("finetune", "icd", "prepare"): {
        "run": "cmbert.finetune.icd.data:prepare_icd_dataset",
        "show": "cmbert.finetune.icd.commands:format_prepare",
        "help": "build the ICD-9 or ICD-10 dataset: codes of >= 10 notes, diagnoses and procedures as one label set, "
                "a patient-level iterative stratified 75/10/15 split",
    },
    ("finetune", "icd", "train"): {
        "config": "cmbert.finetune.icd.config:load_icd_config",
        "run": "cmbert.finetune.icd.train:main",
        "show": "cmbert.finetune.icd.report:format_table",
        "example": "cmbert finetune icd train --config configs/finetune/icd/demo.yaml data=runs/icd-data "
                   "model.init_from=[runs/demo/model] seeds=[0,1,2]",
        "help": "fine-tune encoders (and baselines) on a prepared dataset; writes models, report.json, report.md and "
                "plots",
    },
    ("finetune", "icd", "evaluate"): {
        "run": "cmbert.finetune.icd.commands:evaluate",
        "show": "cmbert.finetune.icd.report:format_table",
        "help": "score trained ICD model folders on a split of a prepared dataset, side by side with a paired "
                "bootstrap against the first",
    },
    ("finetune", "sweep"): {
        "config": "cmbert.finetune.icd.sweep:load_sweep_config",
        "run": "cmbert.finetune.icd.sweep:main",  # prints its table
        "example": "cmbert finetune sweep --config configs/finetune/sweep/demo.yaml data=runs/demo/icd-data "
                   "init_from=runs/demo/model fraction=0.5 lora.r=4",
        "help": "full fine-tuning vs LoRA vs LoRA on layer-pruned encoders on one ICD split: trainable share, memory, "
                "step time and quality retained, side by side",
    },
    ("predict", "icd"): {
        "run": "cmbert.finetune.icd.commands:predict_icd",
        "show": "cmbert.finetune.icd.commands:format_predictions",
        "stderr": True,
        "help": "ICD codes with titles and scores for notes: those above the model's threshold, or the K best with "
                "--top-k",
    },
}


def evaluate(models: list[str], data: str, out: str, split: Literal["val", "test"] = "test",
             precision: Literal["auto", "fp32", "bf16"] = "auto") -> dict:
    """`cmbert.finetune.icd.train.evaluate` of model folders on one split.

    Args:
        models: model folders from `finetune icd train`
        data: a prepared dataset folder
        split: the split to score
        out: report folder
        precision: auto (bf16 autocast on GPUs and on CPUs with native bf16, else fp32), fp32 or bf16

    Example: cmbert finetune icd evaluate --models runs/icd/runs/*/model --data runs/icd-data --out runs/icd-eval
    """
    from cmbert.finetune.icd.train import evaluate as evaluate_models

    return evaluate_models(models, data, out, split=split, precision=precision)


def predict_icd(model: str, notes: str, top_k: int | None = None, out: str | None = None,
                device: Literal["auto", "cpu", "cuda"] = "auto", precision: Literal["auto", "fp32", "bf16"] = "auto",
                batch_size: int = 16) -> dict:
    """Predict codes for the notes and write them; returns the counts.

    Args:
        model: a model folder from `cmbert finetune icd train`
        notes: a notes CSV (note_id, text columns), a JSONL of {id, text}, one .txt note, or -
        top_k: the K best codes per note (default: every code above the model's threshold)
        out: FILE.csv, FILE.json or FILE.jsonl (default: CSV to stdout)
        device: where the model runs
        precision: auto (bf16 autocast on GPUs and on CPUs with native bf16, else fp32), fp32 or bf16
        batch_size: notes per forward pass

    Example: cmbert predict icd --model runs/demo/icd/runs/model-8k-seed0/model --notes notes.csv --top-k 10
        --out codes.csv
    """
    from cmbert.core.io import SkipCounter
    from cmbert.finetune.icd.predict import predict, write_predictions

    counter = SkipCounter()
    n = write_predictions(predict(model, notes, top_k, device=device, precision=precision,
                                  notes_per_batch=batch_size, counter=counter), out)
    return {"notes": n, "skipped": dict(sorted(counter.skipped.items())), "out": out}


def format_predictions(summary: dict) -> str:
    skipped = ", ".join(f"{k} {v:,}" for k, v in summary["skipped"].items())
    return (f"{summary['notes']:,} notes" + (f" ({skipped} skipped)" if skipped else "")
            + (f" -> {summary['out']}" if summary["out"] else ""))


def format_prepare(report: dict, out: str, version: int) -> str:
    lines = [f"{split}: {report['splits'][split]['notes']:,} notes of {report['splits'][split]['patients']:,} "
             "patients" for split in ("train", "val", "test")]
    lines.append(f"{report['labels']:,} ICD-{version} codes; dataset in {out} (report.json; exclude_subjects.txt for "
                 "`cmbert corpus build --exclude-subjects`)")
    return "\n".join(lines)


