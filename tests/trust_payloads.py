"""Malicious pickles for the trust tests: each, when unpickled normally, creates ``marker``.

Every builder takes the marker path (and the folder the payload will sit in, for payloads
that read a second file from the dump) and returns ``(step.pkl bytes, extra files)``.
They are written the way an attacker would: with the ``pickle`` module and by hand,
opcode by opcode.
"""
import builtins
import functools
import importlib
import operator
import os
import pickle
import shutil
import subprocess
import sys
import types

import cloudpickle
import numpy as np


class Call:
    """Pickles as ``func(*args)``: an attacker's ``__reduce__``. ``func`` may be another Call."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args

    def __call__(self, *args):  # pickle insists the reduce function be callable
        raise AssertionError("never called while pickling")


def _touch_cmd(marker):
    return f"touch '{marker}'"


def _py(marker):
    return f"open({str(marker)!r}, 'w').close()"


def _dumps(obj, protocol=5):
    return pickle.dumps(obj, protocol=protocol)


def _attr(obj_call, name):
    return Call(getattr, obj_call, name)


def _import(module):
    return Call(importlib.import_module, module)


# -- opcode assembler for hand-written pickles
def _u(text: str) -> bytes:
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data if len(data) < 256 else b"X" + len(data).to_bytes(4, "little") + data


PROTO4, STACK_GLOBAL, MEMOIZE, REDUCE, STOP, TUPLE1, TUPLE2, EMPTY = b"\x80\x04", b"\x93", b"\x94", b"R", b".", b"\x85", b"\x86", b")"


def _binget(i):
    return b"h" + bytes([i])


def _global(module, name):
    return _u(module) + _u(name) + STACK_GLOBAL


# -- the payloads ---------------------------------------------------------------------
def os_system(marker, folder):
    return _dumps(Call(os.system, _touch_cmd(marker)))


def os_popen_read(marker, folder):
    return _dumps(Call(_attr(Call(os.popen, _touch_cmd(marker)), "read")))


def os_mkdir(marker, folder):
    return _dumps(Call(os.mkdir, str(marker)))


def subprocess_popen_wait(marker, folder):
    return _dumps(Call(_attr(Call(subprocess.Popen, ["touch", str(marker)]), "wait")))


def subprocess_run(marker, folder):
    return _dumps(Call(subprocess.run, ["touch", str(marker)]))


def subprocess_check_call(marker, folder):
    return _dumps(Call(subprocess.check_call, ["touch", str(marker)]))


def builtins_exec(marker, folder):
    return _dumps(Call(builtins.exec, _py(marker)))


def builtins_eval(marker, folder):
    return _dumps(Call(builtins.eval, _py(marker)))


def builtins_compile_exec(marker, folder):
    return _dumps(Call(builtins.exec, Call(builtins.compile, _py(marker), "<dump>", "exec")))


def builtins_open(marker, folder):
    return _dumps(Call(builtins.open, str(marker), "w"))


def builtins_dunder_import(marker, folder):
    return _dumps(Call(_attr(Call(builtins.__import__, "os"), "system"), _touch_cmd(marker)))


def importlib_import_module(marker, folder):
    return _dumps(Call(_attr(_import("os"), "system"), _touch_cmd(marker)))


def getattr_chain_pathlib(marker, folder):
    import pathlib
    return _dumps(Call(_attr(Call(pathlib.Path, str(marker)), "touch")))


def getattr_chain_builtins_module(marker, folder):  # getattr(getattr(sys.modules['builtins'], 'exec'))
    mods = _attr(_import("sys"), "modules")
    builtins_module = Call(operator.getitem, mods, "builtins")
    return _dumps(Call(_attr(builtins_module, "exec"), _py(marker)))


def functools_partial(marker, folder):
    return _dumps(Call(Call(functools.partial, os.system, _touch_cmd(marker))))


def operator_methodcaller(marker, folder):
    return _dumps(Call(Call(operator.methodcaller, "system", _touch_cmd(marker)), _import("os")))


def operator_attrgetter(marker, folder):
    return _dumps(Call(Call(Call(operator.attrgetter, "system"), _import("os")), _touch_cmd(marker)))


def operator_call(marker, folder):
    return _dumps(Call(operator.call, os.system, _touch_cmd(marker)))


def shutil_copy(marker, folder):
    return _dumps(Call(shutil.copyfile, os.devnull, str(marker)))


def timeit_statement(marker, folder):
    import timeit
    return _dumps(Call(timeit.timeit, "pass", _py(marker)))  # the setup statement runs first


def runpy_run_path(marker, folder):
    import runpy
    return _dumps(Call(runpy.run_path, str(folder / "payload.py"))), {"payload.py": _py(marker).encode()}


def nested_pickle_loads(marker, folder):
    return _dumps(Call(pickle.loads, os_system(marker, folder)))


def numpy_load_allow_pickle(marker, folder):
    inner = os_system(marker, folder)
    return _dumps(Call(np.load, str(folder / "inner.npy"), None, True)), {"inner.npy": inner}


def joblib_load(marker, folder):
    import joblib
    return _dumps(Call(joblib.load, str(folder / "inner.joblib"))), {"inner.joblib": os_system(marker, folder)}


def cloudpickle_loads(marker, folder):
    return _dumps(Call(cloudpickle.loads, os_system(marker, folder)))


def stepline_internal_loads(marker, folder):
    """A function of an allowed family's module (stepline) that unpickles: refused, not a class."""
    from stepline.saving import objectfile
    return _dumps(Call(objectfile._loads, folder / "x", os_system(marker, folder), []))


