"""Exceptions raised by stepline's core: every message names the step or path at fault."""


class SteplineError(Exception):
    """Base class of stepline's own errors."""


class NotFittedError(SteplineError, ValueError, AttributeError):
    """A step that needs fitting was used before it was fitted.

    Subclasses ``ValueError`` and ``AttributeError`` like scikit-learn's error of
    the same name, so code that catches one catches the other.
    """


class InvalidStepNameError(SteplineError, ValueError):
    """A step name is empty, not a string, or would break a path."""


class DuplicateStepNameError(SteplineError, ValueError):
    """Two steps of one pipeline were given the same explicit name."""


class HyperparameterError(SteplineError, ValueError):
    """A hyperparameter name is unknown or its value lies outside its space."""


class UnknownHyperparameterError(HyperparameterError, KeyError):
    """A hyperparameter name (or a path to a child) that the step does not have.

    Also a ``KeyError``, as Neuraxle raises for it: ported code that catches ``KeyError``
    catches it. Its message reads as a plain message (not as a quoted key).
    """

    __str__ = BaseException.__str__
