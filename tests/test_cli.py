"""Every data command end to end through the installed `cmbert` script, as the README runs them: synth -> corpus build
-> tokenizer train -> corpus pack (whole, and split in two then merged), then bad input: one line on stderr, exit 2.
(`cmbert demo` has its own module, tests/test_demo.py; `cmbert data fetch` runs in `make setup` and
tests/test_readers.py.) Then the command tables themselves (cmbert/cli.py): every command's --help and example, the
error contract (a UserError is one line and exit 2, anything else keeps its traceback), and the typed configs of the
flag commands (preset, flags and overrides, the resolved config recorded in OUT)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import transformers

from cmbert.pretrain.packed_dataset import PackedDataset


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, cmbert):
    """Runs the commands once for the module; returns the work folder and each command's stdout."""
    work = tmp_path_factory.mktemp("cli")
    out = {}

    def ok(name, *args):
        proc = cmbert(*args, cwd=work)
        assert proc.returncode == 0, f"cmbert {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}"
        out[name] = proc.stdout

    (work / "heldout_subjects.txt").write_text("")  # filled below from the tree: one patient's notes held out
    ok("synth", "data", "synth", "--out", "mimic", "--patients", 30, "--seed", 1)
    with gzip.open(work / "mimic" / "hosp" / "patients.csv.gz", "rt") as f:
        heldout = f.read().splitlines()[1].split(",")[0]
    (work / "heldout_subjects.txt").write_text(heldout + "\n")
    ok("build", "corpus", "build", "--mimic", "mimic", "--ontology", "icd9pcs", "--exclude-subjects",
       "heldout_subjects.txt", "--out", "corpus")
    ok("tokenizer", "tokenizer", "train", "--corpus", "corpus", "--out", "tokenizer", "--vocab-size", 1024)
    ok("pack", "corpus", "pack", "--corpus", "corpus", "--tokenizer", "tokenizer", "--out", "shards",
       "--max-seq-len", 512, "--weights", "mimic_discharge=2,icd9pcs=1", "--num-proc", 2)
    for i in range(2):
        ok(f"pack{i}", "corpus", "pack", "--corpus", "corpus", "--tokenizer", "tokenizer", "--out", "split",
           "--max-seq-len", 512, "--shard", f"{i}/2", "--num-proc", 1)
    ok("merge", "corpus", "pack", "--merge", "--out", "split")
    return work, out, int(heldout)


def test_synth_prints_its_summary_and_writes_the_tree(pipeline):
    work, out, _ = pipeline
    summary = json.loads(out["synth"])
    assert summary["patients"] == 30 and summary["discharge_notes"] > 0
    assert {p.name for p in (work / "mimic" / "hosp").iterdir()} >= {
        "patients.csv.gz", "admissions.csv.gz", "diagnoses_icd.csv.gz", "procedures_icd.csv.gz",
        "d_icd_diagnoses.csv.gz", "d_icd_procedures.csv.gz"}
    assert {p.name for p in (work / "mimic" / "note").iterdir()} == {"discharge.csv.gz", "radiology.csv.gz"}


def test_corpus_build_reports_every_source_and_excludes_held_out_patients(pipeline):
    work, out, heldout = pipeline
    report = json.loads((work / "corpus" / "report.json").read_text())
    assert set(report["sources"]) == {"mimic_discharge", "mimic_radiology", "icd9pcs"}
    for source, r in report["sources"].items():
        assert r["read"] == r["kept"] + sum(r["skipped"].values()), source
        assert f"{source}: read {r['read']:,}, kept {r['kept']:,}" in out["build"]
    assert report["excluded_subjects"] == 1
    assert report["sources"]["mimic_discharge"]["skipped"].get("excluded_subject", 0) > 0
    for part in (work / "corpus" / "docs").glob("mimic_*/*.jsonl.gz"):
        with gzip.open(part, "rt") as f:
            assert all(json.loads(line).get("subject_id") != heldout for line in f)


