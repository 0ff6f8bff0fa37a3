"""The one resumable fine-tuning loop (`cmbert finetune classify | tokens | qa | icd | trajectory train`).

A recipe reads its data and builds its model, then, in this order:

    report = finished_report(out, config, name)       # a finished run of this config: done; of another: refused
    device, dtype = training_device(precision, attention_backend)
    optimizer = make_optimizer(model, weight_decay, lrs, head_prefixes)
    scheduler, total_steps = linear_schedule(optimizer, t, n_items)
    (engine, optimizer, _, scheduler = deepspeed.initialize(...) for a data-parallel run)
    state = resume(out, model, optimizer, scheduler, config, device, name, engine=engine)
    logger = open_run_log(out, config, logging, state)
    state = train_epochs(model, optimizer, scheduler, state, t, total_steps, n_items, out=..., ...,
                         step_loss=lambda batch: ..., validate=lambda: (score, remember))
    ... the best epoch's weights are loaded: score the splits, export, the report (with run_facts) written last,
    remove_checkpoints(out)

Each epoch: `on_epoch_start(epoch)` (ICD's head warm-up freezes the encoder there), the epoch's batches (by default
the examples shuffled per (seed, epoch)), and per batch `step_loss(batch)` (the recipe collates its own inputs and
targets), backward (over `grad_accum` micro-batches, or through a DeepSpeed `engine`), and at each accumulation
boundary grad clipping, the optimizer and schedule step, a log line every `log_every` steps and a checkpoint every
`checkpoint_every_steps`. At the epoch end `validate()` gives the score that selects the best epoch (and what the
recipe keeps with it: QA's tuned no-answer threshold); `patience` epochs without a better one stop training.

A checkpoint (every `checkpoint_every_steps` and at each epoch end) holds the weights, optimizer, schedule, CPU and
CUDA RNG, the recipe's own generators, the loop position and the config signature (`run_signature`): a killed run
resumes to the same model it would have trained uninterrupted, and a checkpoint or a finished run that another config
wrote is refused (one line naming the folder), never continued or returned.
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cmbert.core.errors import OutputInTheWay, UserError
from cmbert.core.runlog import MetricsLogger
from cmbert.core.runtime import device_and_dtype, provenance
from cmbert.modeling.attention import check_backend

CHECKPOINT, BEST = Path("ckpt") / "state.pt", Path("ckpt") / "best.pt"


def training_device(precision: str, attention_backend: str) -> tuple[torch.device, torch.dtype]:
    """The device and autocast dtype a run trains with (peak-memory counters reset there), the attention backend
    name checked. Only checked: the recipe sets it on the model it builds (`model.set_attention_backend`), never for
    the whole process."""
    device, dtype = device_and_dtype(precision)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    check_backend(attention_backend)
    return device, dtype


def open_run_log(out: Path, config: dict, logging, state: dict, enabled: bool = True) -> MetricsLogger:
    """config.json beside the run (what `finished_report` checks a rerun against), and the metrics logger (wandb
    offline unless `logging.wandb` opts in; `logging` None: metrics.jsonl only), continuing at the resumed step.
    `enabled` False (ranks other than 0): neither."""
    if enabled:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    return MetricsLogger(out, config, enabled=enabled, wandb_mode=logging.wandb if logging else "disabled",
                         project=logging.project if logging else "clinical-modernbert", run_name=out.name,
                         resume_step=state["step"] + 1)


# Config keys that do not change the model a run trains, so a rerun may change them: where the metrics go, whether
# to resume, how often to checkpoint.
UNSIGNED = ("logging", "train.resume", "train.checkpoint_every_steps")


def run_signature(config: dict) -> dict:
    """What a checkpoint or a finished run must share with the config that continues it (`config` as the recipe
    gives it: its to_dict(), or what one run of a comparison depends on): everything but the UNSIGNED keys."""
    values = json.loads(json.dumps(config))
    for key in UNSIGNED:
        *parents, last = key.split(".")
        node = values
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return values


def changed_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    found = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            found += changed_keys(x, y, f"{prefix}{key}.")
        elif x != y or (key in a) != (key in b):
            found.append(f"{prefix}{key}")
    return found


def check_signature(found: dict | None, config: dict, out: Path, what: str, error: type[UserError] = UserError,
                    ) -> None:
    """Refuse to continue or return `what` (a checkpoint, a finished run) in `out` that another config wrote: one
    line naming the folder, what differs, and the way out."""
    wanted = run_signature(config)
    if found == wanted:
        return
    changed = changed_keys(found, wanted) if isinstance(found, dict) else []
    more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
    detail = f"{', '.join(changed[:3])}{more} {'differs' if len(changed) == 1 else 'differ'}" if changed else \
        "it records no config"
    raise error(f"{out}: holds {what} written under another config ({detail}); use a new out folder, or remove "
                f"{out} to start over")


def finished_report(out: Path, config: dict, name: str, report: str = "report.json") -> dict | None:
    """The report (`out/<report>`, written last) of a finished run of this config in `out`, None when there is none;
    a finished run of another config is an error (its model would be overwritten by one it does not describe)."""
    if not (out / report).is_file():
        return None
    previous = json.loads((out / "config.json").read_text()) if (out / "config.json").is_file() else None
    check_signature(run_signature(previous) if previous is not None else None, config, out, "a finished run",
                    OutputInTheWay)
    print(f"[{name}] {out} holds this finished run; its report is returned (remove it to retrain)", file=sys.stderr)
    return json.loads((out / report).read_text())


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


def schedule_steps(t, n_items: int) -> int:
    """Optimizer steps of a run: epochs of `n_items` in batches of `t.batch_size`, capped by `t.max_steps` when set."""
    steps_per_epoch = math.ceil(n_items / t.batch_size)
    return min(t.max_steps, t.epochs * steps_per_epoch) if t.max_steps else t.epochs * steps_per_epoch


def linear_schedule(optimizer: torch.optim.Optimizer, t, n_items: int) -> tuple[torch.optim.lr_scheduler.LambdaLR,
                                                                                  int]:
    """Linear warmup over `t.warmup_fraction` of the steps, then linear decay to 0; and the number of steps
    (`schedule_steps`)."""
    total_steps = schedule_steps(t, n_items)
    warmup = int(t.warmup_fraction * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, partial(
        wsd_lambda, total_steps=total_steps, warmup_steps=warmup, decay_steps=total_steps - warmup,
        decay_shape="linear")), total_steps


def constant_schedule(optimizer: torch.optim.Optimizer, t, n_items: int) -> tuple[torch.optim.lr_scheduler.LambdaLR,
                                                                                    int]:
    """Every step at the peak LR (a schedule object all the same, so the loop and its checkpoints treat every run
    alike); and the number of steps (`schedule_steps`)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _constant), schedule_steps(t, n_items)


