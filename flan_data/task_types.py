"""What a task is: `Task` (one dataset as a FLAN-style task) and `Example` (one rendered row).

Contract: a `Task` turns one raw dataset row (Hugging Face column schema) into an `Example`
(template fields + answer) and renders it with one of its templates; the template is chosen per
example with an explicit `random.Random(seed)` seeded from the example id, so the same example
always gets the same template for the same seed. A leaf module: the built-in tasks
(`flan_data.tasks`) and the catalogue that registers them (`flan_data.catalogue`) both use it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

TaskKind = Literal["choice", "generation"]
Metric = Literal["accuracy", "exact_match", "rouge_l"]


@dataclass(frozen=True)
class Example:
    """One row, ready to render: template `fields`, and `options` + `gold` or `references`."""

    fields: dict[str, str]
    options: list[str] | None = None
    gold: int | None = None
    references: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        if self.options is not None:
            assert self.gold is not None
            return self.options[self.gold]
        return self.references[0]


@dataclass(frozen=True)
class Task:
    """A FLAN-style task over one Hugging Face dataset.

    name: short unique id (`sst2`). cluster: the UPRISE task cluster. hf_path/hf_config: the Hub
    dataset. mirror_name: the folder of the offline mirror. eval_split: the split UPRISE evaluates
    on. train_split: the Hub's training split (carved out of `eval_split` where a source lacks it).
    convert: raw row -> Example, or None to skip the row (e.g. an unlabelled row).
    templates: instruction templates over Example.fields; each renders the input only, the
    answer is appended after a space. max_new_tokens: greedy decoding budget of a generation
    task's answers, sized to cover its references (E2E NLG, DART: 35% are over 32 tokens).
    """

    name: str
    cluster: str
    hf_path: str
    hf_config: str | None
    mirror_name: str
    eval_split: str
    kind: TaskKind
    metric: Metric
    convert: Callable[[Mapping[str, Any]], Example | None]
    templates: tuple[str, ...]
    train_split: str | None = "train"
    max_new_tokens: int = 32

    def template_for(self, example_id: str, seed: int) -> int:
        """Deterministic template choice for one example (explicit RNG, never the global one)."""
        digest = hashlib.sha256(f"{seed}:{self.name}:{example_id}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big")).randrange(len(self.templates))

    def render(self, example: Example, template: int) -> str:
        return self.templates[template].format(**example.fields).strip()
