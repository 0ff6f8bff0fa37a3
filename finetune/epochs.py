"""The resumable epoch loop the example-list recipes share (`cmbert finetune classify | tokens | qa train`).

A recipe reads its data and builds its model, then:

    report = finished_report(out, config, name)       # a finished run of this config: done
    device, dtype = training_device(precision, attention_backend)
    optimizer = make_optimizer(model, weight_decay, lrs, head_prefixes)
    scheduler, total_steps = linear_schedule(optimizer, t, n_items)
    state = resume(out, model, optimizer, scheduler, config, device, name)
    logger = open_run_log(out, config, logging, state)
    state = train_epochs(model, optimizer, scheduler, state, t, total_steps, n_items, out=..., ...,
                         step_loss=lambda idx: ..., validate=lambda: (score, remember))
    ... the best epoch's weights are loaded: score the splits, export, report.json (with run_facts) written last,
    remove_checkpoints(out)

`step_loss(indices)` returns the loss of one batch (the recipe collates its own inputs and targets); `validate()`
returns the validation score that selects the best epoch, and a dict the recipe wants kept with the best weights (QA's
tuned no-answer threshold). Examples are shuffled per (seed, epoch), and a checkpoint (every
`checkpoint_every_steps` and at each epoch end) holds the weights, optimizer, schedule, RNG and loop position, so a
killed run resumes to the same model it would have trained uninterrupted.
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

CHECKPOINT, BEST = Path("ckpt") / "state.pt", Path("ckpt") / "best.pt"


def training_device(precision: str, attention_backend: str) -> tuple[torch.device, torch.dtype]:
    """The device and autocast dtype a run trains with (peak-memory counters reset there), the attention backend
    set."""
    from finetune.icd.batches import device_and_dtype
    from modeling import set_attention_backend

    device, dtype = device_and_dtype(precision)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    set_attention_backend(attention_backend)
    return device, dtype


def open_run_log(out: Path, config: dict, logging, state: dict):
    """config.json beside the run, and the metrics logger (wandb offline unless `logging.wandb` opts in), continuing
    at the resumed step."""
    from pretrain.metrics import MetricsLogger

    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    return MetricsLogger(out, config, enabled=True, wandb_mode=logging.wandb, project=logging.project,
                         run_name=out.name, resume_step=state["step"] + 1)


def run_signature(config: dict) -> dict:
    """What a checkpoint or a finished run must share with the config that continues it (`config` as the recipe's
    to_dict() gives it): everything but logging and the resume switch."""
    values = json.loads(json.dumps(config))
    values.pop("logging", None)
    values.get("train", {}).pop("resume", None)
    return values


def finished_report(out: Path, config: dict, name: str) -> dict | None:
    """The report of a finished run of this config in `out`, None when there is none; a finished run of another
    config is an error (its model would be overwritten by one it does not describe)."""
    if not (out / "report.json").is_file():
        return None
    previous = json.loads((out / "config.json").read_text()) if (out / "config.json").is_file() else {}
    if run_signature(previous) != run_signature(config):
        raise FileExistsError(f"{out}: holds a finished run of another config; choose another out")
    print(f"[{name}] {out} holds this finished run; its report is returned (remove it to retrain)", file=sys.stderr)
    return json.loads((out / "report.json").read_text())


def make_optimizer(model: nn.Module, weight_decay: float, lrs: dict[str, float],
                   head_prefixes: tuple[str, ...]) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, `lrs` giving the encoder's, the head's and the adapters' learning rates;
    no weight decay on norms and biases (decay pulls a LayerNorm scale towards 0, not towards its initial 1)."""
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            kind = "adapters" if "lora_" in name else "head" if name.startswith(head_prefixes) else "encoder"
            groups.setdefault((kind, param.dim() >= 2), []).append(param)
    return torch.optim.AdamW([{"params": params, "lr": lrs[kind], "weight_decay": weight_decay * decay,
                               "name": kind} for (kind, decay), params in groups.items()])


