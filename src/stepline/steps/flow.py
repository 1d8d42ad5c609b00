"""Steps that decide whether, and which, wrapped steps run.

- :class:`TrainOnlyWrapper` / :class:`TestOnlyWrapper`: run the step only in training
  (``is_train``) or only in inference (after ``set_train(False)``).
- :class:`ExecuteIf`: run the step only when a function of the data says so.
- :class:`OptionalStep`: a Boolean hyperparameter ``enabled`` turns the step on or off.
- :class:`ChooseOneStepOf`: a Choice hyperparameter ``choice`` picks one of several steps.
- :class:`ReversiblePreprocessingWrapper`: preprocess, postprocess, then undo the
  preprocessing with its ``inverse_transform``.

A step that does not run passes the data through unchanged, and is not fitted.
"""
from __future__ import annotations

import copy

from stepline.core.composite import MetaStep, TruncableSteps
from stepline.hyperparams.distributions import Boolean, Choice


class _ConditionalWrapper(MetaStep):
    """A wrapper that runs its step when :meth:`_should_run` is true, else passes through."""

    def _should_run(self, data_container, context) -> bool:
        raise NotImplementedError

    def handle_fit(self, data_container, context):
        if self._should_run(data_container, context):
            return super().handle_fit(data_container, context)
        return self

    def handle_transform(self, data_container, context):
        if self._should_run(data_container, context):
            return super().handle_transform(data_container, context)
        return self._skipped(data_container)

    def handle_fit_transform(self, data_container, context):
        if self._should_run(data_container, context):
            return super().handle_fit_transform(data_container, context)
        return self, self._skipped(data_container)

    def _skipped(self, data_container):
        """What comes out when the step does not run: the data, unchanged."""
        return data_container


class TrainOrTestOnlyWrapper(_ConditionalWrapper):
    """Runs the wrapped step only in training (``is_train_only=True``) or only in inference.

    ``pipeline.set_train(False)`` switches every step of a pipeline to inference.
    """

    def __init__(self, wrapped, is_train_only: bool = True, name=None, savers=None):
        super().__init__(wrapped, name=name, savers=savers)
        self.is_train_only = bool(is_train_only)

    def _should_run(self, data_container, context) -> bool:
        return bool(self.is_train) == self.is_train_only


class TrainOnlyWrapper(TrainOrTestOnlyWrapper):
    """Fits and transforms the wrapped step while ``is_train``; in inference passes data through."""

    def __init__(self, wrapped, name=None, savers=None):
        super().__init__(wrapped, is_train_only=True, name=name, savers=savers)


class TestOnlyWrapper(TrainOrTestOnlyWrapper):
    """Runs the wrapped step only in inference (``set_train(False)``); in training passes through."""

    __test__ = False  # not a pytest test class

    def __init__(self, wrapped, name=None, savers=None):
        super().__init__(wrapped, is_train_only=False, name=name, savers=savers)


class ExecuteIf(_ConditionalWrapper):
    """Runs the wrapped step only when ``condition_fn(self, data_container, context)`` is true.

    ``self`` is this wrapper (its ``wrapped``, ``hyperparams`` and ``is_train`` are at
    hand). The condition is evaluated on every fit and transform. It is saved with the
    step (by value when it is a lambda or defined in ``__main__``).
    """

    def __init__(self, condition_fn, wrapped, name=None, savers=None):
        if not callable(condition_fn):
            raise TypeError(f"ExecuteIf needs a callable condition, got {type(condition_fn).__name__}")
        super().__init__(wrapped, name=name, savers=savers)
        self.condition_fn = condition_fn

    def _should_run(self, data_container, context) -> bool:
        return bool(self.condition_fn(self, data_container, context))


class OptionalStep(_ConditionalWrapper):
    """Runs the wrapped step when the hyperparameter ``enabled`` is true (space: ``Boolean()``).

    ``Pipeline([("opt", OptionalStep(step))]).set_hyperparams({"opt__enabled": False})``
    turns it off: data then passes through and the step is not fitted.
    """

    def __init__(self, wrapped, enabled: bool = True, name=None, savers=None, nullified_return_value=None):
        super().__init__(wrapped, hyperparams={"enabled": bool(enabled)},
                         hyperparams_space={"enabled": Boolean()}, name=name, savers=savers)
        self.nullified_return_value = nullified_return_value

    def _should_run(self, data_container, context) -> bool:
        return bool(self.hyperparams["enabled"])

    def _skipped(self, data_container):
        """Disabled: data passes through, or becomes ``nullified_return_value`` when one was given."""
        if self.__dict__.get("nullified_return_value") is not None:
            data_container.data_inputs = copy.copy(self.nullified_return_value)
            data_container.expected_outputs = copy.copy(self.nullified_return_value)
        return data_container


