"""ICD fine-tuning end to end on synthetic MIMIC-IV: prepare -> train (with baselines) -> threshold -> report ->
predict -> evaluate, through the console script; plus exact resume after an interruption."""

from __future__ import annotations

import csv
import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save_tiny_encoder

from cmbert.core.config import ConfigError
from cmbert.finetune.icd.config import load_icd_config

DEMO = Path(__file__).resolve().parents[1] / "configs" / "finetune" / "icd" / "demo.yaml"


@pytest.fixture(scope="module")
def icd(small_shards, tmp_path_factory):
    """A prepared ICD-10 dataset of 200 synthetic patients and a tiny encoder folder with a real tokenizer."""
    from cmbert.data.synth import synthesize_mimic
    from cmbert.finetune.icd.data import prepare_icd_dataset

    work = tmp_path_factory.mktemp("icd")
    synthesize_mimic(work / "mimic", patients=200, seed=3)
    prepare_icd_dataset(work / "mimic", work / "data", version=10, min_count=5, verbose=False)
    save_tiny_encoder(work / "encoder", small_shards / "tokenizer")
    return work


def overrides(icd: Path, out: Path, *extra: str) -> list[str]:
    return [f"data={icd / 'data'}", f"model.init_from=[{icd / 'encoder'}]", f"out={out}", "model.max_length=64",
            "model.max_chunks=4", "model.attention_dim=16", "train.max_steps=6", "train.tokens_per_batch=2048",
            "train.checkpoint_every_steps=2", "eval.truncated_length=64", "eval.bootstrap_resamples=50",
            "logging.every_steps=1", "logging.wandb=disabled", *extra]


def test_train_report_predict_evaluate(icd, tmp_path, cmbert, cli):
    out = tmp_path / "run"
    proc = cmbert("finetune", "icd", "train", "--config", str(DEMO), *overrides(icd, out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    systems = report["systems"]
    assert set(systems) == {"encoder-64", "encoder-trunc64", "tfidf-lr"}, systems
    for s in systems.values():
        assert 0 <= s["test"]["f1_micro"]["mean"] <= 1 and 0 <= s["test"]["map"]["mean"] <= 1
    assert "f1_micro" in proc.stdout and "tfidf-lr" in proc.stdout  # the table is printed
    assert report["significance"]["encoder-64-seed0"]["against"] == "tfidf-lr"
    assert sum(b["notes"] for b in report["by_length"]["buckets"].values()) == report["notes"]
    assert (out / "pr_curve.png").stat().st_size > 0 and (out / "f1_vs_frequency.png").stat().st_size > 0
    tfidf = json.loads((out / "baselines" / "tfidf" / "result.json").read_text())  # C tuned on validation mAP
    assert set(tfidf["val_map_by_C"]) == {"4.0", "16.0", "64.0"}
    assert tfidf["val_map_by_C"][str(tfidf["C"])] == max(tfidf["val_map_by_C"].values())
    run = out / "runs" / "encoder-64-seed0"
    result = json.loads((run / "result.json").read_text())
    assert result["steps"] == 6 and 0 <= result["threshold"] <= 1 and result["train_tokens_per_s"] > 0
    assert not (run / "ckpt").exists()  # finished: resume state removed, the model is in model/
    meta = json.loads((run / "model" / "icd.json").read_text())
    assert meta["threshold"] == result["threshold"] and meta["head"] == "laat"
    dataset_codes = [c["code"] for c in json.loads((icd / "data" / "labels.json").read_text())["codes"]]
    assert [x["code"] for x in meta["labels"]] == dataset_codes

    # Inference on the held-out notes, as a user would: a MIMIC-style CSV in, CSV and JSON out.
    with gzip.open(icd / "data" / "test.jsonl.gz", "rt") as f:
        notes = [json.loads(line) for line in f][:5]
    notes_csv = tmp_path / "notes.csv"
    with open(notes_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["note_id", "subject_id", "text"])
        writer.writerows([n["note_id"], n["subject_id"], n["text"]] for n in notes)
    proc = cli("predict", "icd", "--model", str(run / "model"), "--notes", str(notes_csv), "--top-k", "3",
               "--out", str(tmp_path / "codes.csv"))
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(tmp_path / "codes.csv")))
    assert len(rows) == 15 and {r["id"] for r in rows} == {n["note_id"] for n in notes}
    assert all(r["code"] in {x["code"] for x in meta["labels"]} and r["title"] for r in rows)
    proc = cli("predict", "icd", "--model", str(run / "model"), "--notes", str(notes_csv),
               "--out", str(tmp_path / "codes.json"))
    assert proc.returncode == 0, proc.stderr
    predicted = json.loads((tmp_path / "codes.json").read_text())
    assert [p["id"] for p in predicted] == [n["note_id"] for n in notes]
    assert all(c["predicted"] and c["score"] > meta["threshold"] for p in predicted for c in p["codes"])

    # The Python API gives the same scores.
    from cmbert.finetune.icd import predict

    api = list(predict(run / "model", [(n["note_id"], n["text"]) for n in notes], top_k=3))
    first = [r for r in rows if r["id"] == notes[0]["note_id"]]
    assert [c["code"] for c in api[0]["codes"]] == [r["code"] for r in first]
    assert np.allclose([c["score"] for c in api[0]["codes"]], [float(r["score"]) for r in first], atol=1e-5)

    # evaluate: trained folders side by side on the test split, each at its stored threshold.
    proc = cli("finetune", "icd", "evaluate", "--models", str(run / "model"),
               str(out / "runs" / "encoder-trunc64-seed0" / "model"), "--data", str(icd / "data"),
               "--out", str(tmp_path / "eval"))
    assert proc.returncode == 0, proc.stderr
    evaluated = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert evaluated["systems"]["encoder-64-seed0-model"]["test"]["f1_micro"]["mean"] == pytest.approx(
        result["test"]["f1_micro"], abs=1e-6)


