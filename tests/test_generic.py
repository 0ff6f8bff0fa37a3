"""The generic recipes (`cmbert finetune classify|tokens train`): our token classifier against transformers', the
readers and BIO checks, word-to-subword alignment, the metrics (by hand and against seqeval / sklearn), and end-to-end
runs on tiny made-up clinical data: CSV, JSONL and a `datasets` folder, full fine-tuning and LoRA on a pruned
encoder, resume after a kill, and exports that transformers' Auto classes load and run as the trained model did."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from conftest import build_pair, padded_batch, save_tiny_encoder, tiny_config
from safetensors.torch import load_file

import cmbert.core.loop as epochs
import cmbert.modeling
from cmbert import cli
from cmbert.core.config import ConfigError
from cmbert.core.io import ReadError
from cmbert.data.demo_sentences import classify_example, tagged_example
from cmbert.finetune.generic import train as generic_train
from cmbert.finetune.generic.config import GenericDataConfig, load_generic_config
from cmbert.finetune.generic.data import (
    IGNORE,
    TaggedExample,
    encode_words,
    read_tagged_split,
    read_text_split,
    spaced_words,
    token_labels,
)
from cmbert.finetune.generic.metrics import classification_metrics, entity_metrics, entity_spans

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "finetune"
CLASSIFY, TOKENS = CONFIGS / "classify" / "demo.yaml", CONFIGS / "tokens" / "demo.yaml"
# Words a 384-token BPE has not merged whole: the alignment must put their label on the first piece only.
CRAFTED = (["Patient", "denies", "hemoptysis", "after", "metoprolol-induced", "bradycardia", "."],
           ["O", "O", "B-PROBLEM", "O", "B-DRUG", "B-PROBLEM", "O"])


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Generated train/validation/test files for both tasks, a small byte-level BPE, and a tiny encoder."""
    from cmbert.core.tokenizer_files import save_tokenizer
    from cmbert.pretrain.tokenizer import train_tokenizer

    work = tmp_path_factory.mktemp("generic")
    cli.main(["data", "sentences", "--out", str(work / "data"), "--examples", "120"])  # the README's command
    rng = random.Random(1)
    texts = [classify_example(rng)["text"] for _ in range(300)] + [" ".join(tagged_example(rng)["tokens"])
                                                                     for _ in range(300)]
    save_tokenizer(train_tokenizer(texts, vocab_size=384, model_max_length=128), work / "tokenizer")
    save_tiny_encoder(work / "encoder", work / "tokenizer")
    return work


def run(task: str, work: Path, out: Path, *extra: str) -> dict:
    """`cmbert finetune TASK train` in this process (one thread, no console-script start-up)."""
    preset = CLASSIFY if task == "classify" else TOKENS
    suffix = "csv" if task == "classify" else "jsonl"
    data = work / "data" / task
    cli.main(["finetune", task, "train", "--config", str(preset), f"out={out}",
                 f"model.init_from={work / 'encoder'}", f"data.train={data / f'train.{suffix}'}",
                 f"data.validation={data / f'validation.{suffix}'}", f"data.test={data / f'test.{suffix}'}",
                 "model.max_length=64", "train.epochs=3", "train.lr=3e-3", "train.head_lr=3e-3",
                 "train.checkpoint_every_steps=2", "logging.every_steps=1", "logging.wandb=disabled", *extra])
    return json.loads((out / "report.json").read_text())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def padded(ids: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, ids))
    batch = torch.full((len(ids), width), pad)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        batch[row, : len(seq)], mask[row, : len(seq)] = torch.tensor(seq), 1
    return batch, mask


