"""`pack_corpus` on a synthetic store with MIMIC-like document lengths: packing efficiency, throughput, peak RAM.

The store is random text (pseudo-clinical words drawn Zipf-like; NOT MIMIC text) in the store format, with the length
mix of the real sources, in tokens of the tokenizer trained here ("150-400" = 5th-95th percentiles of a lognormal):
- mimic_discharge: lognormal, median 2,000 (sd of log 0.45), plus 1 % long notes of 8,000-16,000: 50 % of tokens
- mimic_radiology: 150-400 (40 %); pubmed: 250-400 (7 %); icd10cm: 30-100 (3 %)

Each pack runs in a fresh process, which reports its wall time and peak resident memory (its VmHWM, and ru_maxrss of
its largest tokenizer worker). Measured:
- packing efficiency (real tokens / (rows x max_seq_len)) at 1,024 and 8,192, target >= 99 %;
- tokenize + pack throughput with num_proc 1 (TOKENIZERS_PARALLELISM false, then true) and num_proc 2;
- peak RAM on two stores 10x apart in size, which must be flat.
Throughput is in tokens: the synthetic words are long (~7 characters a token against ~4.5 for real notes), so MB/s
would flatter it.

    python bench/corpus_pack.py                       # the BENCHMARKS.md run: 20 MB and 200 MB stores
    python bench/corpus_pack.py --small-mb 2 --large-mb 20    # a quick smoke check
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# The child processes import only this, so their memory is packing's own.
from cmbert.pretrain.packing import POOL_TOKENS, pack_corpus

ROOTS = ("cardi", "pneum", "hepat", "nephr", "gastr", "neur", "oste", "derm", "hemat", "angi", "arthr", "bronch",
         "cholecyst", "col", "cyst", "encephal", "laryng", "my", "ot", "pancreat", "pleur", "thromb", "ur", "vas")
SUFFIXES = ("itis", "ectomy", "ology", "algia", "osis", "emia", "oma", "oplasty", "oscopy", "ogenic", "al", "ic",
            "ostomy", "opathy")
PLAIN = ("patient", "chest", "pain", "denies", "fever", "chills", "history", "of", "with", "and", "the", "was", "is",
         "no", "left", "right", "bilateral", "effusion", "opacity", "normal", "unremarkable", "impression", "findings",
         "mg", "daily", "bid", "po", "iv", "admitted", "discharged", "follow", "up", "___", "___", "___", ".", ",", ":")
def lognormal(low: float, high: float):
    """Lengths whose 5th and 95th percentiles are `low` and `high`."""
    mu, sigma = (np.log(low) + np.log(high)) / 2, (np.log(high) - np.log(low)) / (2 * 1.645)
    return lambda rng, n: rng.lognormal(mu, sigma, n).astype(int).clip(1)


def discharge_lengths(rng, n):
    long_tail = rng.random(n) < 0.01
    return np.where(long_tail, rng.integers(8000, 16001, n), rng.lognormal(np.log(2000), 0.45, n)).astype(int).clip(50)


# source: (share of tokens, length sampler in tokens)
MIX = {
    "mimic_discharge": (0.50, discharge_lengths),
    "mimic_radiology": (0.40, lognormal(150, 400)),
    "pubmed": (0.07, lognormal(250, 400)),
    "icd10cm": (0.03, lognormal(30, 100)),
}


def vocabulary(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    words = list(PLAIN) + [r + s for r in ROOTS for s in SUFFIXES] + [f"{rng.integers(1, 300)}" for _ in range(200)]
    weights = 1.0 / np.arange(1, len(words) + 1)  # Zipf-like: a few words are most of the text
    return np.array(words), weights / weights.sum()


def random_text(rng, words, p, n_words: int) -> str:
    return " ".join(words[rng.choice(len(words), n_words, p=p)])


def make_store(folder: Path, megabytes: float, words, p, tokens_per_word: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    chars_per_token = np.mean([len(w) + 1 for w in rng.choice(words, 10_000, p=p)]) / tokens_per_word
    for source, (share, lengths) in MIX.items():
        budget = share * megabytes * 1e6 / chars_per_token  # tokens of this source
        out = folder / "docs" / source
        out.mkdir(parents=True)
        part, written = 0, 0
        while written < budget:
            n_tokens = lengths(rng, 2000)
            n_tokens = n_tokens[np.cumsum(n_tokens) <= budget - written + n_tokens[0]]  # stop at the budget
            with gzip.open(out / f"part-{part:05d}.jsonl.gz", "wt", compresslevel=1) as f:
                for i, n in enumerate(n_tokens):
                    text = random_text(rng, words, p, max(1, round(n / tokens_per_word)))
                    f.write(json.dumps({"id": f"{source}-{part}-{i}", "source": source, "text": text}) + "\n")
            written += int(n_tokens.sum())
            part += 1


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(spec: dict) -> None:
    """One pack in this fresh process; prints its measurements as JSON."""
    os.environ["TOKENIZERS_PARALLELISM"] = spec["parallelism"]
    before = _status_mib("VmRSS")  # interpreter + numpy + tokenizers, before any packing
    start = time.perf_counter()
    manifest = pack_corpus(spec["store"], spec["tokenizer"], spec["out"], max_seq_len=spec["max_seq_len"],
                           num_proc=spec["num_proc"], pool_tokens=spec["pool_tokens"], progress=False)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "manifest": manifest, "rss_before_mib": before,
                      # VmHWM, not ru_maxrss: Linux carries the parent's high-water mark into ru_maxrss across exec
                      "rss_main_mib": _status_mib("VmHWM"),
                      # the largest tokenizer worker; an upper bound, as it includes this process's RSS when it forked
                      "rss_worker_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))


def run_child(**spec) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec, default=str)], capture_output=True,
                         text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small-mb", type=float, default=20)
    parser.add_argument("--large-mb", type=float, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child))

    from cmbert.core.tokenizer_files import save_tokenizer
    from cmbert.pretrain.tokenizer import train_tokenizer

    rng = np.random.default_rng(args.seed)
    words, p = vocabulary(rng)
    with tempfile.TemporaryDirectory(prefix="corpus_pack_") as tmp:
        tmp = Path(tmp)
        sample = [random_text(rng, words, p, 500) for _ in range(2000)]
        tokenizer = train_tokenizer(sample, vocab_size=2048)
        save_tokenizer(tokenizer, tmp / "tok")
        probe = " ".join(sample[:200])
        tokens_per_word = len(tokenizer.backend_tokenizer.encode(probe, add_special_tokens=False)) / len(probe.split())
        stores = {}
        for label, mb in (("small", args.small_mb), ("large", args.large_mb)):
            start = time.perf_counter()
            make_store(tmp / label, mb, words, p, tokens_per_word, args.seed)
            stores[label] = tmp / label
            size = sum(f.stat().st_size for f in (tmp / label).rglob("*.gz")) / 1e6
            made = time.perf_counter() - start
            print(f"# {label} store: {mb:g} MB of text ({size:.1f} MB gzip), made in {made:.0f} s", flush=True)

        # (store, max_seq_len, num_proc, TOKENIZERS_PARALLELISM, pool tokens). The default pool (2^23 tokens) is
        # not full on the small store; the 2^20 pair shows memory once the pool is full at both sizes.
        default, small_pool = POOL_TOKENS, 1 << 20
        runs = [("small", 1024, 2, "false", default), ("small", 8192, 2, "false", default)]
        runs += [("large", 1024, 1, "false", default), ("large", 1024, 1, "true", default)]
        runs += [("large", 1024, 2, "false", default), ("large", 8192, 2, "false", default)]
        runs += [("small", 1024, 2, "false", small_pool), ("large", 1024, 2, "false", small_pool)]
        results = []
        for n, (label, max_seq_len, num_proc, parallelism, pool) in enumerate(runs):
            r = run_child(store=stores[label], tokenizer=tmp / "tok", out=tmp / f"out{n}", max_seq_len=max_seq_len,
                          num_proc=num_proc, parallelism=parallelism, pool_tokens=pool)
            results.append(((label, max_seq_len, num_proc, parallelism, pool), r))

    cores = os.cpu_count()
    print(f"\n# {cores} cores; synthetic MIMIC-like length mix; tokens include [CLS]/[SEP]")
    print("| store | max_seq_len | num_proc | TOKENIZERS_PARALLELISM | pool tokens | tokens | rows | efficiency "
          "| discharge eff. "
          "| radiology eff. | pubmed eff. | icd10cm eff. | tokens/s | tokens/s per core | RSS before MiB "
          "| peak RSS main MiB | peak RSS worker MiB (bound) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (label, max_seq_len, num_proc, parallelism, pool), r in results:
        m = r["manifest"]
        used = min(cores, 2 if (num_proc > 1 or parallelism == "true") else 1)
        rate = m["totals"]["tokens"] / r["seconds"]
        effs = " | ".join(f"{m['sources'][s]['packing_efficiency']:.2%}" for s in MIX)
        worker = f"{r['rss_worker_mib']:.0f}" if num_proc > 1 else "-"
        print(f"| {label} | {max_seq_len:,} | {num_proc} | {parallelism} | 2^{pool.bit_length() - 1} "
              f"| {m['totals']['tokens']:,} "
              f"| {m['totals']['rows']:,} | {m['totals']['packing_efficiency']:.2%} | {effs} | {rate:,.0f} "
              f"| {rate / used:,.0f} | {r['rss_before_mib']:.0f} | {r['rss_main_mib']:.0f} | {worker} |")
    print(f"\ncommand: python bench/corpus_pack.py --small-mb {args.small_mb:g} --large-mb {args.large_mb:g}")


if __name__ == "__main__":
    main()