def aliased_name_in_allowed_module(marker, folder):
    """``stepline.saving.objectfile`` + ``pickle.loads``: a dotted name reaching out of an allowed module."""
    return PROTO4 + _global("stepline.saving.objectfile", "pickle.loads") + _bytes(os_system(marker, folder)) \
        + TUPLE1 + REDUCE + STOP


def _bytes(data: bytes) -> bytes:
    return b"B" + len(data).to_bytes(4, "little") + data  # BINBYTES


def sklearn_function_running_code(marker, folder):
    """A function inside scikit-learn (an allowed family) that runs Python code it is given."""
    from sklearn.utils import _testing
    return _dumps(Call(_testing.assert_run_python_script_without_output, _py(marker)))


def setstate_on_allowed_step(marker, folder):
    """An allowed step whose pickled state smuggles a call in."""
    from stepline.base import Identity
    step = Identity(name="p")
    step.__dict__["sneaky"] = Call(os.system, _touch_cmd(marker))
    return cloudpickle.dumps(step, protocol=5)


def setstate_on_allowed_estimator(marker, folder):
    from sklearn.preprocessing import StandardScaler
    scaler = StandardScaler()
    scaler.__dict__["with_mean"] = Call(builtins.exec, _py(marker))
    return _dumps(scaler)


def setstate_on_numpy_array(marker, folder):
    """ndarray.__setstate__ (allowed) fed an object array whose item is a call."""
    array = np.empty(1, dtype=object)
    array[0] = Call(builtins.eval, _py(marker))
    return _dumps(array)


def hyperparams_dict_value(marker, folder):
    from stepline.hyperparams.space import HyperparameterSamples
    return _dumps(HyperparameterSamples({"a": Call(os.system, _touch_cmd(marker))}))


def stack_global_computed_module(marker, folder):
    """STACK_GLOBAL whose module name is computed: codecs.decode('cbfvk', 'rot13') == 'posix'."""
    import codecs
    computed = _global("codecs", "decode") + _u("cbfvk") + _u("rot13") + TUPLE2 + REDUCE
    return PROTO4 + computed + _u("system") + STACK_GLOBAL + _u(_touch_cmd(marker)) + TUPLE1 + REDUCE + STOP


def stack_global_computed_name(marker, folder):
    name = _global("operator", "add") + _u("sys") + _u("tem") + TUPLE2 + REDUCE
    return PROTO4 + _u("posix") + name + STACK_GLOBAL + _u(_touch_cmd(marker)) + TUPLE1 + REDUCE + STOP


def stack_global_through_memo(marker, folder):
    """Names stored in the memo and fetched back: still literal strings, still found."""
    return (PROTO4 + _u("posix") + MEMOIZE + _u("system") + MEMOIZE + b"0" + b"0"  # POP POP
            + _binget(0) + _binget(1) + STACK_GLOBAL + _u(_touch_cmd(marker)) + TUPLE1 + REDUCE + STOP)


def protocol0_global(marker, folder):
    return f"cposix\nsystem\n(V{_touch_cmd(marker)}\ntR.".encode()


def protocol0_inst(marker, folder):
    return f"(V{_touch_cmd(marker)}\niposix\nsystem\n.".encode()


def protocol1_obj(marker, folder):
    return f"(cposix\nsystem\nV{_touch_cmd(marker)}\no.".encode()


def _main_function(source: str, name: str):
    namespace = {"__name__": "__main__"}
    exec(source, namespace)
    function = namespace[name]
    function.__module__ = "__main__"
    return function


def by_value_function(marker, folder):
    run = _main_function(f"def run():\n    {_py(marker)}\n", "run")
    return cloudpickle.dumps(Call(run), protocol=5)


def by_value_class_setstate(marker, folder):
    namespace = {"__name__": "__main__"}
    exec("class Evil:\n"
         "    def __getstate__(self):\n        return self.path\n"
         "    def __setstate__(self, path):\n        open(path, 'w').close()\n", namespace)
    evil = namespace["Evil"]()
    evil.path = str(marker)
    return cloudpickle.dumps(evil, protocol=5)


def by_value_code_nested_pickle(marker, folder):
    run = _main_function("import pickle\ndef run(data):\n    return pickle.loads(data)\n", "run")
    return cloudpickle.dumps(Call(run, os_system(marker, folder)), protocol=5)


PAYLOADS = {f.__name__: f for f in [
    os_system, os_popen_read, os_mkdir, subprocess_popen_wait, subprocess_run, subprocess_check_call,
    builtins_exec, builtins_eval, builtins_compile_exec, builtins_open, builtins_dunder_import,
    importlib_import_module, getattr_chain_pathlib, getattr_chain_builtins_module, functools_partial,
    operator_methodcaller, operator_attrgetter, operator_call, shutil_copy, timeit_statement, runpy_run_path,
    nested_pickle_loads, numpy_load_allow_pickle, joblib_load, cloudpickle_loads, stepline_internal_loads,
    aliased_name_in_allowed_module, sklearn_function_running_code, setstate_on_allowed_step,
    setstate_on_allowed_estimator, setstate_on_numpy_array, hyperparams_dict_value,
    stack_global_computed_module, stack_global_computed_name, stack_global_through_memo, protocol0_global,
    protocol0_inst, protocol1_obj, by_value_function, by_value_class_setstate, by_value_code_nested_pickle,
]}


def build(name, marker, folder):
    """``(step.pkl bytes, {extra file name: bytes})`` of payload ``name``."""
    made = PAYLOADS[name](marker, folder)
    return made if isinstance(made, tuple) else (made, {})


if sys.version_info < (3, 11):  # operator.call is new in 3.11
    PAYLOADS.pop("operator_call")
