"""LoRA adapters on the encoder of any fine-tuning recipe, through `peft`, merged back into stock weights on export.

    lora = LoraSettings(enabled=True, r=8)                      # the recipe config's `model.lora`
    apply_lora(model.encoder, lora, keep_trainable=("head.", "classifier."))
    ...train...
    stock = merged_copy(model.encoder)                          # plain nn.Linear again: save_pretrained writes a
                                                                # stock transformers ModernBERT

peft has no ModernBERT entry in its target-module map, so the targets are named here: the fused `Wqkv` and the
attention output `Wo`, and the GeGLU input `Wi` (whose output half is the gate); `Wo` also matches the MLP's output
projection, so the default adapts every linear layer of every block. The adapters are injected in place
(`peft.inject_adapter_in_model`), so the encoder keeps its class and its `encode`/unpadded paths; everything in it
except the adapters and the task-head parameters the caller names is frozen.

Exported models never carry adapters: `merged_copy` folds W + (alpha / r) B A into each base weight on a copy and
swaps the LoRA layers back for the plain ones, so checkpoints load with `AutoModel` and no peft. A LoRA model trains
only r (d_in + d_out) numbers per adapted matrix: 0.3 to 1 % of a ModernBERT-base at r 8 (`trainable_summary`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from torch import nn

from cmbert.core.errors import UserError

DEFAULT_TARGETS = ["Wqkv", "Wo", "Wi"]


@dataclass
class LoraSettings:
    enabled: bool = False
    r: int = 8
    alpha: float = 16.0  # the update is scaled by alpha / r
    dropout: float = 0.05  # on the adapter's input
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    layers: list[int] | None = None  # adapt only these layer indices (None: every layer)
    lr: float = 5e-4  # the adapters' peak learning rate (they start at zero and need a larger step than full weights)


def check_lora_settings(settings: LoraSettings, where: str = "lora") -> None:
    from cmbert.core.config import ConfigError

    if not settings.enabled:
        return
    if settings.r < 1 or settings.alpha <= 0 or not 0 <= settings.dropout < 1 or settings.lr <= 0:
        raise ConfigError(f"{where}: r must be >= 1, alpha > 0, dropout in [0, 1) and lr > 0")
    if not settings.target_modules:
        raise ConfigError(f"{where}.target_modules: name at least one module (ModernBERT: {DEFAULT_TARGETS})")


def apply_lora(encoder: nn.Module, settings: LoraSettings, keep_trainable: tuple[str, ...] = ()) -> nn.Module:
    """Inject LoRA adapters into `encoder` in place and freeze everything else in it but the parameters whose names
    start with one of `keep_trainable` (a task head that lives inside the encoder module). Returns `encoder`."""
    import peft

    missing = [t for t in settings.target_modules
               if not any(name.split(".")[-1] == t for name, _ in encoder.named_modules())]
    if missing:
        raise UserError(f"lora.target_modules: {missing} name no module of {type(encoder).__name__} "
                        f"(ModernBERT's linear layers are {DEFAULT_TARGETS})")
    config = peft.LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                             target_modules=list(settings.target_modules), bias="none",
                             layers_to_transform=settings.layers, layers_pattern="layers" if settings.layers else None)
    peft.inject_adapter_in_model(config, encoder)
    for name, param in encoder.named_parameters():
        param.requires_grad = "lora_" in name or name.startswith(tuple(keep_trainable))
    return encoder


def has_lora(module: nn.Module) -> bool:
    # By parameter name (peft's `lora_A` / `lora_B`): saving a model without adapters never imports peft.
    return any("lora_" in name for name, _ in module.named_parameters())


def merge_lora(module: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put the plain layer back, in place; returns `module`."""
    from peft.tuners.lora import LoraLayer

    for name, child in list(module.named_modules()):
        if isinstance(child, LoraLayer):
            child.merge(safe_merge=True)  # raises on a non-finite merged weight instead of saving it
            parent = module.get_submodule(name.rpartition(".")[0]) if "." in name else module
            setattr(parent, name.rpartition(".")[2], child.get_base_layer())
    return module


def merged_copy(module: nn.Module) -> nn.Module:
    """`module` itself when it has no adapters, else a merged copy (training goes on with the adapters)."""
    return merge_lora(copy.deepcopy(module)) if has_lora(module) else module


def trainable_summary(model: nn.Module) -> dict:
    """Trainable parameters, all parameters, and the LoRA adapters' share, for reports."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    adapters = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    return {"trainable_parameters": trainable, "parameters": total, "adapter_parameters": adapters,
            "trainable_percent": round(100.0 * trainable / max(total, 1), 4)}
