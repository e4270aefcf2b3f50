"""Rendering dataset rows into stage records (`Prompt`, `Query`) and seeded subsampling.

Contract: an example's id is `<task>:<split>:<row index>`, stable across runs; its template is
`Task.template_for(id, seed)`. A prompt's text is the rendered input, a space and the gold
answer; a query keeps the answer apart (options + gold, or references).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from flan_data.catalogue import Example, Task
from flan_data.schema import Prompt, Query


@dataclass(frozen=True)
class SourceExample:
    id: str
    task: Task
    example: Example
    template: int

    @property
    def input(self) -> str:
        return self.task.render(self.example, self.template)

    def label_key(self) -> int | None:
        return self.example.gold

    def to_prompt(self) -> Prompt:
        text = f"{self.input} {self.example.target}"
        return Prompt(self.id, self.task.name, self.task.cluster, self.template, text)

    def to_query(self) -> Query:
        ex = self.example
        return Query(
            id=self.id,
            task=self.task.name,
            cluster=self.task.cluster,
            template=self.template,
            input=self.input,
            options=None if ex.options is None else list(ex.options),
            gold=ex.gold,
            references=list(ex.references),
        )


def convert_rows(
    task: Task,
    split: str,
    rows: list[dict[str, Any]],
    seed: int,
    row_ids: list[int] | None = None,
    max_prompt_chars: int | None = None,
) -> list[SourceExample]:
    """Rows -> examples, skipping unlabelled rows and (optionally) over-long prompts."""
    out = []
    for i, row in zip(row_ids if row_ids is not None else range(len(rows)), rows, strict=True):
        example = task.convert(row)
        if example is None:
            continue
        ex_id = f"{task.name}:{split}:{i}"
        src = SourceExample(ex_id, task, example, task.template_for(ex_id, seed))
        if fits(src, max_prompt_chars):
            out.append(src)
    return out


def fits(example: SourceExample, max_prompt_chars: int | None) -> bool:
    """Whether the example's demonstration (input and target) is at most `max_prompt_chars`
    long (None: no limit)."""
    return max_prompt_chars is None or len(example.to_prompt().text) <= max_prompt_chars


def balanced_sample(examples: list[SourceExample], cap: int | None, rng: random.Random) -> list:
    """Up to `cap` examples, class-balanced (round-robin over shuffled label groups).

    The result keeps source order, so it does not depend on how groups were interleaved.
    """
    if cap is None or len(examples) <= cap:
        return list(examples)
    groups: dict[Any, list[SourceExample]] = defaultdict(list)
    for ex in examples:
        groups[ex.label_key()].append(ex)
    queues = [rng.sample(g, len(g)) for _, g in sorted(groups.items(), key=lambda kv: str(kv[0]))]
    chosen: list[SourceExample] = []
    while len(chosen) < cap:
        for q in queues:
            if q and len(chosen) < cap:
                chosen.append(q.pop())
    order = {ex.id: i for i, ex in enumerate(examples)}
    return sorted(chosen, key=lambda ex: order[ex.id])
