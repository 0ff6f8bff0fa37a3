"""Next-visit trajectory training end to end on synthetic MIMIC-IV (finetune/trajectory/train.py, predict.py, the
CLI): one tiny `cmbert finetune trajectory train` run shared by the tests (report, plot, model folders, note cache
reuse), `cmbert predict trajectory` from a MIMIC tree and from a JSON history, predictions equal to the run's own test
scores, causality of the visit-sequence model, the baselines by hand, config errors, and the note embeddings
(cmbert/core/embeddings.py: pieces against whole-note pooling, chunking, the cache)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import randomize_, save_tiny_encoder

from cmbert.core.config import ConfigError
from cmbert.finetune.trajectory.config import load_trajectory_config
from cmbert.finetune.trajectory.model import TrajectoryMeta, TrajectoryModel
from cmbert.finetune.trajectory.train import NotePieces, SplitData, Window, baseline_scores, collate, model_inputs

DEMO = Path(__file__).resolve().parents[1] / "configs" / "finetune" / "trajectory" / "demo.yaml"
SYSTEMS = ("model:both", "model:codes", "model:notes", "baseline:repeat_last", "baseline:patient_frequent",
           "baseline:population")
METRICS = ("recall@10", "recall@20", "recall@30", "precision@10", "precision@20", "precision@30", "map@20", "map@40",
           "map@60", "mar@20", "mar@40", "mar@60", "ndcg@20", "auprc_micro")
MAX_VISITS = 4
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models on a shared CPU (tests/conftest.py)


def train_overrides(work: Path) -> list[str]:
    return [f"out={work / 'out'}", f"data={work / 'data'}", f"model.init_from={work / 'encoder'}",
            "model.hidden_size=16", "model.layers=1", "model.heads=2", f"model.max_visits={MAX_VISITS}",
            "model.chunk_length=64", "model.note_max_tokens=512", "model.segment_tokens=32", "train.epochs=2",
            "train.patience=2", "bootstrap_resamples=20"]


def note_cache_files(out: Path) -> list[Path]:
    """The cache files holding note pieces (segments have offsets; the title embeddings do not)."""
    found = []
    for path in sorted((out / "cache").glob("embeddings-*.npz")):
        with np.load(path) as stored:
            if "offsets" in stored.files:
                found.append(path)
    return found


@pytest.fixture(scope="module")
def run(small_shards, tmp_path_factory, cmbert):
    """A prepared trajectory dataset of 120 synthetic patients, a tiny encoder with a real tokenizer, and one training
    run of every input set and baseline through the console script."""
    from cmbert.data.synth import synthesize_mimic
    from cmbert.finetune.trajectory.data import prepare_trajectories

    work = tmp_path_factory.mktemp("trajectory")
    synthesize_mimic(work / "mimic", patients=120, seed=7)
    prepare_trajectories(work / "mimic", work / "data", verbose=False)
    save_tiny_encoder(work / "encoder", small_shards / "tokenizer")
    proc = cmbert("finetune", "trajectory", "train", "--config", DEMO, *train_overrides(work))
    return SimpleNamespace(work=work, out=work / "out", proc=proc)


def test_train_end_to_end_report_models_and_note_cache(run, monkeypatch):
    import cmbert.core.embeddings as embeddings
    import cmbert.finetune.trajectory.train as trajectory_train
    from cmbert.core.embeddings import model_hash
    from cmbert.finetune.trajectory.train import main

    assert run.proc.returncode == 0, run.proc.stdout[-3000:] + run.proc.stderr[-3000:]
    out = run.out
    report = json.loads((out / "report.json").read_text())
    assert list(report["systems"]) == list(SYSTEMS)
    for name in SYSTEMS:
        for split in ("val", "test"):
            metrics = report["systems"][name][split]
            for metric in METRICS:
                assert 0.0 <= metrics[metric] <= 1.0, (name, split, metric, metrics[metric])
            assert metrics["n_samples"] == report["samples"][split]
    assert report["samples"]["test"] > 0 and report["patients"]["test"] > 0
    bar = report["quality_bar"]
    assert bar["system"] == "model:both" and isinstance(bar["met"], bool)
    assert bar["met"] == all(all(v.values()) for v in bar["beats"].values())
    # Paired bootstrap of model:both against each other system on recall@20 and mar@20 (identified here by the
    # metric values: the system names are lost, see test_comparisons_name_their_systems).
    for metric in ("recall@20", "mar@20"):
        entries = [c for c in report["comparisons"] if c["metric"] == metric]
        assert len(entries) == len(SYSTEMS) - 1
        for c in entries:
            assert c["n_resamples"] == 20 and 0.0 <= c["p_value"] <= 1.0 and c["ci95"][0] <= c["ci95"][1]
            assert c["delta"] == pytest.approx(c["a"] - c["b"])
            assert c["a"] == pytest.approx(report["systems"]["model:both"]["test"][metric])
        assert sorted(c["b"] for c in entries) == pytest.approx(
            sorted(report["systems"][name]["test"][metric] for name in SYSTEMS[1:]))
    png = out / "comparison.png"
    assert png.stat().st_size > 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    encoder_hash = model_hash(run.work / "encoder")
    for inputs in ("both", "codes", "notes"):
        model = TrajectoryModel.load(out / inputs / "model")
        assert model.meta.inputs == inputs and not model.training
        assert model.meta.encoder_hash == encoder_hash and model.meta.max_visits == MAX_VISITS
        assert model.meta.segment_tokens == 32 and model.meta.note_dim == 32
        training = model.meta.training  # provenance beside the weights
        assert training["best_epoch"] == report["systems"][f"model:{inputs}"]["best_epoch"]
        assert training["val"] == report["systems"][f"model:{inputs}"]["val"] and training["config"]["inputs"]
        scores = np.load(out / f"test_scores_model_{inputs}.npy")
        assert scores.shape == (report["samples"]["test"], report["categories"])

    # The note pieces are cached under out/cache; a second run of the same config reads them back untouched.
    cached = note_cache_files(out)
    assert len(cached) == 1
    before = {p.name: p.stat().st_mtime_ns for p in (out / "cache").iterdir()}

    def must_not_embed(*args, **kwargs):
        raise AssertionError("the note pieces were embedded again instead of read from the cache")

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished input set was trained again instead of reused")

    monkeypatch.setattr(embeddings, "embed_segments", must_not_embed)
    monkeypatch.setattr(trajectory_train, "train_variant", must_not_train)
    again = main(load_trajectory_config(DEMO, train_overrides(run.work)))
    for name in SYSTEMS[:3]:  # the models too: same test metrics, from their saved scores
        assert again["systems"][name]["test"] == report["systems"][name]["test"]
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cache").iterdir()} == before
    for name in SYSTEMS:
        if name.startswith("baseline:"):
            assert again["systems"][name]["test"] == report["systems"][name]["test"]


def test_comparisons_name_their_systems(run):
    report = json.loads((run.out / "report.json").read_text())
    assert report["comparisons"]
    assert {c["system_a"] for c in report["comparisons"]} == {"model:both"}
    assert {c["system_b"] for c in report["comparisons"]} == set(SYSTEMS[1:])


# --- resume after a kill, refusal of another config's run

# Loaded by the console script of the killed run (PYTHONPATH): after the n-th checkpoint is written the process stops
# itself, so the test SIGKILLs it at a known point of the run rather than racing it.
STOP_AFTER_CHECKPOINT = '''
import os
import signal

import cmbert.core.loop as loop

_save, _written = loop.save_checkpoint, []


def _stop_after(*args, **kwargs):
    _save(*args, **kwargs)
    _written.append(1)
    if len(_written) == int(os.environ["STOP_AFTER_CHECKPOINTS"]):
        os.kill(os.getpid(), signal.SIGSTOP)


loop.save_checkpoint = _stop_after
'''


def cmbert_process(args: list, env: dict | None = None, log=None) -> subprocess.Popen:
    """The installed `cmbert` console script on one thread (a tiny model on a shared CPU), offline; its output piped,
    or into the open file `log`."""
    script = Path(sys.executable).parent / "cmbert"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "cmbert"]
    full_env = {k: v for k, v in os.environ.items() if k != "CMBERT_DEBUG"}
    full_env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.Popen([*command, *map(str, args)], cwd=Path(__file__).resolve().parents[1], env=full_env,
                            stdout=log or subprocess.PIPE, stderr=subprocess.STDOUT if log else subprocess.PIPE,
                            text=True)


def cmbert_run(args: list) -> subprocess.CompletedProcess:
    proc = cmbert_process(args)
    stdout, stderr = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_a_killed_run_resumes_to_the_same_model_and_another_config_is_refused(run, tmp_path, cli_error):
    """`cmbert finetune trajectory train` SIGKILLed mid-epoch after a checkpoint, rerun with the same command,
    trains the model (weights, history, metrics, per-step log) an uninterrupted run trains; a checkpoint or a
    finished run of another config is refused with one line naming the folder."""
    from safetensors.torch import load_file

    from cmbert.core.runlog import read_jsonl

    args = ["finetune", "trajectory", "train", "--config", DEMO, *train_overrides(run.work), "inputs=[both]",
            "train.epochs=3", "train.patience=3", "train.schedule=linear", "train.checkpoint_every_steps=3",
            "logging.every_steps=1", "bootstrap_resamples=0"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for out in (whole, killed):  # the note pieces the module's run embedded (a cache keyed by notes and encoder)
        shutil.copytree(run.out / "cache", out / "cache")
    done = cmbert_run([*args, f"out={whole}"])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(STOP_AFTER_CHECKPOINT)
    log = tmp_path / "killed.log"
    with open(log, "w") as output:
        proc = cmbert_process([*args, f"out={killed}"], {"PYTHONPATH": str(hook), "STOP_AFTER_CHECKPOINTS": "3"},
                              output)
        _, status = os.waitpid(proc.pid, os.WUNTRACED)  # returns once the process stopped itself (or exited)
        assert os.WIFSTOPPED(status), log.read_text()[-3000:]
        proc.kill()  # SIGKILL: no handler, no cleanup
        assert proc.wait(timeout=60) == -signal.SIGKILL
    folder = killed / "both"
    state = torch.load(folder / "ckpt" / "state.pt", weights_only=False)["state"]
    assert state["epoch"] >= 1 and 0 < state["batch"] and not (folder / "result.json").exists()  # mid-epoch 2

    # Another config is refused, the checkpoint left as it was.
    refused = cli_error(*args, f"out={killed}", "train.lr=2e-3")  # in this process: refused before any training
    assert refused.count("\n") == 1, refused[-3000:]
    assert refused.startswith(f"cmbert: error: {folder}: holds a checkpoint written under another config "
                              "(train.lr differs); use a new out folder, or remove"), refused
    assert torch.load(folder / "ckpt" / "state.pt", weights_only=False)["state"] == state

    resumed = cmbert_run([*args, f"out={killed}"])
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert f"resuming at epoch {state['epoch'] + 1} batch {state['batch']} (step {state['step']})" in resumed.stderr
    a = load_file(str(whole / "both" / "model" / "model.safetensors"))
    b = load_file(str(folder / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    report_a, report_b = (json.loads((out / "report.json").read_text())["systems"]["model:both"]
                          for out in (whole, killed))
    for key in ("val", "test", "history", "best_epoch", "epochs_run", "steps", "schedule"):
        assert report_a[key] == report_b[key], key
    assert report_a["schedule"] == "linear" and report_a["epochs_run"] == 3
    logged_a, logged_b = (read_jsonl(out / "both" / "metrics.jsonl") for out in (whole, killed))
    steps = [r["step"] for r in logged_b if "loss" in r]
    assert steps == list(range(1, report_a["steps"] + 1))  # every step once: the redone ones replaced
    assert [(r["step"], r.get("loss"), r.get("lr_model")) for r in logged_a] == \
        [(r["step"], r.get("loss"), r.get("lr_model")) for r in logged_b]
    assert not (folder / "ckpt").exists()

    # A finished input set of another config is refused too (its model would stand in the report for a config it
    # was not trained with).
    refused = cli_error(*args, f"out={killed}", "train.lr=2e-3")
    assert refused.startswith(f"cmbert: error: {folder}: holds a finished run written under another config "
                              "(train.lr differs)"), refused


def test_predict_cli_from_mimic_and_from_json(run, cli, tmp_path, cli_error):
    from cmbert.finetune.trajectory.data import read_patients

    subject = next(read_patients(run.work / "data", "test")).subject_id
    model = run.out / "both" / "model"
    proc = cli("predict", "trajectory", "--model", model, "--mimic", run.work / "mimic", "--subject-id", subject,
               "--top-k", 5)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    check_ranked(result["next_visit"], 5)
    assert result["visits_read"] >= 2

    history = tmp_path / "history.json"
    history.write_text(json.dumps({"visits": [
        {"diagnoses": ["10:I5023"], "age": 70.2, "note": "Discharge summary: acute on chronic systolic heart failure, "
                                                         "diuresed with furosemide, discharged home."},
        {"diagnoses": ["9:4280"], "age": 70.9, "days_since_previous": 120.0}]}))
    proc = cli("predict", "trajectory", "--model", model, "--history", history, "--top-k", 5)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    check_ranked(result["next_visit"], 5)
    assert result["visits_read"] == 2 and result["notes_read"] == 1

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"visits": [{"diagnoses": ["I5023"]}]}))
    cases = [("--history", bad),
             ("--history", history, "--mimic", run.work / "mimic", "--subject-id", subject),
             ()]
    for extra in cases:  # in this process (a user error, before any model runs)
        stderr = cli_error("predict", "trajectory", "--model", model, *extra)
        assert stderr.startswith("cmbert: error:") and stderr.count("\n") == 1, (extra, stderr)


def check_ranked(ranked: list[dict], k: int) -> None:
    assert [r["rank"] for r in ranked] == list(range(1, k + 1))
    assert len({r["category"] for r in ranked}) == k
    assert all(isinstance(r["name"], str) and r["name"].strip() for r in ranked)
    scores = [r["score"] for r in ranked]
    assert all(0.0 <= s <= 1.0 for s in scores) and scores == sorted(scores, reverse=True)


def test_predict_next_equals_the_runs_test_scores(run):
    """Test samples are (patient in file order, target visit t >= 1); predict_next on a patient's first k visits
    scores target k exactly as the training run did (k <= max_visits: the same window)."""
    from cmbert.finetune.trajectory.data import read_categories, read_patients
    from cmbert.finetune.trajectory.predict import history_from_mimic, predict_next

    scores = np.load(run.out / "test_scores_model_both.npy")
    categories = [c["id"] for c in read_categories(run.work / "data")["categories"]]
    patients = list(read_patients(run.work / "data", "test"))
    rows = np.cumsum([0] + [len(p.visits) - 1 for p in patients])
    assert rows[-1] == len(scores)
    index = max(range(len(patients)), key=lambda i: len(patients[i].visits))
    patient = patients[index]
    visits, notes = history_from_mimic(run.work / "mimic", patient.subject_id, "ccs")
    assert [v.hadm_id for v in visits] == [v.hadm_id for v in patient.visits]  # the MIMIC reading = the dataset's
    assert [v.note_id for v in visits] == [v.note_id for v in patient.visits]
    n_checked = 0
    for k in range(1, min(len(visits) - 1, MAX_VISITS) + 1):
        row = scores[rows[index] + k - 1]
        ranked = predict_next(run.out / "both" / "model", visits[:k], notes, top_k=10, device="cpu")
        assert len(ranked) == 10
        for r in ranked:
            assert r["score"] == pytest.approx(row[categories.index(r["category"])], abs=1e-4), (k, r)
        chosen = {categories.index(r["category"]) for r in ranked}
        rest = [row[c] for c in range(len(categories)) if c not in chosen]
        assert min(r["score"] for r in ranked) >= max(rest) - 1e-4  # the top 10 of the stored row
        n_checked += 1
    assert n_checked >= 2


def test_encoder_fine_tuned_end_to_end(run, tmp_path):
    """model.finetune_encoder: the encoder trains with the visit model (its weights move), is saved as a stock
    transformers folder inside the model folder, and `predict` reads notes through it exactly as the run scored."""
    import transformers
    from safetensors.torch import load_file

    from cmbert.finetune.trajectory.data import read_categories, read_patients
    from cmbert.finetune.trajectory.predict import history_from_mimic, predict_next
    from cmbert.finetune.trajectory.train import main

    out = tmp_path / "ft"
    report = main(load_trajectory_config(DEMO, [*train_overrides(run.work), f"out={out}", "inputs=[both]",
                                                "model.finetune_encoder=true", "train.epochs=1",
                                                "train.encoder_lr=1e-3", "bootstrap_resamples=0"]))
    folder = out / "both" / "model"
    model = TrajectoryModel.load(folder)
    assert model.meta.finetune_encoder and model.note_encoder_folder(folder) == str(folder / "encoder")
    stock, info = transformers.AutoModel.from_pretrained(folder / "encoder", output_loading_info=True)
    assert type(stock).__module__.startswith("transformers.") and not info["missing_keys"]
    before, after = load_file(str(run.work / "encoder" / "model.safetensors")), load_file(
        str(folder / "encoder" / "model.safetensors"))
    # The encoder folder holds a bare ModernBertModel (keys without the MLM model's "model." prefix).
    moved = [k for k in after if k.startswith("layers.") and not torch.equal(after[k], before[f"model.{k}"])]
    assert moved, "the encoder did not train"
    assert report["systems"]["model:both"]["parameters"] > sum(p.numel() for p in model.parameters())
    assert report["quality_bar"] is None  # no codes-only model to compare with

    scores = np.load(out / "test_scores_model_both.npy")
    categories = [c["id"] for c in read_categories(run.work / "data")["categories"]]
    patients = list(read_patients(run.work / "data", "test"))
    index = max(range(len(patients)), key=lambda i: len(patients[i].visits))
    row = scores[sum(len(p.visits) - 1 for p in patients[:index]) + 1]  # target visit 2: two past notes
    visits, notes = history_from_mimic(run.work / "mimic", patients[index].subject_id, "ccs")
    for r in predict_next(folder, visits[:2], notes, top_k=5, device="cpu"):
        assert r["score"] == pytest.approx(row[categories.index(r["category"])], abs=1e-4)


def test_encoder_fine_tuned_with_lora_on_pruned_layers(run, tmp_path):
    """model.lora + model.prune on the fine-tuned note encoder: only adapters train in it, they are merged into the
    saved encoder/, which keeps layer 0 of the two and loads in transformers."""
    import transformers
    from safetensors.torch import load_file

    from cmbert.finetune.trajectory.train import main

    out = tmp_path / "lora"
    report = main(load_trajectory_config(DEMO, [*train_overrides(run.work), f"out={out}", "inputs=[both]",
                                                "model.finetune_encoder=true", "train.epochs=1",
                                                "model.lora.enabled=true", "model.prune.strategy=top",
                                                "bootstrap_resamples=0"]))
    trainable = report["systems"]["model:both"]["trainable"]
    assert 0 < trainable["adapter_parameters"] < trainable["trainable_parameters"] < trainable["parameters"]
    encoder = out / "both" / "model" / "encoder"
    stock = transformers.AutoModel.from_pretrained(encoder)
    assert stock.config.num_hidden_layers == 1 and stock.config.pruned_from["dropped"] == [1]
    before, after = load_file(str(run.work / "encoder" / "model.safetensors")), load_file(
        str(encoder / "model.safetensors"))
    assert set(after) == {k.removeprefix("model.") for k in before if k.startswith("model.")
                          and not k.startswith("model.layers.1.")}
    assert torch.equal(after["embeddings.tok_embeddings.weight"], before["model.embeddings.tok_embeddings.weight"])
    assert not torch.equal(after["layers.0.attn.Wqkv.weight"], before["model.layers.0.attn.Wqkv.weight"])
    with pytest.raises(ConfigError, match="finetune_encoder"):
        load_trajectory_config(DEMO, [*train_overrides(run.work), "model.lora.enabled=true"])


def test_fine_tuned_pieces_equal_the_frozen_path_and_carry_gradients(run):
    """The pieces the model computes from token chunks (with gradients) are those `embed_segments` gives."""
    from cmbert.core.embeddings import embed_segments, load_encoder
    from cmbert.core.notes import collate as collate_chunks
    from cmbert.core.notes import tokenize_notes
    from cmbert.finetune.trajectory.data import read_notes

    encoder, tokenizer = load_encoder(run.work / "encoder", torch.device("cpu"), trainable=True)
    texts = [text for _, text in read_notes(run.work / "data")][:3]
    meta = TrajectoryMeta(inputs="both", categories=["1"], category_names=["one"], tokens=["[PAD]", "[RARE]"],
                          note_dim=32, hidden_size=16, layers=1, heads=2, dropout=0.0, max_visits=MAX_VISITS,
                          segment_tokens=32)
    model = TrajectoryModel(meta, note_encoder=encoder, tokenizer=tokenizer)
    ids = tokenize_notes(tokenizer, texts, 300)
    chunks = collate_chunks([ids.note(i) for i in range(len(texts))], 64, encoder.config.cls_token_id,
                            encoder.config.sep_token_id)
    encoder.eval()
    segments, owners = model.note_pieces(chunks["input_ids"], chunks["cu_seqlens"], chunks["max_seqlen"],
                                         chunks["note_chunks"], torch.tensor([5, 7, 9]))
    vectors, offsets = embed_segments(encoder, tokenizer, texts, 300, 64, 32)
    np.testing.assert_allclose(segments.detach().numpy(), vectors.astype(np.float32), rtol=0, atol=2e-3)
    assert owners.tolist() == [5] * int(offsets[1]) + [7] * int(offsets[2] - offsets[1]) + [9] * int(
        offsets[3] - offsets[2])
    segments.sum().backward()
    assert encoder.embeddings.tok_embeddings.weight.grad.abs().sum() > 0


# --- the model itself: causal, and each ablation reads only its inputs

N_CATEGORIES, NOTE_DIM = 6, 8


def tiny_model(inputs: str) -> TrajectoryModel:
    meta = TrajectoryMeta(inputs=inputs, categories=[str(c) for c in range(N_CATEGORIES)],
                          category_names=[f"category {c}" for c in range(N_CATEGORIES)],
                          tokens=["[PAD]", "[RARE]", *[f"10:A{i}" for i in range(10)]], note_dim=NOTE_DIM,
                          hidden_size=16, layers=2, heads=2, dropout=0.1, max_visits=MAX_VISITS, note_queries=2)
    return randomize_(TrajectoryModel(meta), seed=1).eval()  # zero-initialised heads would hide the state


def tiny_notes(seed: int = 0) -> NotePieces:
    """Six notes of 1-3 pieces each (rows 4 and 5 are spares to swap in)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = [2, 3, 1, 2, 3, 2]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return NotePieces(torch.randn(int(offsets[-1]), NOTE_DIM, generator=gen).half(), offsets)


