"""`cmbert finetune classify train` / `cmbert finetune tokens train`: fine-tune an encoder on labelled text.

One loop for both tasks; the task decides only the model class, a batch's targets and the metrics:
    read the splits (data.py) -> label vocabulary from train -> tokenize -> the encoder with a task head ->
    optional layer pruning (model.prune) -> optional LoRA adapters (model.lora) -> AdamW with the encoder at
    train.lr, the head at train.head_lr and the adapters at model.lora.lr, linear warmup and decay -> after each
    epoch the validation score (metrics.selection_metric) keeps the best weights, and `patience` epochs without a
    better one stop training -> the best weights: validation and test metrics and predictions -> the model with its
    adapters merged, exported as a stock transformers folder.
A killed run resumes from its newest checkpoint (every `checkpoint_every_steps` and at each epoch end) with the same
data order, so the finished model does not depend on where it was interrupted.

Layout of `out`:
    model/          AutoModelForSequenceClassification / AutoModelForTokenClassification loads it (no peft, no remote
                    code): id2label, label2id and problem_type set, a pruned model's config lists its layers,
                    tokenizer files, a model card
    report.json     validation / test metrics, data counts (read, kept, skipped, truncated), trainable parameters,
                    LoRA and pruning settings, steps, seconds, peak memory, provenance; written last
    predictions/    validation.jsonl, test.jsonl: per example its location (file and row), gold, predicted, scores
    config.json, metrics.jsonl, loss.png, wandb/ (offline unless the user opts in)
    ckpt/           resume state and the best weights so far; removed when the run finishes
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cmbert.core import loop
from cmbert.core.config import split_sources
from cmbert.core.errors import UserError
from cmbert.finetune.generic.config import GenericConfig
from cmbert.finetune.generic.data import (
    IGNORE,
    Encoded,
    Split,
    check_known_labels,
    encode_texts,
    encode_words,
    label_vocabulary,
    read_tagged_split,
    read_text_split,
    token_labels,
)
from cmbert.finetune.generic.metrics import classification_metrics, entity_metrics, selection_metric

# The task head: transformers' prediction head (loaded from an MLM checkpoint's, else fresh) and the fresh classifier.
# It trains at head_lr, and stays trainable under LoRA.
HEAD_PREFIXES = ("head.", "classifier.")
EVAL_SPLITS = ("validation", "test")


@dataclass
class TaskData:
    labels: list[str]  # the model's outputs, in id order
    splits: dict[str, Split]  # as read (gold labels, locations, skip counts)
    encoded: dict[str, Encoded]  # token ids and targets


def load_data(cfg: GenericConfig, tokenizer) -> TaskData:
    read = read_text_split if cfg.task == "classify" else read_tagged_split
    splits = {role: read(path, role, cfg.data) for role, path in split_sources(cfg).items()}
    for split in splits.values():
        if not split.examples:
            raise UserError(f"{split.source}: no usable {split.name} examples ({split.counter.as_dict()})")
    labels = label_vocabulary(cfg.task, splits["train"], cfg.data.multi_label)
    for role in EVAL_SPLITS:
        if role in splits:
            check_known_labels(cfg.task, splits[role], labels)
    ids = {label: i for i, label in enumerate(labels)}
    encode = encode_texts if cfg.task == "classify" else encode_words
    encoded = {role: encode(tokenizer, s.examples, ids, cfg.model.max_length) for role, s in splits.items()}
    return TaskData(labels, splits, encoded)


def build_model(cfg: GenericConfig, labels: list[str]) -> tuple[nn.Module, list[int]]:
    """The encoder of model.init_from with the task's head, pruned and given adapters as configured; returns it and
    the dropped layer indices."""
    from cmbert.core.lora import apply_lora
    from cmbert.core.pruning import prune_layers
    from cmbert.modeling import ModernBertForSequenceClassification, ModernBertForTokenClassification

    classify = cfg.task == "classify"
    multi = classify and cfg.data.multi_label
    torch.manual_seed(cfg.train.seed)  # the fresh classifier's initial weights
    cls = ModernBertForSequenceClassification if classify else ModernBertForTokenClassification
    options = {"classifier_pooling": cfg.model.classifier_pooling} if classify else {}
    model = cls.from_pretrained(
        cfg.model.init_from, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        # transformers' pipelines read it: sigmoid scores for multi-label, softmax otherwise (one tag per token too)
        problem_type="multi_label_classification" if multi else "single_label_classification", **options)
    dropped = prune_layers(model, cfg.model.prune)
    if cfg.model.lora.enabled:
        apply_lora(model, cfg.model.lora, keep_trainable=HEAD_PREFIXES)
    return model, dropped


def collate(task: str, encoded: Encoded, idx, pad_id: int, n_labels: int, multi_label: bool):
    """Padded input ids, attention mask and targets of the examples `idx` (the model unpads internally, so padding
    costs no compute). Targets: a class id per text, a multi-hot row per text, or a label per token."""
    rows = [encoded.ids[i] for i in idx]
    input_ids, mask = loop.padded(rows, pad_id)
    if task == "tokens":
        targets = torch.full(input_ids.shape, IGNORE, dtype=torch.long)
        for r, i in enumerate(idx):
            targets[r, : len(rows[r])] = torch.tensor(token_labels(encoded, i))
    elif multi_label:
        targets = torch.zeros((len(rows), n_labels))
        for r, i in enumerate(idx):
            targets[r, encoded.targets[i]] = 1.0
    else:
        targets = torch.tensor([encoded.targets[i][0] for i in idx])
    return input_ids, mask, targets


@torch.no_grad()
def predict(model: nn.Module, cfg: GenericConfig, encoded: Encoded, pad_id: int, n_labels: int,
            device: torch.device, dtype: torch.dtype) -> list[np.ndarray]:
    """Probabilities: classify, one [n_labels] row per text (sigmoid for multi-label, else softmax); tokens, one
    [n_words, n_tags] array per text from each word's first subword (NaN rows for words without a token)."""
    was_training = model.training
    model.eval()
    multi = cfg.task == "classify" and cfg.data.multi_label
    out = []
    for start in range(0, len(encoded.ids), cfg.train.batch_size):
        idx = range(start, min(start + cfg.train.batch_size, len(encoded.ids)))
        input_ids, mask, _ = collate(cfg.task, encoded, idx, pad_id, n_labels, multi)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            logits = model(input_ids.to(device), mask.to(device)).logits.float()
        probs = (torch.sigmoid(logits) if multi else torch.softmax(logits, -1)).cpu()
        if cfg.task == "classify":
            out.extend(probs.numpy())
            continue
        for r, i in enumerate(idx):
            positions = torch.tensor(encoded.word_positions[i], dtype=torch.long)
            words = probs[r, positions.clamp(min=0)].clone()
            words[positions < 0] = float("nan")
            out.append(words.numpy())
    model.train(was_training)
    return out


