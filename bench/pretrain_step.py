"""Our pretraining loop (pretrain/train.py, DeepSpeed ZeRO-0 and ZeRO-1) against a plain torch DDP loop doing the
same work, on 2 CPU processes (torchrun, gloo), same config and same data.

The DDP reference (`ddp_worker` below) builds the same model (`cmbert.pretrain.train.build_model`), reads the same rows
and masks them the same way (`cmbert.pretrain.train.step_batches`, one generator
per step, micro-batch and rank), and steps the same AdamW and LR schedule (`cmbert.pretrain.optim`), with gradient
accumulation (`no_sync` on all but the last micro-batch) and global-norm clipping. It logs the same JSON lines
through `cmbert.pretrain.metrics.MetricsLogger`, with the same per-step all-reduce of loss, tokens and FLOPs, so every
variant is timed the same way: the wall time between the "time" stamps of the last warm-up step and the last step
in `<out>/metrics.jsonl` (written on rank 0 right after the step's logging all-reduce). What the DDP loop leaves out
is what is ours alone: the DeepSpeed engine and train.py's per-step SIGTERM-flag all-reduce.

Variants run in turn inside each repetition (ddp, zero0, zero1, ddp, ...), each in a fresh torchrun, so machine
drift hits all alike; the table gives medians over repetitions and ratios to DDP (only ratios mean anything on
these shared machines). The losses of every variant are compared with DDP's over the first 10 steps as a check that
the work is the same (fp32: they agree to rounding).

    python bench/pretrain_step.py             # 5 warm-up + 30 timed steps, 3 repetitions (~6 min on 2 cores)
    python bench/pretrain_step.py --quick     # 2 + 5 steps, 1 repetition: a smoke check
    python bench/pretrain_step.py model.num_hidden_layers=6    # any key=value override goes to every variant
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import torch

from cmbert.core.runlog import read_jsonl
from cmbert.pretrain.config import PretrainConfig, load_config

REPO = Path(__file__).resolve().parents[1]

TINY = REPO / "configs" / "pretrain" / "tiny.yaml"
VARIANTS = ("ddp", "zero0", "zero1")
# Losses are compared over the first steps only: in fp32 the variants sum gradients in different orders, and at
# lr 3e-3 those rounding differences (~1e-7 at first) grow to ~1e-2 by step 30.
LOSS_CHECK_STEPS = 10
ROW_TOKENS = 256
# Bigger than tiny.yaml so a step (~0.5 s) is not dominated by fixed per-step costs: 2.7 M parameters, 2,048 tokens
# per rank per step. Evaluation and checkpoints only at the last step, after the timed window.
BENCH_OVERRIDES = (
    "model.hidden_size=256", "model.intermediate_size=384", "model.num_hidden_layers=4",
    "model.num_attention_heads=4", "model.local_attention=128", f"model.max_position_embeddings={ROW_TOKENS}",
    "model.initializer_range=0.02", "optim.name=adamw", "optim.grad_clip=1.0",
    "schedule.rows_per_micro_batch=4", "schedule.grad_accum=2", "schedule.warmup_steps=2", "schedule.decay_steps=0",
    "logging.every_steps=1", "logging.wandb=disabled", "checkpoint.resume=false", "distributed.precision=fp32",
)


@dataclass
class RunResult:
    steps_per_s: float  # timed steps / their wall time
    median_steps_per_s: float  # 1 / the median interval between consecutive steps: robust to a moment of contention
    data_fraction: float  # median over the timed steps
    losses: dict[int, float]
    intervals: list[float]  # seconds between consecutive timed steps


# ------------------------------------------------------------------------------------------------ data


def prepare_data(work: Path) -> Path:
    """Small packed shards of 256-token rows (synthetic MIMIC + ICD-9-PCS, ~1,900 rows), built once per work dir."""
    from cmbert.data.synth import synthesize_mimic
    from cmbert.pretrain.corpus import build_corpus
    from cmbert.pretrain.packing import pack_corpus
    from cmbert.pretrain.tokenizer import train_tokenizer_from_store

    data = work / "data"
    if (data / "shards" / "manifest.json").exists():
        return data
    shutil.rmtree(data, ignore_errors=True)
    synthesize_mimic(data / "mimic", patients=40, seed=0)
    build_corpus(data / "corpus", mimic=data / "mimic", ontology=["icd9pcs"], progress=False)
    train_tokenizer_from_store(data / "corpus", data / "tokenizer", vocab_size=2048, model_max_length=ROW_TOKENS,
                               progress=False)
    pack_corpus(data / "corpus", data / "tokenizer", data / "shards", max_seq_len=ROW_TOKENS, progress=False)
    return data


# ------------------------------------------------------------------------------------------------ the DDP reference


def ddp_worker(cfg: PretrainConfig) -> None:
    """train.py's loop without DeepSpeed: plain DDP + AdamW, under torchrun (one process per rank)."""
    from torch.nn.parallel import DistributedDataParallel
    from transformers import AutoTokenizer

    from cmbert.core.runlog import MetricsLogger
    from cmbert.modeling import set_attention_backend
    from cmbert.pretrain.masking import MaskingVocab
    from cmbert.pretrain.metrics import step_flops
    from cmbert.pretrain.optim import build_optimizer, build_scheduler
    from cmbert.pretrain.packed_dataset import PackedDataset
    from cmbert.pretrain.train import build_model, step_batches

    torch.distributed.init_process_group("gloo")
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    set_attention_backend(cfg.model.attention_backend)
    tokenizer = AutoTokenizer.from_pretrained(cfg.data.tokenizer)
    data = PackedDataset(cfg.data.shards, seed=cfg.seed, rank=rank, world_size=world, weights=cfg.data.weights)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, tokenizer)
    ddp = DistributedDataParallel(model)
    o, s = cfg.optim, cfg.schedule
    optimizer = build_optimizer(model, o.name, o.lr, o.betas, o.eps, o.weight_decay)
    scheduler = build_scheduler(optimizer, s.max_steps, s.warmup_steps, s.decay_steps, s.min_lr_ratio, s.decay_shape)
    vocab = MaskingVocab.from_tokenizer(tokenizer)
    logger = MetricsLogger(Path(cfg.out), cfg.to_dict(), enabled=rank == 0, wandb_mode="disabled")

    step, samples = 0, 0
    ddp.train()
    while step < s.max_steps:
        step += 1
        t0 = time.perf_counter()
        step_start = samples
        micro_batches, samples = step_batches(cfg, data, vocab, step, samples)  # exactly train.py's batches
        data_seconds = time.perf_counter() - t0
        n_labelled = sum(int((b["labels"] != -100).sum()) for b in micro_batches)
        loss_sum, flops, tokens = 0.0, 0.0, 0
        for micro, batch in enumerate(micro_batches):
            # Gradients are all-reduced (averaged over ranks) only in the last micro-batch's backward.
            with ddp.no_sync() if micro < s.grad_accum - 1 else contextlib.nullcontext():
                # Divided by the step's labelled tokens already: summing micro-batches gives the step's mean.
                loss = ddp(**batch, num_items_in_batch=max(n_labelled, 1), return_logits=False).loss
                loss.backward()
            loss_sum += loss.item()
            flops += step_flops(model.config, batch["cu_seqlens"].tolist(), int((batch["labels"] != -100).sum()))
            tokens += batch["input_ids"].numel()
        if o.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - t0

        if step % cfg.logging.every_steps == 0 or step == s.max_steps:
            stats = torch.tensor([loss_sum, tokens, flops], dtype=torch.float64)
            torch.distributed.all_reduce(stats)  # the same logging sync point as train.py
            logger.log(step, loss=stats[0].item() / world, lr=scheduler.get_last_lr()[0],
                       tokens_per_s=stats[1].item() / seconds, rows=samples - step_start, samples=samples,
                       data_fraction=data_seconds / seconds)
    logger.close()
    torch.distributed.destroy_process_group()