def test_tokenizer_train_saves_an_autotokenizer_folder_and_its_report(pipeline):
    work, out, _ = pipeline
    tokenizer = transformers.AutoTokenizer.from_pretrained(work / "tokenizer")
    assert len(tokenizer) % 64 == 0 and len(tokenizer) == 1024
    assert tokenizer.convert_ids_to_tokens(tokenizer("Dr. ___ saw him")["input_ids"]).count(" ___") == 1
    report = json.loads((work / "tokenizer" / "tokenizer_report.json").read_text())
    assert set(report["sources"]) <= {"mimic_discharge", "mimic_radiology", "icd9pcs"}
    assert "ours / general" in out["tokenizer"]


def test_corpus_pack_writes_shards_a_reader_can_train_on(pipeline):
    work, out, _ = pipeline
    manifest = json.loads((work / "shards" / "manifest.json").read_text())
    assert manifest["max_seq_len"] == 512
    weights = {name: source["weight"] for name, source in manifest["sources"].items()}
    assert weights["mimic_discharge"] == pytest.approx(2 * weights["icd9pcs"])  # radiology keeps its token share
    assert sum(weights.values()) == pytest.approx(1)
    assert manifest["totals"]["packing_efficiency"] > 0.9
    assert "real tokens" in out["pack"] and "manifest:" in out["pack"]
    data = PackedDataset(work / "shards", seed=0)
    row = data.row(0)
    assert len(row["input_ids"]) <= 512


def test_split_pack_merges_to_the_same_documents_and_tokens(pipeline):
    work, out, _ = pipeline
    whole = json.loads((work / "shards" / "manifest.json").read_text())
    merged = json.loads((work / "split" / "manifest.json").read_text())
    assert "run: cmbert corpus pack --merge" in out["pack0"]
    for key in ("documents", "pieces", "tokens"):
        assert merged["totals"][key] == whole["totals"][key], key
    tokens = sorted(Path(work / "split").glob("*/*.tokens.npy"))
    assert any("-of-002-" in p.name for p in tokens)
    assert sum(len(np.load(p, mmap_mode="r")) for p in tokens) == whole["totals"]["tokens"]


@pytest.mark.parametrize("args, message", [
    (["corpus", "build", "--mimic", "no-such-dir", "--out", "c"], "no-such-dir"),
    (["corpus", "pack", "--corpus", "corpus", "--out", "x"], "needs --tokenizer"),
    (["corpus", "pack", "--corpus", "corpus", "--tokenizer", "tokenizer", "--out", "x", "--weights", "nope=1"],
     "unknown source(s) nope"),
    (["corpus", "pack", "--merge", "--out", "corpus"], "no partial manifests"),
    (["tokenizer", "train", "--corpus", "mimic", "--out", "t2"], "mimic"),
    (["data", "synth", "--out", "m2", "--patients", "0"], "patients must be between 1"),
])
def test_bad_input_is_one_line_and_exit_2(pipeline, cmbert, args, message):
    work, _, _ = pipeline
    proc = cmbert(*args, cwd=work)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("cmbert: error: ") and message in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args", [["--max-seq-len", "2q"], ["--shard", "2/2"], ["--weights", "pubmed"]])
def test_bad_option_values_are_usage_errors(pipeline, cmbert, args):
    work, _, _ = pipeline
    proc = cmbert("corpus", "pack", "--corpus", "corpus", "--tokenizer", "tokenizer", "--out", "x", *args, cwd=work)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("cmbert corpus pack: error: argument ")


# --- the command tables: every command's --help, the error contract, and the typed configs of the flag commands


def _commands():
    from cmbert.cli import tables

    return tables()[0]


def test_every_command_has_help_with_an_example_and_its_table_resolves(capsys):
    from cmbert.cli import main, resolve

    commands = _commands()
    assert len(commands) >= 29
    for path, spec in commands.items():
        for key in ("run", "show", "config", "fields", *(f"types.{k}" for k in spec.get("types", {}))):
            ref = spec["types"][key[6:]] if key.startswith("types.") else spec.get(key)
            if ref is not None:
                assert callable(resolve(ref)), (path, key, ref)
        with pytest.raises(SystemExit) as exit_info:
            main([*path, "--help"])
        out = capsys.readouterr().out
        assert exit_info.value.code == 0, path
        assert f"usage: cmbert {' '.join(path)}" in out and "Example: cmbert " in out, (path, out)