# --- the model ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_token_classifier_matches_transformers(side, attn):
    config = tiny_config(num_labels=5, num_hidden_layers=4, global_attn_every_n_layers=2, local_attention=16,
                         global_rope_theta=500.0, local_rope_theta=100.0)
    ours, theirs = build_pair(config, cmbert.modeling.ModernBertForTokenClassification,
                              transformers.ModernBertForTokenClassification, attn)
    ids, mask = padded_batch([40, 17, 3], side)
    labels = torch.randint(0, 5, ids.shape)
    labels[mask == 0] = IGNORE
    labels[:, ::3] = IGNORE
    with torch.no_grad():
        got = ours(ids, mask, labels=labels)
        want = theirs(input_ids=ids, attention_mask=mask, labels=labels)
    real = mask.bool()
    assert got.logits.shape == want.logits.shape == (3, 40, 5)
    assert (got.logits - want.logits)[real].abs().max() <= 1e-4
    assert got.logits[~real].abs().max() == 0
    torch.testing.assert_close(got.loss, want.loss, atol=1e-5, rtol=1e-5)
    # Packed input: one row of logits per real token, in stream order.
    flat = ids[real]
    cu = torch.tensor([0, *torch.cumsum(mask.sum(1), 0).tolist()], dtype=torch.int32)
    with torch.no_grad():
        packed = ours(input_ids=flat, cu_seqlens=cu).logits
    torch.testing.assert_close(packed, got.logits[real], atol=1e-5, rtol=1e-5)


def test_token_classifier_loads_an_mlm_checkpoint_with_a_fresh_classifier(work):
    model = cmbert.modeling.ModernBertForTokenClassification.from_pretrained(work / "encoder", num_labels=7)
    mlm = load_file(work / "encoder" / "model.safetensors")
    torch.testing.assert_close(model.head.dense.weight, mlm["head.dense.weight"])  # transformers loads it too
    std = model.classifier.weight.std().item()
    assert 0.5 * 32**-0.5 < std < 1.2 * 32**-0.5 and model.classifier.bias.abs().max() == 0


# --- reading, BIO checks, alignment ------------------------------------------------------------------------------

def test_alignment_labels_the_first_subword_and_counts_cuts(work):
    tokenizer = transformers.AutoTokenizer.from_pretrained(work / "tokenizer")
    words, tags = CRAFTED
    tag_ids = {"O": 0, "B-PROBLEM": 1, "I-PROBLEM": 2, "B-DRUG": 3, "I-DRUG": 4}
    example = TaggedExample(list(words), list(tags))
    encoded = encode_words(tokenizer, [example], tag_ids, max_length=64)
    ids, positions = encoded.ids[0], encoded.word_positions[0]
    # Words are tokenized as the running sentence is (a byte-level BPE sees " denies", not "denies").
    assert ids[1:-1] == tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    ends = [*positions[1:], len(ids) - 1]
    pieces = [tokenizer.decode(ids[a:b]).strip() for a, b in zip(positions, ends, strict=True)]
    assert pieces == list(words)
    assert max(b - a for a, b in zip(positions, ends, strict=True)) >= 3  # some words really are split
    labels = token_labels(encoded, 0)
    assert [labels[p] for p in positions] == [tag_ids[t] for t in tags]
    assert sum(label != IGNORE for label in labels) == len(words)  # continuation pieces and specials: -100
    assert encoded.truncated == 0

    # Cut inside "metoprolol-induced": it keeps its first piece (and its label); the words after lose theirs.
    cut_at = positions[4] + 1  # tokens kept before [SEP], [CLS] included
    short = encode_words(tokenizer, [example], tag_ids, max_length=cut_at + 1)
    assert len(short.ids[0]) == cut_at + 1 and short.truncated == 1 and short.truncated_words == 2
    assert short.word_positions[0] == [*positions[:5], -1, -1]
    assert generic_train.predicted_tags(np.array([[0.9, 0.1]] * 5 + [[np.nan, np.nan]] * 2), ["O", "B-X"]) == \
        ["O"] * 7  # words lost to the cut are predicted O, so every gold entity is still counted


def test_spaced_words_keep_the_first_word_bare():
    assert spaced_words(["Pt", "denies", "pain"]) == ["Pt", " denies", " pain"]


