"""The core fine-tuning loop (cmbert/core/loop.py) on a toy regression, in process: gradient accumulation equals the
large batch, early stopping on patience, the epoch hook, resume after a kill equal to the uninterrupted run (RNG and
the recipe's generators included), and refusal of a checkpoint or a finished run that another config wrote."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import cmbert.core.loop as loop
from cmbert.core.errors import OutputInTheWay, UserError

N = 24
X = torch.randn(N, 4, generator=torch.Generator().manual_seed(1))
Y = X @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1


def settings(**changes) -> SimpleNamespace:
    values = dict(epochs=3, batch_size=8, seed=0, grad_clip=1.0, patience=5, checkpoint_every_steps=2,
                  warmup_fraction=0.25, max_steps=0, lr=0.05)
    values.update(changes)
    return SimpleNamespace(**values)


def train(out: Path, t: SimpleNamespace, grad_accum: int = 1, scores=None, hook=None, batches=None,
          noise: float = 0.1) -> tuple:
    """One run: a linear model with dropout (so the RNG matters) and noise on the targets from a generator of the
    recipe's own (`noise` 0: neither)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Dropout(noise), nn.Linear(4, 1))
    generator = torch.Generator().manual_seed(5)
    optimizer = torch.optim.AdamW([{"params": model.parameters(), "lr": t.lr, "name": "model"}])
    scheduler, total = loop.linear_schedule(optimizer, SimpleNamespace(**{**vars(t), "batch_size": t.batch_size *
                                                                          grad_accum}), N)
    config = {"train": {**vars(t), "resume": True}, "logging": {"every": 1}}
    state = loop.resume(out, model, optimizer, scheduler, config, torch.device("cpu"), "toy",
                        generators={"noise": generator})
    scores = iter(scores or [])

    def step_loss(idx):
        shift = noise * torch.randn(len(idx), generator=generator) if noise else 0.0
        return ((model(X[idx]).squeeze(-1) - Y[idx] - shift) ** 2).mean()

    def validate():
        with torch.no_grad():
            score = next(scores, None)
            mse = float(((model[1](X).squeeze(-1) - Y) ** 2).mean())
            return (-mse if score is None else score), {"mse": mse}, {"mse": mse}

    state = loop.train_epochs(model, optimizer, scheduler, state, t, total, N, out=out, config=config,
                              device=torch.device("cpu"), dtype=torch.float32, logger=None, log_every=1, name="toy",
                              metric="score", step_loss=step_loss, validate=validate, on_epoch_start=hook,
                              batches=batches, grad_accum=grad_accum, generators={"noise": generator})
    return model, state


def test_gradient_accumulation_equals_the_large_batch(tmp_path):
    def pairs(epoch):  # the same examples, two micro-batches of 4 joined into one batch of 8
        small = loop.epoch_batches(N, 4, 0, epoch)
        return [np.concatenate(small[i:i + 2]) for i in range(0, len(small), 2)]

    accumulated, state = train(tmp_path / "a", settings(batch_size=4), grad_accum=2, noise=0,
                               batches=lambda epoch: loop.epoch_batches(N, 4, 0, epoch))
    large, big_state = train(tmp_path / "b", settings(batch_size=8), noise=0, batches=pairs)
    assert state["step"] == big_state["step"] == 9  # 6 micro-batches an epoch, 3 optimizer steps
    for a, b in zip(accumulated.parameters(), large.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_patience_stops_and_the_best_epoch_is_loaded(tmp_path):
    seen = []
    model, state = train(tmp_path, settings(epochs=10, patience=2), scores=[0.5, 0.9, 0.7, 0.8, 1.0],
                         hook=seen.append)
    assert seen == [0, 1, 2, 3] and state["epoch"] == 4 and state["done"]  # epochs 3 and 4 did not beat 0.9
    assert state["best_epoch"] == 1 and state["best"] == 0.9
    assert [h["score"] for h in state["history"]] == [0.5, 0.9, 0.7, 0.8]
    assert all(h["loss"] > 0 for h in state["history"])
    best = torch.load(tmp_path / loop.BEST, weights_only=True)["model"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in best.items())


def test_a_killed_run_resumes_to_the_same_model(tmp_path, monkeypatch):
    whole, whole_state = train(tmp_path / "whole", settings())
    save, written = loop.save_checkpoint, []

    def killed_after_the_third(*args, **kwargs):
        save(*args, **kwargs)
        written.append(1)
        if len(written) == 3:  # steps 2, 3 (epoch 1's end), 4: mid-epoch 2
            raise KeyboardInterrupt  # what a kill looks like to the loop: nothing after the checkpoint happens

    monkeypatch.setattr(loop, "save_checkpoint", killed_after_the_third)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "killed", settings())
    saved = torch.load(tmp_path / "killed" / loop.CHECKPOINT, weights_only=False)["state"]
    assert (saved["epoch"], saved["batch"], saved["step"]) == (1, 1, 4)
    monkeypatch.setattr(loop, "save_checkpoint", save)
    seen = []
    resumed, state = train(tmp_path / "killed", settings(), hook=seen.append)
    assert seen == [1, 2]  # the hook runs for the resumed epoch too
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(),
                                                 strict=True))
    assert state["history"] == [{**h, "loss": pytest.approx(h["loss"], rel=1e-12)} for h in whole_state["history"]]


def test_another_config_is_refused_with_one_line(tmp_path):
    train(tmp_path, settings())  # the checkpoint stays (a recipe removes it once its report is written)
    with pytest.raises(UserError) as refused:
        train(tmp_path, settings(lr=0.1))
    message = str(refused.value)
    assert message == (f"{tmp_path}: holds a checkpoint written under another config (train.lr differs); use a new "
                       f"out folder, or remove {tmp_path} to start over")
    # What does not change the model may change: logging, resume, checkpoint frequency.
    assert loop.run_signature({"train": {"lr": 1, "resume": True, "checkpoint_every_steps": 2}, "logging": {}}) == \
        loop.run_signature({"train": {"lr": 1, "resume": False, "checkpoint_every_steps": 9}})

    (tmp_path / "config.json").write_text(json.dumps({"train": {"lr": 1, "epochs": 2}}))
    (tmp_path / "report.json").write_text("{}")
    assert loop.finished_report(tmp_path, {"train": {"lr": 1, "epochs": 2, "resume": False}}, "toy") == {}
    with pytest.raises(OutputInTheWay, match=r"holds a finished run written under another config \(train.epochs, "
                                             r"train.lr differ\)"):
        loop.finished_report(tmp_path, {"train": {"lr": 2, "epochs": 3}}, "toy")
