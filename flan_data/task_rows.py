"""Reading the data rows of a user task file: CSV, JSON Lines and gzip-compressed JSON Lines.

Contract: `read_rows(data, where)` returns `(line, row)` pairs in file order, `line` being the
physical line (1-based) where the row's record starts and `row` the parsed JSON value (JSONL) or
a `{header name: text}` dict (CSV). Blank lines are skipped. Every problem is a
`TaskFileError` with a one-line message `<file>:<line>: <what was found>; <how to fix it>`
(`where`, the task file's `data:` line, for a missing file or an unsupported type).

CSV rules: UTF-8 text (a leading BOM is fine); the first non-blank record is the header (unique,
non-empty names, trimmed of spaces); every other record has as many values as the header;
quoting as in RFC 4180 (a value with commas, quotes or line breaks is wrapped in double quotes,
a quote inside it is written "", and it may span lines); a quote left open is an error at the
line it opens.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from pathlib import Path
from typing import Any

DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".csv")


class TaskFileError(ValueError):
    """A task file or its data rows are not valid; the message names file, line and field."""


def data_suffix(path: Path) -> str | None:
    """The supported suffix `path` ends with, or None."""
    return next((s for s in DATA_SUFFIXES if path.name.endswith(s)), None)


def read_rows(data: Path, where: str) -> list[tuple[int, Any]]:
    suffix = data_suffix(data)
    if suffix is None:
        raise TaskFileError(f"{where}: field 'data': {data} must be a {', '.join(DATA_SUFFIXES)} "
                            "file; convert it to one of these")
    if not data.is_file():
        raise TaskFileError(f"{where}: field 'data': no such file {data}; the path is relative "
                            "to the task file")
    raw = data.read_bytes()
    if suffix == ".jsonl.gz":
        raw = _gunzip(raw, data)
    if suffix == ".csv":
        return _csv_rows(_decode(raw, data), data)
    return jsonl_values(raw, data)


def _gunzip(raw: bytes, data: Path) -> bytes:
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise TaskFileError(f"{data}:1: not a valid gzip file ({err}); compress the JSON Lines "
                            "with gzip, or name an uncompressed file .jsonl") from err


def _decode(raw: bytes, data: Path, first_line: int = 1) -> str:
    try:
        return raw.decode("utf-8-sig" if first_line == 1 else "utf-8")
    except UnicodeDecodeError as err:
        line = first_line + raw[:err.start].count(b"\n")
        raise TaskFileError(f"{data}:{line}: not UTF-8 text ({err.reason} at byte {err.start}); "
                            "save the file as UTF-8") from err


def jsonl_values(raw: bytes, path: Path) -> list[tuple[int, Any]]:
    """(line, value) per non-blank line of JSON Lines bytes (lines end at newline only)."""
    out = []
    for lineno, line in enumerate(raw.split(b"\n"), 1):
        text = _decode(line, path, lineno)
        if not text.strip():
            continue
        try:
            out.append((lineno, json.loads(text)))
        except json.JSONDecodeError as err:
            raise TaskFileError(f"{path}:{lineno}: not valid JSON ({err.msg}); write one JSON "
                                "object per line") from err
    return out


def _csv_rows(text: str, data: Path) -> list[tuple[int, dict[str, str]]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    rows = []
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            return rows
        except csv.Error as err:
            raise _csv_error(err, text, start, reader.line_num, data) from err
        if not record or (len(record) == 1 and not record[0].strip()):
            continue  # a blank line
        if header is None:
            header = _header(record, start, data)
        elif len(record) != len(header):
            raise TaskFileError(f"{data}:{start}: record has {len(record)} values, the header "
                                f"names {len(header)} fields {header}; wrap values that contain "
                                "commas in double quotes")
        else:
            rows.append((start, dict(zip(header, record, strict=True))))


def _header(record: list[str], line: int, data: Path) -> list[str]:
    names = [name.strip() for name in record]
    if "" in names or len(set(names)) != len(names):
        raise TaskFileError(f"{data}:{line}: CSV header {record} must name every column once; "
                            "give each column a distinct, non-empty name")
    return names


def _csv_error(err: csv.Error, text: str, start: int, stop: int, data: Path) -> TaskFileError:
    opened = _open_quote_line(text, start)
    if opened is not None:
        return TaskFileError(f"{data}:{opened}: a quoted CSV value opens here and is never "
                             "closed; add the closing double quote (write a quote inside a "
                             "quoted value as \"\")")
    return TaskFileError(f"{data}:{stop}: not valid CSV ({err}); a quoted value must be "
                         "followed by a comma or the end of the line, and a quote inside it "
                         "written as \"\"")


def _open_quote_line(text: str, start: int) -> int | None:
    """The line of a quoted value opened at or after line `start` and never closed, if any
    (the csv module's default dialect: only a quote at a value's start opens quoting)."""
    state, opened = "start", None
    lines = list(io.StringIO(text, newline=""))[start - 1:]
    for lineno, line in enumerate(lines, start):
        for ch in line:
            if state == "quoted":
                state = "closed" if ch == '"' else state
            elif ch == '"' and state in ("start", "closed"):
                opened = lineno if state == "start" else opened
                state = "quoted"
            else:
                state = "start" if ch in ",\r\n" else "plain"
    return opened if state == "quoted" else None
