"""ICD heads: the label attention over unpadded chunks, its numerics, and the model folder format."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from conftest import CLS, SEP, tiny_config

import cmbert.core.runtime as runtime
from cmbert.core.label_attention import TITLE_SCORE, IcdMeta, IcdModel, StateCache
from cmbert.core.notes import TokenizedNotes, collate, note_chunks, token_budget_batches
from cmbert.core.runtime import device_and_dtype
from cmbert.modeling import ModernBertForMaskedLM, enable_checkpointing

CODES = ["I50.9", "N18.3", "E11.9", "0DTJ4ZZ"]


class ToyTokenizer:
    """Just enough of a tokenizer for title initialisation: one id per character."""

    def __call__(self, texts, add_special_tokens=True, truncation=True, max_length=64):
        ids = [[3 + ord(ch) % 90 for ch in t[:max_length]] for t in texts]
        return {"input_ids": [[CLS, *x, SEP] for x in ids] if add_special_tokens else ids}


def meta(head="laat", max_length=16, max_chunks=4, queries_per_label=1) -> IcdMeta:
    return IcdMeta(head=head, codes=CODES, titles=["heart failure", "ckd stage 3", "diabetes", "appendectomy"],
                   kinds=["diagnosis"] * 3 + ["procedure"], train_counts=[30, 12, 5, 0], icd_version=10,
                   max_length=max_length, max_chunks=max_chunks, attention_dim=8, queries_per_label=queries_per_label)


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("encoder")
    torch.manual_seed(0)
    ModernBertForMaskedLM(tiny_config(max_position_embeddings=64, local_attention=8)).save_pretrained(folder)
    return folder


def notes(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(3, 100, n).astype(np.int32) for n in lengths]


def run(model, batch):
    return model(batch["input_ids"], batch["cu_seqlens"], batch["max_seqlen"], batch["note_chunks"])


def test_chunks_and_batches():
    chunks = note_chunks(np.arange(3, 33, dtype=np.int32), max_length=16, cls_id=CLS, sep_id=SEP)
    assert [len(c) for c in chunks] == [16, 16, 4]
    assert all(c[0] == CLS and c[-1] == SEP for c in chunks)
    assert np.array_equal(np.concatenate([c[1:-1] for c in chunks]), np.arange(3, 33))
    assert [len(c) for c in note_chunks(np.zeros(0, np.int32), 16, CLS, SEP)] == [2]
    b = collate(notes([5, 40, 14]), 16, CLS, SEP, labels=np.eye(3, 4, dtype=bool))
    assert b["note_chunks"].tolist() == [0, 1, 4, 5] and b["cu_seqlens"][-1] == len(b["input_ids"])
    assert b["labels"].dtype == torch.float32
    lengths = np.array([100, 5, 5, 300, 20, 7])
    for rng in (None, np.random.default_rng(0)):
        groups = token_budget_batches(lengths, 128, max_notes=3, rng=rng)
        assert sorted(np.concatenate(groups).tolist()) == list(range(6))  # every note once
        assert all(len(g) <= 3 and (len(g) == 1 or lengths[g].sum() + 2 * len(g) <= 128) for g in groups)


def test_label_attention_is_batch_and_padding_invariant(encoder_dir):
    """A note's logits do not depend on which notes share its batch (no attention across notes or chunks' padding)."""
    model = IcdModel.from_encoder(encoder_dir, meta(), n_train=50).eval()
    batch_notes = notes([5, 40, 14, 1, 63])
    with torch.no_grad():
        together = run(model, collate(batch_notes, 16, CLS, SEP))
        for i, n in enumerate(batch_notes):
            alone = run(model, collate([n], 16, CLS, SEP))
            torch.testing.assert_close(alone[0], together[i], atol=1e-5, rtol=1e-5)
    assert together.shape == (5, len(CODES)) and together.dtype == torch.float32


def test_precision_rule(monkeypatch):
    """auto = bf16 autocast on CUDA and on CPUs with native bf16, fp32 on other CPUs; explicit values win."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for native, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(runtime, "native_bf16_cpu", lambda native=native: native)
        assert device_and_dtype("auto") == (torch.device("cpu"), expected)
        assert device_and_dtype("fp32")[1] == torch.float32 and device_and_dtype("bf16")[1] == torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of"):
        device_and_dtype("fp16")
    with pytest.raises(ValueError, match="no CUDA device"):
        device_and_dtype("auto", "cuda")


