"""`cmbert finetune icd train`: fine-tune encoders for ICD coding, compare them with baselines on one split.

For every encoder folder in `model.init_from` and every seed, one run:
    tokenize (cached) -> fresh head -> AdamW, linear warmup and decay -> after each epoch, validation mAP: keep the best
    model, stop after `patience` epochs without improvement -> best model: one global threshold tuned on validation
    micro-F1 -> test metrics -> a model folder (`finetune/icd/model.py`) that `cmbert predict icd` loads.
A killed run resumes from its newest checkpoint (every `checkpoint_every_steps` and at each epoch end) with the same
data order, so the finished model does not depend on where it was interrupted.

Baselines on the same split: TF-IDF + one-vs-rest logistic regression, and each encoder truncated to its first
512 tokens. The report (`report.json`, `report.md`, PNGs) holds every system's test metrics (mean +- std over seeds),
metrics by note length, frequent vs rare codes, and a paired bootstrap of micro-F1 against the TF-IDF baseline.

Layout of `out`:
    runs/<encoder>-<variant>-seed<k>/   ckpt/ (resume state), best/ (best so far), model/ (final), metrics.jsonl,
                                        scores.npz (val/test scores), result.json
    baselines/tfidf/                    model.joblib, scores.npz, result.json
    cache/                              tokenized splits
    report.json, report.md, f1_vs_frequency.png, pr_curve.png
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from finetune.icd.batches import (
    StateCache,
    TokenizedNotes,
    cached_tokenization,
    collate,
    device_and_dtype,
    predict_scores,
    token_budget_batches,
)
from finetune.icd.config import IcdConfig, IcdEvalConfig, load_icd_config
from finetune.icd.model import IcdMeta, IcdModel
from finetune.icd.terms import evidence_terms
from finetune.lora import apply_lora, trainable_summary
from modeling import enable_checkpointing

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    notes: TokenizedNotes
    Y: np.ndarray  # bool [n, L]
    note_ids: list[str]


@dataclass
class Variant:
    """One way of reading notes: the full model, or the truncated baseline."""

    name: str
    max_length: int
    max_chunks: int


def variants(cfg: IcdConfig) -> list[Variant]:
    m = cfg.model
    out = [Variant(f"{m.max_length // 1024}k" if m.max_length % 1024 == 0 else str(m.max_length), m.max_length,
                   m.max_chunks)]
    cut = cfg.eval.truncated_length
    if "truncated" in cfg.eval.baselines and cut < m.max_length * m.max_chunks:
        # The first `cut` positions only (special tokens included), in chunks no longer than the full model's: an
        # 8k encoder reads one 512-token chunk, the 256-token demo encoder two of 256.
        length = min(cut, m.max_length)
        out.append(Variant(f"trunc{cut}", length, -(-cut // length)))
    return out


def load_split_data(dataset: Path, split: str, labels, tokenizer, max_tokens: int, cache: Path, tokenizer_sha: str,
                    ) -> Split:
    """Token ids (cached per tokenizer and cut) and labels of one split; note text is read, tokenized and dropped."""
    from finetune.icd.data import read_split

    report = json.loads((dataset / "report.json").read_text()) if (dataset / "report.json").is_file() else {}
    key = {"dataset": str(dataset.resolve()), "dataset_report": report, "split": split, "tokenizer": tokenizer_sha,
           "max_tokens": max_tokens}
    note_ids: list[str] = []
    codes: list[tuple[str, ...]] = []

    def texts():
        for example in read_split(dataset, split):
            note_ids.append(example.note_id)
            codes.append(example.codes)
            yield example.text

    notes = cached_tokenization(cache, key, texts(), tokenizer, max_tokens)
    if not note_ids:  # cached: the ids and labels are cheap to read again without keeping text
        for example in read_split(dataset, split):
            note_ids.append(example.note_id)
            codes.append(example.codes)
    Y = np.stack([labels.encode(c) for c in codes]) if codes else np.zeros((0, len(labels.codes)), dtype=bool)
    return Split(notes, Y, note_ids)


def _save_state(path: Path, model, optimizer, scheduler, state: dict, engine=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if engine is not None:  # every rank writes its shard of the optimizer state; `latest` names the newest
        tag = f"step{state['step']}"
        engine.save_checkpoint(str(path.parent), tag=tag, client_state={"state": dict(state)})
        if engine.global_rank == 0:  # save_checkpoint returns after every rank wrote: older tags can go
            for old in path.parent.glob("step*"):
                if old.name != tag:
                    shutil.rmtree(old, ignore_errors=True)
        return
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "state": state,
                "torch_rng": torch.get_rng_state()}, tmp)
    tmp.replace(path)  # a kill mid-save leaves the previous checkpoint intact


def _delayed(step: int, start: int, inner) -> float:
    return 0.0 if step < start else inner(step - start)


def build_model(cfg: IcdConfig, init_from: str, seed: int, variant: Variant, labels, tokenizer, train: Split,
                ) -> IcdModel:
    """A fresh model for one run: the encoder (pruned as `model.prune` says), LoRA adapters when `model.lora` is on,
    and the head (label queries from titles and the training notes' evidence terms)."""
    meta = IcdMeta(head=cfg.model.head, codes=labels.codes, titles=[labels.titles[c] for c in labels.codes],
                   kinds=[labels.kinds[c] for c in labels.codes],
                   train_counts=[labels.train_counts[c] for c in labels.codes], icd_version=labels.version,
                   max_length=variant.max_length, max_chunks=variant.max_chunks,
                   preprocess=labels.preprocess, max_words=labels.max_words, attention_dim=cfg.model.attention_dim,
                   queries_per_label=cfg.model.queries_per_label if cfg.model.head == "laat" else 1)
    terms = None
    if meta.queries_per_label > 1:
        terms = evidence_terms(train.notes, train.Y, meta.queries_per_label - 1, seed)
        found = [len(t) for t in terms]
        print(f"[icd] {variant.name}: evidence-term queries for {sum(n > 0 for n in found)} of {len(found)} codes "
              f"({sum(found)} terms)", flush=True)
    model = IcdModel.from_encoder(init_from, meta, len(train.notes), tokenizer, cfg.model.title_init, terms,
                                  cfg.model.prune)
    if cfg.model.lora.enabled:  # the pooled head's dense layer and classifier live in the encoder and stay trainable
        apply_lora(model.encoder, cfg.model.lora, keep_trainable=("head.", "classifier."))
    if cfg.model.gradient_checkpointing:
        enable_checkpointing(model.encoder)
    return model


def parameter_groups(model: IcdModel, cfg: IcdConfig) -> list[dict]:
    """Fresh parameters (the LAAT head, or transformers' classifier layer) train at head_lr, LoRA adapters at
    lora.lr, the rest of the encoder (all of it without LoRA) at lr; frozen parameters are left out."""
    is_head = lambda name: name.startswith(("head.", "encoder.classifier."))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"name": "encoder", "lr": cfg.train.lr,
               "params": [p for n, p in named if not is_head(n) and "lora_" not in n]},
              {"name": "head", "lr": cfg.train.head_lr, "params": [p for n, p in named if is_head(n)]},
              {"name": "lora", "lr": cfg.model.lora.lr, "params": [p for n, p in named if "lora_" in n]}]
    return [g for g in groups if g["params"]]


