"""LangChain adapter: a `langchain_core` example selector backed by a trained `PromptRetriever`.

Contract: `UpriseExampleSelector(retriever, k=3, input_key=None, filters=None, diversity=0.0)`
is a `BaseExampleSelector`, so `FewShotPromptTemplate(example_selector=...)` can use it.
`select_examples(input_variables)` retrieves k pool prompts for the text in
`input_variables[input_key]` (or the only variable, when `input_key` is None) and returns them as
example dicts `{"prompt", "id", "task", "cluster", "score", "rank"}` *best last*, so that a
few-shot template, which renders examples in order before its suffix, places the best prompt
nearest the input as UPRISE does. Format them with `EXAMPLE_PROMPT` (`"{prompt}"`): a pool
prompt is already a rendered demonstration, input followed by its answer.
`add_example({"prompt": text, "task": ..., "cluster": ..., "id": ...})` adds one to the
retriever in memory. This is the only module that imports langchain-core, an optional extra:
`pip install 'uprise[langchain]'`.
"""

from __future__ import annotations

from typing import Any

from flan_data.schema import Prompt
from serve.filters import PromptFilter
from serve.prompt_retriever import PromptRetriever

try:
    from langchain_core.example_selectors.base import BaseExampleSelector
    from langchain_core.prompts import PromptTemplate
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "serve.langchain needs langchain-core; install it with `pip install 'uprise[langchain]'` "
        "(or `pip install 'langchain-core>=0.3'`)."
    ) from err

EXAMPLE_PROMPT = PromptTemplate.from_template("{prompt}")
"""Renders one selected example: the pool prompt's text as is."""


class UpriseExampleSelector(BaseExampleSelector):
    """Selects few-shot examples for an input with a trained UPRISE prompt retriever."""

    def __init__(self, retriever: PromptRetriever, k: int = 3, input_key: str | None = None,
                 filters: PromptFilter | dict[str, Any] | None = None,
                 diversity: float = 0.0) -> None:
        self.retriever = retriever
        self.k = k
        self.input_key = input_key
        self.filters = PromptFilter.coerce(filters)
        self.diversity = diversity

    @classmethod
    def from_pretrained(cls, path: str, **kwargs: Any) -> UpriseExampleSelector:
        """Loads the retriever directory at `path`; `kwargs` go to the constructor."""
        return cls(PromptRetriever.from_pretrained(path), **kwargs)

    def _query(self, input_variables: dict[str, Any]) -> str:
        if self.input_key is not None:
            if self.input_key not in input_variables:
                raise KeyError(f"input_key {self.input_key!r} is not among the input variables "
                               f"{sorted(input_variables)}; pass input_key= one of them.")
            return str(input_variables[self.input_key])
        if len(input_variables) != 1:
            raise ValueError(f"got input variables {sorted(input_variables)}; pass input_key= "
                             "naming the one that holds the task input.")
        return str(next(iter(input_variables.values())))

    def select_examples(self, input_variables: dict[str, Any]) -> list[dict[str, Any]]:
        """The k retrieved prompts as example dicts, best *last* (nearest the input)."""
        hits = self.retriever.retrieve(self._query(input_variables), k=self.k,
                                       filters=self.filters, diversity=self.diversity)
        return [{"prompt": h.text, "id": h.id, "task": h.task, "cluster": h.cluster,
                 "score": h.score, "rank": h.rank} for h in reversed(hits)]

    def add_example(self, example: dict[str, Any]) -> str:
        """Adds `example["prompt"]` to the in-memory pool; returns its id."""
        if "prompt" not in example:
            raise KeyError(f"example has keys {sorted(example)}; expected 'prompt' (the rendered "
                           "demonstration) and optionally 'id', 'task', 'cluster'.")
        prompt_id = str(example.get("id", f"added-{len(self.retriever.prompts)}"))
        self.retriever.add_prompts([Prompt(id=prompt_id, task=str(example.get("task", "added")),
                                           cluster=str(example.get("cluster", "added")),
                                           template=-1, text=str(example["prompt"]))])
        return prompt_id
