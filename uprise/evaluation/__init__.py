"""Evaluation: does a retriever's choice of prompts help an LM on tasks it never saw?

One room per step, each depending only on `flan_data`, `proxy_lm`, `retriever`, `serve` and the
modules listed before it (never on the rest of `uprise`):

| module | what it owns |
|---|---|
| `stats.py` | the paired, task-stratified bootstrap |
| `predictors.py` | the evaluated LM's interface (`Predictor`, `LocalLM`) |
| `api_lm.py` | `ApiLM`: an OpenAI-compatible server as a `Predictor` |
| `prediction_cache.py` | `CachedPredictor`: a predictor's answers cached on disk (resume, reuse) |
| `methods.py` | the method names (`METHOD_NAMES`, `BASELINES`) and the prompt-selection methods |
| `summary.py` | per-example values -> the report dict (means, CIs, answer changes) |
| `run.py` | leakage check, then every method with one predictor on the same queries |
| `abstain.py` | the abstention threshold, calibrated on training clusters |
| `ranking.py` | the ranking section: retrievers' orders against the LM's scores |
| `report.py` | the report dict as report.md, report.png and a text table |
"""

from __future__ import annotations

from uprise.evaluation.methods import (
    ABSTAIN,
    BASELINES,
    DEFAULT_METHODS,
    METHOD_NAMES,
    Method,
    MethodName,
    build_methods,
)
from uprise.evaluation.prediction_cache import cached_predictor
from uprise.evaluation.predictors import LocalLM, Predictor
from uprise.evaluation.report import REPORT_FILE, format_table, json_safe, write_report_files
from uprise.evaluation.run import check_pool_leakage, evaluate_methods, write_predictions
from uprise.evaluation.summary import summarise

__all__ = ["ABSTAIN", "BASELINES", "DEFAULT_METHODS", "METHOD_NAMES", "REPORT_FILE", "LocalLM",
           "Method", "MethodName", "Predictor", "build_methods", "cached_predictor",
           "check_pool_leakage", "evaluate_methods", "format_table", "json_safe", "summarise",
           "write_predictions", "write_report_files"]