def test_bf16_autocast_scores_follow_fp32(encoder_dir):
    """The CPU bf16 path (autocast; fp32 weights and softmax) gives the fp32 scores to bf16 accuracy, and gradients."""
    model = IcdModel.from_encoder(encoder_dir, meta(), n_train=50)
    batch = collate(notes([5, 40, 14, 63]), 16, CLS, SEP)
    with torch.no_grad():
        exact = run(model, batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = run(model, batch)
    assert fast.dtype == torch.float32 and torch.isfinite(fast).all()
    torch.testing.assert_close(fast, exact, atol=0.05, rtol=0.02)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        run(model, batch).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.head.parameters())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cached_states_give_the_encoder_logits(encoder_dir, dtype):
    """Head warm-up reads the frozen encoder's cached states, built and read inside the training loop's autocast."""
    model = IcdModel.from_encoder(encoder_dir, meta(), n_train=50).eval()
    pieces = notes([5, 40, 14, 63])
    tokens = TokenizedNotes(np.concatenate(pieces), np.concatenate(([0], np.cumsum([len(p) for p in pieces]))),
                            np.array([len(p) for p in pieces]))
    idx = np.array([3, 0, 2])
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        cache = StateCache(model, tokens, 64, 2, torch.device("cpu"), dtype)
        h, note_cu = cache.batch(idx)
        cached = model.classify(h.to(dtype), note_cu)
        direct = run(model, collate([pieces[i] for i in idx], 16, CLS, SEP))
    assert h.dtype == (torch.bfloat16 if dtype == torch.bfloat16 else torch.float16)
    torch.testing.assert_close(cached, direct, atol=0.02, rtol=0.01)


