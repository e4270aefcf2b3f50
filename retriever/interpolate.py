"""Weight-space interpolation of a trained retriever with the encoder it started from (WiSE-FT).

Contract: `interpolate_encoders(start, trained, alpha)` takes two loaded exports of the same
architecture (`retriever.export.load_retriever_encoder`) and returns `trained` with every
floating-point parameter and buffer set to `alpha * trained + (1 - alpha) * start`: alpha 1 is
the trained retriever, alpha 0 its start (the untrained encoder). Integer buffers (position ids)
must be equal and are kept. `load_interpolated(trained_dir, start_dir, alpha)` loads both
exports, refuses a start that is not the trained export's `encoder.base_model`, and interpolates.
Wortsman et al., "Robust fine-tuning of zero-shot models" (CVPR 2022): averaging fine-tuned and
starting weights keeps much of the fine-tuning gain in distribution and of the start's
robustness out of it; here "out of distribution" is a held-out task cluster.
"""

from __future__ import annotations

import os
from typing import Any


def interpolate_encoders(start: Any, trained: Any, alpha: float) -> Any:
    """`trained` (a SentenceTransformer, changed in place and returned) with its weights moved
    to `alpha * trained + (1 - alpha) * start`; `start` is left as it was."""
    import torch

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha}; expected a number in [0, 1] (1: the trained "
                         "retriever, 0: its start).")
    ours, theirs = trained.state_dict(), start.state_dict()
    if set(ours) != set(theirs):
        odd = sorted(set(ours) ^ set(theirs))
        raise ValueError(f"the two retrievers differ in {len(odd)} weight names (e.g. "
                         f"{odd[0]!r}); interpolate a trained export with the untrained export "
                         "of the encoder it started from.")
    mixed = {}
    for name, weight in ours.items():
        other = theirs[name]
        if weight.shape != other.shape:
            raise ValueError(f"weight {name!r} has shape {tuple(weight.shape)} in the trained "
                             f"retriever and {tuple(other.shape)} in the start; interpolate "
                             "exports of the same encoder.")
        if weight.is_floating_point():
            mixed[name] = torch.lerp(other.to(weight.dtype), weight, alpha)
        elif not torch.equal(weight, other):
            raise ValueError(f"non-float buffer {name!r} differs between the two retrievers; "
                             "interpolate exports of the same encoder.")
    trained.load_state_dict(mixed, strict=False)
    return trained


def load_interpolated(trained_dir: str | os.PathLike[str], start_dir: str | os.PathLike[str],
                      alpha: float, device: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Loads the trained export and its start's export and interpolates them; returns
    `(SentenceTransformer, the trained export's uprise_config)`."""
    from retriever.export import load_retriever_encoder

    trained, config = load_retriever_encoder(trained_dir, device=device)
    start, start_config = load_retriever_encoder(start_dir, device=device)
    ours = config.get("encoder", {}).get("base_model")
    theirs = start_config.get("encoder", {}).get("base_model")
    if ours != theirs:
        raise ValueError(f"{trained_dir} started from {ours!r} but {start_dir} is {theirs!r}; "
                         "give the untrained export of the trained retriever's own encoder.")
    return interpolate_encoders(start, trained, alpha), config
