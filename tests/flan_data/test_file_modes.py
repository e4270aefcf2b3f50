"""Atomic writes give the final file the mode a plain `open()` would (0o666 less the umask),
not `mkstemp`'s 0o600."""

from __future__ import annotations

import os
import stat

import pytest

from flan_data.schema import atomic_write, new_file_mode, write_json


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_write_follows_the_umask(tmp_path, umask, mode):
    before = os.umask(umask)
    try:
        assert new_file_mode() == mode
        written = [atomic_write(tmp_path / "a.txt", ["x"]), write_json(tmp_path / "b.json", {})]
        with open(tmp_path / "plain.txt", "w") as fh:
            fh.write("x")
    finally:
        os.umask(before)
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == mode
