"""One MLM training step (forward + backward, 30 % of real tokens labelled): ours vs transformers' ModernBERT.

Side by side in one run, same weights, same batches, interleaved repetitions (these machines are shared and noisy,
so only ratios mean anything):
- speed: real tokens per second on variable-length batches (row lengths spread 10-100 % of the row, mean ~55 %) and
  fixed-length batches, rows of 512 and 1,024;
- memory: peak resident memory added by one step, each measured in a fresh subprocess, on the same batches and on
  single documents of 2,048 / 4,096 / 8,192 tokens (transformers' sdpa path builds dense S x S sliding masks).

Baselines: transformers `sdpa` with `sparse_prediction=True` (its best CPU setting) and its default
(`sparse_prediction=False`, what most users run).

    python bench/encoder_step.py                 # the BENCHMARKS.md run (CPU, 2 threads)
    python bench/encoder_step.py --quick         # smaller, for a smoke check
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers
from transformers import ModernBertConfig

import cmbert.modeling

SHAPE = dict(hidden_size=256, num_hidden_layers=6, num_attention_heads=4, intermediate_size=384, local_attention=128,
             global_attn_every_n_layers=3, vocab_size=50368, max_position_embeddings=8192)
# ours: the default call (the loss, plus detached logits of labelled tokens for metrics);
# ours_loss: as a training loop calls it, `return_logits=False` (no [n_labelled, vocab] buffer).
MODELS = ("ours", "ours_loss", "hf_sparse", "hf_dense")
CALL_KWARGS = {"ours_loss": {"return_logits": False}}


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def build(name: str, device: str, dtype: str = "fp32", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = ModernBertConfig(**SHAPE, sparse_prediction=(name == "hf_sparse"))
    model = cmbert.modeling.ModernBertForMaskedLM(config)  # the weights every model gets
    if name.startswith("hf"):
        reference = transformers.ModernBertForMaskedLM._from_config(config, attn_implementation="sdpa")
        reference.load_state_dict(model.state_dict())
        model = reference
    return model.to(device=device, dtype=DTYPES[dtype]).train()


def make_batch(rows: int, row_len: int, variable: bool, seed: int, device: str):
    g = torch.Generator().manual_seed(seed)
    if variable:
        lengths = torch.randint(max(1, row_len // 10), row_len + 1, (rows,), generator=g)
    else:
        lengths = torch.full((rows,), row_len)
    ids = torch.randint(5, SHAPE["vocab_size"], (rows, row_len), generator=g)
    mask = (torch.arange(row_len)[None, :] < lengths[:, None]).long()
    labels = torch.where((torch.rand(rows, row_len, generator=g) < 0.3) & mask.bool(), ids, -100)
    return {k: v.to(device) for k, v in dict(input_ids=ids, attention_mask=mask, labels=labels).items()}


def step_flops(name: str, attention_mask: torch.Tensor, n_labelled: int) -> float:
    """Model FLOPs of one training step (forward x 3), as each implementation computes them: transformers runs every
    padded position through every layer and attends over whole rows (its sdpa path masks, it does not skip); ours
    runs real tokens only, global layers per document, local layers over 3-block bands."""
    h, inter, vocab, layers = SHAPE["hidden_size"], SHAPE["intermediate_size"], SHAPE["vocab_size"], SHAPE["num_hidden_layers"]
    window = SHAPE["local_attention"] // 2
    n_global = len(range(0, layers, SHAPE["global_attn_every_n_layers"]))
    lengths = attention_mask.sum(1).tolist()
    rows, row_len = attention_mask.shape
    per_token_linear = 2 * (h * 3 * h + h * h + h * 2 * inter + inter * h)
    head = n_labelled * 2 * (h * h + h * vocab)
    if name.startswith("hf"):
        tokens = rows * row_len
        pairs = layers * rows * row_len**2
        head = head if name == "hf_sparse" else tokens * 2 * (h * h + h * vocab)
    else:
        tokens = sum(lengths)
        whole_docs = sum(n * n for n in lengths)
        band = -(-tokens // window) * window * 3 * window if max(lengths) - 1 > window else whole_docs
        pairs = n_global * whole_docs + (layers - n_global) * band
    attention = pairs * 2 * 2 * h  # QK^T and AV, multiply-adds count 2
    return 3.0 * (tokens * layers * per_token_linear + attention + head)


def step(model, batch, name: str) -> None:
    loss = model(**batch, **CALL_KWARGS.get(name, {})).loss
    loss.backward()
    model.zero_grad(set_to_none=True)


def time_steps(models: dict, batch, repeats: int, device: str) -> dict:
    """Median seconds per step; models alternate within each repetition so drift hits all of them alike."""
    for name, model in models.items():
        step(model, batch, name)  # warm-up
    times = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step(model, batch, name)
            if device == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def peak_memory_child(spec: dict) -> None:
    """Runs in a fresh process: peak memory (MiB) that one step adds on top of model + batch."""
    torch.set_num_threads(spec["threads"])
    device = spec["device"]
    model = build(spec["model"], device, spec["dtype"])
    batch = make_batch(spec["rows"], spec["row_len"], spec["variable"], spec["seed"], device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(model, batch, spec["model"])
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        # Reset the kernel's high-water mark so building the models does not count, then read it after the step.
        Path("/proc/self/clear_refs").write_text("5")
        base = _proc_status_bytes("VmRSS")
        step(model, batch, spec["model"])
        peak = _proc_status_bytes("VmHWM") - base
    print(json.dumps({"peak_mib": peak / 2**20}))


def _proc_status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory(model: str, rows: int, row_len: int, variable: bool, seed: int, args) -> float:
    spec = dict(model=model, rows=rows, row_len=row_len, variable=variable, seed=seed, threads=args.threads,
                device=args.device, dtype=args.dtype)
    # A fixed mmap threshold makes glibc map every tensor-sized block on its own and unmap it when freed, so the
    # resident high-water mark follows live tensor bytes instead of the allocator's caching history.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                         env=env)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=DTYPES, default="fp32", help="parameter dtype of every model (bf16 on GPU)")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--row-lens", default="512,1024")
    parser.add_argument("--long", default="2048,4096,8192", help="single-document lengths for the memory scan")
    parser.add_argument("--backend", default="auto", help="our attention backend (cmbert.modeling.attention)")
    parser.add_argument("--quick", action="store_true", help="rows 4, repeats 2, row 512, long 2048")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cmbert.modeling.set_attention_backend(args.backend)
    if args.child:
        return peak_memory_child(json.loads(args.child))
    if args.quick:
        args.rows, args.repeats, args.row_lens, args.long = 4, 2, "512", "2048"
    torch.set_num_threads(args.threads)

    print(f"# torch {torch.__version__}, transformers {transformers.__version__}, device {args.device}, "
          f"{args.dtype}, threads {args.threads}, backend {cmbert.modeling.attention.resolve_backend(torch.device(args.device))}")
    print(f"# model {SHAPE}")
    print("| batch | real tokens | ours tok/s | speed vs hf sparse | vs hf default | FLOPs: hf sparse / ours | peak MiB "
          "| memory vs hf sparse | vs hf default |")
    print("|---|---|---|---|---|---|---|---|---|")
    models = {name: build(name, args.device, args.dtype) for name in MODELS}
    for row_len in (int(x) for x in args.row_lens.split(",")):
        for variable in (True, False):
            batch = make_batch(args.rows, row_len, variable, seed=row_len, device=args.device)
            real = int(batch["attention_mask"].sum())
            secs = time_steps(models, batch, args.repeats, args.device)
            mem = {name: peak_memory(name, args.rows, row_len, variable, row_len, args) for name in MODELS}
            labelled = int((batch["labels"] != -100).sum())
            flop_ratio = step_flops("hf_sparse", batch["attention_mask"], labelled) / step_flops(
                "ours", batch["attention_mask"], labelled)
            for ours in ("ours", "ours_loss"):
                label = f"{args.rows} x {row_len} {'variable' if variable else 'fixed'}, {ours}"
                print(f"| {label} | {real} | {real / secs[ours]:,.0f} | {secs['hf_sparse'] / secs[ours]:.2f}x | "
                      f"{secs['hf_dense'] / secs[ours]:.2f}x | {flop_ratio:.2f}x | {mem[ours]:,.0f} | "
                      f"{mem[ours] / mem['hf_sparse']:.2f}x | {mem[ours] / mem['hf_dense']:.2f}x |", flush=True)

    print("\n| one document, tokens | ours MiB | ours_loss MiB | hf sparse MiB | ours_loss / hf sparse |")
    print("|---|---|---|---|---|")
    for length in (int(x) for x in args.long.split(",")):
        mem = {name: peak_memory(name, 1, length, False, length, args) for name in ("ours", "ours_loss", "hf_sparse")}
        print(f"| {length:,} | {mem['ours']:,.0f} | {mem['ours_loss']:,.0f} | {mem['hf_sparse']:,.0f} | "
              f"{mem['ours_loss'] / mem['hf_sparse']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
