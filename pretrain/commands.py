"""`cmbert corpus ...`, `cmbert tokenizer train`, `cmbert pretrain`, `cmbert export`. COMMANDS and GROUPS are literals
that `cmbert.cli` reads without importing this module (the format is in its docstring); the two commands whose
command-line defaults differ from the library's (`num_proc`), the option parsers and the formatters are below."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from cmbert.pretrain.corpus import DEFAULT_NUM_PROC

GROUPS = {
    ("corpus",): "pretraining corpora: document store, token shards",
    ("tokenizer",): "the clinical byte-level BPE tokenizer",
}

COMMANDS = {
    ("corpus", "build"): {
        "run": "cmbert.pretrain.commands:build",
        "show": "cmbert.pretrain.commands:format_build",
        "help": "combine MIMIC-IV notes, PubMed XML and ICD ontology text into a document store",
    },
    ("corpus", "pack"): {
        "run": "cmbert.pretrain.commands:pack",
        "types": {"max_seq_len": "cmbert.pretrain.commands:seq_len", "weights": "cmbert.pretrain.commands:weights",
                  "shard": "cmbert.pretrain.commands:shard"},
        "show": "cmbert.pretrain.commands:format_pack",
        "help": "tokenize a document store in parallel and pack it best-fit into fixed-size token shards with a "
                "manifest (document boundaries kept)",
    },
    ("tokenizer", "train"): {
        "run": "cmbert.pretrain.tokenizer:train_tokenizer_from_store",
        "flags": {"store": "corpus"},
        "show": "cmbert.pretrain.commands:format_tokenizer",
        "help": "train a ModernBERT-style byte-level BPE on a document store and report tokens per word against "
                "BERT's general-domain WordPiece",
    },
    ("pretrain",): {
        "config": "cmbert.pretrain.config:load_config",
        "preset": None,
        "run": "cmbert.pretrain.train:main",
        "example": "cmbert pretrain --config configs/pretrain/phase1-1k.yaml optim.lr=5e-4\n"
                   "  on a node: torchrun --nproc_per_node 8 -m cmbert.pretrain.train --config ... (scripts/)",
        "help": "masked-LM pretraining with DeepSpeed (one process here; torchrun/deepspeed for more)",
    },
    ("export",): {
        "run": "cmbert.pretrain.export:export_checkpoint",
        "flags": {"ckpt": "checkpoint"},
        "show": "cmbert.pretrain.commands:format_export",
        "help": "a pretraining checkpoint (any ZeRO stage) -> a stock transformers modernbert folder",
    },
}


def build(out: str, mimic: str | None = None, pubmed: Sequence[str] = (), ontology: Sequence[str] = (),
          exclude_subjects: str | None = None, overwrite: bool = False, num_proc: int = DEFAULT_NUM_PROC) -> dict:
    """`cmbert.pretrain.corpus.build_corpus` with the command line's default of parallel readers.

    Args:
        out: the document store folder
        mimic: a MIMIC-IV root with note/discharge.csv.gz and/or note/radiology.csv.gz
        pubmed: PubMed baseline/update XML(.gz) files
        ontology: ontologies to render as text: icd10cm icd9cm icd9pcs icd10pcs
        exclude_subjects: a file of subject_ids (one per line) whose notes must never be pretrained on: the
            downstream validation and test patients
        overwrite: rebuild a store that already exists
        num_proc: processes reading input files in parallel (2, or 1 on a one-core machine); a killed build rerun
            with the same arguments resumes after the files it finished

    Example: cmbert corpus build --mimic runs/mimic --pubmed ~/.cache/cmbert/pubmed/*.xml.gz --ontology icd10cm
        icd9cm --exclude-subjects runs/icd/heldout_subjects.txt --out runs/corpus
    """
    from cmbert.pretrain.corpus import build_corpus

    return build_corpus(out, mimic=mimic, pubmed=pubmed, ontology=ontology, exclude_subjects=exclude_subjects,
                        overwrite=overwrite, num_proc=num_proc)


def pack(out: str, corpus: str | None = None, tokenizer: str | None = None, max_seq_len: int = 1024,
         num_proc: int = DEFAULT_NUM_PROC, weights: dict[str, float] | None = None, shard: tuple[int, int] = (0, 1),
         seed: int = 0, merge: bool = False) -> dict:
    """`cmbert.pretrain.packing.pack_corpus`, or with `merge` `merge_manifests` of a split run; returns the manifest.

    Args:
        corpus: a document store from `cmbert corpus build`
        tokenizer: a tokenizer folder (or tokenizer.json) from `cmbert tokenizer train`
        out: the shard folder
        max_seq_len: row length in tokens: 1k = 1,024, 8k = 8,192 for the long-context phase, or a number
        num_proc: tokenizer processes (2, or 1 on a one-core machine)
        weights: mixture weights recorded as the reader's default (default: each source's token share)
        shard: pack only part I of N of the store (default: 0/1, all of it): one machine of a split run, e.g.
            --shard $SLURM_ARRAY_TASK_ID/8 on each task of a SLURM array, then --merge --out DIR
        seed: the reader's default sampling seed
        merge: merge the N partial manifests of a split run in --out

    Example: cmbert corpus pack --corpus runs/corpus --tokenizer runs/tokenizer --max-seq-len 1k --out runs/shards-1k
    """
    from cmbert.core.errors import UserError
    from cmbert.pretrain.packing import merge_manifests, pack_corpus

    if merge:
        return merge_manifests(out)
    missing = [f"--{name}" for name, value in (("corpus", corpus), ("tokenizer", tokenizer)) if value is None]
    if missing:
        raise UserError(f"corpus pack needs {' and '.join(missing)} (or --merge)")
    return pack_corpus(corpus, tokenizer, out, max_seq_len=max_seq_len, num_proc=num_proc, weights=weights,
                       shard=shard, seed=seed)


def seq_len(text: str) -> int:
    """`--max-seq-len`: the presets 1k / 8k (ModernBERT's two pretraining phases) or a number of tokens."""
    presets = {"1k": 1024, "8k": 8192}
    try:
        return presets[text.lower()] if text.lower() in presets else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 1k, 8k or a number of tokens, got {text!r}") from None


def weights(text: str) -> dict[str, float]:
    """`--weights mimic_discharge=2,pubmed=1`: relative weights per source."""
    parsed = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        source, _, value = item.partition("=")
        try:
            parsed[source.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected SOURCE=WEIGHT[,SOURCE=WEIGHT...], got {item!r}") from None
    return parsed


def shard(text: str) -> tuple[int, int]:
    from cmbert.pretrain.packing import parse_shard

    try:
        return parse_shard(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


seq_len.metavar, weights.metavar, shard.metavar = "{1k,8k,N}", "SRC=W,...", "I/N"


def format_build(report: dict, out: str) -> str:
    lines = []
    for source, r in report["sources"].items():
        skipped = ", ".join(f"{k} {v:,}" for k, v in r["skipped"].items()) or "none"
        lines.append(f"{source}: read {r['read']:,}, kept {r['kept']:,}, skipped: {skipped}")
    return "\n".join([*lines, f"{report['documents']:,} documents in {out}/docs; report: {out}/report.json"])


def format_pack(manifest: dict, out: str) -> str:
    lines = [f"{source}: {s['tokens']:,} tokens in {s['rows']:,} rows, {100 * s['packing_efficiency']:.2f} % real"
             for source, s in manifest["sources"].items()]
    t = manifest["totals"]
    lines.append(f"total: {t['tokens']:,} tokens in {t['rows']:,} rows of {manifest['max_seq_len']:,}, "
                 f"{100 * t['packing_efficiency']:.2f} % real tokens")
    if manifest["shard"]["count"] > 1:
        i, n = manifest["shard"]["index"], manifest["shard"]["count"]
        lines.append(f"shard {i}/{n} done; when all {n} are, run: cmbert corpus pack --merge --out {out}")
    else:
        lines.append(f"manifest: {out}/manifest.json")
    return "\n".join(lines)


def format_tokenizer(report: dict, out: str) -> str:
    from cmbert.pretrain.tokenizer import format_tokenizer_report

    return f"{format_tokenizer_report(report)}\ntokenizer saved to {out}; report: {out}/tokenizer_report.json"


def format_export(folder: Path) -> str:
    return f"exported to {folder} (AutoModelForMaskedLM.from_pretrained loads it, no remote code)"
