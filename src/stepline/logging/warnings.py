"""Warning switches under Neuraxle's names (``neuraxle.logging.warnings``)."""
from __future__ import annotations

import warnings


def silence_all_deprecation_warnings() -> None:
    """Ignore ``DeprecationWarning`` from here on (Neuraxle's test-suite switch)."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
