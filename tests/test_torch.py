"""PyTorch steps: lifecycle, training, hyperparameters, saving without pickled modules."""
import base64
import gc
import json
import os
import pickle
import pickletools
import subprocess
import sys
import textwrap
import weakref

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
from torch import nn

from stepline import CX, Pipeline
from stepline.base import HyperparameterError, NotFittedError
from stepline.hyperparams.distributions import Choice, LogUniform, RandInt
from stepline.saving import CorruptFileError
from stepline.torch import (
    TensorStateError,
    TorchStep,
    tensorfile,
)

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class MLP(nn.Module):
    def __init__(self, in_features=4, hidden_sizes=(16,), out_features=1, dropout=0.0):
        super().__init__()
        layers, width = [], in_features
        for h in hidden_sizes:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def regression(n=256, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = X @ np.array([1.0, -2.0, 3.0, 0.5]) + 0.3 * np.sin(3 * X[:, 0])
    return X, y


def mlp_step(**hyperparams):
    hp = {"epochs": 30, "batch_size": 32, "learning_rate": 1e-2, "seed": 0, "device": "cpu"}
    hp.update(hyperparams)
    arch = {k: hp.pop(k) for k in ("in_features", "hidden_sizes") if k in hp}
    return TorchStep(MLP, module_kwargs={"in_features": 4, "hidden_sizes": (16,), **arch}, hyperparams=hp,
                     name="mlp")


def mse(a, b):
    return float(np.mean((np.asarray(a).ravel() - np.asarray(b).ravel()) ** 2))


def run_script(path, code, *args, env=None):
    path.write_text(textwrap.dedent(code))
    result = subprocess.run([sys.executable, str(path), *map(str, args)], capture_output=True, text=True,
                            timeout=120, env=env, cwd=path.parent, check=False)
    assert result.returncode == 0, f"{path.name} failed:\n{result.stdout}\n{result.stderr}"
    return result


# ------------------------------------------------------------------ lifecycle
def test_no_model_before_setup():
    calls = []

    def factory(**kwargs):
        calls.append(kwargs)
        return MLP(**kwargs)

    step = TorchStep(factory, module_kwargs={"in_features": 4}, hyperparams={"device": "cpu"})
    assert step.name == "factory"
    assert calls == [] and step.model is None and step.optimizer is None and step.loss_fn is None
    step.setup()
    assert calls == [{"in_features": 4}]
    assert isinstance(step.model, MLP) and isinstance(step.optimizer, torch.optim.Adam)
    assert step.device == torch.device("cpu")
    assert next(step.model.parameters()).device.type == "cpu"
    step.setup()  # idempotent
    assert len(calls) == 1


def test_setup_is_lazy_on_first_fit():
    X, y = regression(64)
    step = mlp_step(epochs=1)
    assert step.model is None
    step = step.fit(X, y)
    assert step.is_initialized and step.is_fitted and step.model is not None


def test_training_lowers_the_loss():
    X, y = regression()
    step = mlp_step(epochs=40).fit(X, y)
    losses = [r["loss"] for r in step.history_]
    assert len(losses) == 40
    assert losses[-1] < 0.2 * losses[0]
    assert mse(step.transform(X), y) < 0.2 * float(np.var(y))


def test_transform_runs_in_eval_mode_without_gradients():
    X, y = regression(64)
    step = TorchStep(MLP, module_kwargs={"in_features": 4, "dropout": 0.5},
                     hyperparams={"epochs": 2, "seed": 0, "device": "cpu"}).fit(X, y)
    first, second = step.transform(X), step.transform(X)
    np.testing.assert_array_equal(first, second)  # dropout off
    assert not step.model.training
    assert isinstance(first, np.ndarray) and first.dtype == np.float32 and first.shape == (64, 1)


def test_fit_is_reproducible_with_a_seed_and_leaves_the_global_rng_alone():
    X, y = regression(128)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = mlp_step(epochs=3).fit(X, y).transform(X)
    assert torch.equal(torch.rand(3), expected_next)
    b = mlp_step(epochs=3).fit(X, y).transform(X)
    np.testing.assert_array_equal(a, b)


def test_fit_starts_fresh_unless_warm_start():
    X, y = regression(128)
    step = mlp_step(epochs=3).fit(X, y)
    once = step.transform(X)
    np.testing.assert_array_equal(step.fit(X, y).transform(X), once)  # re-fit: same start, same end
    step.set_hyperparams({"warm_start": True})
    step = step.fit(X, y)
    assert not np.array_equal(step.transform(X), once)
    assert int(step.optimizer.state_dict()["state"][0]["step"]) == 2 * 3 * 4


def test_teardown_releases_the_model_and_keeps_the_fit():
    X, y = regression(64)
    step = mlp_step(epochs=2).fit(X, y)
    expected = step.transform(X)
    model_ref, optimizer_ref = weakref.ref(step.model), weakref.ref(step.optimizer)
    param_ref = weakref.ref(next(step.model.parameters()))
    step.teardown()
    assert model_ref() is None and optimizer_ref() is None and param_ref() is None
    assert step.model is None and step.optimizer is None and step.loss_fn is None and step.device is None
    assert not step.is_initialized and step.is_fitted
    step.teardown()  # idempotent
    np.testing.assert_array_equal(step.transform(X), expected)  # setup again: same weights
    assert step.optimizer.state_dict()["state"][0]["step"] == 2 * 2


def test_teardown_of_an_unfitted_step_keeps_nothing():
    step = mlp_step().setup()
    step.teardown()
    assert step._loaded_state is None and not step.is_fitted


def test_context_manager_tears_down():
    X, y = regression(32)
    step = mlp_step(epochs=1)
    with step.setup() as s:
        s.fit(X, y)
        ref = weakref.ref(s.model)
    assert ref() is None and step.model is None


def test_validation_split_and_early_stopping_restore_the_best_weights():
    X, y = regression(200)
    step = mlp_step(epochs=50, validation_split=0.25, early_stopping_patience=3, learning_rate=0.0)
    step = step.fit(X, y)
    assert len(step.history_) == 4  # epoch 1 is the best (lr 0: nothing changes), 3 more without progress
    assert all("val_loss" in r for r in step.history_)
    step = mlp_step(epochs=200, validation_split=0.25, early_stopping_patience=2, learning_rate=0.3).fit(X, y)
    val = [r["val_loss"] for r in step.history_]
    best = int(np.argmin(val))
    assert len(val) < 200 and best < len(val) - 1
    held_out = step.history_[best]["val_loss"]
    # the restored weights are the best epoch's: its validation loss is what we get now
    from stepline.torch.training import _split
    g = torch.Generator().manual_seed(0)
    _, val_idx = _split(len(X), 0.25, g)
    assert mse(step.transform(X[val_idx.numpy()]), y[val_idx.numpy()]) == pytest.approx(held_out, rel=1e-4)


def test_progress_lines_are_logged_per_epoch(caplog):
    X, y = regression(32)
    with caplog.at_level("INFO", logger="stepline.torch"):
        mlp_step(epochs=3).fit(X, y)
    lines = [r.getMessage() for r in caplog.records if r.name == "stepline.torch"]
    assert len(lines) == 3 and "epoch 3/3" in lines[-1] and "loss" in lines[-1]


def test_classification_with_cross_entropy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    labels = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1).astype(np.int64)
    step = TorchStep(MLP, module_kwargs={"in_features": 4, "out_features": 3}, loss="cross_entropy",
                     optimizer=torch.optim.SGD, optimizer_kwargs={"momentum": 0.9},
                     hyperparams={"epochs": 30, "learning_rate": 0.05, "seed": 0, "device": "cpu"})
    step = step.fit(X, labels)
    assert (step.transform(X).argmax(axis=1) == labels).mean() > 0.9


