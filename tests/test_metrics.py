"""pretrain/metrics.py: FLOP counts against hand counts and the model's own weights, the band pair count against brute
force, MFU arithmetic, the JSONL / wandb logger (no-op, resume, offline) and the loss-curve PNG."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from transformers import ModernBertConfig

import cmbert.modeling
from cmbert.core.runlog import MetricsLogger, plot_metrics
from cmbert.pretrain import metrics
from cmbert.pretrain.metrics import band_pairs, format_progress, mfu, model_flops_per_token, peak_flops, step_flops

H, INTERMEDIATE, LAYERS, VOCAB, WINDOW = 32, 48, 3, 128, 8


def config(**overrides) -> ModernBertConfig:
    values = dict(vocab_size=VOCAB, hidden_size=H, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS, num_attention_heads=2,
                  local_attention=WINDOW, global_attn_every_n_layers=3, pad_token_id=0, cls_token_id=1, sep_token_id=2,
                  bos_token_id=1, eos_token_id=2)
    values.update(overrides)
    return ModernBertConfig(**values)


# Per layer: Wqkv 32x96 + attn Wo 32x32 + mlp Wi 32x96 (GeGLU: 2 x 48 outputs) + mlp Wo 48x32.
LAYER_PARAMS = 3072 + 1024 + 3072 + 1536
ENCODER = LAYERS * LAYER_PARAMS  # 26,112
HEAD_DENSE, DECODER = H * H, H * VOCAB


def test_model_flops_per_token_hand_count():
    assert ENCODER == 26_112
    assert model_flops_per_token(config()) == 6 * (ENCODER + HEAD_DENSE) == 162_816
    assert model_flops_per_token(config(), include_embedding=True) == 6 * (ENCODER + HEAD_DENSE + DECODER) == 187_392


def test_model_flops_per_token_matches_the_models_linear_layers():
    model = cmbert.modeling.ModernBertForMaskedLM(config())
    weights = lambda module: sum(m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear))
    counted = weights(model.model.layers) + weights(model.head)
    assert model_flops_per_token(config()) == 6 * counted
    assert model_flops_per_token(config(), include_embedding=True) == 6 * (counted + weights(model.decoder))
    # Every Linear of the model is accounted for: layers, head.dense, decoder.
    assert weights(model) == counted + weights(model.decoder)


def test_band_pairs_matches_brute_force():
    for window in range(0, 12):
        for length in range(0, 40):
            brute = sum(abs(i - j) <= window for i in range(length) for j in range(length))
            assert band_pairs(length, window) == brute, (length, window)


def test_step_flops_hand_count():
    # One document of 10 tokens, 2 predicted. Layers: full, sliding, sliding; window 8 -> +-4 keys.
    # Pairs: full 10^2 = 100; band 10 * 9 - 4 * 5 = 70. Attention = 12 * hidden * (100 + 70 + 70).
    expected = 6 * ENCODER * 10 + 6 * (HEAD_DENSE + DECODER) * 2 + 12 * H * (100 + 70 + 70)
    assert step_flops(config(), [0, 10], 2) == expected == 1_720_320
    assert step_flops(config(), torch.tensor([0, 10], dtype=torch.int32), 2) == expected


def attention_flops(cfg: ModernBertConfig, cu_seqlens: list[int]) -> float:
    return step_flops(cfg, cu_seqlens, 0) - 6 * ENCODER * cu_seqlens[-1]


def test_attention_grows_quadratically_on_global_layers_and_linearly_on_local_ones():
    full = config(global_attn_every_n_layers=1)
    local = config(layer_types=["sliding_attention"] * LAYERS)
    assert attention_flops(full, [0, 2000]) / attention_flops(full, [0, 1000]) == 4.0
    ratio = attention_flops(local, [0, 2000]) / attention_flops(local, [0, 1000])
    assert 2.0 <= ratio < 2.01  # L * (window + 1) minus a constant edge term
    assert attention_flops(local, [0, 1000]) == LAYERS * 12 * H * band_pairs(1000, WINDOW // 2)
    # Shorter than the window, a local layer sees the whole document, like a global one.
    assert attention_flops(local, [0, 5]) == attention_flops(full, [0, 5])


def test_packed_documents_count_less_attention_than_one_long_document():
    cfg = config()
    packed, single = step_flops(cfg, [0, 300, 600], 90), step_flops(cfg, [0, 600], 90)
    assert packed < single
    # Only the global layer differs (300^2 * 2 vs 600^2); the band is the same except at the one extra boundary.
    band_gap = 2 * (band_pairs(600, 4) - 2 * band_pairs(300, 4))
    assert single - packed == 12 * H * ((600**2 - 2 * 300**2) + band_gap)


def test_mfu_arithmetic():
    assert mfu(1e12, 2.0, 1e12) == 0.5
    assert mfu(1e12, 2.0, 1e12, world_size=2) == 0.25
    assert mfu(1e12, 2.0, None) is None
    assert mfu(1e12, 0.0, 1e12) is None


def test_peak_flops(monkeypatch):
    monkeypatch.delenv("CMBERT_PEAK_FLOPS", raising=False)
    assert peak_flops(torch.device("cpu"), torch.bfloat16) is None
    monkeypatch.setenv("CMBERT_PEAK_FLOPS", "1.5e12")
    assert peak_flops(torch.device("cpu"), torch.float32) == 1.5e12
    monkeypatch.delenv("CMBERT_PEAK_FLOPS")

    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(metrics, "_tf32_matmuls", lambda: False)
    cases = {
        ("NVIDIA H100 80GB HBM3", torch.bfloat16): 989e12, ("NVIDIA H100 PCIe", torch.bfloat16): 756e12,
        ("NVIDIA H200", torch.bfloat16): 989e12, ("NVIDIA A100-SXM4-80GB", torch.bfloat16): 312e12,
        ("NVIDIA A100 80GB PCIe", torch.float32): 19.5e12, ("NVIDIA A10G", torch.bfloat16): 70e12,
        ("NVIDIA A10", torch.bfloat16): 125e12, ("NVIDIA L4", torch.bfloat16): 121e12,
        ("NVIDIA L40S", torch.float16): 362e12, ("Tesla V100-SXM2-16GB", torch.float16): 125e12,
        ("Tesla V100-SXM2-16GB", torch.bfloat16): None, ("Some Future GPU", torch.bfloat16): None,
    }
    for (name, dtype), peak in cases.items():
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None, name=name: name)
        assert peak_flops(cuda, dtype) == peak, name
    monkeypatch.setattr(metrics, "_tf32_matmuls", lambda: True)
    assert peak_flops(cuda, torch.float32) is None  # V100 (the last name set) has no TF32
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-40GB")
    assert peak_flops(cuda, torch.float32) == 156e12


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_logger_writes_jsonl_and_plot(tmp_path):
    logger = MetricsLogger(tmp_path, {"lr": 1e-3, "betas": (0.9, 0.98)}, enabled=True, wandb_mode="disabled")
    logger.log(1, loss=2.5, lr=1e-3, tokens=1000)
    logger.log(2, loss=np.float32(2.25), lr=9e-4)
    assert [r["step"] for r in lines(tmp_path / "metrics.jsonl")] == [1, 2]  # flushed before close
    logger.close()
    records = lines(tmp_path / "metrics.jsonl")
    assert records[0]["loss"] == 2.5 and records[0]["tokens"] == 1000 and records[1]["loss"] == 2.25
    assert all(isinstance(r["time"], float) for r in records)
    assert (tmp_path / "loss.png").stat().st_size > 0
    assert not (tmp_path / "wandb").exists()


def test_logger_disabled_is_a_no_op(tmp_path):
    out = tmp_path / "rank1"
    logger = MetricsLogger(out, {"a": object()}, enabled=False, wandb_mode="online")
    logger.log(1, loss=1.0)
    logger.close()
    assert not out.exists()


def test_logger_rejects_text_and_non_json_config(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # "disabled" must never import wandb
    logger = MetricsLogger(tmp_path, {}, enabled=True, wandb_mode="disabled")
    with pytest.raises(TypeError):
        logger.log(1, loss=1.0, note="patient text")
    with pytest.raises(TypeError):
        logger.log(1, loss=torch.tensor(1.0))
    logger.close()
    assert (tmp_path / "metrics.jsonl").read_text() == ""
    with pytest.raises(TypeError):
        MetricsLogger(tmp_path, {"path": Path("x")}, enabled=True, wandb_mode="disabled")
    with pytest.raises(ValueError):
        MetricsLogger(tmp_path, {}, enabled=True, wandb_mode="sometimes")


def test_logger_resume_drops_steps_that_will_be_redone(tmp_path):
    logger = MetricsLogger(tmp_path, {}, enabled=True, wandb_mode="disabled")
    for step in range(1, 6):
        logger.log(step, loss=float(step))
    logger.log(4, eval_loss=3.0)
    logger.file.write('{"step": 6, "lo')  # a line cut short by a kill
    logger.file.close()

    logger = MetricsLogger(tmp_path, {}, enabled=True, wandb_mode="disabled", resume_step=4)
    assert [r["step"] for r in lines(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    logger.log(4, loss=4.5)
    logger.close()
    assert [(r["step"], r.get("loss")) for r in lines(tmp_path / "metrics.jsonl")] == [(1, 1.0), (2, 2.0), (3, 3.0),
                                                                                        (4, 4.5)]
    MetricsLogger(tmp_path, {}, enabled=True, wandb_mode="disabled").close()  # no resume_step: a fresh file
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_logger_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the logger's own mode wins over the environment
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    out = tmp_path / "run"
    logger = MetricsLogger(out, {"model": {"hidden": 32}, "lr": 1e-3}, enabled=True, wandb_mode="offline",
                           run_name="test")
    logger.log(1, loss=2.0, lr=1e-3)
    logger.log(2, loss=1.5, lr=1e-3)
    logger.close()
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))
    assert runs[0].name.endswith((out / "wandb-run-id").read_text().strip())
    assert len(lines(out / "metrics.jsonl")) == 2


def test_plot_metrics(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [{"step": s, "loss": 5.0 / s, "lr": 1e-3 * min(1.0, s / 10)} for s in range(1, 60)]
    records += [{"step": s, "eval_loss": 5.0 / s} for s in (20, 40)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    plot_metrics(path, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path.write_text(json.dumps({"step": 1, "other": 1.0}) + "\n")  # nothing to plot yet: still a picture
    plot_metrics(path, tmp_path / "empty.png")
    assert (tmp_path / "empty.png").stat().st_size > 0


def test_format_progress():
    assert format_progress(10, 100, 2.3456, 3e-4, 12_345, 0.41) == "loss 2.346 lr 3.0e-04 tok/s 12.3k mfu 41%"
    assert format_progress(10, 100, 2.0, 1e-3, 950, None) == "loss 2.000 lr 1.0e-03 tok/s 950 mfu -"
    assert format_progress(10, 100, 2.0, 1e-3, 2.5e6, 0.004).endswith("tok/s 2.5M mfu 0.4%")
