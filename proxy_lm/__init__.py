"""The frozen proxy LM: loading, continuation likelihoods, candidate scoring, predictions.

Public names are listed in `__all__` and loaded lazily on first use, so `import proxy_lm`
stays light (torch and transformers load with the module that needs them).
"""

from __future__ import annotations

from flan_data.lazy import lazy_exports

_EXPORTS = {
    "EMBEDDED_LM": "proxy_lm.loading",
    "LanguageModel": "proxy_lm.loading",
    "load_lm": "proxy_lm.loading",
    "resolve_dtype": "proxy_lm.loading",
    "embedded_lm_path": "proxy_lm.loading",
    "continuation_losses": "proxy_lm.likelihood",
    "score_record": "proxy_lm.scoring",
    "score_candidates": "proxy_lm.scoring",
    "score_zero_shot": "proxy_lm.scoring",
    "read_scores": "flan_data.score_folder",
    "score_candidates_distributed": "proxy_lm.distributed",
    "ScoreCache": "proxy_lm.score_cache",
    "Prediction": "flan_data.schema",
    "predict": "proxy_lm.evaluate",
    "generate": "proxy_lm.evaluate",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