def _constant(step: int) -> float:
    return 1.0


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


def fresh_state() -> dict:
    """The loop state of a run that has not trained yet. `batch` counts the micro-batches of the current epoch done;
    `epoch_loss` sums their losses (the epoch's mean goes to `history`); `tokens` / `token_seconds` count the batches
    whose `step_loss` reported tokens (throughput)."""
    return {"epoch": 0, "batch": 0, "step": 0, "best": -math.inf, "best_epoch": -1, "best_extra": {},
            "bad_epochs": 0, "done": False, "seconds": 0.0, "epoch_loss": 0.0, "tokens": 0, "token_seconds": 0.0,
            "history": []}


def _rank(engine) -> int:
    return 0 if engine is None else engine.global_rank


def _loop_file(folder: Path, tag: str, rank: int) -> Path:
    return folder / tag / f"loop-rank{rank}.pt"


def save_checkpoint(out: Path, model: nn.Module, optimizer, scheduler, state: dict, signature: dict,
                    device: torch.device, engine=None, generators: dict[str, torch.Generator] | None = None) -> None:
    """The resume state of the run in `out`: loop position, config signature, CPU and CUDA RNG (dropout draws from
    them) and the recipe's own `generators`, with the weights, optimizer and schedule.

    Plain PyTorch: one file, `ckpt/state.pt`, replaced atomically. DeepSpeed: every rank writes its shard of the
    optimizer state through `engine.save_checkpoint` into `ckpt/step<N>/` (`latest` names the newest, old tags are
    removed), beside its own loop file (ranks draw different dropout masks, so each keeps its RNG); the loop file goes
    first, so `latest` never names a tag without one."""
    # This run's GPU only: the states of every visible GPU would start a CUDA context on each from every rank.
    position = {"state": state, "signature": signature, "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "generators": {name: g.get_state() for name, g in (generators or {}).items()}}
    if engine is None:
        save_atomically({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), **position}, out / CHECKPOINT)
        return
    folder, tag = out / CHECKPOINT.parent, f"step{state['step']}"
    save_atomically(position, _loop_file(folder, tag, engine.global_rank))
    engine.save_checkpoint(str(folder), tag=tag)
    if engine.global_rank == 0:  # save_checkpoint returns after every rank wrote: older tags can go
        for old in folder.glob("step*"):
            if old.name != tag:
                shutil.rmtree(old, ignore_errors=True)


