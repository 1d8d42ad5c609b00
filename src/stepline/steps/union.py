"""``FeatureUnion``: branches that see the same inputs, outputs joined side by side."""
from __future__ import annotations

import contextvars
import os
from concurrent.futures import ThreadPoolExecutor

from stepline.core.composite import TruncableSteps
from stepline.core.data import DataContainer
from stepline.core.step import BaseTransformer
from stepline.steps.numpy import concatenate_inner_features


class FeatureUnion(TruncableSteps):
    """Runs every branch on the same inputs and joins the outputs in branch order.

    ``FeatureUnion([branch, ("name", branch), …], joiner=None, n_jobs=None)``. Each
    branch gets its own shallow copy of the data container, so a branch cannot change
    what the others see. By default the outputs are concatenated along their last axis
    (1-D outputs count as one column); a ``joiner`` step instead receives the list of
    outputs as its data inputs (it is a child named ``"joiner"`` unless named otherwise,
    and is fitted, in ``fit_transform`` and ``fit``, on the branches' outputs). Expected
    outputs pass through unchanged.

    ``n_jobs`` > 1 (or -1 for one per CPU) runs the branches in threads of a pool created
    by ``setup`` and shut down by ``teardown``. Threads pay off when the branches spend
    their time in code that releases the GIL (NumPy, scikit-learn, most deep-learning
    libraries); for pure-Python branches they only add overhead. Branches must not share
    mutable objects.
    """

    joiner = None
    _executor = None

    def __init__(self, steps=(), joiner=None, n_jobs=None, hyperparams=None, hyperparams_space=None,
                 name=None, savers=None):
        super().__init__(steps, hyperparams=hyperparams, hyperparams_space=hyperparams_space,
                         name=name, savers=savers)
        if not self.steps_as_tuple:
            raise ValueError("FeatureUnion needs at least one branch")
        if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, int)
                                   or n_jobs == 0 or n_jobs < -1):
            raise ValueError(f"FeatureUnion: n_jobs must be None, -1 or an int >= 1, got {n_jobs!r}")
        self.n_jobs = n_jobs
        self.joiner = self._check_joiner(joiner)

    def _check_joiner(self, joiner):
        if joiner is None:
            return None
        if not isinstance(joiner, BaseTransformer):
            raise TypeError(f"FeatureUnion: joiner must be a step, got {type(joiner).__name__}")
        if joiner._has_default_name:
            joiner.name = "joiner"
        if joiner.name in self.keys():
            raise ValueError(f"FeatureUnion: the joiner's name {joiner.name!r} is also a branch's name")
        return joiner

    # -- children: the branches, then the joiner when there is one
    def get_children(self) -> tuple:
        if self.joiner is None:
            return self.steps_as_tuple
        return self.steps_as_tuple + (self.joiner,)

    def _set_children(self, children: list) -> None:
        if self.joiner is None:
            self._set_steps(children)
        else:
            *branches, self.joiner = children
            self._set_steps(branches)

    def _child_by_name(self, name: str):
        if self.joiner is not None and self.joiner.name == name:
            return self.joiner
        return super()._child_by_name(name)

    # -- lifecycle: the thread pool
    def _workers(self) -> int:
        n_jobs = self.n_jobs
        if n_jobs == -1:
            n_jobs = os.cpu_count() or 1
        return min(n_jobs or 1, len(self.steps_as_tuple))

    def setup(self, context=None):
        """Set up the children, and the thread pool when ``n_jobs`` > 1."""
        super().setup(context)
        if self._workers() > 1 and self._executor is None:
            self._executor = ThreadPoolExecutor(self._workers(), thread_name_prefix=f"stepline-{self.name}")
        return self

    def teardown(self):
        """Tear down the children and shut the thread pool down."""
        super().teardown()
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        return self

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_executor", None)  # a pool is not saved state: setup makes a new one
        return state

    def _map(self, fn):
        """``[fn(branch) for branch in branches]``, in threads when ``n_jobs`` > 1."""
        branches = self.steps_as_tuple
        workers = self._workers()
        if workers <= 1:
            return [fn(branch) for branch in branches]
        if self._executor is not None:
            return _in_threads(self._executor, fn, branches)
        with ThreadPoolExecutor(workers) as executor:
            return _in_threads(executor, fn, branches)

    # -- data flow
    def _join(self, outputs: list, data_container, context, fit: bool):
        if self.joiner is None:
            data_container.data_inputs = concatenate_inner_features(outputs)
            return data_container
        joined = DataContainer(outputs, data_container.expected_outputs, data_container.ids)
        if fit:
            self.joiner, joined = self.joiner.handle_fit_transform(joined, context)
        else:
            joined = self.joiner.handle_transform(joined, context)
        data_container.data_inputs = joined.data_inputs
        return data_container

    def handle_fit(self, data_container, context):
        if self.joiner is not None and self.joiner._needs_fit:
            return self.handle_fit_transform(data_container, context)[0]
        context = context.push(self)
        self._keep_fitted(self._map(lambda branch: branch.handle_fit(data_container.copy(), context)))
        return self

    def handle_transform(self, data_container, context):
        context = context.push(self)
        outputs = self._map(lambda branch: branch.handle_transform(data_container.copy(), context).data_inputs)
        return self._join(outputs, data_container, context, fit=False)

    def handle_fit_transform(self, data_container, context):
        context = context.push(self)
        results = self._map(lambda branch: branch.handle_fit_transform(data_container.copy(), context))
        self._keep_fitted([step for step, _ in results])
        return self, self._join([dc.data_inputs for _, dc in results], data_container, context, fit=True)


def _in_threads(executor, fn, branches) -> list:
    """``[fn(b) for b in branches]`` in the pool, each under a copy of the caller's context
    variables, so the call's mode (``predict``'s inference) reaches every branch."""
    futures = [executor.submit(contextvars.copy_context().run, fn, branch) for branch in branches]
    return [future.result() for future in futures]


__all__ = ["FeatureUnion"]