# ------------------------------------------------------------------------------------------------ driver


def launch(variant: str, out: Path, overrides: list[str], nproc: int) -> float:
    """One run of `variant` in a fresh torchrun; returns its wall seconds. Output goes to <out>.log."""
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    args = ["--config", str(TINY), *overrides, f"out={out}"]
    if variant == "ddp":
        target = [str(Path(__file__).resolve()), "--worker", "ddp", *args]
    else:
        target = ["-m", "cmbert.pretrain.train", *args, f"distributed.zero={variant}"]
    # One intra-op thread per rank: 2 ranks on 2 cores (docs/ARCHITECTURE.md, "CPU pitfalls").
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled",
           "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *target]
    start = time.perf_counter()
    with open(f"{out}.log", "w") as log:
        code = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if code:
        tail = Path(f"{out}.log").read_text()[-4000:]
        raise RuntimeError(f"{variant} run failed (exit {code}); last output:\n{tail}")
    return time.perf_counter() - start


def read_run(out: Path, warmup: int) -> RunResult:
    """Steps per second over steps warmup+1 .. last, from the "time" stamps of metrics.jsonl."""
    records = read_jsonl(out / "metrics.jsonl")
    steps = {r["step"]: r for r in records if "loss" in r}
    last = max(steps)
    seconds = steps[last]["time"] - steps[warmup]["time"]
    intervals = [steps[k]["time"] - steps[k - 1]["time"] for k in range(warmup + 1, last + 1)]
    fractions = [steps[k]["data_fraction"] for k in range(warmup + 1, last + 1)]
    return RunResult((last - warmup) / seconds, 1 / statistics.median(intervals), statistics.median(fractions),
                     {k: r["loss"] for k, r in steps.items()}, intervals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps at the start of every run")
    parser.add_argument("--steps", type=int, default=30, help="timed steps after the warm-up")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--work", default="/tmp/cmbert-bench-pretrain-step", help="data and run folders")
    parser.add_argument("--quick", action="store_true", help="2 warm-up + 5 timed steps, 1 repetition")
    parser.add_argument("--worker", choices=["ddp"], help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every variant")
    args = parser.parse_args()
    if args.worker:
        return ddp_worker(load_config(args.config, args.overrides))
    if args.quick:
        args.warmup, args.steps, args.repeats = 2, 5, 1

    work = Path(args.work)
    data = prepare_data(work)
    overrides = [*BENCH_OVERRIDES, f"data.shards={data / 'shards'}", f"data.tokenizer={data / 'tokenizer'}",
                 f"schedule.max_steps={args.warmup + args.steps}", f"logging.eval_every_steps={args.warmup + args.steps}",
                 f"checkpoint.every_steps={args.warmup + args.steps}", *args.overrides]
    cfg = load_config(TINY, overrides)  # fails here, not in a worker, on a bad override
    variants = args.variants.split(",")

    import transformers

    print(f"# command: python bench/pretrain_step.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"# torch {torch.__version__}, transformers {transformers.__version__}, deepspeed {version('deepspeed')}, "
          f"{args.nproc} processes x 1 thread (gloo), {os.cpu_count()} CPUs, fp32")
    m, s = cfg.model, cfg.schedule
    print(f"# model hidden {m.hidden_size}, intermediate {m.intermediate_size}, {m.num_hidden_layers} layers, "
          f"{m.num_attention_heads} heads; rows of {ROW_TOKENS} tokens, {s.rows_per_micro_batch} rows/micro-batch x "
          f"grad_accum {s.grad_accum} per rank; {args.warmup} warm-up + {args.steps} timed steps, "
          f"{args.repeats} interleaved repetitions", flush=True)

    results: dict[str, list[RunResult]] = {v: [] for v in variants}
    for repeat in range(args.repeats):
        for variant in variants:
            load = os.getloadavg()[0]
            wall = launch(variant, work / "runs" / f"{variant}-{repeat}", overrides, args.nproc)
            result = read_run(work / "runs" / f"{variant}-{repeat}", args.warmup)
            results[variant].append(result)
            print(f"#   repetition {repeat + 1}, {variant}: {result.steps_per_s:.3f} steps/s "
                  f"(median step {result.median_steps_per_s:.3f}), data fraction {result.data_fraction:.2%}, "
                  f"whole run {wall:.0f} s, load average before {load:.1f}", flush=True)
    report(results, variants)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(results: dict[str, list[RunResult]], variants: list[str]) -> None:
    """The markdown table: medians over repetitions, ratios to DDP, and the targets."""
    wall = {v: statistics.median(r.steps_per_s for r in results[v]) for v in variants}
    per_step = {v: statistics.median(r.median_steps_per_s for r in results[v]) for v in variants}
    # Other jobs on a shared machine only ever slow a step down, so the fastest steps estimate the quiet-machine
    # speed: 1 / the 10th percentile of all timed step intervals of a variant, pooled over repetitions.
    fast = {v: 1 / _percentile([x for r in results[v] for x in r.intervals], 0.10) for v in variants}
    ddp = results.get("ddp")
    print("\n| variant | steps/s | ms/step | vs DDP | vs DDP, median step | vs DDP per repetition | vs DDP, fastest 10 % "
          f"of steps | data fraction | max abs loss diff vs DDP, steps 1-{LOSS_CHECK_STEPS} |")
    print("|---|---|---|---|---|---|---|---|---|")
    for v in variants:
        fraction = statistics.median(r.data_fraction for r in results[v])
        if ddp:
            ratio, step_ratio = f"{wall[v] / wall['ddp']:.3f}x", f"{per_step[v] / per_step['ddp']:.3f}x"
            fast_ratio = f"{fast[v] / fast['ddp']:.3f}x"
            paired = ", ".join(f"{r.steps_per_s / d.steps_per_s:.3f}" for r, d in zip(results[v], ddp, strict=True))
            first = sorted(ddp[0].losses)[:LOSS_CHECK_STEPS]
            diff = "-" if v == "ddp" else f"{max(abs(results[v][0].losses[k] - ddp[0].losses[k]) for k in first):.1e}"
        else:
            ratio = step_ratio = paired = fast_ratio = diff = "-"
        print(f"| {v} | {wall[v]:.3f} | {1000 / wall[v]:.0f} | {ratio} | {step_ratio} | {paired} | {fast_ratio} | {fraction:.2%} "
              f"| {diff} |")
    print()
    if ddp:
        for v in (v for v in variants if v != "ddp"):
            verdict = "met" if wall[v] / wall["ddp"] >= 0.95 else "MISSED"
            print(f"- target {v} >= 0.95x DDP steps/s: {wall[v] / wall['ddp']:.3f}x (median), "
                  f"{fast[v] / fast['ddp']:.3f}x (fastest 10 % of steps), {verdict}")
    if "zero1" in results:
        fraction = statistics.median(r.data_fraction for r in results["zero1"])
        print(f"- target zero1 data fraction <= 2 %: {fraction:.2%}, {'met' if fraction <= 0.02 else 'MISSED'}")

if __name__ == "__main__":
    main()