def resume(out: Path, model: nn.Module, optimizer, scheduler, config: dict, device: torch.device, name: str,
           enabled: bool = True, engine=None, generators: dict[str, torch.Generator] | None = None) -> dict:
    """The loop state: a fresh one, or (when `enabled` and `out` holds a checkpoint) the checkpoint's, with the
    model, optimizer, schedule, RNG and `generators` restored (through `engine` when the run trains with DeepSpeed).
    A checkpoint of another config is refused before anything is loaded."""
    folder = out / CHECKPOINT.parent
    if engine is None:
        path = out / CHECKPOINT
        if not (enabled and path.is_file()):
            return fresh_state()
        saved = torch.load(path, map_location=device, weights_only=False)
        check_signature(saved.get("signature"), config, out, "a checkpoint")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
    else:
        if not (enabled and (folder / "latest").is_file()):
            return fresh_state()
        tag = (folder / "latest").read_text().strip()
        path = _loop_file(folder, tag, engine.global_rank)
        saved = torch.load(path, weights_only=False) if path.is_file() else {}
        check_signature(saved.get("signature"), config, out, "a checkpoint")
        engine.load_checkpoint(str(folder), tag=tag)  # weights, optimizer shards and schedule
    torch.set_rng_state(saved["torch_rng"])
    if saved["cuda_rng"] is not None and device.type == "cuda":  # dropout on the GPU draws from it
        torch.cuda.set_rng_state(saved["cuda_rng"], device)
    for key, generator in (generators or {}).items():
        generator.set_state(saved["generators"][key])
    state = {**fresh_state(), **saved["state"]}
    if _rank(engine) == 0:
        print(f"[{name}] resuming at epoch {state['epoch'] + 1} batch {state['batch']} (step {state['step']})",
              file=sys.stderr)
    return state


