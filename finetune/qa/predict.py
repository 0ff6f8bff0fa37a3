"""`cmbert predict qa`: answers to questions over contexts from a fine-tuned QA model folder.

    cmbert predict qa --model runs/qa-demo/model --input questions.json --out answers.jsonl

The input is any layout `cmbert finetune qa train` reads (SQuAD .json, .jsonl, a `datasets` folder); answers in it
are optional, and when given the SQuAD v2 scores are printed (counts and scores only; the answers stay in --out).
Windowing and the no-answer threshold are those the model was trained and tuned with (`qa_settings.json` in the
model folder, written by training); options override them, and a folder without the file (any transformers
ModernBERT QA model) gets transformers' run_qa defaults.

Each output line: ``{"id", "answer", "start", "end", "score_diff", "null_score", "span_score", "n_best": [{"text",
"start", "end", "score", "probability"}]}``; ``answer`` is "" (and start / end null) when the model says the context
does not answer the question; start / end are character offsets into the context (end exclusive).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cmbert.finetune.qa.data import QaExample, QaSplit, read_qa_split
from cmbert.finetune.qa.metrics import squad_v2_scores
from cmbert.finetune.qa.spans import QuestionPrediction, predict_answers, span_probabilities
from cmbert.finetune.qa.windows import Windows, collate_windows, make_windows

SETTINGS_FILE = "qa_settings.json"


@dataclass
class QaSettings:
    """What prediction must repeat from training: the windows, the span limits, the tuned threshold."""

    max_length: int = 384  # transformers' run_qa defaults for a model trained elsewhere
    doc_stride: int = 128
    max_question_tokens: int = 64
    max_answer_tokens: int = 30
    n_best: int = 20
    null_threshold: float | None = 0.0  # None: never answer "" (SQuAD v1.1 models)

    def save(self, folder: Path) -> None:
        (Path(folder) / SETTINGS_FILE).write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def read(cls, folder: str | Path) -> QaSettings:
        path = Path(folder) / SETTINGS_FILE
        return cls(**json.loads(path.read_text())) if path.is_file() else cls()


@torch.no_grad()
def window_logits(model: nn.Module, windows: Windows, pad_id: int, batch_size: int, device: torch.device,
                  dtype: torch.dtype) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Start and end logits of every window (fp32 numpy, one array of the window's length each)."""
    was_training = model.training
    model.eval()
    starts, ends = [], []
    for first in range(0, len(windows), batch_size):
        idx = range(first, min(first + batch_size, len(windows)))
        input_ids, mask, _, _ = collate_windows(windows, idx, pad_id)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = model(input_ids.to(device), mask.to(device))
        s, e = out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()
        for r, i in enumerate(idx):
            n = len(windows.ids[i])
            starts.append(s[r, :n])
            ends.append(e[r, :n])
    model.train(was_training)
    return starts, ends


def prediction_record(example: QaExample, prediction: QuestionPrediction, threshold: float | None) -> dict:
    answer = prediction.answer(example.context, threshold)
    best = prediction.best
    return {
        "id": example.id, "answer": answer,
        "start": best.start if answer else None, "end": best.end if answer else None,
        "score_diff": round(prediction.score_diff, 4), "null_score": round(prediction.null_score, 4),
        "span_score": round(best.score, 4) if best else None,
        "n_best": [{"text": example.context[s.start : s.end], "start": s.start, "end": s.end,
                    "score": round(s.score, 4), "probability": round(p, 4)}
                   for s, p in zip(prediction.n_best, span_probabilities(prediction.n_best), strict=True)],
    }


def score_predictions(split: QaSplit, predictions: list[QuestionPrediction], threshold: float | None,
                      unanswerable: bool) -> dict:
    """SQuAD v2 official scores at `threshold` (None: every question answered, SQuAD v1.1), with the best-threshold
    search over score_diff, and the always-empty baseline's F1 (the unanswerable share)."""
    golds = {e.id: [t for t, _ in e.answers] for e in split.examples}
    texts = {p.id: p.answer(e.context, None) for e, p in zip(split.examples, predictions, strict=True)}
    if not unanswerable:
        scores = squad_v2_scores(golds, texts)
        return {k: v for k, v in scores.items() if not k.startswith("best_")}
    diffs = {p.id: p.score_diff for p in predictions}
    lowest = min(diffs.values()) - 1.0  # below every score_diff: "all empty" when nothing beats it
    scores = squad_v2_scores(golds, texts, diffs, threshold if threshold is not None else math.inf, lowest)
    scores["empty_baseline_f1"] = 100.0 * sum(not e.answerable for e in split.examples) / max(len(golds), 1)
    return scores


