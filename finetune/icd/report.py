"""The comparison report of `cmbert finetune icd train`: every system on the same test split, side by side.

- `systems`: per system (encoder x variant, or a baseline) the test metrics as mean +- std over seeds, and the
  validation-tuned threshold(s).
- `significance`: for every run, a paired bootstrap of test micro-F1 against the TF-IDF baseline (same resampled
  documents for both), plus McNemar on the per-(note, code) decisions.
- `by_length`: test micro-F1 / mAP of each system on notes grouped by token count (<= 512, ..., > 8192), which is
  where reading the whole note should beat reading its first 512 tokens.
- `codes`: frequent vs rare codes (macro-F1, mean AP) for each system; `f1_vs_frequency.png` and `pr_curve.png`.
Numbers only: no note text reaches the report.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

HEADLINE = ("f1_micro", "f1_macro", "auc_micro", "auc_macro", "precision_at_8", "precision_at_15", "r_precision",
            "map", "exact_match")


def _group(results: list[dict]) -> dict[str, list[dict]]:
    """Runs of the same system (all seeds) together, keyed by the name without the seed."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        name = r["system"].rsplit("-seed", 1)[0] if r.get("seed") is not None else r["system"]
        groups[name].append(r)
    return dict(groups)


def _mean_std(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, "n": len(arr)}


def _bucket_names(edges: list[int]) -> list[tuple[str, int, int]]:
    out, low = [], 0
    for edge in edges:
        out.append((f"{low + 1}-{edge}" if low else f"<={edge}", low, edge))
        low = edge
    out.append((f">{low}", low, np.iinfo(np.int64).max))
    return out


def write_report(out: Path, labels, results: list[dict], split, eval_cfg, dataset: str, split_name: str = "test",
                 reference: str | None = None) -> dict:
    """Score every result's `split_name` scores (its `dir`/scores.npz) on `split` (a `cmbert.finetune.icd.train.Split`)
    and write report.json, report.md and the plots into `out`. Significance is against `reference` (default: the
    TF-IDF baseline if it ran, else the first system)."""
    from cmbert.core.multilabel import compute_metrics, mcnemar, paired_bootstrap, per_code_metrics, plot_report

    Y = split.Y
    scores = {r["system"]: np.load(Path(r["dir"]) / "scores.npz")[split_name] for r in results}
    thresholds = {r["system"]: r["threshold"] for r in results}
    groups = _group(results)
    train_counts = np.asarray([labels.train_counts[c] for c in labels.codes])

    systems = {}
    for name, runs in groups.items():
        systems[name] = {
            "variant": runs[0].get("variant"), "init_from": runs[0].get("init_from"),
            "seeds": [r.get("seed") for r in runs], "thresholds": [r["threshold"] for r in runs],
            split_name: {k: _mean_std([r[split_name][k] for r in runs]) for k in runs[0][split_name]},
        }
        if all("train_seconds" in r for r in runs):
            systems[name]["train_seconds"] = _mean_std([r["train_seconds"] for r in runs])
        rates = [r["train_tokens_per_s"] for r in runs if r.get("train_tokens_per_s")]
        if rates:
            systems[name]["train_tokens_per_s"] = _mean_std(rates)
        for key in ("trainable_parameters", "parameters", "trainable_percent", "lora", "prune"):
            if runs[0].get(key) is not None:
                systems[name][key] = runs[0][key]

    significance = {}
    baseline = reference or next((r["system"] for r in results if r.get("variant") == "tfidf"), results[0]["system"])
    if len(results) > 1:
        for r in results:
            if r["system"] == baseline:
                continue
            name = r["system"]
            boot = paired_bootstrap(Y, scores[name], thresholds[name], scores[baseline], thresholds[baseline],
                                    metric="f1_micro", n_resamples=eval_cfg.bootstrap_resamples, seed=0)
            test_mc = mcnemar(Y, scores[name] > thresholds[name], scores[baseline] > thresholds[baseline])
            significance[name] = {"against": baseline, "bootstrap_f1_micro": boot, "mcnemar": test_mc}

    by_length = {"tokens": "note length in the first encoder's tokens, before any cut", "buckets": {}}
    lengths = split.notes.full_lengths
    for label, low, high in _bucket_names(eval_cfg.length_buckets):
        rows = np.flatnonzero((lengths > low) & (lengths <= high))
        if len(rows) == 0:
            continue
        entry = {"notes": int(len(rows))}
        for name in scores:
            m = compute_metrics(Y[rows], scores[name][rows], thresholds[name])
            entry[name] = {"f1_micro": m["f1_micro"], "map": m["map"], "precision_at_8": m["precision_at_8"]}
        by_length["buckets"][label] = entry

    codes, per_code_all = {}, {}
    for name in scores:
        pc = per_code_metrics(Y, scores[name], thresholds[name], labels.codes, train_counts, eval_cfg.rare_cutoff)
        per_code_all[name] = pc
        codes[name] = {k: v for k, v in pc.items() if k != "codes"}

    # Plots: per-code F1 vs frequency for the best system by mean test micro-F1, one PR curve per system.
    best = max(systems, key=lambda n: systems[n][split_name]["f1_micro"]["mean"])
    best_run = max(groups[best], key=lambda r: r[split_name]["f1_micro"])["system"]
    plots = plot_report(per_code_all[best_run], Y, {n: scores[n] for n in scores}, out, title=best_run)

    report = {
        "dataset": str(dataset), "split": split_name, "icd_version": labels.version, "codes": len(labels.codes),
        "notes": int(len(Y)), "systems": systems, "significance": significance, "by_length": by_length,
        "frequent_vs_rare": codes, "best_system": best, "plots": [str(p) for p in plots], "runs": results,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "report.md").write_text(format_table(report) + "\n")
    return report


