"""Data rows of a task file (`flan_data.task_rows`): .jsonl.gz, CSV with a BOM, quoting errors
and physical line numbers, each through `load_task_file` where a user meets them."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from flan_data.custom_task import TaskFileError, load_task_file
from flan_data.task_rows import read_rows

TASK = """name: mood
cluster: my_cluster
template: "Text: {text}"
options: [sad, happy]
label_field: label
data: DATA
"""


def _task(folder: Path, name: str, data: bytes) -> Path:
    (folder / name).write_bytes(data)
    path = folder / "task.yaml"
    path.write_text(TASK.replace("DATA", name))
    return path


def test_jsonl_gz_rows_load_and_errors_give_the_uncompressed_line(tmp_path):
    rows = b'{"text": "a", "label": "sad"}\n\n{"text": "b", "label": 1}\n'
    (task,) = load_task_file(_task(tmp_path, "rows.jsonl.gz", gzip.compress(rows)))
    assert [r["gold"] for r in task.rows] == [0, 1]
    path = _task(tmp_path, "rows.jsonl.gz", gzip.compress(rows + b'{"text": "c", "label": 7}\n'))
    with pytest.raises(TaskFileError, match=r"rows.jsonl.gz:4: field 'label' = 7 is neither"):
        load_task_file(path)
    path = _task(tmp_path, "rows.jsonl.gz", gzip.compress(rows + b'{"text": "c",\n'))
    with pytest.raises(TaskFileError, match=r"rows.jsonl.gz:4: not valid JSON"):
        load_task_file(path)
    with pytest.raises(TaskFileError, match=r"rows.jsonl.gz:1: not a valid gzip file .*name an "
                                            r"uncompressed file .jsonl"):
        load_task_file(_task(tmp_path, "rows.jsonl.gz", rows))


def test_jsonl_lines_end_at_newline_only(tmp_path):
    row = '{"text": "a\u2028b", "label": "sad"}\n{"text": "c", "label": "x"}\n'
    with pytest.raises(TaskFileError, match=r"rows.jsonl:2: field 'label' = 'x'"):
        load_task_file(_task(tmp_path, "rows.jsonl", row.encode()))


def test_csv_with_a_byte_order_mark(tmp_path):
    data = "text,label\r\nfine,happy\r\n".encode("utf-8-sig")
    (task,) = load_task_file(_task(tmp_path, "rows.csv", data))
    assert task.rows == ({"fields": {"text": "fine"}, "gold": 1, "references": []},)


def test_csv_unterminated_quote_names_the_line_it_opens(tmp_path):
    data = b'text,label\n"one\ntwo",sad\nok,happy\n"never closed,sad\nlost,happy\n'
    with pytest.raises(TaskFileError, match=r"rows.csv:5: a quoted CSV value opens here and is "
                                            r"never closed; add the closing double quote"):
        load_task_file(_task(tmp_path, "rows.csv", data))
    data = b'text,label\n"a ""b"" c\nstill a",5" tv\n"open,sad\nmore\n'  # "" and 5" stay text
    with pytest.raises(TaskFileError, match=r"rows.csv:4: a quoted CSV value"):
        load_task_file(_task(tmp_path, "rows.csv", data))
    data = b'text,label\n"multi\nline","sad\n\nhappy\n'
    with pytest.raises(TaskFileError, match=r"rows.csv:3: a quoted CSV value"):
        load_task_file(_task(tmp_path, "rows.csv", data))


def test_csv_errors_give_the_line_where_the_record_starts(tmp_path):
    data = b'text,label\n"one\ntwo\nthree",sad\n\n5" screen,happy\nbad,angry\n'
    with pytest.raises(TaskFileError, match=r"rows.csv:7: field 'label' = 'angry'"):
        load_task_file(_task(tmp_path, "rows.csv", data))
    assert [line for line, _ in read_rows(tmp_path / "rows.csv", "task")] == [2, 6, 7]
    data = b'text,label\n"a\nb",sad\nx,y,z\n'
    with pytest.raises(TaskFileError, match=r"rows.csv:4: record has 3 values, the header names "
                                            r"2 fields \['text', 'label'\]; wrap values"):
        load_task_file(_task(tmp_path, "rows.csv", data))
    data = b'text,label\n"a"b,sad\n'
    with pytest.raises(TaskFileError, match=r"rows.csv:2: not valid CSV"):
        load_task_file(_task(tmp_path, "rows.csv", data))


def test_csv_header_and_encoding_errors(tmp_path):
    with pytest.raises(TaskFileError, match=r"rows.csv:1: CSV header \['text', 'text'\] must "
                                            r"name every column once"):
        load_task_file(_task(tmp_path, "rows.csv", b"text,text\na,b\n"))
    with pytest.raises(TaskFileError, match=r"rows.csv:3: not UTF-8 text .*save the file as "
                                            r"UTF-8"):
        load_task_file(_task(tmp_path, "rows.csv", b"text,label\na,sad\n\xe9t\xe9,sad\n"))
