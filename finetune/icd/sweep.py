"""`cmbert finetune sweep`: full fine-tuning vs LoRA vs LoRA on each layer-pruned encoder, on one ICD split.

Zhu et al. (2023) report LoRA plus pruning over 30 % of the layers tuning 0.6 % of the parameters with half the GPU
memory, twice the training speed and over 92 % of the quality. This command measures that trade on our encoder and
task, with every variant trained by the ICD recipe itself (`cmbert.finetune.icd.train`, same split, seeds and schedule):

    full                 the recipe as it is: every encoder weight trains
    lora                 LoRA adapters (`lora`), the encoder frozen
    lora+<strategy>      LoRA on an encoder pruned by each strategy of cmbert/core/pruning.py (`fraction` of the layers)

Quality is each variant's test micro-F1 and mAP (mean over the recipe's seeds) as a share of full fine-tuning's.
Cost is measured side by side in one process, so the machine's load affects every variant alike: each variant's
model and optimizer are built as its training builds them, then the variants take full training steps (forward,
backward, optimizer) on the same fixed batches in turn, round robin; the table gives the median step time and its
ratio to full fine-tuning. Memory is the training state a step needs: weights + gradients + optimizer state + the
activations autograd saves for backward (counted exactly with saved-tensor hooks, shared storage once), the same
accounting on any device; on CUDA the allocator's peak for the step is reported beside it.

Trainable share is given two ways: of the whole model (task head included) and of the encoder alone (what Zhu et
al.'s 0.6 % counts: their summarisation model adds no head). A label-wise attention head over hundreds of codes is
itself several percent of a small encoder, and it always trains.

Layout of `out`: variants/<name>/ (each variant's ICD run folder: runs/, report.json, models), cache/ (tokenized
splits, shared), report.json, report.md.
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import ModernBertConfig

from cmbert.core.config import ConfigBase, ConfigError, check_ranges, load_dataclass
from cmbert.core.errors import UserError
from cmbert.core.lora import LoraSettings, check_lora_settings, trainable_summary
from cmbert.core.pruning import STRATEGIES, PruneSettings, layers_to_drop
from cmbert.finetune.icd.config import IcdConfig, check_icd_config, load_icd_config

# The quality bar of the issue that asked for this command (Zhu et al.'s claim, on our demo task).
MIN_PRUNED_FRACTION, MIN_RETAINED, MAX_TRAINABLE_PERCENT = 0.3, 0.92, 1.0


@dataclass
class SweepConfig(ConfigBase):
    out: str = "runs/sweep"
    recipe: str = "configs/finetune/icd/demo.yaml"  # the ICD preset every variant trains with
    data: str = ""  # the prepared ICD dataset (the recipe's `data` when empty)
    init_from: str = ""  # the encoder folder (the recipe's single `model.init_from` when empty)
    overrides: list[str] = field(default_factory=list)  # more dotted overrides of the recipe (train.epochs=4 ...)
    lora: LoraSettings = field(default_factory=lambda: LoraSettings(enabled=True))
    strategies: list[str] = field(default_factory=lambda: ["top", "middle", "every_other", "local"])
    fraction: float = 0.3  # of the layers each strategy drops (rounded up)
    probe_steps: int = 6  # timed training steps per variant (after probe_warmup untimed ones)
    probe_warmup: int = 2
    probe_batches: int = 3  # the fixed training batches the probe cycles over



def load_sweep_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> SweepConfig:
    cfg = load_dataclass(SweepConfig, path, overrides)
    if not Path(cfg.recipe).is_file():
        raise ConfigError(f"recipe: {cfg.recipe} is not a file (an ICD preset, e.g. configs/finetune/icd/demo.yaml)")
    if not cfg.lora.enabled:
        raise ConfigError("lora.enabled: the sweep compares LoRA variants; leave it true")
    check_lora_settings(cfg.lora, "lora")
    unknown = sorted(set(cfg.strategies) - set(STRATEGIES[1:-1]))
    if unknown:
        raise ConfigError(f"strategies: unknown {unknown[0]!r}; choose from {', '.join(STRATEGIES[1:-1])}")
    if not 0 < cfg.fraction < 1:
        raise ConfigError(f"fraction must be in (0, 1), not {cfg.fraction}")
    check_ranges(cfg, "", {"probe_steps": ">= 1", "probe_warmup": ">= 0", "probe_batches": ">= 1"})
    return cfg


def variant_configs(cfg: SweepConfig) -> dict[str, IcdConfig]:
    """Each variant's ICD config: the recipe with its overrides, no baselines, and its own LoRA / pruning."""
    given = [*([f"data={cfg.data}"] if cfg.data else []), *([f"model.init_from=[{cfg.init_from}]"] if cfg.init_from
                                                            else [])]
    base = load_icd_config(cfg.recipe, [*given, *cfg.overrides, "eval.baselines=[]"])
    if len(base.model.init_from) != 1:
        raise ConfigError(f"model.init_from: the sweep fine-tunes one encoder, got {len(base.model.init_from)}")
    out = Path(cfg.out)
    plan = {"full": (LoraSettings(), PruneSettings()), "lora": (cfg.lora, PruneSettings())}
    for strategy in cfg.strategies:
        plan[f"lora+{strategy}"] = (cfg.lora, PruneSettings(strategy=strategy, fraction=cfg.fraction))
    layer_types = list(ModernBertConfig.from_pretrained(base.model.init_from[0]).layer_types)
    variants, dropped = {}, {}
    for name, (lora, prune) in plan.items():
        drop = tuple(layers_to_drop(layer_types, prune))
        if lora.enabled and drop and (lora.enabled, drop) in dropped:  # e.g. "middle" and "local" of G L L G
            print(f"[sweep] {name} drops the same layers {list(drop)} as {dropped[(lora.enabled, drop)]}: not trained "
                  "twice", file=sys.stderr)
            continue
        dropped[(lora.enabled, drop)] = name
        variant = copy.deepcopy(base)
        variant.model.lora, variant.model.prune = copy.deepcopy(lora), prune
        variant.out, variant.cache = str(out / "variants" / name), str(out / "cache")
        check_icd_config(variant)
        variants[name] = variant
    return variants


