"""`cmbert bhc evaluate`: score summary runs against the reference BHCs of one split, side by side.

    cmbert bhc evaluate --data runs/bhc --split test --summaries runs/bhc-scorer runs/bhc-centrality \
        --similarity-model runs/demo/model --out runs/bhc-eval

Systems: every run folder given (`cmbert bhc summarize --out`), plus the lead-k and oracle baselines computed on
the fly (lead with the runs' default length rule: fitted on the first FIT_TRAIN_NOTES train notes) unless a given
run already is one. A run whose recorded split fingerprint differs from the dataset's (summaries of another dataset,
or of an older build of this one) is refused, and so is a run missing a note.

Per system: ROUGE-1/2/L/Lsum F (mean over notes and a seeded 95 % bootstrap interval over notes; P and R means too),
BERTScore P/R/F1 with `--similarity-model` (any local encoder folder; default: the encoder the first encoder-based
run used; `cmbert.finetune.bhc.metrics.BertScorer` for the definition, layer and long-text choices), mean summary words
beside the mean target words. `workers` processes share ROUGE and the oracle baseline (pure Python; the same numbers
in any number of processes).

Outputs in `--out`: `report.json` (everything above, numbers only), `report.md` (the table), `per_note.jsonl.gz`
(one line per system and note: system, note_id and its numbers; no text). The table is printed (numbers only).
"""

from __future__ import annotations

import gzip
import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cmbert.core.errors import MissingInput, UserError
from cmbert.finetune.bhc.metrics import ROUGE_TYPES, BertScorer, bootstrap_ci, parallel_map, rouge_scores
from cmbert.finetune.bhc.pairs import read_split, split_fingerprint
from cmbert.finetune.bhc.selection import LengthRule, lead, oracle
from cmbert.finetune.bhc.sentences import assemble
from cmbert.finetune.bhc.summarize import FIT_TRAIN_NOTES, read_summaries


def _mean_ci(values: Sequence[float], seed: int, resamples: int) -> dict:
    ci = bootstrap_ci(values, resamples=resamples, seed=seed)
    return {"mean": float(np.mean(values)) if len(values) else None, "ci95": list(ci) if ci else None}


def _system_name(run: Path, method: str, taken: set[str]) -> str:
    name = run.name or method
    base, n = name, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    return name