def train_epochs(model: nn.Module, optimizer, scheduler, state: dict, t, total_steps: int, n_items: int = 0, *,
                 out: Path, config: dict, device: torch.device, dtype: torch.dtype, logger, log_every: int, name: str,
                 metric: str,
                 step_loss: Callable[[np.ndarray], torch.Tensor | tuple[torch.Tensor, int]],
                 validate: Callable[[], tuple],
                 batches: Callable[[int], list] | None = None,
                 on_epoch_start: Callable[[int], None] | None = None,
                 keep_best: Callable[[], None] | None = None,
                 grad_accum: int = 1, engine=None,
                 generators: dict[str, torch.Generator] | None = None) -> dict:
    """Epochs until `t.epochs`, `total_steps` optimizer steps (0: no cap) or `t.patience` epochs without a better
    validation score. Returns the final loop state (steps, seconds, best epoch, score, what `validate` asked to keep,
    the per-epoch `history`).

    - `batches(epoch)`: the epoch's batches, each what `step_loss` takes (default: `n_items` examples shuffled per
      (seed, epoch) in batches of `t.batch_size`). It must be a pure function of the epoch: a resumed run skips the
      batches the checkpoint had done.
    - `step_loss(batch)`: the batch's loss, or (loss, tokens) to count fine-tuning throughput (tokens 0: a batch not
      counted). Runs under autocast at `dtype` (fp32: none).
    - `validate()`: (score, keep) or (score, keep, metrics); `keep` stays with the best epoch (`state["best_extra"]`),
      `metrics` (numbers) are logged as val_<name> and kept in `history`.
    - `on_epoch_start(epoch)`: after `model.train()`, before the epoch's first batch (and on resuming mid-epoch).
    - `keep_best()`: saves the best epoch's weights; default `ckpt/best.pt` (on rank 0), loaded back into `model`
      when the loop ends. A recipe that keeps them itself loads them itself.
    - `grad_accum`: micro-batches per optimizer step (the loss is divided by it; an epoch's last step takes what is
      left). With `engine` (DeepSpeed) the engine divides, all-reduces, clips and steps the optimizer and schedule at
      its accumulation boundary, and checkpoints go through it (`save_checkpoint`).
    - `generators`: the recipe's own torch generators (e.g. note dropout), saved and restored with the checkpoint."""
    signature = run_signature(config)
    main = _rank(engine) == 0

    def checkpoint():
        state["seconds"] = seconds_before + time.perf_counter() - started
        state["epoch_loss"] = float(epoch_loss)
        save_checkpoint(out, model, optimizer, scheduler, state, signature, device, engine, generators)

    started, seconds_before = time.perf_counter(), state["seconds"]
    while not state["done"] and state["epoch"] < t.epochs:
        model.train()
        if on_epoch_start is not None:
            on_epoch_start(state["epoch"])
        epoch = batches(state["epoch"]) if batches is not None else epoch_batches(n_items, t.batch_size, t.seed,
                                                                                  state["epoch"])
        # The epoch's summed loss stays on the device (no sync per step); a resumed epoch continues the saved sum.
        epoch_loss = torch.tensor(state["epoch_loss"], dtype=torch.float64, device=device)
        for b in range(state["batch"], len(epoch)):
            tick = time.perf_counter()
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                loss = step_loss(epoch[b])
            loss, tokens = loss if isinstance(loss, tuple) else (loss, 0)
            if engine is not None:
                engine.backward(loss)  # DeepSpeed divides by gradient_accumulation_steps and all-reduces
                engine.step()  # optimizer and LR schedule at the accumulation boundary only
            else:
                (loss / grad_accum).backward()
            if tokens:
                state["tokens"] += int(tokens)
                state["token_seconds"] += time.perf_counter() - tick
            epoch_loss += loss.detach().double()
            state["batch"] = b + 1
            if (b + 1) % grad_accum and b + 1 < len(epoch):
                continue
            if engine is None:
                if t.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None],
                                                   t.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            if logger is not None and state["step"] % log_every == 0:
                rate = {"tokens_per_s": state["tokens"] / max(state["token_seconds"], 1e-9)} if state["tokens"] else {}
                logger.log(state["step"], loss=loss.item(), **learning_rates(scheduler), **rate, epoch=state["epoch"])
            if state["step"] % t.checkpoint_every_steps == 0:
                checkpoint()
            if total_steps and state["step"] >= total_steps:
                break
        # End of an epoch (or of the step cap): model selection on the validation score.
        score, keep, *more = validate()
        metrics = more[0] if more else {}
        if logger is not None:
            logger.log(state["step"], **{f"val_{metric}": score, **{f"val_{k}": v for k, v in metrics.items()}},
                       epoch=state["epoch"])
        done_batches = state["batch"]
        state["history"].append({"epoch": state["epoch"] + 1, "step": state["step"],
                                 "loss": float(epoch_loss) / max(done_batches, 1), metric: score, **metrics})
        if score > state["best"]:
            state.update(best=score, best_epoch=state["epoch"], best_extra=keep, bad_epochs=0)
            if keep_best is not None:
                keep_best()
            elif main:
                save_atomically({"model": model.state_dict()}, out / BEST)
        else:
            state["bad_epochs"] += 1
        if main:
            print(f"[{name}] epoch {state['epoch'] + 1} step {state['step']} val {metric} {score:.4f} (best "
                  f"{state['best']:.4f} @ epoch {state['best_epoch'] + 1})", file=sys.stderr)
        state["epoch"] += 1
        state["batch"] = 0
        state["done"] = state["bad_epochs"] >= t.patience or bool(total_steps and state["step"] >= total_steps)
        epoch_loss = 0.0
        checkpoint()
    if logger is not None:
        logger.close()
    if keep_best is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # rank 0 has written best.pt
        model.load_state_dict(torch.load(out / BEST, map_location=device, weights_only=True)["model"])
    return state


