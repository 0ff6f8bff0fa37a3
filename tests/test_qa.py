"""The extractive QA recipe (`cmbert finetune qa train`, `cmbert predict qa`): our QA model against transformers',
the SQuAD v2 metric by hand, the readers (SQuAD v1.1 / v2.0 JSON, JSONL, `datasets`, bad records counted), windows
and span alignment at window edges, post-processing, and end-to-end runs on generated radiology reports: learning,
export to transformers (Auto class; 4.57's pipeline in the slow tier), LoRA on a pruned encoder read as SQuAD v1.1,
resume after a kill, `cmbert predict qa`."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from conftest import OFFLINE, build_pair, padded_batch, save_tiny_encoder, tiny_config
from safetensors.torch import load_file

import cmbert.core.loop as epochs
import cmbert.modeling
from cmbert import cli
from cmbert.core.config import ConfigError
from cmbert.core.io import ReadError
from cmbert.finetune.qa.config import load_qa_config
from cmbert.finetune.qa.data import QaExample, read_qa_split
from cmbert.finetune.qa.metrics import exact_match, normalize_answer, squad_v2_scores, token_f1
from cmbert.finetune.qa.spans import predict_answers, window_spans
from cmbert.finetune.qa.windows import answer_tokens, collate_windows, make_windows, window_starts

pytestmark = pytest.mark.usefixtures("one_thread")

PRESET = Path(__file__).resolve().parents[1] / "configs" / "finetune" / "qa" / "demo.yaml"
CONTEXT = ("FINDINGS: There is a 8 mm solid nodule in the right upper lobe. No pleural effusion. The heart is normal "
           "in size. An enlarged subcarinal lymph node measures 14 mm. Small left pleural effusion.")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Generated SQuAD v2 files (40 reports), a small byte-level BPE trained on them, and a tiny encoder."""
    from cmbert.core.tokenizer_files import save_tokenizer
    from cmbert.pretrain.tokenizer import train_tokenizer

    work = tmp_path_factory.mktemp("qa")
    cli.main(["data", "qa", "--out", str(work / "data"), "--reports", "40"])  # the README's command
    texts = []
    for split in ("train", "validation", "test"):
        for article in json.loads((work / "data" / f"{split}.json").read_text())["data"]:
            for paragraph in article["paragraphs"]:
                texts += [paragraph["context"]] + [q["question"] for q in paragraph["qas"]]
    save_tokenizer(train_tokenizer(texts, vocab_size=512, model_max_length=128), work / "tokenizer")
    save_tiny_encoder(work / "encoder", work / "tokenizer")
    return work