def format_table(report: dict) -> str:
    """The systems side by side (percent, mean +- std over seeds), then micro-F1 by note length."""
    cols = ("f1_micro", "f1_macro", "auc_micro", "precision_at_8", "r_precision", "map")
    split = report["split"]
    lines = [f"ICD-{report['icd_version']}: {report['codes']} codes, {report['notes']} {split} notes",
             "| system | " + " | ".join(cols) + " | tokens/s | trainable % |", "|---" * (len(cols) + 3) + "|"]
    for name, s in report["systems"].items():
        cells = []
        for c in cols:
            m = s[split][c]
            cells.append(f"{100 * m['mean']:.1f}" + (f" ± {100 * m['std']:.1f}" if m["n"] > 1 else ""))
        rate = s.get("train_tokens_per_s", {}).get("mean")
        cells.append(f"{rate:,.0f}" if rate else "–")
        cells.append(f"{s['trainable_percent']:.2f}" if s.get("trainable_percent") is not None else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    buckets = report["by_length"]["buckets"]
    if buckets:
        names = list(report["systems"])
        lines += ["", "micro-F1 by note length (tokens):", "| system | " + " | ".join(
            f"{b} ({v['notes']})" for b, v in buckets.items()) + " |", "|---" * (len(buckets) + 1) + "|"]
        for name in names:
            runs = [k for k in next(iter(buckets.values())) if k.rsplit("-seed", 1)[0] == name or k == name]
            if not runs:
                continue
            cells = [f"{100 * np.mean([v[r]['f1_micro'] for r in runs if r in v]):.1f}" for v in buckets.values()]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, sig in report["significance"].items():
        boot = sig["bootstrap_f1_micro"]
        lines.append(f"{name} vs {sig['against']}: micro-F1 {100 * boot['diff']:+.1f} "
                     f"[{100 * boot['ci_low']:+.1f}, {100 * boot['ci_high']:+.1f}] (95% bootstrap), "
                     f"p={boot['p_value']:.3f}")
    return "\n".join(lines)
