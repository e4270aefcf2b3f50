"""The Gradio demo: type a task input, see the retrieved prompts and the augmented LM input.

Contract: `retrieve_for_display` is the pure callback (no gradio) that the UI calls; it
returns the table rows (columns `TABLE_COLUMNS`) and the augmented prompt, honours the task /
cluster filters and the MMR diversity, and raises `DemoInputError` with a readable message for
an empty or over-long input or a filter that leaves nothing, which the UI shows as a Gradio error
instead of crashing. `build_demo` assembles the `gradio.Blocks` (gradio is imported there only):
input box, k slider, task/cluster include and task exclude dropdowns filled from the pool, a
diversity slider, the table, the augmented prompt and clickable examples; components carry
stable `elem_id`s (`ELEM_IDS`) for browser tests, and the callback is the API endpoint
`/retrieve` (`API_NAME`) with inputs in `API_INPUTS` order. `launch_demo` loads a retriever
directory and serves the app on 127.0.0.1 unless told otherwise, until interrupted.
"""

from __future__ import annotations

import logging
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


def ui_filters(task: Sequence[str] | None, cluster: Sequence[str] | None,
               exclude_task: Sequence[str] | None) -> PromptFilter:
    """The dropdowns' selections (None or lists) as a `PromptFilter`."""
    return PromptFilter(task=tuple(task or ()), cluster=tuple(cluster or ()),
                        exclude_task=tuple(exclude_task or ()))


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

    def on_retrieve(query: str, k: float, task: list[str] | None, cluster: list[str] | None,
                    exclude_task: list[str] | None, diversity: float):
        try:
            return retrieve_for_display(retriever, query, int(k), max_input_chars,
                                        ui_filters(task, cluster, exclude_task), diversity)
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
              outputs=[table, augmented], api_name=API_NAME, concurrency_limit=concurrency_limit)
    return demo


def _input_components(gr: Any, retriever: PromptRetriever) -> dict[str, Any]:
    """The query box, k and diversity sliders, filter dropdowns and the button, by name."""
    c: dict[str, Any] = {}
    with gr.Row():
        c["query"] = gr.Textbox(label="Task input", lines=4, elem_id=ELEM_IDS["query"],
                                placeholder="Paste a task input, e.g. a review to classify.")
        with gr.Column(scale=0, min_width=220):
            c["k"] = gr.Slider(1, 10, value=3, step=1, label="k (prompts)", elem_id=ELEM_IDS["k"])
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
    demo.launch(server_name=host, server_port=port, share=share)
