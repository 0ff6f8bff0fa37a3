"""ROUGE for the BHC benchmark: rouge-score's own ROUGE-L / ROUGE-Lsum against ours, and ours in 1 vs N processes.

`cmbert bhc evaluate` scores every note of a split for every system; rouge-score's pure-Python LCS tables cost ~0.35 s
for a note-length pair, so `cmbert.finetune.bhc.metrics` computes the same LCS with numpy (equal to 1e-12, tested) and can
spread the notes over processes (`--workers`). Side by side in one run on the same (target, lead-k summary) pairs of
a prepared split: seconds per pair of rouge-score's RougeScorer(["rougeL", "rougeLsum"], use_stemmer=True) on a
sample, and of `rouge_scores` (all four ROUGE types) with 1 and with N workers on the whole split, with ratios.

    cmbert bhc prepare --mimic runs/d1500/mimic --out runs/bhc-d1500
    python bench/bhc_rouge.py --data runs/bhc-d1500 --split test --workers 2
"""

from __future__ import annotations

import argparse
import os
import time

from cmbert.finetune.bhc.metrics import rouge_scores
from cmbert.finetune.bhc.pairs import read_split
from cmbert.finetune.bhc.selection import LengthRule, lead
from cmbert.finetune.bhc.sentences import assemble, lines_for_lsum
from cmbert.finetune.bhc.summarize import FIT_TRAIN_NOTES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a `cmbert bhc prepare` folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--reference-sample", type=int, default=20, help="pairs scored by rouge-score itself")
    args = parser.parse_args()

    pairs = read_split(args.data, args.split)
    rule = LengthRule.fit(read_split(args.data, "train", limit=FIT_TRAIN_NOTES))
    summaries = [assemble(p.source, [p.units[i] for i in lead(p, rule.budget(p))]) for p in pairs]
    targets = [p.target for p in pairs]

    from rouge_score import rouge_scorer

    reference = rouge_scorer.RougeScorer(["rougeL", "rougeLsum"], use_stemmer=True)
    sample = min(args.reference_sample, len(pairs))
    start = time.perf_counter()
    for target, summary in zip(targets[:sample], summaries[:sample], strict=True):
        reference.score(target, summary)  # rougeL on the texts; rougeLsum reads the same text one unit per line
        reference.score(lines_for_lsum(target), lines_for_lsum(summary))
    per_pair_reference = (time.perf_counter() - start) / sample  # one pair: its ROUGE-L and its ROUGE-Lsum

    timings = {}
    for workers in (1, args.workers):
        start = time.perf_counter()
        rouge_scores(targets, summaries, workers=workers)
        timings[workers] = (time.perf_counter() - start) / len(pairs)
    print(f"{len(pairs):,} {args.split} pairs (lead-k summaries); seconds per pair:")
    print(f"  rouge-score RougeScorer, ROUGE-L + Lsum only ({sample} pairs): {per_pair_reference:.4f}")
    print(f"  rouge_scores, all four types, 1 worker:  {timings[1]:.4f}  "
          f"({per_pair_reference / timings[1]:.1f}x faster than rouge-score's L + Lsum)")
    if args.workers != 1:
        print(f"  rouge_scores, all four types, {args.workers} workers: {timings[args.workers]:.4f}  "
              f"({timings[1] / timings[args.workers]:.2f}x the 1-worker speed)")


if __name__ == "__main__":
    main()
