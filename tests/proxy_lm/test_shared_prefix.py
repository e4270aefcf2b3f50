"""Prompt-grouped prefix sharing equals one-at-a-time unpadded scoring, on GPT-Neo and Llama."""

from __future__ import annotations

import pytest
import torch
from proxy_lm_data import text
from test_likelihood import _assert_close, reference_losses

from flan_data.schema import join_context
from proxy_lm import continuation_losses
from proxy_lm.kv_cache import gather_rows, stack_rows
from proxy_lm.likelihood import tokenize
from proxy_lm.shared_prefix import plan, stage_tokens


def _grouped_cases():
    """Prompts of very different lengths, each paired with several queries (some repeated)."""
    prompts = [text(30 + i, n) for i, n in enumerate([1, 9, 30, 4])]
    queries = [text(60 + j, n) for j, n in enumerate([1, 2, 11, 5, 24, 1])]
    contexts, continuations, groups = [], [], []
    for i, prompt in enumerate(prompts):
        for j, query in enumerate(queries[i % 2 :]):
            contexts.append(join_context([prompt], query))
            continuations.append([text(90 + i + j, 1 + (i + j) % 4) for _ in range(1 + j % 3)])
            groups.append(f"p{i}")
    contexts.append(contexts[0])  # a duplicate context: the shared prefix leaves it one token
    continuations.append(["the", "quick brown"])
    groups.append("p0")
    return contexts, continuations, groups


_REFERENCE: dict = {}


def _reference(lm, contexts, continuations):
    """One-at-a-time losses of the grouped cases, computed once per model and window."""
    key = (lm.name, lm.max_length)
    if key not in _REFERENCE:
        _REFERENCE[key] = reference_losses(lm, contexts, continuations)
    return _REFERENCE[key]


@pytest.mark.parametrize("batch_size", [1, 4, 64])
def test_grouped_scoring_equals_one_at_a_time(tiny_lm, batch_size):
    contexts, continuations, groups = _grouped_cases()
    got = continuation_losses(tiny_lm, contexts, continuations, batch_size=batch_size,
                              groups=groups)
    _assert_close(got, _reference(tiny_lm, contexts, continuations))


def test_grouped_scoring_with_left_truncation(tiny_lm):
    tiny_lm.max_length = 40
    contexts, continuations, groups = _grouped_cases()
    assert any(len(tiny_lm.tokenizer(c)["input_ids"]) > 40 for c in contexts)
    got = continuation_losses(tiny_lm, contexts, continuations, batch_size=5, groups=groups)
    _assert_close(got, _reference(tiny_lm, contexts, continuations))


def test_the_prompt_prefix_runs_once_per_group(tiny_lm):
    contexts, continuations, groups = _grouped_cases()
    items = tokenize(tiny_lm, contexts, continuations)
    grouped = stage_tokens(items, plan(items, groups, batch_size=64), 64)
    alone = stage_tokens(items, plan(items, None, batch_size=64), 64)
    # an option's first token is scored by its context's last logits: no token of its own
    assert grouped["options"] == alone["options"] == sum(len(o) - 1 for it in items
                                                          for o in it.options)
    # without groups every context runs whole, once, as one stage-2 row
    assert alone["prefix"] == alone["refill"] == 0
    assert alone["suffix"] == sum(len(it.context) for it in items)
    # each of the 4 prompt groups runs its common prefix (at least the prompt + SEP) once
    segments = [seg for batch in plan(items, groups, batch_size=64) for seg in batch]
    assert len(segments) == 4
    assert grouped["prefix"] == sum(len(seg.prefix) for seg in segments)
    assert grouped["suffix"] == sum(len(items[i].context) - len(seg.prefix)
                                    for seg in segments for i in seg.items)
    tok = tiny_lm.tokenizer
    for seg in segments:
        prompt_ids = tok(contexts[seg.items[0]].split("\n\n")[0])["input_ids"]
        assert len(seg.prefix) >= len(prompt_ids) - 1
    assert grouped["total"] < alone["total"]