def test_top_level_help_lists_commands_without_loading_torch(cmbert):
    code = ("import sys\nfrom cmbert.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch loaded' if 'torch' in sys.modules else 'no torch')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().endswith("no torch"), proc.stdout + proc.stderr
    assert all(noun in proc.stdout for noun in ("demo", "corpus", "finetune", "predict", "embed", "audit", "bhc"))
    shown = cmbert("finetune", "--help")
    assert shown.returncode == 0 and "icd" in shown.stdout and "sweep" in shown.stdout
    wrong = cmbert("finetune", "nope")
    assert wrong.returncode == 2 and "invalid choice: 'nope'" in wrong.stderr


def test_a_user_error_is_one_line_and_exit_2_and_a_bug_keeps_its_traceback(tmp_path, capsys, monkeypatch):
    from cmbert.cli import main

    monkeypatch.delenv("CMBERT_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:  # a missing required key of a typed config: a ConfigError
        main(["audit", "robustness", "--model", str(tmp_path), "--out", str(tmp_path / "a")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == ["cmbert: error: mimic: required (--mimic DIR or mimic=DIR)"]

    with pytest.raises(SystemExit) as exit_info:  # a missing input raised by the library: a MissingInput
        main(["finetune", "icd", "prepare", "--mimic", str(tmp_path / "none"), "--version", "10", "--out",
              str(tmp_path / "icd")])
    assert exit_info.value.code == 2 and "no such folder" in capsys.readouterr().err

    def broken(*args, **kwargs):
        raise ValueError("a bug, not the user's input")

    monkeypatch.setattr("cmbert.data.synth.known_codes", broken)  # deep inside `cmbert data synth`
    with pytest.raises(ValueError, match="a bug") as raised:  # any other exception propagates: its traceback shows
        main(["data", "synth", "--out", str(tmp_path / "m")])
    assert type(raised.value) is ValueError

    monkeypatch.setenv("CMBERT_DEBUG", "1")
    from cmbert.core.errors import UserError

    with pytest.raises(UserError):  # CMBERT_DEBUG=1: the user error's traceback too
        main(["audit", "robustness", "--out", str(tmp_path / "a")])


def test_the_error_types_stay_what_callers_caught_before():
    from cmbert.core.config import ConfigError
    from cmbert.core.errors import MissingInput, OutputInTheWay, UserError
    from cmbert.core.io import ReadError
    from cmbert.data.wheel_data import FetchError

    assert all(issubclass(c, UserError) and issubclass(c, ValueError) for c in (ConfigError, ReadError, FetchError))
    assert issubclass(MissingInput, FileNotFoundError) and issubclass(OutputInTheWay, FileExistsError)
    assert issubclass(FetchError, RuntimeError)


# command, its config module's dataclass, the preset, and where `run` is patched
TYPED = {
    ("audit", "robustness"): ("cmbert.finetune.robustness.config:AuditConfig", "audit/robustness.yaml",
                              "cmbert.finetune.robustness.audit.audit_from_config"),
    ("bhc", "prepare"): ("cmbert.finetune.bhc.config:BhcPrepareConfig", "bhc/prepare.yaml",
                         "cmbert.finetune.bhc.prepare.prepare_from_config"),
    ("bhc", "summarize"): ("cmbert.finetune.bhc.config:BhcSummarizeConfig", "bhc/summarize.yaml",
                           "cmbert.finetune.bhc.summarize.summarize_from_config"),
    ("bhc", "evaluate"): ("cmbert.finetune.bhc.config:BhcEvaluateConfig", "bhc/evaluate.yaml",
                          "cmbert.finetune.bhc.evaluate.evaluate_from_config"),
    ("predict", "qa"): ("cmbert.finetune.qa.config:QaPredictConfig", "predict/qa.yaml",
                        "cmbert.finetune.qa.predict.predict_from_config"),
    ("embed",): ("cmbert.embed:EmbedConfig", "embed.yaml", "cmbert.embed.embed_from_config"),
}


@pytest.mark.parametrize("path", list(TYPED), ids=" ".join)
def test_each_preset_holds_its_configs_defaults(path):
    import dataclasses

    import yaml

    from cmbert.cli import resolve
    from cmbert.core.config import CONFIG_DIR

    cls, preset, _ = TYPED[path]
    cls = resolve(cls)
    assert _commands()[path]["preset"] == f"configs/{preset}"
    assert yaml.safe_load((CONFIG_DIR / preset).read_text()) == dataclasses.asdict(cls())


def test_typed_config_defaults_match_the_library_functions():
    import dataclasses
    import inspect

    from cmbert.embed import EmbedConfig, embed_file
    from cmbert.finetune.bhc.config import BhcPrepareConfig, BhcSummarizeConfig
    from cmbert.finetune.bhc.prepare import CleaningRules, prepare_bhc_dataset
    from cmbert.finetune.bhc.summarize import summarize
    from cmbert.finetune.qa.config import QaPredictConfig
    from cmbert.finetune.qa.predict import predict_file
    from cmbert.finetune.robustness.audit import run_audit
    from cmbert.finetune.robustness.config import AuditConfig

    renamed = {"cache": "cache_dir", "batch_tokens": "tokens_per_batch", "format": "input_format"}
    for cls, functions in ((AuditConfig, [run_audit]), (EmbedConfig, [embed_file]),
                           (BhcSummarizeConfig, [summarize]), (QaPredictConfig, [predict_file]),
                           (BhcPrepareConfig, [prepare_bhc_dataset, CleaningRules])):
        defaults = {}
        for function in functions:
            defaults |= {name: p.default for name, p in inspect.signature(function).parameters.items()
                         if p.default is not inspect.Parameter.empty}
        for field in dataclasses.fields(cls):
            value = dataclasses.asdict(cls())[field.name]
            name = renamed.get(field.name, field.name)
            if name in defaults and defaults[name] is not None:
                expected = list(defaults[name]) if isinstance(defaults[name], tuple) else defaults[name]
                assert value == expected, (cls.__name__, field.name, value, expected)


@pytest.mark.parametrize("path", list(TYPED), ids=" ".join)
def test_typed_command_from_a_preset_with_flags_and_overrides_records_its_config(path, tmp_path, monkeypatch, capsys):
    """--config FILE < flags < key=value; the resolved config is written to OUT (and reruns the same); a bad key or
    value is one line naming the key."""
    import dataclasses

    import yaml

    from cmbert.cli import main, resolve

    file_output = path in (("predict", "qa"), ("embed",))
    seen = []

    def run(cfg):
        seen.append(cfg)
        out = Path(cfg.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("") if file_output else out.mkdir(exist_ok=True)

    monkeypatch.setattr(TYPED[path][2], run)
    monkeypatch.setattr(_commands()[path]["show"].replace(":", "."), lambda result: None)
    fields = {f.name for f in dataclasses.fields(resolve(TYPED[path][0]))}
    needs = {"mimic": "m", "model": "enc", "data": "d", "method": "lead", "input": "q.json"}
    number = next(k for k in ("seed", "batch_size", "max_tokens") if k in fields)
    mine = {**{k: v for k, v in needs.items() if k in fields}, number: 7, "out": str(tmp_path / "ignored")}
    config = tmp_path / "mine.yaml"
    config.write_text(yaml.safe_dump(mine))
    out = tmp_path / ("answers.jsonl" if file_output else "out")
    main([*path, "--config", str(config), "--out", str(out), f"--{number.replace('_', '-')}", "8", f"{number}=9"])
    cfg = seen[-1]
    assert cfg.out == str(out) and getattr(cfg, number) == 9  # the override beats the flag, the flag the file
    assert all(getattr(cfg, key) == value for key, value in mine.items() if key not in (number, "out"))
    recorded = Path(f"{out}.config.yaml") if file_output else out / "config.yaml"
    assert yaml.safe_load(recorded.read_text()) == dataclasses.asdict(cfg)
    if not file_output:
        assert "git_sha" in json.loads((out / "provenance.json").read_text())
    main([*path, "--config", str(recorded)])  # the recorded config reruns the same settings
    assert seen[-1] == cfg

    with pytest.raises(SystemExit) as exit_info:
        main([*path, "--config", str(recorded), "no_such_key=1"])
    assert exit_info.value.code == 2 and "unknown key no_such_key" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*path, "--config", str(recorded), f"{number}=many"])
    assert capsys.readouterr().err.strip().splitlines() == [f"cmbert: error: {number}: expected an integer, got 'many'"]
