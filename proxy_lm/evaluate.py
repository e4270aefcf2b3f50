"""Downstream predictions of an LM given demonstrations as data (no retriever import here).

Contract: `predict(lm, queries, demonstrations)` returns one `flan_data.Prediction` per query,
in order. `demonstrations[i]` holds the prompt texts for query i with the BEST one LAST (nearest the
input); an empty list is zero-shot. The context is `join_context(demonstrations[i], input)`.
Choice queries predict the option with the lowest mean per-token NLL (`continuation_losses`);
generation queries decode greedily, keep the first non-empty line and strip it, with at most
`max_new_tokens` new tokens (default: each query's task budget, `flan_data.answer_budget`).
Metrics are computed elsewhere (`flan_data.metrics`); `correct` is set for choice queries only.
`on_answers(positions, predictions)`, when given, receives answers as soon as they are final (every
choice answer at once, then each generation batch): a caller can store them before the call
returns. Generation sorts a call's contexts by length and cuts the batches from the longest, so a
call asked again for the rows whose batches had not finished forms the same batches as the rest of
the first call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from transformers import StoppingCriteria

from flan_data import answer_budget
from flan_data.schema import Prediction, Query, join_context
from proxy_lm.kv_cache import keep_logits, left_pad
from proxy_lm.likelihood import continuation_losses
from proxy_lm.loading import LanguageModel

log = logging.getLogger(__name__)


def predict(
    lm: LanguageModel,
    queries: list[Query],
    demonstrations: list[list[str]],
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    progress: bool = True,
    on_answers: Callable[[list[int], list[Prediction]], None] | None = None,
) -> list[Prediction]:
    """Predicts every query with its demonstrations prepended (see the module docstring)."""
    if len(queries) != len(demonstrations):
        raise ValueError(
            f"got {len(queries)} queries but {len(demonstrations)} demonstration lists; pass one "
            "list per query (an empty list for zero-shot)."
        )
    contexts = [join_context(d, q.input) for q, d in zip(queries, demonstrations, strict=True)]
    out: list[Prediction | None] = [None] * len(queries)
    choice = [i for i, q in enumerate(queries) if q.is_choice]
    if choice:
        losses = continuation_losses(
            lm, [contexts[i] for i in choice], [queries[i].continuations() for i in choice],
            batch_size=batch_size, progress=progress,
        )
        for i, row in zip(choice, losses, strict=True):
            q = queries[i]
            best = min(range(len(row)), key=row.__getitem__)
            out[i] = Prediction(q.id, best, q.options[best], best == q.gold)
        _hand_over(on_answers, choice, out)
    by_budget: dict[int, list[int]] = {}  # one generate call per budget: batches stay uniform
    for i, q in enumerate(queries):
        if not q.is_choice:
            by_budget.setdefault(max_new_tokens or answer_budget(q.task), []).append(i)
    for budget, generation in sorted(by_budget.items()):

        def batch_done(rows: list[int], texts: list[str], generation=generation) -> None:
            positions = [generation[r] for r in rows]
            for i, text in zip(positions, texts, strict=True):
                out[i] = Prediction(queries[i].id, text, text, None)
            _hand_over(on_answers, positions, out)

        generate(lm, [contexts[i] for i in generation], batch_size, budget, progress, batch_done)
    return [p for p in out if p is not None]


def _hand_over(on_answers: Callable[[list[int], list[Prediction]], None] | None,
               positions: list[int], out: list[Prediction | None]) -> None:
    if on_answers is not None and positions:
        on_answers(positions, [out[i] for i in positions])  # type: ignore[misc]


def generate(
    lm: LanguageModel,
    contexts: list[str],
    batch_size: int = 16,
    max_new_tokens: int = 32,
    progress: bool = False,
    on_batch: Callable[[list[int], list[str]], None] | None = None,
) -> list[str]:
    """Greedy continuation of each context, cut to its first non-empty line and stripped;
    `on_batch(rows, texts)` receives each batch's texts as soon as it is decoded."""
    tok = lm.tokenizer
    budget = max(1, lm.max_length - max_new_tokens)
    ids = [row[-budget:] or [tok.eos_token_id] for row in tok(list(contexts))["input_ids"]]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
    texts = [""] * len(ids)
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="generating", unit="batch")
    for batch in batches:
        input_ids, mask = left_pad([ids[i] for i in batch], tok.pad_token_id, lm.device)
        with torch.inference_mode():
            output = lm.model.generate(
                input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                do_sample=False, pad_token_id=tok.pad_token_id,
                stopping_criteria=[_FirstLine(tok, input_ids.shape[1])],
                **keep_logits(lm.model, torch.tensor([-1], device=lm.device)),
            )  # (batch, prompt + new)
        new = tok.batch_decode(output[:, input_ids.shape[1] :], skip_special_tokens=True)
        for i, text in zip(batch, new, strict=True):
            texts[i] = first_line(text)
        if on_batch is not None:
            on_batch(batch, [texts[i] for i in batch])
    return texts


def first_line(text: str) -> str:
    return text.lstrip().split("\n", 1)[0].strip()


class _FirstLine(StoppingCriteria):
    """Stops a row once its generated text holds a newline after some non-blank text."""

    def __init__(self, tokenizer, prompt_length: int) -> None:
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        new = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :],
                                          skip_special_tokens=True)
        done = ["\n" in text.lstrip() for text in new]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)  # (batch,)
