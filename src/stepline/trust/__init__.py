"""Trusted dumps (DESIGN §5a): no code from a dump runs unless the dump is trusted.

- :mod:`~stepline.trust.keys`: the local Ed25519 signing key, created on first use;
- :mod:`~stepline.trust.store`: the trusted public keys and root digests;
- :mod:`~stepline.trust.signing`: the signature file ``stepline.sig`` of a dump;
- :mod:`~stepline.trust.decision`: trusted or not, decided before anything is unpickled;
- :mod:`~stepline.trust.allowlist`: the globals an untrusted dump may use, and how to extend it;
- :mod:`~stepline.trust.audit`: the globals a pickle needs, read from its opcodes;
- :mod:`~stepline.trust.unpickler`: the restricted unpickler untrusted dumps go through;
- :mod:`~stepline.trust.checks`: what it built, checked where compiled code trusts an object's state.
"""
from stepline.trust.errors import UnsafeStateError, UntrustedDumpError

__all__ = ["UnsafeStateError", "UntrustedDumpError", "allow", "trusting_keys", "verify_dump"]


def __getattr__(name):  # keep ``import stepline.trust`` cheap: cryptography loads on demand
    if name == "allow":
        from stepline.trust.allowlist import allow
        return allow
    if name == "trusting_keys":
        from stepline.trust.store import trusting_keys
        return trusting_keys
    if name == "verify_dump":
        from stepline.trust.signing import verify_dump
        return verify_dump
    raise AttributeError(f"module 'stepline.trust' has no attribute {name!r}")
