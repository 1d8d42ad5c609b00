"""The globals an untrusted dump may use: whole classes (and a few reviewed NumPy
reconstructors), never whole modules.

A global ``module.name`` is allowed when it is

- one of :data:`EXACT` (NumPy's array/scalar/dtype reconstructors and RNG constructors,
  a few inert builtins and containers), or
- a class defined in a module under a :data:`FAMILIES` prefix *and* a subclass of one
  of that family's bases (stepline's steps, savers, distributions and spaces; the
  scikit-learn estimators and their fitted attributes' types; ``torch.nn`` modules and
  ``torch.optim`` optimizers; NumPy scalar and dtype classes), or
- a class added by the user: :func:`allow` in code, or one ``module.Class`` per line in
  ``allowed_globals.txt`` in the config folder.

Only modules under those prefixes (or named by the user) are ever imported to decide,
and the object found must be the class of that exact name (``sklearn.base.np`` and other
aliases are refused). Calling an allowed class with any arguments, or setting any state
on its instances, must run no code of the attacker's choosing: that is the rule a class
must meet to be added here.
"""
from __future__ import annotations

import importlib
import inspect
import threading
from pathlib import Path

#: Reviewed functions and classes, allowed by exact name.
EXACT = frozenset({
    # NumPy arrays, scalars and dtypes (numpy 1.x paths and numpy 2.x ``_core`` paths)
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer",
    "numpy.ndarray", "numpy.dtype",
    # NumPy random states (constructors take a bit generator name or an allowed class)
    "numpy.random._pickle.__randomstate_ctor", "numpy.random._pickle.__generator_ctor",
    "numpy.random._pickle.__bit_generator_ctor", "numpy.random.mtrand.RandomState",
    "numpy.random._generator.Generator", "numpy.random._mt19937.MT19937", "numpy.random._pcg64.PCG64",
    "numpy.random._pcg64.PCG64DXSM", "numpy.random._philox.Philox", "numpy.random._sfc64.SFC64",
    "numpy.random.bit_generator.SeedSequence",
    # inert builtins and containers
    "builtins.set", "builtins.frozenset", "builtins.slice", "builtins.complex", "builtins.bytearray",
    "builtins.range", "builtins.object", "copyreg._reconstructor",
    "collections.OrderedDict", "collections.defaultdict", "collections.deque", "collections.Counter",
    "datetime.datetime", "datetime.date", "datetime.time", "datetime.timedelta", "datetime.timezone",
    "decimal.Decimal", "fractions.Fraction",
})

#: Classes of these stepline modules stay off the list: a DaskPipeline connects to the
#: scheduler address saved in the dump, whose answers the Dask client unpickles.
DENIED = frozenset({"stepline.distributed.dask.DaskPipeline"})


#: module prefix -> the bases (by qualified name) one of which a class there must derive from.
#: Matched against the class's MRO, so deciding imports nothing beyond the class's own module.
FAMILIES = {
    "stepline.": frozenset({
        "stepline.core.step.BaseTransformer", "stepline.saving.savers.BaseSaver",
        "stepline.saving.savers.ChildPlaceholder", "stepline.hyperparams.distribution_base.HyperparameterDistribution",
        "stepline.hyperparams.space.RecursiveDict", "stepline.core.context.ExecutionPhase"}),
    "sklearn.": frozenset({
        "sklearn.base.BaseEstimator", "sklearn.tree._tree.Tree", "sklearn._loss.loss.BaseLoss",
        "sklearn._loss.link.BaseLink", "sklearn._loss.link.Interval", "sklearn._loss._loss.CyLossFunction",
        "sklearn.neighbors._kd_tree.BinaryTree64", "sklearn.neighbors._kd_tree.BinaryTree32",
        "sklearn.neighbors._ball_tree.BinaryTree64", "sklearn.neighbors._ball_tree.BinaryTree32"}),
    "torch.nn.": frozenset({"torch.nn.modules.module.Module"}),
    "torch.optim.": frozenset({"torch.optim.optimizer.Optimizer"}),
    "numpy.": frozenset({"numpy.generic", "numpy.dtype"}),
}

USER_FILE = "allowed_globals.txt"
_lock = threading.Lock()
_user_allowed: set[str] = set()
_decisions: dict[tuple, bool] = {}


def allow(*classes) -> None:
    """Let untrusted dumps use these classes (class objects or ``"module.QualName"`` strings).

    Whole classes only: a module, a function or a pattern such as ``"mypkg.*"`` raises
    ``TypeError``. Use it for your own inert classes (estimators, steps); a class whose
    constructor or ``__setstate__`` acts on its arguments (opens files, imports, calls
    them) must not be allowed. Usable as a class decorator.
    """
    names = [_class_name(c) for c in classes]
    with _lock:
        _user_allowed.update(names)
        _decisions.clear()
    return classes[0] if len(classes) == 1 and inspect.isclass(classes[0]) else None


def is_allowed(module: str, name: str) -> bool:
    """Whether an untrusted pickle may use the global ``module.name`` (see the module doc)."""
    qualified = f"{module}.{name}"
    if qualified in EXACT:
        return True
    key = (qualified, frozenset(_user_allowed), _user_file_entries())
    with _lock:
        decided = _decisions.get(key)
    if decided is None:
        decided = _decide(module, name, qualified, key[1] | key[2])
        with _lock:
            _decisions[key] = decided
    return decided


def resolve(module: str, name: str):
    """The object of an allowed global (call :func:`is_allowed` first)."""
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _decide(module: str, name: str, qualified: str, user: frozenset) -> bool:
    if qualified in DENIED or not module or not name or name.startswith("_") and qualified not in user:
        return False
    if any(part.startswith("__") or not part.isidentifier() for part in module.split(".")):
        return False  # never import a __main__ (numpy.f2py.__main__ runs f2py when imported)
    if qualified in user:
        return _is_class_named(module, name)
    bases = next((bases for prefix, bases in FAMILIES.items() if module.startswith(prefix)), None)
    if bases is None:
        return False
    if not _is_class_named(module, name):
        return False
    return any(f"{c.__module__}.{c.__qualname__}" in bases for c in resolve(module, name).__mro__)


def _is_class_named(module: str, name: str) -> bool:
    """Whether ``module.name`` imports to a class defined under exactly that name."""
    try:
        obj = resolve(module, name)
    except (ImportError, AttributeError, ValueError, TypeError):
        return False
    return inspect.isclass(obj) and obj.__module__ == module and obj.__qualname__ == name


def _class_name(target) -> str:
    if inspect.isclass(target):
        return f"{target.__module__}.{target.__qualname__}"
    if isinstance(target, str) and "." in target.strip(".") and "*" not in target and " " not in target:
        return target
    raise TypeError(f"allow() takes classes or 'module.Class' names, not {target!r}: allow whole classes, "
                    f"never whole modules, patterns or functions")


def _user_file_entries() -> frozenset:
    """The ``module.Class`` lines of ``allowed_globals.txt`` in the config folder."""
    from stepline.trust.errors import TrustConfigError
    from stepline.trust.keys import config_home, read_config_file
    path = Path(config_home()) / USER_FILE
    try:
        lines = read_config_file(path, "allowed globals file").decode("utf-8").splitlines()
    except FileNotFoundError:
        return frozenset()
    except UnicodeDecodeError as e:
        raise TrustConfigError(f"{path}: cannot read the allowed globals ({e})") from e
    entries = set()
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if line:
            try:
                entries.add(_class_name(line))
            except TypeError as e:
                raise TrustConfigError(f"{path}:{number}: {e}") from None
    return frozenset(entries)