def predicted_tags(probs: np.ndarray, labels: list[str]) -> list[str]:
    return [labels[int(row.argmax())] if not np.isnan(row).any() else "O" for row in probs]


def evaluate(cfg: GenericConfig, labels: list[str], split: Split, encoded: Encoded, probs: list[np.ndarray]) -> dict:
    if cfg.task == "classify":
        scores = np.stack(probs) if probs else np.zeros((0, len(labels)))
        metrics = classification_metrics(encoded.targets, scores, labels, cfg.data.multi_label, cfg.eval.threshold)
    else:
        metrics = entity_metrics([e.tags for e in split.examples], [predicted_tags(p, labels) for p in probs])
    return metrics


def write_predictions(path: Path, cfg: GenericConfig, labels: list[str], split: Split, probs: list[np.ndarray]) -> None:
    """One JSON line per example: where it was read, gold and predicted labels (tags), and the model's scores.
    Locations and labels only: the text stays in the user's file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for example, p in zip(split.examples, probs, strict=True):
            if cfg.task == "classify":
                chosen = (p >= cfg.eval.threshold).nonzero()[0] if cfg.data.multi_label else [int(p.argmax())]
                record = {"where": example.where, "gold": list(example.labels),
                          "predicted": [labels[i] for i in chosen],
                          "scores": {label: float(s) for label, s in zip(labels, p, strict=True)}}
            else:
                record = {"where": example.where, "gold": example.tags, "predicted": predicted_tags(p, labels),
                          "confidence": [None if np.isnan(row).any() else float(row.max()) for row in p]}
            f.write(json.dumps(record) + "\n")


def export_model(model: nn.Module, tokenizer, folder: Path, cfg: GenericConfig, results: dict) -> None:
    """The trained model with its adapters merged into the base weights, as a stock transformers folder."""
    from cmbert.core.lora import merged_copy
    from cmbert.core.tokenizer_files import save_tokenizer

    stock = merged_copy(model).eval()
    stock.save_pretrained(folder)
    # Pipelines then cut texts where training did (the encoder's tokenizer allows its whole context).
    tokenizer.model_max_length = cfg.model.max_length
    save_tokenizer(tokenizer, folder)
    write_model_card(folder, cfg, stock.config, results)


def write_model_card(folder: Path, cfg: GenericConfig, config, results: dict) -> None:
    """A card for the fine-tuned model (replacing the encoder card save_pretrained writes, which describes fill-mask):
    how to load it, its labels, its scores, how it was trained."""
    from cmbert.core.runtime import encoder_name

    classify = cfg.task == "classify"
    auto = "AutoModelForSequenceClassification" if classify else "AutoModelForTokenClassification"
    pipeline_tag = "text-classification" if classify else "token-classification"
    metric = selection_metric(cfg.task, cfg.data.multi_label)
    scores = ", ".join(f"{role} {metric} {100 * m[metric]:.1f}" for role, m in results.items() if m)
    lines = [
        "---", "library_name: transformers", "tags:", "- modernbert", "- clinical", f"- {pipeline_tag}",
        f"pipeline_tag: {pipeline_tag}", "---",
        f"# ModernBERT {'text classifier' if classify else 'token classifier'}", "",
        f"Fine-tuned from `{encoder_name(cfg.model.init_from)}` by clinical-modernbert "
        f"(`cmbert finetune {cfg.task} train`), in the stock transformers `modernbert` format.", "",
        f"```python\nfrom transformers import {auto}, AutoTokenizer, pipeline\n"
        f"model = {auto}.from_pretrained(folder)  # no trust_remote_code\n"
        + (f"classify = pipeline(\"text-classification\", model=folder)\n"
           f"classify({{\"text\": {cfg.data.text_column}, \"text_pair\": {cfg.data.text_pair_column}}})  # a sentence pair\n"
           if cfg.data.text_pair_column else "") + "```", "",
        f"- labels ({config.num_labels}): {', '.join(config.id2label[i] for i in range(config.num_labels))}",
        f"- problem type: {config.problem_type}" + (f", threshold {cfg.eval.threshold}" if cfg.data.multi_label
                                                     and classify else ""),
        f"- scores: {scores}",
        f"- max length: {cfg.model.max_length} tokens",
        *loop.adaptation_card_lines(folder, cfg.model.lora, config),
    ]
    (folder / "README.md").write_text("\n".join(lines))


def main(cfg: GenericConfig) -> dict:
    """The whole run (see the module docstring); returns the report. A finished `out` returns its report."""
    from transformers import AutoTokenizer

    from cmbert.core.lora import trainable_summary

    out, t, config = Path(cfg.out), cfg.train, cfg.to_dict()
    out.mkdir(parents=True, exist_ok=True)
    if (report := loop.finished_report(out, config, cfg.task)) is not None:
        return report
    rss_before = loop.rss_mb()
    device, dtype = loop.training_device(t.precision, cfg.model.attention_backend)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.init_from)
    data = load_data(cfg, tokenizer)
    model, dropped = build_model(cfg, data.labels)
    model.to(device).set_attention_backend(cfg.model.attention_backend)  # this model's, not process-wide
    parameters = trainable_summary(model)  # on the model as trained: adapters and head under LoRA
    optimizer = loop.make_optimizer(model, t.weight_decay, {"encoder": t.lr, "head": t.head_lr,
                                                       "adapters": cfg.model.lora.lr}, HEAD_PREFIXES)
    multi, n_labels, pad_id = cfg.task == "classify" and cfg.data.multi_label, len(data.labels), tokenizer.pad_token_id
    train_data = data.encoded["train"]
    scheduler, total_steps = loop.linear_schedule(optimizer, t, len(train_data.ids))
    state = loop.resume(out, model, optimizer, scheduler, config, device, cfg.task, enabled=t.resume)
    logger = loop.open_run_log(out, config, cfg.logging, state)
    metric = selection_metric(cfg.task, cfg.data.multi_label)
    print(f"[{cfg.task}] {len(train_data.ids):,} train examples, {n_labels} labels, {total_steps} steps; training "
          f"{parameters['trainable_parameters']:,} of {parameters['parameters']:,} parameters "
          f"({parameters['trainable_percent']:.2f} %) on {device}", file=sys.stderr)

    def step_loss(idx) -> torch.Tensor:
        input_ids, mask, targets = collate(cfg.task, train_data, idx, pad_id, n_labels, multi)
        return model(input_ids.to(device), mask.to(device), labels=targets.to(device)).loss

    def validate() -> tuple[float, dict]:
        probs = predict(model, cfg, data.encoded["validation"], pad_id, n_labels, device, dtype)
        return evaluate(cfg, data.labels, data.splits["validation"], data.encoded["validation"], probs)[metric], {}

    state = loop.train_epochs(model, optimizer, scheduler, state, t, total_steps, len(train_data.ids), out=out,
                         config=config, device=device, dtype=dtype, logger=logger,
                         log_every=cfg.logging.every_steps, name=cfg.task, metric=metric, step_loss=step_loss,
                         validate=validate)

    # The best epoch's weights (adapters unmerged, as trained) give the reported metrics and predictions.
    results = {}
    for role in EVAL_SPLITS:
        if role not in data.splits:
            results[role] = None
            continue
        probs = predict(model, cfg, data.encoded[role], pad_id, n_labels, device, dtype)
        results[role] = evaluate(cfg, data.labels, data.splits[role], data.encoded[role], probs)
        write_predictions(out / "predictions" / f"{role}.jsonl", cfg, data.labels, data.splits[role], probs)
    export_model(model, tokenizer, out / "model", cfg, results)
    data_report = {}
    for role, split in data.splits.items():
        encoded = data.encoded[role]
        data_report[role] = {**split.report(), "truncated": encoded.truncated}
        if cfg.task == "tokens":
            data_report[role]["truncated_words"] = encoded.truncated_words
    fields = {"task": cfg.task, "multi_label": multi, "labels": data.labels, "selection_metric": metric}
    return loop.write_final_report(out, fields, state, results, data_report,
                                   loop.run_facts(out, model, cfg.model, parameters, dropped, device, rss_before))


def format_summary(report: dict) -> str:
    """The lines `cmbert finetune classify|tokens train` prints."""
    keys = (("accuracy", "f1_micro", "f1_macro") if report["task"] == "classify"
            else ("precision", "recall", "f1", "word_accuracy"))
    lines = []
    for role in EVAL_SPLITS:
        if report.get(role):
            lines.append(f"{role:<10s} " + "  ".join(f"{k} {100 * report[role][k]:.1f}" for k in keys)
                         + f"  ({report[role]['examples']:,} examples)")
    lines += loop.run_summary_lines(report)
    return "\n".join(lines)
