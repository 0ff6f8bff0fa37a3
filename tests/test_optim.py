"""pretrain/optim.py: parameter groups, both optimizers, the meaning of weight_decay, the WSD schedule, batch-size
warmup and the ZeRO guard (with the DeepSpeed measurement behind it, in a subprocess)."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from torch import nn

import cmbert.modeling
from cmbert.core.loop import wsd_lambda
from cmbert.pretrain.optim import (
    batch_size_at,
    build_optimizer,
    build_scheduler,
    check_zero_support,
    parameter_groups,
    per_tensor_clipping,
)

REPO = Path(__file__).resolve().parents[1]


class Tiny(nn.Module):
    """Embedding, a LayerNorm, a biased Linear and an output layer tied to the embedding (as ModernBERT's decoder)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.norm = nn.LayerNorm(4)
        self.proj = nn.Linear(4, 4)
        self.out = nn.Linear(4, 10, bias=False)
        self.out.weight = self.emb.weight


def names_of(model: nn.Module, params: list[torch.Tensor]) -> set[str]:
    ids = {id(p) for p in params}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def test_parameter_groups_follow_modernbert():
    model = Tiny()
    decay, no_decay = parameter_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert names_of(model, decay["params"]) == {"emb.weight", "proj.weight"}  # embeddings decay, as in ModernBERT
    assert names_of(model, no_decay["params"]) == {"norm.weight", "norm.bias", "proj.bias"}
    every = [id(p) for group in (decay, no_decay) for p in group["params"]]
    assert sorted(every) == sorted({id(p) for p in model.parameters()})  # each parameter exactly once, tie included

    decay, no_decay = parameter_groups(model, 0.1, decay_embeddings=False)
    assert names_of(model, decay["params"]) == {"proj.weight"}
    assert "emb.weight" in names_of(model, no_decay["params"])

    model.proj.weight.requires_grad_(False)
    assert "proj.weight" not in names_of(model, parameter_groups(model, 0.1)[0]["params"])


def test_parameter_groups_on_modernbert():
    model = cmbert.modeling.ModernBertForMaskedLM(tiny_config())
    decay, no_decay = parameter_groups(model, 1e-5)
    assert all(p.ndim == 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("name", ["adamw", "stableadamw"])
def test_optimizers_reduce_a_regression_loss(name):
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.3
    model = nn.Linear(4, 1)
    optimizer = build_optimizer(model, name, lr=0.05, betas=(0.9, 0.98), eps=1e-6, weight_decay=1e-5)
    first = None
    for _ in range(100):
        loss = nn.functional.mse_loss(model(x), y)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05 * first


@pytest.mark.filterwarnings("ignore:You are using weight_decay")  # optimi flags wd >= 1e-3; 0.1 makes shrink visible
@pytest.mark.parametrize("lr_multiplier", [1.0, 0.5])
def test_weight_decay_means_the_same_for_both(lr_multiplier):
    """weight_decay is fully decoupled: with zero gradients a decayed weight shrinks by 1 - wd * lr_t / peak_lr."""
    shrunk = {}
    for name in ("adamw", "stableadamw"):
        model = nn.Linear(3, 3)
        with torch.no_grad():
            model.weight.fill_(1.0)
            model.bias.fill_(1.0)
        optimizer = build_optimizer(model, name, lr=1e-3, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)
        for group in optimizer.param_groups:  # what the scheduler does mid-run
            group["lr"] *= lr_multiplier
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        optimizer.step()
        assert torch.equal(model.bias, torch.ones(3))  # no decay on biases
        shrunk[name] = model.weight
    expected = torch.full((3, 3), 1 - 0.1 * lr_multiplier)
    torch.testing.assert_close(shrunk["adamw"], expected)
    torch.testing.assert_close(shrunk["stableadamw"], expected)


def test_build_optimizer_rejects_bad_settings():
    with pytest.raises(ValueError, match="optim.name.*'sgd'"):
        build_optimizer(nn.Linear(2, 2), "sgd", 1e-3, (0.9, 0.98), 1e-6, 0.0)
    with pytest.raises(ValueError, match="optim.lr"):
        build_optimizer(nn.Linear(2, 2), "adamw", 0.0, (0.9, 0.98), 1e-6, 0.0)


def test_wsd_key_steps():
    wsd = lambda step, shape="1-sqrt": wsd_lambda(step, 100, 10, 20, min_ratio=0.1, decay_shape=shape)
    assert wsd(0) == pytest.approx(0.1)  # (step + 1) / warmup: the first step already trains
    assert wsd(4) == pytest.approx(0.5)
    assert wsd(9) == 1.0  # end of warmup
    assert wsd(50) == 1.0  # stable
    assert wsd(79) == 1.0  # last stable step; decay covers steps 80..99
    assert wsd(80) == pytest.approx(0.1 + 0.9 * (1 - math.sqrt(1 / 20)))
    assert wsd(89) == pytest.approx(0.1 + 0.9 * (1 - math.sqrt(0.5)))  # 1-sqrt midpoint
    assert wsd(89, "linear") == pytest.approx(0.55)
    assert wsd(89, "cosine") == pytest.approx(0.55)
    for shape in ("1-sqrt", "linear", "cosine"):
        assert wsd(99, shape) == pytest.approx(0.1)  # the last step trains at min_ratio
        assert wsd(100, shape) == pytest.approx(0.1)  # LambdaLR's call after the last step
        values = [wsd(s, shape) for s in range(80, 100)]
        assert values == sorted(values, reverse=True)
    assert wsd_lambda(99, 100, 10, 0) == 1.0  # decay_steps=0: warmup-stable only
    assert wsd_lambda(0, 100, 0, 0) == 1.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(total_steps=100, warmup_steps=60, decay_steps=50), "exceed total_steps"),
    (dict(total_steps=0, warmup_steps=0, decay_steps=0), "total_steps > 0"),
    (dict(total_steps=100, warmup_steps=-1, decay_steps=0), "warmup_steps"),
    (dict(total_steps=100, warmup_steps=0, decay_steps=10, min_ratio=1.5), "min_ratio"),
    (dict(total_steps=100, warmup_steps=0, decay_steps=10, decay_shape="exp"), "decay_shape"),
])
def test_wsd_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        wsd_lambda(0, **kwargs)


