"""The Gradio demo: type a task input, see the retrieved prompts and the augmented LM input.

Contract: `retrieve_for_display` is the pure callback (no gradio) that the UI calls; it
returns the table rows (columns `TABLE_COLUMNS`) and the augmented prompt, and raises
`DemoInputError` with a readable message for an empty or over-long input, which the UI shows
as a Gradio error instead of crashing. `build_demo` assembles the `gradio.Blocks` (gradio is
imported there only); components carry stable `elem_id`s (`ELEM_IDS`) for browser tests.
`launch_demo` loads a retriever directory and serves the app until interrupted.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from serve.prompt_retriever import PromptRetriever, build_context

if TYPE_CHECKING:
    import gradio

log = logging.getLogger(__name__)

TABLE_COLUMNS = ["rank", "score", "task", "cluster", "prompt"]
ELEM_IDS = {
    "query": "uprise-query",
    "k": "uprise-k",
    "button": "uprise-retrieve",
    "table": "uprise-prompts",
    "augmented": "uprise-augmented",
}
DEFAULT_EXAMPLES = [
    "Review: a gorgeous, moving film that stays with you.\nIs this review positive or negative?",
    "Premise: A man is playing a guitar on stage.\nHypothesis: A musician is performing.\n"
    "Does the premise entail the hypothesis?",
    "Question: Which of these is a mammal? Options: shark, dolphin, trout.\nAnswer:",
]


class DemoInputError(ValueError):
    """The demo's input cannot be served; the message is shown to the user as is."""


def retrieve_for_display(
    retriever: PromptRetriever, query: str, k: int = 3, max_input_chars: int = 4000
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
    hits = retriever.retrieve(query, k=int(k))
    rows = [[h.rank, round(h.score, 4), h.task, h.cluster, h.text] for h in hits]
    return rows, build_context(query, hits)


def build_demo(
    retriever: PromptRetriever,
    examples: list[str] | None = None,
    max_input_chars: int = 4000,
) -> gradio.Blocks:
    """The demo UI over `retriever` (not launched); `examples` default to `DEFAULT_EXAMPLES`."""
    import gradio as gr

    def on_retrieve(query: str, k: float) -> tuple[list[list[Any]], str]:
        try:
            return retrieve_for_display(retriever, query, int(k), max_input_chars)
        except DemoInputError as err:
            raise gr.Error(str(err)) from err

    n_prompts = len(retriever.prompts)
    with gr.Blocks(title="UPRISE prompt retriever", analytics_enabled=False) as demo:
        gr.Markdown(
            "# UPRISE prompt retriever\n"
            f"Retrieves demonstrations from a pool of {n_prompts} prompts for any task input "
            "([Cheng et al., EMNLP 2023](https://arxiv.org/abs/2303.08518)). The best prompt "
            "is placed last, nearest the input."
        )
        with gr.Row():
            query = gr.Textbox(label="Task input", lines=4, elem_id=ELEM_IDS["query"],
                               placeholder="Paste a task input, e.g. a review to classify.")
            with gr.Column(scale=0, min_width=220):
                k = gr.Slider(1, 10, value=3, step=1, label="k (prompts)", elem_id=ELEM_IDS["k"])
                button = gr.Button("Retrieve", variant="primary", elem_id=ELEM_IDS["button"])
        table = gr.Dataframe(headers=TABLE_COLUMNS, label="Retrieved prompts (best first)",
                             interactive=False, wrap=True, elem_id=ELEM_IDS["table"],
                             datatype=["number", "number", "str", "str", "str"])
        augmented = gr.Textbox(label="Augmented prompt (send this to your LM)", lines=10,
                               interactive=False, elem_id=ELEM_IDS["augmented"],
                               buttons=["copy"])
        gr.Examples(examples=[[e] for e in (examples or DEFAULT_EXAMPLES)], inputs=[query])
        button.click(on_retrieve, inputs=[query, k], outputs=[table, augmented])
        query.submit(on_retrieve, inputs=[query, k], outputs=[table, augmented])
    return demo


def launch_demo(
    retriever_dir: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
) -> None:
    """Loads `retriever_dir` and serves the demo at http://host:port until interrupted."""
    retriever = PromptRetriever.from_pretrained(retriever_dir)
    demo = build_demo(retriever)
    log.info("serving the demo for %s on http://%s:%d", retriever_dir, host, port)
    demo.launch(server_name=host, server_port=port, share=share)
