"""Export of a `BiEncoder` to a self-describing sentence-transformers directory, and loading it.

Contract: `export_retriever` writes a directory that plain
`sentence_transformers.SentenceTransformer(dir)` loads as one model with two routes (its
`Router` module): `encode_query` runs the query tower, `encode_document` the prompt tower
(Transformer -> Pooling -> Normalize each), weights in safetensors. Beside them:
`uprise_config.json` (the `BiEncoderConfig`, prefixes, similarity, training metadata, library
versions) and a Hugging Face style model card `README.md`. The write is atomic: everything goes
to a temporary sibling directory which is renamed into place last. The untrained baseline is the
same function applied to a freshly initialised `BiEncoder`. `model_card` renders the card, with
evaluation numbers when `retriever.index_dir.update_model_card` rewrites it. No pickle is written:
sentence-transformers saves JSON configs, tokenizer files and `model.safetensors` per tower.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from flan_data.provenance import library_versions
from flan_data.schema import atomic_write, refuse_nonempty_dir, write_json
from retriever.model import HUB_IDS, BiEncoder, BiEncoderConfig

log = logging.getLogger(__name__)

CONFIG_NAME = "uprise_config.json"
FORMAT = "uprise-retriever"
FORMAT_VERSION = 1


def export_retriever(
    model: BiEncoder,
    out_dir: str | os.PathLike[str],
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Writes `model` as a two-tower SentenceTransformer directory; returns `out_dir`.

    `metadata` (scoring LM, held-out cluster, training clusters, data dir, seed, ...) is stored
    in `uprise_config.json` and summarised in the model card. A non-empty `out_dir` is refused
    unless `overwrite=True`, in which case it is replaced as a whole.
    """
    out = refuse_nonempty_dir(out_dir, "", "pass overwrite=True (--overwrite_export) to replace "
                              "it, or choose another directory.", overwrite=overwrite)
    metadata = dict(metadata or {})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        st = _to_sentence_transformer(model, tmp / "_towers")
        st.save(str(tmp / "export"), create_model_card=False, safe_serialization=True)
        export = tmp / "export"
        config = _uprise_config(model, metadata)
        write_json(export / CONFIG_NAME, config)
        atomic_write(export / "README.md", [model_card(config)])
        _replace_dir(export, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported retriever to %s", out)
    return out


def _to_sentence_transformer(model: BiEncoder, scratch: Path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import (
        Normalize,
        Pooling,
        Router,
        Transformer,
    )

    cfg = model.config
    routes = {}
    for route, tower, max_length in (
        ("query", model.query_encoder, cfg.query_max_length),
        ("document", model.prompt_encoder, cfg.prompt_max_length),
    ):
        folder = scratch / route
        tower.save_pretrained(folder, safe_serialization=True)
        model.tokenizer.save_pretrained(folder)
        modules = [
            Transformer(str(folder), max_seq_length=max_length),
            Pooling(model.dim, pooling_mode=cfg.pooling),
        ]
        if cfg.normalize:
            modules.append(Normalize())
        routes[route] = modules
    router = Router.for_query_document(
        query_modules=routes["query"], document_modules=routes["document"]
    )
    return SentenceTransformer(
        modules=[router], device="cpu", similarity_fn_name="dot",
        prompts={"query": "", "document": ""},
    )


def _replace_dir(src: Path, dst: Path) -> None:
    """Renames `src` to `dst`; an existing `dst` is moved aside first and removed after."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _uprise_config(model: BiEncoder, metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "encoder": model.config.to_dict(),
        "embedding_dim": model.dim,
        "similarity": "dot",
        "query_prefix": "",
        "prompt_prefix": "",
        "routes": {"query": "query tower", "document": "prompt tower"},
        "metadata": metadata,
        "library_versions": library_versions(),
    }


def _front_matter(config: dict[str, Any], evaluation: dict[str, Any] | None) -> str:
    import yaml

    enc, meta = config["encoder"], config["metadata"]
    base = HUB_IDS.get(enc["base_model"], enc["base_model"])
    front: dict[str, Any] = {"library_name": "sentence-transformers",
                             "pipeline_tag": "sentence-similarity"}
    if "/" in base and not Path(base).exists():
        front["base_model"] = base
    front["tags"] = ["sentence-transformers", "feature-extraction", "prompt-retrieval", "uprise"]
    uprise = {"base_model": enc["base_model"], "trained": bool(meta.get("trained", True)),
              "embedding_dim": config["embedding_dim"]}
    uprise.update({key: meta[key] for key in _CARD_FACTS if meta.get(key) is not None})
    if evaluation:
        uprise["evaluation"] = evaluation
        front["model-index"] = _model_index(evaluation)
    front["uprise"] = uprise
    return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n"


def _model_index(evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """The Hub's `model-index` results: one per held-out cluster, one metric per method (the
    mean of the cluster's task metrics, in points; methods other than `trained` are baselines)."""
    methods = evaluation["methods"]
    clusters = sorted({c for m in methods.values() for c in m["clusters"]})
    results = []
    for cluster in clusters:
        metrics = [{"type": "mean_task_metric", "name": f"{name} (mean task metric, points)",
                    "value": round(100 * m["clusters"][cluster], 2)}
                   for name, m in methods.items() if cluster in m["clusters"]]
        results.append({"task": {"type": "text-generation",
                                 "name": "prompt retrieval for zero-shot evaluation"},
                        "dataset": {"type": "flan", "name": f"FLAN held-out cluster {cluster}",
                                    "config": cluster},
                        "metrics": metrics})
    return [{"name": "uprise-prompt-retriever", "results": results}]


_CARD_FACTS = ("scoring_lm", "held_out_cluster", "train_clusters", "loss", "seed", "global_steps")


def model_card(config: dict[str, Any], evaluation: dict[str, Any] | None = None) -> str:
    enc, meta = config["encoder"], config["metadata"]
    base = HUB_IDS.get(enc["base_model"], enc["base_model"])
    trained = meta.get("trained", True)
    facts = "\n".join(f"- **{k}**: `{json.dumps(v)}`" for k, v in sorted(meta.items()))
    body = f"""
# UPRISE prompt retriever ({'trained' if trained else 'untrained baseline'})

A two-tower prompt retriever in the style of UPRISE (Cheng et al., EMNLP 2023,
[arXiv:2303.08518](https://arxiv.org/abs/2303.08518)): the query tower embeds a task input,
the prompt tower embeds pool demonstrations, and the best demonstrations for an input are the
ones with the highest inner product. Both towers started from `{base}`.

## Usage

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("path/to/this/folder")
q_emb = model.encode_query(["Is this review positive? A moving film."])
p_emb = model.encode_document(["Premise: ... Hypothesis: ... Answer: yes"])
scores = q_emb @ p_emb.T
```

With its index (`uprise index`), `serve.PromptRetriever.from_pretrained(folder)` retrieves and
prepends prompts for any LLM.

## Embedding

- pooling: `{enc['pooling']}`, L2-normalised: `{enc['normalize']}`, similarity: inner product
- max tokens: query `{enc['query_max_length']}`, prompt `{enc['prompt_max_length']}`
- prefixes: none

## Training

Trained with `uprise train` on proxy-LM judgements of which demonstrations help the LM answer:
positive = best-scored candidate that made the LM correct, hard negatives = lowest-scored
candidates, plus in-batch negatives (InfoNCE).

{facts or '- (no metadata recorded)'}
"""
    return _front_matter(config, evaluation) + body + _evaluation_markdown(evaluation)


def _evaluation_markdown(evaluation: dict[str, Any] | None) -> str:
    if not evaluation:
        return ""
    methods = evaluation["methods"]
    clusters = sorted({c for m in methods.values() for c in m["clusters"]})
    lines = ["", "## Evaluation", "",
             "Downstream accuracy/metric of the scoring LM with each method's prompts, on held-out "
             "clusters (points; from `uprise eval`'s report.json).", "",
             "| method | average | " + " | ".join(clusters) + " |",
             "|---|---|" + "---|" * len(clusters)]
    for name, m in methods.items():
        cells = [f"{100 * m['clusters'][c]:.1f}" if c in m["clusters"] else "" for c in clusters]
        lines.append(f"| {name} | {100 * m['average']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evaluation_summary(report: dict[str, Any]) -> dict[str, Any]:
    """Per-method average and per-cluster values of an evaluation report (one or many clusters)."""
    if "methods" not in report and "clusters" not in report:
        raise ValueError(f"the report has keys {sorted(report)}; expected an evaluation report "
                         "with 'methods' (one held-out cluster) or 'clusters' (several), as "
                         "written to report.json by `uprise eval`.")
    parts = list(report["clusters"].values()) if "clusters" in report else [report]
    methods: dict[str, dict[str, Any]] = {}
    for part in parts:
        for name, result in part["methods"].items():
            entry = methods.setdefault(name, {"average": 0.0, "clusters": {}})
            entry["clusters"].update({c: round(float(v), 4)
                                      for c, v in result["clusters"].items()})
    for name, entry in methods.items():
        values = list(entry["clusters"].values())
        single = parts[0]["methods"][name].get("average") if len(parts) == 1 else None
        entry["average"] = round(float(single if single is not None else
                                       sum(values) / max(len(values), 1)), 4)
    return {"methods": methods}


def load_retriever_encoder(path: str | os.PathLike[str], device: str | None = None):
    """Loads an export; returns `(SentenceTransformer, uprise_config dict)`."""
    folder = Path(path)
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{folder} is not a uprise retriever export (no {CONFIG_NAME}); create one with "
            "`uprise train ... --export_dir DIR` or `retriever.export_retriever`."
        )
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("format") != FORMAT:
        raise ValueError(f"{config_path}: format {config.get('format')!r}, expected {FORMAT!r}.")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device=device), config


def encoder_config(config: dict[str, Any]) -> BiEncoderConfig:
    """The `BiEncoderConfig` recorded in an export's `uprise_config.json`."""
    return BiEncoderConfig.from_dict(config["encoder"])
