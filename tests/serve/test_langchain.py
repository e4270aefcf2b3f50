"""The LangChain example selector, and the README's LangChain example run verbatim."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("langchain_core", reason="langchain-core is not installed "
                                             "(pip install 'uprise[langchain]')")

README = Path(__file__).resolve().parents[2] / "README.md"
QUERY = "Premise: the cat sat on the mat. Hypothesis: an animal sat."


def test_selector_returns_retrieved_prompts_best_last(prompt_retriever):
    from serve.langchain import UpriseExampleSelector

    selector = UpriseExampleSelector(prompt_retriever, k=3, filters={"cluster": "nli"})
    examples = selector.select_examples({"query": QUERY})
    hits = prompt_retriever.retrieve(QUERY, k=3, filters={"cluster": "nli"})
    assert [e["id"] for e in examples] == [h.id for h in reversed(hits)]
    assert all(e["cluster"] == "nli" for e in examples)
    with pytest.raises(ValueError, match="input_key"):
        selector.select_examples({"query": QUERY, "other": "x"})


def _readme_langchain_block() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Serving", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return next(b for b in blocks if "FewShotPromptTemplate" in b)


def test_readme_langchain_example_runs(retriever_dir, tmp_path, monkeypatch, capsys):
    """The README block as written, with runs/quickstart/retriever = the tiny test retriever."""
    from serve import PromptRetriever

    (tmp_path / "runs" / "quickstart").mkdir(parents=True)
    (tmp_path / "runs" / "quickstart" / "retriever").symlink_to(retriever_dir)
    monkeypatch.chdir(tmp_path)
    exec(compile(_readme_langchain_block(), str(README), "exec"), {})
    printed = capsys.readouterr().out
    hits = PromptRetriever.from_pretrained(retriever_dir).retrieve(QUERY, k=3)
    assert printed.strip() == PromptRetriever.from_pretrained(retriever_dir).augment(QUERY, k=3)
    assert printed.strip().endswith(hits[0].text + "\n\n" + QUERY)


def test_add_example_makes_it_selectable(dup_retriever):
    import faiss

    from serve import PromptRetriever
    from serve.langchain import UpriseExampleSelector

    copy = PromptRetriever(dup_retriever.encoder,
                           faiss.deserialize_index(faiss.serialize_index(dup_retriever.index)),
                           dup_retriever.prompts)
    selector = UpriseExampleSelector(copy, k=1, input_key="q", filters={"task": "custom"})
    with pytest.raises(ValueError, match="names no task"):
        selector.select_examples({"q": QUERY})
    new_id = selector.add_example({"prompt": "Q: 2+2? A: 4", "task": "custom", "cluster": "math"})
    assert [e["id"] for e in selector.select_examples({"q": "Q: 3+3?"})] == [new_id]
