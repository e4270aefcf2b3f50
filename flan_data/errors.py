"""`CommandError`: a failure the user can fix, raised with a message that says how.

Contract: the `uprise` command (`uprise.main.run`) prints a `CommandError`, like a `ValueError`,
`KeyError` or `OSError` (bad option, input or file), as one line and exits with status 2; any
other exception is a bug or an environment failure and keeps its traceback (status 1). Raise a
subclass where the cause is outside the code (a score folder locked by another run, an LLM
server that answers with an error, a download that pip refused), never for an internal
invariant.
"""

from __future__ import annotations


class CommandError(RuntimeError):
    """A user-fixable failure; the message names the cause and the fix."""
