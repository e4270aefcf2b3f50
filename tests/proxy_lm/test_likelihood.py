"""Batched, length-sorted, prefix-shared continuation losses equal one-at-a-time scoring."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from proxy_lm_data import text

from proxy_lm import continuation_losses
from proxy_lm.likelihood import _score_batch_whole, tokenize


def reference_losses(lm, contexts, continuations):
    """Each (context, continuation) alone, unpadded: context left-truncated so that it plus its
    longest continuation fits the window."""
    tok, out = lm.tokenizer, []
    for context, conts in zip(contexts, continuations, strict=True):
        ctx = tok(context)["input_ids"]
        opts = [tok(" " + c, add_special_tokens=False)["input_ids"] for c in conts]
        ctx = ctx[max(0, len(ctx) + max(map(len, opts)) - lm.max_length) :]
        row = []
        for opt in opts:
            with torch.no_grad():
                logits = lm.model(input_ids=torch.tensor([ctx + opt])).logits[0]  # (seq, vocab)
            logp = F.log_softmax(logits[len(ctx) - 1 : -1], dim=-1)  # (n_opt, vocab)
            row.append(-logp.gather(-1, torch.tensor(opt)[:, None]).mean().item())
        out.append(row)
    return out


def _cases():
    contexts = [text(i, n) for i, n in enumerate([1, 40, 7, 3, 25, 12, 60])]
    continuations = [
        [text(50 + i + j, 1 + (i * j) % 5) for j in range(1 + i % 4)] for i in range(len(contexts))
    ]
    return contexts, continuations


def _assert_close(got, want, tol=1e-4):
    assert [len(r) for r in got] == [len(r) for r in want]
    for g_row, w_row in zip(got, want, strict=True):
        for g, w in zip(g_row, w_row, strict=True):
            assert g == pytest.approx(w, abs=tol)


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_batched_prefix_shared_equals_one_at_a_time(tiny_lm, batch_size):
    contexts, continuations = _cases()
    got = continuation_losses(tiny_lm, contexts, continuations, batch_size=batch_size)
    _assert_close(got, reference_losses(tiny_lm, contexts, continuations))


def test_left_truncation_matches_reference(tiny_lm):
    tiny_lm.max_length = 48
    contexts, continuations = _cases()
    items = tokenize(tiny_lm, contexts, continuations)
    assert max(len(it.context) + max(map(len, it.options)) for it in items) == 48
    assert any(len(tiny_lm.tokenizer(c)["input_ids"]) > 48 for c in contexts)
    got = continuation_losses(tiny_lm, contexts, continuations, batch_size=4)
    _assert_close(got, reference_losses(tiny_lm, contexts, continuations))


def test_whole_sequence_fallback_equals_prefix_sharing(tiny_lm):
    contexts, continuations = _cases()
    items = tokenize(tiny_lm, contexts, continuations)
    with torch.inference_mode():
        whole = _score_batch_whole(tiny_lm, items, batch_size=5)
    _assert_close(whole, continuation_losses(tiny_lm, contexts, continuations))


def test_hand_computed_loss(tiny_gpt_neo_path):
    from proxy_lm import load_lm

    lm = load_lm(str(tiny_gpt_neo_path), dtype="float32")
    tok = lm.tokenizer
    ctx, opt = tok("the cat")["input_ids"], tok(" sat on", add_special_tokens=False)["input_ids"]
    assert len(opt) >= 2
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([ctx + opt])).logits[0]  # (seq, vocab)
    nll = []
    for k, target in enumerate(opt):
        row = logits[len(ctx) - 1 + k]  # (vocab,): predicts opt[k]
        nll.append(-(row[target] - torch.logsumexp(row, dim=0)).item())
    [[loss]] = continuation_losses(lm, ["the cat"], [["sat on"]])
    assert loss == pytest.approx(sum(nll) / len(nll), abs=1e-5)


def test_bad_arguments(tiny_gpt_neo_path):
    from proxy_lm import load_lm

    lm = load_lm(str(tiny_gpt_neo_path), dtype="float32")
    with pytest.raises(ValueError, match="2 contexts but 1"):
        continuation_losses(lm, ["a", "b"], [["x"]])
    with pytest.raises(ValueError, match="no continuations"):
        continuation_losses(lm, ["a"], [[]])
    assert continuation_losses(lm, [], []) == []
