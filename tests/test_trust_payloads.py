"""A corpus of malicious pickles (DESIGN §5a): none runs on an untrusted load, each runs when trusted.

Each payload sits in a real dump whose every digest was recomputed (tests/trust_tamper.py),
so integrity checks pass and only the signature can tell: unsigned, or signed by an
attacker's own key. The marker file a payload would create proves whether it ran.
"""
import contextlib
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")

sys.path.insert(0, str(Path(__file__).parent))
from trust_payloads import PAYLOADS, build  # noqa: E402
from trust_tamper import write_files, write_inline  # noqa: E402

from stepline import CX, Pipeline  # noqa: E402
from stepline.base import Identity  # noqa: E402
from stepline.trust.report import audit_lines  # noqa: E402
from stepline.trust import UntrustedDumpError  # noqa: E402
from stepline.trust.signing import sign_dump, verify_dump  # noqa: E402
from stepline.trust.unpickler import restricted_loads  # noqa: E402

NAMES = sorted(PAYLOADS)


def test_the_corpus_has_at_least_30_payloads():
    assert len(NAMES) >= 30


WHERE = ["file", "inline"]


def _planted(tmp_path, name, index, monkeypatch, where="file"):
    """A signed two-step dump with payload ``name`` in the root's or the child's step.pkl: a
    file, or inline in the step's manifest (as tiny steps' pickles are saved). Returns the
    dump, the step's folder, the marker and how errors name the payload."""
    Pipeline([Identity(name="inner")], name="p").save(CX(tmp_path / "dump"), full_dump=True)
    root = tmp_path / "dump" / "p"
    folder = root if index % 2 else root / "inner"
    marker = tmp_path / "marker"
    data, extra = build(name, marker, folder)
    if where == "inline":
        write_inline(folder, {"step.pkl": data}, root)
        if extra:
            write_files(folder, extra, root)
        label = f"{folder / 'step.pkl'} (inline in stepline.json)"
    else:
        write_files(folder, {"step.pkl": data, **extra}, root)
        label = str(folder / "step.pkl")
    if index % 3 == 0:  # the attacker signs with a key of their own
        with monkeypatch.context() as m:
            m.setenv("STEPLINE_HOME", str(tmp_path / "attacker-home"))
            sign_dump(root)
    return root, folder, marker, label


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("name", NAMES)
def test_payload_never_runs_on_an_untrusted_load(tmp_path, monkeypatch, name, where):
    root, folder, marker, label = _planted(tmp_path, name, NAMES.index(name), monkeypatch, where)
    assert not verify_dump(root).trusted
    with pytest.raises(UntrustedDumpError) as caught:
        CX(tmp_path / "dump").load("p")
    assert label in caught.value.needed, caught.value.needed
    assert label in str(caught.value)
    assert not marker.exists()


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("name", NAMES)
def test_payload_runs_when_the_load_is_trusted(tmp_path, monkeypatch, name, where):
    """The same dumps with trusted=True: the payloads are real."""
    _, _, marker, _ = _planted(tmp_path, name, NAMES.index(name), monkeypatch, where)
    with contextlib.suppress(Exception):  # what the payload leaves is no step: the load fails after it ran
        CX(tmp_path / "dump").load("p", trusted=True)
    assert marker.exists()


@pytest.mark.parametrize("name", NAMES)
def test_the_restricted_unpickler_alone_refuses_every_payload(tmp_path, name):
    """Second line of defence: even without the audit, find_class hands out nothing off the list."""
    marker = tmp_path / "marker"
    data, _ = build(name, marker, tmp_path)
    with pytest.raises(UntrustedDumpError):
        restricted_loads(data, where=tmp_path / "step.pkl")
    assert not marker.exists()


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("name", NAMES)
def test_inspect_audit_lists_the_payloads_globals_without_running_them(tmp_path, monkeypatch, name, where):
    root, folder, marker, label = _planted(tmp_path, name, NAMES.index(name), monkeypatch, where)
    text = "\n".join(audit_lines(root))
    assert f"{label}:" in text and "REFUSED" in text
    assert not marker.exists()


def test_payload_in_a_torch_steps_step_pkl_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    from stepline.torch import TorchStep
    step = TorchStep(torch.nn.Linear, module_kwargs={"in_features": 2, "out_features": 1},
                     hyperparams={"epochs": 1}, name="linear")
    step.fit(torch.zeros(4, 2).numpy(), torch.zeros(4, 1).numpy())
    step.save(CX(tmp_path / "dump"), full_dump=True)
    root, marker = tmp_path / "dump" / "linear", tmp_path / "marker"
    write_files(root, {"step.pkl": build("setstate_on_allowed_step", marker, root)[0]}, root)
    with pytest.raises(UntrustedDumpError, match="posix.system"):
        CX(tmp_path / "dump").load("linear")
    assert not marker.exists()
    with contextlib.suppress(Exception):
        CX(tmp_path / "dump").load("linear", trusted=True)
    assert marker.exists()
