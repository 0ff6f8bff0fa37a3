"""`cmbert pretrain` for real: DeepSpeed on CPU (gloo), one process in-process and two under torchrun, ZeRO 0-3,
SIGKILL-and-resume equality, export to transformers. Data: a small synthetic MIMIC tree -> store -> tokenizer ->
packed shards, built once per module."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import transformers

from cmbert.pretrain.config import load_config

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "pretrain" / "tiny.yaml"


@pytest.fixture(scope="module")
def data(small_shards):
    return small_shards


def overrides(data: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.shards={data / 'shards'}", f"data.tokenizer={data / 'tokenizer'}", f"out={out}", *extra]


def losses(out: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in lines if "loss" in r}


def launch(args: list[str], nproc: int = 1) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled",
           "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):  # set by in-process runs
        env.pop(key, None)
    if nproc == 1:
        command = [sys.executable, "-m", "cmbert.pretrain.train", *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   "-m", "cmbert.pretrain.train", *args]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run(args: list[str], nproc: int = 1, timeout: float = 300) -> str:
    proc = launch(args, nproc)
    output, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, output[-5000:]
    return output


def test_one_process_run_trains_checkpoints_and_exports(data, tmp_path, cli):
    from cmbert.pretrain.train import main

    out = tmp_path / "run"
    cfg = load_config(TINY, overrides(data, out, "schedule.max_steps=12"))
    result = main(cfg)
    assert result["step"] == 12
    curve = losses(out)
    assert sorted(curve) == list(range(1, 13))
    assert curve[12] < curve[1] - 0.5, curve
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in evals] == [0, 6, 12] and 0 <= evals[-1]["eval_accuracy"] <= 1
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    assert (out / "loss.png").stat().st_size > 1000
    # keep_last = 2 of the checkpoints at steps 4, 8, 12
    assert sorted(p.name for p in (out / "ckpt").glob("step-*")) == ["step-00000008", "step-00000012"]
    run_info = json.loads((out / "run.json").read_text())
    assert run_info["world_size"] == 1 and run_info["config"]["optim"]["name"] == "adamw"

    export = out / "model"
    theirs = transformers.AutoModelForMaskedLM.from_pretrained(export)
    assert type(theirs).__module__.startswith("transformers.")
    tokenizer = transformers.AutoTokenizer.from_pretrained(export)
    batch = tokenizer(["Patient admitted with chest pain.", "No evidence of pneumonia."], padding=True,
                      return_tensors="pt")
    from cmbert.modeling import ModernBertForMaskedLM

    ours = ModernBertForMaskedLM.from_pretrained(export).eval()
    with torch.no_grad():
        a = ours(**batch).logits
        b = theirs.eval()(**batch).logits
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(a[mask], b[mask], atol=1e-4, rtol=1e-4)
    fill = transformers.pipeline("fill-mask", model=str(export), device="cpu")
    assert len(fill("Patient admitted with chest [MASK].", top_k=3)) == 3
    card = (export / "README.md").read_text()
    for part in ("## Training", "- steps: 12", "held-out MLM loss", "mimic_discharge:", "PhysioNet Credentialed"):
        assert part in card, part

    # `cmbert export` of an older checkpoint: the same weights the run had at step 8
    proc = cli("export", "--checkpoint", out / "ckpt", "--tag", "step-00000008", "--out", tmp_path / "at8")
    assert proc.returncode == 0, proc.stderr
    at8 = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "at8").eval()
    with torch.no_grad():
        assert not torch.allclose(at8(**batch).logits[mask], b[mask])
    assert "- steps: 8" in (tmp_path / "at8" / "README.md").read_text()
    proc = cli("export", "--checkpoint", out / "ckpt", "--tag", "step-00000004", "--out", tmp_path / "gone")
    assert proc.returncode == 2 and "not a complete checkpoint" in proc.stderr  # pruned (keep_last 2)


def test_sigkill_and_resume_gives_the_same_losses(data, tmp_path):
    steps = ["schedule.max_steps=10", "checkpoint.every_steps=3", "logging.eval_every_steps=100"]
    straight = tmp_path / "straight"
    run(["--config", str(TINY), *overrides(data, straight, *steps)])

    killed = tmp_path / "killed"
    proc = launch(["--config", str(TINY), *overrides(data, killed, *steps)])
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:  # kill it once it is past its step-6 checkpoint
        if (killed / "metrics.jsonl").exists() and max(losses(killed), default=0) >= 7:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert max(losses(killed)) < 10
    output = run(["--config", str(TINY), *overrides(data, killed, *steps)])
    assert "resumed from" in output
    a, b = losses(straight), losses(killed)
    assert sorted(b) == list(range(1, 11))
    for step in a:
        assert abs(a[step] - b[step]) <= 1e-6, (step, a[step], b[step])


def test_two_processes_zero_stages_give_the_same_losses(data, tmp_path):
    """torchrun, 2 processes on gloo: ZeRO 1, 2 and 3 against ZeRO 0 (AdamW: no per-tensor update clipping)."""
    curves = {}
    for stage in (0, 1, 2, 3):
        out = tmp_path / f"zero{stage}"
        run(["--config", str(TINY), *overrides(data, out, "schedule.max_steps=6", f"distributed.zero=zero{stage}",
                                               "checkpoint.every_steps=6", "logging.eval_every_steps=100")], nproc=2)
        curves[stage] = losses(out)
        assert (out / "model" / "model.safetensors").is_file()
    for stage in (1, 2, 3):
        for step, loss in curves[0].items():
            assert curves[stage][step] == pytest.approx(loss, rel=1e-5, abs=1e-6), (stage, step)
    # The consolidated exports hold the same weights whatever the partitioning (ZeRO-3 shards every parameter).
    from cmbert.modeling import ModernBertForMaskedLM

    reference = ModernBertForMaskedLM.from_pretrained(tmp_path / "zero0" / "model").state_dict()  # strict keys
    for stage in (1, 2, 3):
        weights = ModernBertForMaskedLM.from_pretrained(tmp_path / f"zero{stage}" / "model").state_dict()
        for name, value in reference.items():
            torch.testing.assert_close(weights[name], value, atol=1e-4, rtol=1e-3, msg=f"zero{stage} {name}")


def test_sigterm_checkpoints_and_exits_cleanly(data, tmp_path):
    out = tmp_path / "term"
    proc = launch(["--config", str(TINY), *overrides(data, out, "schedule.max_steps=500", "checkpoint.every_steps=1000",
                                                     "logging.eval_every_steps=1000")])
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "metrics.jsonl").exists() and max(losses(out), default=0) >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output[-3000:]
    assert "stopped by SIGTERM" in output
    (step_dir,) = (out / "ckpt").glob("step-*")
    marker = json.loads((step_dir / "cmbert_complete.json").read_text())
    assert marker["step"] >= 3 and marker["step"] < 500


def test_config_errors_fail_before_any_work(data, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cmbert", "pretrain", "--config", str(TINY),
                           *overrides(data, tmp_path / "x", "schedule.max_steps=ten")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "cmbert: error: schedule.max_steps: expected an integer, got 'ten'"
    assert not (tmp_path / "x").exists()


def test_activation_checkpointing_and_continued_pretraining(data, tmp_path):
    """Recomputing activations changes no loss; a run can start from any transformers ModernBERT folder (here the
    export of a first run) with a new RoPE theta and context, as the 8k phase does."""
    from cmbert.pretrain.train import main

    common = ["schedule.max_steps=6", "schedule.decay_steps=2", "checkpoint.every_steps=6",
              "logging.eval_every_steps=100"]
    main(load_config(TINY, overrides(data, tmp_path / "plain", *common)))
    main(load_config(TINY, overrides(data, tmp_path / "recompute", *common, "model.activation_checkpointing=true")))
    plain, recompute = losses(tmp_path / "plain"), losses(tmp_path / "recompute")
    assert all(abs(plain[s] - recompute[s]) <= 1e-6 for s in plain), (plain, recompute)

    phase2 = tmp_path / "phase2"
    main(load_config(TINY, overrides(data, phase2, *common, f"model.init_from={tmp_path / 'plain' / 'model'}",
                                     "model.global_rope_theta=320000.0", "model.max_position_embeddings=512")))
    config = transformers.AutoConfig.from_pretrained(phase2 / "model")
    assert config.rope_parameters["full_attention"]["rope_theta"] == 320000.0
    assert config.max_position_embeddings == 512
    # it continued from the first run's weights: its first loss is the first run's last, not a fresh model's
    assert losses(phase2)[1] < plain[1] - 0.3, (losses(phase2), plain)
