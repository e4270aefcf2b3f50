"""The records passed between pipeline stages and their JSONL files.

Contract: every stage reads and writes these records only, one JSON object per line.
Readers validate each line (fields present, known and of the annotated JSON type) and raise
`SchemaError` naming the file, the line and the field; writers are atomic (temp file +
rename), so a crash never leaves a half-written file.

    Prompt      a pool demonstration: a training example rendered with a template,
                input followed by its gold answer (`text`).
    Query       a task input to be answered: rendered `input`, answer `options` (choice
                tasks) with the `gold` index, or free-form `references` (generation tasks).
    Candidates  the prompt ids sampled for one training query.
    Score       the proxy LM's judgement of one (prompt, query) pair.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

SEP = "\n\n"
"""Joins demonstrations with each other and with the query input."""


class SchemaError(ValueError):
    """A record file does not have the expected shape."""


@dataclass(frozen=True)
class Prompt:
    id: str
    task: str
    cluster: str
    template: int
    text: str


@dataclass(frozen=True)
class Query:
    id: str
    task: str
    cluster: str
    template: int
    input: str
    options: list[str] | None = None
    gold: int | None = None
    references: list[str] = field(default_factory=list)

    @property
    def is_choice(self) -> bool:
        return self.options is not None

    @property
    def target(self) -> str:
        """The gold continuation: the gold option, or the first reference."""
        if self.options is not None:
            assert self.gold is not None, self.id
            return self.options[self.gold]
        return self.references[0]

    def continuations(self) -> list[str]:
        """What the LM scores after the input: every option, or the gold reference."""
        return list(self.options) if self.options is not None else [self.target]


@dataclass(frozen=True)
class Candidates:
    query_id: str
    prompt_ids: list[str]


@dataclass(frozen=True)
class Score:
    """Proxy-LM judgement of `prompt_id` as a demonstration for `query_id`.

    option_losses: mean per-token NLL of each continuation (choice: one per option;
    generation: one, the gold reference). score: higher is better (choice: the gold option's
    probability among the options from the length-normalised losses; generation: minus the gold
    loss). correct: argmin(option_losses) == gold for choice tasks, None for generation.
    """

    query_id: str
    prompt_id: str
    lm: str
    template: int
    option_losses: list[float]
    score: float
    correct: bool | None


@dataclass(frozen=True)
class Prediction:
    """An evaluated LM's answer to `query_id` (local or API-served, see `uprise.evaluation`).

    prediction: the option index (choice) or the generated text (generation); text: the option's
    text, the generated text, or an API model's raw reply; correct: None for generation;
    parsed: False when an API reply named no option (then prediction is -1 and wrong).
    """

    query_id: str
    prediction: int | str
    text: str
    correct: bool | None
    parsed: bool = True


Record = TypeVar("Record", Prompt, Query, Candidates, Score)


def join_context(prompts: Iterable[str], query_input: str) -> str:
    """The LM context: demonstrations (best one last, nearest the input), then the input."""
    return SEP.join([*prompts, query_input])


def to_dict(record: Any) -> dict[str, Any]:
    return dataclasses.asdict(record)


def from_dict(cls: type[Record], row: Any, where: str) -> Record:
    """Builds `cls` from a decoded JSON object, naming `where` and the field on error."""
    if not isinstance(row, dict):
        raise SchemaError(f"{where}: expected a JSON object for a {cls.__name__}, got {row!r:.80}")
    names, required, checks = _decoder(cls)
    missing = [n for n in required if n not in row]
    if missing:
        raise SchemaError(
            f"{where}: {cls.__name__} record lacks field(s) {missing}; "
            f"expected fields {sorted(names)}. Regenerate the file with the stage that writes it."
        )
    unknown = sorted(set(row) - names)
    if unknown:
        raise SchemaError(
            f"{where}: unknown field(s) {unknown} for a {cls.__name__}; expected {sorted(names)}."
        )
    for name, ok, expected in checks:
        if name in row and not ok(row[name]):
            raise SchemaError(
                f"{where}: field {name!r} = {row[name]!r:.80} is {_value_type(row[name])}; "
                f"a {cls.__name__} needs {expected}. Fix that line, or regenerate the file with "
                "the stage that writes it."
            )
    return cls(**row)


_Check = Callable[[Any], bool]


@cache
def _decoder(cls: type) -> tuple[frozenset[str], list[str], list[tuple[str, _Check, str]]]:
    """Field names, required names and one (name, check, expected type) per field of `cls`."""
    hints = get_type_hints(cls)
    fields = dataclasses.fields(cls)
    required = [
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    checks = [(f.name, _type_check(hints[f.name]), _type_name(hints[f.name])) for f in fields]
    return frozenset(f.name for f in fields), required, checks


_JSON_TYPES: dict[Any, frozenset[type]] = {
    str: frozenset({str}), int: frozenset({int}), bool: frozenset({bool}),
    float: frozenset({float, int}),  # JSON writes 1.0 as 1.0, but other writers may write 1
}


def _type_check(tp: Any) -> _Check:
    """A fast predicate for a JSON value of annotation `tp` (bool is not an int here)."""
    if tp is type(None):
        return lambda v: v is None
    if tp in _JSON_TYPES:
        allowed = _JSON_TYPES[tp]
        return lambda v: type(v) in allowed
    origin, args = get_origin(tp), get_args(tp)
    if origin is list and args[0] in _JSON_TYPES:
        items = _JSON_TYPES[args[0]]
        return lambda v: type(v) is list and set(map(type, v)) <= items
    if origin in (Union, UnionType):
        options = [_type_check(a) for a in args]
        return lambda v: any(ok(v) for ok in options)
    raise TypeError(f"no JSON check for field type {tp!r}; add one to schema._type_check")


def _value_type(value: Any) -> str:
    if isinstance(value, list):
        return "a list of " + (", ".join(sorted({type(v).__name__ for v in value})) or "nothing")
    return "null" if value is None else f"a {type(value).__name__}"


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if get_origin(tp) in (Union, UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if get_origin(tp) is list:
        return f"a list of {get_args(tp)[0].__name__}"
    return tp.__name__


def read_jsonl(path: str | os.PathLike[str], cls: type[Record]) -> list[Record]:
    return list(iter_jsonl(path, cls))


def iter_jsonl(path: str | os.PathLike[str], cls: type[Record]) -> Iterator[Record]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such {cls.__name__} file. Run the stage that writes it first "
            "(see `uprise --help`)."
        )
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                msg = f"{where}: not valid JSON ({err.msg} at column {err.colno})"
                raise SchemaError(msg) from err
            yield from_dict(cls, row, where)


def write_jsonl(path: str | os.PathLike[str], records: Iterable[Any]) -> Path:
    """Atomically writes records (dataclasses or dicts) as JSON Lines."""
    lines = (
        json.dumps(r if isinstance(r, dict) else to_dict(r), ensure_ascii=False) + "\n"
        for r in records
    )
    return atomic_write(path, lines)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write(path, [json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n"])


def new_file_mode() -> int:
    """The mode `open()` gives a new file: 0o666 less the process umask (a `mkstemp` file is
    0o600 whatever the umask, so atomic writers chmod their temp file to this)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            umask = next(int(line.split()[1], 8) for line in fh if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):  # not Linux, or an old kernel
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike[str], chunks: Iterable[str]) -> Path:
    """Writes text chunks to a temp file beside `path`, fsyncs it, then renames it in place.
    The file gets the mode a plain `open()` would give it (`new_file_mode`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), new_file_mode())
            for chunk in chunks:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The file's sha256 (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def refuse_nonempty_dir(path: str | os.PathLike[str], what: str, fix: str,
                        ignore: Collection[str] = (), overwrite: bool = False) -> Path:
    """Raises FileExistsError when `path` exists and is not a directory, or (unless `overwrite`)
    is a directory holding an entry whose name is not in `ignore`. The message names the path
    after `what` (e.g. "--export_dir"; "" for the path alone) and ends with `fix`, which says
    how to go on. Returns `path` as a Path."""
    path = Path(path)
    label = f"{what} {path}" if what else str(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{label} exists and is not a directory; choose another path.")
    if not overwrite and path.is_dir() and any(p.name not in ignore for p in path.iterdir()):
        raise FileExistsError(f"{label} is not empty; {fix}")
    return path


def prepare_output_dir(path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Creates `path`; refuses a non-empty directory unless `overwrite` is set."""
    path = refuse_nonempty_dir(path, "", "pass --overwrite to write into it, or choose another "
                               "directory.", overwrite=overwrite)
    path.mkdir(parents=True, exist_ok=True)
    return path