def test_bio_tags_are_checked_and_repaired(tmp_path):
    path = tmp_path / "ner.jsonl"
    rows = [{"tokens": ["Started", "heparin", "drip"], "tags": ["O", "I-DRUG", "I-DRUG"]},  # I- without B-
            {"tokens": ["Chest", "pain"], "tags": ["B-PROBLEM", "I-DRUG"]},  # I- of another type
            {"tokens": ["no", "tags"], "tags": ["O"]},  # one tag for two words
            {"tokens": [], "tags": []}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    split = read_tagged_split(path, "train", GenericDataConfig())
    assert [e.tags for e in split.examples] == [["O", "B-DRUG", "I-DRUG"], ["B-PROBLEM", "B-DRUG"]]
    report = split.report()
    assert report["repaired_tags"] == {"I_without_B": 2}
    assert report["read"] == 5 and report["kept"] == 2
    assert report["skipped"] == {"empty_text": 1, "length_mismatch": 1, "not_json": 1}
    assert report["read"] == report["kept"] + sum(report["skipped"].values())
    path.write_text(json.dumps({"tokens": ["Chest", "pain"], "tags": ["B-PROBLEM", "E-PROBLEM"]}) + "\n")
    with pytest.raises(ValueError, match=r"ner.jsonl line 1: tag 'E-PROBLEM' is not IOB2"):
        read_tagged_split(path, "train", GenericDataConfig())


def test_readers_name_missing_columns_and_count_skips(tmp_path):
    csv_path = tmp_path / "notes.csv"
    csv_path.write_text('text,label\n"Denies chest pain.",cardiac\n"   ",cardiac\nHeadache since noon.,\n'
                        'Nausea,gastrointestinal,extra\n')
    split = read_text_split(csv_path, "train", GenericDataConfig())
    assert [(e.text, e.labels) for e in split.examples] == [("Denies chest pain.", ("cardiac",))]
    assert split.counter.skipped == {"empty_text": 1, "missing_label": 1, "malformed_row": 1}
    with pytest.raises(ReadError, match=r"notes.csv.*missing column\(s\) diagnosis"):
        read_text_split(csv_path, "train", GenericDataConfig(label_column="diagnosis"))
    jsonl = tmp_path / "notes.jsonl"
    jsonl.write_text(json.dumps({"text": "Cough.", "labels": ["respiratory"]}) + "\n")
    with pytest.raises(ReadError, match="notes.jsonl: no key label in the first record"):
        read_text_split(jsonl, "train", GenericDataConfig())
    with pytest.raises(ValueError, match="holds a list; set data.multi_label=true"):
        read_text_split(jsonl, "train", GenericDataConfig(label_column="labels"))
    multi = read_text_split(jsonl, "train", GenericDataConfig(label_column="labels", multi_label=True))
    assert multi.examples[0].labels == ("respiratory",)
    csv_multi = tmp_path / "multi.csv"
    csv_multi.write_text("text,systems\nCough and chest pain.,cardiac| respiratory\nRoutine visit.,\n")
    split = read_text_split(csv_multi, "train", GenericDataConfig(label_column="systems", multi_label=True,
                                                                  label_delimiter="|"))
    assert [e.labels for e in split.examples] == [("cardiac", "respiratory"), ()]  # empty: none of the labels


def test_config_errors_name_their_key(work, tmp_path):
    data = work / "data" / "classify"
    base = [f"model.init_from={work / 'encoder'}", f"data.train={data / 'train.csv'}", "data.validation=null",
            "data.test=null"]
    with pytest.raises(ConfigError, match="data.validation: give a validation file"):
        load_generic_config(CLASSIFY, base, task="classify")
    with pytest.raises(ConfigError, match="is a `tokens` preset; run it with `cmbert finetune tokens train`"):
        load_generic_config(TOKENS, base, task="classify")
    with pytest.raises(ConfigError, match="model.max_length .* exceeds the encoder's context"):
        load_generic_config(CLASSIFY, [*base, f"data.validation={data / 'validation.csv'}", "model.max_length=512"],
                            task="classify")
    with pytest.raises(ConfigError, match="YAML reads a bare"):
        load_generic_config(CLASSIFY, [*base, f"data.validation={data / 'validation.csv'}", "data.multi_label=true",
                                       "data.label_delimiter=|"], task="classify")


# --- metrics -----------------------------------------------------------------------------------------------------

def test_classification_metrics_by_hand():
    labels = ["cardiac", "renal", "neuro"]
    # gold 0 0 1 2, predicted 0 1 1 1: per label F1 cardiac 2/3, renal 2/4, neuro 0 (support 1, no prediction)
    scores = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.1, 0.7, 0.2], [0.2, 0.5, 0.3]])
    m = classification_metrics([[0], [0], [1], [2]], scores, labels, multi_label=False)
    assert m["accuracy"] == 0.5 and m["f1_micro"] == 0.5
    assert m["per_label"]["cardiac"] == {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    assert m["per_label"]["renal"]["f1"] == pytest.approx(0.5)
    assert m["f1_macro"] == pytest.approx((2 / 3 + 0.5 + 0.0) / 3)
    # Multi-label at threshold 0.5: predicted {0}, {0, 1}, {}, gold {0}, {1}, {}: exact match 2 of 3;
    # tp 2, 3 predicted, 2 gold -> micro P 2/3, R 1, F1 0.8; label 2 has neither and stays out of the macro average.
    scores = np.array([[0.9, 0.2, 0.1], [0.6, 0.7, 0.0], [0.1, 0.4, 0.3]])
    m = classification_metrics([[0], [1], []], scores, labels, multi_label=True, threshold=0.5)
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert (m["precision_micro"], m["recall_micro"], m["f1_micro"]) == pytest.approx((2 / 3, 1.0, 0.8))
    assert m["f1_macro"] == pytest.approx((2 / 3 + 1.0) / 2)


def test_classification_metrics_match_sklearn():
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(0)
    gold = rng.integers(0, 4, 50)
    scores = rng.random((50, 4))
    m = classification_metrics([[g] for g in gold], scores, list("abcd"), multi_label=False)
    pred = scores.argmax(1)
    assert m["accuracy"] == pytest.approx(accuracy_score(gold, pred))
    assert m["f1_macro"] == pytest.approx(f1_score(gold, pred, average="macro"))
    Y = rng.random((50, 4)) < 0.3
    m = classification_metrics([list(np.flatnonzero(y)) for y in Y], scores, list("abcd"), multi_label=True,
                               threshold=0.6)
    assert m["f1_micro"] == pytest.approx(f1_score(Y, scores >= 0.6, average="micro"))
    assert m["f1_macro"] == pytest.approx(f1_score(Y, scores >= 0.6, average="macro"))


def test_entity_spans_by_hand():
    tags = ["B-DRUG", "I-DRUG", "O", "I-PROBLEM", "I-PROBLEM", "B-PROBLEM", "I-TEST", "B-TEST"]
    assert entity_spans(tags) == [("DRUG", 0, 2), ("PROBLEM", 3, 5), ("PROBLEM", 5, 6), ("TEST", 6, 7),
                                  ("TEST", 7, 8)]
    gold = [["B-DRUG", "I-DRUG", "O", "B-PROBLEM"], ["B-TEST", "O"]]
    pred = [["B-DRUG", "O", "O", "B-PROBLEM"], ["B-TEST", "B-TEST"]]
    m = entity_metrics(gold, pred)  # gold 3 entities, predicted 4, correct 2 (PROBLEM, first TEST)
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((0.5, 2 / 3, 4 / 7))
    assert m["per_type"]["DRUG"]["f1"] == 0.0 and m["per_type"]["PROBLEM"]["f1"] == 1.0
    assert m["word_accuracy"] == pytest.approx(4 / 6)


def test_entity_metrics_match_seqeval():
    from seqeval.metrics import classification_report

    rng = random.Random(0)
    tags = ["O", "O", "B-DRUG", "I-DRUG", "B-PROBLEM", "I-PROBLEM", "I-TEST", "B-TEST"]
    for _ in range(100):
        gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(rng.randint(1, 6))]
        pred = [[rng.choice(tags) if rng.random() < 0.4 else t for t in g] for g in gold]
        if not any(t != "O" for seq in gold + pred for t in seq):
            continue
        ours = entity_metrics(gold, pred)
        theirs = classification_report(gold, pred, output_dict=True, zero_division=0)
        micro = theirs["micro avg"]
        assert (ours["precision"], ours["recall"], ours["f1"]) == pytest.approx(
            (micro["precision"], micro["recall"], micro["f1-score"]))
        assert ours["f1_macro"] == pytest.approx(theirs["macro avg"]["f1-score"])
        for name, scores in ours["per_type"].items():
            assert scores["f1"] == pytest.approx(theirs[name]["f1-score"])
            assert scores["support"] == theirs[name]["support"]


