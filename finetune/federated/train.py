"""`cmbert finetune federated train`: frozen note embeddings + MLP heads for ICD coding, trained centrally and
federated over simulated hospitals with Flower, on the same splits (after Xu & Dray 2025).

A linear run:
1. embed every note of the ICD dataset once with the frozen encoder (cached: a rerun embeds nothing);
2. for each split (split 0: the dataset's own; more: stratified re-draws, `data.split_assignments`):
   a. centralized: each head design trained on all training notes, `train.epochs` epochs, the epoch with the best
      validation micro-F1 kept with its tuned threshold;
   b. the training and validation patients partitioned over `federated.clients` sites per scheme (iid, dirichlet),
      one site file each;
3. one Flower simulation (`flwr.simulation.run_simulation`, Ray backend, one virtual SuperNode per site) runs every
   federated experiment (split x scheme x head) in turn: `federated.rounds` rounds of FedAvg / FedProx, the round with
   the best federated validation micro-F1 kept with its threshold (`flower.py`);
4. every kept head is scored on the split's test notes with the full ICD metric set (`cmbert.core.multilabel`), and the
   report gives mean +- std over splits and the federated - centralized gap per split.

Everything finished is kept: results/<split>/<setting>-<head>.json and models/<split>/<setting>-<head>/, so a killed
run resumes at the first experiment without a result (a result made under another config is redone).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from cmbert.core.multilabel import best_threshold, compute_metrics, threshold_counts
from cmbert.finetune.federated.config import EmbeddingConfig, FederatedConfig
from cmbert.finetune.federated.data import (
    EmbeddedDataset,
    embed_dataset,
    partition_patients,
    primary_codes,
    split_assignments,
    write_site,
)
from cmbert.finetune.federated.flower import (
    Experiment,
    head_config,
    initial_head,
    make_client_app,
    run_experiment,
    save_head,
)
from cmbert.finetune.federated.heads import moments, score, train_epochs

REPORT_METRICS = ("f1_micro", "f1_macro", "auc_micro", "auc_macro", "precision_at_8", "map")


def _fingerprint(cfg: FederatedConfig) -> str:
    """What decides a result: everything but the output folder and the cache location."""
    values = cfg.to_dict()
    values.pop("out")
    values["embedding"].pop("cache")
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def embedder(e: EmbeddingConfig, cache: Path, device: str = "auto"):
    """texts -> float32 [n, dim] by the frozen encoder of `e`, through the disk cache in `cache`."""
    from cmbert.core.embeddings import cached_embeddings, context_length
    from cmbert.core.runtime import device_and_dtype

    dev, dtype = device_and_dtype(e.precision, device)
    chunk = min(e.chunk_length or context_length(e.init_from), context_length(e.init_from))
    return lambda texts: cached_embeddings(cache, e.init_from, texts, e.max_tokens, chunk, e.pooling, device=dev,
                                           dtype=dtype, progress=True)


def _rows(assigned: np.ndarray, split: str) -> np.ndarray:
    return np.flatnonzero(assigned == split)


def _test_metrics(data: EmbeddedDataset, rows: np.ndarray, head: torch.nn.Module, threshold: float) -> dict:
    return compute_metrics(data.y.dense(rows), score(head, data.x[rows]), threshold, REPORT_METRICS)


def train_central(data: EmbeddedDataset, assigned: np.ndarray, config: dict, cfg: FederatedConfig) -> dict:
    """`train.epochs` epochs on all training notes with `heads.train_epochs` (the clients' code), keeping the epoch
    with the best validation micro-F1 at its tuned threshold."""
    t = cfg.train
    train, val = _rows(assigned, "train"), _rows(assigned, "val")
    train_x, train_y, val_x, val_y = data.x[train], data.y.take(train), data.x[val], data.y.dense(val)
    head = initial_head(config, t.seed, moments(train_x))
    best, history = {"val_f1_micro": -1.0}, []
    for epoch in range(1, t.epochs + 1):
        loss = train_epochs(head, train_x, train_y, 1, config["lr"], t.weight_decay, t.batch_size,
                            t.seed * 1_000_003 + epoch)
        threshold, f1 = best_threshold(*threshold_counts(val_y, score(head, val_x)))
        history.append({"epoch": epoch, "train_loss": loss, "val_f1_micro": f1, "threshold": threshold})
        if f1 > best["val_f1_micro"]:
            best = {"state": {k: v.clone() for k, v in head.state_dict().items()}, "round": epoch,
                    "threshold": threshold, "val_f1_micro": f1}
    return {**best, "rounds": history}


def _finish(data: EmbeddedDataset, assigned: np.ndarray, found: dict, config: dict, result_path: Path,
            model_dir: Path, fingerprint: str, seconds: float) -> dict:
    """Test metrics of a kept head; its result file (last: it marks the experiment done) and model folder."""
    head = initial_head(config, 0)
    head.load_state_dict(found["state"])
    result = {"fingerprint": fingerprint, "best_round": found["round"], "threshold": found["threshold"],
              "val_f1_micro": found["val_f1_micro"], "seconds": round(seconds, 1),
              "test": _test_metrics(data, _rows(assigned, "test"), head, found["threshold"]), "rounds": found["rounds"]}
    save_head(model_dir, found["state"], config, found["threshold"], {"best_round": found["round"]})
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


def _done(path: Path, fingerprint: str) -> dict | None:
    if path.is_file():
        result = json.loads(path.read_text(encoding="utf-8"))
        if result.get("fingerprint") == fingerprint:
            return result
    return None


def _write_sites(data: EmbeddedDataset, assigned: np.ndarray, cfg: FederatedConfig, scheme: str, split: int,
                 folder: Path) -> list[dict]:
    """The site files of one split and scheme; per-site counts for the report."""
    f = cfg.federated
    train, val = _rows(assigned, "train"), _rows(assigned, "val")
    primary = primary_codes(data.subjects, data.y)
    patients = sorted({int(s) for s in data.subjects[train]})
    site_of = partition_patients(patients, sorted({int(s) for s in data.subjects[val]}), primary, f.clients, scheme,
                                 f.dirichlet_alpha, cfg.splits.seed * 7_919 + split)
    # How non-IID a site is: the total-variation distance of its training patients' primary-code mix from all
    # training patients' (0: the same mix; 1: disjoint).
    classes = {c: i for i, c in enumerate(sorted({primary[s] for s in patients}))}
    whole = np.bincount([classes[primary[s]] for s in patients], minlength=len(classes)) / len(patients)
    sites = []
    for site in range(f.clients):
        mine = [rows[[site_of[int(s)] == site for s in data.subjects[rows]]] for rows in (train, val)]
        write_site(folder / f"client-{site}.npz", data.x[mine[0]], data.y.take(mine[0]), data.x[mine[1]],
                   data.y.take(mine[1]), data.label_hash)
        mix = np.bincount([classes[primary[s]] for s in patients if site_of[s] == site], minlength=len(classes))
        sites.append({"site": site, "train_notes": len(mine[0]), "val_notes": len(mine[1]),
                      "train_codes": int(len(np.unique(data.y.take(mine[0]).indices))),
                      "primary_code_tv": round(float(0.5 * np.abs(mix / max(mix.sum(), 1) - whole).sum()), 4)})
    return sites


def run_simulation(experiments: list[Experiment], sites_root: Path, cfg: FederatedConfig, on_done,
                   log=print) -> None:
    """Every experiment in one Flower simulation (one Ray start-up): a ServerApp running them in turn over
    `federated.clients` virtual SuperNodes, each a ClientApp reading its partition's site file."""
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation as flower_simulation

    f = cfg.federated
    client_app = make_client_app(lambda context, name: sites_root / name /
                                 f"client-{context.node_config['partition-id']}.npz",
                                 threads=max(1, int(f.client_cpus)))
    server_app = ServerApp()

    @server_app.main()
    def _main(grid, context) -> None:
        for experiment in experiments:
            log(f"federated {experiment.name}: {f.rounds} rounds of {f.strategy} over {f.clients} sites")
            start = time.time()
            found = run_experiment(grid, experiment, f.clients, f.rounds, f.strategy, f.proximal_mu, f.fraction_train,
                                   log_round=lambda e: log(f"  round {e['round']:>3}: train loss {e['train_loss']:.4f}"
                                                           f"  val micro-F1 {e['val_f1_micro']:.4f}"))
            on_done(experiment, found, time.time() - start)

    # Ray's notice that it will stop overriding CUDA_VISIBLE_DEVICES for num_gpus=0 concerns GPU clients, not ours.
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    flwr_logger.setLevel(logging.WARNING)  # Flower logs every message at INFO; our per-round lines say what matters
    try:
        flower_simulation(server_app=server_app, client_app=client_app, num_supernodes=f.clients,
                          backend_config={"client_resources": {"num_cpus": f.client_cpus, "num_gpus": 0.0},
                                          "init_args": {"logging_level": logging.WARNING}})
    finally:
        flwr_logger.setLevel(level)


def main(cfg: FederatedConfig, log=print) -> dict:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n", encoding="utf-8")
    fingerprint = _fingerprint(cfg)
    start = time.time()
    data = embed_dataset(cfg.data, embedder(cfg.embedding, Path(cfg.embedding.cache or out / "cache"), cfg.device))
    log(f"embedded {len(data.note_ids):,} notes -> {data.x.shape[1]} dims ({time.time() - start:.0f} s; "
        f"{len(data.labels.codes):,} ICD-{data.labels.version} labels)")
    f, h, t = cfg.federated, cfg.head, cfg.train

    def where(split: int, setting: str, design: str) -> tuple[Path, Path]:
        """(result file, model folder) of one experiment."""
        return (out / "results" / f"split-{split}" / f"{setting}-{design}.json",
                out / "models" / f"split-{split}" / f"{setting}-{design}")

    results: dict[str, dict[str, list[dict]]] = {}
    splits, assignments, pending, owner = [], {}, [], {}
    for split in range(cfg.splits.count):
        assigned = assignments[split] = split_assignments(data, cfg.data, split, cfg.splits.seed)
        name = f"split-{split}"
        splits.append({"split": split, **{s: int((assigned == s).sum()) for s in ("train", "val", "test")},
                       "partitions": {scheme: _write_sites(data, assigned, cfg, scheme, split,
                                                           out / "sites" / name / scheme) for scheme in f.partitions}})
        for design in cfg.heads:
            config = head_config(design, data.x.shape[1], len(data.labels.codes), data.label_hash, "", h.hidden_size,
                                 h.dropout, t.lr[design], t.weight_decay, t.batch_size, f.local_epochs, t.seed)
            result = _done(where(split, "central", design)[0], fingerprint)
            if result is None:
                begun = time.time()
                result = _finish(data, assigned, train_central(data, assigned, config, cfg), config,
                                 *where(split, "central", design), fingerprint, time.time() - begun)
            log(f"{name} central {design}: test micro-F1 {result['test']['f1_micro']:.4f} "
                f"(epoch {result['best_round']})")
            results.setdefault("central", {}).setdefault(design, []).append({**result, "design": design})
            for scheme in f.partitions:
                experiment = Experiment(f"{name}/{scheme}/{design}", {**config, "data": f"{name}/{scheme}"})
                owner[experiment.name] = (split, scheme, design)
                if _done(where(split, scheme, design)[0], fingerprint) is None:
                    pending.append(experiment)

    def on_done(experiment: Experiment, found: dict, seconds: float) -> None:
        split, scheme, design = owner[experiment.name]
        result = _finish(data, assignments[split], found, experiment.config, *where(split, scheme, design),
                         fingerprint, seconds)
        log(f"{experiment.name}: test micro-F1 {result['test']['f1_micro']:.4f} (round {result['best_round']})")

    if pending:
        run_simulation(pending, out / "sites", cfg, on_done, log)
    for split, scheme, design in owner.values():
        result = _done(where(split, scheme, design)[0], fingerprint)
        if result is None:
            raise RuntimeError(f"split-{split}/{scheme}/{design}: the simulation ended without a result")
        results.setdefault(scheme, {}).setdefault(design, []).append({**result, "design": design})
    report = summarize(cfg, data, splits, results, time.time() - start)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report


def _mean_std(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "values": [float(v) for v in values]}


SELECTED = "selected"  # the report's row for the head each setting would deploy: the best on validation


def summarize(cfg: FederatedConfig, data: EmbeddedDataset, splits: list[dict], results: dict, seconds: float) -> dict:
    """Mean +- std over splits of each setting and head, and of `SELECTED`: per split, the head with the best
    validation micro-F1 (how a user of either setting picks a design, on data that setting can see); the federated -
    centralized gap per split. The quality bar: the selected federated head's IID micro-F1 within 0.01 of the selected
    centralized head's (mean over splits); each head's own gap is reported beside it."""
    for by_head in results.values():
        by_head[SELECTED] = [max((by_head[d][i] for d in cfg.heads), key=lambda r: r["val_f1_micro"])
                             for i in range(len(splits))]
    summary: dict = {}
    for setting, by_head in results.items():
        for design, runs in by_head.items():
            entry = {metric: _mean_std([r["test"][metric] for r in runs]) for metric in REPORT_METRICS}
            if setting != "central":
                central = results["central"][design]
                entry["gap_f1_micro"] = _mean_std([r["test"]["f1_micro"] - c["test"]["f1_micro"]
                                                   for r, c in zip(runs, central, strict=True)])
                entry["gap_f1_macro"] = _mean_std([r["test"]["f1_macro"] - c["test"]["f1_macro"]
                                                   for r, c in zip(runs, central, strict=True)])
            entry["best_round"] = [r["best_round"] for r in runs]
            if design == SELECTED:
                entry["designs"] = [r["design"] for r in runs]
            summary.setdefault(design, {})[setting] = entry
    bar = None
    if "iid" in results:
        gaps = {design: summary[design]["iid"]["gap_f1_micro"]["mean"] for design in (*cfg.heads, SELECTED)}
        bar = {"tolerance": 0.01, "iid_gap_f1_micro": gaps, "met": abs(gaps[SELECTED]) <= 0.01,
               "heads_within": [d for d in cfg.heads if abs(gaps[d]) <= 0.01]}
    return {"dataset": str(cfg.data), "encoder": cfg.embedding.init_from, "pooling": cfg.embedding.pooling,
            "embedding_dim": int(data.x.shape[1]), "notes": len(data.note_ids), "labels": len(data.labels.codes),
            "clients": cfg.federated.clients, "rounds": cfg.federated.rounds, "strategy": cfg.federated.strategy,
            "splits": splits, "summary": summary, "quality_bar": bar, "seconds": round(seconds, 1),
            "config": cfg.to_dict()}


def format_table(report: dict) -> str:
    """Mean +- std over the splits: one row per head and setting."""
    n = len(report["splits"])
    lines = [f"{report['notes']:,} notes, {report['labels']:,} labels, {report['clients']} sites, "
             f"{report['rounds']} rounds of {report['strategy']}, {n} split{'s' * (n > 1)} (mean +- std)",
             f"{'head':<8} {'setting':<10} {'micro-F1':>16} {'macro-F1':>16} {'AUC micro':>9} {'gap micro-F1':>16}"]
    for design, settings in report["summary"].items():
        for setting, e in settings.items():
            gap = e.get("gap_f1_micro")
            lines.append(f"{design:<8} {setting:<10} {e['f1_micro']['mean']:>8.4f} +- {e['f1_micro']['std']:.4f} "
                         f"{e['f1_macro']['mean']:>8.4f} +- {e['f1_macro']['std']:.4f} {e['auc_micro']['mean']:>9.4f} "
                         + (f"{gap['mean']:>+8.4f} +- {gap['std']:.4f}" if gap else f"{'':>16}"))
    bar = report.get("quality_bar")
    if bar:
        lines.append(f"quality bar (the head selected on validation, IID within {bar['tolerance']} of centralized "
                     f"micro-F1): {'met' if bar['met'] else 'NOT met'}; heads within it on their own: "
                     f"{', '.join(bar['heads_within']) or 'none'}")
    return "\n".join(lines)

