"""Our unpadded ModernBERT against transformers' padded one on the same weights (docs/ARCHITECTURE.md, "Padded equals
unpadded"), and the behaviours of the encoder API that callers rely on: packing, attention backends, heads, losses,
init."""

from __future__ import annotations

import copy
import json
import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers
from conftest import PAD, VOCAB, build_pair, padded_batch, save_tiny_encoder, tiny_config

import cmbert.modeling
from cmbert.modeling import attention
from cmbert.modeling.attention import AttentionPlan, default_attention_backend, resolve_backend

pytestmark = pytest.mark.usefixtures("one_thread")

# Low RoPE thetas make positions matter within a few dozen tokens, so a wrong rotary position shows in the logits.
LOW_THETA = dict(global_rope_theta=500.0, local_rope_theta=100.0)

# id: (config overrides, document lengths, padding side)
PARITY_CASES = {
    "5-layers-global-every-3": (dict(num_hidden_layers=5, global_attn_every_n_layers=3, **LOW_THETA), (40, 33, 12), "right"),
    "4-layers-global-every-2-left": (dict(num_hidden_layers=4, global_attn_every_n_layers=2, local_attention=16,
                                          **LOW_THETA), (50, 17, 64), "left"),
    "1-layer": (dict(num_hidden_layers=1, **LOW_THETA), (20, 5), "right"),
    "2-layers-all-global": (dict(num_hidden_layers=2, global_attn_every_n_layers=1, **LOW_THETA), (33, 9), "left"),
    "odd-window-15-left": (dict(local_attention=15, **LOW_THETA), (45, 31), "left"),
    "window-30-theta": (dict(local_attention=30, global_rope_theta=1234.0, local_rope_theta=77.0), (90, 61), "right"),
    "default-theta-no-padding": (dict(), (24, 24), "right"),
    "one-token-rows-right": (dict(**LOW_THETA), (1, 25, 1), "right"),
    "one-token-rows-left": (dict(**LOW_THETA), (1, 25, 1), "left"),
    "only-one-token-rows": (dict(**LOW_THETA), (1, 1), "right"),
    "mixed-3-40-197-right": (dict(local_attention=16, **LOW_THETA), (3, 40, 197), "right"),
    "mixed-3-40-197-left": (dict(num_hidden_layers=4, global_attn_every_n_layers=2, local_attention=16, **LOW_THETA),
                            (197, 3, 40), "left"),
    "shorter-than-window": (dict(local_attention=64, **LOW_THETA), (10, 7), "right"),
    # window 8 each side: a 9-token document fits inside the window exactly, a 10-token one does not.
    "window-edge": (dict(local_attention=16, **LOW_THETA), (9, 10, 8), "left"),
}
ATTN = ["sdpa", "eager"]
CLASSIFY_DEMO = Path(__file__).resolve().parents[1] / "configs" / "finetune" / "classify" / "demo.yaml"
TOL = 1e-4  # "Padded equals unpadded": fp32, max abs difference on non-pad tokens


