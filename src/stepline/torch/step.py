"""``TorchStep``: a PyTorch model as a stepline step with a real lifecycle.

The constructor only records *recipes* (module factory, optimizer factory, loss) and
hyperparameters; ``setup`` builds the model, optimizer and loss on the configured
device; ``fit`` trains; ``transform`` predicts; ``teardown`` frees them (a fitted step
keeps its weights on the host for the next ``setup``). Saving goes
through :class:`~stepline.torch.saver.TorchModuleSaver` (safetensors + JSON, no pickled
module).
"""
from __future__ import annotations

import numbers

import torch

from stepline.core.errors import HyperparameterError, InvalidStepNameError
from stepline.core.naming import validate_name
from stepline.core.step import BaseStep
from stepline.torch import factories, training

logger = training.logger

#: Training hyperparameters every TorchStep has, with their defaults.
TRAINING_DEFAULTS = {
    "epochs": 10,
    "batch_size": 32,
    "learning_rate": 1e-3,
    "device": "auto",
    "seed": None,
    "shuffle": True,
    "validation_split": 0.0,
    "early_stopping_patience": None,
    "warm_start": False,
}


class TorchStep(BaseStep):
    """A PyTorch ``nn.Module`` trained and run as a pipeline step.

    ``TorchStep(module, module_kwargs=None, optimizer="Adam", optimizer_kwargs=None,
    loss="mse", loss_kwargs=None, hyperparams=None, hyperparams_space=None, name=None,
    savers=None)``

    - ``module``: an ``nn.Module`` subclass or a function returning a module; it is
      called as ``module(**module_kwargs)`` in ``setup``, never in the constructor.
      Importable classes are saved by reference, classes and functions defined in
      ``__main__`` by value.
    - ``optimizer``: a ``torch.optim`` class, its name (``"Adam"``, ``"SGD"``…) or a
      function ``(params, lr, **optimizer_kwargs) -> Optimizer``.
    - ``loss``: a name (``"mse"``, ``"cross_entropy"``, ``"bce_with_logits"``…, see
      :data:`~stepline.torch.factories.LOSSES`), an ``nn.Module`` class (built with
      ``loss_kwargs``), ``functools.partial`` of one, or a function ``(outputs, targets)``.

    **Hyperparameters** are the union of three groups, so a pipeline's hyperparameter
    space covers them all (``"mlp__hidden_sizes"``, ``"mlp__learning_rate"``…):

    - training: ``epochs``, ``batch_size``, ``learning_rate``, ``device`` (``"auto"``:
      CUDA when available; ``"cuda"`` falls back to the CPU with a warning when there is
      no GPU), ``seed`` (``None``: torch's global RNG; an int makes initialisation,
      shuffling and dropout reproducible without touching the global RNG), ``shuffle``,
      ``validation_split`` (a seeded random fraction held out and reported as
      ``val_loss``), ``early_stopping_patience`` (``None``: off; else stop after that
      many epochs without improvement of ``val_loss``, or of ``loss`` without a
      validation split, and restore the best weights), ``warm_start``;
    - architecture: the keys of ``module_kwargs``;
    - optimizer: the keys of ``optimizer_kwargs`` (``weight_decay``, ``momentum``…).

    What a change means for a built model:

    - an **architecture** hyperparameter discards the model and its trained weights:
      the step is torn down and needs fitting again; the next setup builds the new shape;
    - ``learning_rate`` and optimizer hyperparameters reach the optimizer's parameter
      groups at the start of the next ``fit``;
    - ``device`` moves a built model and its optimizer state right away;
    - the others are read when ``fit``/``transform`` run.

    ``fit`` starts from a freshly initialised model each time (as scikit-learn's ``fit``
    does) unless ``warm_start`` is true, in which case it continues training the current
    weights (and optimizer state), e.g. those of a loaded step. ``transform`` returns the
    model's outputs as a NumPy array, computed in eval mode under ``torch.no_grad()``.

    ``teardown`` deletes the model, optimizer and loss and frees all device memory
    (emptying the CUDA cache). A fitted step stays fitted: its weights and optimizer
    state move to host memory (no copy when they are there already) and the next
    ``setup`` rebuilds the model with them, as it does for a loaded step. Dropping the
    step, or changing an architecture hyperparameter, frees them too.

    Attributes: ``model``, ``optimizer``, ``loss_fn`` (``None`` outside setup),
    ``device`` (the ``torch.device`` in use, ``None`` outside setup), ``history_`` (one
    dict per epoch of the last ``fit``).
    """

    def __init__(self, module, module_kwargs=None, optimizer="Adam", optimizer_kwargs=None, loss="mse",
                 loss_kwargs=None, hyperparams=None, hyperparams_space=None, name=None, savers=None):
        factories.check_module_factory(module)
        factories.check_optimizer_factory(optimizer)
        factories.check_loss(loss)
        module_kwargs = dict(module_kwargs or {})
        optimizer_kwargs = dict(optimizer_kwargs or {})
        _check_groups(module_kwargs, optimizer_kwargs)
        values = {**TRAINING_DEFAULTS, **module_kwargs, **optimizer_kwargs}
        unknown = sorted(set(hyperparams or {}) - set(values))
        if unknown:
            raise HyperparameterError(
                f"TorchStep has no hyperparameter {', '.join(map(repr, unknown))}; its hyperparameters are "
                f"{sorted(values)} (architecture ones come from module_kwargs, optimizer ones from "
                f"optimizer_kwargs)")
        values.update(hyperparams or {})
        super().__init__(hyperparams=values, hyperparams_space=hyperparams_space, name=name,
                         savers=savers)
        if name is None:  # the module's name, still a default name (made unique in pipelines)
            self.name = _default_name(module)
        unknown = sorted(set(self.hyperparams_space) - set(values))
        if unknown:
            raise HyperparameterError(f"hyperparams_space of TorchStep {self.name!r} names unknown "
                                      f"hyperparameters {unknown}; its hyperparameters are {sorted(values)}")
        self.module_factory = module
        self.optimizer_factory = optimizer
        self.loss = loss
        self.loss_kwargs = dict(loss_kwargs or {})
        self.module_keys = tuple(module_kwargs)
        self.optimizer_keys = tuple(optimizer_kwargs)
        self.model = None
        self.optimizer = None
        self.loss_fn = None
        self.device = None
        self.history_ = []
        self._loaded_state = None  # weights read by TorchModuleSaver, consumed by setup
        self._fresh = None  # (seed,) while the model is freshly initialised with that seed

    def _default_savers(self) -> list:
        from stepline.torch.saver import TorchModuleSaver
        return [TorchModuleSaver()]

    # ---------------------------------------------------------------- lifecycle
    def setup(self, context=None):
        """Build the model (loading saved weights if any), optimizer and loss on the device."""
        device = factories.resolve_device(self.hyperparams["device"])
        state = self._loaded_state
        if state is not None and state.get("model") is not None:
            model = _build_with_weights(self._build_module, state["model"], device)
        else:
            model = self._new_model(device)
        self.model, self.device = model, device
        self.optimizer = self._new_optimizer()
        if state is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if state is not None:
            self._fresh = None
        self._loaded_state = None
        self.loss_fn = factories.build_loss(self.loss, self.loss_kwargs)
        return self

    def teardown(self):
        """Delete the model, optimizer and loss; free the device memory; keep fitted weights on the host."""
        on_cuda = self.device is not None and self.device.type == "cuda"
        if self.model is not None and self.is_fitted:
            model_state, optimizer_state = self.torch_state()
            self._loaded_state = {"model": _to_host(model_state), "optimizer": _to_host(optimizer_state)}
        self.model = self.optimizer = self.loss_fn = None
        self.device = None
        self._fresh = None
        if on_cuda:
            torch.cuda.empty_cache()
        return self

    # ---------------------------------------------------------------- learning
    def fit(self, data_inputs, expected_outputs=None):
        """Train on ``data_inputs`` → ``expected_outputs``; returns the step."""
        if expected_outputs is None:
            raise ValueError(f"step {self.name!r} (TorchStep) needs expected_outputs to fit")
        hp = self.hyperparams
        config = training.TrainingConfig(  # checked before anything changes
            epochs=_positive_int(self, "epochs"), batch_size=_positive_int(self, "batch_size"),
            shuffle=bool(hp["shuffle"]), validation_split=_fraction(self, "validation_split"),
            early_stopping_patience=_optional_positive_int(self, "early_stopping_patience"),
            seed=hp["seed"], name=self.name)
        if not hp["warm_start"] and self._fresh != (hp["seed"],):
            self._rebuild()
        self._push_optimizer_hyperparams()
        dtype = training.float_dtype_of(self.model)
        X = training.as_tensor(data_inputs, dtype, "data_inputs")
        y = training.as_tensor(expected_outputs, dtype, "expected_outputs")
        self._fresh = None
        with factories.seeded(hp["seed"], self.device):
            self.history_ = training.train(self.model, self.optimizer, self.loss_fn, X, y, self.device, config)
        return self

    def transform(self, data_inputs):
        """The model's outputs for ``data_inputs`` (eval mode, no gradients), as a NumPy array."""
        X = training.as_tensor(data_inputs, training.float_dtype_of(self.model), "data_inputs")
        return training.predict(self.model, X, self.device, _positive_int(self, "batch_size"))

    # ---------------------------------------------------------------- hyperparameters
    def _set_own_hyperparams(self, values: dict) -> None:
        old = dict(self.hyperparams)
        super()._set_own_hyperparams(values)
        changed = {k for k, v in values.items() if not _same(old.get(k), v)}
        if changed & set(self.module_keys):
            self._discard_weights()
        elif "device" in changed and self.model is not None:
            self._move_to(factories.resolve_device(self.hyperparams["device"]))

    def _discard_weights(self) -> None:
        """An architecture change: the built model and any trained weights no longer apply."""
        self.is_fitted = False  # first, so that teardown keeps nothing
        self.teardown()  # lifecycle-guarded: a no-op when not set up
        self._loaded_state = None

    def _move_to(self, device) -> None:
        if device == self.device:
            return
        state = self.optimizer.state_dict()
        self.model.to(device)
        self.device = device
        self.optimizer = self._new_optimizer()
        self.optimizer.load_state_dict(state)  # casts the state to the parameters' device
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()

    def _push_optimizer_hyperparams(self) -> None:
        """Current learning rate and optimizer hyperparameters into every parameter group."""
        updates = {"lr": self.hyperparams["learning_rate"]}
        updates.update((k, self.hyperparams[k]) for k in self.optimizer_keys)
        for group in self.optimizer.param_groups:
            group.update((k, v) for k, v in updates.items() if k in group)

    # ---------------------------------------------------------------- building
    def _build_module(self):
        return factories.build_module(self.module_factory, {k: self.hyperparams[k] for k in self.module_keys})

    def _new_model(self, device):
        seed = self.hyperparams["seed"]
        with factories.seeded(seed, device):
            model = self._build_module().to(device)
        self._fresh = (seed,)
        return model

    def _new_optimizer(self):
        return factories.build_optimizer(self.optimizer_factory, self.model.parameters(),
                                         self.hyperparams["learning_rate"],
                                         {k: self.hyperparams[k] for k in self.optimizer_keys})

    def _rebuild(self) -> None:
        """Fresh model and optimizer (``fit`` without ``warm_start``)."""
        device = self.device
        self.model = self.optimizer = None  # free the old ones before building the new ones
        self.model = self._new_model(device)
        self.optimizer = self._new_optimizer()

    # ---------------------------------------------------------------- saving support
    def torch_state(self) -> tuple[dict | None, dict | None]:
        """``(model_state_dict, optimizer_state_dict)`` to save: live ones, else loaded ones."""
        if self.model is not None:
            return self.model.state_dict(), (self.optimizer.state_dict() if self.optimizer is not None else None)
        state = self._loaded_state or {}
        return state.get("model"), state.get("optimizer")

    def strip_torch_state(self) -> TorchStep:
        """Drop the built objects and weights by assignment (used on the copy being saved)."""
        self.model = self.optimizer = self.loss_fn = None
        self.device = None
        self._loaded_state = None
        self._fresh = None
        return self

    def restore_torch_state(self, model_state, optimizer_state) -> TorchStep:
        """Keep loaded state dicts for the next ``setup`` (used by the saver when loading)."""
        self._loaded_state = {"model": model_state, "optimizer": optimizer_state}
        self._fresh = None
        return self

    # ---------------------------------------------------------------- pickling
    def __getstate__(self):
        """The recipe and the weights' tensors, never the module, optimizer or loss objects.

        A pickled (or copied, or sent to a worker) step comes back not set up, with the
        weights waiting for its ``setup``, as a loaded step does. Copies share the
        tensors (``copy.copy`` copies no data); ``TorchModuleSaver`` strips them from the
        copy it saves, so a dump's ``step.pkl`` holds no tensor at all.
        """
        state = super().__getstate__()
        if self.model is not None:
            model_state, optimizer_state = self.torch_state()
            state["_loaded_state"] = {"model": model_state, "optimizer": optimizer_state}
        state.update(model=None, optimizer=None, loss_fn=None, device=None, _fresh=None)
        return state


