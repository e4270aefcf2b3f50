"""FLAN task data for UPRISE: catalogue, loading, held-out-cluster protocol, stage records.

No torch here. Public names are re-exported below; everything else is internal.
"""

from flan_data.catalogue import (
    Example,
    Task,
    UnknownNameError,
    all_tasks,
    answer_budget,
    clusters,
    get_task,
    tasks_in,
)
from flan_data.loading import HUB, MissingSplitError, default_data_dir, load_rows, resolve_data_dir
from flan_data.metrics import example_metric
from flan_data.protocol import (
    LeakageError,
    StageData,
    build_stage_data,
    check_no_leakage,
    evaluation_queries,
    sample_candidates,
)
from flan_data.schema import (
    SEP,
    Candidates,
    Prediction,
    Prompt,
    Query,
    SchemaError,
    Score,
    atomic_write,
    join_context,
    prepare_output_dir,
    read_jsonl,
    write_json,
    write_jsonl,
)
from flan_data.settings import DataSettings
from flan_data.stage_io import read_stage_data, write_stage_data

__all__ = [
    "HUB", "SEP", "Candidates", "DataSettings", "Example", "LeakageError", "MissingSplitError",
    "Prediction", "Prompt", "Query", "SchemaError", "Score", "StageData", "Task",
    "UnknownNameError", "all_tasks", "answer_budget", "atomic_write", "build_stage_data",
    "check_no_leakage", "clusters", "default_data_dir", "evaluation_queries", "example_metric",
    "get_task", "join_context", "load_rows", "prepare_output_dir", "read_jsonl", "read_stage_data",
    "resolve_data_dir", "sample_candidates", "tasks_in", "write_json", "write_jsonl",
    "write_stage_data",
]
