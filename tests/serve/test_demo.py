"""The demo's pure callback, and that `build_demo` assembles a Blocks with the expected parts."""

from __future__ import annotations

import pytest

from serve.demo import ELEM_IDS, TABLE_COLUMNS, DemoInputError, retrieve_for_display

QUERY = "Is this review positive or negative? A dull film."


def test_callback_returns_the_table_and_augmented_prompt(prompt_retriever):
    rows, augmented = retrieve_for_display(prompt_retriever, QUERY, k=4)
    hits = prompt_retriever.retrieve(QUERY, k=4)
    assert rows == [[h.rank, round(h.score, 4), h.task, h.cluster, h.text] for h in hits]
    assert len(rows[0]) == len(TABLE_COLUMNS)
    assert augmented == prompt_retriever.augment(QUERY, k=4)


def test_callback_accepts_the_slider_float(prompt_retriever):
    rows, _ = retrieve_for_display(prompt_retriever, QUERY, k=2.0)
    assert [r[0] for r in rows] == [1, 2]


@pytest.mark.parametrize(("query", "message"), [("   ", "Type a task input"),
                                                ("x" * 51, "has 51 characters")])
def test_callback_rejects_empty_and_too_long_inputs(prompt_retriever, query, message):
    with pytest.raises(DemoInputError, match=message):
        retrieve_for_display(prompt_retriever, query, k=3, max_input_chars=50)


def test_build_demo_has_the_components(prompt_retriever):
    gr = pytest.importorskip("gradio", reason="gradio is not installed (pip install uprise[demo])")
    from serve import build_demo

    demo = build_demo(prompt_retriever, examples=["an example input"])
    assert isinstance(demo, gr.Blocks)
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    assert set(ELEM_IDS.values()) <= set(by_id)
    assert isinstance(by_id[ELEM_IDS["table"]], gr.Dataframe)
    slider = by_id[ELEM_IDS["k"]]
    assert (slider.minimum, slider.maximum, slider.value) == (1, 10, 3)
    assert list(by_id[ELEM_IDS["table"]].headers) == TABLE_COLUMNS


def test_callback_applies_filters_and_diversity(prompt_retriever):
    from serve.demo import ui_filters

    flt = ui_filters(None, ["nli", "commonsense"], ["piqa"])
    rows, augmented = retrieve_for_display(prompt_retriever, QUERY, 3, filters=flt, diversity=0.3)
    hits = prompt_retriever.retrieve(QUERY, k=3, filters=flt, diversity=0.3)
    assert [r[4] for r in rows] == [h.text for h in hits] and {r[2] for r in rows} == {"rte"}
    assert augmented == prompt_retriever.augment(QUERY, k=3, filters=flt, diversity=0.3)
    with pytest.raises(DemoInputError, match="No prompt in the pool passes these filters"):
        retrieve_for_display(prompt_retriever, QUERY, 3, filters=ui_filters(["rte"], None,
                                                                            ["rte"]))


def test_build_demo_offers_the_pools_tasks_and_clusters(prompt_retriever):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install uprise[demo])")
    from serve import build_demo

    demo = build_demo(prompt_retriever)
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    choices = [c[0] if isinstance(c, tuple | list) else c
               for c in by_id[ELEM_IDS["cluster"]].choices]
    assert choices == prompt_retriever.clusters
    assert by_id[ELEM_IDS["task"]].multiselect
    assert (by_id[ELEM_IDS["diversity"]].minimum, by_id[ELEM_IDS["diversity"]].maximum) == (0, 1)