def max_diff_on_tokens(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    return (a - b)[mask.bool()].abs().max().item()


# --- forward parity ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("attn", ATTN)
@pytest.mark.parametrize("case", PARITY_CASES.values(), ids=PARITY_CASES.keys())
def test_mlm_logits_match_transformers(case, attn):
    overrides, lengths, side = case
    ours, theirs = build_pair(tiny_config(**overrides), attn_implementation=attn)
    ids, mask = padded_batch(lengths, side)
    with torch.no_grad():
        got = ours(input_ids=ids, attention_mask=mask).logits
        want = theirs(input_ids=ids, attention_mask=mask).logits
    assert got.shape == want.shape == (len(lengths), max(lengths), VOCAB)
    assert max_diff_on_tokens(got, want, mask) <= TOL


@pytest.mark.parametrize("attn", ATTN)
@pytest.mark.parametrize("case", ["mixed-3-40-197-left", "one-token-rows-right", "5-layers-global-every-3"])
def test_base_model_hidden_states_match_transformers(case, attn):
    overrides, lengths, side = PARITY_CASES[case]
    ours, theirs = build_pair(tiny_config(**overrides), cmbert.modeling.ModernBertModel, transformers.ModernBertModel, attn)
    ids, mask = padded_batch(lengths, side)
    with torch.no_grad():
        got = ours(input_ids=ids, attention_mask=mask).last_hidden_state
        want = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
    assert got.shape == want.shape
    assert max_diff_on_tokens(got, want, mask) <= TOL
    assert got[~mask.bool()].abs().max() == 0  # padded positions are zeros (documented in forward)


def test_output_hidden_states_follow_transformers_convention():
    """transformers 5 records every layer's input plus the final (normed) state: num_layers + 1 tensors."""
    cfg = tiny_config(num_hidden_layers=5, global_attn_every_n_layers=2, **LOW_THETA)
    ours, theirs = build_pair(cfg, cmbert.modeling.ModernBertModel, transformers.ModernBertModel, "eager")
    ids, mask = padded_batch((30, 11, 4), "left")
    with torch.no_grad():
        got = ours(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        want = theirs(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    assert len(got.hidden_states) == cfg.num_hidden_layers + 1 == len(want.hidden_states)
    assert torch.equal(got.hidden_states[-1], got.last_hidden_state)
    # The last entry is the final-normed state in transformers >= 5.x's current convention; 5.0 recorded the last
    # layer's output before the norm. Every layer input is the same in all versions.
    for layer, (g, w) in enumerate(zip(got.hidden_states[:-1], want.hidden_states[:-1], strict=True)):
        assert max_diff_on_tokens(g, w, mask) <= TOL, f"hidden state {layer}"


# --- training parity ----------------------------------------------------------------------------------------------

def mlm_labels(ids: torch.Tensor, mask: torch.Tensor, fraction: float = 0.3, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    chosen = (torch.rand(ids.shape, generator=gen) < fraction) & mask.bool()
    chosen[0, 0] = True  # never an empty selection
    return torch.where(chosen, ids, torch.full_like(ids, -100))


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("sparse_prediction", [True, False])
def test_mlm_loss_and_gradients_match_transformers(sparse_prediction, side):
    cfg = tiny_config(num_hidden_layers=4, global_attn_every_n_layers=3, sparse_prediction=sparse_prediction,
                      **LOW_THETA)
    ours, theirs = build_pair(cfg)
    ids, mask = padded_batch((30, 20, 7), side)
    labels = mlm_labels(ids, mask)
    n_labelled = int((labels != -100).sum())

    out = ours(input_ids=ids, attention_mask=mask, labels=labels)
    ref = theirs(input_ids=ids, attention_mask=mask, labels=labels)
    assert out.logits.shape == (n_labelled, VOCAB)
    if sparse_prediction:  # transformers then also returns logits for labelled tokens only, in the same order
        assert (out.logits - ref.logits).abs().max() <= TOL
    torch.testing.assert_close(out.loss, ref.loss, rtol=1e-5, atol=1e-6)

    out.loss.backward()
    ref.loss.backward()
    ours_grads = {n: p.grad for n, p in ours.named_parameters()}
    theirs_grads = {n: p.grad for n, p in theirs.named_parameters()}
    assert ours_grads.keys() == theirs_grads.keys()
    for name, grad in ours_grads.items():
        assert grad is not None and theirs_grads[name] is not None, name
        torch.testing.assert_close(grad, theirs_grads[name], rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


# --- packing ------------------------------------------------------------------------------------------------------

def packed(docs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, int]:
    lengths = torch.tensor([len(d) for d in docs])
    cu = F.pad(torch.cumsum(lengths, 0), (1, 0)).to(torch.int32)
    return torch.cat(docs), cu, int(lengths.max())


def random_docs(lengths, seed: int = 3) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (n,), generator=gen) for n in lengths]


@pytest.mark.parametrize("local_attention", [8, 15, 128], ids=["window-8", "window-15", "window-longer-than-docs"])
def test_packed_documents_equal_each_document_alone(local_attention):
    ours, _ = build_pair(tiny_config(local_attention=local_attention, **LOW_THETA), cmbert.modeling.ModernBertModel,
                         transformers.ModernBertModel)
    docs = random_docs((37, 23))
    flat, cu, max_len = packed(docs)
    with torch.no_grad():
        out = ours(input_ids=flat, cu_seqlens=cu, max_seqlen=max_len).last_hidden_state
        assert out.shape == (len(flat), 32)
        for doc, start, end in zip(docs, cu[:-1].tolist(), cu[1:].tolist(), strict=True):
            alone = ours(input_ids=doc[None]).last_hidden_state[0]
            torch.testing.assert_close(out[start:end], alone, rtol=0, atol=1e-5)


def test_packed_output_equals_padded_batch_output():
    ours, _ = build_pair(tiny_config(num_hidden_layers=4, global_attn_every_n_layers=2, **LOW_THETA),
                         cmbert.modeling.ModernBertModel, transformers.ModernBertModel)
    docs = random_docs((37, 1, 23, 9))
    flat, cu, max_len = packed(docs)
    ids = torch.full((len(docs), max_len), PAD)
    mask = torch.zeros(len(docs), max_len, dtype=torch.long)
    for row, doc in enumerate(docs):
        ids[row, : len(doc)], mask[row, : len(doc)] = doc, 1
    with torch.no_grad():
        got = ours(input_ids=flat, cu_seqlens=cu, max_seqlen=max_len).last_hidden_state
        inferred = ours(input_ids=flat, cu_seqlens=cu).last_hidden_state  # max_seqlen derived from cu_seqlens
        padded = ours(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got, padded[mask.bool()], rtol=0, atol=1e-5)
    torch.testing.assert_close(inferred, got, rtol=0, atol=0)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_packed_sequence_classification_gives_one_prediction_per_document(pooling):
    ours, _ = build_pair(tiny_config(num_labels=3, classifier_pooling=pooling, **LOW_THETA),
                         cmbert.modeling.ModernBertForSequenceClassification, transformers.ModernBertForSequenceClassification)
    docs = random_docs((12, 30, 1))
    flat, cu, max_len = packed(docs)
    ids, mask = torch.full((3, max_len), PAD), torch.zeros(3, max_len, dtype=torch.long)
    for row, doc in enumerate(docs):
        ids[row, : len(doc)], mask[row, : len(doc)] = doc, 1
    with torch.no_grad():
        got = ours(input_ids=flat, cu_seqlens=cu, max_seqlen=max_len).logits
        want = ours(input_ids=ids, attention_mask=mask).logits
    assert got.shape == (3, 3)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


# --- attention backends -------------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("layout", ["packed", "left-padded"])
def test_flex_backend_matches_sdpa_backend(layout):
    """FlexAttention has no CPU backward in torch 2.13 and is unfused in eager mode: forward only, tiny sizes."""
    ours, _ = build_pair(tiny_config(local_attention=8, **LOW_THETA))
    if layout == "packed":
        flat, cu, max_len = packed(random_docs((37, 1, 23)))
        inputs = dict(input_ids=flat, cu_seqlens=cu, max_seqlen=max_len)
        keep = torch.ones(len(flat), dtype=torch.bool)
    else:
        ids, mask = padded_batch((40, 3, 17), "left")
        inputs = dict(input_ids=ids, attention_mask=mask)
        keep = mask.bool()
    with torch.no_grad():
        with cmbert.modeling.attention_backend("sdpa"):
            reference = ours(**inputs).logits
        with cmbert.modeling.attention_backend("flex"):
            flex = ours(**inputs).logits
    assert reference.shape == flex.shape
    assert (reference - flex)[keep].abs().max() <= 1e-5


def test_auto_backend_is_sdpa_on_cpu_and_switch_is_restored():
    assert resolve_backend(torch.device("cpu")) == "sdpa"
    with cmbert.modeling.attention_backend("flex"):
        assert resolve_backend(torch.device("cpu")) == "flex"
    assert resolve_backend(torch.device("cpu")) == "sdpa"
    with pytest.raises(ValueError, match="unknown attention backend"):
        cmbert.modeling.set_attention_backend("xformers")


@pytest.mark.parametrize("backend", ["flash", "varlen"])
def test_cuda_only_backends_raise_clearly_on_cpu(backend):
    ours, _ = build_pair(tiny_config())
    ids, mask = padded_batch((5, 3))
    with cmbert.modeling.attention_backend(backend), pytest.raises(RuntimeError, match=f"'{backend}' needs a CUDA device"):
        ours(input_ids=ids, attention_mask=mask)
    assert ours(input_ids=ids, attention_mask=mask).logits.shape == (2, 5, VOCAB)  # switch restored on exit


@pytest.fixture
def plan_backends(monkeypatch) -> list[str]:
    """The backend of every attention plan built during the test, in order (one plan per forward)."""
    seen, build = [], AttentionPlan.build.__func__

    def spy(cls, *args, **kwargs):
        plan = build(cls, *args, **kwargs)
        seen.append(plan.backend)
        return plan

    monkeypatch.setattr(AttentionPlan, "build", classmethod(spy))
    return seen


@pytest.fixture
def process_default():
    """Lets a test change the process default backend; restored afterwards."""
    previous = default_attention_backend()
    yield
    attention.set_attention_backend(previous)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_each_model_uses_its_own_backend(plan_backends, process_default):
    """Two models in one process with different backends, and one that chose none (the process default)."""
    cfg = tiny_config(local_attention=8, **LOW_THETA)
    flex_model, sdpa_model, default_model = (build_pair(cfg)[0] for _ in range(3))  # one seed: the same weights
    assert flex_model.set_attention_backend("flex") is flex_model
    sdpa_model.set_attention_backend("sdpa")
    assert (flex_model.base_model.attention_backend, sdpa_model.model.attention_backend) == ("flex", "sdpa")
    assert default_model.base_model.attention_backend is None
    ids, mask = padded_batch((40, 3, 17), "left")
    run = lambda model: model(input_ids=ids, attention_mask=mask).logits

    attention.set_attention_backend("flex")  # the process default moves; explicit choices do not follow it
    with torch.no_grad():
        flex, sdpa, default = run(flex_model), run(sdpa_model), run(default_model)
        assert plan_backends == ["flex", "sdpa", "flex"]
        assert (flex - sdpa)[mask.bool()].abs().max() <= 1e-5 and torch.equal(default, flex)
        attention.set_attention_backend("sdpa")
        run(flex_model), run(default_model)
        assert plan_backends[3:] == ["flex", "sdpa"]
        with cmbert.modeling.attention_backend("flex"):  # a test's block overrides every model
            run(sdpa_model)
        run(sdpa_model)
        assert plan_backends[5:] == ["flex", "sdpa"]
        flex_model.set_attention_backend(None)  # back to the process default
        run(flex_model)
        assert plan_backends[7:] == ["sdpa"]
    with pytest.raises(ValueError, match="unknown attention backend"):
        sdpa_model.set_attention_backend("xformers")


def test_the_backend_stays_with_the_model_not_its_config(tmp_path):
    """Not in the config: an export must not carry one machine's kernel, and a config is often shared."""
    model = cmbert.modeling.ModernBertForSequenceClassification(tiny_config(num_labels=2)).set_attention_backend("flex")
    assert copy.deepcopy(model).model.attention_backend == "flex"  # merged_copy / EMA copies keep it
    assert cmbert.modeling.ModernBertForMaskedLM(model.config).model.attention_backend is None  # same config object
    model.save_pretrained(tmp_path)
    assert "flex" not in (tmp_path / "config.json").read_text()
    loaded = cmbert.modeling.ModernBertForSequenceClassification.from_pretrained(tmp_path)
    assert loaded.model.attention_backend is None


def test_a_recipe_sets_the_backend_on_its_model_and_leaves_the_process_default(tmp_path, plan_backends,
                                                                               process_default):
    """The classify recipe with `model.attention_backend=sdpa` while the process default is "flex": the recipe's
    model trains with sdpa (FlexAttention has no CPU backward, so a model on the default would fail), and the default
    is "flex" afterwards (recipes used to leave their backend behind for the next model in the process)."""
    from cmbert.core.tokenizer_files import save_tokenizer
    from cmbert.data.demo_sentences import classify_example, write_demo_data
    from cmbert.finetune.generic.config import load_generic_config
    from cmbert.finetune.generic.train import main as classify
    from cmbert.pretrain.tokenizer import train_tokenizer

    write_demo_data(tmp_path / "data", examples=60)
    rng = random.Random(1)
    tokenizer = train_tokenizer([classify_example(rng)["text"] for _ in range(200)], vocab_size=384,
                                model_max_length=128)
    save_tokenizer(tokenizer, tmp_path / "tokenizer")
    save_tiny_encoder(tmp_path / "encoder", tmp_path / "tokenizer")
    data = tmp_path / "data" / "classify"
    attention.set_attention_backend("flex")
    report = classify(load_generic_config(CLASSIFY_DEMO, [
        f"out={tmp_path / 'run'}", f"model.init_from={tmp_path / 'encoder'}", f"data.train={data / 'train.csv'}",
        f"data.validation={data / 'validation.csv'}", f"data.test={data / 'test.csv'}", "model.max_length=64",
        "model.attention_backend=sdpa", "train.epochs=1", "logging.wandb=disabled"], task="classify"))
    assert report == json.loads((tmp_path / "run" / "report.json").read_text())
    assert plan_backends and set(plan_backends) == {"sdpa"}
    assert default_attention_backend() == "flex"


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["auto", "flex", "varlen", "sdpa"])
def test_cuda_backends_match_transformers(backend):
    """On CUDA in fp32: flash/varlen compute in bf16 (loose tolerance); flex and sdpa in fp32."""
    cfg = tiny_config(num_hidden_layers=4, global_attn_every_n_layers=3, local_attention=16, **LOW_THETA)
    ours, theirs = build_pair(cfg)
    ours, theirs = ours.cuda(), theirs.cuda()
    ids, mask = padded_batch((3, 40, 197), "right")
    ids, mask = ids.cuda(), mask.cuda()
    with torch.no_grad(), cmbert.modeling.attention_backend(backend):
        got = ours(input_ids=ids, attention_mask=mask).logits
        want = theirs(input_ids=ids, attention_mask=mask).logits
    bf16 = resolve_backend(ids.device) in ("flash", "varlen")
    assert max_diff_on_tokens(got, want, mask) <= (5e-2 if bf16 else 1e-4) * max(1.0, want.abs().max().item())


# --- sequence classification --------------------------------------------------------------------------------------

@pytest.mark.parametrize("attn", ATTN)
@pytest.mark.parametrize("pooling,side", [("cls", "right"), ("mean", "right"), ("mean", "left")])
def test_sequence_classification_logits_match_transformers(pooling, side, attn):
    cfg = tiny_config(num_labels=4, classifier_pooling=pooling, num_hidden_layers=4, global_attn_every_n_layers=3,
                      **LOW_THETA)
    ours, theirs = build_pair(cfg, cmbert.modeling.ModernBertForSequenceClassification,
                              transformers.ModernBertForSequenceClassification, attn)
    ids, mask = padded_batch((3, 40, 97, 1), side)
    with torch.no_grad():
        got = ours(input_ids=ids, attention_mask=mask).logits
        want = theirs(input_ids=ids, attention_mask=mask).logits
    assert got.shape == want.shape == (4, 4)
    assert (got - want).abs().max() <= TOL


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_sequence_classification_does_not_depend_on_padding_side(pooling):
    """Left padding pools the same tokens as right padding. (transformers' "cls" pooling reads position 0, which is a
    pad token under left padding; ours reads each document's first real token, so it is compared on right padding.)"""
    ours, _ = build_pair(tiny_config(num_labels=2, classifier_pooling=pooling, **LOW_THETA),
                         cmbert.modeling.ModernBertForSequenceClassification, transformers.ModernBertForSequenceClassification)
    lengths = (3, 40, 1)
    with torch.no_grad():
        right = ours(*padded_batch(lengths, "right")).logits
        left = ours(*padded_batch(lengths, "left")).logits
    torch.testing.assert_close(left, right, rtol=0, atol=1e-5)


LOSS_CASES = {  # id: (num_labels, problem_type set in the config, labels for 4 rows, problem type the loss uses)
    "regression-inferred": (1, None, lambda: torch.randn(4), "regression"),
    "regression-2-targets": (2, "regression", lambda: torch.randn(4, 2), "regression"),
    "single-label-inferred": (3, None, lambda: torch.tensor([0, 2, 1, 2]), "single_label_classification"),
    "multi-label-inferred": (3, None, lambda: torch.tensor([[1.0, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]]),
                             "multi_label_classification"),
}


@pytest.mark.parametrize("case", LOSS_CASES.values(), ids=LOSS_CASES.keys())
def test_sequence_classification_losses_match_transformers(case):
    num_labels, problem_type, make_labels, expected_type = case
    cfg = tiny_config(num_labels=num_labels, problem_type=problem_type, **LOW_THETA)
    ours, theirs = build_pair(cfg, cmbert.modeling.ModernBertForSequenceClassification,
                              transformers.ModernBertForSequenceClassification)
    ids, mask = padded_batch((3, 40, 17, 1), "right")
    labels = make_labels()
    got = ours(input_ids=ids, attention_mask=mask, labels=labels)
    want = theirs(input_ids=ids, attention_mask=mask, labels=labels)
    assert ours.config.problem_type == theirs.config.problem_type == expected_type
    assert got.loss.ndim == 0 and got.loss.item() > 0
    torch.testing.assert_close(got.loss, want.loss, rtol=1e-5, atol=1e-6)
    got.loss.backward()  # the loss is differentiable down to the embeddings
    assert ours.model.embeddings.tok_embeddings.weight.grad.abs().sum() > 0


# --- API behaviours -----------------------------------------------------------------------------------------------

def test_mlm_output_shapes_padded_packed_and_labelled():
    ours, _ = build_pair(tiny_config())
    ids, mask = padded_batch((9, 4, 6), "right")
    flat, cu, max_len = packed(random_docs((9, 4, 6)))
    labels = mlm_labels(ids, mask)
    with torch.no_grad():
        assert ours(input_ids=ids, attention_mask=mask).logits.shape == (3, 9, VOCAB)
        assert ours(input_ids=flat, cu_seqlens=cu, max_seqlen=max_len).logits.shape == (19, VOCAB)
        assert ours(input_ids=ids, attention_mask=mask, labels=labels).logits.shape == ((labels != -100).sum(), VOCAB)
        assert ours(input_ids=ids).logits.shape == (3, 9, VOCAB)  # no mask: every position is a token


def test_num_items_in_batch_divides_the_summed_loss():
    ours, _ = build_pair(tiny_config())
    ids, mask = padded_batch((20, 13), "right")
    labels = mlm_labels(ids, mask)
    n_labelled = int((labels != -100).sum())
    with torch.no_grad():
        mean = ours(input_ids=ids, attention_mask=mask, labels=labels).loss
        as_int = ours(input_ids=ids, attention_mask=mask, labels=labels, num_items_in_batch=50).loss
        as_tensor = ours(input_ids=ids, attention_mask=mask, labels=labels, num_items_in_batch=torch.tensor(50)).loss
    torch.testing.assert_close(as_int * 50, mean * n_labelled)
    torch.testing.assert_close(as_tensor, as_int)


@pytest.mark.parametrize("bad", ["gap-in-mask", "packed-with-mask", "packed-without-cu_seqlens", "cu_seqlens-padded"])
def test_malformed_inputs_raise_value_error(bad):
    ours, _ = build_pair(tiny_config())
    ids = torch.tensor([[5, 6, 7]])
    flat, cu = torch.tensor([5, 6, 7]), torch.tensor([0, 3], dtype=torch.int32)
    inputs = {
        "gap-in-mask": dict(input_ids=ids, attention_mask=torch.tensor([[1, 0, 1]])),
        "packed-with-mask": dict(input_ids=flat, cu_seqlens=cu, attention_mask=torch.ones(3)),
        "packed-without-cu_seqlens": dict(input_ids=flat),
        "cu_seqlens-padded": dict(input_ids=ids, cu_seqlens=cu),
    }[bad]
    with pytest.raises(ValueError):
        ours(**inputs)


@pytest.mark.filterwarnings("ignore:`gradient_checkpointing_enable` is deprecated:FutureWarning")
def test_gradient_checkpointing_gives_the_same_gradients():
    cfg = tiny_config(num_hidden_layers=3, **LOW_THETA)
    ours, _ = build_pair(cfg)
    ours.train()
    ids, mask = padded_batch((25, 14), "left")
    labels = mlm_labels(ids, mask)
    calls = []
    # A pre-hook: torch's non-reentrant checkpoint stops recomputing once the last saved tensor is rebuilt, so a
    # post-hook on the layer's last module may never fire again.
    ours.model.layers[1].mlp.register_forward_pre_hook(lambda *_: calls.append(1))

    def grads():
        ours.zero_grad()
        calls.clear()
        ours(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        return {n: p.grad.clone() for n, p in ours.named_parameters()}, len(calls)

    plain, plain_calls = grads()
    ours.gradient_checkpointing_enable()  # transformers 5 alias of activation_checkpointing_enable
    checkpointed, checkpointed_calls = grads()
    assert all(layer.gradient_checkpointing for layer in ours.model.layers)
    assert (plain_calls, checkpointed_calls) == (1, 2)  # the layer really was recomputed in backward
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-7, msg=lambda m, n=name: f"{n}: {m}")


def truncated_normal_std(std: float, cutoff: float) -> float:
    """Standard deviation of N(0, std) truncated to +-cutoff*std."""
    pdf = math.exp(-cutoff**2 / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(cutoff / math.sqrt(2))
    return std * math.sqrt(1 - 2 * cutoff * pdf / mass)


INIT_CONFIG = dict(vocab_size=512, hidden_size=128, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4)


def expected_init_stds(cfg) -> dict[str, float]:
    """transformers' ModernBERT init: std 0.02 in, 0.02/sqrt(2L) for output projections, truncated at +-2 std.
    The decoder is tied to the embeddings (init 0.02 there; transformers skips re-initialising tied weights)."""
    cut = cfg.initializer_cutoff_factor
    std_in = truncated_normal_std(cfg.initializer_range, cut)
    std_out = truncated_normal_std(cfg.initializer_range / math.sqrt(2 * cfg.num_hidden_layers), cut)
    return {
        "model.embeddings.tok_embeddings.weight": std_in,
        "decoder.weight": std_in,
        "model.layers.1.attn.Wqkv.weight": std_in,
        "model.layers.2.mlp.Wi.weight": std_in,
        "model.layers.1.attn.Wo.weight": std_out,
        "model.layers.3.mlp.Wo.weight": std_out,
        "head.dense.weight": std_out,
    }


def assert_init_like(model, cfg):
    params = dict(model.state_dict())
    for name, std in expected_init_stds(cfg).items():
        got = params[name].std().item()
        assert abs(got / std - 1) < 0.05, f"{name}: std {got:.5f}, want {std:.5f}"
    assert params["decoder.bias"].abs().max() == 0


def test_transformers_init_statistics_are_as_expected():
    """Pins the reference that `test_init_matches_transformers` holds our model to."""
    cfg = tiny_config(**INIT_CONFIG)
    assert_init_like(transformers.ModernBertForMaskedLM(cfg), cfg)


def test_init_matches_transformers():
    cfg = tiny_config(**INIT_CONFIG)
    ours = cmbert.modeling.ModernBertForMaskedLM(cfg)
    assert ours.decoder.weight is ours.model.embeddings.tok_embeddings.weight
    assert_init_like(ours, cfg)
    classifier = cmbert.modeling.ModernBertForSequenceClassification(tiny_config(num_labels=4, **INIT_CONFIG)).classifier
    want = truncated_normal_std(cfg.hidden_size**-0.5, cfg.initializer_cutoff_factor)
    assert abs(classifier.weight.std().item() / want - 1) < 0.15 and classifier.bias.abs().max() == 0


def test_layer_norms_start_at_one():
    ours = cmbert.modeling.ModernBertForMaskedLM(tiny_config(**INIT_CONFIG))
    norms = [m for m in ours.modules() if isinstance(m, torch.nn.LayerNorm)]
    # embeddings, final, head, mlp_norm per layer, attn_norm on every layer but the first
    assert len(norms) == 3 + 4 + 3
    for norm in norms:
        assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and norm.bias is None


@pytest.mark.parametrize("chunk_elements", [1, 700, 1 << 23])  # one row per chunk, uneven chunks, one chunk
@pytest.mark.parametrize("bias", [True, False])
def test_linear_cross_entropy_matches_unfused_loss_and_gradients(chunk_elements, bias):
    from cmbert.modeling.model import linear_cross_entropy

    torch.manual_seed(0)
    x = torch.randn(37, 16, requires_grad=True)
    weight = torch.randn(100, 16, requires_grad=True)
    b = torch.randn(100, requires_grad=True) if bias else None
    labels = torch.randint(0, 100, (37,))
    loss, logits = linear_cross_entropy(x, weight, b, labels, chunk_elements=chunk_elements)
    (0.3 * loss).backward()  # a scaled loss, as gradient accumulation or loss scaling would give
    ours = [t.grad.clone() for t in (x, weight, b) if t is not None]
    for t in (x, weight, b):
        if t is not None:
            t.grad = None
    ref_logits = torch.nn.functional.linear(x, weight, b)
    ref = torch.nn.functional.cross_entropy(ref_logits, labels, reduction="sum")
    (0.3 * ref).backward()
    assert torch.allclose(loss, ref, atol=1e-4) and not logits.requires_grad
    assert torch.allclose(logits, ref_logits, atol=1e-5)
    for got, t in zip(ours, [t for t in (x, weight, b) if t is not None], strict=True):
        assert torch.allclose(got, t.grad, atol=1e-5)
    with torch.no_grad():  # evaluation: loss only, no gradient work
        assert torch.allclose(linear_cross_entropy(x, weight, b, labels, return_logits=False)[0], ref, atol=1e-4)