def linear_schedule(optimizer: torch.optim.Optimizer, t, n_items: int) -> tuple[torch.optim.lr_scheduler.LambdaLR,
                                                                                  int]:
    """Linear warmup over `t.warmup_fraction` of the steps, then linear decay to 0; and the number of steps (epochs of
    `n_items` in batches of `t.batch_size`, capped by `t.max_steps` when set)."""
    from pretrain.optim import wsd_lambda

    steps_per_epoch = math.ceil(n_items / t.batch_size)
    total_steps = min(t.max_steps, t.epochs * steps_per_epoch) if t.max_steps else t.epochs * steps_per_epoch
    warmup = int(t.warmup_fraction * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, partial(
        wsd_lambda, total_steps=total_steps, warmup_steps=warmup, decay_steps=total_steps - warmup,
        decay_shape="linear")), total_steps


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The example indices of each batch of one epoch: a fixed shuffle per (seed, epoch), so a resumed run sees the
    same order."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def padded(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id rows as a right-padded [B, S] batch and its attention mask (the model unpads internally, so padding
    costs no compute)."""
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, ids in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        mask[r, : len(ids)] = 1
    return input_ids, mask


def save_atomically(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)  # a kill mid-save leaves the previous file intact


def resume(out: Path, model: nn.Module, optimizer, scheduler, config: dict, device: torch.device, name: str,
           enabled: bool = True) -> dict:
    """The loop state: a fresh one, or (when `enabled` and `out` holds a checkpoint) the checkpoint's, with the
    model, optimizer, schedule and RNG restored. A checkpoint of another config is an error."""
    state = {"epoch": 0, "batch": 0, "step": 0, "best": -math.inf, "best_epoch": -1, "best_extra": {},
             "bad_epochs": 0, "done": False, "seconds": 0.0}
    path = out / CHECKPOINT
    if not (enabled and path.is_file()):
        return state
    saved = torch.load(path, map_location=device, weights_only=False)
    if saved["signature"] != run_signature(config):
        raise ValueError(f"{path}: written by a run of another config; remove {path.parent} to start over, or "
                         "choose another out")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    if saved["cuda_rng"] is not None:  # dropout on the GPU draws from these
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    state = saved["state"]
    print(f"[{name}] resuming at epoch {state['epoch'] + 1} batch {state['batch']} (step {state['step']})",
          file=sys.stderr)
    return state


def train_epochs(model: nn.Module, optimizer, scheduler, state: dict, t, total_steps: int, n_items: int, *,
                 out: Path, config: dict, device: torch.device, dtype: torch.dtype, logger, log_every: int, name: str,
                 metric: str,
                 step_loss: Callable[[np.ndarray], torch.Tensor],
                 validate: Callable[[], tuple[float, dict]]) -> dict:
    """Epochs until `t.epochs`, `total_steps` or `t.patience` epochs without a better validation score; then the
    best epoch's weights are loaded into `model`. Returns the final loop state (steps, seconds, best epoch, score and
    what `validate` asked to keep)."""
    signature = run_signature(config)

    def save_state():
        save_atomically({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "state": state, "torch_rng": torch.get_rng_state(),
                         "signature": signature,
                         "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None},
                        out / CHECKPOINT)

    started, seconds_before = time.perf_counter(), state["seconds"]
    while not state["done"] and state["epoch"] < t.epochs:
        model.train()
        batches = epoch_batches(n_items, t.batch_size, t.seed, state["epoch"])
        for b in range(state["batch"], len(batches)):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                loss = step_loss(batches[b])
            loss.backward()
            if t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], t.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            state["batch"] = b + 1
            state["seconds"] = seconds_before + time.perf_counter() - started
            if state["step"] % log_every == 0:
                lrs = {f"lr_{group['name']}": group["lr"] for group in optimizer.param_groups}
                logger.log(state["step"], loss=loss.item(), **lrs, epoch=state["epoch"])
            if state["step"] % t.checkpoint_every_steps == 0:
                save_state()
            if state["step"] >= total_steps:
                break
        # End of an epoch (or of max_steps): model selection on the validation score.
        score, keep = validate()
        logger.log(state["step"], **{f"val_{metric}": score}, epoch=state["epoch"])
        if score > state["best"]:
            state.update(best=score, best_epoch=state["epoch"], best_extra=keep, bad_epochs=0)
            save_atomically({"model": model.state_dict()}, out / BEST)
        else:
            state["bad_epochs"] += 1
        print(f"[{name}] epoch {state['epoch'] + 1} step {state['step']} val {metric} {score:.4f} (best "
              f"{state['best']:.4f} @ epoch {state['best_epoch'] + 1})", file=sys.stderr)
        state["epoch"] += 1
        state["batch"] = 0
        state["done"] = state["bad_epochs"] >= t.patience or state["step"] >= total_steps
        state["seconds"] = seconds_before + time.perf_counter() - started
        save_state()
    logger.close()
    model.load_state_dict(torch.load(out / BEST, map_location=device, weights_only=True)["model"])
    return state


def remove_checkpoints(out: Path) -> None:
    """After report.json: the finished model is in model/, resume state is moot."""
    shutil.rmtree(out / CHECKPOINT.parent, ignore_errors=True)


def peak_memory_mb(device: torch.device, rss_before_mb: float) -> dict:
    if device.type == "cuda":
        return {"peak_cuda_allocated_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)}
    # The process's resident high-water mark (Linux: KiB) above its level at the start: model, data, activations.
    # 0 when the process had already peaked higher before this run (several runs in one process, as in tests).
    return {"peak_rss_increase_mb": round(max(rss_mb() - rss_before_mb, 0.0), 1)}


def rss_mb() -> float:
    """The process's resident high-water mark so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_facts(out: Path, model: nn.Module, settings, parameters: dict, dropped: list[int], device: torch.device,
              rss_before_mb: float) -> dict:
    """The report's entries on how the model was trained and where it went: trainable parameters, LoRA and pruning
    (`settings` is the recipe's model section), peak memory, the exported folder, provenance."""
    from dataclasses import asdict

    from finetune.icd.train import provenance

    return {
        "parameters": parameters,
        "lora": asdict(settings.lora),
        "prune": {**asdict(settings.prune), "dropped": dropped, "layers": model.config.num_hidden_layers},
        **peak_memory_mb(device, rss_before_mb),
        "model": str(out / "model"), "init_from": settings.init_from,
        "provenance": {**provenance(device), **package_versions()},
    }


