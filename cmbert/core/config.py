"""Typed configs for every command: YAML presets in `configs/`, dotted command-line overrides, per-key errors.

    cfg = load_dataclass(MyConfig, "configs/finetune/icd/demo.yaml", ["train.lr=5e-4", "seeds=[0,1]"])

A preset may start from another (`extends: phase1-1k.yaml`, relative to the file) and change only what differs. Every
key is checked before any work starts: an unknown key or a value of the wrong type is a `ConfigError` naming the dotted
key. A relative `configs/...` path that does not exist where the command runs is read from the presets shipped inside
the package (`CONFIG_DIR`), so an installed `cmbert` finds them. The sections several recipes share live here too.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from cmbert.core.errors import UserError

# The presets: configs/ in a checkout, cmbert/configs/ in an installed wheel (package data of `cmbert.configs`).
CONFIG_DIR = Path(str(importlib.resources.files("cmbert.configs")))

_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class ConfigError(UserError):
    """A config that cannot run: the message names the dotted key."""


# The value sets several commands share, named once.
AttentionBackend = Literal["auto", "flash", "varlen", "flex", "sdpa"]  # modeling/attention.py
Precision = Literal["auto", "fp32", "bf16"]  # auto: bf16 autocast on GPUs and on CPUs with native bf16, else fp32
WandbMode = Literal["offline", "online", "disabled"]  # online only when the user opts in


class ConfigBase:
    """The base of every command's top-level config dataclass."""

    def to_dict(self) -> dict:
        """The resolved config as plain JSON values: what run.json records and run signatures compare."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def _convert(value: Any, kind: Any, key: str) -> Any:
    """`value` as type `kind`, or a ConfigError naming `key`. YAML gives ints for floats ("lr: 1" is fine), lists for
    tuples and strings for exponents without a dot ("5e-4"); nothing else is coerced (a word is never a number, a
    number never a bool)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {kind.__name__} keys, got {value!r}")
        return _build(kind, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {kind}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: expected one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {_convert(k, args[0], key): _convert(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
            return float(value)  # PyYAML reads "5e-4" (no dot) as a string: YAML 1.1 wants "5.0e-4"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{key}: unsupported config type {kind}")  # a bug in this file, not in the user's config


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown key {where}{unknown[0]} (known keys{' of ' + prefix if prefix else ''}: "
                          f"{', '.join(sorted(known))})")
    return cls(**{name: _convert(value, hints[name], f"{prefix}.{name}" if prefix else name)
                  for name, value in values.items()})


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A preset with its `extends` chain resolved (the file's own keys win)."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: `extends` loops back to itself")
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    return _merge(_read_yaml(path.parent / parent, (*seen, path)), data)


def apply_override(values: dict, override: str) -> dict:
    """`optim.lr=5e-4` -> values with that key set; the value is read as YAML (numbers, true/false, null, lists;
    an empty value is null), anything YAML cannot read stays a string."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r}: expected dotted.key=value")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    node: dict = {}
    out = node
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    return _merge(values, out)


def preset_path(path: str | Path) -> Path:
    """`path` as given when it exists; else a `configs/...` path (what the README and the presets' own docs write) or a
    path relative to the presets, read from the presets shipped with the package: an installed `cmbert` run from any
    folder finds `--config configs/finetune/icd/demo.yaml`."""
    given = Path(path)
    if given.exists() or given.is_absolute():
        return given
    inside = Path(*given.parts[1:]) if given.parts and given.parts[0] == "configs" else given
    return CONFIG_DIR / inside if (CONFIG_DIR / inside).is_file() else given


def load_dataclass(cls: type, path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()):
    """Any config dataclass from a YAML file (see `preset_path`) and dotted overrides, type-checked."""
    values = _read_yaml(preset_path(path)) if path is not None else {}
    for override in overrides:
        values = apply_override(values, override)
    return _build(cls, values)


def zero_settings(name: str) -> dict:
    """The ZeRO/communication block: a preset name (configs/deepspeed/NAME.json) or a JSON file path."""
    path = Path(name) if name.endswith(".json") else CONFIG_DIR / "deepspeed" / f"{name}.json"
    if not path.is_file():
        presets = ", ".join(sorted(p.stem for p in (CONFIG_DIR / "deepspeed").glob("*.json")))
        raise ConfigError(f"distributed.zero: no DeepSpeed settings {path} (presets: {presets})")
    settings = json.loads(path.read_text())
    training_keys = sorted(set(settings) & {"train_batch_size", "train_micro_batch_size_per_gpu",
                                            "gradient_accumulation_steps", "optimizer", "scheduler", "bf16", "fp16",
                                            "gradient_clipping"})
    if training_keys:  # each value set in one place: these come from the training config
        raise ConfigError(f"{path}: sets {', '.join(training_keys)}, which the training config owns")
    return settings


@dataclass
class TrainSection:
    """The `train` section of the epoch-based recipes (classify, tokens, QA)."""

    seed: int = 0
    lr: float = 5e-5  # the encoder's peak LR (full fine-tuning; adapters use model.lora.lr)
    head_lr: float = 5e-4  # the fresh classifier starts at random and learns faster than the pretrained encoder
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1  # of all optimizer steps; then linear decay to 0
    epochs: int = 5
    max_steps: int = 0  # stop after this many optimizer steps (0 = epochs decide)
    batch_size: int = 16  # texts per optimizer step
    grad_clip: float = 1.0
    patience: int = 2  # epochs without a better validation score before stopping
    precision: Precision = "auto"  # auto: bf16 autocast on GPUs and bf16-capable CPUs
    checkpoint_every_steps: int = 200  # a killed run resumes from the newest checkpoint (and every epoch end)
    resume: bool = True


@dataclass
class LoggingSection:
    """The `logging` section: metrics.jsonl every `every_steps` optimizer steps, and wandb."""

    every_steps: int = 10
    wandb: WandbMode = "offline"  # online only when the user opts in
    project: str = "clinical-modernbert-generic"


def is_dataset_dict(path: str | Path) -> bool:
    """A `DatasetDict.save_to_disk` folder (it holds several splits)."""
    return Path(path, "dataset_dict.json").is_file()


def check_split_paths(d, what: str, validation_use: str) -> None:
    """data.train / validation / test of a recipe's data section (the QA recipe's too): present where needed."""
    if not d.train:
        raise ConfigError(f"data.train: give {what}")
    for key in ("train", "validation", "test"):
        path = getattr(d, key)
        if path and not Path(path).exists():
            raise ConfigError(f"data.{key}: {path} does not exist")
    if not d.validation and not is_dataset_dict(d.train):
        raise ConfigError(f"data.validation: give a validation file ({validation_use} read it), or make data.train "
                          "a DatasetDict folder with a validation split")


def check_encoder_folder(init_from: str) -> None:
    if not init_from:
        raise ConfigError("model.init_from: give a transformers ModernBERT folder")
    if not Path(init_from, "config.json").is_file():
        raise ConfigError(f"model.init_from: {init_from} has no config.json (a local ModernBERT folder is needed; "
                          "the Hugging Face hub is not used)")


_BOUND = re.compile(r"(>=|>|<=|<) (-?[0-9.]+)")
_INTERVAL = re.compile(r"in ([\[(])(-?[0-9.]+), (-?[0-9.]+)([\])])")


def within(value: float, rule: str) -> bool:
    """Whether `value` meets `rule`: ">= 1", "> 0", "< 8", or an interval "in [0, 1)" / "in (0, 1]". A non-finite
    number (nan, inf) meets none: no setting of ours means infinity, and nan would slip through every comparison."""
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if m := _BOUND.fullmatch(rule):
        bound = float(m.group(2))
        return {">=": value >= bound, ">": value > bound, "<=": value <= bound, "<": value < bound}[m.group(1)]
    if m := _INTERVAL.fullmatch(rule):
        low, high = float(m.group(2)), float(m.group(3))
        return (value >= low if m.group(1) == "[" else value > low) and (value <= high if m.group(4) == "]" else
                                                                         value < high)
    raise ValueError(f"unknown range rule {rule!r}")  # a bug in a check, not a user error


def check_ranges(section, prefix: str, rules: dict[str, str]) -> None:
    """Each `field: rule` of `rules` (see `within`) on `section` (`prefix` its dotted key, "" for the top level):
    the first one broken is a ConfigError naming the dotted key, the rule and the value given. An optional key left
    unset (None) has nothing to check."""
    for name, rule in rules.items():
        value = getattr(section, name)
        if value is not None and not within(value, rule):
            raise ConfigError(f"{prefix + '.' if prefix else ''}{name}: must be {rule}, got {value!r}")


def require_keys(cfg, keys: tuple[str, ...], what: str = "PATH") -> None:
    """Each of `keys` given on `cfg` (not None or empty): else a ConfigError naming the key and both ways to give
    it, the command's flag and the override."""
    for key in keys:
        if getattr(cfg, key) in (None, ""):
            raise ConfigError(f"{key}: required (--{key.replace('_', '-')} {what} or {key}={what})")


def check_train_settings(t: TrainSection) -> None:
    check_ranges(t, "train", {"lr": "> 0", "head_lr": "> 0", "weight_decay": ">= 0", "warmup_fraction": "in [0, 1)",
                              "grad_clip": ">= 0", "epochs": ">= 1", "batch_size": ">= 1", "patience": ">= 1",
                              "checkpoint_every_steps": ">= 1", "max_steps": ">= 0"})

SPLIT_NAMES = {"train": ("train",), "validation": ("validation", "val", "dev"), "test": ("test",)}


def split_sources(cfg) -> dict[str, str]:
    """Where each split is read from: its own key, else the DatasetDict folder given as data.train."""
    d = cfg.data
    in_train = set()
    if is_dataset_dict(d.train):
        in_train = set(json.loads(Path(d.train, "dataset_dict.json").read_text()).get("splits", []))
    sources = {"train": d.train}
    for role, given in (("validation", d.validation), ("test", d.test)):
        if given:
            sources[role] = given
        elif role == "validation" or in_train & set(SPLIT_NAMES[role]):
            sources[role] = d.train  # a DatasetDict without a validation split fails there, naming its splits
    return sources