# ------------------------------------------------------------------------------------------------- cost probe


def saved_activation_bytes(step, parameters: list[torch.Tensor]) -> int:
    """Bytes of the tensors autograd saves for backward while `step()` runs its forward (each storage once; weights
    are counted with the model, not here)."""
    weights = {p.untyped_storage().data_ptr() for p in parameters}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values())


def state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Weights, gradients and optimizer state held between steps."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    moments = sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
                  if torch.is_tensor(v))
    return weights + grads + moments


def cost_row(model: torch.nn.Module, encoder: torch.nn.Module, optimizer: torch.optim.Optimizer, step,
             batch, device: torch.device) -> dict:
    """Parameter counts and the training memory of one step of `step(batch)` (which it runs once)."""
    before = torch.cuda.memory_allocated() if device.type == "cuda" else 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    activations = saved_activation_bytes(lambda: step(batch), list(model.parameters()))
    n_encoder = sum(p.numel() for p in encoder.parameters())
    encoder_trainable = sum(p.numel() for p in encoder.parameters() if p.requires_grad)
    row = {**trainable_summary(model), "layers": encoder.config.num_hidden_layers,
           "dropped": getattr(encoder.config, "pruned_from", {"dropped": []})["dropped"],
           "encoder_parameters": n_encoder, "encoder_trainable_percent": round(100 * encoder_trainable / n_encoder, 4),
           "memory_mib": round((state_bytes(model, optimizer) + activations) / 2**20, 2),
           "activation_mib": round(activations / 2**20, 2)}
    if device.type == "cuda":  # the step's own peak above what was allocated before it (other variants' models)
        row["cuda_peak_mib"] = round((torch.cuda.max_memory_allocated() - before) / 2**20, 1)
    return row