# --- end to end --------------------------------------------------------------------------------------------------

def test_classify_exports_a_stock_model_that_predicts_as_trained(work, tmp_path, capsys):
    out = tmp_path / "classify"
    data = work / "data" / "classify"
    run("classify", work, out, "train.epochs=2")
    printed = capsys.readouterr().out
    assert "validation accuracy" in printed and "trained" in printed and "100.00 %" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["labels"] == ["cardiac", "gastrointestinal", "neurological", "respiratory"]
    assert report["data"]["train"]["kept"] == 84 and report["parameters"]["trainable_percent"] == 100.0
    assert 0 <= report["test"]["accuracy"] <= 1 and report["provenance"]["peft"]
    assert not report["lora"]["enabled"] and report["prune"]["dropped"] == []
    assert not (out / "ckpt").exists()

    model = transformers.AutoModelForSequenceClassification.from_pretrained(out / "model").eval()
    assert type(model).__module__.startswith("transformers.")
    assert model.config.problem_type == "single_label_classification"
    assert model.config.id2label[1] == "gastrointestinal" and model.config.label2id["respiratory"] == 3
    tokenizer = transformers.AutoTokenizer.from_pretrained(out / "model")
    texts = [e.text for e in read_text_split(data / "test.csv", "test", GenericDataConfig()).examples]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(model(**batch).logits, -1)
    saved = torch.tensor([list(p["scores"].values()) for p in read_jsonl(out / "predictions" / "test.jsonl")])
    torch.testing.assert_close(probs, saved, atol=1e-4, rtol=0)  # the exported model is the trained one
    assert "pipeline_tag: text-classification" in (out / "model" / "README.md").read_text()