def run(work: Path, out: Path, *extra: str) -> dict:
    """`cmbert finetune qa train` in this process (one thread, no console-script start-up)."""
    data = work / "data"
    cli.main(["finetune", "qa", "train", "--config", str(PRESET), f"out={out}", f"model.init_from={work / 'encoder'}",
              f"data.train={data / 'train.json'}", f"data.validation={data / 'validation.json'}",
              f"data.test={data / 'test.json'}", "model.max_length=128", "model.doc_stride=32",
              "model.max_question_tokens=16", "train.epochs=5", "train.patience=5", "train.lr=5e-3",
              "train.head_lr=5e-3", "train.batch_size=16", "train.checkpoint_every_steps=5", "logging.every_steps=1",
              "logging.wandb=disabled", *extra])
    return json.loads((out / "report.json").read_text())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def squad_file(path: Path, paragraphs: list[dict], version: str = "v2.0") -> Path:
    path.write_text(json.dumps({"version": version, "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return path


# --- the model ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_qa_model_matches_transformers(side, attn):
    config = tiny_config(num_hidden_layers=4, global_attn_every_n_layers=2, local_attention=16,
                         global_rope_theta=500.0, local_rope_theta=100.0)
    ours, theirs = build_pair(config, cmbert.modeling.ModernBertForQuestionAnswering,
                              transformers.ModernBertForQuestionAnswering, attn)
    ids, mask = padded_batch([40, 17, 3], side)
    starts, ends = torch.tensor([5, 0, 1]), torch.tensor([9, 0, 2])
    with torch.no_grad():
        got = ours(ids, mask, start_positions=starts, end_positions=ends)
        want = theirs(input_ids=ids, attention_mask=mask)
    real = mask.bool()
    assert got.start_logits.shape == want.start_logits.shape == (3, 40)
    assert (got.start_logits - want.start_logits)[real].abs().max() <= 1e-4
    assert (got.end_logits - want.end_logits)[real].abs().max() <= 1e-4
    assert got.start_logits[~real].abs().max() == 0
    # The loss: transformers' mean of start and end CE, over each row's real tokens only (padding never competes).
    if side == "right":
        manual = [F.cross_entropy(logits[r, : int(mask[r].sum())][None], target[r : r + 1])
                  for logits, target in ((got.start_logits, starts), (got.end_logits, ends)) for r in range(3)]
        torch.testing.assert_close(got.loss, (sum(manual[:3]) / 3 + sum(manual[3:]) / 3) / 2)
    # Without padding the two losses are the same computation; a position past the input is ignored in both.
    full, full_mask = padded_batch([20, 20], side)
    s, e = torch.tensor([3, 7]), torch.tensor([5, 25])
    with torch.no_grad():
        ours_loss = ours(full, full_mask, start_positions=s, end_positions=e).loss
        theirs_loss = theirs(input_ids=full, attention_mask=full_mask, start_positions=s, end_positions=e).loss
    torch.testing.assert_close(ours_loss, theirs_loss, atol=1e-5, rtol=1e-5)
    # Packed input: one logit per real token in stream order, and the same loss (positions within each document).
    if side == "right":
        cu = torch.tensor([0, *torch.cumsum(mask.sum(1), 0).tolist()], dtype=torch.int32)
        with torch.no_grad():
            packed = ours(input_ids=ids[real], cu_seqlens=cu, start_positions=starts, end_positions=ends)
        torch.testing.assert_close(packed.start_logits, got.start_logits[real], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(packed.loss, got.loss, atol=1e-5, rtol=1e-5)


def test_qa_model_loads_an_mlm_checkpoint_with_a_fresh_head(work):
    model = cmbert.modeling.ModernBertForQuestionAnswering.from_pretrained(work / "encoder", num_labels=2)
    mlm = load_file(work / "encoder" / "model.safetensors")
    torch.testing.assert_close(model.head.dense.weight, mlm["head.dense.weight"])
    assert model.classifier.weight.shape == (2, 32) and model.classifier.bias.abs().max() == 0


# --- the SQuAD v2 metric -----------------------------------------------------------------------------------------

def test_normalization_exact_match_and_f1_by_hand():
    assert normalize_answer("The  8-mm Nodule, in the R.U.L.!") == "8mm nodule in rul"
    assert normalize_answer("an effusion") == "effusion" and normalize_answer("theme") == "theme"  # whole words only
    assert exact_match("A small effusion.", "small   effusion") == 1 and exact_match("8 mm", "8 cm") == 0
    # gold [8, mm, solid, nodule], predicted [solid, nodule, in, lobe]: 2 shared, P = R = 1/2, F1 = 1/2
    assert token_f1("8 mm solid nodule", "the solid nodule in the lobe") == pytest.approx(0.5)
    # gold [left, pleural, effusion], predicted [effusion]: P = 1, R = 1/3, F1 = 2 * 1/3 / (4/3) = 1/2
    assert token_f1("left pleural effusion", "effusion") == pytest.approx(0.5)
    # repeated tokens count as often as both sides have them: gold [no, no, effusion], predicted [no, effusion]
    assert token_f1("no no effusion", "no effusion") == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))
    assert token_f1("", "") == 1.0 and token_f1("", "nodule") == 0.0 and token_f1("nodule", "") == 0.0
    assert token_f1("the", "a") == 1.0  # both normalize to nothing


def test_squad_v2_scores_and_best_threshold_by_hand():
    golds = {"a": ["8 mm", "8 mm nodule"], "b": ["right upper lobe"], "c": [], "d": []}
    predictions = {"a": "8 mm nodule", "b": "right lobe", "c": "14 mm", "d": ""}
    # Without no-answer scores every prediction stands: a EM 1 F1 1; b EM 0 F1 2*(2/2)*(2/3)/(5/3) = 0.8;
    # c (unanswerable, answered) 0; d (unanswerable, empty) 1.
    s = squad_v2_scores(golds, predictions)
    assert s["total"] == 4 and s["exact"] == pytest.approx(50.0) and s["f1"] == pytest.approx(70.0)
    assert s["HasAns_total"] == 2 and s["HasAns_f1"] == pytest.approx(90.0) and s["HasAns_exact"] == 50.0
    assert s["NoAns_total"] == 2 and s["NoAns_exact"] == 50.0
    # No-answer scores: c 0.9 (sure there is none), b 0.6, a 0.1, d 0.2. Threshold 0.5: b and c become "".
    na = {"a": 0.1, "b": 0.6, "c": 0.9, "d": 0.2}
    s = squad_v2_scores(golds, predictions, na, threshold=0.5)
    assert s["exact"] == pytest.approx(75.0) and s["f1"] == pytest.approx(75.0)  # a 1, b 0, c 1, d 1
    # Best-threshold search, from all-empty (2 of 4 = 50 %) by increasing score: a (+1 F1) -> 75 at 0.1; d (empty,
    # no change); b (+0.8) -> 95 at 0.6; c (answered, unanswerable: -1) -> 70. Best F1 95 at 0.6.
    assert s["best_f1"] == pytest.approx(95.0) and s["best_f1_thresh"] == pytest.approx(0.6)
    assert s["best_exact"] == pytest.approx(75.0) and s["best_exact_thresh"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="no prediction"):
        squad_v2_scores(golds, {"a": ""})


# --- readers -----------------------------------------------------------------------------------------------------

def test_squad_v1_and_v2_files_are_read(tmp_path):
    context = "Heart normal. Small left pleural effusion."
    v1 = squad_file(tmp_path / "v1.json", [{"context": context, "qas": [
        {"id": "q1", "question": "Which side?", "answers": [{"text": "left", "answer_start": 20}] * 2}]}], "1.1")
    split = read_qa_split(v1, "train")
    assert split.examples[0].answers == [("left", 20), ("left", 20)] and split.report()["unanswerable"] == 0
    v2 = squad_file(tmp_path / "v2.json", [{"context": context, "qas": [
        {"id": "q1", "question": "Which side?", "answers": [{"text": "left", "answer_start": 20}],
         "is_impossible": False},
        {"id": "q2", "question": "Nodule size?", "answers": [], "is_impossible": True,
         "plausible_answers": [{"text": "Small", "answer_start": 14}]}]}])
    split = read_qa_split(v2, "validation")
    assert [e.answerable for e in split.examples] == [True, False] and split.report()["contexts"] == 1
    assert read_qa_split(v2, "train", unanswerable=False).counter.skipped == {"unanswerable": 1}
    # The `datasets` layout as JSONL, gzipped: same questions.
    lines = [{"id": "q1", "question": "Which side?", "context": context,
              "answers": {"text": ["left"], "answer_start": [20]}},
             {"id": "q2", "question": "Nodule size?", "context": context, "answers": {"text": [], "answer_start": []}}]
    with gzip.open(tmp_path / "v2.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(line) + "\n" for line in lines))
    flat = read_qa_split(tmp_path / "v2.jsonl.gz", "test")
    assert [(e.id, e.answers) for e in flat.examples] == [(e.id, e.answers) for e in split.examples]


def test_bad_records_are_counted_by_reason_and_answers_repaired(tmp_path):
    context = "There is a 8 mm nodule. No effusion."
    good = {"question": "Size?", "context": context, "answers": {"text": ["8 mm"], "answer_start": [11]}}
    lines = [
        json.dumps({**good, "id": "ok"}),
        json.dumps({**good, "id": "off", "answers": [{"text": " 8 mm", "answer_start": 7}]}),  # repaired, trimmed
        json.dumps({**good, "id": "gone", "answers": [{"text": "9 mm", "answer_start": 11}]}),
        json.dumps({**good, "id": "ok"}),  # duplicate
        json.dumps({**good, "id": "blank", "question": "  "}),
        json.dumps({**good, "id": "noctx", "context": None}),
        json.dumps({**good, "id": "bad", "answers": {"text": ["8 mm"], "answer_start": []}}),
        json.dumps({**good}),  # no id
        "{not json",
        json.dumps([1, 2]),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"id": "\xff"}\n')
    split = read_qa_split(path, "train")
    assert [e.id for e in split.examples] == ["ok", "off"]
    assert split.examples[1].answers == [("8 mm", 11)]
    assert split.counter.skipped == {"answer_not_in_context": 1, "duplicate_id": 1, "empty_question": 1,
                                     "missing_context": 1, "malformed_answers": 1, "missing_id": 1, "not_json": 1,
                                     "malformed_record": 1, "invalid_utf8": 1}
    report = split.report()
    assert report["read"] == 11 and report["answers_repaired"] == 1 and report["answers_dropped"] == 1
    assert "8 mm" not in json.dumps(report) and "Size" not in json.dumps(report)  # locations only, never text
    # Whole-file errors name the file.
    (tmp_path / "list.json").write_text(json.dumps({"version": "v2.0", "rows": []}))
    with pytest.raises(ValueError, match="not a SQuAD file"):
        read_qa_split(tmp_path / "list.json", "train")
    (tmp_path / "broken.json").write_text('{"data": [')
    with pytest.raises(ReadError, match="broken.json: not JSON"):
        read_qa_split(tmp_path / "broken.json", "train")
    with pytest.raises(FileNotFoundError):
        read_qa_split(tmp_path / "missing.json", "train")


def test_a_datasets_folder_is_read(tmp_path):
    import datasets

    rows = {"id": ["a", "b"], "question": ["Size?", "Side?"], "context": [CONTEXT] * 2,
            "answers": [{"text": ["8 mm"], "answer_start": [CONTEXT.index("8 mm")]}, {"text": [], "answer_start": []}]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows), "dev": datasets.Dataset.from_dict(rows)}) \
        .save_to_disk(str(tmp_path / "ds"))
    split = read_qa_split(tmp_path / "ds", "validation")
    assert [e.answers for e in split.examples] == [[("8 mm", CONTEXT.index("8 mm"))], []]
    assert split.examples[0].where == "ds[dev] row 1 (id a)"


# --- windows and spans -------------------------------------------------------------------------------------------

def test_windows_cover_the_context_and_targets_lie_whole_inside(work):
    tokenizer = transformers.AutoTokenizer.from_pretrained(work / "tokenizer")
    context_ids = tokenizer(CONTEXT, add_special_tokens=False)["input_ids"]
    examples = []
    for answer in ("8 mm", "right upper lobe", "14 mm", "Small left pleural effusion"):
        start = CONTEXT.index(answer)
        examples.append(QaExample(answer, "What is it?", CONTEXT, [(answer, start)]))
    examples.append(QaExample("none", "Is there a pneumothorax?", CONTEXT, []))
    windows = make_windows(tokenizer, examples, max_length=24, doc_stride=6, max_question_tokens=8)
    question = len(tokenizer("What is it?", add_special_tokens=False)["input_ids"])
    room = 24 - question - 3
    assert window_starts(len(context_ids), room, 6) == windows.token_start[: windows.example.count(0)]
    assert windows.example.count(0) > 3  # the context really is split
    for index, example in enumerate(examples):
        ws = [w for w, e in enumerate(windows.example) if e == index]
        covered = set()
        for w in ws:
            first, n = windows.token_start[w], windows.n_context[w]
            covered |= set(range(first, first + n))
            assert windows.ids[w][windows.context_start[w] : windows.context_start[w] + n] == \
                context_ids[first : first + n]
            assert len(windows.ids[w]) <= 24
        assert covered == set(range(len(context_ids)))  # every context token is in some window
        if not example.answers:
            assert all(windows.start_positions[w] == windows.end_positions[w] == 0 for w in ws)
            continue
        text, start = example.answers[0]
        first_token, last_token = answer_tokens(windows.offsets[index], start, start + len(text))
        targeted = [w for w in ws if windows.start_positions[w] > 0]
        assert targeted  # answers shorter than the stride lie whole in some window
        for w in ws:
            whole = windows.token_start[w] <= first_token and last_token < windows.token_start[w] + windows.n_context[w]
            assert (w in targeted) == whole  # a window holding part of the answer targets [CLS]
        for w in targeted:
            i = windows.start_positions[w] - windows.context_start[w] + windows.token_start[w]
            j = windows.end_positions[w] - windows.context_start[w] + windows.token_start[w]
            offsets = windows.offsets[index]
            assert CONTEXT[offsets[i, 0] : offsets[j, 1]] == text  # exact, leading space of " mm" trimmed
    # An answer straddling a window edge: some window holds part of it and targets [CLS].
    long = examples[3]
    first_token, last_token = answer_tokens(windows.offsets[3], long.answers[0][1],
                                            long.answers[0][1] + len(long.answers[0][0]))
    partial = [w for w, e in enumerate(windows.example) if e == 3 and windows.start_positions[w] == 0
               and windows.token_start[w] <= last_token and first_token < windows.token_start[w] + windows.n_context[w]]
    assert partial


def test_demo_answers_map_back_exactly_through_offsets(work):
    tokenizer = transformers.AutoTokenizer.from_pretrained(work / "tokenizer")
    split = read_qa_split(work / "data" / "train.json", "train")
    windows = make_windows(tokenizer, split.examples, 64, 16, 16)
    seen = 0
    for w, index in enumerate(windows.example):
        if windows.start_positions[w]:
            example, offsets = split.examples[index], windows.offsets[index]
            i = windows.start_positions[w] - windows.context_start[w] + windows.token_start[w]
            j = windows.end_positions[w] - windows.context_start[w] + windows.token_start[w]
            assert example.context[offsets[i, 0] : offsets[j, 1]] == example.answers[0][0]
            seen += 1
    assert seen >= sum(e.answerable for e in split.examples)
    assert windows.truncated_questions == 0 and max(np.bincount(windows.example)) > 2
    # Answers longer than doc_stride + 1 tokens may straddle every window edge: counted, none at the trained stride.
    assert make_windows(tokenizer, split.examples, 128, 32, 16).unreachable_answers == 0
    assert make_windows(tokenizer, split.examples, 24, 0, 16).unreachable_answers > windows.unreachable_answers


def test_post_processing_keeps_spans_in_the_context_and_applies_the_threshold(work):
    tokenizer = transformers.AutoTokenizer.from_pretrained(work / "tokenizer")
    example = QaExample("q", "What is the size?", CONTEXT, [("8 mm", CONTEXT.index("8 mm"))])
    windows = make_windows(tokenizer, [example], 128, 16, 16)
    assert len(windows) == 1
    n, first = len(windows.ids[0]), windows.context_start[0]
    i, j = answer_tokens(windows.offsets[0], CONTEXT.index("8 mm"), CONTEXT.index("8 mm") + 4)
    start, end = np.zeros(n), np.zeros(n)
    assert n > first + j + 24
    start[1] = end[2] = 50.0  # a span inside the question: never predicted
    start[first + j + 2] = end[first + j + 22] = 8.5  # 17.0 but 21 tokens: longer than max_answer_tokens
    start[first + i], end[first + j] = 5.0, 4.0  # the answer: 9.0
    start[0], end[0] = 3.0, 3.0  # null 6.0
    [prediction] = predict_answers([example], windows, [start], [end], max_answer_tokens=10, n_best=5)
    assert CONTEXT[prediction.best.start : prediction.best.end] == "8 mm" and prediction.best.score == 9.0
    assert prediction.null_score == 6.0 and prediction.score_diff == -3.0
    assert prediction.answer(CONTEXT, threshold=0.0) == "8 mm" and prediction.answer(CONTEXT, -3.5) == ""
    assert prediction.answer(CONTEXT, None) == "8 mm"  # no threshold: always answer (SQuAD v1.1)
    scores = [span.score for span in prediction.n_best]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    # The exact top spans of one window: every (i, j) with i <= j < i + 3, best first.
    s, e = np.array([1.0, 0.0, 2.0]), np.array([0.0, 3.0, 1.0])
    assert window_spans(s, e, 3, 3) == [(4.0, 0, 1), (3.0, 2, 2), (3.0, 1, 1)]


# --- config ------------------------------------------------------------------------------------------------------

def test_config_errors_name_their_key(work, tmp_path):
    data = work / "data"
    base = [f"model.init_from={work / 'encoder'}", f"data.train={data / 'train.json'}",
            f"data.validation={data / 'validation.json'}", "data.test=null"]
    load_qa_config(PRESET, base)
    for override, key in (("model.max_length=4096", "model.max_length"), ("model.doc_stride=200", "model.doc_stride"),
                          ("data.validation=null", "data.validation"), ("eval.n_best=0", "eval.n_best"),
                          ("model.max_question_tokens=120", "model.max_question_tokens"),
                          (f"data.train={tmp_path / 'nope.json'}", "data.train"),
                          ("data.format=csv", "data.format")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_qa_config(PRESET, [*base, override])


# --- end to end --------------------------------------------------------------------------------------------------

def test_qa_learns_and_exports_a_stock_model_that_predicts_as_trained(work, tmp_path, capsys):
    out = tmp_path / "qa"
    report = run(work, out)
    printed = capsys.readouterr()
    assert "validation exact" in printed.out and "always-empty f1" in printed.out
    test = report["test"]
    # A 2-layer width-32 encoder from random weights, 190 steps, with the threshold tuned on validation: better than
    # answering "" everywhere (which scores the unanswerable share).
    assert test["f1"] > test["empty_baseline_f1"] + 10, test
    assert report["threshold_tuned"] and report["validation"]["f1"] == pytest.approx(report["validation"]["best_f1"])
    d = report["data"]["train"]
    assert d["questions"] == 224 and d["windows"] > d["questions"] and d["multi_window_questions"] > 0
    assert not (out / "ckpt").exists() and report["provenance"]["peft"]
    saved = read_jsonl(out / "predictions" / "test.jsonl")
    assert len(saved) == test["total"]
    assert sum(r["f1"] for r in saved) / len(saved) * 100 == pytest.approx(test["f1"], abs=0.01)
    settings = json.loads((out / "model" / "qa_settings.json").read_text())
    assert settings["null_threshold"] == report["null_threshold"] and settings["max_length"] == 128

    # The export loads in transformers without our code and gives our model's logits.
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(out / "model").eval()
    assert type(model).__module__.startswith("transformers.")
    ours = cmbert.modeling.ModernBertForQuestionAnswering.from_pretrained(out / "model").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out / "model")
    split = read_qa_split(work / "data" / "test.json", "test")
    windows = make_windows(tokenizer, split.examples[:4], 128, 32, 16)
    ids, mask, _, _ = collate_windows(windows, range(len(windows)), tokenizer.pad_token_id)
    with torch.no_grad():
        theirs, mine = model(input_ids=ids, attention_mask=mask), ours(ids, mask)
    real = mask.bool()
    for key in ("start_logits", "end_logits"):
        assert (theirs[key] - mine[key])[real].abs().max() <= 1e-4
    assert "pipeline_tag: question-answering" in (out / "model" / "README.md").read_text()
    # transformers 5 removed the question-answering pipeline (and says so): there `cmbert predict qa` is the way. With
    # 4.x the pipeline runs (its own windowing and post-processing; the slow test below runs it in 4.57).
    from transformers import pipelines

    if "question-answering" in pipelines.SUPPORTED_TASKS:
        qa = transformers.pipeline("question-answering", model=str(out / "model"))
        answer = qa(question=split.examples[0].question, context=split.examples[0].context, max_seq_len=128,
                    doc_stride=32, handle_impossible_answer=True)
        assert {"answer", "score", "start", "end"} <= set(answer)
    else:
        assert "question-answering" in pipelines.REMOVED_TASKS

    # `cmbert predict qa` repeats training's windows and threshold: the same answers as the run's test predictions.
    cli.main(["predict", "qa", "--model", str(out / "model"), "--input", str(work / "data" / "test.json"),
              "--out", str(tmp_path / "answers.jsonl")])
    err = capsys.readouterr().err
    assert f"{test['total']} questions" in err and f"f1 {test['f1']:.1f}" in err
    assert split.examples[0].context[:20] not in err  # counts and scores only
    predicted = read_jsonl(tmp_path / "answers.jsonl")
    assert [(p["id"], p["answer"]) for p in predicted] == [(r["id"], r["answer"]) for r in saved]
    for p, example in zip(predicted, split.examples, strict=True):
        if p["answer"]:
            assert example.context[p["start"] : p["end"]] == p["answer"]


def test_lora_on_a_pruned_encoder_as_squad_v1(work, tmp_path):
    out = tmp_path / "lora"
    report = run(work, out, "model.lora.enabled=true", "model.lora.r=4", "model.lora.target_modules=[Wqkv]",
                 "model.lora.lr=1e-2", "model.prune.strategy=top", "model.prune.fraction=0.5", "train.epochs=1",
                 "data.unanswerable=false")
    assert report["prune"]["dropped"] == [1] and report["prune"]["layers"] == 1 and report["lora"]["enabled"]
    # SQuAD v1.1 reading: unanswerable questions skipped and counted, every question answered, no threshold.
    assert report["data"]["train"]["skipped"]["unanswerable"] == 224 - report["data"]["train"]["questions"] > 0
    assert report["null_threshold"] is None and "NoAns_f1" not in report["test"] and "best_f1" not in report["test"]
    assert all(r["answer"] for r in read_jsonl(out / "predictions" / "test.jsonl"))
    assert json.loads((out / "model" / "qa_settings.json").read_text())["null_threshold"] is None
    p = report["parameters"]
    head = 32 * 32 + 32 + 32 * 2 + 2  # head.dense (no bias), head.norm (no bias), classifier (start, end)
    assert p["adapter_parameters"] == 4 * (32 + 96) and p["trainable_parameters"] == p["adapter_parameters"] + head
    exported = load_file(out / "model" / "model.safetensors")
    assert not any("lora" in k for k in exported)
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["num_hidden_layers"] == 1 and config["architectures"] == ["ModernBertForQuestionAnswering"]
    transformers.AutoModelForQuestionAnswering.from_pretrained(out / "model")


def test_a_killed_run_resumes_to_the_same_model(work, tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    run(work, whole, "train.epochs=2")
    real = epochs.epoch_batches

    class Killed(Exception):
        pass

    class DiesAtBatch(list):  # the second epoch's 7th batch: after that epoch's step-5 checkpoint
        def __getitem__(self, i):
            if i == 6:
                raise Killed
            return super().__getitem__(i)

    monkeypatch.setattr(epochs, "epoch_batches", lambda n, size, seed, epoch: DiesAtBatch(real(n, size, seed, epoch))
                        if epoch == 1 else real(n, size, seed, epoch))
    killed = tmp_path / "killed"
    with pytest.raises(Killed):
        run(work, killed, "train.epochs=2")
    assert (killed / "ckpt" / "state.pt").is_file() and not (killed / "report.json").exists()
    monkeypatch.setattr(epochs, "epoch_batches", real)
    report = run(work, killed, "train.epochs=2")
    assert report["steps"] == json.loads((whole / "report.json").read_text())["steps"]
    a, b = load_file(whole / "model" / "model.safetensors"), load_file(killed / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [r["step"] for r in read_jsonl(killed / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, report["steps"] + 1))
    assert run(work, killed, "train.epochs=2") == report  # a finished run is returned, not retrained
    with pytest.raises(SystemExit):
        run(work, killed, "train.epochs=3")


def test_help_shows_an_example(cli):
    for args, example in ((("finetune", "qa", "train"), "cmbert finetune qa train --config configs/finetune/qa/demo"),
                          (("predict", "qa"), "cmbert predict qa --model"), (("data", "qa"), "cmbert data qa --out")):
        proc = cli(*args, "--help")
        assert proc.returncode == 0, proc.stderr
        assert f"Example: {example}" in proc.stdout


# Runs inside the transformers 4.57 venv: the export's logits, and its question-answering pipeline (removed in 5.x).
V4_QA_SCRIPT = """
import json, sys, torch, transformers
folder, inputs_path, out_path = sys.argv[1:4]
data = json.load(open(inputs_path))
model = transformers.AutoModelForQuestionAnswering.from_pretrained(folder, attn_implementation="sdpa").eval()
with torch.no_grad():
    out = model(input_ids=torch.tensor(data["ids"]), attention_mask=torch.tensor(data["mask"]))
qa = transformers.pipeline("question-answering", model=folder)
answer = qa(question=data["question"], context=data["context"], max_seq_len=128, doc_stride=32,
            handle_impossible_answer=True)
json.dump({"start": out.start_logits.tolist(), "end": out.end_logits.tolist(), "answer": answer,
           "class": type(model).__name__}, open(out_path, "w"))
"""


@pytest.mark.slow
def test_transformers_v4_loads_the_export_and_its_pipeline_answers(work, tmp_path, v4_python):
    from cmbert.core.tokenizer_files import save_tokenizer

    model = cmbert.modeling.ModernBertForQuestionAnswering.from_pretrained(work / "encoder", num_labels=2).eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(work / "tokenizer")
    save_tokenizer(tokenizer, folder)
    example = QaExample("q", "What is the size of the nodule?", CONTEXT * 3, [])
    windows = make_windows(tokenizer, [example], 128, 32, 16)
    ids, mask, _, _ = collate_windows(windows, range(len(windows)), tokenizer.pad_token_id)
    (tmp_path / "inputs.json").write_text(json.dumps({"ids": ids.tolist(), "mask": mask.tolist(),
                                                      "question": example.question, "context": example.context}))
    (tmp_path / "run_v4.py").write_text(V4_QA_SCRIPT)
    proc = subprocess.run([str(v4_python), str(tmp_path / "run_v4.py"), str(folder), str(tmp_path / "inputs.json"),
                           str(tmp_path / "v4.json")], capture_output=True, text=True,
                          env={**os.environ, **OFFLINE}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads((tmp_path / "v4.json").read_text())
    assert got["class"] == "ModernBertForQuestionAnswering" and len(windows) > 1
    with torch.no_grad():
        ours = model(ids, mask)
    real = mask.bool()
    for key in ("start", "end"):
        assert (torch.tensor(got[key]) - ours[f"{key}_logits"])[real].abs().max() <= 1e-4
    answer = got["answer"]["answer"]
    assert answer == "" or answer.strip() in example.context  # 4.x's pipeline keeps the BPE's leading space