def _default_name(module) -> str:
    try:
        return validate_name(getattr(module, "__name__", ""))
    except InvalidStepNameError:  # a lambda, a partial...
        return "TorchStep"

def _to_host(state):
    """``state`` with its tensors on the CPU (the same tensors when they are there already)."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu")
    if isinstance(state, dict):
        out = type(state)((k, _to_host(v)) for k, v in state.items())
        if hasattr(state, "_metadata"):  # a state_dict's module versions
            out._metadata = state._metadata
        return out
    if isinstance(state, (list, tuple)):
        return type(state)(_to_host(v) for v in state)
    return state


def _build_with_weights(build, state: dict, device):
    """A model holding ``state``, built without paying for a random initialisation when possible.

    The module is built on the ``meta`` device (no memory, no init) and the loaded
    tensors are assigned to it. Modules that tie weights, keep non-persistent buffers or
    cannot be built on ``meta`` are built normally and the weights copied in.
    """
    try:
        with torch.device("meta"):
            model = build()
        if _assignable(model, state):
            model.load_state_dict(state, strict=True, assign=True)
            if not any(t.is_meta for t in _tensors(model)):
                return model.to(device)
    except Exception as exc:  # noqa: BLE001 - any trouble on meta: the normal path below decides
        logger.debug("building %s on the meta device failed (%s); building it normally", build, exc)
    with torch.device(device):
        model = build()
    model.to(device)
    model.load_state_dict(state, strict=True)
    return model


def _assignable(model, state: dict) -> bool:
    params = list(model.named_parameters(remove_duplicate=False))
    buffers = list(model.named_buffers(remove_duplicate=False))
    if len(params) != len({id(p) for _, p in params}) or len(buffers) != len({id(b) for _, b in buffers}):
        return False  # tied weights: assigning would untie them
    names = {n for n, _ in params} | {n for n, _ in buffers}
    return names <= set(state)  # a non-persistent buffer would stay on meta


def _tensors(model):
    yield from model.parameters()
    yield from model.buffers()


def _same(a, b) -> bool:
    """Whether a hyperparameter value really changed (``3`` and ``np.int64(3)`` did not)."""
    try:
        equal = bool(a == b)
    except Exception:  # noqa: BLE001 - arrays and the like: compare by identity
        return a is b
    return equal and (type(a) is type(b) or (isinstance(a, numbers.Number) and isinstance(b, numbers.Number)))


def _check_groups(module_kwargs: dict, optimizer_kwargs: dict) -> None:
    for group, names in (("module_kwargs", module_kwargs), ("optimizer_kwargs", optimizer_kwargs)):
        clash = sorted(set(names) & set(TRAINING_DEFAULTS))
        if clash:
            raise HyperparameterError(f"{group} {clash} clash with TorchStep's training hyperparameters "
                                      f"{sorted(TRAINING_DEFAULTS)}")
        if "lr" in names and group == "optimizer_kwargs":
            raise HyperparameterError("give the learning rate as the 'learning_rate' hyperparameter, "
                                      "not optimizer_kwargs['lr']")
    clash = sorted(set(module_kwargs) & set(optimizer_kwargs))
    if clash:
        raise HyperparameterError(f"module_kwargs and optimizer_kwargs both define {clash}")


def _positive_int(step, key: str) -> int:
    value = step.hyperparams[key]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise HyperparameterError(f"step {step.name!r}: hyperparameter {key!r} must be a positive int, got {value!r}")
    return int(value)


def _optional_positive_int(step, key: str):
    return None if step.hyperparams[key] is None else _positive_int(step, key)


def _fraction(step, key: str) -> float:
    value = step.hyperparams[key]
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise HyperparameterError(f"step {step.name!r}: hyperparameter {key!r} must be in [0, 1), got {value!r}")
    return float(value)