def round_robin_seconds(steps: dict, batches: list, rounds: int, warmup: int, device: torch.device) -> dict:
    """Median seconds of a training step per variant, the variants taking turns on the same batches: a load spike
    on a shared machine slows one step of every variant, not every step of one."""
    seconds = {name: [] for name in steps}
    for round_ in range(warmup + rounds):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            step(batches[round_ % len(batches)])
            if device.type == "cuda":
                torch.cuda.synchronize()
            if round_ >= warmup:
                seconds[name].append(time.perf_counter() - started)
    return {name: round(statistics.median(s), 4) for name, s in seconds.items()}


def probe_costs(variants: dict[str, IcdConfig], cfg: SweepConfig) -> dict[str, dict]:
    """Per variant: parameter counts, training memory and median step time (see the module docstring)."""
    from transformers import AutoTokenizer

    from cmbert.core.notes import collate, token_budget_batches
    from cmbert.core.runtime import device_and_dtype
    from cmbert.core.tokenizer_files import tokenizer_sha256
    from cmbert.data.icd_dataset import load_labels
    from cmbert.finetune.icd.train import build_model, load_split_data, parameter_groups
    from cmbert.finetune.icd.train import variants as readings

    first = next(iter(variants.values()))
    init_from, t = first.model.init_from[0], first.train
    device, dtype = device_and_dtype(t.precision)
    labels = load_labels(Path(first.data))
    tokenizer = AutoTokenizer.from_pretrained(init_from)
    reading = readings(first)[0]  # the full-length reading every variant trains with
    train = load_split_data(Path(first.data), "train", labels, tokenizer, reading.max_chunks * (reading.max_length - 2),
                            Path(first.cache), tokenizer_sha256(init_from))
    lengths = np.diff(train.notes.offsets)
    batches = token_budget_batches(lengths, t.tokens_per_batch, t.max_notes_per_batch,
                                   rng=np.random.default_rng(0))[:cfg.probe_batches]
    largest = max(batches, key=lambda idx: int(lengths[idx].sum()))
    steps, costs = {}, {}
    for name, vcfg in variants.items():
        torch.manual_seed(0)
        model = build_model(vcfg, init_from, 0, reading, labels, tokenizer, train).to(device).train()
        optimizer = torch.optim.AdamW(parameter_groups(model, vcfg), weight_decay=t.weight_decay)

        def step(idx, model=model, optimizer=optimizer):  # one training step, as cmbert.finetune.icd.train takes it
            batch = collate([train.notes.note(i) for i in idx], reading.max_length, model.config.cls_token_id,
                            model.config.sep_token_id)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                logits = model(batch["input_ids"].to(device), batch["cu_seqlens"].to(device), batch["max_seqlen"],
                               batch["note_chunks"].to(device))
            loss = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(train.Y[idx]).float().to(device))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        costs[name] = cost_row(model, model.encoder, optimizer, step, largest, device)
        steps[name] = step
    for name, seconds in round_robin_seconds(steps, batches, cfg.probe_steps, cfg.probe_warmup, device).items():
        costs[name]["step_seconds"] = seconds
    return costs


# ---------------------------------------------------------------------------------------------------- report