def tiny_window(**changes) -> Window:
    values = dict(tokens=[[2, 3], [4], [2, 5, 6], [7, 8]], note_rows=[0, 1, 2, 3], gap=[0, 2, 3, 1], age=[14, 14, 15, 15],
                  targets=[[0, 1], [1], [2, 3], [4]], sample_ids=[-1, 0, 1, 2])
    values.update(changes)
    return Window(**values)


@torch.no_grad()
def logits(model: TrajectoryModel, window: Window, notes: NotePieces | None = None) -> torch.Tensor:
    batch = collate([window], notes if notes is not None else tiny_notes(), N_CATEGORIES)
    return model(**model_inputs(batch, torch.device("cpu")))[0]


def test_model_is_causal_and_reads_past_notes():
    model = tiny_model("both")
    base = logits(model, tiny_window())
    assert base.shape == (4, N_CATEGORIES) and torch.isfinite(base).all()
    changed_notes = tiny_notes()
    changed_notes.vectors[changed_notes.offsets[3]:changed_notes.offsets[4]] *= -3.0  # visit 3's note, edited
    later = {
        "tokens": logits(model, tiny_window(tokens=[[2, 3], [4], [2, 5, 6], [9, 10, 11]])),
        "note row": logits(model, tiny_window(note_rows=[0, 1, 2, 4])),
        "note text": logits(model, tiny_window(), changed_notes),
        "no note": logits(model, tiny_window(note_rows=[0, 1, 2, -1])),
        "categories": logits(model, tiny_window(targets=[[0, 1], [1], [2, 3], [0, 1, 5]])),
        "time": logits(model, tiny_window(gap=[0, 2, 3, 7], age=[14, 14, 15, 20])),
    }
    for what, changed in later.items():
        torch.testing.assert_close(changed[:3], base[:3], rtol=0, atol=1e-6, msg=f"visit 3's {what} leaked")
        assert not torch.allclose(changed[3], base[3]), f"visit 3's {what} is not read at position 3"
    # Visit 2's note is read by position 2 (which scores visit 3), and not by the positions before it.
    other_note = logits(model, tiny_window(note_rows=[0, 1, 5, 3]))
    torch.testing.assert_close(other_note[:2], base[:2], rtol=0, atol=1e-6)
    assert (other_note[2] - base[2]).abs().max() > 1e-3
    # The same windows in a padded batch next to a longer one give the same logits.
    batch = collate([tiny_window(), tiny_window(tokens=[[2]] * 5, note_rows=[0] * 5, gap=[0] * 5, age=[3] * 5,
                                                targets=[[0]] * 5, sample_ids=[-1, 0, 1, 2, 3])],
                    tiny_notes(), N_CATEGORIES)
    with torch.no_grad():
        padded = model(**model_inputs(batch, torch.device("cpu")))[0, :4]
    torch.testing.assert_close(padded, base, rtol=0, atol=1e-5)


