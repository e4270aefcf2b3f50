"""Checks that an indexed retriever directory is whole and untampered, before it is served.

Contract: `check_checksums(folder, manifest)` (run first, before any file is deserialised) and
`check_directory(folder, manifest, index, prompts, config)` raise
`RetrieverDirError` naming the path and both values when the manifest disagrees with the files:
prompt count, embedding dimension (manifest, index, export config), index class for the recorded
factory string, metric, and the sha256 of every file in the directory
(`retriever.index_manifest.verify_files`: the manifest's table is required, a listed file that is
missing or changed and a file the table does not list are each refused).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flan_data.schema import Prompt


class RetrieverDirError(ValueError):
    """A retriever directory is incomplete or its files disagree with each other."""


def read_manifest(folder: Path) -> dict[str, Any]:
    """`retriever.index_manifest.read_manifest`, its errors raised as `RetrieverDirError`."""
    from retriever import read_manifest as read_index_manifest

    try:
        return read_index_manifest(folder)
    except (FileNotFoundError, ValueError) as err:
        raise RetrieverDirError(str(err)) from err


def check_directory(folder: Path, manifest: dict[str, Any], index: Any, prompts: list[Prompt],
                    config: dict[str, Any]) -> None:
    """The count, dimension, index class and metric checks (`check_checksums` runs before
    anything is deserialised)."""
    _check_consistency(folder, manifest, index, prompts, config)
    _check_index_type(folder, manifest, index)


def _check_consistency(folder: Path, manifest: dict[str, Any], index: Any,
                       prompts: list[Prompt], config: dict[str, Any]) -> None:
    checks = [
        ("manifest n_prompts", manifest.get("n_prompts"), "prompts.jsonl rows", len(prompts)),
        ("manifest n_prompts", manifest.get("n_prompts"), "index.faiss vectors", index.ntotal),
        ("manifest embedding_dim", manifest.get("embedding_dim"), "index.faiss dim", index.d),
    ]
    if "embedding_dim" in config:
        checks.append(("uprise_config.json embedding_dim", config["embedding_dim"],
                       "index.faiss dim", index.d))
    for left, left_value, right, right_value in checks:
        if left_value != right_value:
            raise RetrieverDirError(
                f"{folder}: {left} is {left_value} but {right} is {right_value}; the files come "
                "from different runs. Rebuild the index with `uprise index`."
            )


def _check_index_type(folder: Path, manifest: dict[str, Any], index: Any) -> None:
    from retriever import check_index_class

    try:
        check_index_class(folder, manifest, index)
    except ValueError as err:
        raise RetrieverDirError(str(err)) from err


def check_checksums(folder: Path, manifest: dict[str, Any]) -> None:
    """`retriever.index_manifest.verify_files`, its errors raised as `RetrieverDirError`."""
    from retriever import verify_files

    try:
        verify_files(folder, manifest)
    except ValueError as err:
        raise RetrieverDirError(f"{str(err).rstrip('.')}; or pass verify=False to load it "
                                "unchecked.") from err
