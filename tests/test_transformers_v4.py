"""Our exports load *correctly* in transformers 4.57, not only in 5.x (docs/ARCHITECTURE.md, "v4 and v5 exports").

transformers 4.48-4.57 read `global_rope_theta` / `local_rope_theta` / `global_attn_every_n_layers` and silently use
their defaults when a key is absent, so a v5-only config.json with non-default RoPE thetas loads with no warning and
wrong outputs. This test exports a model with non-default thetas, a 2-layer global pattern and a window shorter than
the input, runs it in a separate venv with transformers 4.57.6 (sdpa and eager), and compares logits with ours. The
tokenizer saved beside it must load in 4.57 too and give the same ids. It also shows the failure the extra keys
prevent: the same folder without them loads in 4.57 and gives other logits.

The venv is created once (a few minutes) and cached in `$CMBERT_V4_VENV` or ~/.cache/cmbert-test-venvs/tf457.
Where it cannot be built (no pip index, no venv module), the test skips and says why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import OFFLINE, V4_VERSION, randomize_
from transformers import ModernBertConfig

from cmbert.core.tokenizer_files import save_tokenizer
from cmbert.data.readers import read_mimic_notes
from cmbert.data.synth import synthesize_mimic
from cmbert.modeling import ModernBertForMaskedLM, set_special_token_ids
from cmbert.pretrain.tokenizer import padded_vocab_size, train_tokenizer

pytestmark = pytest.mark.slow

TOLERANCE = 1e-4
TEXTS = [
    "The patient was admitted with chest pain and was started on aspirin and heparin.",
    "Blood cultures were negative.",
    "She was discharged home in stable condition with follow up in two weeks.",
]

# Runs inside the 4.57 venv: load the folder with each attention implementation and save logits + loading info.
V4_SCRIPT = """
import sys, torch, transformers
from transformers import AutoModelForMaskedLM
folder, inputs_path, out_path = sys.argv[1:4]
batch = torch.load(inputs_path)
tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
encoded = tokenizer(batch["texts"], padding=True, return_tensors="pt")
result = {"version": transformers.__version__, "tokenizer": type(tokenizer).__name__,
          "input_ids": encoded["input_ids"], "input_names": sorted(encoded)}
for impl in ("sdpa", "eager"):
    model, info = AutoModelForMaskedLM.from_pretrained(folder, attn_implementation=impl, output_loading_info=True)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    cfg = model.config
    result[impl] = {
        "logits": logits,
        "class": type(model).__module__ + "." + type(model).__name__,
        "info": {k: [str(x) for x in v] for k, v in info.items()},
        "config": [cfg.global_rope_theta, cfg.local_rope_theta, cfg.global_attn_every_n_layers, cfg.local_attention],
    }
torch.save(result, out_path)
"""




@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A model with everything a v4 reader must get right, exported with its tokenizer, and our logits."""
    mimic = tmp_path_factory.mktemp("mimic")
    synthesize_mimic(mimic, patients=20, seed=0)
    notes = [note.text for note in read_mimic_notes(mimic / "note" / "discharge.csv.gz")]
    tokenizer = train_tokenizer(notes, vocab_size=320, model_max_length=128)
    config = ModernBertConfig(
        vocab_size=padded_vocab_size(len(tokenizer)), hidden_size=64, intermediate_size=96, num_hidden_layers=5,
        num_attention_heads=4,
        global_attn_every_n_layers=2,  # layers 0, 2, 4 global (transformers' default is 3)
        local_attention=8,  # +-4 tokens, far shorter than the rows below
        max_position_embeddings=128,
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 80_000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 2_000.0}},
        **dict.fromkeys(("pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id")),
    )
    set_special_token_ids(config, tokenizer)
    # O(1)-scale weights: attention is far from uniform, so a wrong RoPE theta visibly changes the output.
    model = randomize_(ModernBertForMaskedLM(config)).eval()

    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")  # right-padded rows of different lengths
    assert batch["attention_mask"].sum(1).min() > 2 * config.local_attention
    with torch.no_grad():
        ours = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    root = tmp_path_factory.mktemp("v4")
    folder = root / "model"
    model.save_pretrained(folder)
    save_tokenizer(tokenizer, folder)
    inputs = root / "inputs.pt"
    torch.save({"texts": TEXTS, "input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}, inputs)
    return folder, inputs, ours, batch["attention_mask"].bool()


def run_in_v4(python: Path, folder: Path, inputs: Path) -> dict:
    script = folder.parent / "run_v4.py"
    script.write_text(V4_SCRIPT)
    out = folder.parent / f"{folder.name}-v4-logits.pt"
    proc = subprocess.run([str(python), str(script), str(folder), str(inputs), str(out)], capture_output=True,
                          text=True, env={**os.environ, **OFFLINE}, timeout=600)
    assert proc.returncode == 0, f"transformers {V4_VERSION} could not run the export:\n{proc.stderr[-4000:]}"
    return torch.load(out)


def test_export_writes_the_v4_keys(export):
    folder, *_ = export
    config = json.loads((folder / "config.json").read_text())
    assert config["global_rope_theta"] == 80_000.0 and config["local_rope_theta"] == 2_000.0
    assert config["global_attn_every_n_layers"] == 2 and config["local_attention"] == 8
    assert "min_transformers_version" not in config  # this config is expressible in 4.x


def test_v4_loads_export_with_same_logits(v4_python, export):
    folder, inputs, ours, real = export
    result = run_in_v4(v4_python, folder, inputs)
    assert result["version"] == V4_VERSION
    assert result["tokenizer"] == "PreTrainedTokenizerFast"  # not v5's TokenizersBackend, unknown to 4.x
    assert result["input_names"] == ["attention_mask", "input_ids"]
    assert torch.equal(result["input_ids"], torch.load(inputs)["input_ids"])
    for impl in ("sdpa", "eager"):
        run = result[impl]
        assert run["class"] == "transformers.models.modernbert.modeling_modernbert.ModernBertForMaskedLM"
        assert not any(run["info"].values()), f"{impl}: key mismatch in transformers {V4_VERSION}: {run['info']}"
        assert run["config"] == [80_000.0, 2_000.0, 2, 8]
        diff = (run["logits"][real] - ours[real]).abs().max().item()
        assert diff <= TOLERANCE, f"{impl}: max |logit difference| {diff:.2e} on real tokens (tolerance {TOLERANCE})"


def test_v4_without_the_v4_keys_gives_different_logits(v4_python, export):
    """Why the keys are written: 4.57 reads a v5-only config without complaint and falls back to its default
    thetas (160k / 10k), so the same weights give other outputs."""
    folder, inputs, ours, real = export
    v5_only = folder.parent / "model-v5-keys-only"
    shutil.copytree(folder, v5_only)
    config = json.loads((v5_only / "config.json").read_text())
    del config["global_rope_theta"], config["local_rope_theta"]
    (v5_only / "config.json").write_text(json.dumps(config, indent=2))

    result = run_in_v4(v4_python, v5_only, inputs)
    for impl in ("sdpa", "eager"):
        run = result[impl]
        assert not any(run["info"].values())  # it loads "fine": nothing warns the user
        assert run["config"][:2] == [160_000.0, 10_000.0]
        diff = (run["logits"][real] - ours[real]).abs().max().item()
        assert diff > 100 * TOLERANCE, f"{impl}: without the v4 keys the logits still match ({diff:.2e})"