def test_ablations_ignore_the_inputs_they_drop():
    codes = tiny_model("codes")
    base = logits(codes, tiny_window())
    changed_notes = tiny_notes(seed=5)
    for window, notes in ((tiny_window(), changed_notes), (tiny_window(note_rows=[-1, 5, 4, -1]), None)):
        torch.testing.assert_close(logits(codes, window, notes), base, rtol=0, atol=1e-6)
    assert not torch.allclose(logits(codes, tiny_window(tokens=[[9], [9], [9], [9]])), base)

    notes = tiny_model("notes")
    base = logits(notes, tiny_window())
    window = tiny_window(tokens=[[9, 10], [11], [1], [5, 6, 7]], targets=[[5], [4, 5], [0], [1, 2, 3]])
    torch.testing.assert_close(logits(notes, window), base, rtol=0, atol=1e-6)
    assert not torch.allclose(logits(notes, tiny_window(note_rows=[5, 4, 2, 3])), base)


# --- baselines by hand

def test_baselines_by_hand():
    prior = np.array([0.5, 0.1, 0.3, 0.2, 0.05])
    # Sample 0: one past visit {0}; sample 1: past visits {1, 2}, {2, 3}, {2}; sample 2: {0, 4}, {1}.
    history = [[[0]], [[1, 2], [2, 3], [2]], [[0, 4], [1]]]
    data = SplitData(patients=[], windows=[], y=np.zeros((3, 5), dtype=bool), history=history)

    def ranking(scores: np.ndarray) -> list[list[int]]:
        return [list(np.argsort(-row, kind="stable")) for row in scores]

    population = baseline_scores("population", data, prior)
    np.testing.assert_allclose(population, np.tile(prior, (3, 1)), rtol=0, atol=1e-7)

    repeat = baseline_scores("repeat_last", data, prior)
    np.testing.assert_allclose(repeat, np.tile(prior, (3, 1)) + np.array(
        [[1, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 1, 0, 0, 0]]), rtol=0, atol=1e-6)
    assert ranking(repeat) == [[0, 2, 3, 1, 4], [2, 0, 3, 1, 4], [1, 0, 2, 3, 4]]

    frequent = baseline_scores("patient_frequent", data, prior)
    np.testing.assert_allclose(frequent, np.tile(prior, (3, 1)) + np.array(
        [[1, 0, 0, 0, 0], [0, 1, 3, 1, 0], [1, 1, 0, 0, 1]]), rtol=0, atol=1e-6)
    # Sample 1: 2 (3 visits), then 3 and 1 (one each; 3 has the higher prior), then 0 and 4 by prior.
    assert ranking(frequent) == [[0, 2, 3, 1, 4], [2, 3, 1, 0, 4], [0, 1, 4, 2, 3]]


