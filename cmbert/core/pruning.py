"""Structured layer pruning: drop whole encoder layers before fine-tuning (Zhu et al. 2023, arXiv 2305.08285).

Zhu et al. prune over 30 % of the layers and tune LoRA adapters on the rest, but do not say which layers go. For a
ModernBERT the choice interacts with its global/local pattern (every third layer attends globally, the others see a
128-token window), so the choice is an experiment: `cmbert finetune sweep` compares the strategies.

Strategies, each dropping k = ceil(fraction * n_layers) layers unless given explicit indices:
    top          the last k layers (the most task-specific, and the cheapest to lose for BERT: Sajjad et al. 2023)
    middle       k consecutive layers centred on the middle of the stack
    every_other  odd-indexed layers, from the top down (0.5 drops every odd layer of an even-sized stack)
    local        sliding-window layers only, from the top down: every global layer is kept
    layers       the indices in `drop`

Layer 0 is never dropped. transformers' ModernBERT gives layer 0 no `attn_norm` (the embedding LayerNorm already
normalised its input), so a layer moved to index 0 would lose its attention LayerNorm: its weight can be folded into
Wqkv, but the normalisation itself (mean and variance of an input that has already been through the embedding norm
with its own weight) cannot, and the pruned model would no longer compute what the kept layers learned. Every named
strategy keeps layer 0; explicit indices that include it are refused with this reason.

The pruned model is a stock ModernBERT with fewer layers: `num_hidden_layers` and `layer_types` list the kept
layers, so it saves with `save_pretrained` and loads with `AutoModel`. A kept pattern that is no longer "global every
n-th layer" (dropping the middle of a 22-layer base, say) cannot be written for transformers 4.x; the export marks
it with the minimum transformers version (modeling/checkpoint.py). `config.pruned_from` records what was dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from cmbert.core.errors import UserError

STRATEGIES = ("none", "top", "middle", "every_other", "local", "layers")


@dataclass
class PruneSettings:
    strategy: Literal["none", "top", "middle", "every_other", "local", "layers"] = "none"
    fraction: float = 0.3  # share of the layers the named strategies drop (rounded up: 0.3 of 22 layers drops 7)
    drop: list[int] = field(default_factory=list)  # strategy "layers": the indices to drop


def check_prune_settings(settings: PruneSettings, where: str = "prune") -> None:
    from cmbert.core.config import ConfigError

    if settings.strategy not in STRATEGIES:
        raise ConfigError(f"{where}.strategy: {settings.strategy!r} is not one of {', '.join(STRATEGIES)}")
    if settings.strategy not in ("none", "layers") and not 0 < settings.fraction < 1:
        raise ConfigError(f"{where}.fraction must be in (0, 1), not {settings.fraction}")
    if settings.strategy == "layers" and not settings.drop:
        raise ConfigError(f"{where}.drop: strategy 'layers' needs the indices to drop")
    if settings.strategy != "layers" and settings.drop:
        raise ConfigError(f"{where}.drop is only read with strategy 'layers' (strategy is {settings.strategy!r})")


def layers_to_drop(layer_types: list[str], settings: PruneSettings) -> list[int]:
    """The indices `settings` drops from a stack with these layer types (sorted); raises if it cannot."""
    n = len(layer_types)
    if settings.strategy == "none":
        return []
    if settings.strategy == "layers":
        drop = sorted(set(settings.drop))
        if drop[0] < 0 or drop[-1] >= n:
            raise UserError(f"prune.drop: indices must be in 0..{n - 1}, got {settings.drop}")
        if 0 in drop:
            raise UserError("prune.drop: layer 0 is never pruned (transformers gives layer 0 no attn_norm, so the "
                            "layer moved into its place would lose its attention LayerNorm; cmbert/core/pruning.py)")
        return drop
    k = math.ceil(settings.fraction * n)
    if settings.strategy == "top":
        candidates = list(range(n - 1, 0, -1))
    elif settings.strategy == "middle":
        start = max(1, (n - k) // 2)
        candidates = list(range(start, min(start + k, n)))
    elif settings.strategy == "every_other":
        candidates = list(range(n - 1 if (n - 1) % 2 else n - 2, 0, -2))
    else:  # local
        candidates = [i for i in range(n - 1, 0, -1) if layer_types[i] == "sliding_attention"]
    if len(candidates) < k:
        raise UserError(f"prune: strategy {settings.strategy!r} has only {len(candidates)} droppable layers of {n} "
                        f"but fraction {settings.fraction} asks for {k}")
    return sorted(candidates[:k])


def encoder_body(model: nn.Module) -> nn.Module:
    """The module holding `layers` (a ModernBertModel itself, or the `.model` of a task model)."""
    body = model.model if hasattr(model, "model") and hasattr(model.model, "layers") else model
    if not isinstance(getattr(body, "layers", None), nn.ModuleList):
        raise TypeError(f"{type(model).__name__} is not a ModernBERT (no layers list)")
    return body


def prune_layers(model: nn.Module, settings: PruneSettings) -> list[int]:
    """Drop the layers `settings` chooses from a ModernBERT (base or task model) in place and make its config match;
    returns the dropped indices (in the unpruned numbering)."""
    from cmbert.modeling.model import Rotary

    if settings.strategy == "none":
        return []
    body = encoder_body(model)
    config = body.config
    types = list(config.layer_types)
    drop = layers_to_drop(types, settings)
    if not drop:
        return []
    keep = [i for i in range(len(types)) if i not in set(drop)]
    body.layers = nn.ModuleList(body.layers[i] for i in keep)
    config.layer_types = [types[i] for i in keep]
    config.num_hidden_layers = len(keep)
    # A layer type with no layer left needs no rotary table (and a fresh model built from the config has none).
    body.rotary = nn.ModuleDict({t: body.rotary[t] if t in body.rotary else Rotary(config, t)
                                 for t in sorted(set(config.layer_types))})
    previous = getattr(config, "pruned_from", None)  # pruning twice: record indices of the original stack
    original = previous["kept"] if previous else list(range(len(types)))
    config.pruned_from = {
        "num_hidden_layers": previous["num_hidden_layers"] if previous else len(types),
        "strategy": settings.strategy if not previous else f"{previous['strategy']}+{settings.strategy}",
        "dropped": sorted(set(previous["dropped"] if previous else []) | {original[i] for i in drop}),
        "kept": [original[i] for i in keep],
    }
    return drop