def run_summary_lines(report: dict) -> list[str]:
    """The closing lines a recipe prints: what was trained (LoRA, pruned layers), steps, seconds, where it went."""
    p, dropped = report["parameters"], report["prune"]["dropped"]
    how = (f"LoRA r {report['lora']['r']}" if report["lora"]["enabled"] else "full fine-tuning") + (
        f", {len(dropped)} layer{'s' if len(dropped) > 1 else ''} pruned" if dropped else "")
    return [f"trained {p['trainable_parameters']:,} of {p['parameters']:,} parameters ({p['trainable_percent']:.2f} "
            f"%, {how}); {report['steps']} steps in {report['train_seconds']} s, best epoch {report['best_epoch']}",
            f"model: {report['model']}; report: {Path(report['model']).parent / 'report.json'}"]


def adaptation_card_lines(folder: Path, lora, config) -> list[str]:
    """The model card's lines on how the encoder was adapted (LoRA merged or full fine-tuning, pruned layers) and the
    transformers version the exported folder needs."""
    minimum = json.loads((folder / "config.json").read_text()).get("min_transformers_version", "4.48.0")
    prune = getattr(config, "pruned_from", None)
    return [
        f"- LoRA: r {lora.r}, alpha {lora.alpha:g} on {', '.join(lora.target_modules)}, merged into the weights"
        if lora.enabled else "- full fine-tuning",
        f"- pruned: layers {prune['dropped']} of {prune['num_hidden_layers']} dropped ({prune['strategy']})"
        if prune else "- not pruned",
        f"- minimum transformers version: **{minimum}**", "",
    ]


def package_versions() -> dict:
    import datasets
    import peft

    return {"peft": peft.__version__, "datasets": datasets.__version__}
