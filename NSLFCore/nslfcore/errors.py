"""The base of every error a user can act on.

:class:`NSLFError` marks an error whose message is one sentence naming the file (or argument) and
saying what to do. The command line (:func:`nslfcore.cli.main`) prints such a message and exits
with 1; anything else that reaches it is unexpected (one sentence too, ``--debug`` shows the
traceback). Subclasses keep their standard base as well (``ModelError(NSLFError, ValueError)``),
so ``except ValueError`` still catches them.
"""

from __future__ import annotations


class NSLFError(Exception):
    """An error a user can act on; its message is one sentence naming the file and what to do."""