@pytest.mark.parametrize("engine", ["torch", "deepspeed"])
def test_interrupted_run_resumes_to_the_same_model(icd, tmp_path, monkeypatch, engine):
    import cmbert.core.loop as loop
    import cmbert.finetune.icd.train as train

    extra = ["eval.baselines=[]", *(["train.deepspeed=zero1"] if engine == "deepspeed" else [])]
    cfg = load_icd_config(DEMO, overrides(icd, tmp_path / "straight", *extra))
    train.main(cfg)
    straight = np.load(tmp_path / "straight" / "runs" / "encoder-64-seed0" / "scores.npz")["test"]

    save = loop.save_checkpoint

    def killed_after_first_checkpoint(*args, **kwargs):
        save(*args, **kwargs)
        raise KeyboardInterrupt  # what a kill looks like to the loop: nothing after the checkpoint happens

    cfg = load_icd_config(DEMO, overrides(icd, tmp_path / "resumed", *extra))
    monkeypatch.setattr(loop, "save_checkpoint", killed_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train.main(cfg)
    run = tmp_path / "resumed" / "runs" / "encoder-64-seed0"
    if engine == "torch":
        assert torch.load(run / "ckpt" / "state.pt", weights_only=False)["state"]["step"] == 2
    else:
        assert (run / "ckpt" / "latest").read_text().strip() == "step2"
    monkeypatch.setattr(loop, "save_checkpoint", save)
    changed = load_icd_config(DEMO, overrides(icd, tmp_path / "resumed", *extra, "train.lr=2e-3"))
    with pytest.raises(ValueError, match=re.escape(f"{run}: holds a checkpoint written under another config "
                                                   "(train.lr differs); use a new out folder, or remove")):
        train.main(changed)  # the checkpoint is not continued under another config
    train.main(cfg)
    np.testing.assert_allclose(np.load(run / "scores.npz")["test"], straight, atol=1e-5)
    # A finished run of another config is refused too: its result.json would stand for a model it does not describe.
    with pytest.raises(FileExistsError, match=re.escape(f"{run}: holds a finished run written under another config")):
        train.main(changed)


def test_config_errors_name_the_key(icd, tmp_path):
    with pytest.raises(ConfigError, match="model.init_from"):
        load_icd_config(DEMO, [f"data={icd / 'data'}", "model.init_from=[]"])
    with pytest.raises(ConfigError, match="data"):
        load_icd_config(DEMO, [f"data={tmp_path}", f"model.init_from=[{icd / 'encoder'}]"])
    with pytest.raises(ConfigError, match="train.lr"):
        load_icd_config(DEMO, overrides(icd, tmp_path, "train.lr=fast"))
    with pytest.raises(ConfigError, match="max_chunks"):
        load_icd_config(DEMO, overrides(icd, tmp_path, "model.head=pooled"))
    with pytest.raises(ConfigError, match="eval.tfidf_c"):
        load_icd_config(DEMO, overrides(icd, tmp_path, "eval.tfidf_c=[]"))
    with pytest.raises(ConfigError, match="queries_per_label"):
        load_icd_config(DEMO, overrides(icd, tmp_path, "model.queries_per_label=0"))


def test_pooled_head_trains_into_a_stock_sequence_classifier(icd, tmp_path):
    import transformers

    import cmbert.finetune.icd.train as train

    cfg = load_icd_config(DEMO, overrides(icd, tmp_path, "eval.baselines=[]", "model.head=pooled",
                                          "model.max_chunks=1"))
    report = train.main(cfg)
    assert list(report["systems"]) == ["encoder-64"]
    folder = tmp_path / "runs" / "encoder-64-seed0" / "model"
    stock = transformers.AutoModelForSequenceClassification.from_pretrained(folder)
    labels = json.loads((icd / "data" / "labels.json").read_text())["codes"]
    assert stock.config.problem_type == "multi_label_classification"
    assert [stock.config.id2label[i] for i in range(len(labels))] == [c["code"] for c in labels]


def test_two_process_deepspeed_run(icd, tmp_path):
    """The same command under torchrun with DeepSpeed ZeRO-2 (gloo, CPU): ranks split the batches, rank 0 saves; with
    LoRA on a pruned encoder (frozen weights outside the optimizer; full fine-tuning under DeepSpeed is the resume
    test's)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "WANDB_MODE": "disabled"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    out = tmp_path / "ds"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "cmbert", "finetune", "icd", "train", "--config", str(DEMO),
                           *overrides(icd, out, "eval.baselines=[]", "train.deepspeed=zero2",
                                      "model.lora.enabled=true", "model.prune.strategy=top")],
                          env=env, capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "runs" / "encoder-64-seed0" / "result.json").read_text())
    assert result["steps"] == 6 and result["world_size"] == 2 and result["deepspeed"] == "zero2"
    assert result["prune"]["dropped"] == [1] and 0 < result["adapter_parameters"] < result["trainable_parameters"]
    assert 0 <= result["test"]["f1_micro"] <= 1
    assert (out / "report.json").is_file() and not (out / "runs" / "encoder-64-seed0" / "ckpt").exists()


def test_cli_errors_are_one_line(icd, tmp_path, cli_error):
    cases = [
        ("finetune", "icd", "prepare", "--mimic", str(tmp_path / "absent"), "--version", "10", "--out", str(tmp_path / "d")),
        ("finetune", "icd", "train", "--config", str(DEMO), f"data={icd / 'data'}", "model.init_from=[]"),
        ("predict", "icd", "--model", str(icd / "encoder"), "--notes", str(tmp_path / "notes.csv")),
    ]
    for args in cases:  # in this process: the console script's own error path is tests/test_cli.py's
        stderr = cli_error(*args)
        assert stderr.startswith("cmbert: error:") and stderr.count("\n") == 1, (args, stderr[-2000:])


def test_prepare_command_writes_the_same_dataset(icd, tmp_path, cmbert):
    proc = cmbert("finetune", "icd", "prepare", "--mimic", str(icd / "mimic"), "--version", "10", "--min-count", "5",
                  "--out", str(tmp_path / "data"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "train:" in proc.stdout and "exclude_subjects.txt" in proc.stdout
    for name in ("train.jsonl.gz", "val.jsonl.gz", "test.jsonl.gz", "labels.json", "exclude_subjects.txt"):
        assert (tmp_path / "data" / name).read_bytes() == (icd / "data" / name).read_bytes(), name


def test_lora_on_a_pruned_encoder_trains_adapters_and_exports_a_stock_model(icd, tmp_path):
    """LoRA + top-layer pruning: the frozen encoder weights come out unchanged, the adapters are merged into the
    exported weights, and the exported encoder is a one-layer stock ModernBERT."""
    import transformers
    from safetensors.torch import load_file

    import cmbert.finetune.icd.train as train

    cfg = load_icd_config(DEMO, overrides(icd, tmp_path, "eval.baselines=[]", "model.lora.enabled=true",
                                          "model.lora.r=4", "model.prune.strategy=top"))
    train.main(cfg)
    run = tmp_path / "runs" / "encoder-64-seed0"
    result = json.loads((run / "result.json").read_text())
    assert result["prune"]["dropped"] == [1] and result["lora"]["r"] == 4
    assert 0 < result["adapter_parameters"] < result["trainable_parameters"] < result["parameters"]
    assert result["trainable_percent"] == pytest.approx(100 * result["trainable_parameters"] / result["parameters"],
                                                        abs=1e-3)
    exported = load_file(run / "model" / "model.safetensors")
    assert not any("lora" in k for k in exported)
    original = load_file(icd / "encoder" / "model.safetensors")
    for key in ("embeddings.tok_embeddings.weight", "layers.0.mlp_norm.weight", "final_norm.weight"):
        assert torch.equal(exported[key], original[f"model.{key}"]), key
    assert not torch.equal(exported["layers.0.attn.Wqkv.weight"], original["model.layers.0.attn.Wqkv.weight"])
    stock = transformers.AutoModel.from_pretrained(run / "model")
    assert stock.config.num_hidden_layers == 1 and stock.config.pruned_from["kept"] == [0]


def test_sweep_compares_full_lora_and_pruned_lora(icd, tmp_path, cmbert, cli_error):
    """`cmbert finetune sweep`: every variant trains through the ICD recipe; the table has cost and quality per
    variant, and two strategies that drop the same layers train once."""
    sweep = Path(__file__).resolve().parents[1] / "configs" / "finetune" / "sweep" / "demo.yaml"
    tiny = [o for o in overrides(icd, tmp_path)[3:]]  # everything but data, init_from, out
    proc = cmbert("finetune", "sweep", "--config", sweep, f"out={tmp_path / 'sweep'}", f"data={icd / 'data'}",
                  f"init_from={icd / 'encoder'}", f"overrides=[{','.join(tiny)},train.head_warmup_epochs=0]",
                  "strategies=[top,every_other]", "probe_steps=1", "probe_warmup=0", "probe_batches=1", "lora.r=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "drops the same layers [1] as lora+top" in proc.stderr
    report = json.loads((tmp_path / "sweep" / "report.json").read_text())
    rows = report["variants"]
    assert list(rows) == ["full", "lora", "lora+top"]
    assert rows["full"]["trainable_percent"] == 100 and rows["full"]["retained_f1_micro"] == 1
    assert rows["lora+top"]["layers"] == 1 and rows["lora+top"]["dropped"] == [1]
    assert rows["lora+top"]["trainable_parameters"] < rows["lora"]["trainable_parameters"]
    assert rows["lora"]["trainable_percent"] < 100
    assert rows["lora+top"]["encoder_trainable_percent"] < rows["lora+top"]["trainable_percent"]
    assert rows["lora+top"]["memory_mib"] < rows["full"]["memory_mib"]
    assert rows["lora+top"]["activation_mib"] < rows["lora"]["activation_mib"]  # one layer of two saves less
    assert set(report["quality_bar"]) == {"lora+top"}  # 1 of 2 layers: the only variant pruned by >= 30 %
    assert "| lora+top | 1 |" in proc.stdout
    again = cli_error("finetune", "sweep", "--config", sweep, f"out={tmp_path / 'sweep'}", f"data={icd / 'data'}",
                      f"init_from={icd / 'encoder'}", f"overrides=[{','.join(tiny)},train.head_warmup_epochs=0]",
                      "strategies=[top]", "lora.r=3")
    assert "holds a lora run of another config" in again
