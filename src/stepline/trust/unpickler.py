"""The restricted unpickler every pickle of an untrusted dump goes through.

Like ``torch.load(weights_only=True)``: ``find_class`` hands out only globals on the
allow-list (:mod:`stepline.trust.allowlist`) and refuses the rest with
:class:`~stepline.trust.errors.UntrustedDumpError`; persistent ids are refused too.
Since a pickle can call nothing but the globals it names, nothing else runs. What it built
is then checked where an allowed class's compiled code trusts its state (:mod:`stepline.trust.checks`).
"""
from __future__ import annotations

import io
import pickle

from stepline.trust import allowlist
from stepline.trust.checks import RefusedCall, check_loaded, guarded
from stepline.trust.errors import UnsafeStateError, UntrustedDumpError


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` limited to the allow-list; ``where`` names the file in errors."""

    def __init__(self, file, *, buffers=None, where="pickle"):
        super().__init__(file, buffers=buffers)
        self.where = where

    def find_class(self, module, name):
        if not allowlist.is_allowed(module, name):
            raise UntrustedDumpError(
                f"{self.where}: untrusted pickle needs {module}.{name}, which is not on the allow-list "
                f"(see docs/trust.md)", {str(self.where): [f"{module}.{name}"]})
        return guarded(f"{module}.{name}") or allowlist.resolve(module, name)

    def persistent_load(self, pid):
        raise UntrustedDumpError(f"{self.where}: untrusted pickle uses a persistent id, which is refused",
                                 {str(self.where): ["persistent id"]})


def restricted_loads(data, buffers=None, where="pickle"):
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; what it built is then checked
    where compiled code trusts an object's state (:func:`~stepline.trust.checks.check_loaded`)."""
    try:
        loaded = RestrictedUnpickler(io.BytesIO(data), buffers=buffers, where=where).load()
    except RefusedCall as refused:
        raise UnsafeStateError(f"{where}: {refused}", {str(where): [refused.qualified]}) from None
    check_loaded(loaded, where)
    return loaded
