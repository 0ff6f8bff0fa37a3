"""`cmbert embed` and cmbert/core/embeddings.py beyond the trajectory model: the three poolings against stock
transformers (our unpadded ModernBERT path, and a tiny BERT read through `PaddedEncoder`), chunking at a model's
context, the disk cache (a hit loads nothing; weights, tokenizer files, text and pooling invalidate it), the output
files, and the command line on every input format. Tiny models built from configs into tmp folders; CPU, fp32."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import transformers
from conftest import randomize_, save_tiny_encoder

import cmbert.core.embeddings as embeddings
from cmbert.cli import main as cmbert_main
from cmbert.core.embeddings import (
    POOLINGS,
    embed_texts,
    load_encoder,
    model_hash,
    quiet_from_pretrained,
    read_embeddings,
)
from cmbert.embed import embed_file

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models on a shared CPU (tests/conftest.py)

NOTES = [
    "Chest pain radiating to the left arm; troponin negative twice, discharged on aspirin.",
    "Cellulitis of the left leg treated with cefazolin, afebrile at discharge.",
    "History of hypertension and diabetes; metformin continued, lisinopril increased.",
    "Chest x-ray shows no acute process. No pneumonia, no effusion.",
]
SHORT = NOTES[0]  # one chunk of every model here
LONG = " ".join(NOTES * 3)  # many chunks of 16 or 32 tokens, the last one shorter
BERT_CONTEXT = 32  # the tiny BERT's max_position_embeddings: LONG is chunked at it
RUN = {"device": "cpu", "precision": "fp32", "progress": False}  # embed_file on CPU in fp32, quietly


def reweigh(folder: Path, seed: int) -> None:
    """Give a saved tiny ModernBERT O(1) random weights (`randomize_`): attention is sharp, so a wrong window or
    chunk shows, and a new seed stands for a retrained model."""
    from cmbert.modeling import ModernBertForMaskedLM

    randomize_(quiet_from_pretrained(ModernBertForMaskedLM, folder), seed).save_pretrained(folder)


def save_tiny_bert(folder: Path) -> Path:
    """A BertModel (width 16, context BERT_CONTEXT) with a BertTokenizerFast over a WordPiece vocabulary of NOTES'
    words, the family of the E5 / BGE embedding models."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir()
    words = sorted(set(re.findall(r"\w+|[^\w\s]", " ".join(NOTES).lower())))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab=str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                        num_attention_heads=2, max_position_embeddings=BERT_CONTEXT, pad_token_id=0)
    randomize_(BertModel(config)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> SimpleNamespace:
    from cmbert.core.tokenizer_files import save_tokenizer
    from cmbert.pretrain.tokenizer import train_tokenizer

    work = tmp_path_factory.mktemp("embed")
    save_tokenizer(train_tokenizer(NOTES * 10, vocab_size=384), work / "tokenizer")
    save_tiny_encoder(work / "modernbert", work / "tokenizer")
    reweigh(work / "modernbert", seed=0)
    return SimpleNamespace(modernbert=work / "modernbert", bert=save_tiny_bert(work / "bert"))


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def chunks_of(tokenizer, text: str, chunk_length: int) -> list[list[int]]:
    """[CLS] piece [SEP] chunks of at most `chunk_length` tokens, written out here rather than taken from `collate`."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    step = chunk_length - 2
    return [[tokenizer.cls_token_id, *ids[s:s + step], tokenizer.sep_token_id] for s in range(0, len(ids), step)]


@torch.no_grad()
def chunk_states(model, chunks: list[list[int]], pad_id: int) -> list[torch.Tensor]:
    """Each chunk's final states from a stock transformers model, all read as one right-padded batch with an
    attention mask."""
    ids = torch.full((len(chunks), max(map(len, chunks))), pad_id)
    mask = torch.zeros_like(ids)
    for row, chunk in enumerate(chunks):
        ids[row, :len(chunk)] = torch.tensor(chunk)
        mask[row, :len(chunk)] = 1
    states = model(input_ids=ids, attention_mask=mask).last_hidden_state
    return [states[row, :len(chunk)] for row, chunk in enumerate(chunks)]


def manual_pool(states: list[torch.Tensor], pooling: str) -> np.ndarray:
    """The module docstring's poolings, from per-chunk states."""
    if pooling == "mean":
        return torch.cat(states).mean(0).numpy()
    if pooling == "cls":
        return torch.stack([s[0] for s in states]).mean(0).numpy()
    return torch.stack([s.mean(0) for s in states]).mean(0).numpy()


# --------------------------------------------------------------------------------------------------------- poolings


def test_modernbert_poolings_equal_stock_transformers(folders):
    """Our unpadded path against transformers' own ModernBertModel on the same folder: a note of one chunk, and a note
    read in 16-token chunks (chunk_mean weighs its short last chunk like the others, so it differs from mean)."""
    stock = quiet_from_pretrained(transformers.ModernBertModel, folders.modernbert).eval()
    encoder, tokenizer = load_encoder(folders.modernbert, torch.device("cpu"))
    context = stock.config.max_position_embeddings
    assert len(tokenizer(SHORT)["input_ids"]) > 16  # longer than the local attention window
    for text, chunk_length in ((SHORT, context), (LONG, 16)):
        chunks = chunks_of(tokenizer, text, chunk_length)
        assert (len(chunks) == 1) == (text is SHORT)
        states = chunk_states(stock, chunks, tokenizer.pad_token_id)
        got = {pooling: embed_texts(encoder, tokenizer, [text], context * 10, chunk_length, pooling)[0]
               for pooling in POOLINGS}
        for pooling in POOLINGS:
            np.testing.assert_allclose(got[pooling], manual_pool(states, pooling), rtol=0, atol=1e-4,
                                       err_msg=f"{pooling}, {len(chunks)} chunk(s)")
    assert len(chunks[-1]) < 16 and np.abs(got["chunk_mean"] - got["mean"]).max() > 1e-3


def test_another_model_family_is_chunked_at_its_context(folders, tmp_path):
    """A BERT folder goes through AutoModel on padded chunks of at most its 32 positions, wrapped in its own [CLS] /
    [SEP]; every pooling equals a masked forward of stock BertModel, and a smaller --chunk-length is respected."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(folders.bert)
    bert = quiet_from_pretrained(transformers.BertModel, folders.bert).eval()
    notes = write_jsonl(tmp_path / "notes.jsonl", [{"id": "short", "text": SHORT}, {"id": "long", "text": LONG}])
    assert len(tokenizer(SHORT)["input_ids"]) < BERT_CONTEXT < len(tokenizer(LONG)["input_ids"]) // 3
    for pooling, chunk_length in (("mean", None), ("cls", None), ("chunk_mean", None), ("chunk_mean", 12)):
        out = tmp_path / f"{pooling}-{chunk_length}.npz"
        summary = embed_file(folders.bert, notes, out, pooling=pooling, chunk_length=chunk_length,
                             cache_dir=tmp_path / "cache", **RUN)
        ids, vectors, meta = read_embeddings(out)
        assert ids == ["short", "long"] and vectors.shape == (2, 16) and vectors.dtype == np.float32
        assert meta["model_type"] == "bert" and meta["chunk_length"] == (chunk_length or BERT_CONTEXT)
        assert meta["dim"] == 16 and meta["count"] == 2 and summary["out"] == str(out)
        short, long = (chunks_of(tokenizer, text, meta["chunk_length"]) for text in (SHORT, LONG))
        states = chunk_states(bert, short + long, tokenizer.pad_token_id)  # the short note's last chunk is padded
        expected = [manual_pool(states[:len(short)], pooling), manual_pool(states[len(short):], pooling)]
        np.testing.assert_allclose(vectors, np.stack(expected), rtol=0, atol=1e-4, err_msg=f"{pooling}")
    # A chunk length beyond the context is cut to it: the same chunks, so the same cache file as the default.
    again = embed_file(folders.bert, notes, tmp_path / "wide.npz", pooling="chunk_mean", chunk_length=1000,
                       cache_dir=tmp_path / "cache", **RUN)
    assert again["chunk_length"] == BERT_CONTEXT and again["cache_hit"]


# ------------------------------------------------------------------------------------------------------------ cache


def test_cache_hits_load_nothing_and_every_input_of_the_vectors_invalidates_it(folders, tmp_path, monkeypatch):
    model, cache = tmp_path / "model", tmp_path / "cache"
    shutil.copytree(folders.modernbert, model)
    notes = write_jsonl(tmp_path / "notes.jsonl", [{"id": f"n{i}", "text": t} for i, t in enumerate(NOTES)])

    def run(out: str, input: Path = notes, pooling: str = "mean") -> tuple[dict, np.ndarray]:
        summary = embed_file(model, input, tmp_path / out, pooling=pooling, cache_dir=cache, **RUN)
        return summary, read_embeddings(tmp_path / out)[1]

    def cache_files() -> int:
        return len(list(cache.glob("embeddings-*.npz")))

    first, vectors = run("first.npz")
    assert not first["cache_hit"] and cache_files() == 1 and first["model_hash"] == model_hash(model)

    def must_not_load(*args, **kwargs):
        raise AssertionError("the encoder was loaded on a cache hit")

    with monkeypatch.context() as patch:
        patch.setattr(embeddings, "load_encoder", must_not_load)
        again, same = run("again.npz")
    assert again["cache_hit"] and again["cache_file"] == first["cache_file"] and cache_files() == 1
    np.testing.assert_array_equal(same, vectors)

    assert not run("cls.npz", pooling="cls")[0]["cache_hit"] and cache_files() == 2

    edited = write_jsonl(tmp_path / "edited.jsonl", [{"id": f"n{i}", "text": t} for i, t in enumerate(NOTES)][:-1]
                         + [{"id": "n3", "text": NOTES[-1] + " Afebrile."}])
    summary, changed = run("edited.npz", input=edited)
    assert not summary["cache_hit"] and cache_files() == 3
    np.testing.assert_allclose(changed[:-1], vectors[:-1], rtol=0, atol=1e-6)
    assert not np.allclose(changed[-1], vectors[-1], atol=1e-3)

    reweigh(model, seed=1)  # retrained weights, same notes
    summary, retrained = run("retrained.npz")
    assert not summary["cache_hit"] and cache_files() == 4 and summary["model_hash"] != first["model_hash"]
    assert not np.allclose(retrained, vectors, atol=1e-3)


@pytest.mark.parametrize("name", ["tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "special_tokens_map.json",
                                  "spiece.model", "sentencepiece.bpe.model"])
def test_model_hash_covers_every_tokenizer_file(tmp_path, name):
    (tmp_path / "config.json").write_text("{}")
    before = model_hash(tmp_path)
    (tmp_path / name).write_text("a")
    added = model_hash(tmp_path)
    (tmp_path / name).write_text("b")
    assert len({before, added, model_hash(tmp_path)}) == 3


def test_model_hash_of_a_modernbert_folder_is_what_it_was(folders):
    """A folder of weights, config and tokenizer.json hashes as before the other families' files counted, so the
    trajectory models' recorded encoder hashes and their caches stay valid."""
    digest = hashlib.sha256()
    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"):
        digest.update(name.encode() + (folders.modernbert / name).read_bytes())
    assert model_hash(folders.modernbert) == digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------- command line


def cmbert(capsys, *args) -> tuple[int, str]:
    """`cmbert ...` in this process, as the console script runs it: (exit status, stderr)."""
    try:
        cmbert_main([str(a) for a in args])
        status = 0
    except SystemExit as exit:
        status = exit.code
    return status, capsys.readouterr().err


def test_cli_embeds_every_input_format_in_input_order(folders, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CMBERT_DEBUG", raising=False)
    options = ("--model", folders.modernbert, "--cache", tmp_path / "cache", "--device", "cpu", "--precision", "fp32")
    table = tmp_path / "notes.csv"
    table.write_text('note_id,subject_id,text\nn1,7,"' + NOTES[0] + '"\nn2,7,"  "\nn3,8,"' + NOTES[1] + '"\n')
    status, err = cmbert(capsys, "embed", "--input", table, "--out", tmp_path / "csv.npz", *options)
    assert status == 0, err
    summary = err.strip().splitlines()[-1]
    assert summary.startswith(f"2 notes (empty_text 1 skipped) -> {tmp_path / 'csv.npz'}: 32-d mean embeddings "
                              "(embedded and cached"), summary
    ids, from_csv, meta = read_embeddings(tmp_path / "csv.npz")
    assert ids == ["n1", "n3"] and from_csv.shape == (2, 32)
    assert meta["skipped"] == {"empty_text": 1} and meta["count"] == 2 and meta["max_tokens"] == 8192
    assert meta["chunk_length"] == 128 and meta["pooling"] == "mean"  # the tiny encoder's context

    lines = write_jsonl(tmp_path / "notes.jsonl", [{"id": "n3", "text": NOTES[1]}, {"id": "n2", "text": ""},
                                                   {"note_id": 1, "text": NOTES[0]}])
    status, err = cmbert(capsys, "embed", "--input", lines, "--out", tmp_path / "jsonl.jsonl.gz", *options)
    assert status == 0 and "(empty_text 1 skipped)" in err, err
    with gzip.open(tmp_path / "jsonl.jsonl.gz", "rt") as file:
        assert [json.loads(line)["id"] for line in file] == ["n3", "1"]
    ids, from_jsonl, meta = read_embeddings(tmp_path / "jsonl.jsonl.gz")
    assert ids == ["n3", "1"] and meta == {}
    np.testing.assert_allclose(from_jsonl, from_csv[::-1], rtol=0, atol=1e-6)

    text = tmp_path / "ed_visit.txt"
    text.write_text(NOTES[2])
    status, err = cmbert(capsys, "embed", "--input", text, "--out", tmp_path / "text.jsonl", "--pooling", "cls",
                         *options)
    assert status == 0, err
    ids, vector, _ = read_embeddings(tmp_path / "text.jsonl")
    assert ids == ["ed_visit"] and vector.shape == (1, 32)

    status, err = cmbert(capsys, "embed", "--input", table, "--out", tmp_path / "rerun.npz", *options)
    assert status == 0 and "(cache hit, nothing embedded" in err, err
    np.testing.assert_array_equal(read_embeddings(tmp_path / "rerun.npz")[1], from_csv)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--model", "no-such-model", "no-such-model: no config.json"),
    ("--out", "embeddings.csv", "embeddings.csv: embeddings are written as .npz, .jsonl, .jsonl.gz"),
    ("--pooling", "max", "pooling: expected one of 'mean', 'cls', 'chunk_mean', got 'max'"),
    ("--input", "no-such-notes.csv", "no-such-notes.csv"),
])
def test_cli_errors_are_one_line_before_any_work(folders, tmp_path, capsys, monkeypatch, option, value, message):
    monkeypatch.delenv("CMBERT_DEBUG", raising=False)
    notes = write_jsonl(tmp_path / "notes.jsonl", [{"id": "n1", "text": SHORT}])
    args = {"--model": folders.modernbert, "--input": notes, "--out": tmp_path / "out.npz", "--cache": tmp_path / "c"}
    args[option] = tmp_path / value if option != "--pooling" else value
    status, err = cmbert(capsys, "embed", *[item for pair in args.items() for item in pair])
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("cmbert: error: ") and message in lines[0], err
    assert not (tmp_path / "c").exists() and not list(tmp_path.glob("out.npz*"))