def _replace_child(owner: TruncableSteps, old, new) -> None:
    """Keep ``new`` (a fitted ``old``) in ``old``'s place, under ``old``'s name."""
    owner._keep_fitted([new if s is old else s for s in owner.steps_as_tuple])


class ChooseOneStepOf(TruncableSteps):
    """Holds several steps; the hyperparameter ``choice`` (a ``Choice`` of their names) picks one.

    Only the chosen step is fitted and run. The default choice is the first step.
    ``ChooseOneStepOf([("a", A()), ("b", B())]).set_hyperparams({"choice": "b"})``.
    """

    def __init__(self, steps, hyperparams=None, hyperparams_space=None, name=None, savers=None):
        super().__init__(steps, hyperparams=hyperparams, hyperparams_space=hyperparams_space,
                         name=name, savers=savers)
        if not self.steps_as_tuple:
            raise ValueError("ChooseOneStepOf needs at least one step")
        if "choice" in self.keys():
            raise ValueError("ChooseOneStepOf: no step may be named 'choice' (the hyperparameter's name)")
        self.hyperparams_space["choice"] = Choice(self.keys())
        choice = {"choice": self.hyperparams.get("choice", self.keys()[0])}
        self._validate_values(choice)
        self.hyperparams.update(choice)

    def append(self, step) -> ChooseOneStepOf:
        """Add a step that may then be chosen; returns self."""
        super().append(step)
        self.hyperparams_space["choice"] = Choice(self.keys())
        return self

    def chosen(self):
        """The step that ``choice`` names."""
        return self[self.hyperparams["choice"]]

    def handle_fit(self, data_container, context):
        step = self.chosen()
        _replace_child(self, step, step.handle_fit(data_container, context.push(self)))
        return self

    def handle_transform(self, data_container, context):
        return self.chosen().handle_transform(data_container, context.push(self))

    def handle_fit_transform(self, data_container, context):
        step = self.chosen()
        fitted, data_container = step.handle_fit_transform(data_container, context.push(self))
        _replace_child(self, step, fitted)
        return self, data_container


class ReversiblePreprocessingWrapper(TruncableSteps):
    """Preprocess, postprocess, then map the result back with the preprocessing's inverse.

    Contract: ``preprocessing_step`` has ``inverse_transform(outputs)`` that undoes its
    ``transform`` (e.g. ``MultiplyByN``, a scaler); ``postprocessing_step`` works in the
    preprocessed space and returns data that ``inverse_transform`` accepts. ``transform``
    returns ``pre.inverse_transform(post.transform(pre.transform(x)))``. Fitting fits the
    preprocessing on the inputs, then the postprocessing on the preprocessed inputs.
    Expected outputs are passed to both steps unchanged. The children are named
    ``"preprocessing_step"`` and ``"postprocessing_step"`` (hyperparameter keys use them).
    """

    def __init__(self, preprocessing_step, postprocessing_step, name=None, savers=None):
        if not callable(getattr(preprocessing_step, "inverse_transform", None)):
            raise TypeError(f"ReversiblePreprocessingWrapper: the preprocessing step "
                            f"{type(preprocessing_step).__name__} has no inverse_transform")
        super().__init__([("preprocessing_step", preprocessing_step),
                          ("postprocessing_step", postprocessing_step)], name=name, savers=savers)

    def handle_fit(self, data_container, context):
        context = context.push(self)
        pre, post = self.steps_as_tuple
        fitted_pre, data_container = pre.handle_fit_transform(data_container, context)
        fitted_post = post.handle_fit(data_container, context)
        _replace_child(self, pre, fitted_pre)
        _replace_child(self, post, fitted_post)
        return self

    def handle_transform(self, data_container, context):
        context = context.push(self)
        pre, post = self.steps_as_tuple
        data_container = post.handle_transform(pre.handle_transform(data_container, context), context)
        data_container.data_inputs = pre.inverse_transform(data_container.data_inputs)
        return data_container

    def handle_fit_transform(self, data_container, context):
        context = context.push(self)
        pre, post = self.steps_as_tuple
        fitted_pre, data_container = pre.handle_fit_transform(data_container, context)
        fitted_post, data_container = post.handle_fit_transform(data_container, context)
        _replace_child(self, pre, fitted_pre)
        _replace_child(self, post, fitted_post)
        data_container.data_inputs = fitted_pre.inverse_transform(data_container.data_inputs)
        return self, data_container


__all__ = ["TrainOrTestOnlyWrapper", "TrainOnlyWrapper", "TestOnlyWrapper", "ExecuteIf", "OptionalStep",
           "ChooseOneStepOf", "ReversiblePreprocessingWrapper"]


# Neuraxle's other flow steps live in stepline.steps.phases; importable from here too.
from stepline.steps.phases import (ChooseOneOrManyStepsOf, ExecutionPhaseSwitch, ExpandDim,  # noqa: E402
                                   IfExecutionPhaseIsThen)