def test_forward_tokens_match_the_plan(tiny_lm):
    """The LM really runs only the planned tokens (counted at its embedding layer)."""
    contexts, continuations, groups = _grouped_cases()
    items = tokenize(tiny_lm, contexts, continuations)
    want = stage_tokens(items, plan(items, groups, batch_size=8), 8)["total"]
    seen = []

    def count(module, args, kwargs):
        mask = kwargs["attention_mask"]
        seen.append(int(mask[:, -kwargs["input_ids"].shape[1] :].sum()))

    handle = tiny_lm.model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        continuation_losses(tiny_lm, contexts, continuations, batch_size=8, groups=groups)
    finally:
        handle.remove()
    assert sum(seen) == want


def test_a_long_context_beside_a_long_option_stays_in_the_window(tiny_lm):
    """One batch: a context filling the window next to a short context with a long option (the
    model's own window: GPT-Neo's attention cannot look past its position table)."""
    window = tiny_lm.model.config.max_position_embeddings
    assert tiny_lm.max_length == window
    contexts = [text(1, window), text(2, 3), join_context([text(3, 40)], text(4, 2)),
                join_context([text(3, 40)], text(5, 30))]
    continuations = [["yes ok", "no"], [text(6, 20), "b c"], ["x", text(7, 9)], [text(8, 12)]]
    groups = ["a", "b", "c", "c"]
    got = continuation_losses(tiny_lm, contexts, continuations, batch_size=4, groups=groups)
    _assert_close(got, reference_losses(tiny_lm, contexts, continuations))


def test_gather_rows_rotates_and_leaves_the_source_alone(tiny_lm):
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    with torch.inference_mode():
        cache = tiny_lm.model(input_ids=ids, use_cache=True).past_key_values
    keys = cache.layers[0].keys.clone()  # (2, heads, 3, dim)
    moved = gather_rows(cache, torch.tensor([1, 1, 0]), torch.tensor([0, 1, 2]))
    got = moved.layers[0].keys
    assert torch.equal(got[0], keys[1])
    assert torch.equal(got[1], keys[1].roll(1, dims=1))
    assert torch.equal(got[2], keys[0].roll(2, dims=1))
    assert torch.equal(cache.layers[0].keys, keys)
    cut = gather_rows(cache, torch.tensor([0]), torch.tensor([1]), start=2).layers[0].keys
    assert torch.equal(cut[0], keys[0].roll(1, dims=1)[:, 2:])


def test_stack_rows_left_pads_to_the_widest(tiny_lm):
    with torch.inference_mode():
        wide = tiny_lm.model(input_ids=torch.tensor([[5, 6, 7]]), use_cache=True).past_key_values
        narrow = tiny_lm.model(input_ids=torch.tensor([[8], [9]]), use_cache=True).past_key_values
    masks = [torch.ones(1, 3, dtype=torch.long), torch.ones(2, 1, dtype=torch.long),
             torch.zeros(1, 0, dtype=torch.long)]
    cache, mask = stack_rows([wide, narrow, None], masks)
    keys = cache.layers[0].keys  # (4, heads, 3, dim)
    assert keys.shape[0] == 4 and keys.shape[2] == 3
    assert torch.equal(keys[0], wide.layers[0].keys[0])
    assert torch.equal(keys[1:3, :, 2], narrow.layers[0].keys[:, :, 0])
    assert not keys[1:3, :, :2].any() and not keys[3].any()
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 1], [0, 0, 0]]


def test_bad_groups(tiny_lm):
    with pytest.raises(ValueError, match="1 group keys for 2 contexts"):
        continuation_losses(tiny_lm, ["a", "b"], [["x"], ["y"]], groups=["p"])


def test_models_whose_cache_cannot_be_shared_fall_back(tiny_lm, monkeypatch):
    import proxy_lm.shared_prefix as shared_prefix

    monkeypatch.setattr(shared_prefix, "supports", lambda cache: False)
    contexts, continuations, groups = _grouped_cases()
    got = continuation_losses(tiny_lm, contexts, continuations, batch_size=4, groups=groups)
    _assert_close(got, _reference(tiny_lm, contexts, continuations))
