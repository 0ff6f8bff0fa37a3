"""Cost of full fine-tuning vs LoRA vs LoRA on layer-pruned encoders, at ModernBERT-base's shape.

The demo sweep (`cmbert finetune sweep`) trains a 4-layer, width-128 encoder whose embedding table and label-wise head
dominate its parameter count; this bench measures the same variants at the shape users fine-tune (22 layers, width
768, GeGLU 1,152, vocabulary 50,368; random weights: cost does not depend on what the weights hold), with
transformers' sequence-classification head on 50 labels. Side by side in one run, with `cmbert.finetune.icd.sweep`'s own
measurements: trainable share (whole model and encoder alone), training memory (weights + gradients + AdamW state +
activations saved for backward) and the median step time, variants taking turns on the same batches.

    python bench/peft_cost.py                 # the BENCHMARKS.md run: 2 notes of 512 tokens per step
    python bench/peft_cost.py --quick         # 4 layers, for a smoke check
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from transformers import ModernBertConfig

import cmbert.modeling
from cmbert.core.lora import LoraSettings, apply_lora
from cmbert.core.pruning import PruneSettings, prune_layers
from cmbert.finetune.icd.sweep import cost_row, round_robin_seconds

BASE = dict(hidden_size=768, num_hidden_layers=22, num_attention_heads=12, intermediate_size=1152,
            local_attention=128, global_attn_every_n_layers=3, vocab_size=50368, max_position_embeddings=8192,
            num_labels=50, problem_type="multi_label_classification", pad_token_id=50283, cls_token_id=50281,
            sep_token_id=50282, bos_token_id=50281, eos_token_id=50282)
STRATEGIES = ("top", "middle", "every_other", "local")


def variants(fraction: float, lora: LoraSettings) -> dict[str, tuple[LoraSettings, PruneSettings]]:
    plan = {"full": (LoraSettings(), PruneSettings()), "lora": (lora, PruneSettings())}
    plan.update({f"lora+{s}": (lora, PruneSettings(strategy=s, fraction=fraction)) for s in STRATEGIES})
    return plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tokens", type=int, default=512, help="tokens per note")
    parser.add_argument("--notes", type=int, default=2, help="notes per step")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--fraction", type=float, default=0.3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lora-dropout", type=float, default=LoraSettings.dropout,
                        help="0 saves no dropped-out copy of each adapted layer's input")
    parser.add_argument("--targets", default=",".join(LoraSettings().target_modules), help="e.g. Wqkv,Wo")
    args = parser.parse_args()
    shape = {**BASE, **({"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4,
                         "intermediate_size": 384} if args.quick else {})}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    reference = cmbert.modeling.ModernBertForSequenceClassification(ModernBertConfig(**shape)).state_dict()
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randint(3, 50000, (args.notes, args.tokens), generator=g),
                (torch.rand(args.notes, shape["num_labels"], generator=g) < 0.1).float()) for _ in range(2)]
    steps, rows = {}, {}
    settings = LoraSettings(enabled=True, r=args.rank, dropout=args.lora_dropout, target_modules=args.targets.split(","))
    for name, (lora, prune) in variants(args.fraction, settings).items():
        model = cmbert.modeling.ModernBertForSequenceClassification(ModernBertConfig(**shape))
        model.load_state_dict(reference)
        prune_layers(model, prune)
        if lora.enabled:
            apply_lora(model, lora, keep_trainable=("head.", "classifier."))
        model.to(device).train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def step(batch, model=model, optimizer=optimizer):
            ids, labels = (x.to(device) for x in batch)
            model(input_ids=ids, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        rows[name] = cost_row(model, model.model, optimizer, step, batches[0], device)
        steps[name] = step
        print(f"[bench] built {name}", file=sys.stderr, flush=True)
    for name, seconds in round_robin_seconds(steps, batches, args.steps, 1, device).items():
        rows[name]["step_seconds"] = seconds
    full = rows["full"]
    print(f"{shape['num_hidden_layers']} layers, width {shape['hidden_size']}, {args.notes} x {args.tokens} tokens "
          f"per step, {device}, {torch.get_num_threads()} threads; LoRA r {settings.r} on {settings.target_modules}, "
          f"dropout {settings.dropout}")
    print("| variant | layers | trainable % (encoder %) | memory × full | activations × full | step time × full |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['layers']} | {r['trainable_percent']:.2f} ({r['encoder_trainable_percent']:.2f}) | "
              f"{r['memory_mib'] / full['memory_mib']:.2f} | {r['activation_mib'] / full['activation_mib']:.2f} | "
              f"{r['step_seconds'] / full['step_seconds']:.2f} |")
    print(json.dumps(rows, indent=1), file=sys.stderr)


if __name__ == "__main__":
    main()
