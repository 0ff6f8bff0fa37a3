"""`cmbert finetune qa train`: fine-tune an encoder for extractive question answering (SQuAD v1.1 / v2.0, RadQA).

    read the splits (data.py) -> windows of [CLS] question [SEP] context piece [SEP] (windows.py) -> the encoder
    with transformers' QA head (a start and an end logit per token) -> optional layer pruning and LoRA -> AdamW with
    the encoder at train.lr, the head at train.head_lr and the adapters at model.lora.lr, linear warmup and decay
    (the generic recipes' optimizer, schedule and resume) -> after each epoch the validation F1 (with the
    no-answer threshold tuned on validation, unless eval.null_threshold fixes it) keeps the best weights, and
    `patience` epochs without a better one stop training -> the best weights: the threshold tuned on validation,
    validation and test scores (SQuAD v2 official EM / F1, HasAns / NoAns) and predictions -> the model with its
    adapters merged, exported as a stock transformers folder.

Layout of `out`:
    model/          AutoModelForQuestionAnswering loads it (no peft, no remote code); qa_settings.json holds the
                    window length, stride and tuned no-answer threshold that `cmbert predict qa` repeats; tokenizer
                    files; a model card
    report.json     scores, the threshold, always-empty baselines, counts (questions, windows, skips, truncated
                    questions), trainable parameters, LoRA and pruning, steps, seconds, memory, provenance; last
    predictions/    validation.jsonl, test.jsonl: per question its id, location, answer, character offsets, scores
                    and per-question EM / F1 (answer text is context text: these files stay in the run folder)
    config.json, metrics.jsonl, wandb/ (offline unless the user opts in)
    ckpt/           resume state and the best weights so far; removed when the run finishes
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn

from cmbert.core import loop
from cmbert.core.config import split_sources
from cmbert.core.errors import UserError
from cmbert.finetune.qa.config import QaConfig
from cmbert.finetune.qa.data import QaSplit, read_qa_split
from cmbert.finetune.qa.predict import QaSettings, prediction_record, score_predictions, window_logits
from cmbert.finetune.qa.spans import QuestionPrediction, predict_answers
from cmbert.finetune.qa.windows import Windows, collate_windows, make_windows

HEAD_PREFIXES = ("head.", "classifier.")  # trains at head_lr, and stays trainable under LoRA
EVAL_SPLITS = ("validation", "test")


def build_model(cfg: QaConfig) -> tuple[nn.Module, list[int]]:
    from cmbert.core.lora import apply_lora
    from cmbert.core.pruning import prune_layers
    from cmbert.modeling import ModernBertForQuestionAnswering

    torch.manual_seed(cfg.train.seed)  # the fresh head's initial weights
    model = ModernBertForQuestionAnswering.from_pretrained(cfg.model.init_from, num_labels=2)
    dropped = prune_layers(model, cfg.model.prune)
    if cfg.model.lora.enabled:
        apply_lora(model, cfg.model.lora, keep_trainable=HEAD_PREFIXES)
    return model, dropped


def evaluate(model, cfg: QaConfig, split: QaSplit, windows: Windows, pad_id: int, device, dtype):
    starts, ends = window_logits(model, windows, pad_id, cfg.eval.batch_size, device, dtype)
    return predict_answers(split.examples, windows, starts, ends, cfg.eval.max_answer_tokens, cfg.eval.n_best)


def validation_score(cfg: QaConfig, split: QaSplit,
                     predictions: list[QuestionPrediction]) -> tuple[float, float | None]:
    """(validation F1, the threshold that gives it): tuned (best_f1 at best_f1_thresh) unless fixed or v1.1."""
    if not cfg.data.unanswerable:
        return score_predictions(split, predictions, None, False)["f1"], None
    scores = score_predictions(split, predictions, cfg.eval.null_threshold, True)
    if cfg.eval.null_threshold is not None:
        return scores["f1"], cfg.eval.null_threshold
    return scores["best_f1"], scores["best_f1_thresh"]


def write_predictions(path: Path, split: QaSplit, predictions: list[QuestionPrediction], threshold: float | None):
    from cmbert.finetune.qa.metrics import exact_match, gold_answers, token_f1

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for example, prediction in zip(split.examples, predictions, strict=True):
            record = prediction_record(example, prediction, threshold)
            golds = gold_answers([t for t, _ in example.answers])
            record.update(where=example.where, gold_answerable=example.answerable,
                          exact=max(exact_match(g, record["answer"]) for g in golds),
                          f1=round(max(token_f1(g, record["answer"]) for g in golds), 4))
            f.write(json.dumps(record) + "\n")


def export_model(model: nn.Module, tokenizer, folder: Path, cfg: QaConfig, threshold: float | None,
                 results: dict) -> None:
    """The trained model with its adapters merged, as a stock transformers folder, with the settings predict uses."""
    from cmbert.core.lora import merged_copy
    from cmbert.core.tokenizer_files import save_tokenizer

    stock = merged_copy(model).eval()
    stock.save_pretrained(folder)
    tokenizer.model_max_length = cfg.model.max_length  # pipelines then window as training did
    save_tokenizer(tokenizer, folder)
    QaSettings(cfg.model.max_length, cfg.model.doc_stride, cfg.model.max_question_tokens, cfg.eval.max_answer_tokens,
               cfg.eval.n_best, threshold).save(folder)
    write_model_card(folder, cfg, stock.config, threshold, results)


def write_model_card(folder: Path, cfg: QaConfig, config, threshold: float | None, results: dict) -> None:
    from cmbert.core.runtime import encoder_name

    scores = ", ".join(f"{role} EM {m['exact']:.1f} / F1 {m['f1']:.1f}" for role, m in results.items() if m)
    m = cfg.model
    lines = [
        "---", "library_name: transformers", "tags:", "- modernbert", "- clinical", "- question-answering",
        "pipeline_tag: question-answering", "---", "# ModernBERT extractive question answering", "",
        f"Fine-tuned from `{encoder_name(m.init_from)}` by clinical-modernbert (`cmbert finetune qa train`), in the "
        "stock transformers `modernbert` format.", "",
        "```python\nfrom transformers import AutoModelForQuestionAnswering, AutoTokenizer\n"
        "model = AutoModelForQuestionAnswering.from_pretrained(folder)  # no trust_remote_code\n```", "",
        "With the trained windows and no-answer threshold: `cmbert predict qa --model FOLDER --input questions.json "
        "--out answers.jsonl`. transformers 4.x's pipeline also runs it (transformers 5 removed the question-answering "
        f"pipeline): `pipeline(\"question-answering\", model=folder)(question=..., context=..., max_seq_len="
        f"{m.max_length}, doc_stride={m.doc_stride}, handle_impossible_answer={cfg.data.unanswerable})`.", "",
        f"- windows: {m.max_length} tokens, {m.doc_stride} shared by consecutive windows; questions cut at "
        f"{m.max_question_tokens} tokens; answers at most {cfg.eval.max_answer_tokens} tokens",
        ("- unanswerable questions: \"\" when null score - best span score > "
         f"{threshold:.4f} (tuned on validation: best_f1_thresh)" if cfg.eval.null_threshold is None
         else f"- unanswerable questions: \"\" when null score - best span score > {threshold:g}")
        if threshold is not None else "- every question is answered (SQuAD v1.1)",
        f"- scores (SQuAD v2 official): {scores}",
        "- `cmbert predict qa` repeats these settings (qa_settings.json)",
        *loop.adaptation_card_lines(folder, cfg.model.lora, config),
    ]
    (folder / "README.md").write_text("\n".join(lines))


def main(cfg: QaConfig) -> dict:
    """The whole run (see the module docstring); returns the report. A finished `out` returns its report."""
    from transformers import AutoTokenizer

    from cmbert.core.lora import trainable_summary

    out, t, config = Path(cfg.out), cfg.train, cfg.to_dict()
    out.mkdir(parents=True, exist_ok=True)
    if (report := loop.finished_report(out, config, "qa")) is not None:
        return report
    rss_before = loop.rss_mb()
    device, dtype = loop.training_device(t.precision, cfg.model.attention_backend)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.init_from)
    splits = {role: read_qa_split(path, role, cfg.data.format, cfg.data.unanswerable)
              for role, path in split_sources(cfg).items()}
    for split in splits.values():
        if not split.examples:
            raise UserError(f"{split.source}: no usable {split.name} questions ({split.counter.as_dict()})")
    m = cfg.model
    windows = {role: make_windows(tokenizer, s.examples, m.max_length, m.doc_stride, m.max_question_tokens)
               for role, s in splits.items()}
    model, dropped = build_model(cfg)
    model.to(device).set_attention_backend(m.attention_backend)  # this model's kernels, not process-wide
    parameters = trainable_summary(model)
    optimizer = loop.make_optimizer(model, t.weight_decay, {"encoder": t.lr, "head": t.head_lr, "adapters": m.lora.lr},
                               HEAD_PREFIXES)
    pad_id, train_windows = tokenizer.pad_token_id, windows["train"]
    scheduler, total_steps = loop.linear_schedule(optimizer, t, len(train_windows))
    state = loop.resume(out, model, optimizer, scheduler, config, device, "qa", enabled=t.resume)
    logger = loop.open_run_log(out, config, cfg.logging, state)
    print(f"[qa] {len(splits['train'].examples):,} train questions in {len(train_windows):,} windows, "
          f"{total_steps} steps; training {parameters['trainable_parameters']:,} of {parameters['parameters']:,} "
          f"parameters ({parameters['trainable_percent']:.2f} %) on {device}", file=sys.stderr)

    def step_loss(idx) -> torch.Tensor:
        input_ids, mask, starts, ends = collate_windows(train_windows, idx, pad_id)
        return model(input_ids.to(device), mask.to(device), start_positions=starts.to(device),
                     end_positions=ends.to(device)).loss

    def validate() -> tuple[float, dict]:
        predictions = evaluate(model, cfg, splits["validation"], windows["validation"], pad_id, device, dtype)
        score, threshold = validation_score(cfg, splits["validation"], predictions)
        return score, {"threshold": threshold}  # the best epoch's threshold goes with its weights

    state = loop.train_epochs(model, optimizer, scheduler, state, t, total_steps, len(train_windows), out=out,
                         config=config, device=device, dtype=dtype, logger=logger,
                         log_every=cfg.logging.every_steps, name="qa", metric="f1", step_loss=step_loss,
                         validate=validate)

    # The best epoch's weights give the threshold (tuned on validation), the scores and the predictions.
    threshold = state["best_extra"]["threshold"]
    results = {}
    for role in EVAL_SPLITS:
        if role not in splits:
            results[role] = None
            continue
        predictions = evaluate(model, cfg, splits[role], windows[role], pad_id, device, dtype)
        results[role] = score_predictions(splits[role], predictions, threshold, cfg.data.unanswerable)
        write_predictions(out / "predictions" / f"{role}.jsonl", splits[role], predictions, threshold)
    export_model(model, tokenizer, out / "model", cfg, threshold, results)
    data_report = {}
    for role, split in splits.items():
        w = windows[role]
        per_question = _windows_per_question(w, len(split.examples))
        data_report[role] = {**split.report(), "windows": len(w), "truncated_questions": w.truncated_questions,
                             "unreachable_answers": w.unreachable_answers,
                             "multi_window_questions": sum(n > 1 for n in per_question),
                             "context_tokens_max": max(w.context_tokens)}
    fields = {"task": "qa", "unanswerable": cfg.data.unanswerable, "selection_metric": "validation f1",
              "null_threshold": threshold,
              "threshold_tuned": cfg.data.unanswerable and cfg.eval.null_threshold is None}
    return loop.write_final_report(out, fields, state, results, data_report,
                                   loop.run_facts(out, model, cfg.model, parameters, dropped, device, rss_before))


def _windows_per_question(windows: Windows, n: int) -> list[int]:
    counts = [0] * n
    for index in windows.example:
        counts[index] += 1
    return counts


def format_summary(report: dict) -> str:
    """The lines `cmbert finetune qa train` prints (scores and counts; never text)."""
    lines = []
    for role in EVAL_SPLITS:
        s = report.get(role)
        if not s:
            continue
        line = f"{role:<10s} exact {s['exact']:.1f}  f1 {s['f1']:.1f}"
        if "HasAns_f1" in s:
            line += f"  HasAns f1 {s['HasAns_f1']:.1f}"
        if "NoAns_f1" in s:
            line += f"  NoAns f1 {s['NoAns_f1']:.1f}"
        if "empty_baseline_f1" in s:
            line += f"  (always-empty f1 {s['empty_baseline_f1']:.1f})"
        lines.append(line + f"  ({s['total']:,} questions)")
    if report["null_threshold"] is not None:
        how = "tuned on validation" if report["threshold_tuned"] else "fixed"
        lines.append(f"no-answer threshold {report['null_threshold']:.4f} ({how})")
    lines += loop.run_summary_lines(report)
    return "\n".join(lines)
