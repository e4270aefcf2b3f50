"""`ServeSettings`: every option of `uprise serve`, typed and checked once, before anything loads.

Contract: `ServeSettings(...)` raises `ValueError` naming the option, the value, what was expected
and the fix, for every bad value (a port outside 1-65535, a non-positive limit, an upstream URL
that is not http(s), an insertion mode other than "user" or "system", a system template without
`{prompts}`, an API-key environment variable that is named but unset). `client_api_key()` and
`upstream_api_key()` read the keys from the environment variables named by the settings (keys
themselves are never options: they would show in `ps` and shell history).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from urllib.parse import urlparse

INSERT_MODES = ("user", "system")
"""Where the proxy puts retrieved prompts: before the user's last message (UPRISE's own format,
the same text as `PromptRetriever.augment`), or in a system message before the conversation."""

LOG_FIELDS = "uprise_fields"
"""The `extra` key of a request's log record holding its fields (`serve.api.cli.JsonFormatter`)."""

DEFAULT_SYSTEM_TEMPLATE = "Examples of similar tasks and their answers:\n\n{prompts}"


@dataclass(frozen=True)
class ServeSettings:
    """Options of the HTTP service; the defaults suit a single local user."""

    host: str = "127.0.0.1"
    port: int = 8000
    upstream: str | None = None  # OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1
    upstream_timeout_s: float = 60.0
    upstream_api_key_env: str | None = None  # env var holding the upstream's key
    api_key_env: str | None = None  # env var holding the key clients must send
    default_k: int = 3
    max_k: int = 32
    max_queries: int = 256  # queries per /v1/retrieve or /v1/augment request
    max_query_chars: int = 20_000
    max_body_bytes: int = 4 * 1024 * 1024
    max_batch: int = 64  # queries per encoder call
    insert: str = "user"
    system_template: str = DEFAULT_SYSTEM_TEMPLATE
    log_queries: bool = False
    graceful_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name.startswith(("max_", "default_")) or f.name == "port":
                _check_int(f.name, getattr(self, f.name))
            if f.name.endswith("_timeout_s"):
                _check_positive_number(f.name, getattr(self, f.name))
        if self.port > 65535:
            raise ValueError(f"port={self.port}; expected 1-65535, e.g. --port 8000.")
        if self.default_k > self.max_k:
            raise ValueError(f"default_k={self.default_k} is above max_k={self.max_k}; "
                             "raise --max-k or lower --k.")
        if self.insert not in INSERT_MODES:
            raise ValueError(f"insert={self.insert!r}; expected one of {list(INSERT_MODES)}.")
        if "{prompts}" not in self.system_template:
            raise ValueError(f"system_template={self.system_template!r} has no '{{prompts}}' "
                             "placeholder; add one where the retrieved prompts go.")
        if self.upstream is not None:
            url = urlparse(self.upstream)
            if url.scheme not in ("http", "https") or not url.netloc:
                raise ValueError(f"upstream={self.upstream!r}; expected an http(s) base URL of "
                                 "an OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1.")
        for name in ("api_key_env", "upstream_api_key_env"):
            var = getattr(self, name)
            if var is not None and not os.environ.get(var):
                raise ValueError(f"{name}={var!r} but the environment variable {var} is unset "
                                 f"or empty; export {var}=... before starting the service.")

    def client_api_key(self) -> str | None:
        """The key clients must present, or None when the service is open."""
        return os.environ[self.api_key_env] if self.api_key_env else None

    def upstream_api_key(self) -> str | None:
        return os.environ[self.upstream_api_key_env] if self.upstream_api_key_env else None


def _check_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}; expected a positive integer.")


def _check_positive_number(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name}={value!r}; expected a positive number of seconds.")
