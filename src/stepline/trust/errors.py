"""The error an untrusted dump gets when it needs globals off the allow-list."""
from __future__ import annotations

from stepline.saving.errors import StepLoadError


class UntrustedDumpError(StepLoadError):
    """An untrusted dump needs globals that are not on the allow-list; nothing of it ran.

    ``needed`` maps each file (a path) to the refused globals it needs (``"module.name"``,
    or a description such as ``"STACK_GLOBAL with a computed name"``).
    """

    def __init__(self, message: str, needed: dict[str, list[str]] | None = None):
        super().__init__(message)
        self.needed = needed or {}


class UnsafeStateError(UntrustedDumpError):
    """An untrusted dump's pickle built an allowed object whose state its compiled code would
    read out of bounds or loop on (a scikit-learn tree whose nodes point past their array);
    it is refused before the load returns it (:mod:`stepline.trust.checks`)."""


class TrustConfigError(RuntimeError):
    """A file of the config folder (the signing key, the trust store, the allowed globals) is
    unreadable, not a regular file, garbage, or writable by other users; it names the file."""
