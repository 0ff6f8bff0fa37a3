"""Shared helpers for the encoder tests: tiny ModernBERT configs, and our model beside transformers' on one set of
weights. Everything runs on CPU in fp32 and is built from configs (never from hub names)."""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on two cores: one OpenMP thread each (set before torch starts its pool; the
    # processes a test starts inherit it), or idle threads spin against the other worker's.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from transformers import ModernBertConfig

import cmbert.modeling

REPO = Path(__file__).resolve().parents[1]

# Special tokens sit at the bottom of the tiny vocabulary; ModernBertConfig's defaults (OLMo ids ~50k) would point
# outside it.
PAD, CLS, SEP = 0, 1, 2
VOCAB = 101


def tiny_config(**overrides) -> ModernBertConfig:
    """A ModernBERT small enough for 2 CPU cores. Overrides go straight to ModernBertConfig (so the transformers 4.x
    spellings global_attn_every_n_layers / global_rope_theta / local_rope_theta work too)."""
    values = dict(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=2,
        local_attention=8, max_position_embeddings=512,
        pad_token_id=PAD, cls_token_id=CLS, sep_token_id=SEP, bos_token_id=CLS, eos_token_id=SEP,
    )
    values.update(overrides)
    return ModernBertConfig(**values)


def save_tiny_encoder(folder: Path, tokenizer_folder: Path) -> Path:
    """A randomly initialised 2-layer width-32 ModernBERT MLM folder with a real tokenizer (its special-token ids in
    the config), the encoder the fine-tuning tests train on."""
    from transformers import AutoTokenizer

    from cmbert.core.tokenizer_files import save_tokenizer
    from cmbert.modeling import ModernBertForMaskedLM, set_special_token_ids
    from cmbert.pretrain.tokenizer import padded_vocab_size

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    config = ModernBertConfig(vocab_size=padded_vocab_size(len(tokenizer)), hidden_size=32, intermediate_size=48,
                              num_hidden_layers=2, num_attention_heads=2, local_attention=16,
                              max_position_embeddings=128, global_attn_every_n_layers=2)
    set_special_token_ids(config, tokenizer)
    torch.manual_seed(0)
    ModernBertForMaskedLM(config).save_pretrained(folder)
    save_tokenizer(tokenizer, folder)
    return folder


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter O(1)-scale random values. At init scale (std 0.02) attention is nearly uniform, which
    would hide a wrong rotary position or a wrong window; these weights make attention sharp."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=gen)
        if p.dim() >= 2:
            p.copy_(noise * p.shape[-1] ** -0.5)
        elif name.endswith("weight"):  # norm scales
            p.copy_(1.0 + 0.1 * noise)
        else:
            p.copy_(0.1 * noise)
    return model


def build_pair(config: ModernBertConfig, ours_cls=cmbert.modeling.ModernBertForMaskedLM,
               theirs_cls=transformers.ModernBertForMaskedLM, attn_implementation: str = "sdpa", seed: int = 0):
    """Our model with random weights, and the transformers class of the same name holding exactly those weights."""
    ours = randomize_(ours_cls(copy.deepcopy(config)), seed).eval()
    theirs = theirs_cls._from_config(copy.deepcopy(config), attn_implementation=attn_implementation).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs


def padded_batch(lengths, side: str = "right", seq_len: int | None = None, seed: int = 0):
    """Random token ids [B, S] (no special ids) padded with PAD on `side`, and the matching attention mask."""
    seq_len = seq_len or max(lengths)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.full((len(lengths), seq_len), PAD, dtype=torch.long)
    mask = torch.zeros(len(lengths), seq_len, dtype=torch.long)
    for row, n in enumerate(lengths):
        span = slice(0, n) if side == "right" else slice(seq_len - n, seq_len)
        ids[row, span] = torch.randint(3, VOCAB, (n,), generator=gen)
        mask[row, span] = 1
    return ids, mask


@pytest.fixture(scope="session")
def installed_package(tmp_path_factory) -> Path:
    """The project as a user installs it: the wheel `pip wheel .` builds, installed with `pip install --target` into
    a folder outside the checkout (its console script in `<folder>/bin`). Console-script tests run this copy, so a
    module or preset missing from the distribution fails them (tests/test_wheel.py checks the wheel's contents)."""
    root = tmp_path_factory.mktemp("installed")
    wheels, target, source = root / "wheels", root / "site", root / "source"
    # Built from a copy: setuptools builds in the source tree (build/), which parallel test workers would share, and a
    # stale build/lib there could ship a module the checkout no longer has.
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "build", "*.egg-info",
                                                                 "__pycache__", ".pytest_cache", ".ruff_cache"))
    # --no-build-isolation: build with this venv's setuptools (no registry needed).
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(wheels), str(source)], check=True, capture_output=True, cwd=root)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-compile",
                    "--target", str(target), *map(str, wheels.glob("*.whl"))], check=True, capture_output=True,
                   cwd=root)
    return target


