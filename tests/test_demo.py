"""`cmbert demo` end to end, and the tokenizer it trains.

The demo runs once per module through the installed console script (what `make demo` runs); the checks then read its
export with plain transformers, as a user would.
"""

from __future__ import annotations

import json

import pytest
import transformers

from cmbert.core.tokenizer_files import save_tokenizer
from cmbert.pretrain.tokenizer import SPECIAL_TOKENS, padded_vocab_size, train_tokenizer

PROMPT = "The patient was admitted with chest [MASK]."


# The demo's path at a smaller budget (configs/demo.yaml holds the full one that `make demo` runs).
SMALL = ["patients=60", "pretrain.schedule.max_steps=120", "pretrain.schedule.warmup_steps=20",
         "pretrain.schedule.decay_steps=40", "pretrain.schedule.batch_warmup_steps=20",
         "pretrain.logging.eval_every_steps=60", "pretrain.checkpoint.every_steps=60", "icd.min_count=3",
         "icd.overrides=[train.epochs=2,train.head_warmup_epochs=1,model.max_chunks=4,eval.bootstrap_resamples=50]",
         "trajectory.overrides=[train.epochs=2,model.hidden_size=16,model.layers=1,model.heads=2,"
         "bootstrap_resamples=20]"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, cmbert):
    out = tmp_path_factory.mktemp("demo")
    # From a folder outside the checkout: the installed package finds its presets (configs/demo.yaml) itself.
    proc = cmbert("demo", "--out", out, *SMALL, cwd=tmp_path_factory.mktemp("elsewhere"))
    assert proc.returncode == 0, f"cmbert demo failed:\n{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}"
    return out, proc.stdout, json.loads((out / "summary.json").read_text())


def test_demo_mlm_learns(demo_run):
    _, stdout, summary = demo_run
    held = summary["heldout"]
    assert held["loss_after"] < held["loss_before"] - 2.0, held
    assert held["accuracy_after"] > held["accuracy_before"] + 0.1, held
    assert summary["loss"]["end"] < summary["loss"]["start"] and summary["steps"] == 120
    assert "held-out MLM loss" in stdout and "Tokens per source" in stdout


def test_demo_trained_with_deepspeed_in_two_processes(demo_run):
    out, _, _ = demo_run
    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 2 and run["config"]["distributed"]["zero"] == "zero0"
    assert (out / "loss.png").stat().st_size > 1000
    assert list((out / "ckpt").glob("step-*/cmbert_complete.json"))


def test_demo_export_loads_in_transformers_with_no_key_mismatch(demo_run):
    out, _, _ = demo_run
    model, info = transformers.AutoModelForMaskedLM.from_pretrained(out / "model", output_loading_info=True)
    assert type(model).__module__.startswith("transformers."), type(model)  # stock class, no remote code
    assert json.loads((out / "model" / "config.json").read_text())["model_type"] == "modernbert"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info


def test_demo_export_runs_fill_mask_pipeline(demo_run):
    out, stdout, summary = demo_run
    fill_mask = transformers.pipeline("fill-mask", model=str(out / "model"), device="cpu")
    predictions = fill_mask(PROMPT, top_k=5)
    assert len(predictions) == 5
    assert all(0.0 <= p["score"] <= 1.0 and p["token_str"] for p in predictions)
    assert len(summary["predictions"][PROMPT]) == 5
    assert PROMPT in stdout


def test_demo_config_special_token_ids_come_from_the_tokenizer(demo_run):
    out, _, _ = demo_run
    config = transformers.AutoConfig.from_pretrained(out / "model")
    tokenizer = transformers.AutoTokenizer.from_pretrained(out / "model")
    assert config.pad_token_id == tokenizer.pad_token_id
    assert config.cls_token_id == config.bos_token_id == tokenizer.cls_token_id
    assert config.sep_token_id == config.eos_token_id == tokenizer.sep_token_id
    assert config.vocab_size % 64 == 0 and config.vocab_size >= len(tokenizer)


def test_demo_goes_through_the_real_data_path(demo_run):
    _, _, summary = demo_run
    corpus = summary["corpus"]
    assert set(corpus) == {"mimic_discharge", "mimic_radiology", "pubmed", "icd10cm", "icd9cm", "icd9pcs",
                           "icd10pcs"}, corpus
    assert corpus["pubmed"]["kept"] > 30_000  # the real PubMed sample, read through the XML reader
    # Every discharge note is pretrained on except those of the ICD split's validation and test patients.
    excluded = corpus["mimic_discharge"]["skipped"]["excluded_subject"]
    assert excluded > 0 and corpus["mimic_discharge"]["kept"] + excluded == summary["synthetic_mimic"]["discharge_notes"]
    assert summary["packing_efficiency"] >= 0.98
    assert set(summary["tokenizer"]["sources"]) == set(corpus) == set(summary["tokens_per_source"])
    assert abs(sum(summary["training_mix"].values()) - 1) < 1e-9
    mix = summary["training_mix"]  # configs/demo.yaml's weights; unnamed sources keep their token share
    assert mix["mimic_discharge"] / mix["pubmed"] == pytest.approx(0.5 / 0.2)


