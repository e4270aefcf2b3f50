"""One exit-status convention for every command: 2 for a user error (one line), 1 with the
traceback for an internal one."""

from __future__ import annotations

import subprocess
import sys

import pytest

import uprise.main
from flan_data.errors import CommandError
from flan_data.protocol import LeakageError


def test_a_command_s_own_exit_message_is_status_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "uprise", "retrieve", "--retriever",
                           str(tmp_path / "missing"), "--query", "q"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2  # sys.exit("uprise: ...") alone would give 1
    assert "does not exist" in done.stderr and "Traceback" not in done.stderr


def test_an_unknown_command_is_status_2():
    done = subprocess.run([sys.executable, "-m", "uprise", "trian"], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 2 and "unknown command 'trian'" in done.stderr


@pytest.mark.parametrize("error", [CommandError("another run holds it"), ValueError("bad k"),
                                   FileNotFoundError("no such file")])
def test_user_errors_are_one_line_with_status_2(monkeypatch, capsys, error):
    def fail(argv=None):
        raise error

    monkeypatch.setattr(uprise.main, "main", fail)
    monkeypatch.delenv("UPRISE_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        uprise.main.run()
    assert exit_info.value.code == 2 and str(error) in capsys.readouterr().err


def test_an_internal_error_keeps_its_traceback(monkeypatch):
    def fail(argv=None):
        raise LeakageError("a held-out prompt reached the pool; this is a bug")

    monkeypatch.setattr(uprise.main, "main", fail)
    with pytest.raises(LeakageError):  # not turned into a one-line SystemExit(2)
        uprise.main.run()