# --- config errors

@pytest.fixture
def config_folders(tmp_path):
    data, encoder = tmp_path / "data", tmp_path / "encoder"
    data.mkdir()
    encoder.mkdir()
    (data / "categories.json").write_text(json.dumps({"vocabulary": "ccs", "categories": []}))
    (encoder / "config.json").write_text("{}")
    return data, encoder


@pytest.mark.parametrize(("overrides", "key"), [
    (["inputs=[both,images]"], "inputs"),
    (["baselines=[repeat_first]"], "baselines"),
    (['model.init_from=""'], "model.init_from"),
    (["inputs=[notes]", "model.init_from=/nonexistent/encoder"], "model.init_from"),
    (["train.select_metric=accuracy"], "train.select_metric"),
    (["train.select_metric=mar@0"], "train.select_metric"),
    (["train.select_metric=mar"], "train.select_metric"),
    (["model.hidden_size=30", "model.heads=4"], "model.hidden_size"),
    (["train.warmup_fraction=1.5"], "train.warmup_fraction"),
    (["train.lr=.inf"], r"train\.lr: must be > 0, got inf"), (["model.dropout=1.0"], r"model\.dropout: must be in"),
    (["train.epochs=0"], r"train\.epochs: must be >= 1, got 0"),
    (["train.schedule=cosine"], "train.schedule"),
    (["data=/nonexistent/trajectory-data"], "data"),
    (['data=""'], "data"),
])
def test_config_errors_name_the_key(config_folders, overrides, key):
    data, encoder = config_folders
    with pytest.raises(ConfigError, match=key):
        load_trajectory_config(DEMO, [f"data={data}", f"model.init_from={encoder}", *overrides])