def test_demo_icd_step_compares_with_baselines_and_predicts(demo_run):
    out, stdout, summary = demo_run
    systems = summary["icd"]["systems"]
    assert sorted(name.rsplit("-", 1)[-1] for name in systems) == ["256", "lr", "trunc512"], systems
    assert all(0 <= s["f1_micro"] <= 1 and 0 <= s["map"] <= 1 for s in systems.values())
    excluded = set((out / "icd-data" / "exclude_subjects.txt").read_text().split())
    assert excluded and "tfidf-lr" in stdout and "predict icd" in stdout
    predicted = json.loads((out / "icd" / "predictions.json").read_text())
    assert len(predicted) == 3 and all(len(p["codes"]) == 5 for p in predicted)


def test_demo_trajectory_step_compares_with_baselines_and_predicts(demo_run):
    out, stdout, summary = demo_run
    systems = summary["trajectory"]["systems"]
    assert set(systems) == {"model:both", "model:codes", "model:notes", "baseline:repeat_last",
                            "baseline:patient_frequent", "baseline:population"}, systems
    assert all(0 <= s["recall@20"] <= 1 and 0 <= s["mar@20"] <= s["recall@20"] for s in systems.values())
    assert isinstance(summary["trajectory"]["quality_bar_met"], bool)
    # Its held-out patients are the ICD split's (the pretraining corpus excluded those), never a train patient.
    held = set((out / "trajectory-data" / "exclude_subjects.txt").read_text().split())
    assert held <= set((out / "icd-data" / "exclude_subjects.txt").read_text().split())
    assert (out / "trajectory" / "comparison.png").stat().st_size > 1000
    assert "predict trajectory" in stdout


# --- the tokenizer ------------------------------------------------------------------------------------------------
NOTES = [
    "___ is a 67 year old man with hypertension who presents with chest pain.",
    "She was started on metoprolol 25 mg PO twice daily for rate control.",
    "Troponin was negative x2; ECG showed normal sinus rhythm.",
    "Café-au-lait spots noted. Naïve to anticoagulation.\nFollow up with Dr. ___ in 2 weeks.",
] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(NOTES, vocab_size=400, model_max_length=512)


def test_special_tokens_have_stable_ids(tokenizer):
    other = train_tokenizer(["entirely different text, another corpus"] * 5, vocab_size=300)
    for tok in (tokenizer, other):
        assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
        assert (tok.cls_token, tok.sep_token, tok.mask_token, tok.pad_token, tok.unk_token) == (
            "[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]")
    assert tokenizer.model_max_length == 512


def test_encoding_adds_cls_sep_and_no_token_types(tokenizer):
    single = tokenizer("chest pain")
    pair = tokenizer("chest pain", "no fever")
    assert set(single) == set(pair) == {"input_ids", "attention_mask"}
    ids = single["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert pair["input_ids"].count(tokenizer.sep_token_id) == 2 and pair["input_ids"][0] == tokenizer.cls_token_id


def test_mask_token_takes_the_space_before_it(tokenizer):
    # As in ModernBERT: "chest [MASK]." -> ... 'Ġchest' '[MASK]' '.', so the model predicts ' pain' with its space.
    masked = tokenizer("with chest [MASK].")["input_ids"]
    prefix = tokenizer("with chest")["input_ids"][:-1]  # without [SEP]
    assert masked == prefix + [tokenizer.mask_token_id, tokenizer.convert_tokens_to_ids("."), tokenizer.sep_token_id]


def test_decode_round_trips_text(tokenizer, tmp_path):
    text = "Café-au-lait  spots;  BP 142/88 →  ok.\nHeparin 5000 units SC q8h, 日本"
    assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text
    save_tokenizer(tokenizer, tmp_path)
    # transformers 5 would record its own `TokenizersBackend`, a class transformers 4.x cannot load.
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    reloaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert reloaded.model_input_names == ["input_ids", "attention_mask"]


def test_padded_vocab_size():
    assert [padded_vocab_size(n) for n in (1, 64, 65, 50305, 50368)] == [64, 64, 128, 50368, 50368]
    assert padded_vocab_size(100, multiple=8) == 104