def test_cuda_asked_without_a_gpu_falls_back_to_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    step = mlp_step(device="cuda")
    with pytest.warns(RuntimeWarning, match="CUDA is not available"):
        step.setup()
    assert step.device == torch.device("cpu")
    assert mlp_step(device="auto").setup().device == torch.device("cpu")


@pytest.mark.parametrize("kwargs, match", [
    ({"module": MLP()}, "not a built MLP"),
    ({"loss": nn.MSELoss()}, "not a built MSELoss"),
    ({"loss": "nope"}, "unknown loss"),
    ({"optimizer": "Adamm"}, "unknown optimizer"),
    ({"hyperparams": {"learnig_rate": 0.1}}, "learnig_rate.*learning_rate"),
    ({"module_kwargs": {"epochs": 3}}, "clash"),
    ({"optimizer_kwargs": {"lr": 0.1}}, "learning_rate"),
    ({"hyperparams_space": {"hidden": Choice([1, 2])}}, "unknown hyperparameters"),
])
def test_constructor_errors_are_clear(kwargs, match):
    args = {"module": MLP, **kwargs}
    with pytest.raises((TypeError, ValueError), match=match):
        TorchStep(args.pop("module"), **args)


# ------------------------------------------------------------------ hyperparameters
def test_hyperparameter_changes_reach_the_model():
    X, y = regression(64)
    step = mlp_step(epochs=2).fit(X, y)
    assert [m.out_features for m in step.model.modules() if isinstance(m, nn.Linear)] == [16, 1]
    old_model = weakref.ref(step.model)

    step.set_hyperparams({"hidden_sizes": (8, 4)})  # architecture: the old model and its weights go
    assert old_model() is None and not step.is_fitted and not step.is_initialized
    with pytest.raises(NotFittedError):
        step.transform(X)
    step = step.fit(X, y)
    assert [m.out_features for m in step.model.modules() if isinstance(m, nn.Linear)] == [8, 4, 1]

    step.set_hyperparams({"learning_rate": 0.123, "epochs": 1})
    step = step.fit(X, y)
    assert [g["lr"] for g in step.optimizer.param_groups] == [0.123]
    assert len(step.history_) == 1


