"""The Gradio demo: type a task input, see the retrieved prompts and the augmented LM input.

Contract: `retrieve_for_display` is the pure callback (no gradio) that the UI calls; it
returns the table rows (columns `TABLE_COLUMNS`) and the augmented prompt, honours the task /
cluster filters and the MMR diversity, and raises `DemoInputError` with a readable message for
an empty or over-long input or a filter that leaves nothing, which the UI shows as a Gradio error
instead of crashing. `build_demo` assembles the `gradio.Blocks` (gradio is imported there only):
input box, k slider, task/cluster include and task exclude dropdowns filled from the pool, a
diversity slider, the table, the augmented prompt and clickable examples; components carry
stable `elem_id`s (`ELEM_IDS`) for browser tests, and the callback is the API endpoint
`/retrieve` (`API_NAME`) with inputs in `API_INPUTS` order. That endpoint takes the raw
values (no Gradio preprocessing) and `parse_api_inputs` checks them, so an API call with a bad
k, diversity or filter gets a Gradio error naming the input, not a silent `{"error": null}`.
`launch_demo` loads a retriever directory and serves the app on 127.0.0.1 unless told
otherwise, until interrupted; the app has no upload component, so Gradio's upload endpoint is
capped at `MAX_FILE_SIZE`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from serve.context import build_context
from serve.filters import PromptFilter
from serve.prompt_retriever import PromptRetriever

if TYPE_CHECKING:
    import gradio

log = logging.getLogger(__name__)

TABLE_COLUMNS = ["rank", "score", "task", "cluster", "prompt"]
ELEM_IDS = {
    "query": "uprise-query",
    "k": "uprise-k",
    "task": "uprise-task",
    "cluster": "uprise-cluster",
    "exclude_task": "uprise-exclude-task",
    "diversity": "uprise-diversity",
    "button": "uprise-retrieve",
    "table": "uprise-prompts",
    "augmented": "uprise-augmented",
}
API_NAME = "retrieve"
API_INPUTS = ["query", "k", "task", "cluster", "exclude_task", "diversity"]
K_RANGE = (1, 10)
MAX_FILE_SIZE = "1kb"
"""Gradio's upload endpoint accepts files from anyone who can reach the app; nothing here
takes a file, so uploads are capped at (almost) nothing."""
DEFAULT_EXAMPLES = [
    "Review: a gorgeous, moving film that stays with you.\nIs this review positive or negative?",
    "Premise: A man is playing a guitar on stage.\nHypothesis: A musician is performing.\n"
    "Does the premise entail the hypothesis?",
    "Question: Which of these is a mammal? Options: shark, dolphin, trout.\nAnswer:",
]


class DemoInputError(ValueError):
    """The demo's input cannot be served; the message is shown to the user as is."""


def retrieve_for_display(
    retriever: PromptRetriever,
    query: str,
    k: int = 3,
    max_input_chars: int = 4000,
    filters: PromptFilter | dict[str, Any] | None = None,
    diversity: float = 0.0,
) -> tuple[list[list[Any]], str]:
    """(table rows best first, augmented prompt) for `query`; raises `DemoInputError`."""
    query = (query or "").strip()
    if not query:
        raise DemoInputError("Type a task input first, then press Retrieve.")
    if len(query) > max_input_chars:
        raise DemoInputError(
            f"The input has {len(query)} characters; this demo accepts at most "
            f"{max_input_chars}. Shorten it and try again."
        )
    hits = retriever.retrieve(query, k=int(k), filters=filters, diversity=float(diversity))
    if not hits:
        raise DemoInputError("No prompt in the pool passes these filters; clear some of them.")
    rows = [[h.rank, round(h.score, 4), h.task, h.cluster, h.text] for h in hits]
    return rows, build_context(query, hits)


def ui_filters(task: Sequence[str] | str | None, cluster: Sequence[str] | str | None,
               exclude_task: Sequence[str] | str | None) -> PromptFilter:
    """The dropdowns' selections (None, one name or a list of names) as a `PromptFilter`;
    raises `DemoInputError` naming the input for anything else."""
    chosen = {"task": task, "cluster": cluster, "exclude_task": exclude_task}
    for name, value in chosen.items():
        if value is not None and not isinstance(value, str) and not (
                isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)):
            raise DemoInputError(f"{name}: got {value!r}; expected a name or a list of names.")
    return PromptFilter(**{name: value or () for name, value in chosen.items()})