def predict_file(model_dir: str | Path, input_path: str | Path, out: str | Path, input_format: str = "auto",
                 batch_size: int = 32, device: str = "auto", precision: str = "auto", **overrides) -> dict:
    """Predict every usable question of `input_path` into `out` (JSONL); returns counts (and scores when the input
    has gold answers). `overrides`: QaSettings fields (None leaves the model's)."""
    from transformers import AutoTokenizer

    from cmbert.core.errors import UserError
    from cmbert.core.runtime import device_and_dtype
    from cmbert.modeling import ModernBertForQuestionAnswering

    settings = QaSettings.read(model_dir)
    torch_device, dtype = device_and_dtype(precision, device)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = ModernBertForQuestionAnswering.from_pretrained(model_dir).to(torch_device).eval()
    context = model.config.max_position_embeddings
    if not (Path(model_dir) / SETTINGS_FILE).is_file():  # run_qa's defaults, shrunk to fit a small model's context
        settings.max_length = min(settings.max_length, context)
        settings.doc_stride = min(settings.doc_stride, (settings.max_length - settings.max_question_tokens - 3) // 2)
    for key, value in overrides.items():
        if value is not None:
            setattr(settings, key, value)
    if settings.max_length > context:
        raise UserError(f"max length {settings.max_length} exceeds the model's context ({context} tokens)")
    if not 0 <= settings.doc_stride < settings.max_length - settings.max_question_tokens - 3:
        raise UserError(f"doc stride {settings.doc_stride} must be below the context tokens per window "
                        f"({settings.max_length - settings.max_question_tokens - 3})")
    split = read_qa_split(input_path, "test", input_format)
    windows = make_windows(tokenizer, split.examples, settings.max_length, settings.doc_stride,
                           settings.max_question_tokens)
    starts, ends = window_logits(model, windows, tokenizer.pad_token_id, batch_size, torch_device, dtype)
    predictions = predict_answers(split.examples, windows, starts, ends, settings.max_answer_tokens, settings.n_best)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for example, prediction in zip(split.examples, predictions, strict=True):
            f.write(json.dumps(prediction_record(example, prediction, settings.null_threshold)) + "\n")
    summary = {"questions": len(split.examples), "windows": len(windows), "data": split.report(),
               "answered": sum(p.answer(e.context, settings.null_threshold) != ""
                               for e, p in zip(split.examples, predictions, strict=True)),
               "settings": asdict(settings), "out": str(out)}
    summary["data"].pop("examples", None)  # locations of skipped rows stay out of the printed summary
    if any(e.answerable for e in split.examples):  # a labelled file: score it as training does
        summary["scores"] = score_predictions(split, predictions, settings.null_threshold, True)
    return summary



def predict_from_config(cfg) -> dict:
    """`predict_file` with the settings of a `QaPredictConfig` (cmbert.finetune.qa.config)."""
    return predict_file(cfg.model, cfg.input, cfg.out, input_format=cfg.format, batch_size=cfg.batch_size,
                        device=cfg.device, precision=cfg.precision, max_length=cfg.max_length,
                        doc_stride=cfg.doc_stride, null_threshold=cfg.null_threshold,
                        max_answer_tokens=cfg.max_answer_tokens, n_best=cfg.n_best)
def format_summary(summary: dict) -> str:
    d = summary["data"]
    skipped = ", ".join(f"{k} {v:,}" for k, v in d["skipped"].items())
    lines = [f"{summary['questions']:,} questions ({d['unanswerable']:,} without a gold answer) in "
             f"{summary['windows']:,} windows" + (f"; skipped: {skipped}" if skipped else "")
             + f"; {summary['answered']:,} answered, {summary['questions'] - summary['answered']:,} \"no answer\""]
    if "scores" in summary:
        s = summary["scores"]
        lines.append(f"exact {s['exact']:.1f}  f1 {s['f1']:.1f}" + (
            f"  (HasAns f1 {s['HasAns_f1']:.1f}, NoAns f1 {s['NoAns_f1']:.1f})" if "NoAns_f1" in s
            and "HasAns_f1" in s else ""))
    lines.append(f"-> {summary['out']}")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m cmbert.finetune.qa.predict MODEL INPUT OUT
    if len(sys.argv) != 4:
        sys.exit("usage: python -m cmbert.finetune.qa.predict MODEL_DIR INPUT OUT.jsonl")
    print(format_summary(predict_file(*sys.argv[1:])), file=sys.stderr)