def test_sentence_pairs_train_and_the_pipeline_reads_them_as_trained(work, tmp_path):
    """MedNLI-style pairs (MedNLI's own keys): trained as [CLS] premise [SEP] hypothesis [SEP]; transformers'
    text-classification pipeline given {text, text_pair} builds the same ids and gives the saved probabilities."""
    nli = work / "data" / "nli"
    out = tmp_path / "nli"
    report = run("classify", work, out, f"data.train={nli / 'train.jsonl'}", f"data.validation={nli / 'validation.jsonl'}",
                 f"data.test={nli / 'test.jsonl'}", "data.text_column=sentence1", "data.text_pair_column=sentence2",
                 "data.label_column=gold_label", "train.epochs=2")
    assert report["labels"] == ["contradiction", "entailment", "neutral"] and report["selection_metric"] == "f1_macro"
    assert {"accuracy", "f1_macro"} <= set(report["test"]) and report["data"]["train"]["kept"] == 84
    pairs = [json.loads(line) for line in (nli / "test.jsonl").read_text().splitlines()]
    classify = transformers.pipeline("text-classification", model=str(out / "model"), top_k=None)
    saved = read_jsonl(out / "predictions" / "test.jsonl")
    for pair, record in zip(pairs, saved, strict=True):
        scores = {s["label"]: s["score"] for s in classify({"text": pair["sentence1"], "text_pair": pair["sentence2"]})}
        assert scores == pytest.approx(record["scores"], abs=1e-4)
    assert 'text_pair' in (out / "model" / "README.md").read_text()


