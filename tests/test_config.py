"""The pretraining config: presets load, `extends` chains resolve, dotted overrides apply, and every bad key or
value is a ConfigError naming it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cmbert.core.config import CONFIG_DIR, ConfigError
from cmbert.pretrain.config import PretrainConfig, deepspeed_config, load_config

PRESETS = sorted((CONFIG_DIR / "pretrain").glob("*.yaml"))
DATA = ["data.shards=s", "data.tokenizer=t"]


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_preset_loads(preset):
    cfg = load_config(preset, DATA)
    assert isinstance(cfg, PretrainConfig)
    ds = deepspeed_config(cfg, bf16=False)
    assert ds["train_micro_batch_size_per_gpu"] == cfg.schedule.rows_per_micro_batch
    assert ds["gradient_accumulation_steps"] == cfg.schedule.grad_accum
    assert "optimizer" not in ds and "scheduler" not in ds


def test_phases_follow_modernbert():
    one = load_config(CONFIG_DIR / "pretrain" / "phase1-1k.yaml")
    two = load_config(CONFIG_DIR / "pretrain" / "phase2-8k.yaml")
    assert (one.model.max_position_embeddings, one.model.global_rope_theta) == (1024, 10_000.0)
    assert (two.model.max_position_embeddings, two.model.global_rope_theta) == (8192, 160_000.0)
    assert one.model.local_rope_theta == two.model.local_rope_theta == 10_000.0
    assert two.model.init_from and two.optim.lr < one.optim.lr and two.schedule.decay_steps > 0
    # phase 2 extends phase 1: what it does not set is phase 1's
    assert two.optim.betas == one.optim.betas == (0.9, 0.98) and two.masking.probability == 0.3
    assert two.schedule.decay_shape == "1-sqrt"


def test_overrides_are_typed():
    cfg = load_config(CONFIG_DIR / "pretrain" / "tiny.yaml",
                      [*DATA, "optim.lr=1", "optim.eps=1e-8", "model.compile=true", "optim.betas=[0.8, 0.9]", "data.weights={a: 2}",
                       "model.init_from=some/folder", "logging.run_name="])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float) and cfg.optim.eps == 1e-8
    assert cfg.model.compile is True and cfg.optim.betas == (0.8, 0.9) and cfg.data.weights == {"a": 2.0}
    assert cfg.model.init_from == "some/folder" and cfg.logging.run_name is None


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "unknown key optim.lrr (known keys of optim: betas, eps, grad_clip, lr, name, weight_decay)"),
    ("typo=1", "unknown key typo"),
    ("optim.lr=fast", "optim.lr: expected a number, got 'fast'"),
    ("schedule.max_steps=1.5", "schedule.max_steps: expected an integer, got 1.5"),
    ("schedule.max_steps=true", "schedule.max_steps: expected an integer, got True"),
    ("model.compile=1", "model.compile: expected true or false, got 1"),
    ("optim.name=sgd", "optim.name: expected one of 'stableadamw', 'adamw', got 'sgd'"),
    ("optim.betas=[0.9]", "optim.betas: expected a list of 2 values"),
    ("optim=3", "optim: expected a mapping of OptimConfig keys"),
    ("distributed.zero=zero9", "distributed.zero: no DeepSpeed settings"),
    ("masking.probability=1.5", "masking.probability: must be between 0 and 1"),
    ("schedule.decay_steps=100", "exceed schedule.max_steps"),
    ("data.shards=", "data.shards: expected a string, got None"),
    ("nokey", "expected dotted.key=value"),
])
def test_bad_configs_name_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(CONFIG_DIR / "pretrain" / "tiny.yaml", [*DATA, override])
    assert message in str(error.value)


def test_stableadamw_needs_zero_stage_0():
    with pytest.raises(ConfigError, match="optim.name 'stableadamw' with distributed.zero 'zero2'"):
        load_config(CONFIG_DIR / "pretrain" / "tiny.yaml", [*DATA, "optim.name=stableadamw", "distributed.zero=zero2"])
    assert load_config(CONFIG_DIR / "pretrain" / "tiny.yaml", [*DATA, "distributed.zero=zero3"]).optim.name == "adamw"


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="data.shards and data.tokenizer must name"):
        load_config(CONFIG_DIR / "pretrain" / "tiny.yaml")
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "d.json").write_text('{"zero_optimization": {"stage": 1}, "optimizer": {"type": "Adam"}}')
    with pytest.raises(ConfigError, match="sets optimizer, which the training config owns"):
        load_config(CONFIG_DIR / "pretrain" / "tiny.yaml", [*DATA, f"distributed.zero={Path(tmp_path / 'd.json')}"])


@pytest.mark.parametrize(("key", "value", "rule"), [
    ("lr", 0.0, "> 0"), ("lr", float("nan"), "> 0"), ("lr", float("inf"), "> 0"), ("warmup_fraction", 1.0, "in [0, 1)"),
    ("patience", 0, ">= 1"), ("max_steps", -1, ">= 0")])
def test_shared_train_section_names_the_failing_key_and_refuses_non_finite_numbers(key, value, rule):
    import dataclasses

    from cmbert.core.config import TrainSection, check_train_settings

    check_train_settings(TrainSection())
    with pytest.raises(ConfigError, match=rf"^train\.{key}: must be {re.escape(rule)}, got {re.escape(repr(value))}$"):
        check_train_settings(dataclasses.replace(TrainSection(), **{key: value}))
