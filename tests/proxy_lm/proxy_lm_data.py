"""Small query and prompt sets shared by the proxy LM tests."""

from __future__ import annotations

from flan_data.schema import Prompt, Query

WORDS = "the quick brown fox jumps over a lazy dog film cat mat phone radio field answer".split()


def text(i: int, n: int) -> str:
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(n))


def make_queries() -> list[Query]:
    choice = [
        Query(id=f"c{i}", task="sst2", cluster="sentiment", template=i % 2,
              input=text(i, 3 + 4 * i), options=["positive", "negative film review"], gold=i % 2)
        for i in range(4)
    ]
    generation = [
        Query(id=f"g{i}", task="common_gen", cluster="struct_to_text", template=0,
              input=text(10 + i, 5 + i), references=[text(20 + i, 2 + 3 * i)])
        for i in range(2)
    ]
    return choice + generation


def make_prompts() -> list[Prompt]:
    return [Prompt(id=f"p{i}", task="rte", cluster="nli", template=0, text=text(30 + i, 2 + 5 * i))
            for i in range(5)]
