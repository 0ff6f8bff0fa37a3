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

import argparse
import json
import math
import resource
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from finetune.generic.config import GenericConfig, is_dataset_dict, load_generic_config
from finetune.generic.data import (
    IGNORE,
    SPLIT_NAMES,
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
from finetune.generic.metrics import classification_metrics, entity_metrics, selection_metric

# The task head: transformers' prediction head (loaded from an MLM checkpoint's, else fresh) and the fresh classifier.
# It trains at head_lr, and stays trainable under LoRA.
HEAD_PREFIXES = ("head.", "classifier.")
EVAL_SPLITS = ("validation", "test")


@dataclass
class TaskData:
    labels: list[str]  # the model's outputs, in id order
    splits: dict[str, Split]  # as read (gold labels, locations, skip counts)
    encoded: dict[str, Encoded]  # token ids and targets


def split_sources(cfg: GenericConfig) -> dict[str, str]:
    """Where each split is read from: its own key, else the DatasetDict folder given as data.train."""
    d = cfg.data
    in_train = set()
    if is_dataset_dict(d.train):
        in_train = set(json.loads(Path(d.train, "dataset_dict.json").read_text()).get("splits", []))
    sources = {"train": d.train}
    for role, given in (("validation", d.validation), ("test", d.test)):
        if given:
            sources[role] = given
        elif role == "validation" or in_train & set(SPLIT_NAMES[role]):
            sources[role] = d.train  # a DatasetDict without a validation split fails there, naming its splits
    return sources


def load_data(cfg: GenericConfig, tokenizer) -> TaskData:
    read = read_text_split if cfg.task == "classify" else read_tagged_split
    splits = {role: read(path, role, cfg.data) for role, path in split_sources(cfg).items()}
    for split in splits.values():
        if not split.examples:
            raise ValueError(f"{split.source}: no usable {split.name} examples ({split.counter.as_dict()})")
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
    from finetune.lora import apply_lora
    from finetune.pruning import prune_layers
    from modeling import ModernBertForSequenceClassification, ModernBertForTokenClassification

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


def make_optimizer(model: nn.Module, cfg: GenericConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: encoder, head and adapters each at their own LR; no weight decay on
    norms and biases (decay pulls a LayerNorm scale towards 0, not towards its initial 1)."""
    lrs = {"encoder": cfg.train.lr, "head": cfg.train.head_lr, "adapters": cfg.model.lora.lr}
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            kind = "adapters" if "lora_" in name else "head" if name.startswith(HEAD_PREFIXES) else "encoder"
            groups.setdefault((kind, param.dim() >= 2), []).append(param)
    return torch.optim.AdamW([{"params": params, "lr": lrs[kind], "weight_decay": cfg.train.weight_decay * decay,
                               "name": kind} for (kind, decay), params in groups.items()])


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The example indices of each batch of one epoch: a fixed shuffle per (seed, epoch), so a resumed run sees the
    same order."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def collate(task: str, encoded: Encoded, idx, pad_id: int, n_labels: int, multi_label: bool):
    """Padded input ids, attention mask and targets of the examples `idx` (the model unpads internally, so padding
    costs no compute). Targets: a class id per text, a multi-hot row per text, or a label per token."""
    rows = [encoded.ids[i] for i in idx]
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, ids in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        mask[r, : len(ids)] = 1
    if task == "tokens":
        targets = torch.full((len(rows), width), IGNORE, dtype=torch.long)
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


def _save(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)  # a kill mid-save leaves the previous file intact


def _signature(config: dict) -> dict:
    """What a checkpoint or a finished run must share with the config that continues it (`config` as
    GenericConfig.to_dict() gives it): everything but logging and the resume switch."""
    values = json.loads(json.dumps(config))
    values.pop("logging", None)
    values.get("train", {}).pop("resume", None)
    return values


def _versions() -> dict:
    import datasets
    import peft

    return {"peft": peft.__version__, "datasets": datasets.__version__}


def _peak_memory_mb(device: torch.device, rss_before_mb: float) -> dict:
    if device.type == "cuda":
        return {"peak_cuda_allocated_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)}
    # The process's resident high-water mark (Linux: KiB) above its level at the start: model, data, activations.
    # 0 when the process had already peaked higher before this run (several runs in one process, as in tests).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_rss_increase_mb": round(max(rss - rss_before_mb, 0.0), 1)}


def export_model(model: nn.Module, tokenizer, folder: Path, cfg: GenericConfig, results: dict) -> None:
    """The trained model with its adapters merged into the base weights, as a stock transformers folder."""
    from finetune.lora import merged_copy
    from pretrain.tokenizer import save_tokenizer

    stock = merged_copy(model).eval()
    stock.save_pretrained(folder)
    # Pipelines then cut texts where training did (the encoder's tokenizer allows its whole context).
    tokenizer.model_max_length = cfg.model.max_length
    save_tokenizer(tokenizer, folder)
    write_model_card(folder, cfg, stock.config, results)


def write_model_card(folder: Path, cfg: GenericConfig, config, results: dict) -> None:
    """A card for the fine-tuned model (replacing the encoder card save_pretrained writes, which describes fill-mask):
    how to load it, its labels, its scores, how it was trained."""
    from finetune.icd.train import encoder_name

    classify = cfg.task == "classify"
    auto = "AutoModelForSequenceClassification" if classify else "AutoModelForTokenClassification"
    pipeline_tag = "text-classification" if classify else "token-classification"
    minimum = json.loads((folder / "config.json").read_text()).get("min_transformers_version", "4.48.0")
    metric = selection_metric(cfg.task, cfg.data.multi_label)
    scores = ", ".join(f"{role} {metric} {100 * m[metric]:.1f}" for role, m in results.items() if m)
    lora, prune = cfg.model.lora, getattr(config, "pruned_from", None)
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
        f"- LoRA: r {lora.r}, alpha {lora.alpha:g} on {', '.join(lora.target_modules)}, merged into the weights"
        if lora.enabled else "- full fine-tuning",
        f"- pruned: layers {prune['dropped']} of {prune['num_hidden_layers']} dropped ({prune['strategy']})"
        if prune else "- not pruned",
        f"- minimum transformers version: **{minimum}**", "",
    ]
    (folder / "README.md").write_text("\n".join(lines))


def main(cfg: GenericConfig) -> dict:
    """The whole run (see the module docstring); returns the report. A finished `out` returns its report."""
    from transformers import AutoTokenizer

    from finetune.icd.batches import device_and_dtype
    from finetune.icd.train import provenance
    from finetune.lora import trainable_summary
    from modeling import set_attention_backend
    from pretrain.metrics import MetricsLogger
    from pretrain.optim import wsd_lambda

    out, t = Path(cfg.out), cfg.train
    out.mkdir(parents=True, exist_ok=True)
    signature = _signature(cfg.to_dict())
    if (out / "report.json").is_file():
        previous = json.loads((out / "config.json").read_text()) if (out / "config.json").is_file() else {}
        if _signature(previous) == signature:
            print(f"[{cfg.task}] {out} holds this finished run; its report is returned (remove it to retrain)",
                  file=sys.stderr)
            return json.loads((out / "report.json").read_text())
        raise FileExistsError(f"{out}: holds a finished run of another config; choose another out")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    device, dtype = device_and_dtype(t.precision)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    set_attention_backend(cfg.model.attention_backend)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.init_from)
    data = load_data(cfg, tokenizer)
    model, dropped = build_model(cfg, data.labels)
    model.to(device)
    parameters = trainable_summary(model)  # on the model as trained: adapters and head under LoRA
    optimizer = make_optimizer(model, cfg)
    multi, n_labels, pad_id = cfg.task == "classify" and cfg.data.multi_label, len(data.labels), tokenizer.pad_token_id
    train_data = data.encoded["train"]
    steps_per_epoch = math.ceil(len(train_data.ids) / t.batch_size)
    total_steps = min(t.max_steps, t.epochs * steps_per_epoch) if t.max_steps else t.epochs * steps_per_epoch
    warmup = int(t.warmup_fraction * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(
        wsd_lambda, total_steps=total_steps, warmup_steps=warmup, decay_steps=total_steps - warmup,
        decay_shape="linear"))

    ckpt, best_path = out / "ckpt" / "state.pt", out / "ckpt" / "best.pt"
    state = {"epoch": 0, "batch": 0, "step": 0, "best": -1.0, "best_epoch": -1, "bad_epochs": 0, "done": False,
             "seconds": 0.0}
    if t.resume and ckpt.is_file():
        saved = torch.load(ckpt, map_location=device, weights_only=False)
        if saved["signature"] != signature:
            raise ValueError(f"{ckpt}: written by a run of another config; remove {out / 'ckpt'} to start over, or "
                             "choose another out")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        if saved["cuda_rng"] is not None:  # dropout on the GPU draws from these
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        state = saved["state"]
        print(f"[{cfg.task}] resuming at epoch {state['epoch'] + 1} batch {state['batch']} (step {state['step']})",
              file=sys.stderr)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
    logger = MetricsLogger(out, cfg.to_dict(), enabled=True, wandb_mode=cfg.logging.wandb,
                           project=cfg.logging.project, run_name=out.name, resume_step=state["step"] + 1)
    metric = selection_metric(cfg.task, cfg.data.multi_label)
    print(f"[{cfg.task}] {len(train_data.ids):,} train examples, {n_labels} labels, {total_steps} steps; training "
          f"{parameters['trainable_parameters']:,} of {parameters['parameters']:,} parameters "
          f"({parameters['trainable_percent']:.2f} %) on {device}", file=sys.stderr)

    def save_state():
        _save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
               "state": state, "torch_rng": torch.get_rng_state(), "signature": signature,
               "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None}, ckpt)

    started, seconds_before = time.perf_counter(), state["seconds"]
    while not state["done"] and state["epoch"] < t.epochs:
        model.train()
        batches = epoch_batches(len(train_data.ids), t.batch_size, t.seed, state["epoch"])
        for b in range(state["batch"], len(batches)):
            input_ids, mask, targets = collate(cfg.task, train_data, batches[b], pad_id, n_labels, multi)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                loss = model(input_ids.to(device), mask.to(device), labels=targets.to(device)).loss
            loss.backward()
            if t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], t.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            state["batch"] = b + 1
            state["seconds"] = seconds_before + time.perf_counter() - started
            if state["step"] % cfg.logging.every_steps == 0:
                lrs = {f"lr_{group['name']}": group["lr"] for group in optimizer.param_groups}
                logger.log(state["step"], loss=loss.item(), **lrs, epoch=state["epoch"])
            if state["step"] % t.checkpoint_every_steps == 0:
                save_state()
            if state["step"] >= total_steps:
                break
        # End of an epoch (or of max_steps): model selection on the validation score.
        val_probs = predict(model, cfg, data.encoded["validation"], pad_id, n_labels, device, dtype)
        score = evaluate(cfg, data.labels, data.splits["validation"], data.encoded["validation"], val_probs)[metric]
        logger.log(state["step"], **{f"val_{metric}": score}, epoch=state["epoch"])
        if score > state["best"]:
            state.update(best=score, best_epoch=state["epoch"], bad_epochs=0)
            _save({"model": model.state_dict()}, best_path)
        else:
            state["bad_epochs"] += 1
        print(f"[{cfg.task}] epoch {state['epoch'] + 1} step {state['step']} val {metric} {score:.4f} (best "
              f"{state['best']:.4f} @ epoch {state['best_epoch'] + 1})", file=sys.stderr)
        state["epoch"] += 1
        state["batch"] = 0
        state["done"] = state["bad_epochs"] >= t.patience or state["step"] >= total_steps
        state["seconds"] = seconds_before + time.perf_counter() - started
        save_state()
    logger.close()

    # The best epoch's weights (adapters unmerged, as trained) give the reported metrics and predictions.
    model.load_state_dict(torch.load(best_path, map_location=device, weights_only=True)["model"])
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
    report = {
        "task": cfg.task, "multi_label": multi, "labels": data.labels, "selection_metric": metric,
        "best_epoch": state["best_epoch"] + 1, "epochs": state["epoch"], "steps": state["step"],
        "train_seconds": round(state["seconds"], 1),
        **results,
        "data": data_report,
        "parameters": parameters,
        "lora": asdict(cfg.model.lora),
        "prune": {**asdict(cfg.model.prune), "dropped": dropped, "layers": model.config.num_hidden_layers},
        **_peak_memory_mb(device, rss_before),
        "model": str(out / "model"), "init_from": cfg.model.init_from,
        "provenance": {**provenance(device), **_versions()},
    }
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")  # last: marks the run finished
    shutil.rmtree(out / "ckpt", ignore_errors=True)  # the finished model is in model/; resume state is moot
    return report


def format_summary(report: dict) -> str:
    """The lines `cmbert finetune classify|tokens train` prints."""
    keys = (("accuracy", "f1_micro", "f1_macro") if report["task"] == "classify"
            else ("precision", "recall", "f1", "word_accuracy"))
    lines = []
    for role in EVAL_SPLITS:
        if report.get(role):
            lines.append(f"{role:<10s} " + "  ".join(f"{k} {100 * report[role][k]:.1f}" for k in keys)
                         + f"  ({report[role]['examples']:,} examples)")
    p = report["parameters"]
    how = (f"LoRA r {report['lora']['r']}" if report["lora"]["enabled"] else "full fine-tuning") + (
        f", {len(report['prune']['dropped'])} layers pruned" if report["prune"]["dropped"] else "")
    lines.append(f"trained {p['trainable_parameters']:,} of {p['parameters']:,} parameters "
                 f"({p['trainable_percent']:.2f} %, {how}); {report['steps']} steps in {report['train_seconds']} s, "
                 f"best epoch {report['best_epoch']}")
    lines.append(f"model: {report['model']}; report: {Path(report['model']).parent / 'report.json'}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None, task: str = "classify") -> GenericConfig:
    parser = argparse.ArgumentParser(prog=f"cmbert finetune {task} train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help=f"configs/finetune/{task}/NAME.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. train.lr=3e-5 model.lora.enabled=true")
    args = parser.parse_args(argv)
    return load_generic_config(args.config, args.overrides, task=task)


if __name__ == "__main__":  # python -m finetune.generic.train {classify|tokens} --config ... [overrides]
    if len(sys.argv) < 2 or sys.argv[1] not in ("classify", "tokens"):
        sys.exit("usage: python -m finetune.generic.train {classify|tokens} --config FILE [key=value ...]")
    print(format_summary(main(parse_args(sys.argv[2:], sys.argv[1]))))