def parse_api_inputs(query: Any, k: Any, task: Any, cluster: Any, exclude_task: Any,
                     diversity: Any) -> tuple[str, int, PromptFilter, float]:
    """The endpoint's raw inputs (`API_INPUTS` order) checked -> (query, k, filters, diversity);
    raises `DemoInputError` naming the bad input, its value and what is expected."""
    if query is not None and not isinstance(query, str):
        raise DemoInputError(f"query: got a {type(query).__name__}; expected the task input as "
                             "text.")
    if not _is_number(k) or k != int(k) or not K_RANGE[0] <= k <= K_RANGE[1]:
        raise DemoInputError(f"k: got {k!r}; expected a whole number of prompts from "
                             f"{K_RANGE[0]} to {K_RANGE[1]}.")
    if not _is_number(diversity) or not 0.0 <= diversity <= 1.0:
        raise DemoInputError(f"diversity: got {diversity!r}; expected a number from 0 to 1 "
                             "(0 = plain top-k).")
    return query or "", int(k), ui_filters(task, cluster, exclude_task), float(diversity)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def build_demo(
    retriever: PromptRetriever,
    examples: list[str] | None = None,
    max_input_chars: int = 4000,
    concurrency_limit: int | None = 4,
) -> gradio.Blocks:
    """The demo UI over `retriever` (not launched); `examples` default to `DEFAULT_EXAMPLES`.

    `concurrency_limit` requests run the callback at once (None: no limit); others queue.
    """
    import gradio as gr

    def on_retrieve(*raw: Any):
        try:
            query, k, filters, diversity = parse_api_inputs(*raw)
            return retrieve_for_display(retriever, query, k, max_input_chars, filters, diversity)
        except (DemoInputError, ValueError, TypeError) as err:
            raise gr.Error(str(err)) from err

    with gr.Blocks(title="UPRISE prompt retriever", analytics_enabled=False) as demo:
        gr.Markdown(
            "# UPRISE prompt retriever\n"
            f"Retrieves demonstrations from a pool of {len(retriever.prompts)} prompts for any "
            "task input ([Cheng et al., EMNLP 2023](https://arxiv.org/abs/2303.08518)). The best "
            f"prompt is placed last, nearest the input. Inputs up to {max_input_chars} characters."
        )
        inputs = _input_components(gr, retriever)
        table = gr.Dataframe(headers=TABLE_COLUMNS, label="Retrieved prompts (best first)",
                             interactive=False, wrap=True, elem_id=ELEM_IDS["table"],
                             datatype=["number", "number", "str", "str", "str"])
        augmented = gr.Textbox(label="Augmented prompt (send this to your LM)", lines=10,
                               interactive=False, elem_id=ELEM_IDS["augmented"],
                               buttons=["copy"])
        gr.Examples(examples=[[e] for e in (examples or DEFAULT_EXAMPLES)],
                    inputs=[inputs["query"]], label="Examples (click one)")
        args = [inputs[name] for name in API_INPUTS]
        gr.on([inputs["button"].click, inputs["query"].submit], on_retrieve, inputs=args,
              outputs=[table, augmented], api_name=API_NAME, concurrency_limit=concurrency_limit,
              preprocess=False)  # raw values, checked by parse_api_inputs
    return demo


def _input_components(gr: Any, retriever: PromptRetriever) -> dict[str, Any]:
    """The query box, k and diversity sliders, filter dropdowns and the button, by name."""
    c: dict[str, Any] = {}
    with gr.Row():
        c["query"] = gr.Textbox(label="Task input", lines=4, elem_id=ELEM_IDS["query"],
                                placeholder="Paste a task input, e.g. a review to classify.")
        with gr.Column(scale=0, min_width=220):
            c["k"] = gr.Slider(*K_RANGE, value=3, step=1, label="k (prompts)",
                               elem_id=ELEM_IDS["k"])
            c["diversity"] = gr.Slider(0.0, 1.0, value=0.0, step=0.05,
                                       label="diversity (MMR; 0 = plain top-k)",
                                       elem_id=ELEM_IDS["diversity"])
            c["button"] = gr.Button("Retrieve", variant="primary", elem_id=ELEM_IDS["button"])
    with gr.Row():
        for name, label, choices in (
            ("task", "Only these tasks", retriever.tasks),
            ("cluster", "Only these clusters", retriever.clusters),
            ("exclude_task", "Exclude these tasks", retriever.tasks),
        ):
            c[name] = gr.Dropdown(choices=choices, value=[], multiselect=True, label=label,
                                  elem_id=ELEM_IDS[name])
    return c


def launch_demo(
    retriever_dir: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    concurrency_limit: int | None = 4,
) -> None:
    """Loads `retriever_dir` and serves the demo at http://host:port until interrupted."""
    retriever = PromptRetriever.from_pretrained(retriever_dir)
    demo = build_demo(retriever, concurrency_limit=concurrency_limit)
    log.info("serving the demo for %s on http://%s:%d", retriever_dir, host, port)
    demo.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_FILE_SIZE)