def test_attention_is_exactly_zero_on_padding_and_stable_at_extreme_scales(encoder_dir):
    model = IcdModel.from_encoder(encoder_dir, meta(), n_train=50).eval()
    h = torch.randn(2, 7, model.config.hidden_size)
    mask = torch.tensor([[True] * 7, [True] * 3 + [False] * 4])
    attn = model.head.attention(h, mask)
    assert torch.all(attn[1, :, 3:] == 0)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, len(CODES)))
    with torch.no_grad():  # the LAAT/PLM-ICD failure: huge states or queries overflow the softmax
        model.head.queries.mul_(1e4)
        huge = model.head(h * 1e4, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low_precision = model.head(h * 1e4, mask)
    assert torch.isfinite(model.head.attention(h * 1e4, mask)).all()
    assert huge.dtype == low_precision.dtype == torch.float32
    assert torch.isfinite(huge).all() and torch.isfinite(low_precision).all()


def test_fresh_head_starts_from_priors_and_titles(encoder_dir):
    model = IcdModel.from_encoder(encoder_dir, meta(), n_train=50, tokenizer=ToyTokenizer())
    p = torch.sigmoid(model.head.bias)
    assert p[0] > p[1] > p[2] > p[3] > 0  # training frequencies 30, 12, 5, 0 of 50 notes
    titles = ToyTokenizer()(meta().titles, add_special_tokens=False)["input_ids"]
    keys = title_keys(model, titles)
    # each query points along its title's key, scaled so that the title's own key scores TITLE_SCORE
    torch.testing.assert_close(torch.nn.functional.cosine_similarity(model.head.queries.data, keys),
                               torch.ones(len(CODES)))
    torch.testing.assert_close((model.head.queries.data * keys).sum(-1), torch.full((len(CODES),), TITLE_SCORE))
    random_init = IcdModel.from_encoder(encoder_dir, meta(), n_train=50, tokenizer=ToyTokenizer(), title_init=False)
    assert random_init.head.queries.abs().max() < 1  # no title: scores start near 0, attention near uniform


def title_keys(model, phrases):
    """The key of each phrase read alone, computed here from the encoder's padded-batch path one phrase at a time."""
    out = []
    with torch.no_grad():
        for ids in phrases:
            h = model.encoder(input_ids=torch.tensor([[CLS, *ids, SEP]])).last_hidden_state
            out.append(model.head.keys(h.mean(1))[0])
    return torch.stack(out)


def test_extra_queries_start_on_evidence_terms_and_add_up(encoder_dir, tmp_path, monkeypatch):
    terms = [[[40, 41], [50]], [], [[60, 61, 62], [70], [80]], [[90]]]  # code 2 has one term too many
    model = IcdModel.from_encoder(encoder_dir, meta(queries_per_label=3), n_train=50, tokenizer=ToyTokenizer(),
                                  terms=terms).eval()
    q = model.head.queries.data.view(len(CODES), 3, -1)
    titles = title_keys(model, ToyTokenizer()(meta().titles, add_special_tokens=False)["input_ids"])
    scale = TITLE_SCORE / titles.pow(2).sum(-1, keepdim=True)
    torch.testing.assert_close(q[:, 0], titles * scale)  # query 0: the title
    torch.testing.assert_close(q[1, 1], q[1, 0])  # no term: a copy of the title's query
    torch.testing.assert_close(q[3, 2], q[3, 0])
    for (label, slot), phrase in {(0, 1): [40, 41], (0, 2): [50], (2, 1): [60, 61, 62], (2, 2): [70],
                                  (3, 1): [90]}.items():
        k = title_keys(model, [phrase])[0]
        torch.testing.assert_close(q[label, slot], k * TITLE_SCORE / k.pow(2).sum())
    # Each query attends on its own; a label's logit sums its queries' terms (written out here per label and query).
    h = torch.randn(2, 7, model.config.hidden_size)
    mask = torch.tensor([[True] * 7, [True] * 5 + [False] * 2])
    with torch.no_grad():
        logits = model.head(h, mask)
        keys = model.head.keys(h)
        for b in range(2):
            n = int(mask[b].sum())
            for label in range(len(CODES)):
                total = model.head.bias[label].clone()
                for k in range(3):
                    row = label * 3 + k
                    attn = (keys[b, :n] @ model.head.queries[row]).softmax(0)
                    total += (attn @ h[b, :n]) @ model.head.weights[row]
                torch.testing.assert_close(logits[b, label], total, atol=1e-5, rtol=1e-5)
    # The folder keeps the queries per label.
    monkeypatch.setattr("cmbert.core.tokenizer_files.save_tokenizer", lambda tok, folder: None)
    model.save(tmp_path / "k3", tokenizer=None)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: None)
    loaded, _ = IcdModel.load(tmp_path / "k3")
    assert loaded.meta.queries_per_label == 3
    b = collate(notes([30, 3]), 16, CLS, SEP)
    with torch.no_grad():
        torch.testing.assert_close(run(loaded, b), run(model, b))


def test_laat_folder_round_trip_and_stock_encoder(encoder_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("cmbert.core.tokenizer_files.save_tokenizer", lambda tok, folder: None)
    model = IcdModel.from_encoder(encoder_dir, meta(), n_train=50).eval()
    model.meta.threshold = 0.37
    model.save(tmp_path / "m", tokenizer=None)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: None)
    loaded, _ = IcdModel.load(tmp_path / "m")
    assert loaded.meta.threshold == 0.37 and loaded.meta.codes == CODES and loaded.meta.titles[0] == "heart failure"
    b = collate(notes([30, 3]), 16, CLS, SEP)
    with torch.no_grad():
        torch.testing.assert_close(run(loaded, b), run(model, b))
    # The encoder part is a stock transformers ModernBERT: AutoModel loads it with no remote code.
    stock = transformers.AutoModel.from_pretrained(tmp_path / "m").eval()
    ids = torch.from_numpy(note_chunks(notes([10])[0], 16, CLS, SEP)[0])[None]
    with torch.no_grad():
        ours = model.encoder(input_ids=ids).last_hidden_state
        torch.testing.assert_close(stock(input_ids=ids).last_hidden_state, ours, atol=1e-4, rtol=1e-4)