def test_sentence_pairs_are_cut_longest_first_and_counted(work, tmp_path):
    from cmbert.finetune.generic.data import TextExample, encode_pairs, encode_texts

    tokenizer = transformers.AutoTokenizer.from_pretrained(work / "encoder")
    premise = "Patient presents with chest pain since yesterday. Denies headache. Vitals stable. Labs pending."
    examples = [TextExample(premise, ("entailment",), "a", "The patient has chest pain."),
                TextExample("Stable.", ("neutral",), "b", "Yes.")]
    short = len(tokenizer(examples[0].pair, add_special_tokens=False)["input_ids"])
    limit = 2 * short + 5  # room for the whole hypothesis and a premise cut to 2 tokens more than it
    assert len(tokenizer("Stable.", "Yes.")["input_ids"]) <= limit  # the second pair fits whole
    encoded = encode_texts(tokenizer, examples, {"entailment": 0, "neutral": 1}, max_length=limit)
    assert encoded.truncated == 1 and len(encoded.ids[0]) == limit  # only the long pair was cut ...
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    first = encoded.ids[0]
    assert first[0] == cls and first[-1] == sep and first[-short - 2] == sep  # ... from its longer side, the premise
    assert first[-short - 1 : -1] == tokenizer(examples[0].pair, add_special_tokens=False)["input_ids"]
    assert encoded.ids == encode_pairs(tokenizer, [e.text for e in examples], [e.pair for e in examples], limit)

    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"sentence1": premise, "sentence2": " ", "gold_label": "neutral"}) + "\n" +
                    json.dumps({"sentence1": premise, "sentence2": "Has pain.", "gold_label": "entailment"}) + "\n")
    split = read_text_split(path, "train", GenericDataConfig(text_column="sentence1", text_pair_column="sentence2",
                                                             label_column="gold_label"))
    assert split.counter.as_dict()["skipped"] == {"empty_text_pair": 1} and split.examples[0].pair == "Has pain."
    with pytest.raises(ConfigError, match="text_pair_column"):
        tokens = work / "data" / "tokens"
        load_generic_config(TOKENS, ["data.text_pair_column=hypothesis", f"model.init_from={work / 'encoder'}",
                                     f"data.train={tokens / 'train.jsonl'}", f"data.validation={tokens / 'validation.jsonl'}",
                                     f"data.test={tokens / 'test.jsonl'}"], task="tokens")


def test_tokens_with_lora_on_a_pruned_encoder(work, tmp_path):
    out = tmp_path / "tokens"
    report = run("tokens", work, out, "model.lora.enabled=true", "model.lora.r=4", "model.lora.target_modules=[Wqkv]",
                 "model.lora.lr=1e-2", "model.prune.strategy=top", "model.prune.fraction=0.5")
    assert report["prune"]["dropped"] == [1] and report["prune"]["layers"] == 1 and report["lora"]["r"] == 4
    p = report["parameters"]
    head = 32 * 32 + 32 + 32 * 7 + 7  # head.dense (no bias), head.norm (no bias), classifier: 7 tags
    assert p["adapter_parameters"] == 4 * (32 + 96) and p["trainable_parameters"] == p["adapter_parameters"] + head
    assert p["trainable_percent"] < 10
    assert report["test"]["f1"] > 0.0 and report["labels"][0] == "O"

    # Adapters merged into Wqkv only: every other encoder weight of the kept layer is the checkpoint's own.
    exported, original = load_file(out / "model" / "model.safetensors"), load_file(work / "encoder" /
                                                                                   "model.safetensors")
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["num_hidden_layers"] == 1 and config["pruned_from"]["kept"] == [0]
    assert not any("lora" in k for k in exported)
    for key, value in exported.items():
        if key.startswith("model."):
            assert torch.equal(value, original[key]) != key.endswith("attn.Wqkv.weight"), key
    assert not torch.equal(exported["head.dense.weight"], original["head.dense.weight"])  # the head trained

    model = transformers.AutoModelForTokenClassification.from_pretrained(out / "model").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out / "model")
    split = read_tagged_split(work / "data" / "tokens" / "test.jsonl", "test", GenericDataConfig())
    tag_ids = {tag: i for i, tag in enumerate(report["labels"])}
    encoded = encode_words(tokenizer, split.examples, tag_ids, max_length=64)
    ids, mask = padded(encoded.ids, tokenizer.pad_token_id)
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=ids, attention_mask=mask).logits, -1)
    for row, saved in enumerate(read_jsonl(out / "predictions" / "test.jsonl")):
        words = probs[row, encoded.word_positions[row]]
        assert [report["labels"][i] for i in words.argmax(-1)] == saved["predicted"]
        torch.testing.assert_close(words.max(-1).values, torch.tensor(saved["confidence"]), atol=1e-4, rtol=0)


def test_multi_label_classify_from_jsonl_lists(work, tmp_path):
    for split in ("train", "validation", "test"):  # the label lists as JSON lists this time
        with (work / "data" / "classify" / f"{split}.csv").open() as f:
            rows = [{"text": r["text"], "systems": r["systems"].split("|")} for r in csv.DictReader(f)]
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "multi"
    report = run("classify", work, out, f"data.train={tmp_path / 'train.jsonl'}",
                 f"data.validation={tmp_path / 'validation.jsonl'}", f"data.test={tmp_path / 'test.jsonl'}",
                 "data.label_column=systems", "data.multi_label=true", "eval.threshold=0.4")
    assert report["multi_label"] and report["selection_metric"] == "f1_micro"
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    saved = read_jsonl(out / "predictions" / "validation.jsonl")
    assert all(set(r["predicted"]) == {k for k, s in r["scores"].items() if s >= 0.4} for r in saved)