@pytest.fixture(scope="session")
def cmbert(installed_package):
    """Run the installed `cmbert` console script (what the README's commands run): `cmbert(*args, cwd=...)` returns
    the CompletedProcess with text stdout/stderr. Offline, and never a debug traceback."""
    command = [str(installed_package / "bin" / "cmbert")]
    env = {k: v for k, v in os.environ.items() if k != "CMBERT_DEBUG"}
    # The installed copy first on the path: the editable install's finder comes after it, so nothing of the checkout
    # is imported (torchrun / DeepSpeed workers inherit this).
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join(filter(None, [str(installed_package), env.get("PYTHONPATH")])))

    def run(*args, cwd=None, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([*command, *map(str, args)], cwd=cwd or REPO, env=env, capture_output=True, text=True,
                              timeout=timeout)

    return run


@pytest.fixture
def cli(capsys):
    """`cli(*args)`: the command line run in this process, as `cmbert.cli.main` (the console script's function: the
    same parsing, command and output; no torch start per call). Returns a CompletedProcess with the exit status and
    what it printed. The installed console script itself is `cmbert`'s (tests/test_wheel.py, tests/test_cli.py)."""
    from cmbert.cli import main

    def run(*args) -> subprocess.CompletedProcess:
        capsys.readouterr()
        try:
            main([*map(str, args)])
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["cmbert", *map(str, args)], code, out, err)

    return run


@pytest.fixture
def cli_error(cli):
    """`cli_error(*args)`: `cli` for a command that must fail as a user error; returns its stderr after checking the
    exit status is 2."""

    def run(*args) -> str:
        proc = cli(*args)
        assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
        return proc.stderr

    return run


@pytest.fixture(scope="session")
def small_shards(tmp_path_factory) -> Path:
    """Packed 128-token shards of a 12-patient synthetic MIMIC tree + ICD-9-PCS text, with their 512-token
    tokenizer: `<dir>/shards`, `<dir>/tokenizer` (what the pretraining and launcher tests train on)."""
    from cmbert.data.synth import synthesize_mimic
    from cmbert.pretrain.corpus import build_corpus
    from cmbert.pretrain.packing import pack_corpus
    from cmbert.pretrain.tokenizer import train_tokenizer_from_store

    work = tmp_path_factory.mktemp("small-shards")
    synthesize_mimic(work / "mimic", patients=12, seed=0)
    build_corpus(work / "corpus", mimic=work / "mimic", ontology=["icd9pcs"], progress=False)
    train_tokenizer_from_store(work / "corpus", work / "tokenizer", vocab_size=512, model_max_length=256,
                               progress=False)
    pack_corpus(work / "corpus", work / "tokenizer", work / "shards", max_seq_len=128, progress=False)
    return work


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster on one thread, and far faster when the CPU is shared: two OpenMP threads on a busy
    2-core machine wait a scheduler slice per op (measured 100x slower). Restored for other modules."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    """`gpu` tests skip cleanly without CUDA, `flash_attn` tests without the flash-attn package (e.g. `pytest -m gpu`
    on a CPU machine), instead of failing on the first .cuda()."""
    import importlib.util

    no_cuda = pytest.mark.skip(reason="needs a CUDA device")
    no_flash = pytest.mark.skip(reason="needs flash-attn (pip install -e '.[gpu]' --no-build-isolation)")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_cuda)
        if "flash_attn" in item.keywords and importlib.util.find_spec("flash_attn") is None:
            item.add_marker(no_flash)


# --- transformers 4.x: our exports must load there too (tests/test_transformers_v4.py, tests/test_qa.py)

# torch first and pinned: it resolves to the local CPU wheel; an unpinned torch would pull a multi-GB CUDA build.
V4_REQUIREMENTS = (("torch==2.13.0",), ("transformers==4.57.6", "torch==2.13.0"))
V4_VERSION = "4.57.6"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _pip_failure(cmd: list[str], proc: subprocess.CompletedProcess) -> str:
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
    return f"cannot build the transformers {V4_VERSION} venv: `{' '.join(cmd)}` exited {proc.returncode}:\n{tail}"


@pytest.fixture(scope="session")
def v4_python() -> Path:
    """The python of a venv with transformers 4.57.6 (built on first use, then reused)."""
    venv = Path(os.environ.get("CMBERT_V4_VENV") or Path.home() / ".cache" / "cmbert-test-venvs" / "tf457")
    python = venv / "bin" / "python"
    stamp = venv / ".cmbert-ready"
    wanted = json.dumps(V4_REQUIREMENTS)
    if stamp.exists() and stamp.read_text() == wanted and python.exists():
        return python
    shutil.rmtree(venv, ignore_errors=True)  # a half-built venv from an interrupted run
    venv.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    steps = [[sys.executable, "-m", "venv", str(venv)]]
    steps += [[str(python), "-m", "pip", "install", "--quiet", *reqs] for reqs in V4_REQUIREMENTS]
    for cmd in steps:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
        except (OSError, subprocess.TimeoutExpired) as err:
            pytest.skip(f"cannot build the transformers {V4_VERSION} venv: `{' '.join(cmd)}`: {err}")
        if proc.returncode != 0:
            pytest.skip(_pip_failure(cmd, proc))
    check = subprocess.run([str(python), "-c", "import transformers; print(transformers.__version__)"],
                           capture_output=True, text=True, env={**os.environ, **OFFLINE})
    if check.stdout.strip() != V4_VERSION:
        pytest.skip(f"the venv at {venv} has transformers {check.stdout.strip()!r}, not {V4_VERSION}: {check.stderr}")
    stamp.write_text(wanted)
    return python