def test_scheduler_drives_the_optimizer_lr():
    model = nn.Linear(2, 2)
    optimizer = build_optimizer(model, "stableadamw", 1e-3, (0.9, 0.98), 1e-6, 1e-5)
    scheduler = build_scheduler(optimizer, 10, 2, 4, 0.0, "linear")
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([5e-4, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 7.5e-4, 5e-4, 2.5e-4, 0.0])
    with pytest.raises(ValueError, match="exceed"):
        build_scheduler(optimizer, 10, 8, 4)


def test_batch_size_at():
    assert [batch_size_at(s, 8, 32, 4) for s in range(6)] == [8, 14, 20, 26, 32, 32]
    assert [batch_size_at(s, 8, 32, 4, multiple=8) for s in range(5)] == [8, 8, 16, 24, 32]
    assert batch_size_at(0, 1, 32, 4, multiple=8) == 8  # never below `multiple`
    assert batch_size_at(0, 1, 32, 0) == 32  # no warmup
    with pytest.raises(ValueError):
        batch_size_at(0, 40, 32, 4)
    with pytest.raises(ValueError):
        batch_size_at(0, 1, 4, 4, multiple=8)


def test_zero_support():
    assert per_tensor_clipping("stableadamw") and not per_tensor_clipping("adamw")
    for stage in range(4):
        check_zero_support("adamw", stage)
    check_zero_support("stableadamw", 0)
    for stage in (1, 2, 3):
        with pytest.raises(ValueError, match="ZeRO stage 0.*optim.name=adamw"):
            check_zero_support("stableadamw", stage)
    with pytest.raises(ValueError):
        check_zero_support("stableadamw", 4)


# Five DeepSpeed steps (one CPU process, fp32) per optimizer and ZeRO stage; prints the per-step losses as JSON.
ZERO_LAB = """
import json, os, sys, torch
import deepspeed.comm.torch
sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None  # skip the 30 s shm JIT build (docs/ARCHITECTURE.md, "CPU pitfalls")
import deepspeed, cmbert.modeling
from cmbert.pretrain.optim import build_optimizer
sys.path.insert(0, "tests")  # conftest by path: `tests` is not a package (a dependency ships a top-level `tests`)
from conftest import tiny_config
deepspeed.init_distributed(dist_backend="gloo")
g = torch.Generator().manual_seed(0)
batches = [torch.randint(3, 101, (4, 16), generator=g) for _ in range(5)]
losses = {}
for name in ("adamw", "stableadamw"):
    for stage in range(4):
        torch.manual_seed(0)
        model = cmbert.modeling.ModernBertForMaskedLM(tiny_config(num_hidden_layers=2))
        optimizer = build_optimizer(model, name, 3e-3, (0.9, 0.98), 1e-6, 1e-5)
        engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config={
            "train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": stage},
            "zero_allow_untested_optimizer": True, "steps_per_print": 10**9})
        run = losses[f"{name}/{stage}"] = []
        for i, ids in enumerate(batches):
            labels = torch.where(torch.arange(16) % 3 == i % 3, ids, -100)
            loss = engine(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
            engine.backward(loss)
            engine.step()
            run.append(loss.item())
print("LOSSES" + json.dumps(losses))
"""


def test_zero_stages_against_zero0():
    """AdamW is elementwise, so every ZeRO stage matches stage 0; StableAdamW's clipping sees flattened partitions
    under ZeRO >= 1 and drifts, which is why check_zero_support refuses it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0",
           "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    proc = subprocess.run([sys.executable, "-c", ZERO_LAB], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("LOSSES")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    losses = json.loads(lines[-1].removeprefix("LOSSES"))
    drift = lambda name, stage: max(abs(a - b) for a, b in zip(losses[f"{name}/{stage}"], losses[f"{name}/0"],
                                                               strict=True))
    for stage in (1, 2, 3):
        assert drift("adamw", stage) < 1e-6
        assert drift("stableadamw", stage) > 1e-5