def test_tokens_from_a_datasets_folder_with_class_labels(work, tmp_path):
    import datasets

    names = ["O", "B-PROBLEM", "I-PROBLEM", "B-DRUG", "I-DRUG", "B-TEST", "I-TEST"]
    features = datasets.Features({"tokens": datasets.List(datasets.Value("string")),
                                  "ner_tags": datasets.List(datasets.ClassLabel(names=names))})
    splits = {}
    for split, name in (("train", "train"), ("validation", "dev"), ("test", "test")):
        rows = read_jsonl(work / "data" / "tokens" / f"{split}.jsonl")
        splits[name] = datasets.Dataset.from_dict(
            {"tokens": [r["tokens"] for r in rows], "ner_tags": [[names.index(t) for t in r["tags"]] for r in rows]},
            features=features)
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "ner"))
    report = run("tokens", work, tmp_path / "run", f"data.train={tmp_path / 'ner'}", "data.validation=null",
                 "data.test=null", "data.tags_column=ner_tags", "train.epochs=1")
    assert {s["source"] for s in report["data"].values()} == {str(tmp_path / "ner")}
    assert [report["data"][s]["kept"] for s in ("train", "validation", "test")] == [84, 18, 18]
    assert report["labels"] == ["O", "B-DRUG", "I-DRUG", "B-PROBLEM", "I-PROBLEM", "B-TEST", "I-TEST"]
    assert read_jsonl(tmp_path / "run" / "predictions" / "test.jsonl")[0]["where"] == "ner[test] row 1"


def test_unseen_validation_labels_are_an_error(work, tmp_path, capsys):
    (tmp_path / "val.csv").write_text("text,label\nRash on both arms.,dermatological\nCough.,respiratory\n")
    with pytest.raises(SystemExit) as exit_info:
        run("classify", work, tmp_path / "run", f"data.validation={tmp_path / 'val.csv'}")
    assert exit_info.value.code == 2
    assert "validation has labels that train never shows: 'dermatological' (1x)" in capsys.readouterr().err


def test_a_killed_run_resumes_to_the_same_model(work, tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    run("classify", work, whole, "train.epochs=2")

    real = epochs.epoch_batches

    class Killed(Exception):
        pass

    class DiesAtBatch(list):  # the second epoch's 4th batch: after the step-2 checkpoint of that epoch
        def __getitem__(self, i):
            if i == 3:
                raise Killed
            return super().__getitem__(i)

    monkeypatch.setattr(epochs, "epoch_batches",
                        lambda n, size, seed, epoch: DiesAtBatch(real(n, size, seed, epoch)) if epoch == 1
                        else real(n, size, seed, epoch))
    killed = tmp_path / "killed"
    with pytest.raises(Killed):
        run("classify", work, killed, "train.epochs=2")
    assert (killed / "ckpt" / "state.pt").is_file() and not (killed / "report.json").exists()
    monkeypatch.setattr(epochs, "epoch_batches", real)
    report = run("classify", work, killed, "train.epochs=2")
    assert report["steps"] == json.loads((whole / "report.json").read_text())["steps"] == 12
    a, b = load_file(whole / "model" / "model.safetensors"), load_file(killed / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in read_jsonl(killed / "metrics.jsonl") if "loss" in r] == list(range(1, 13))

    # A finished run is not retrained; the same folder with another config is refused.
    written = (killed / "model" / "model.safetensors").stat().st_mtime_ns
    assert run("classify", work, killed, "train.epochs=2") == report
    assert (killed / "model" / "model.safetensors").stat().st_mtime_ns == written
    with pytest.raises(SystemExit):
        run("classify", work, killed, "train.epochs=3")


def test_help_shows_an_example(cli):
    for task in ("classify", "tokens"):
        proc = cli("finetune", task, "train", "--help")
        assert proc.returncode == 0, proc.stderr
        assert f"Example: cmbert finetune {task} train --config configs/finetune/{task}/demo.yaml" in proc.stdout