def test_optimizer_hyperparameters_reach_the_optimizer_on_warm_start():
    X, y = regression(64)
    step = TorchStep(MLP, optimizer="SGD", optimizer_kwargs={"momentum": 0.5, "weight_decay": 0.0},
                     hyperparams={"epochs": 1, "seed": 0, "device": "cpu", "warm_start": True}).fit(X, y)
    optimizer = step.optimizer
    step.set_hyperparams({"momentum": 0.9, "weight_decay": 1e-3, "learning_rate": 0.05})
    step = step.fit(X, y)
    assert step.optimizer is optimizer  # warm start keeps the optimizer state
    group = step.optimizer.param_groups[0]
    assert (group["momentum"], group["weight_decay"], group["lr"]) == (0.9, 1e-3, 0.05)


def test_hyperparameter_space_is_part_of_the_pipelines():
    from stepline.steps.numpy import MultiplyByN
    space = {"learning_rate": LogUniform(1e-4, 1e-1), "hidden_sizes": Choice([(8,), (16, 8)]),
             "epochs": RandInt(1, 3)}
    step = TorchStep(MLP, module_kwargs={"in_features": 4, "hidden_sizes": (8,)}, hyperparams_space=space,
                     hyperparams={"seed": 0, "device": "cpu"}, name="mlp")
    p = Pipeline([MultiplyByN(1), step])
    full = p.get_hyperparams_space()
    assert {"mlp__learning_rate", "mlp__hidden_sizes", "mlp__epochs"} <= set(full.keys())
    assert p.get_hyperparams()["mlp__hidden_sizes"] == (8,)
    sample = full.rvs()
    p.set_hyperparams(sample)
    assert step.hyperparams["learning_rate"] == sample["mlp__learning_rate"]
    X, y = regression(64)
    p = p.fit(X, y)
    widths = [m.out_features for m in p["mlp"].model.modules() if isinstance(m, nn.Linear)][:-1]
    assert tuple(widths) == tuple(sample["mlp__hidden_sizes"])
    with pytest.raises(HyperparameterError, match="learning_rate"):
        p.set_hyperparams({"mlp__learnig_rate": 0.1})
    with pytest.raises(HyperparameterError, match="outside its space"):
        p.set_hyperparams({"mlp__learning_rate": 10.0})


# ------------------------------------------------------------------ saving
def dump_listing(folder):
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_saved_folder_holds_no_pickled_module(tmp_path, cache_small_files):
    X, y = regression(64)
    step = mlp_step(epochs=2).fit(X, y)
    step.save(CX(tmp_path), full_dump=True)
    folder = tmp_path / "mlp"
    assert dump_listing(folder) == ["model.json", "model.safetensors", "optimizer.json",
                                    "optimizer.safetensors", "stepline.json", "stepline.sig"]
    manifest = json.loads((folder / "stepline.json").read_text())
    assert set(manifest["files"]) == set(dump_listing(folder)) - {"stepline.json", "stepline.sig"}
    assert set(manifest["inline"]) == {"step.pkl"}  # the stripped step is tiny: inline in its manifest
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == [".stepline-verified.json"]
    assert manifest["savers"] == ["stepline.torch.saver.TorchModuleSaver"]
    # the pickle holds no tensor and no module instance: only the recipe (a class reference)
    raw = base64.b64decode(manifest["inline"]["step.pkl"]["base64"])
    strings = {arg for op, arg, _ in pickletools.genops(raw) if isinstance(arg, str)}
    assert not {s for s in strings if s.startswith("_rebuild") or s in ("_parameters", "_modules", "_buffers")}
    stripped = pickle.loads(raw)
    assert stripped.model is None and stripped.optimizer is None and stripped.loss_fn is None
    assert stripped._loaded_state is None and stripped.module_factory is MLP
    assert not _reaches(stripped, (torch.Tensor, nn.Module, torch.optim.Optimizer))
    # the live step was not touched by saving
    assert isinstance(step.model, MLP) and step.is_initialized
    # the tensor files are plain safetensors, the rest plain JSON
    from safetensors import safe_open
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        assert set(f.keys()) == set(step.model.state_dict())
        assert f.metadata() == {"format": "pt"}
    state = json.loads((folder / "optimizer.json").read_text())["state"]
    assert state["param_groups"][0]["lr"] == 1e-2