def summarize(variants: dict[str, IcdConfig], reports: dict[str, dict], costs: dict[str, dict]) -> dict:
    """The table: cost and quality per variant, ratios to full fine-tuning, and the quality bar per pruned variant."""
    rows = {}
    for name, vcfg in variants.items():
        system = next(iter(reports[name]["systems"].values()))  # eval.baselines=[]: the one fine-tuned system
        rows[name] = {"lora": vcfg.model.lora.enabled, "prune": asdict(vcfg.model.prune), **costs[name],
                      "test_f1_micro": system["test"]["f1_micro"]["mean"], "test_map": system["test"]["map"]["mean"],
                      "seeds": len(system["seeds"])}
    full = rows["full"]
    for row in rows.values():
        row["retained_f1_micro"] = row["test_f1_micro"] / full["test_f1_micro"] if full["test_f1_micro"] else None
        row["retained_map"] = row["test_map"] / full["test_map"] if full["test_map"] else None
        row["memory_ratio"] = row["memory_mib"] / full["memory_mib"]
        row["step_time_ratio"] = row["step_seconds"] / full["step_seconds"]
    n_layers = full["layers"]
    bar = {}
    for name, row in rows.items():
        if not row["lora"] or (n_layers - row["layers"]) / n_layers < MIN_PRUNED_FRACTION:
            continue
        bar[name] = {"pruned_fraction": round((n_layers - row["layers"]) / n_layers, 3),
                     "retained_f1_micro>=0.92": row["retained_f1_micro"] is not None
                     and row["retained_f1_micro"] >= MIN_RETAINED,
                     "trainable<=1%": row["trainable_percent"] <= MAX_TRAINABLE_PERCENT,
                     "encoder_trainable<=1%": row["encoder_trainable_percent"] <= MAX_TRAINABLE_PERCENT,
                     "less_memory": row["memory_ratio"] < 1, "faster_steps": row["step_time_ratio"] < 1}
    return {"variants": rows, "quality_bar": bar}


def format_table(summary: dict) -> str:
    rows = summary["variants"]
    lines = ["| variant | layers | trainable % (encoder %) | memory MiB (× full) | step s (× full) | test micro-F1 | "
             "test mAP | retained F1 / mAP |", "|---" * 8 + "|"]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['layers']} | {r['trainable_percent']:.2f} ({r['encoder_trainable_percent']:.2f}) | "
            f"{r['memory_mib']:.1f} ({r['memory_ratio']:.2f}) | {r['step_seconds']:.3f} ({r['step_time_ratio']:.2f}) "
            f"| {100 * r['test_f1_micro']:.1f} | {100 * r['test_map']:.1f} | "
            f"{100 * r['retained_f1_micro']:.1f} % / {100 * r['retained_map']:.1f} % |")
    return "\n".join(lines)


def main(cfg: SweepConfig) -> dict:
    """Train every variant (each resumes or is skipped if done), probe their costs, write the report."""
    from cmbert.finetune.icd import train as icd_train

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    variants = variant_configs(cfg)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
    where = lambda config: {k: v for k, v in config.items() if k not in ("out", "cache")}  # a copied run still counts
    for name, vcfg in variants.items():  # a finished variant is reused only if it was trained exactly so
        written = Path(vcfg.out) / "config.json"
        if written.is_file() and where(json.loads(written.read_text())) != where(vcfg.to_dict()):
            raise UserError(f"{vcfg.out} holds a {name} run of another config (the recipe, its overrides or the LoRA "
                            "settings changed); choose another out")
    reports = {}
    for name, vcfg in variants.items():
        print(f"[sweep] {name}: training ({vcfg.out})", file=sys.stderr, flush=True)
        reports[name] = icd_train.main(vcfg)
    print(f"[sweep] measuring step time and memory ({cfg.probe_steps} steps per variant, round robin)",
          file=sys.stderr, flush=True)
    summary = {"config": cfg.to_dict(), "recipe": variants["full"].to_dict(),
               **summarize(variants, reports, probe_costs(variants, cfg))}
    (out / "report.json").write_text(json.dumps(summary, indent=1) + "\n")
    table = format_table(summary)
    (out / "report.md").write_text(f"# Fine-tuning sweep\n\n{table}\n\nQuality bar: "
                                   f"{json.dumps(summary['quality_bar'], indent=1)}\n")
    print(table)
    return summary