def test_codes_only_needs_no_encoder(config_folders):
    data, _ = config_folders
    cfg = load_trajectory_config(DEMO, [f"data={data}", "inputs=[codes]", 'model.init_from=""'])
    assert cfg.inputs == ["codes"] and cfg.model.init_from == ""
    cfg = load_trajectory_config(DEMO, [f"data={data}", "inputs=[codes]"])
    assert cfg.model.init_from == ""


def test_empty_encoder_is_refused_whatever_the_working_folder(config_folders, monkeypatch):
    data, encoder = config_folders
    monkeypatch.chdir(encoder)  # a folder with a config.json, e.g. a model folder
    with pytest.raises(ConfigError, match="model.init_from"):
        load_trajectory_config(DEMO, [f"data={data}", 'model.init_from=""'])


# --- cmbert.core.embeddings

def test_segments_pool_to_the_whole_note_mean_and_long_notes_are_chunked(run):
    from cmbert.core.embeddings import embed_segments, embed_texts, load_encoder
    from cmbert.finetune.trajectory.data import read_notes

    encoder, tokenizer = load_encoder(run.work / "encoder", torch.device("cpu"))
    texts = [text for _, text in read_notes(run.work / "data")][:4]
    texts.append("Brief note.")
    chunk, seg = 64, 16
    vectors, offsets = embed_segments(encoder, tokenizer, texts, 512, chunk, seg)
    means = embed_texts(encoder, tokenizer, texts, 512, chunk, pooling="mean")
    assert vectors.dtype == np.float16 and offsets.shape == (len(texts) + 1,) and offsets[-1] == len(vectors)
    for i, text in enumerate(texts):
        n = min(len(tokenizer(text, add_special_tokens=False)["input_ids"]), 512)
        chunks = max(1, math.ceil(n / (chunk - 2)))
        states = n + 2 * chunks  # every chunk is [CLS] piece [SEP]
        pieces = vectors[offsets[i]:offsets[i + 1]].astype(np.float64)
        assert len(pieces) == math.ceil(states / seg), (i, n)
        weights = np.full(len(pieces), float(seg))
        weights[-1] = states - seg * (len(pieces) - 1)
        weighted = (weights[:, None] * pieces).sum(0) / weights.sum()
        # Pieces are stored in fp16 (documented): up to 2^-11 relative rounding per piece, which a one-piece note
        # keeps whole (~2e-4 here); beyond that, the length-weighted mean of the pieces is the whole-note mean.
        bound = 1e-4 + 2.0 ** -11 * (weights[:, None] * np.abs(pieces)).sum(0) / weights.sum()
        assert np.all(np.abs(weighted - means[i]) <= bound), (i, np.abs(weighted - means[i]).max())
    assert any(len(tokenizer(t, add_special_tokens=False)["input_ids"]) > 3 * chunk for t in texts[:4])

    # A note longer than chunk_length: each [CLS] piece [SEP] chunk is read on its own, and all their states pool.
    long_note = texts[0]
    ids = tokenizer(long_note, add_special_tokens=False)["input_ids"][:512]
    short_chunk = 16
    assert len(ids) > 2 * short_chunk
    states = []
    with torch.no_grad():
        for start in range(0, len(ids), short_chunk - 2):
            piece = [encoder.config.cls_token_id, *ids[start:start + short_chunk - 2], encoder.config.sep_token_id]
            states.append(encoder(input_ids=torch.tensor([piece])).last_hidden_state[0].float())
    expected = torch.cat(states).mean(0).numpy()
    got = embed_texts(encoder, tokenizer, [long_note], 512, short_chunk, pooling="mean")[0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    whole = embed_texts(encoder, tokenizer, [long_note], 512, 128, pooling="mean")[0]
    assert np.abs(got - whole).max() > 1e-3  # chunking changes the reading: the chunks really are separate


def test_cached_embeddings_key_on_text_and_weights(run, tmp_path):
    from safetensors.torch import load_file, save_file

    from cmbert.core.embeddings import cached_embeddings, load_encoder, model_hash

    folder = tmp_path / "encoder"
    shutil.copytree(run.work / "encoder", folder)
    cache = tmp_path / "cache"
    texts = ["Chest pain, troponin negative.", "Cellulitis of the left leg treated with cefazolin."]
    first = cached_embeddings(cache, folder, texts, 128, 64, "mean")
    files = set(cache.iterdir())
    assert len(files) == 1 and first.shape == (2, 32)
    encoder, tokenizer = load_encoder(folder, torch.device("cpu"))
    np.testing.assert_allclose(first, embed_direct(encoder, tokenizer, texts), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(cached_embeddings(cache, folder, texts, 128, 64, "mean"), first)
    assert set(cache.iterdir()) == files

    vectors, offsets = cached_embeddings(cache, folder, texts, 128, 64, "mean", segment_tokens=4)
    again = cached_embeddings(cache, folder, texts, 128, 64, "mean", segment_tokens=4)
    np.testing.assert_array_equal(again[0], vectors)
    np.testing.assert_array_equal(again[1], offsets)
    assert len(set(cache.iterdir())) == 2

    edited = cached_embeddings(cache, folder, [texts[0], texts[1] + " Afebrile."], 128, 64, "mean")
    assert len(set(cache.iterdir())) == 3
    np.testing.assert_allclose(edited[0], first[0], rtol=0, atol=1e-6)
    assert not np.allclose(edited[1], first[1])

    old_hash = model_hash(folder)
    weights = load_file(str(folder / "model.safetensors"))
    name = next(k for k in weights if k.endswith("final_norm.weight"))
    weights[name] = weights[name] * 2.0
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    assert model_hash(folder) != old_hash
    changed = cached_embeddings(cache, folder, texts, 128, 64, "mean")
    assert len(set(cache.iterdir())) == 4
    assert not np.allclose(changed, first)


def test_cached_embeddings_resume_after_a_kill(run, tmp_path, monkeypatch):
    """Blocks are saved as they finish: a run killed in its second block recomputes only what is missing, and the
    merged result (offsets shifted past earlier blocks) equals one uninterrupted pass."""
    from cmbert.core import embeddings

    texts = [f"Visit {i}: chest pain, troponin negative, discharged on aspirin {i} mg." * (1 + i % 3)
             for i in range(5)]
    whole = embeddings.cached_embeddings(tmp_path / "one", run.work / "encoder", texts, 256, 64, segment_tokens=8)
    monkeypatch.setattr(embeddings, "BLOCK_TEXTS", 2)
    real = embeddings.embed_segments
    calls = []

    def killed_on_second_block(encoder, tokenizer, part, *args, **kwargs):
        calls.append(len(part))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(encoder, tokenizer, part, *args, **kwargs)

    monkeypatch.setattr(embeddings, "embed_segments", killed_on_second_block)
    with pytest.raises(KeyboardInterrupt):
        embeddings.cached_embeddings(tmp_path / "blocks", run.work / "encoder", texts, 256, 64, segment_tokens=8)
    resumed = embeddings.cached_embeddings(tmp_path / "blocks", run.work / "encoder", texts, 256, 64,
                                           segment_tokens=8)
    assert calls == [2, 2, 2, 1]  # block 0 once; block 1 killed, then redone; block 2
    np.testing.assert_array_equal(resumed[1], whole[1])
    np.testing.assert_allclose(resumed[0].astype(np.float32), whole[0].astype(np.float32), rtol=0, atol=2e-3)
    assert [p.name for p in (tmp_path / "blocks").iterdir()] == [p.name for p in (tmp_path / "one").iterdir()]


def embed_direct(encoder, tokenizer, texts: list[str]) -> np.ndarray:
    from cmbert.core.embeddings import embed_texts

    return embed_texts(encoder, tokenizer, texts, 128, 64, pooling="mean")