def _reaches(obj, types, seen=None) -> bool:
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, type):
        return False
    seen.add(id(obj))
    if isinstance(obj, types):
        return True
    if isinstance(obj, dict):
        children = list(obj.keys()) + list(obj.values())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children = list(obj)
    elif hasattr(obj, "__dict__"):
        children = list(vars(obj).values())
    else:
        return False
    return any(_reaches(c, types, seen) for c in children)


def test_save_load_in_process_same_predictions_and_optimizer_state(tmp_path):
    X, y = regression(128)
    step = mlp_step(epochs=3).fit(X, y)
    expected = step.transform(X)
    step.save(CX(tmp_path), full_dump=True)
    loaded = CX(tmp_path).load("mlp")
    assert loaded.model is None and loaded.is_fitted and not loaded.is_initialized
    assert loaded._loaded_state["model"]._metadata == step.model.state_dict()._metadata  # module versions
    np.testing.assert_array_equal(loaded.transform(X), expected)
    before, after = step.optimizer.state_dict(), loaded.optimizer.state_dict()
    assert before["param_groups"] == after["param_groups"]
    for i, entry in before["state"].items():
        for k, v in entry.items():
            assert torch.equal(after["state"][i][k], v), (i, k)
    # a loaded step trained further with warm_start matches the original trained further
    step.set_hyperparams({"warm_start": True})
    loaded.set_hyperparams({"warm_start": True})
    np.testing.assert_array_equal(step.fit(X, y).transform(X), loaded.fit(X, y).transform(X))


def test_loaded_params_keep_requires_grad_and_train(tmp_path):
    X, y = regression(64)
    mlp_step(epochs=1).fit(X, y).save(CX(tmp_path), full_dump=True)
    loaded = CX(tmp_path).load("mlp").setup()
    assert all(p.requires_grad and isinstance(p, nn.Parameter) for p in loaded.model.parameters())
    assert len(list(loaded.model.parameters())) == 4


