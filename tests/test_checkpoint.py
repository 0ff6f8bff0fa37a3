"""Release checkpoints are stock transformers ModernBERT, both ways (docs/ARCHITECTURE.md, "HF-exact weights",
"Padded equals unpadded", "v4 and v5 exports"): key names, outputs, config keys for transformers 4.x and 5.x, strict
loading, tied decoder, special-token ids."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from conftest import VOCAB, padded_batch, randomize_, tiny_config
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

import cmbert.modeling

pytestmark = pytest.mark.usefixtures("one_thread")

# A model that only loads right if every key is read: non-default thetas, a window shorter than the input, a layer
# count that is not a multiple of the global period.
CONFIG = dict(num_hidden_layers=4, global_attn_every_n_layers=3, local_attention=16, global_rope_theta=1234.0,
              local_rope_theta=77.0)
HEADS = {  # id: (our class, transformers class, Auto class, config overrides)
    "mlm": (cmbert.modeling.ModernBertForMaskedLM, transformers.ModernBertForMaskedLM, transformers.AutoModelForMaskedLM,
            {}),
    "classifier": (cmbert.modeling.ModernBertForSequenceClassification, transformers.ModernBertForSequenceClassification,
                   transformers.AutoModelForSequenceClassification, dict(num_labels=3, classifier_pooling="mean")),
}


def outputs_on_tokens(model, ids, mask) -> torch.Tensor:
    """Logits that must agree: every non-pad token for MLM, every row for a classifier."""
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    return logits[mask.bool()] if logits.dim() == 3 else logits


def safetensors_keys(folder) -> set[str]:
    return set(load_file(folder / "model.safetensors"))


# --- both ways with transformers ----------------------------------------------------------------------------------

@pytest.mark.parametrize("head", HEADS.values(), ids=HEADS.keys())
def test_our_checkpoint_loads_in_transformers_unchanged(head, tmp_path):
    ours_cls, theirs_cls, auto_cls, extra = head
    cfg = tiny_config(**CONFIG, **extra)
    ours = randomize_(ours_cls(cfg)).eval()
    ours.save_pretrained(tmp_path / "ours")
    theirs_cls._from_config(cfg).save_pretrained(tmp_path / "theirs")

    assert json.loads((tmp_path / "ours" / "config.json").read_text())["model_type"] == "modernbert"
    assert safetensors_keys(tmp_path / "ours") == safetensors_keys(tmp_path / "theirs")  # transformers' key names
    loaded, info = auto_cls.from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert type(loaded) is theirs_cls
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    ids, mask = padded_batch((40, 3, 25), "right")
    assert (outputs_on_tokens(loaded.eval(), ids, mask) - outputs_on_tokens(ours, ids, mask)).abs().max() <= 1e-4


@pytest.mark.parametrize("head", HEADS.values(), ids=HEADS.keys())
def test_transformers_checkpoint_loads_every_weight_in_ours(head, tmp_path):
    ours_cls, theirs_cls, _, extra = head
    theirs = randomize_(theirs_cls(tiny_config(**CONFIG, **extra)))
    theirs.save_pretrained(tmp_path)
    ours, info = ours_cls.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert ours.config.rope_parameters == theirs.config.rope_parameters
    assert ours.config.layer_types == theirs.config.layer_types
    want = theirs.state_dict()
    got = ours.state_dict()
    assert got.keys() == want.keys()
    for name, tensor in want.items():
        assert torch.equal(got[name], tensor), name


@pytest.mark.parametrize("source", ["transformers", "ours"])
@pytest.mark.parametrize("head", HEADS.values(), ids=HEADS.keys())
def test_from_pretrained_gives_the_saved_models_outputs(head, source, tmp_path):
    ours_cls, theirs_cls, _, extra = head
    cfg = tiny_config(**CONFIG, **extra)
    saved = randomize_((theirs_cls if source == "transformers" else ours_cls)(cfg)).eval()
    saved.save_pretrained(tmp_path)
    loaded = ours_cls.from_pretrained(tmp_path).eval()
    want = saved.model.rotary_emb.full_attention_inv_freq if source == "transformers" else \
        saved.model.rotary["full_attention"].inv_freq(torch.device("cpu"))[0]
    # Regression: transformers 5 loads on the meta device, so RoPE frequencies kept in a buffer came back garbage.
    assert torch.equal(loaded.model.rotary["full_attention"].inv_freq(torch.device("cpu"))[0], want)
    ids, mask = padded_batch((40, 3, 25), "left")
    assert (outputs_on_tokens(loaded, ids, mask) - outputs_on_tokens(saved, ids, mask)).abs().max() <= 1e-4


# --- configs that transformers' models run with ------------------------------------------------------------------

TASKS = {  # id: (our class, transformers class, config overrides): every head a recipe trains
    "mlm": (cmbert.modeling.ModernBertForMaskedLM, transformers.ModernBertForMaskedLM, {}),
    "sequence-classification": (cmbert.modeling.ModernBertForSequenceClassification,
                                transformers.ModernBertForSequenceClassification,
                                dict(num_labels=3, classifier_pooling="mean")),
    "token-classification": (cmbert.modeling.ModernBertForTokenClassification,
                             transformers.ModernBertForTokenClassification, dict(num_labels=5)),
    "question-answering": (cmbert.modeling.ModernBertForQuestionAnswering,
                           transformers.ModernBertForQuestionAnswering, dict(num_labels=2)),
}
# What a config may carry: transformers' CPU implementations, the GPU ones a config saved or built on CUDA names, and
# None (transformers' "pick the default").
ANY_IMPLEMENTATION = [None, "eager", "sdpa", "flash_attention_2", "flex_attention"]


def task_outputs(model, ids, mask) -> torch.Tensor:
    """Every output that must agree, on real tokens only: logits, or start and end logits side by side."""
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
    logits = torch.stack([out.start_logits, out.end_logits], -1) if "start_logits" in out else out.logits
    return logits[mask.bool()] if logits.dim() == 3 else logits


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])  # what transformers' ModernBERT runs on CPU
@pytest.mark.parametrize("task", TASKS.values(), ids=TASKS.keys())
def test_our_classes_take_the_config_a_transformers_model_runs_with(task, implementation):
    """`Ours(theirs.config)` shares the config object: it must be accepted as it is, and stay as it is, so the
    transformers model keeps its own attention; on the same weights both give the same outputs."""
    ours_cls, theirs_cls, extra = task
    theirs = theirs_cls._from_config(tiny_config(**CONFIG, **extra), attn_implementation=implementation)
    theirs = randomize_(theirs).eval()
    ids, mask = padded_batch((40, 3, 25), "left")
    before = task_outputs(theirs, ids, mask)
    ours = ours_cls(theirs.config).eval()
    assert ours.config is theirs.config and theirs.config._attn_implementation == implementation
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert (task_outputs(ours, ids, mask) - before).abs().max() <= 1e-4
    assert torch.equal(task_outputs(theirs, ids, mask), before)  # transformers' model is unaffected


@pytest.mark.parametrize("implementation", ANY_IMPLEMENTATION)
@pytest.mark.parametrize("task", TASKS.values(), ids=TASKS.keys())
def test_from_pretrained_takes_any_attn_implementation(task, implementation, tmp_path):
    ours_cls, theirs_cls, extra = task
    saved = randomize_(theirs_cls(tiny_config(**CONFIG, **extra))).eval()
    saved.save_pretrained(tmp_path)
    options = {} if implementation is None else {"attn_implementation": implementation}
    loaded = ours_cls.from_pretrained(tmp_path, **options).eval()
    assert loaded.config._attn_implementation == implementation  # recorded as asked, never used
    ids, mask = padded_batch((40, 3, 25), "right")
    assert (task_outputs(loaded, ids, mask) - task_outputs(saved, ids, mask)).abs().max() <= 1e-4


@pytest.mark.parametrize("implementation", ANY_IMPLEMENTATION)
def test_a_config_naming_any_implementation_is_left_alone(implementation):
    config = tiny_config(attn_implementation=implementation)
    ours = cmbert.modeling.ModernBertForMaskedLM(config)
    assert config._attn_implementation == implementation
    # A transformers model built from the same config afterwards resolves it itself, as it would have alone.
    if implementation in (None, "eager", "sdpa"):
        theirs = transformers.ModernBertForMaskedLM(config)
        assert theirs.config._attn_implementation == (implementation or "sdpa")
        theirs.load_state_dict(ours.state_dict())
        ids, mask = padded_batch((9, 4), "right")
        assert (task_outputs(ours.eval(), ids, mask) - task_outputs(theirs.eval(), ids, mask)).abs().max() <= 1e-4


# --- config keys for transformers 4.x and 5.x ---------------------------------------------------------------------

V4_CASES = {  # id: (config overrides, global_attn_every_n_layers, global theta, local theta)
    "4-layers-every-3-default-theta": (dict(num_hidden_layers=4), 3, 160_000.0, 10_000.0),
    "5-layers-every-2-custom-theta": (dict(num_hidden_layers=5, global_attn_every_n_layers=2, global_rope_theta=1234.0,
                                           local_rope_theta=77.0), 2, 1234.0, 77.0),
    "all-global": (dict(num_hidden_layers=3, global_attn_every_n_layers=1, global_rope_theta=5e5), 1, 5e5, 10_000.0),
    "1-layer": (dict(num_hidden_layers=1, local_rope_theta=333.0), 1, 160_000.0, 333.0),
}


@pytest.mark.parametrize("case", V4_CASES.values(), ids=V4_CASES.keys())
def test_config_json_holds_consistent_v4_and_v5_keys(case, tmp_path):
    overrides, every_n, global_theta, local_theta = case
    cfg = tiny_config(**overrides)
    cmbert.modeling.ModernBertForMaskedLM(cfg).save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())

    # v5 keys
    assert data["layer_types"] == cfg.layer_types
    assert data["rope_parameters"]["full_attention"]["rope_theta"] == global_theta
    assert data["rope_parameters"]["sliding_attention"]["rope_theta"] == local_theta
    # v4 keys, equal in meaning
    assert (data["global_attn_every_n_layers"], data["global_rope_theta"], data["local_rope_theta"]) == (
        every_n, global_theta, local_theta)
    assert "min_transformers_version" not in data
    assert "minimum transformers version: **4.48.0**" in (tmp_path / "README.md").read_text()
    # A reader that knows only the v4 keys rebuilds the same model.
    v4_only = {k: v for k, v in data.items() if k not in ("layer_types", "rope_parameters")}
    rebuilt = transformers.ModernBertConfig.from_dict(v4_only)
    assert rebuilt.layer_types == cfg.layer_types
    assert rebuilt.rope_parameters == cfg.rope_parameters


@pytest.mark.parametrize("layer_types", [
    ["full_attention", "full_attention", "sliding_attention"],
    ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
])
def test_layer_pattern_v4_cannot_express_is_marked_v5_only(layer_types, tmp_path):
    cfg = tiny_config(num_hidden_layers=len(layer_types), layer_types=layer_types, global_rope_theta=1234.0)
    ours = randomize_(cmbert.modeling.ModernBertForMaskedLM(cfg)).eval()
    ours.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["min_transformers_version"] == "5.0.0"
    assert "global_attn_every_n_layers" not in data  # any n would describe a different model
    assert data["layer_types"] == layer_types
    card = (tmp_path / "README.md").read_text()
    assert "minimum transformers version: **5.0.0**" in card and "is not 'global every n-th layer'" in card

    loaded, info = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    assert loaded.config.layer_types == layer_types and not info["missing_keys"]
    ids, mask = padded_batch((30, 7), "left")
    assert (outputs_on_tokens(loaded.eval(), ids, mask) - outputs_on_tokens(ours, ids, mask)).abs().max() <= 1e-4


# --- strict loading -----------------------------------------------------------------------------------------------

@pytest.fixture
def mlm_folder(tmp_path):
    """An MLM checkpoint of ours, and the model that wrote it."""
    model = randomize_(cmbert.modeling.ModernBertForMaskedLM(tiny_config(**CONFIG))).eval()
    model.save_pretrained(tmp_path / "mlm")
    return tmp_path / "mlm", model


def edit_weights(folder, edit) -> None:
    path = folder / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


WO = "model.layers.1.attn.Wo.weight"
BROKEN = {  # id: (edit of the safetensors dict, keys the error must name)
    "missing-key": (lambda t: t.pop(WO), [WO]),
    "renamed-key": (lambda t: t.update({"model.layers.1.attn.W_out.weight": t.pop(WO)}),
                    [WO, "model.layers.1.attn.W_out.weight"]),
    "extra-key": (lambda t: t.update({"model.layers.1.attn.gate.weight": torch.ones(4)}),
                  ["model.layers.1.attn.gate.weight"]),
    "missing-mlm-head": (lambda t: t.pop("head.dense.weight"), ["head.dense.weight"]),
}


@pytest.mark.parametrize("broken", BROKEN.values(), ids=BROKEN.keys())
def test_strict_loading_names_the_offending_keys(broken, mlm_folder):
    folder, _ = mlm_folder
    edit, keys = broken
    edit_weights(folder, edit)
    with pytest.raises(ValueError) as error:
        cmbert.modeling.ModernBertForMaskedLM.from_pretrained(folder)
    for key in keys:
        assert key in str(error.value)
    # strict=False is the documented escape hatch, and still reports what it did
    _, info = cmbert.modeling.ModernBertForMaskedLM.from_pretrained(folder, strict=False, output_loading_info=True)
    assert {k for k in keys if k in info["missing_keys"] or k in info["unexpected_keys"]} == set(keys)


def test_mlm_checkpoint_starts_a_classifier_and_a_base_model(mlm_folder):
    folder, mlm = mlm_folder
    saved = mlm.state_dict()
    classifier = cmbert.modeling.ModernBertForSequenceClassification.from_pretrained(folder, num_labels=3)
    for name, tensor in classifier.state_dict().items():
        if name.startswith(("model.", "head.")):  # encoder and pooling head come from the checkpoint
            assert torch.equal(tensor, saved[name]), name
    assert classifier.classifier.weight.shape == (3, 32)

    base = cmbert.modeling.ModernBertModel.from_pretrained(folder)
    assert base.state_dict().keys() == {k.removeprefix("model.") for k in saved if k.startswith("model.")}
    for name, tensor in base.state_dict().items():
        assert torch.equal(tensor, saved[f"model.{name}"]), name


def test_fresh_classifier_is_initialised_like_transformers(mlm_folder):
    folder, _ = mlm_folder
    ours = cmbert.modeling.ModernBertForSequenceClassification.from_pretrained(folder, num_labels=3).classifier
    theirs = transformers.ModernBertForSequenceClassification.from_pretrained(folder, num_labels=3).classifier
    std = 32**-0.5  # transformers: hidden_size ** -0.5, truncated at +-2 std
    assert theirs.weight.abs().max() <= 2 * std and 0.5 * std < theirs.weight.std() < 1.5 * std
    assert torch.equal(theirs.bias, torch.zeros(3))
    assert ours.weight.abs().max() <= 2 * std and 0.5 * std < ours.weight.std() < 1.5 * std
    assert torch.equal(ours.bias, torch.zeros(3))


@pytest.mark.parametrize("source", ["ours", "transformers"])
def test_decoder_stays_tied_to_the_embeddings_after_loading(source, tmp_path):
    cls = cmbert.modeling.ModernBertForMaskedLM if source == "ours" else transformers.ModernBertForMaskedLM
    saved = randomize_(cls(tiny_config(**CONFIG)))
    saved.save_pretrained(tmp_path)
    assert "decoder.weight" not in safetensors_keys(tmp_path)  # stored once, as the embeddings
    loaded = cmbert.modeling.ModernBertForMaskedLM.from_pretrained(tmp_path)
    embeddings = loaded.model.embeddings.tok_embeddings.weight
    assert loaded.decoder.weight is embeddings
    assert torch.equal(embeddings, saved.model.embeddings.tok_embeddings.weight)


# --- special tokens -----------------------------------------------------------------------------------------------

NOTES = ["patient admitted with chest pain", "no acute distress noted today", "history of hypertension and diabetes",
         "chest x-ray shows no acute process"]


def train_tokenizer(special=("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"), **names) -> transformers.PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    # special tokens in an order other than the config's defaults, so ids must really come from the tokenizer
    tok.train_from_iterator(NOTES, trainers.BpeTrainer(vocab_size=80, special_tokens=list(special)))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    names = names or dict(pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]",
                          mask_token="[MASK]")
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **names)


def test_special_token_ids_come_from_the_tokenizer(tmp_path):
    tokenizer = train_tokenizer(special=("[UNK]", "[MASK]", "[SEP]", "[PAD]", "[CLS]"))
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("[PAD]", "[CLS]", "[SEP]")}
    assert ids == {"[PAD]": 3, "[CLS]": 4, "[SEP]": 2}
    cfg = cmbert.modeling.set_special_token_ids(tiny_config(pad_token_id=50283, cls_token_id=50281, sep_token_id=50282,
                                                     bos_token_id=50281, eos_token_id=50282), tokenizer)
    assert (cfg.pad_token_id, cfg.cls_token_id, cfg.sep_token_id) == (3, 4, 2)
    assert (cfg.bos_token_id, cfg.eos_token_id) == (4, 2)

    model = cmbert.modeling.ModernBertForMaskedLM(cfg)
    assert model.model.embeddings.tok_embeddings.padding_idx == 3
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert {k: data[k] for k in ("pad_token_id", "cls_token_id", "sep_token_id", "bos_token_id", "eos_token_id")} == {
        "pad_token_id": 3, "cls_token_id": 4, "sep_token_id": 2, "bos_token_id": 4, "eos_token_id": 2}
    # "HF-exact weights": the folder serves transformers' fill-mask pipeline as is
    predictions = transformers.pipeline("fill-mask", model=str(tmp_path), device="cpu")("patient admitted with [MASK]")
    assert len(predictions) == 5 and all(0 <= p["token"] < VOCAB for p in predictions)


def test_set_special_token_ids_rejects_unusable_tokenizers():
    no_pad = train_tokenizer(cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]", mask_token="[MASK]")
    assert no_pad.pad_token_id is None
    with pytest.raises(ValueError, match="pad_token_id"):
        cmbert.modeling.set_special_token_ids(tiny_config(), no_pad)
    with pytest.raises(ValueError, match="vocab_size"):  # the embedding table must hold every token
        cmbert.modeling.set_special_token_ids(tiny_config(vocab_size=40), train_tokenizer())
