"""What steps logged through ``context.logger``, kept in memory (Neuraxle's logger history).

``context.logger`` is a :class:`ContextLogger`: a ``logging.LoggerAdapter`` over the
``stepline.<parent names>`` logger, so the messages go to ``logging`` as before, and each
message it is given (at INFO or above) is also kept as one line of text in this process's
history: ``list(cx.logger)``, ``"\\n".join(cx.logger)`` and
``cx.logger.get_root_string_history()`` read it. The history is shared by every context
of the process (Neuraxle's root history) and keeps the last :data:`MAX_LINES` lines.

Streaming workers running in processes forward their lines to the parent
(:func:`forward_to`), so the parent's history holds them once the call returns.
"""
from __future__ import annotations

import collections
import logging

MAX_LINES = 10_000
HISTORY_LEVEL = logging.INFO

_LINES: collections.deque = collections.deque(maxlen=MAX_LINES)
_forwarder = None  # callable(line) in a worker process, else None


def record(line: str) -> None:
    """Keep ``line`` in this process's history (and forward it from a worker process)."""
    _LINES.append(line)
    if _forwarder is not None:
        _forwarder(line)


def lines() -> list:
    """The history, oldest line first."""
    return list(_LINES)


def clear() -> None:
    """Forget every line (tests)."""
    _LINES.clear()


def forward_to(send) -> None:
    """In a worker process: also hand each new line to ``send(line)`` (``None`` stops)."""
    global _forwarder
    _forwarder = send


class ContextLogger(logging.LoggerAdapter):
    """A logger that also keeps what it is given in the process's history (see the module)."""

    def log(self, level, msg, *args, **kwargs):
        if level >= HISTORY_LEVEL:
            try:
                line = str(msg) % args if args else str(msg)
            except (TypeError, ValueError):
                line = f"{msg} {args}"
            record(line)
        kwargs.setdefault("stacklevel", 2)  # the caller's file and line, not this module's
        super().log(level, msg, *args, **kwargs)

    def debug(self, msg, *args, **kwargs):
        self.log(logging.DEBUG, msg, *args, **{"stacklevel": 3, **kwargs})

    def info(self, msg, *args, **kwargs):
        self.log(logging.INFO, msg, *args, **{"stacklevel": 3, **kwargs})

    def warning(self, msg, *args, **kwargs):
        self.log(logging.WARNING, msg, *args, **{"stacklevel": 3, **kwargs})

    def error(self, msg, *args, **kwargs):
        self.log(logging.ERROR, msg, *args, **{"stacklevel": 3, **kwargs})

    def exception(self, msg, *args, exc_info=True, **kwargs):
        self.log(logging.ERROR, msg, *args, exc_info=exc_info, **{"stacklevel": 3, **kwargs})

    def critical(self, msg, *args, **kwargs):
        self.log(logging.CRITICAL, msg, *args, **{"stacklevel": 3, **kwargs})

    def __getattr__(self, name):  # handlers, addHandler, propagate...: the logging logger's
        if name == "logger":
            raise AttributeError(name)
        return getattr(self.logger, name)

    def __iter__(self):
        return iter(lines())

    def get_root_string_history(self) -> str:
        """The whole history as one string, a line per message (Neuraxle's name)."""
        return "\n".join(lines())

    def get_string_history(self) -> str:
        """Same as :meth:`get_root_string_history` (one history per process)."""
        return self.get_root_string_history()
