"""`cmbert finetune icd train`: fine-tune encoders for ICD coding, compare them with baselines on one split.

For every encoder folder in `model.init_from` and every seed, one run:
    tokenize (cached) -> fresh head -> AdamW, linear warmup and decay -> after each epoch, validation mAP: keep the best
    model, stop after `patience` epochs without improvement -> best model: one global threshold tuned on validation
    micro-F1 -> test metrics -> a model folder (`cmbert/core/label_attention.py`) that `cmbert predict icd` loads.
Training is the core loop (`cmbert.core.loop`): a killed run resumes from its newest checkpoint (every
`checkpoint_every_steps` and at each epoch end) with the same data order and RNG, so the finished model does not
depend on where it was interrupted; a rerun returns each finished run's result.json, and refuses a checkpoint or a
result that another config wrote (the run's config.json holds what it depends on: `run_config`).

Baselines on the same split: TF-IDF + one-vs-rest logistic regression, and each encoder truncated to its first
512 tokens. The report (`report.json`, `report.md`, PNGs) holds every system's test metrics (mean +- std over seeds),
metrics by note length, frequent vs rare codes, and a paired bootstrap of micro-F1 against the TF-IDF baseline.

Layout of `out`:
    runs/<encoder>-<variant>-seed<k>/   ckpt/ (resume state), best/ (best so far), model/ (final), config.json,
                                        metrics.jsonl, scores.npz (val/test scores), result.json (written last)
    baselines/tfidf/                    model.joblib, scores.npz, result.json
    cache/                              tokenized splits
    report.json, report.md, f1_vs_frequency.png, pr_curve.png
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from cmbert.core.config import zero_settings
from cmbert.core.errors import UserError
from cmbert.core.label_attention import IcdMeta, IcdModel, StateCache, predict_scores
from cmbert.core.loop import finished_report, open_run_log, remove_checkpoints, resume, train_epochs, wsd_lambda
from cmbert.core.lora import apply_lora, trainable_summary
from cmbert.core.multilabel import compute_metrics, tune_threshold
from cmbert.core.notes import TokenizedNotes, cached_tokenization, collate, token_budget_batches
from cmbert.core.runtime import device_and_dtype, encoder_name, init_distributed, provenance
from cmbert.core.tokenizer_files import tokenizer_sha256
from cmbert.data.icd_dataset import load_labels, read_split
from cmbert.finetune.icd.config import IcdConfig, IcdEvalConfig
from cmbert.finetune.icd.report import write_report
from cmbert.finetune.icd.terms import evidence_terms
from cmbert.modeling import enable_checkpointing

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


def run_config(cfg: IcdConfig, init_from: str, seed: int, variant: Variant) -> dict:
    """What one run of the comparison depends on, its config signature (`cmbert.core.loop.run_signature`): the
    recipe's model and train sections with this run's encoder, seed and reading, and the dataset (folder and its
    prepare report). Not the other encoders and seeds, the baselines or the report's settings: a comparison can grow
    a seed or an encoder around its finished runs."""
    config = cfg.to_dict()
    for key in ("out", "cache", "seeds", "eval"):
        config.pop(key)
    config["model"]["init_from"] = str(init_from)
    report = Path(cfg.data) / "report.json"
    config["run"] = {"seed": seed, "variant": asdict(variant),
                     "dataset_report_sha256": hashlib.sha256(report.read_bytes()).hexdigest()
                     if report.is_file() else None}
    return config


def deepspeed_engine(model: IcdModel, optimizer, scheduler, t, device: torch.device, dtype: torch.dtype):
    """The DeepSpeed engine (data parallel; ZeRO-1/2 shard the optimizer state) and the optimizer and schedule it
    drives."""
    # Imported here, not at the top: deepspeed takes seconds to import and logs its accelerator probe, which every
    # other `cmbert finetune icd` command would pay for.
    import deepspeed

    ds_config = {**zero_settings(t.deepspeed), "train_micro_batch_size_per_gpu": 1,
                 "gradient_accumulation_steps": t.grad_accum, "gradient_clipping": t.grad_clip,
                 # DeepSpeed's bf16 mode (bf16 weights, fp32 master copy) is for GPUs; on CPU the fp32 weights
                 # stay and autocast alone computes in bf16.
                 "bf16": {"enabled": dtype == torch.bfloat16 and device.type == "cuda"},
                 "zero_allow_untested_optimizer": True,
                 "steps_per_print": 10**9}
    engine, optimizer, _, scheduler = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                                           config=ds_config)
    return engine, optimizer, scheduler


def train_run(cfg: IcdConfig, init_from: str, seed: int, variant: Variant, labels, tokenizer, data: dict[str, Split],
              run_dir: Path) -> dict | None:
    """One encoder, one seed, one variant: train (the core loop, `cmbert.core.loop`), select, tune the threshold,
    save; returns the run's result (None on data-parallel ranks other than 0). A finished run of this config returns
    its result.json; one of another config is refused."""
    t = cfg.train
    config = run_config(cfg, init_from, seed, variant)
    if (result := finished_report(run_dir, config, f"icd {run_dir.name}", report="result.json")) is not None:
        return result  # finished earlier (a rerun of the comparison after a kill)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    device, dtype = device_and_dtype(t.precision)
    rank, world = 0, 1
    if t.deepspeed is not None:
        rank, world, device = init_distributed()
    train = data["train"]
    model = build_model(cfg, init_from, seed, variant, labels, tokenizer, train).to(device)
    model.encoder.set_attention_backend(cfg.model.attention_backend)  # this run's encoder only, not process-wide
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
    engine = None
    if t.deepspeed is not None:
        engine, optimizer, scheduler = deepspeed_engine(model, optimizer, scheduler, t, device, dtype)
    state = resume(run_dir, model, optimizer, scheduler, config, device, f"icd {run_dir.name}", enabled=t.resume,
                   engine=engine)
    parameters = trainable_summary(model)
    logger = open_run_log(run_dir, config, cfg.logging, state, enabled=rank == 0)
    cls_id, sep_id = model.config.cls_token_id, model.config.sep_token_id
    best_dir = run_dir / "best"
    caches: dict[str, StateCache] = {}
    frozen = False  # in a head warm-up epoch

    def cache(split: str) -> StateCache | None:
        """States of the frozen encoder for the head warm-up epochs, when they fit the memory budget."""
        if split not in caches and StateCache.nbytes(data[split].notes, variant.max_length,
                                                     model.config.hidden_size) <= t.state_cache_gb * 2**30:
            caches[split] = StateCache(model, data[split].notes, t.tokens_per_batch, t.max_notes_per_batch,
                                       device, dtype)
        return caches.get(split)

    def on_epoch_start(epoch: int) -> None:
        """LP-FT: a head warm-up epoch freezes the encoder (and reads its cached states); the first fine-tuning
        epoch unfreezes it and drops the caches."""
        nonlocal frozen
        frozen = epoch < t.head_warmup_epochs
        for p in encoder_trainable:
            p.requires_grad_(not frozen)
        if frozen:
            model.encoder.eval()  # no dropout in the states the head learns from
        else:
            caches.clear()

    def batches(epoch: int) -> list[np.ndarray]:
        found = token_budget_batches(lengths, t.tokens_per_batch, t.max_notes_per_batch,
                                     rng=np.random.default_rng([seed, epoch]))
        if world > 1:  # every rank the same number of whole accumulation steps, so they step together
            per_rank = len(found) // world // t.grad_accum * t.grad_accum
            found = found[rank::world][:per_rank]
        return found

    def step_loss(idx: np.ndarray) -> tuple[torch.Tensor, int]:
        labels_b = torch.from_numpy(train.Y[idx].astype(np.float32)).to(device)
        if frozen and cache("train") is not None:
            h, note_cu = caches["train"].batch(idx)
            return F.binary_cross_entropy_with_logits(model.classify(h.to(dtype), note_cu), labels_b), 0
        batch = collate([train.notes.note(i) for i in idx], variant.max_length, cls_id, sep_id)
        logits = model(batch["input_ids"].to(device), batch["cu_seqlens"].to(device), batch["max_seqlen"],
                       batch["note_chunks"].to(device))
        # Logits are fp32 (IcdModel.forward), so the loss is fp32 under autocast too. Fine-tuning throughput counts
        # full forward + backward steps only.
        return F.binary_cross_entropy_with_logits(logits, labels_b), 0 if frozen else int(batch["input_ids"].numel())

    def validate() -> tuple[float, dict]:
        """Validation mAP, Edin's early-stopping metric."""
        val = data["val"]
        scores = predict_scores(model, val.notes, t.tokens_per_batch, t.max_notes_per_batch, device, dtype,
                                cache("val") if frozen else None)
        return compute_metrics(val.Y, scores, 0.5, metrics=["map"])["map"], {}

    def keep_best() -> None:
        if rank == 0:
            model.save(best_dir, tokenizer)

    state = train_epochs(model, optimizer, scheduler, state, t, t.max_steps, out=run_dir, config=config,
                         device=device, dtype=dtype, logger=logger, log_every=cfg.logging.every_steps,
                         name=f"icd {run_dir.name}", metric="map", step_loss=step_loss, validate=validate,
                         batches=batches, on_epoch_start=on_epoch_start, keep_best=keep_best,
                         grad_accum=t.grad_accum, engine=engine)
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
        "best_epoch": state["best_epoch"] + 1, "steps": state["step"], "train_seconds": round(state["seconds"], 1),
        "train_tokens_per_s": round(state["tokens"] / state["token_seconds"], 1) if state["tokens"] else None,
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
    (run_dir / "result.json").write_text(json.dumps(result, indent=1) + "\n")  # last: marks the run finished
    remove_checkpoints(run_dir)  # the finished model is in model/; resume state is moot
    return result


def run_tfidf(cfg: IcdConfig, dataset: Path, labels, data: dict[str, Split], out: Path) -> dict:
    # Imported here: scikit-learn takes a while to import, and only this baseline needs it.
    from cmbert.finetune.icd.baselines import TfidfConfig, run_tfidf_baseline

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


def main(cfg: IcdConfig) -> dict:
    """Every run of the comparison, then the report. Returns the report."""
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
    out, dataset = Path(out), Path(dataset)
    labels = load_labels(dataset)
    results, first = [], None
    device, dtype = device_and_dtype(precision)
    for folder in models:
        model, tokenizer = IcdModel.load(folder, device)
        if model.meta.codes != labels.codes:
            raise UserError(f"{folder} predicts {len(model.meta.codes)} codes that are not {dataset}'s "
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
