"""One ICD fine-tuning step (encoder + label attention, forward + backward) in fp32 against bf16 autocast, on CPU.

Side by side in one run, same weights, same batch, interleaved repetitions (these machines are shared and noisy, so
only the ratio means anything). The batch is what `finetune icd train` packs: notes of synthetic-note lengths cut into
chunks of `max_length` tokens, one token budget per step. Shapes: the demo encoder (4 layers, width 128, 256-token
chunks, 16k tokens per step) and a ModernBERT-base-shaped one (22 layers, width 768, 8,192-token chunks; one
4k-token note per step, to keep the fp32 steps within a minute).

bf16 autocast pays off only where the CPU has bf16 dot products (AVX512-BF16 or AMX); elsewhere it is emulated and
slower than fp32. That is why `precision: auto` checks the CPU (`cmbert.core.notes.native_bf16_cpu`).

    python bench/icd_step.py               # the BENCHMARKS.md run (2 threads)
    python bench/icd_step.py --quick       # demo shape only, fewer repeats
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from transformers import ModernBertConfig

from cmbert.core.label_attention import IcdMeta, IcdModel
from cmbert.core.notes import collate
from cmbert.core.runtime import native_bf16_cpu
from cmbert.modeling import ModernBertModel

SHAPES = {
    "demo": (dict(hidden_size=128, intermediate_size=192, num_hidden_layers=4, num_attention_heads=4,
                  local_attention=64, global_attn_every_n_layers=3, max_position_embeddings=256), 256, 16384),
    "base": (dict(hidden_size=768, intermediate_size=1152, num_hidden_layers=22, num_attention_heads=12,
                  local_attention=128, global_attn_every_n_layers=3, max_position_embeddings=8192), 8192, 4096),
}
LABELS = 100
CLS, SEP = 1, 2


def build(shape: str) -> tuple[IcdModel, dict, int]:
    kwargs, max_length, budget = SHAPES[shape]
    torch.manual_seed(0)
    config = ModernBertConfig(vocab_size=8192, cls_token_id=CLS, sep_token_id=SEP, bos_token_id=CLS, eos_token_id=SEP,
                             pad_token_id=0, **kwargs)
    meta = IcdMeta(head="laat", codes=[f"C{i}" for i in range(LABELS)], titles=[""] * LABELS,
                   kinds=["diagnosis"] * LABELS, train_counts=[10] * LABELS, icd_version=10, max_length=max_length,
                   max_chunks=32, attention_dim=kwargs["hidden_size"])
    model = IcdModel(ModernBertModel(config), meta)  # a fresh label-attention head
    # Notes of the synthetic discharge summaries' token lengths (median ~2,700), to the token budget of one step.
    rng = np.random.default_rng(0)
    notes, used = [], 0
    while True:
        n = int(min(budget, rng.lognormal(np.log(2700), 0.6)))
        if notes and used + n > budget:
            break
        notes.append(rng.integers(3, 8192, n).astype(np.int32))
        used += n
    batch = collate(notes, max_length, CLS, SEP)
    batch["labels"] = torch.from_numpy((rng.random((len(notes), LABELS)) < 0.1).astype(np.float32))
    return model.train(), batch, int(batch["input_ids"].numel())


def step(model: IcdModel, batch: dict, dtype: torch.dtype) -> float:
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        logits = model(batch["input_ids"], batch["cu_seqlens"], batch["max_seqlen"], batch["note_chunks"])
    torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["labels"]).backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="demo shape, 2 repeats")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats, shapes = (2, ["demo"]) if args.quick else (args.repeats, list(SHAPES))
    print(f"torch {torch.__version__}, {args.threads} threads, native bf16 on this CPU: {native_bf16_cpu()}")
    print("| shape | tokens/step | fp32 tokens/s | bf16 autocast tokens/s | bf16 / fp32 |")
    print("|---|---|---|---|---|")
    for shape in shapes:
        model, batch, tokens = build(shape)
        times = {torch.float32: [], torch.bfloat16: []}
        for dtype in times:  # warm-up: one step each
            step(model, batch, dtype)
        for _ in range(repeats):  # interleaved, so a noisy neighbour hits both alike
            for dtype in times:
                times[dtype].append(step(model, batch, dtype))
        fp32, bf16 = (tokens / statistics.median(times[d]) for d in (torch.float32, torch.bfloat16))
        print(f"| {shape} | {tokens:,} | {fp32:,.0f} | {bf16:,.0f} | {bf16 / fp32:.2f} |", flush=True)


if __name__ == "__main__":
    main()