def train_run(cfg: IcdConfig, init_from: str, seed: int, variant: Variant, labels, tokenizer, data: dict[str, Split],
              run_dir: Path) -> dict:
    """One encoder, one seed, one variant: train, select, tune the threshold, save; returns the run's result."""
    from finetune.icd.metrics import compute_metrics, tune_threshold
    from modeling import set_attention_backend
    from pretrain.metrics import MetricsLogger
    from pretrain.optim import wsd_lambda

    t = cfg.train
    result_path = run_dir / "result.json"
    if result_path.is_file():  # finished earlier (a rerun of the comparison after a kill)
        return json.loads(result_path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    device, dtype = device_and_dtype(t.precision)
    rank, world = 0, 1
    if t.deepspeed is not None:
        from pretrain.train import init_distributed

        rank, world, device = init_distributed()
    set_attention_backend(cfg.model.attention_backend)
    train = data["train"]
    model = build_model(cfg, init_from, seed, variant, labels, tokenizer, train).to(device)
    groups = parameter_groups(model, cfg)
    encoder_trainable = [p for p in model.encoder.parameters() if p.requires_grad]  # frozen in the head warm-up
    optimizer = torch.optim.AdamW(groups, weight_decay=t.weight_decay)
    lengths = np.diff(train.notes.offsets)
    batches_per_epoch = len(token_budget_batches(lengths, t.tokens_per_batch, t.max_notes_per_batch))
    steps_per_epoch = max(1, batches_per_epoch // world // t.grad_accum)
    total_steps = t.max_steps or t.epochs * steps_per_epoch
    # The head warms up and decays over all steps; the encoder waits out the head warm-up epochs at LR 0, then
    # warms up and decays over the rest.
    frozen_steps = min(t.head_warmup_epochs * steps_per_epoch, total_steps - 1)
    head_warmup = int(t.warmup_fraction * total_steps)
    encoder_warmup = int(t.warmup_fraction * (total_steps - frozen_steps))
    head_lambda = partial(wsd_lambda, total_steps=total_steps, warmup_steps=head_warmup,
                          decay_steps=total_steps - head_warmup, decay_shape="linear")
    encoder_lambda = partial(_delayed, start=frozen_steps, inner=partial(
        wsd_lambda, total_steps=total_steps - frozen_steps, warmup_steps=encoder_warmup,
        decay_steps=total_steps - frozen_steps - encoder_warmup, decay_shape="linear"))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, [head_lambda if g["name"] == "head" else encoder_lambda for g in groups])
    group_index = {g["name"]: i for i, g in enumerate(groups)}

    engine = None
    if t.deepspeed is not None:
        import deepspeed

        from pretrain.config import zero_settings

        ds_config = {**zero_settings(t.deepspeed), "train_micro_batch_size_per_gpu": 1,
                     "gradient_accumulation_steps": t.grad_accum, "gradient_clipping": t.grad_clip,
                     # DeepSpeed's bf16 mode (bf16 weights, fp32 master copy) is for GPUs; on CPU the fp32 weights
                     # stay and autocast alone computes in bf16.
                     "bf16": {"enabled": dtype == torch.bfloat16 and device.type == "cuda"},
                     "zero_allow_untested_optimizer": True,
                     "steps_per_print": 10**9}
        engine, optimizer, _, scheduler = deepspeed.initialize(model=model, optimizer=optimizer,
                                                               lr_scheduler=scheduler, config=ds_config)

    ckpt = run_dir / "ckpt" / "state.pt"
    state = {"epoch": 0, "batch": 0, "step": 0, "best_map": -1.0, "best_epoch": -1, "bad_epochs": 0, "done": False}
    if t.resume and engine is not None and (ckpt.parent / "latest").is_file():
        _, client = engine.load_checkpoint(str(ckpt.parent), tag=None)  # DeepSpeed's own (sharded) state
        state = client["state"]
    elif t.resume and ckpt.is_file():
        saved = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        state = saved["state"]
        print(f"[icd] {run_dir.name}: resuming at epoch {state['epoch']} batch {state['batch']} "
              f"(step {state['step']})", file=sys.stderr)
    parameters = trainable_summary(model)
    logger = MetricsLogger(run_dir, cfg.to_dict(), enabled=rank == 0, wandb_mode=cfg.logging.wandb,
                           project=cfg.logging.project, run_name=run_dir.name, resume_step=state["step"] + 1)
    cls_id, sep_id = model.config.cls_token_id, model.config.sep_token_id
    best_dir = run_dir / "best"
    tokens_seen, train_seconds, t0 = 0, 0.0, time.perf_counter()
    caches: dict[str, StateCache] = {}

    def cache(split: str) -> StateCache | None:
        """States of the frozen encoder for the head warm-up epochs, when they fit the memory budget."""
        if split not in caches and StateCache.nbytes(data[split].notes, variant.max_length,
                                                     model.config.hidden_size) <= t.state_cache_gb * 2**30:
            caches[split] = StateCache(model, data[split].notes, t.tokens_per_batch, t.max_notes_per_batch,
                                       device, dtype)
        return caches.get(split)

    while not state["done"] and state["epoch"] < t.epochs:
        frozen = state["epoch"] < t.head_warmup_epochs
        model.train()
        for p in encoder_trainable:
            p.requires_grad_(not frozen)
        if frozen:
            model.encoder.eval()  # no dropout in the states the head learns from
        else:
            caches.clear()
        epoch_batches = token_budget_batches(lengths, t.tokens_per_batch, t.max_notes_per_batch,
                                             rng=np.random.default_rng([seed, state["epoch"]]))
        if world > 1:  # every rank the same number of whole accumulation steps, so they step together
            per_rank = len(epoch_batches) // world // t.grad_accum * t.grad_accum
            epoch_batches = epoch_batches[rank::world][:per_rank]
        for b in range(state["batch"], len(epoch_batches)):
            idx = epoch_batches[b]
            started = time.perf_counter()
            labels_b = torch.from_numpy(train.Y[idx].astype(np.float32)).to(device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                if frozen and cache("train") is not None:
                    h, note_cu = caches["train"].batch(idx)
                    logits = model.classify(h.to(dtype), note_cu)
                else:
                    batch = collate([train.notes.note(i) for i in idx], variant.max_length, cls_id, sep_id)
                    logits = model(batch["input_ids"].to(device), batch["cu_seqlens"].to(device),
                                   batch["max_seqlen"], batch["note_chunks"].to(device))
            loss = F.binary_cross_entropy_with_logits(logits, labels_b)
            if engine is not None:
                engine.backward(loss)  # DeepSpeed divides by gradient_accumulation_steps and all-reduces
                engine.step()  # optimizer and LR schedule at the accumulation boundary only
            else:
                (loss / t.grad_accum).backward()
            if not frozen:  # fine-tuning throughput: full forward + backward steps only
                tokens_seen += int(batch["input_ids"].numel())
                train_seconds += time.perf_counter() - started
            state["batch"] = b + 1
            if (b + 1) % t.grad_accum and b + 1 < len(epoch_batches):
                continue
            if engine is None:
                if t.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            if state["step"] % cfg.logging.every_steps == 0:
                rate = tokens_seen / max(train_seconds, 1e-9)
                lrs = {name: scheduler.get_last_lr()[i] for name, i in group_index.items()}
                logger.log(state["step"], loss=loss.item(), lr=lrs.get("encoder", lrs.get("lora")),
                           head_lr=lrs["head"], tokens_per_s=rate, epoch=state["epoch"],
                           **({"lora_lr": lrs["lora"]} if "lora" in lrs else {}))
            if state["step"] % t.checkpoint_every_steps == 0:
                _save_state(ckpt, model, optimizer, scheduler, state, engine)
            if t.max_steps and state["step"] >= t.max_steps:
                break
        # End of an epoch (or of max_steps): model selection on validation mAP, Edin's early-stopping metric.
        val = data["val"]
        scores = predict_scores(model, val.notes, t.tokens_per_batch, t.max_notes_per_batch, device, dtype,
                                cache("val") if frozen else None)
        val_map = compute_metrics(val.Y, scores, 0.5, metrics=["map"])["map"]
        logger.log(state["step"], val_map=val_map, epoch=state["epoch"])
        if val_map > state["best_map"]:
            state.update(best_map=val_map, best_epoch=state["epoch"], bad_epochs=0)
            if rank == 0:
                model.save(best_dir, tokenizer)
        else:
            state["bad_epochs"] += 1
        state["epoch"] += 1
        state["batch"] = 0
        stop = state["bad_epochs"] >= t.patience or bool(t.max_steps and state["step"] >= t.max_steps)
        state["done"] = stop
        _save_state(ckpt, model, optimizer, scheduler, state, engine)
        if rank == 0:
            print(f"[icd] {run_dir.name}: epoch {state['epoch']} step {state['step']} val mAP {val_map:.4f} "
                  f"(best {state['best_map']:.4f} @ epoch {state['best_epoch'] + 1})", file=sys.stderr)
    logger.close()
    seconds = time.perf_counter() - t0
    if world > 1:
        torch.distributed.barrier()  # rank 0 has saved best/
    if rank != 0:
        return None  # rank 0 scores, tunes and saves; the others are done

    best, _ = IcdModel.load(best_dir, device)
    val_scores = predict_scores(best, data["val"].notes, t.tokens_per_batch, t.max_notes_per_batch, device, dtype)
    threshold = tune_threshold(data["val"].Y, val_scores)
    test_scores = predict_scores(best, data["test"].notes, t.tokens_per_batch, t.max_notes_per_batch, device, dtype)
    result = {
        "system": run_dir.name, "dir": str(run_dir), "init_from": str(init_from), "seed": seed, "variant": variant.name,
        "max_length": variant.max_length, "max_chunks": variant.max_chunks, "threshold": threshold,
        "best_epoch": state["best_epoch"] + 1, "steps": state["step"], "train_seconds": round(seconds, 1),
        "train_tokens_per_s": round(tokens_seen / train_seconds, 1) if tokens_seen else None,
        **parameters, "world_size": world,
        "lora": asdict(cfg.model.lora) if cfg.model.lora.enabled else None,
        "prune": {**asdict(cfg.model.prune), "dropped": best.config.pruned_from["dropped"]}
        if cfg.model.prune.strategy != "none" else None,
        "deepspeed": t.deepspeed,
        "val": compute_metrics(data["val"].Y, val_scores, threshold),
        "test": compute_metrics(data["test"].Y, test_scores, threshold),
    }
    best.meta.threshold = threshold
    best.meta.training = {"config": cfg.to_dict(), "result": {k: v for k, v in result.items()},
                          "provenance": provenance(device)}
    best.save(run_dir / "model", tokenizer)
    np.savez_compressed(run_dir / "scores.npz", val=val_scores, test=test_scores)
    (run_dir / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    shutil.rmtree(run_dir / "ckpt", ignore_errors=True)  # the finished model is in model/; resume state is moot
    return result


def provenance(device: torch.device) -> dict:
    import transformers

    from pretrain.train import git_sha

    return {"git_sha": git_sha(), "device": str(device), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": sys.version.split()[0]}


def run_tfidf(cfg: IcdConfig, dataset: Path, labels, data: dict[str, Split], out: Path) -> dict:
    from finetune.icd.baselines import TfidfConfig, run_tfidf_baseline
    from finetune.icd.metrics import compute_metrics, tune_threshold

    out.mkdir(parents=True, exist_ok=True)
    if (out / "result.json").is_file():
        return json.loads((out / "result.json").read_text())
    scores, val_map, seconds = None, {}, 0.0
    for c in cfg.eval.tfidf_c:  # the C with the best validation mAP, as encoders keep their best epoch
        fitted = run_tfidf_baseline(dataset, TfidfConfig(C=c, n_jobs=cfg.eval.tfidf_jobs))
        val_map[c] = compute_metrics(data["val"].Y, fitted["val"], 0.5, ["map"])["map"]
        seconds += fitted["seconds"]
        if scores is None or val_map[c] > val_map[scores["model"].config.C]:
            scores = fitted
    scores["model"].save(out / "model.joblib")
    threshold = tune_threshold(data["val"].Y, scores["val"])
    result = {"system": "tfidf-lr", "dir": str(out), "variant": "tfidf", "seed": None, "threshold": threshold,
              "C": scores["model"].config.C, "val_map_by_C": {str(c): m for c, m in val_map.items()},
              "train_seconds": round(seconds, 1),
              "val": compute_metrics(data["val"].Y, scores["val"], threshold),
              "test": compute_metrics(data["test"].Y, scores["test"], threshold)}
    np.savez_compressed(out / "scores.npz", val=scores["val"], test=scores["test"])
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def encoder_name(folder: str) -> str:
    path = Path(folder).resolve()
    return path.name if path.name not in ("model", "best") else f"{path.parent.name}-{path.name}"


def main(cfg: IcdConfig) -> dict:
    """Every run of the comparison, then the report. Returns the report."""
    from transformers import AutoTokenizer

    from finetune.icd.data import load_labels
    from finetune.icd.report import write_report
    from pretrain.packing import tokenizer_sha256

    out, dataset = Path(cfg.out), Path(cfg.data)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
    labels = load_labels(dataset)
    results, data_by_cut = [], {}
    cache = Path(cfg.cache) if cfg.cache else out / "cache"
    for init_from in cfg.model.init_from:
        tokenizer = AutoTokenizer.from_pretrained(init_from)
        sha = tokenizer_sha256(init_from)
        for variant in variants(cfg):
            cut = variant.max_chunks * (variant.max_length - 2)
            key = (sha, cut)
            if key not in data_by_cut:
                data_by_cut[key] = {s: load_split_data(dataset, s, labels, tokenizer, cut, cache, sha)
                                    for s in SPLITS}
            for seed in cfg.seeds:
                run_dir = out / "runs" / f"{encoder_name(init_from)}-{variant.name}-seed{seed}"
                results.append(train_run(cfg, init_from, seed, variant, labels, tokenizer, data_by_cut[key], run_dir))
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return {}  # data-parallel ranks other than 0 train only; rank 0 runs the baselines and writes the report
    any_data = next(iter(data_by_cut.values()))
    if "tfidf" in cfg.eval.baselines:
        results.append(run_tfidf(cfg, dataset, labels, any_data, out / "baselines" / "tfidf"))
    return write_report(out, labels, results, any_data["test"], cfg.eval, cfg.data)


def evaluate(models: list[str], dataset: str | Path, out: str | Path, split: str = "test",
             eval_cfg: IcdEvalConfig | None = None, precision: str = "auto") -> dict:
    """Trained model folders on one split of a prepared dataset, each at its own stored threshold, side by side;
    significance against the first. The models must predict the dataset's label set."""
    from finetune.icd.data import load_labels
    from finetune.icd.metrics import compute_metrics
    from finetune.icd.report import write_report
    from pretrain.packing import tokenizer_sha256

    out, dataset = Path(out), Path(dataset)
    labels = load_labels(dataset)
    results, first = [], None
    device, dtype = device_and_dtype(precision)
    for folder in models:
        model, tokenizer = IcdModel.load(folder, device)
        if model.meta.codes != labels.codes:
            raise ValueError(f"{folder} predicts {len(model.meta.codes)} codes that are not {dataset}'s "
                             f"{len(labels.codes)} labels (train it on this dataset)")
        cut = model.meta.max_chunks * (model.meta.max_length - 2)
        sha = tokenizer_sha256(folder)
        data = load_split_data(dataset, split, labels, tokenizer, cut, out / "cache", sha)
        first = first or data
        scores = predict_scores(model, data.notes, max(16384, model.meta.max_length), 16, device, dtype)
        name = encoder_name(folder) if len(set(map(encoder_name, models))) == len(models) else str(len(results))
        run_dir = out / "eval" / name
        run_dir.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(run_dir / "scores.npz", **{split: scores})
        results.append({"system": name, "dir": str(run_dir), "model": str(folder), "variant": model.meta.head,
                        "seed": None, "threshold": model.meta.threshold,
                        split: compute_metrics(data.Y, scores, model.meta.threshold)})
    return write_report(out, labels, results, first, eval_cfg or IcdEvalConfig(), str(dataset), split,
                        reference=results[0]["system"])


def parse_args(argv: list[str] | None = None) -> IcdConfig:
    parser = argparse.ArgumentParser(prog="cmbert finetune icd train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="configs/finetune/icd/NAME.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. train.lr=3e-5 seeds=[0,1,2]")
    args = parser.parse_args(argv)
    return load_icd_config(args.config, args.overrides)


if __name__ == "__main__":
    main(parse_args())
