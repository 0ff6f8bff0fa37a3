"""Release checkpoints: strict loading, config keys that transformers 4.x and 5.x both read, a model card.

transformers 5 describes the layer pattern with `layer_types` and RoPE with `rope_parameters`; transformers 4.48-4.57
read `global_attn_every_n_layers`, `global_rope_theta` and `local_rope_theta` instead and silently fall back to their
defaults when those are absent (a v5-only config with a non-default theta loads *wrong* in 4.57). Every export
therefore writes both sets, kept consistent here, and a config that 4.x cannot express (a layer pattern other than
"global every n-th layer from layer 0", or a non-default RoPE type) is marked with the minimum transformers version
in config.json and the model card.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from transformers import ModernBertConfig

V5_ONLY = "5.0.0"
# Keys of task heads that the ModernBERT classes add on top of `model.*`. Loading one class's checkpoint into another
# legitimately leaves these unused or freshly initialised; any other key mismatch means a wrong or broken checkpoint.
HEAD_KEYS = re.compile(r"^(head\.|decoder\.|classifier\.)")


def global_every_n(config: ModernBertConfig) -> int | None:
    """The n with layer_types == ["full_attention" if i % n == 0 else "sliding_attention"], if there is one."""
    types = list(config.layer_types)
    for n in range(1, len(types) + 1):
        if types == ["sliding_attention" if i % n else "full_attention" for i in range(len(types))]:
            return n
    return None


def v4_config_keys(config: ModernBertConfig) -> tuple[dict, list[str]]:
    """The transformers-4.x keys that describe `config`, and the reasons 4.x cannot load it faithfully (if any)."""
    keys, problems = {}, []
    n = global_every_n(config)
    if n is None:
        problems.append(f"layer pattern {list(config.layer_types)} is not 'global every n-th layer'")
    else:
        keys["global_attn_every_n_layers"] = n
    for layer_type, key in (("full_attention", "global_rope_theta"), ("sliding_attention", "local_rope_theta")):
        params = config.rope_parameters.get(layer_type) or {}
        keys[key] = float(params.get("rope_theta", ModernBertConfig.default_theta["global" if "full" in layer_type else "local"]))
        if params.get("rope_type", "default") != "default":
            problems.append(f"{layer_type} uses rope_type {params['rope_type']!r}")
    return keys, problems


def write_compatible_config(folder: str | Path, config: ModernBertConfig) -> list[str]:
    """Add the 4.x keys to `folder/config.json`; returns the reasons it needs transformers >= 5 (empty if none)."""
    path = Path(folder) / "config.json"
    data = json.loads(path.read_text())
    keys, problems = v4_config_keys(config)
    data.update(keys)
    if problems:
        # Some transformers 5 releases serialise a default `global_attn_every_n_layers` beside custom layer_types;
        # no key is better than a key that contradicts layer_types.
        if "global_attn_every_n_layers" not in keys:
            data.pop("global_attn_every_n_layers", None)
        data["min_transformers_version"] = V5_ONLY
    else:
        data.pop("min_transformers_version", None)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return problems


def write_model_card(folder: str | Path, config: ModernBertConfig, problems: list[str], architecture: str) -> None:
    """A model card for the hub and for readers of the folder; keeps an existing card's body."""
    path = Path(folder) / "README.md"
    min_version = V5_ONLY if problems else "4.48.0"
    layers = list(config.layer_types)
    n_global = layers.count("full_attention")
    header = (
        "---\n"
        "library_name: transformers\n"
        "tags:\n- modernbert\n- clinical\n- fill-mask\n"
        "pipeline_tag: fill-mask\n"
        "---\n"
    )
    body = (
        f"# {architecture}\n\n"
        "A ModernBERT encoder in the stock transformers `modernbert` format, exported by clinical-modernbert.\n\n"
        "```python\nfrom transformers import AutoModelForMaskedLM, AutoTokenizer\n"
        "model = AutoModelForMaskedLM.from_pretrained(folder)  # no trust_remote_code\n```\n\n"
        f"- layers: {config.num_hidden_layers} ({n_global} global, {len(layers) - n_global} with a "
        f"{config.local_attention}-token sliding window), hidden {config.hidden_size}, heads "
        f"{config.num_attention_heads}, GeGLU intermediate {config.intermediate_size}\n"
        f"- RoPE theta: global {config.rope_parameters['full_attention']['rope_theta']:g}, local "
        f"{config.rope_parameters['sliding_attention']['rope_theta']:g}; context {config.max_position_embeddings}\n"
        + (f"- pruned: layers {pruned['dropped']} of the original {pruned['num_hidden_layers']} dropped "
           f"({pruned['strategy']}); the rest kept in order\n" if (pruned := getattr(config, "pruned_from", None))
           else "")
        + f"- minimum transformers version: **{min_version}**"
        + ("".join(f"\n  - needs >= {V5_ONLY} because the {p}" for p in problems) if problems else "")
        + "\n"
    )
    path.write_text(header + body)


def set_special_token_ids(config: ModernBertConfig, tokenizer) -> ModernBertConfig:
    """Take pad/cls/sep/bos/eos ids from the tokenizer, never from ModernBertConfig's defaults (those are the
    OLMo tokenizer's ids and point at arbitrary tokens of any other vocabulary)."""
    ids = {
        "pad_token_id": tokenizer.pad_token_id,
        "cls_token_id": tokenizer.cls_token_id,
        "sep_token_id": tokenizer.sep_token_id,
    }
    missing = [k for k, v in ids.items() if v is None]
    if missing:
        raise ValueError(f"tokenizer has no {missing}: ModernBERT needs [PAD], [CLS] and [SEP]")
    ids["bos_token_id"] = ids["cls_token_id"]
    ids["eos_token_id"] = ids["sep_token_id"]
    for key, value in ids.items():
        setattr(config, key, value)
    if len(tokenizer) > config.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but config.vocab_size is {config.vocab_size}")
    return config


class CheckpointMixin:
    """Strict `from_pretrained` and a two-version `save_pretrained` for the ModernBERT classes."""

    # Head keys this class may find missing in a checkpoint (created fresh) — e.g. a classifier on an MLM checkpoint.
    _fresh_head_keys: re.Pattern | None = None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, strict: bool = True, **kwargs):
        """Load any transformers ModernBERT folder. With `strict` (default), a key that is neither loaded nor a
        task head this class creates fresh is an error that lists the offending keys."""
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        fresh = cls._fresh_head_keys
        missing = sorted(k for k in info["missing_keys"] if not (fresh and fresh.match(k)))
        unexpected = sorted(k for k in info["unexpected_keys"] if not HEAD_KEYS.match(k))
        mismatched = sorted(str(m) for m in info.get("mismatched_keys", []))
        if strict and (missing or unexpected or mismatched):
            raise ValueError(
                f"{pretrained_model_name_or_path} is not a checkpoint of {cls.__name__}:\n"
                f"  missing keys: {missing}\n  unexpected keys: {unexpected}\n  mismatched shapes: {mismatched}\n"
                "Pass strict=False to load anyway (missing weights are initialised at random)."
            )
        return (model, info) if want_info else model

    def save_pretrained(self, save_directory, *args, **kwargs):
        super().save_pretrained(save_directory, *args, **kwargs)
        problems = write_compatible_config(save_directory, self.config)
        write_model_card(save_directory, self.config, problems, type(self).__name__)