def evaluate(data: str | Path, runs: Sequence[str | Path], out: str | Path, split: str = "test",
             similarity_model: str | Path | None = None, layer: int | None = None, idf: bool = False,
             baselines: bool = True, bootstrap: int = 1000, seed: int = 0, progress: bool = True,
             workers: int = 1) -> dict:
    """Write `out`/report.json, report.md and per_note.jsonl.gz (see the module docstring); returns the report."""
    start = time.perf_counter()
    data, out = Path(data), Path(out)
    skipped: Counter = Counter()
    pairs = read_split(data, split, skipped)
    if not pairs:
        raise UserError(f"{data}: the {split} split has no usable pairs")
    fingerprint = split_fingerprint(pairs)
    systems: dict[str, dict] = {}
    taken: set[str] = set()
    default_model = None
    for run in map(Path, runs):
        path = run / "report.json"
        if not path.is_file():
            raise MissingInput(f"{run}: no report.json (not a `cmbert bhc summarize` run folder)")
        report = json.loads(path.read_text(encoding="utf-8"))
        recorded = report.get("data", {}).get("splits", {}).get(split, {}).get("fingerprint")
        if recorded is None:
            raise UserError(f"{run}: no summaries of the {split} split (run summarize with --splits {split})")
        if recorded != fingerprint:
            raise UserError(f"{run}: its {split} summaries are of another dataset (fingerprint {recorded}, "
                            f"{data} has {fingerprint})")
        summaries = read_summaries(run, split)
        missing = [p.note_id for p in pairs if p.note_id not in summaries]
        if missing:
            raise UserError(f"{run}: {len(missing)} {split} notes have no summary (e.g. note_id {missing[0]})")
        name = _system_name(run, report["method"], taken)
        systems[name] = {"method": report["method"], "run": str(run),
                         "summaries": [summaries[p.note_id] for p in pairs]}
        default_model = default_model or report.get("model")
    if baselines:
        methods = {s["method"] for s in systems.values()}
        rule = None
        for method in ("lead", "oracle"):
            if method in methods:
                continue
            if method == "lead" and rule is None:
                rule = LengthRule.fit(read_split(data, "train", limit=FIT_TRAIN_NOTES))
            chosen = ([lead(p, rule.budget(p)) for p in pairs] if method == "lead" else
                      parallel_map(oracle, pairs, workers))
            name = _system_name(Path(method), method, taken)
            summaries = [assemble(p.source, [p.units[j] for j in c]) for p, c in zip(pairs, chosen, strict=True)]
            systems[name] = {"method": method, "run": None, "summaries": summaries,
                             "length_rule": rule.to_dict() if method == "lead" else None}
    if not systems:
        raise UserError("nothing to evaluate: give --summaries RUN ... or keep the baselines")
    model = similarity_model or default_model
    scorer = None
    if model is not None:
        scorer = BertScorer(model, layer=layer)
        if idf:
            scorer.with_idf([p.target for p in pairs])
    targets = [p.target for p in pairs]
    target_words = [p.target_words for p in pairs]
    per_note_rows = []
    results = {}
    for name, system in systems.items():
        t0 = time.perf_counter()
        rouge = rouge_scores(targets, system["summaries"], workers)
        words = [len(s.split()) for s in system["summaries"]]
        result = {"method": system["method"], "run": system["run"], "notes": len(pairs)}
        if system.get("length_rule"):
            result["length_rule"] = system["length_rule"]
        for kind in ROUGE_TYPES:
            f = [r[kind]["f"] for r in rouge]
            result[kind] = {**_mean_ci(f, seed, bootstrap),
                            "precision": float(np.mean([r[kind]["precision"] for r in rouge])),
                            "recall": float(np.mean([r[kind]["recall"] for r in rouge]))}
        bert = scorer.score(system["summaries"], targets) if scorer is not None else None
        if bert is not None:
            result["bertscore"] = {part: _mean_ci([b[i] for b in bert], seed, bootstrap)
                                   for i, part in enumerate(("precision", "recall", "f1"))}
        result["summary_words"] = float(np.mean(words))
        result["target_words"] = float(np.mean(target_words))
        result["seconds"] = round(time.perf_counter() - t0, 2)
        results[name] = result
        for i, pair in enumerate(pairs):
            row = {"system": name, "note_id": pair.note_id, "summary_words": words[i],
                   "target_words": target_words[i]}
            row.update({kind: round(rouge[i][kind]["f"], 6) for kind in ROUGE_TYPES})
            if bert is not None:
                row.update(zip(("bertscore_p", "bertscore_r", "bertscore_f1"), (round(v, 6) for v in bert[i]),
                               strict=True))
            per_note_rows.append(row)
        if progress:
            import sys

            print(f"scored {name}", file=sys.stderr, flush=True)
    report = {"data": str(data), "split": split, "notes": len(pairs), "fingerprint": fingerprint,
              "skipped": dict(sorted(skipped.items())), "bootstrap": {"resamples": bootstrap, "seed": seed},
              "similarity_model": str(model) if model else None,
              "similarity_layer": scorer.layer if scorer is not None else None, "idf": idf if scorer else None,
              "systems": results, "seconds": round(time.perf_counter() - start, 2)}
    out.mkdir(parents=True, exist_ok=True)
    with gzip.open(out / "per_note.jsonl.gz", "wt", encoding="utf-8") as file:
        file.writelines(json.dumps(row) + "\n" for row in per_note_rows)
    (out / "report.md").write_text(format_table(report) + "\n", encoding="utf-8")
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report



def evaluate_from_config(cfg) -> dict:
    """`evaluate` with the settings of a `BhcEvaluateConfig` (cmbert.finetune.bhc.config); workers 0: every core."""
    import os

    return evaluate(cfg.data, cfg.summaries, cfg.out, split=cfg.split, similarity_model=cfg.similarity_model,
                    layer=cfg.layer, idf=cfg.idf, baselines=cfg.baselines, bootstrap=cfg.bootstrap, seed=cfg.seed,
                    workers=cfg.workers or os.cpu_count() or 1)


def format_evaluation(report: dict, out: str) -> str:
    """What `cmbert bhc evaluate` prints: the table on stdout, the files written on stderr."""
    import sys

    print(f"-> {out}/report.json, report.md, per_note.jsonl.gz", file=sys.stderr)
    return format_table(report)
def format_table(report: dict) -> str:
    """A markdown table of the systems: ROUGE F (x100, with the 95 % interval of R-1), BERTScore F1, lengths."""
    head = "| system | method | ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-Lsum | BERTScore F1 | words (target) |"
    lines = [f"{report['split']} split, {report['notes']:,} notes; ROUGE F x 100 (R-1 with its 95 % bootstrap "
             f"interval), BERTScore with {report['similarity_model'] or 'no model'}", "", head,
             "|---" * (head.count("|") - 1) + "|"]
    for name, s in report["systems"].items():
        ci = s["rouge1"]["ci95"]
        r1 = f"{100 * s['rouge1']['mean']:.2f}" + (f" [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]" if ci else "")
        bert = f"{s['bertscore']['f1']['mean']:.4f}" if "bertscore" in s else "-"
        lines.append(f"| {name} | {s['method']} | {r1} | {100 * s['rouge2']['mean']:.2f} | "
                     f"{100 * s['rougeL']['mean']:.2f} | {100 * s['rougeLsum']['mean']:.2f} | {bert} | "
                     f"{s['summary_words']:.0f} ({s['target_words']:.0f}) |")
    return "\n".join(lines)
