"""`cmbert export`: a pretraining checkpoint (DeepSpeed, any ZeRO stage) -> a stock transformers `modernbert` folder.

The newest complete checkpoint under `<run>/ckpt` is consolidated to fp32 (ZeRO partitions gathered with DeepSpeed's
own `zero_to_fp32`), loaded strictly into `ModernBertForMaskedLM` with the config and tokenizer the run saved in
`ckpt/hf`, and written with `save_pretrained` (both transformers 4.x and 5.x config keys, a model card) plus the
tokenizer. `AutoModelForMaskedLM.from_pretrained(out)` loads it with no remote code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cmbert.core.errors import MissingInput, UserError

COMPLETE = "cmbert_complete.json"  # written by cmbert.pretrain.train once every rank has saved
HF_FILES = "hf"  # <run>/ckpt/hf: the run's config.json and tokenizer, saved by cmbert.pretrain.train at the start


def complete_checkpoints(ckpt: Path) -> list[tuple[int, Path]]:
    """(step, folder) of the checkpoints that were fully written, oldest first."""
    return sorted((json.loads(m.read_text())["step"], m.parent) for m in Path(ckpt).glob(f"step-*/{COMPLETE}"))


def newest_checkpoint(ckpt: Path) -> Path:
    complete = complete_checkpoints(ckpt)
    if not complete:
        raise MissingInput(f"{ckpt}: no complete checkpoint (a step-*/ folder with {COMPLETE})")
    return complete[-1][1]


def consolidated_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """fp32 weights of one checkpoint folder (`ckpt/step-N`)."""
    if any(folder.glob("*zero_pp_rank_*optim_states.pt")):  # ZeRO >= 1: masters are partitioned across ranks
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return get_fp32_state_dict_from_zero_checkpoint(str(folder.parent), tag=folder.name)
    states = torch.load(folder / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
    return {k: v.float() for k, v in states["module"].items()}


def export_checkpoint(ckpt: str | Path, out: str | Path, tag: str | None = None) -> Path:
    """Export the newest complete checkpoint in `ckpt` (a run's `ckpt/` folder), or `ckpt/tag`, to `out`.

    Args:
        ckpt: a run's ckpt/ folder (newest complete checkpoint) or one ckpt/step-N folder
        tag: a checkpoint name in ckpt, e.g. step-00001000
        out: the transformers folder to write

    Example: cmbert export --checkpoint runs/phase1-1k/ckpt --out runs/phase1-1k/model
    """
    from transformers import AutoTokenizer, ModernBertConfig

    from cmbert.core.tokenizer_files import save_tokenizer
    from cmbert.modeling import ModernBertForMaskedLM

    ckpt, out = Path(ckpt), Path(out)
    if (ckpt / COMPLETE).is_file():  # given a step folder itself
        ckpt, tag = ckpt.parent, ckpt.name
    folder = ckpt / tag if tag else newest_checkpoint(ckpt)
    if not (folder / COMPLETE).is_file():
        raise MissingInput(f"{folder}: not a complete checkpoint (no {COMPLETE}; was its save cut short?)")
    config = ModernBertConfig.from_pretrained(ckpt / HF_FILES)
    model = ModernBertForMaskedLM(config)
    state = consolidated_state_dict(folder)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"decoder.weight"} if config.tie_word_embeddings else set()  # stored once, as the embedding
    if set(missing) - tied or unexpected:
        raise UserError(f"{folder}: checkpoint does not match the run's config: missing {sorted(set(missing) - tied)}, "
                        f"unexpected {sorted(unexpected)}")
    model.tie_weights()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # also writes the architecture part of the model card
    save_tokenizer(AutoTokenizer.from_pretrained(ckpt / HF_FILES), out)
    _append_training_card(out / "README.md", ckpt.parent, json.loads((folder / COMPLETE).read_text()))
    return out


def _append_training_card(card: Path, run: Path, marker: dict) -> None:
    """The model card's training part: data with token counts, the config, held-out numbers, use and limits. Only
    counts and settings: never any text of the corpus."""
    info = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}
    config = info.get("config", {})
    lines = [f"\n## Training\n\n- steps: {marker['step']:,} ({marker['samples']:,} packed rows)"]
    manifest_path = Path(config.get("data", {}).get("shards", "")) / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        lines.append(f"- data ({manifest['max_seq_len']:,}-token rows, packing efficiency "
                     f"{100 * manifest['totals']['packing_efficiency']:.2f} %), tokens per source and mixture weight:")
        from cmbert.pretrain.packing import mixture_weights

        tokens = {name: s["tokens"] for name, s in manifest["sources"].items()}
        mix = mixture_weights(tokens, config.get("data", {}).get("weights"))  # the run's mix, not the default
        lines += [f"  - {name}: {n:,} tokens, weight {mix[name]:.3f}" for name, n in tokens.items()]
    evals = []
    if (run / "metrics.jsonl").is_file():
        from cmbert.core.runlog import read_jsonl

        evals = [r for r in read_jsonl(run / "metrics.jsonl") if "eval_loss" in r and r["step"] <= marker["step"]]
    if evals:
        first, last = evals[0], evals[-1]
        lines.append(f"- held-out MLM loss {first['eval_loss']:.3f} (step {first['step']}) -> {last['eval_loss']:.3f} "
                     f"(step {last['step']}), accuracy at masked positions {100 * last['eval_accuracy']:.1f} %")
    if info:
        lines.append(f"- trained with clinical-modernbert {info.get('git_sha') or ''} on {info.get('world_size')} "
                     f"x {info.get('device_name')}; versions: " +
                     ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items()))
        lines.append("- training config:\n\n```json\n" + json.dumps(config, indent=2) + "\n```")
    lines.append(
        "\n## Intended use and limitations\n\n"
        "A masked-language encoder for clinical and biomedical text, to be fine-tuned (ICD coding, classification, "
        "token tasks, retrieval). It is not a diagnostic tool and its predictions are not medical advice. It reflects "
        "the notes it was trained on: their institutions, time span, language (English) and documentation habits, "
        "and may not transfer to other settings without evaluation there.\n\n"
        "**Data-use terms.** Weights trained on MIMIC-IV notes are derived from credentialed-access data: share them "
        "only under the PhysioNet Credentialed Health Data License and Data Use Agreement (e.g. on PhysioNet "
        "itself), never publicly. Weights trained only on the synthetic MIMIC-format data and open sources (PubMed, "
        "ICD ontologies) carry no such restriction.\n")
    with card.open("a", encoding="utf-8") as f:
        f.write("\n".join(lines))
