"""The distribution: `pip wheel .` puts exactly one top-level package, `cmbert`, into site-packages, with every module
of the mapped source folders and every preset of configs/ (once each); the installed copy runs from outside the
checkout (`cmbert --help`, and `cmbert demo` at a tiny budget, which reads its presets from the package)."""

from __future__ import annotations

import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = {"cmbert": "cmbert", "modeling": "cmbert/modeling", "pretrain": "cmbert/pretrain",
           "finetune": "cmbert/finetune", "configs": "cmbert/configs"}
PRESET_SUFFIXES = {".yaml", ".json", ".toml", ".py"}


def wheel_names(installed_package: Path) -> set[str]:
    """The files of the wheel the installed_package fixture built (from its RECORD: path,hash,size lines)."""
    record = next(installed_package.glob("clinical_modernbert-*.dist-info")) / "RECORD"
    return {line.split(",")[0] for line in record.read_text().splitlines() if line}


def expected_files() -> set[str]:
    files = set()
    for folder, installed in SOURCES.items():
        for path in (REPO / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and (
                    path.suffix == ".py" or (folder == "configs" and path.suffix in PRESET_SUFFIXES)):
                files.add(f"{installed}/{path.relative_to(REPO / folder).as_posix()}")
    return files


def test_wheel_installs_one_top_level_package_with_every_module_and_preset(installed_package):
    names = wheel_names(installed_package)
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info") and not n.startswith("../")}
    assert top == {"cmbert"}, top
    missing = sorted(expected_files() - names)
    assert not missing, f"not in the wheel (pyproject.toml [tool.setuptools] packages / package-data): {missing}"
    presets = [n for n in names if n.startswith("cmbert/configs/") and n.endswith(".yaml")]
    assert "cmbert/configs/demo.yaml" in presets and len(presets) == len(set(presets))
    entry_points = (next(installed_package.glob("clinical_modernbert-*.dist-info")) / "entry_points.txt").read_text()
    assert "cmbert = cmbert.cli:main" in entry_points


def test_installed_cmbert_runs_from_outside_the_checkout(cmbert, installed_package, tmp_path):
    proc = cmbert("--help", cwd=tmp_path)
    assert proc.returncode == 0 and "finetune" in proc.stdout, proc.stderr
    # The wheel's own copy answers, not the checkout's (its presets too).
    proc = cmbert("demo", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert zipfile.is_zipfile(next((installed_package.parent / "wheels").glob("*.whl")))
