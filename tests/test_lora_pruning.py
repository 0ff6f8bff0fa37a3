"""LoRA adapters (cmbert/core/lora.py) and structured layer pruning (cmbert/core/pruning.py) on the encoder: adapters are
the only encoder weights that train, merging gives the same outputs in stock layers, and a pruned model is a valid
transformers ModernBERT that `AutoModel` loads and runs exactly as our pruned model does."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from conftest import padded_batch, randomize_, tiny_config

import cmbert.modeling
from cmbert.core.lora import LoraSettings, apply_lora, has_lora, merged_copy, trainable_summary
from cmbert.core.pruning import PruneSettings, layers_to_drop, prune_layers

PATTERN_9 = tiny_config(num_hidden_layers=9, global_attn_every_n_layers=3).layer_types  # G L L G L L G L L


@pytest.mark.parametrize("strategy, fraction, expected", [
    ("top", 0.3, [6, 7, 8]),
    ("middle", 0.3, [3, 4, 5]),
    ("every_other", 0.3, [3, 5, 7]),
    ("every_other", 0.4, [1, 3, 5, 7]),
    ("local", 0.3, [5, 7, 8]),
    ("local", 0.6, [1, 2, 4, 5, 7, 8]),
])
def test_named_strategies_pick_layers(strategy, fraction, expected):
    drop = layers_to_drop(PATTERN_9, PruneSettings(strategy=strategy, fraction=fraction))
    assert drop == expected
    assert 0 not in drop
    if strategy == "local":
        assert all(PATTERN_9[i] == "sliding_attention" for i in drop)


def test_pruning_refuses_layer_zero_and_impossible_fractions():
    with pytest.raises(ValueError, match="layer 0 is never pruned"):
        layers_to_drop(PATTERN_9, PruneSettings(strategy="layers", drop=[0, 4]))
    with pytest.raises(ValueError, match="indices must be in 0..8"):
        layers_to_drop(PATTERN_9, PruneSettings(strategy="layers", drop=[9]))
    with pytest.raises(ValueError, match="only 6 droppable"):
        layers_to_drop(PATTERN_9, PruneSettings(strategy="local", fraction=0.7))
    assert layers_to_drop(PATTERN_9, PruneSettings()) == []


# From G L L G L L G L L: every other (0.4) keeps G L L G L and the middle third G L L G L L, still "global every
# 3rd layer" for transformers 4.x; dropping 1 and 2 keeps G G L L G L L, and local 0.3 keeps G L L G L G: 5.x only.
@pytest.mark.parametrize("strategy, fraction, drop, v4", [
    ("every_other", 0.4, [], True),
    ("middle", 0.3, [], True),
    ("layers", 0.3, [1, 2], False),
    ("local", 0.3, [], False),
])
def test_pruned_model_saves_as_stock_modernbert(strategy, fraction, drop, v4, tmp_path, one_thread):
    config = tiny_config(num_hidden_layers=9, global_attn_every_n_layers=3)
    full = randomize_(cmbert.modeling.ModernBertForMaskedLM(config)).eval()
    pruned = randomize_(cmbert.modeling.ModernBertForMaskedLM(tiny_config(num_hidden_layers=9,
                                                                   global_attn_every_n_layers=3))).eval()
    pruned.load_state_dict(full.state_dict())
    settings = PruneSettings(strategy=strategy, fraction=fraction, drop=drop)
    dropped = prune_layers(pruned, settings)
    keep = [i for i in range(9) if i not in dropped]
    assert pruned.config.num_hidden_layers == len(keep) == len(pruned.model.layers)
    assert pruned.config.layer_types == [PATTERN_9[i] for i in keep]
    assert pruned.config.pruned_from["dropped"] == dropped and pruned.config.pruned_from["kept"] == keep
    # The kept blocks are the very modules of the full model (same weights, same order).
    for new, old in zip(pruned.model.layers, (full.model.layers[i] for i in keep), strict=True):
        assert torch.equal(new.attn.Wqkv.weight, old.attn.Wqkv.weight)

    pruned.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["num_hidden_layers"] == len(keep) and data["layer_types"] == pruned.config.layer_types
    assert ("min_transformers_version" not in data) == v4 == ("global_attn_every_n_layers" in data)
    assert f"pruned: layers {dropped} of the original 9 dropped ({strategy})" in (tmp_path / "README.md").read_text()
    theirs, info = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path, output_loading_info=True,
                                                                     attn_implementation="sdpa")
    assert type(theirs).__name__ == "ModernBertForMaskedLM"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ids, mask = padded_batch([20, 13], seq_len=20)
    with torch.no_grad():
        ours = pruned(ids, mask).logits
        reference = theirs.eval()(input_ids=ids, attention_mask=mask).logits
    keep_mask = mask.bool()
    torch.testing.assert_close(ours[keep_mask], reference[keep_mask], atol=1e-4, rtol=1e-4)
    reloaded = cmbert.modeling.ModernBertModel.from_pretrained(tmp_path)  # strict: no key left over or missing
    assert reloaded.config.layer_types == pruned.config.layer_types


def test_lora_trains_only_adapters_and_head_and_merges_to_equal_outputs(tmp_path, one_thread):
    config = tiny_config(num_labels=3, problem_type="multi_label_classification")
    model = randomize_(cmbert.modeling.ModernBertForSequenceClassification(config))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    apply_lora(model, LoraSettings(enabled=True, r=4, alpha=8, dropout=0.0), keep_trainable=("head.", "classifier."))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith(("head.", "classifier.")) for n in trainable)
    adapted = {n.split(".lora_")[0] for n in trainable if "lora_" in n}
    assert {n.rsplit(".", 1)[-1] for n in adapted} == {"Wqkv", "Wo", "Wi"}
    assert len(adapted) == 3 * 4  # Wqkv, attn.Wo, mlp.Wi, mlp.Wo in each of 3 layers
    summary = trainable_summary(model)
    assert 0 < summary["adapter_parameters"] < summary["trainable_parameters"] < summary["parameters"]

    ids, mask = padded_batch([16, 9], seq_len=16)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):
        model(ids, mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = dict(model.named_parameters())
    for name, old in before.items():  # base weights sit under `.base_layer.` once adapted
        new = after.get(name) if name in after else after[name.replace(".weight", ".base_layer.weight")
                                                          .replace(".bias", ".base_layer.bias")]
        changed = not torch.equal(old, new.detach())
        assert changed == name.startswith(("head.", "classifier.")), name

    model.eval()
    with torch.no_grad():
        adapter_logits = model(ids, mask).logits
        merged = merged_copy(model)
        assert has_lora(model) and not has_lora(merged)
        torch.testing.assert_close(merged(ids, mask).logits, adapter_logits, atol=1e-5, rtol=1e-5)
    merged.save_pretrained(tmp_path)
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path, attn_implementation="sdpa")
    with torch.no_grad():
        torch.testing.assert_close(theirs.eval()(input_ids=ids, attention_mask=mask).logits, adapter_logits,
                                   atol=1e-4, rtol=1e-4)


def test_lora_on_a_pruned_encoder_and_bad_targets(one_thread):
    model = cmbert.modeling.ModernBertModel(tiny_config(num_hidden_layers=6))
    prune_layers(model, PruneSettings(strategy="top", fraction=0.3))
    assert model.config.num_hidden_layers == 4
    apply_lora(model, LoraSettings(enabled=True, layers=[1, 3]))
    adapted = sorted({int(n.split(".")[1]) for n, p in model.named_parameters() if p.requires_grad})
    assert adapted == [1, 3]
    with pytest.raises(ValueError, match="name no module"):
        apply_lora(cmbert.modeling.ModernBertModel(tiny_config()), LoraSettings(enabled=True, target_modules=["query"]))