def test_pooled_model_is_a_stock_sequence_classifier(encoder_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("cmbert.core.tokenizer_files.save_tokenizer", lambda tok, folder: None)
    model = IcdModel.from_encoder(encoder_dir, meta("pooled", max_chunks=1), n_train=50).eval()
    model.save(tmp_path / "p", tokenizer=None)
    stock = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "p").eval()
    assert stock.config.problem_type == "multi_label_classification"
    assert [stock.config.id2label[i] for i in range(len(CODES))] == CODES
    n = notes([12])
    ids = torch.from_numpy(note_chunks(n[0], 16, CLS, SEP)[0])[None]
    with torch.no_grad():
        torch.testing.assert_close(stock(input_ids=ids).logits, run(model, collate(n, 16, CLS, SEP)),
                                   atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="one chunk"):
        IcdModel.from_encoder(encoder_dir, meta("pooled", max_chunks=2), n_train=50)
    with pytest.raises(ValueError, match="context"):
        IcdModel.from_encoder(encoder_dir, meta(max_length=128), n_train=50)


def test_label_attention_learns_which_token_carries_each_code(tmp_path, one_thread):
    """Code k is present iff token 10 + k occurs somewhere in a 200-token note read as 4 chunks: a fine-tuned
    LAAT model must find the one token wherever it sits (ranking mAP on held-out notes)."""
    import torch.nn.functional as F

    from cmbert.core.multilabel import compute_metrics

    ModernBertForMaskedLM(tiny_config(max_position_embeddings=64, hidden_size=64, intermediate_size=96)
                          ).save_pretrained(tmp_path)
    n_codes = 6
    m = IcdMeta(head="laat", codes=[str(k) for k in range(n_codes)], titles=[""] * n_codes,
                kinds=["diagnosis"] * n_codes, train_counts=[30] * n_codes, icd_version=10, max_length=64,
                max_chunks=4, attention_dim=32)
    model = IcdModel.from_encoder(tmp_path, m, n_train=100)
    rng = np.random.default_rng(0)

    def make(n):
        notes, Y = [], rng.random((n, n_codes)) < 0.3
        for row in Y:
            x = rng.integers(30, 100, 200)
            for k in np.flatnonzero(row):
                x[rng.integers(0, 200)] = 10 + k
            notes.append(x.astype(np.int32))
        return notes, Y

    train, Y_train = make(240)
    test, Y_test = make(60)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(3):
        for s in range(0, len(train), 8):
            b = collate(train[s:s + 8], 64, CLS, SEP, Y_train[s:s + 8])
            loss = F.binary_cross_entropy_with_logits(run(model, b), b["labels"])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        scores = torch.sigmoid(run(model.eval(), collate(test, 64, CLS, SEP))).numpy()
    assert compute_metrics(Y_test, scores, 0.5)["map"] > 0.9


def test_gradient_checkpointing_gives_the_same_gradients(encoder_dir):
    torch.manual_seed(0)
    batch = collate(notes([40, 9]), 16, CLS, SEP, labels=np.eye(2, 4, dtype=bool))
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)  # the same fresh head both times
        model = IcdModel.from_encoder(encoder_dir, meta(), n_train=50).train()
        calls = []
        # A pre-hook: torch's checkpoint stops recomputing once it has every saved tensor, before a layer's end.
        model.encoder.layers[1].mlp.register_forward_pre_hook(lambda *_, calls=calls: calls.append(1))
        if checkpointing:
            enable_checkpointing(model.encoder)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(run(model, batch), batch["labels"])
        loss.backward()
        grads.append(model.encoder.layers[0].attn.Wqkv.weight.grad.clone())
        assert len(calls) == (2 if checkpointing else 1)  # recomputed in backward
    torch.testing.assert_close(grads[0], grads[1])