def learning_rates(scheduler) -> dict[str, float]:
    """lr_<group name> of every parameter group, as the schedule last set them (the optimizer the schedule drives:
    under DeepSpeed the wrapped one, whose groups keep their names)."""
    groups = scheduler.optimizer.param_groups
    return {f"lr_{group.get('name', i)}": lr for i, (group, lr) in enumerate(zip(groups, scheduler.get_last_lr(),
                                                                                   strict=True))}


def write_final_report(out: Path, fields: dict, state: dict, results: dict, data_report: dict, facts: dict) -> dict:
    """A finished run's report.json: the recipe's `fields`, the loop's counts, the results, the data report and the
    run's facts. Written last, since it marks the run finished (`finished_report`); the checkpoints go after it."""
    report = {**fields, "best_epoch": state["best_epoch"] + 1, "epochs": state["epoch"], "steps": state["step"],
              "train_seconds": round(state["seconds"], 1), **results, "data": data_report, **facts}
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    remove_checkpoints(out)
    return report


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
    # Installed versions from the package metadata: importing datasets costs seconds and pulls in pyarrow.
    return {"peft": version("peft"), "datasets": version("datasets")}


def wsd_lambda(step: int, total_steps: int, warmup_steps: int, decay_steps: int, min_ratio: float = 0.0,
               decay_shape: str = "1-sqrt") -> float:
    """Multiplier on the peak LR for the optimizer step with 0-based index `step` (LambdaLR's `last_epoch`).

    Both ramps count the step being taken: warmup gives (step + 1) / warmup_steps, so step 0 trains at 1/warmup
    rather than wasting a batch at LR 0, and step warmup_steps - 1 reaches 1. Decay covers the last `decay_steps`
    steps with progress (step + 1 - decay_start) / decay_steps, so the final step (total_steps - 1) trains at exactly
    `min_ratio`; steps past the end stay there (LambdaLR evaluates total_steps after the last step).
    `decay_steps=0` is warmup-stable only (ModernBERT's phase-1 checkpoints, decayed in a later phase)."""
    if total_steps <= 0 or warmup_steps < 0 or decay_steps < 0 or step < 0:
        raise ValueError(f"need total_steps > 0 and step, warmup_steps, decay_steps >= 0; got step={step}, "
                         f"total_steps={total_steps}, warmup_steps={warmup_steps}, decay_steps={decay_steps}")
    if warmup_steps + decay_steps > total_steps:
        raise ValueError(f"warmup_steps + decay_steps ({warmup_steps} + {decay_steps}) exceed total_steps "
                         f"({total_steps})")
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"min_ratio must be in [0, 1], got {min_ratio}")
    if decay_shape not in DECAY_SHAPES:
        raise ValueError(f"decay_shape: unknown {decay_shape!r}; choose one of {', '.join(DECAY_SHAPES)}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_start = total_steps - decay_steps
    if decay_steps == 0 or step < decay_start:
        return 1.0
    progress = min(1.0, (step + 1 - decay_start) / decay_steps)
    if decay_shape == "1-sqrt":
        shape = 1.0 - math.sqrt(progress)
    elif decay_shape == "linear":
        shape = 1.0 - progress
    else:
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * shape


DECAY_SHAPES = ("1-sqrt", "linear", "cosine")