class RecordsWhereBuilt(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.built_on = self.lin.weight.device.type

    def forward(self, x):
        return self.lin(x)


def test_loading_skips_the_random_initialisation(tmp_path):
    X, y = regression(64)
    step = TorchStep(RecordsWhereBuilt, hyperparams={"epochs": 1, "seed": 0, "device": "cpu"}).fit(X, y)
    assert step.model.built_on == "cpu"
    step.save(CX(tmp_path), full_dump=True)
    loaded = CX(tmp_path).load("RecordsWhereBuilt").setup()
    assert loaded.model.built_on == "meta"  # built without memory, then given the saved tensors
    assert loaded.model.lin.weight.device.type == "cpu"
    np.testing.assert_array_equal(loaded.transform(X), step.transform(X))


def test_save_load_in_a_fresh_process_gives_identical_predictions(tmp_path):
    """The saving script defines its module in __main__; the loading one never sees that code."""
    X, _ = regression(50, seed=1)
    np.save(tmp_path / "X.npy", X)
    run_script(tmp_path / "save_it.py", """
        import sys
        import numpy as np
        import torch
        from torch import nn
        from sklearn.preprocessing import StandardScaler
        from stepline import CX, Pipeline
        from stepline.steps.sklearn import SKLearnWrapper
        from stepline.torch import TorchStep

        class Net(nn.Module):  # defined in __main__: stored by value
            def __init__(self, width):
                super().__init__()
                self.body = nn.Sequential(nn.Linear(4, width), nn.Tanh(), nn.Linear(width, 1))
            def forward(self, x):
                return self.body(x)

        def make_linear(n_in):  # a factory function, also by value
            return nn.Linear(n_in, 2)

        root, X = sys.argv[1], np.load(sys.argv[2])
        y = X.sum(axis=1)
        p = Pipeline([SKLearnWrapper(StandardScaler()),
                      TorchStep(Net, module_kwargs={"width": 8}, hyperparams={"epochs": 5, "seed": 0})])
        p = p.fit(X, y)
        p.set_name("pipe").save(CX(root), full_dump=True)
        np.save(sys.argv[3], p.transform(X))
        lin = TorchStep(make_linear, module_kwargs={"n_in": 4}, hyperparams={"epochs": 2, "seed": 0})
        lin = lin.fit(X, np.stack([y, -y], axis=1))
        lin.save(CX(root), full_dump=True)
        np.save(sys.argv[4], lin.transform(X))
        assert "Net" in open(__file__).read()
    """, tmp_path / "dump", tmp_path / "X.npy", tmp_path / "pipe.npy", tmp_path / "lin.npy")
    run_script(tmp_path / "load_it.py", """
        import sys
        import numpy as np
        from stepline import CX
        root, X = sys.argv[1], np.load(sys.argv[2])
        p = CX(root).load("pipe")
        assert type(p["Net"].model).__name__ == "NoneType"  # not set up until used
        np.save(sys.argv[3], p.transform(X))
        np.save(sys.argv[4], CX(root).load("make_linear").transform(X))
        assert "torch" in sys.modules and "Net" not in open(__file__).read().replace('"Net"', "")
    """, tmp_path / "dump", tmp_path / "X.npy", tmp_path / "pipe2.npy", tmp_path / "lin2.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "pipe.npy"), np.load(tmp_path / "pipe2.npy"))
    np.testing.assert_array_equal(np.load(tmp_path / "lin.npy"), np.load(tmp_path / "lin2.npy"))
    assert np.load(tmp_path / "lin.npy").shape == (50, 2)


def test_torch_step_in_a_pipeline_with_an_sklearn_scaler(tmp_path):
    pytest.importorskip("sklearn")
    from sklearn.preprocessing import StandardScaler

    from stepline.steps.sklearn import SKLearnWrapper
    X, y = regression(200)
    X = X * np.array([1.0, 100.0, 0.01, 10.0]) + 50.0  # badly scaled: the scaler matters
    p = Pipeline([SKLearnWrapper(StandardScaler()), mlp_step(epochs=40)], name="p")
    p, out = p.fit_transform(X, y)
    assert out.shape == (200, 1) and mse(out, y) < 0.2 * float(np.var(y))
    np.testing.assert_allclose(p.transform(X), out, rtol=1e-5, atol=1e-5)
    p.save(CX(tmp_path), full_dump=True)
    assert dump_listing(tmp_path / "p" / "mlp")[:2] == ["model.json", "model.safetensors"]
    loaded = CX(tmp_path).load("p")
    np.testing.assert_array_equal(loaded.transform(X), p.transform(X))


def test_incremental_save_overwrites_weights_a_loaded_model_still_maps(tmp_path):
    X, y = regression(64)
    mlp_step(epochs=1).fit(X, y).save(CX(tmp_path), full_dump=True)
    loaded = CX(tmp_path).load("mlp")
    loaded.set_hyperparams({"warm_start": True, "epochs": 2})
    loaded = loaded.fit(X, y)  # its weights came memory-mapped from the files the next save replaces
    expected = loaded.transform(X)
    loaded.save(CX(tmp_path))  # changes only: written into the same folder
    np.testing.assert_array_equal(loaded.transform(X), expected)
    np.testing.assert_array_equal(CX(tmp_path).load("mlp").transform(X), expected)
    assert int(CX(tmp_path).load("mlp").setup().optimizer.state_dict()["state"][0]["step"]) == 3 * 2


def test_a_loaded_step_saved_again_without_setup_keeps_its_weights(tmp_path):
    X, y = regression(64)
    step = mlp_step(epochs=2).fit(X, y)
    expected = step.transform(X)
    step.save(CX(tmp_path / "a"), full_dump=True)
    loaded = CX(tmp_path / "a").load("mlp")
    loaded.save(CX(tmp_path / "b"), full_dump=True)  # never set up: saves the weights it loaded
    assert loaded.model is None
    np.testing.assert_array_equal(CX(tmp_path / "b").load("mlp").transform(X), expected)


def test_an_unfitted_step_saves_no_weights(tmp_path):
    mlp_step().save(CX(tmp_path), full_dump=True)
    assert dump_listing(tmp_path / "mlp") == ["stepline.json", "stepline.sig"]  # (its pickle is inline)
    loaded = CX(tmp_path).load("mlp")
    with pytest.raises(NotFittedError):
        loaded.transform(np.zeros((2, 4)))


def test_a_corrupted_weights_file_is_refused_with_its_name(tmp_path):
    X, y = regression(64)
    mlp_step(epochs=1).fit(X, y).save(CX(tmp_path), full_dump=True)
    path = tmp_path / "mlp" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="model.safetensors"):
        CX(tmp_path).load("mlp")


def test_weights_files_are_hashed_once_while_written(tmp_path, monkeypatch, cache_small_files):
    from stepline.saving import integrity
    X, y = regression(64)
    step = mlp_step(epochs=1).fit(X, y)
    hashed = []
    real = integrity.file_digest
    monkeypatch.setattr(integrity, "file_digest", lambda p, *a: hashed.append(os.path.basename(p)) or real(p, *a))
    step.save(CX(tmp_path), full_dump=True)
    assert not [n for n in hashed if n.startswith(("model", "optimizer"))]
    manifest = json.loads((tmp_path / "mlp" / "stepline.json").read_text())
    assert manifest["files"]["model.safetensors"]["blake3"] == real(tmp_path / "mlp" / "model.safetensors")
    cache = integrity.load_stat_cache(tmp_path / "mlp")  # recorded by the saver as it wrote them
    for name in ("model.safetensors", "model.json", "optimizer.safetensors", "optimizer.json"):
        assert cache[name][-1] == manifest["files"][name]["blake3"], name


# ------------------------------------------------------------------ the tensor files
def test_state_trees_round_trip_without_pickle(tmp_path):
    shared = torch.arange(6.0).reshape(2, 3)
    state = {
        "state": {0: {"step": torch.tensor(3.0), "buf": torch.ones(2, dtype=torch.bfloat16), "n": 5},
                  1: {"momentum_buffer": None}},
        "param_groups": [{"params": [0, 1], "betas": (0.9, 0.999), "lr": 1e-3, "nesterov": False,
                          "name": "all", "eps": float("inf")}],
        "tied_a": shared, "tied_b": shared, "view": shared.t(), "$odd": 1, "empty": torch.zeros(0, 4),
        "flags": torch.tensor([True, False]), "ints": torch.arange(3, dtype=torch.int16),
    }
    tree, tensors = tensorfile.split_tensors(state)
    assert len([k for k in tensors if k.startswith("tied")]) == 1  # stored once
    json.dumps(tree)
    tensorfile.write_safetensors(tmp_path / "t.safetensors", tensors)
    back = tensorfile.join_tensors(json.loads(json.dumps(tree)), tensorfile.read_safetensors(tmp_path / "t.safetensors"))
    assert back["state"][0]["n"] == 5 and back["state"][1] == {"momentum_buffer": None}
    assert back["param_groups"][0]["betas"] == (0.9, 0.999) and back["param_groups"][0]["eps"] == float("inf")
    assert back["$odd"] == 1 and set(back["state"]) == {0, 1}
    for key in ("tied_a", "view", "empty", "flags", "ints"):
        assert torch.equal(back[key], state[key]) and back[key].dtype == state[key].dtype, key
    assert back["tied_a"] is back["tied_b"]
    assert back["state"][0]["buf"].dtype == torch.bfloat16 and back["state"][0]["step"].shape == ()


def test_the_writer_matches_safetensors_and_its_hash(tmp_path):
    from safetensors.torch import load_file, save_file
    tensors = {"w": torch.randn(300, 70), "b": torch.randn(7).half(), "i": torch.arange(9), "u": torch.ones(3, dtype=torch.uint8)}
    digest, size = tensorfile.write_safetensors(tmp_path / "ours.safetensors", tensors, metadata={"format": "pt"})
    import blake3
    assert digest == blake3.blake3((tmp_path / "ours.safetensors").read_bytes()).hexdigest()
    assert size == (tmp_path / "ours.safetensors").stat().st_size
    save_file(tensors, tmp_path / "theirs.safetensors", metadata={"format": "pt"})
    ours, theirs = load_file(tmp_path / "ours.safetensors"), load_file(tmp_path / "theirs.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert not list(tmp_path.glob(".*tmp*"))


def test_big_states_are_sharded_and_resharded_cleanly(tmp_path, monkeypatch):
    monkeypatch.setattr(tensorfile, "SHARD_MIN_BYTES", 1024)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    X, y = regression(64)
    step = mlp_step(epochs=1, hidden_sizes=(64, 64)).fit(X, y)
    step.save(CX(tmp_path), full_dump=True)
    files = dump_listing(tmp_path / "mlp")
    shards = [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert set(shards) <= set(files) and "model.safetensors" not in files
    manifest = json.loads((tmp_path / "mlp" / "stepline.json").read_text())
    assert set(shards) <= set(manifest["files"])
    loaded = CX(tmp_path).load("mlp")
    np.testing.assert_array_equal(loaded.transform(X), step.transform(X))
    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # fewer shards next time: the old ones go
    loaded.set_hyperparams({"warm_start": True})
    loaded = loaded.fit(X, y)
    loaded.save(CX(tmp_path))
    files = dump_listing(tmp_path / "mlp")
    assert "model.safetensors" in files and not [f for f in files if "-of-" in f]
    np.testing.assert_array_equal(CX(tmp_path).load("mlp").transform(X), loaded.transform(X))


def test_non_tensor_non_json_state_is_refused_clearly():
    with pytest.raises(TensorStateError, match="state.0.fn.*neither a tensor nor JSON"):
        tensorfile.split_tensors({"state": {0: {"fn": object()}}})


class TiedWithExtraState(nn.Module):
    """Tied weights, a non-persistent buffer and extra state: the slow, safe load path."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight
        self.register_buffer("scale", torch.tensor(2.0), persistent=False)
        self.note = "untrained"

    def forward(self, x):
        return self.head(self.emb(x)) * self.scale

    def get_extra_state(self):
        return {"note": self.note}

    def set_extra_state(self, state):
        self.note = state["note"]


def test_tied_weights_buffers_and_extra_state_survive_saving(tmp_path):
    X = np.arange(10) % 10
    step = TorchStep(TiedWithExtraState, loss="cross_entropy", hyperparams={"epochs": 2, "seed": 0, "device": "cpu"})
    step = step.fit(X, X)
    step.model.note = "trained"
    expected = step.transform(X)
    step.save(CX(tmp_path), full_dump=True)
    loaded = CX(tmp_path).load("TiedWithExtraState").setup()
    assert loaded.model.head.weight is loaded.model.emb.weight
    assert loaded.model.note == "trained" and float(loaded.model.scale) == 2.0
    np.testing.assert_array_equal(loaded.transform(X), expected)
    assert len(list(loaded.model.parameters())) == len(loaded.optimizer.param_groups[0]["params"]) == 1


def test_pickling_or_copying_carries_weights_not_modules():
    import copy
    X, y = regression(64)
    step = mlp_step(epochs=2).fit(X, y)
    expected = step.transform(X)
    raw = pickle.dumps(step)
    strings = {arg for op, arg, _ in pickletools.genops(raw) if isinstance(arg, str)}
    assert "_modules" not in strings and "_parameters" not in strings  # tensors yes, modules no
    for other in (pickle.loads(raw), copy.deepcopy(step)):
        assert other.model is None and not other.is_initialized and other.is_fitted
        np.testing.assert_array_equal(other.transform(X), expected)
        assert other.model is not step.model
    assert isinstance(step.model, MLP) and step.is_initialized  # the original is untouched


def test_torch_step_runs_in_a_streaming_process_worker_through_a_dump():
    streaming = pytest.importorskip("stepline.distributed.streaming")
    X, y = regression(96)
    linear = TorchStep(nn.Linear, module_kwargs={"in_features": 4, "out_features": 1}, name="linear",
                       hyperparams={"epochs": 5, "seed": 0, "device": "cpu", "learning_rate": 0.05}).fit(X, y)
    expected = linear.transform(X)
    # use_savers: the worker process gets the step as a stepline dump (safetensors), loads it, sets it up
    p = streaming.SequentialQueuedPipeline([linear], batch_size=16, use_processes=True, use_savers=True)
    with p.setup():
        out = p.transform(X)
    np.testing.assert_array_equal(out, expected)
    assert linear.is_fitted  # the parent's copy was torn down with the pipeline, its fit kept
    np.testing.assert_array_equal(linear.transform(X), expected)


def test_import_stepline_does_not_import_torch():
    code = ("import sys, stepline, stepline.base, stepline.pipeline, stepline.saving.procedure\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ------------------------------------------------------------------ GPU (skipped without one)
def _warm_up_cuda_libraries():
    """cuBLAS keeps a workspace from the caching allocator once used: not the step's memory."""
    lin = nn.Linear(8, 8).cuda()
    lin(torch.ones(4, 8, device="cuda")).sum().backward()
    del lin
    torch.cuda.synchronize()
    gc.collect()
    torch.cuda.empty_cache()


@cuda_only
def test_cuda_setup_teardown_returns_memory_and_the_dump_loads_on_cpu(tmp_path):
    X, y = regression(256)
    _warm_up_cuda_libraries()
    baseline = torch.cuda.memory_allocated()
    step = mlp_step(epochs=3, device="cuda", hidden_sizes=(256, 256))
    step.setup()
    assert step.device.type == "cuda" and next(step.model.parameters()).is_cuda
    step = step.fit(X, y)
    assert torch.cuda.memory_allocated() > baseline
    expected = step.transform(X)
    step.save(CX(tmp_path), full_dump=True)
    step.teardown()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == baseline  # the fitted weights wait on the host
    np.testing.assert_allclose(step.transform(X), expected, rtol=1e-5, atol=1e-6)  # set up again on the GPU
    step.teardown()
    assert torch.cuda.memory_allocated() == baseline
    # a GPU dump loads on a CPU-only process ("cuda" falls back to the CPU there)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    np.save(tmp_path / "X.npy", X)
    run_script(tmp_path / "load_cpu.py", """
        import sys, warnings
        import numpy as np, torch
        from stepline import CX
        assert not torch.cuda.is_available()
        step = CX(sys.argv[1]).load("mlp")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            np.save(sys.argv[3], step.transform(np.load(sys.argv[2])))
        assert step.device.type == "cpu"
    """, tmp_path, tmp_path / "X.npy", tmp_path / "cpu.npy", env=env)
    np.testing.assert_allclose(np.load(tmp_path / "cpu.npy"), expected, rtol=1e-4, atol=1e-5)
    # and back on the GPU in this process
    loaded = CX(tmp_path).load("mlp").setup()
    assert next(loaded.model.parameters()).is_cuda
    np.testing.assert_allclose(loaded.transform(X), expected, rtol=1e-5, atol=1e-6)


@cuda_only
def test_changing_the_device_moves_the_model_and_its_optimizer_state():
    X, y = regression(128)
    step = mlp_step(epochs=2, device="cuda", warm_start=True).fit(X, y)
    expected = step.transform(X)
    step.set_hyperparams({"device": "cpu"})
    assert step.device.type == "cpu" and not next(step.model.parameters()).is_cuda
    assert all(not t.is_cuda for st in step.optimizer.state.values() for t in st.values()
               if isinstance(t, torch.Tensor))
    np.testing.assert_allclose(step.transform(X), expected, rtol=1e-4, atol=1e-5)
    step = step.fit(X, y)  # keeps training on the CPU with the moved optimizer state
    step.set_hyperparams({"device": "cuda"})
    assert next(step.model.parameters()).is_cuda
    step.teardown()


# ------------------------------------------------------------------ what is verified is what is loaded
SWAP_WEIGHTS = r"""
import os, sys
import numpy as np
from stepline import CX
from stepline.saving import StepLoadError

root, attacker, kwargs = sys.argv[1], sys.argv[2], eval(sys.argv[3])
opens, swapped = [], []

def swap(event, args):  # a writer racing the loader: once the weights are verified (the load hashed
    # model.json: its first open), when the torch saver reads them (its second)
    if event == "open" and isinstance(args[0], str) and args[0].endswith("model.json"):
        opens.append(args[0])
        if len(opens) == 2:
            swapped.append(args[0])
            os.replace(attacker, os.path.join(os.path.dirname(args[0]), "model.safetensors"))

sys.addaudithook(swap)
try:
    step = CX(root).load("lin", **kwargs)
except StepLoadError as error:
    print("REFUSED", type(error).__name__, error)
else:
    step.setup()
    print("LOADED", float(np.asarray(step.predict(np.ones((1, 4), np.float32))).ravel()[0]), opens, swapped)
"""


@pytest.mark.parametrize("kwargs", [{}, {"verify": "full"}, {"trusted": True}])
def test_weights_swapped_after_they_were_verified_are_never_loaded(tmp_path, kwargs):
    """A TorchStep's safetensors file replaced between the load's check and the torch saver's
    read (same size, other weights) is refused, not loaded as the model."""
    X, y = regression(64)

    def linear(seed):
        return TorchStep(nn.Linear, module_kwargs={"in_features": 4, "out_features": 1}, name="lin",
                         hyperparams={"epochs": 1, "seed": seed, "device": "cpu"}).fit(X, y)

    linear(0).save(CX(tmp_path / "dump"), full_dump=True)
    linear(1).save(CX(tmp_path / "other"), full_dump=True)
    attacker = tmp_path / "attacker.safetensors"
    attacker.write_bytes((tmp_path / "other" / "lin" / "model.safetensors").read_bytes())
    assert attacker.stat().st_size == (tmp_path / "dump" / "lin" / "model.safetensors").stat().st_size
    result = subprocess.run([sys.executable, "-c", SWAP_WEIGHTS, str(tmp_path / "dump"), str(attacker), repr(kwargs)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("REFUSED CorruptFileError"), result.stdout  # was: LOADED, the other weights
    assert "model.safetensors" in result.stdout and "after it was verified" in result.stdout


def test_a_full_save_frees_the_replaced_weights_just_before_writing_its_own(tmp_path):
    """The weights writer makes room as the buffer writer does (saving/reclaim.py): the big
    weights kept from the dump before last are freed on the saving thread just before the
    new weights file is written, whose pages are then those freed."""
    import threading
    X, y = regression(64)
    p = Pipeline([mlp_step(epochs=1, hidden_sizes=(2048, 2048))], name="p").fit(X, y)  # (16 MiB of weights)
    p.save(CX(tmp_path), full_dump=True)
    p.save(CX(tmp_path), full_dump=True)
    seen = []

    def hook(event, args):
        if event == "os.remove" and str(args[0]).startswith(".moved-"):
            seen.append(("free", threading.current_thread().name, str(args[0])))
        elif event == "open" and "safetensors" in str(args[0]) and "w" in str(args[1]):
            seen.append(("write", threading.current_thread().name, str(args[0])))

    _HOOK[:] = [hook]
    try:
        p.save(CX(tmp_path), full_dump=True)
    finally:
        _HOOK[:] = []
    kinds = [kind for kind, _, _ in seen]
    assert "write" in kinds and kinds[0] == "free"  # (the biggest kept file first, then the weights)
    assert seen[0][1] == threading.current_thread().name
    assert np.allclose(CX(tmp_path).load("p").transform(X), p.transform(X))


_HOOK: list = []
sys.addaudithook(lambda event, args: _HOOK and _HOOK[0](event, args))
