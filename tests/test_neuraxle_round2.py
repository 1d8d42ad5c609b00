"""Neuraxle habits that port: a fit_transform calling its own transform, queued pipelines that
drop or keep the incomplete last batch, the distributions' Neuraxle conventions."""
import threading

import numpy as np
import pytest

from stepline.base import BaseStep
from stepline.core.errors import NotFittedError
from stepline.pipeline import Pipeline


class RecordsFits(BaseStep):
    """A learning step (it defines ``fit``) whose ``fit_transform`` calls its own ``transform``."""

    def __init__(self):
        BaseStep.__init__(self)
        self.fitted_on = []

    def fit(self, data_inputs, expected_outputs=None):
        self.fitted_on.append(list(data_inputs))
        return self

    def fit_transform(self, data_inputs, expected_outputs=None):
        self.fitted_on.append(list(data_inputs))
        return self, self.transform(data_inputs)

    def transform(self, data_inputs):
        return np.asarray(data_inputs) * 2


def test_fit_transform_may_call_its_own_transform():
    step, out = RecordsFits().fit_transform([1, 2, 3])
    np.testing.assert_array_equal(out, [2, 4, 6])
    assert step.fitted_on == [[1, 2, 3]] and step.is_fitted
    p, out = Pipeline([RecordsFits()]).fit_transform([1, 2])
    np.testing.assert_array_equal(out, [2, 4])


def test_transform_before_fit_still_refused_outside_fit():
    with pytest.raises(NotFittedError, match="RecordsFits"):
        RecordsFits().transform([1, 2])


def test_another_thread_is_refused_while_one_fits():
    inside, release, seen = threading.Event(), threading.Event(), []

    class SlowFit(RecordsFits):
        def fit(self, data_inputs, expected_outputs=None):
            inside.set()
            release.wait(10)
            return self

    step = SlowFit()
    fitter = threading.Thread(target=step.fit, args=([1],))
    fitter.start()
    assert inside.wait(10)
    try:
        step.transform([1])
    except NotFittedError as e:
        seen.append(e)
    finally:
        release.set()
        fitter.join(10)
    assert seen, "a transform from another thread while fit runs must not see a fitted step"
    np.testing.assert_array_equal(step.transform([1]), [2])


# ------------------------------------------------------------------ streaming: the last batch
@pytest.mark.timeout(60)
@pytest.mark.parametrize("cls", ["SequentialQueuedPipeline", "ParallelQueuedFeatureUnion"])
def test_queued_steps_drop_the_incomplete_batch_when_asked(cls):
    from stepline.data_container import DACT
    from stepline.distributed import streaming
    from stepline.steps.numpy import MultiplyByN
    make = getattr(streaming, cls)
    p = make([MultiplyByN(2), MultiplyByN(3)], batch_size=10, keep_incomplete_batch=False, use_processes=False)
    with p:
        out = p.handle_transform(DACT(di=np.arange(15), ids=list("abcdefghijklmno")), None)
        assert len(out.di) == 10 and list(out.ids) == list("abcdefghij")
        kept = make([MultiplyByN(2)], batch_size=10, use_processes=False)
        with kept:
            assert len(kept.transform(np.arange(15))) == 15  # the default keeps it, short
            _, out = kept.fit_transform(np.arange(15), np.arange(15))  # one branch, streamed
            assert len(out) == 15


def test_queued_steps_never_pad_and_say_so():
    from stepline.data_container import StripAbsentValues
    from stepline.distributed.streaming import SequentialQueuedPipeline
    from stepline.steps.numpy import MultiplyByN
    p = SequentialQueuedPipeline([MultiplyByN(2)], batch_size=10, use_processes=False,
                                 default_value_data_inputs=StripAbsentValues(),
                                 default_value_expected_outputs=StripAbsentValues())
    with p:
        np.testing.assert_array_equal(p.transform(np.arange(15)), np.arange(15) * 2)
    with pytest.raises(ValueError, match="default_value_data_inputs=0.*does not pad"):
        SequentialQueuedPipeline([MultiplyByN(2)], batch_size=10, default_value_data_inputs=0)


# ------------------------------------------------------------------ distributions
def test_boolean_reads_zero_and_one_as_false_and_true():
    from stepline.hyperparams.distributions import Boolean
    hd = Boolean(proba_is_true=0.7)
    assert hd.pdf(1.0) == hd.pdf(True) == 0.7 and abs(hd.pdf(0) - 0.3) < 1e-12 and hd.pdf(False) == hd.pdf(0.0)
    assert hd.pdf(0.5) == 0.0 and hd.pdf(-0.1) == 0.0 and hd.pdf("yes") == 0.0
    assert hd.cdf(-0.1) == 0.0 and abs(hd.cdf(False) - 0.3) < 1e-12 and abs(hd.cdf(0.5) - 0.3) < 1e-12
    assert hd.cdf(True) == hd.cdf(1.1) == 1.0
    with pytest.raises(ValueError, match="Boolean.cdf"):
        hd.cdf("x")


# ------------------------------------------------------------------ context.logger history
def test_context_logger_keeps_its_lines_and_still_logs(caplog):
    import logging
    from stepline.base import ExecutionContext as CX
    cx = CX()
    with caplog.at_level(logging.INFO, logger="stepline"):
        cx.logger.info("trained %d models", 3)
        cx.logger.debug("not kept")
    assert "trained 3 models" in list(CX().logger)  # one history per process, as Neuraxle's root history
    assert "not kept" not in list(cx.logger)
    assert "trained 3 models" in cx.logger.get_root_string_history().split("\n")
    assert "trained 3 models" in caplog.text  # still a logging logger


@pytest.mark.timeout(60)
@pytest.mark.parametrize("use_processes", [False, True], ids=["threads", "processes"])
@pytest.mark.parametrize("cls", ["SequentialQueuedPipeline", "ParallelQueuedFeatureUnion"])
def test_streamed_steps_log_into_the_callers_history(cls, use_processes):
    from stepline.base import ExecutionContext as CX
    from stepline.distributed import streaming
    from stepline.steps.misc import TransformOnlyCounterLoggingStep
    names = [f"hist-{cls}-{use_processes}-{i}" for i in range(2)]
    p = getattr(streaming, cls)([TransformOnlyCounterLoggingStep(name=n) for n in names], batch_size=5,
                                n_workers_per_step=2, use_processes=use_processes)
    with p:
        p.transform(list(range(10)))
    history = list(CX().logger)
    for name in names:
        assert any(line.startswith(f"{name} - transform call - logging call #") for line in history), history[-10:]


def test_a_frozen_scipy_distribution_in_a_space_is_searched_not_fixed():
    from scipy import stats
    from stepline.hyperparams.scipy_distributions import (ScipyContinuousDistributionWrapper,
                                                          ScipyDiscreteDistributionWrapper)
    from stepline.hyperparams.space import HyperparameterSpace
    space = HyperparameterSpace({"n": stats.randint(low=2, high=5), "g": stats.gamma(0.2), "fixed": 3})
    assert isinstance(space["n"], ScipyDiscreteDistributionWrapper)
    assert isinstance(space["g"], ScipyContinuousDistributionWrapper)
    assert {space["n"].rvs() for _ in range(50)} <= {2, 3, 4} and isinstance(space["g"].rvs(), float)
    assert space["fixed"].rvs() == 3


# ------------------------------------------------------------------ Neuraxle's hand-driven workers
@pytest.mark.timeout(60)
@pytest.mark.parametrize("use_processes", [False, True], ids=["threads", "processes"])
@pytest.mark.parametrize("n_batches", [0, 3])
def test_parallel_workers_wrapper_and_joiner_run_minibatches_in_workers(use_processes, n_batches):
    from stepline.base import ExecutionContext as CX
    from stepline.data_container import DACT
    from stepline.distributed.streaming import ParallelWorkersWrapper, QueuedMinibatchTask, WorkersJoiner
    from stepline.steps.numpy import MultiplyByN
    cx = CX()
    worker = ParallelWorkersWrapper(MultiplyByN(3), n_workers=2, use_processes=use_processes)
    joiner = WorkersJoiner(batch_size=4, n_worker_wrappers_to_join=1)
    worker.register_consumer(joiner)
    worker.start(cx)
    try:
        whole = DACT(di=np.arange(4 * n_batches), ids=[f"id{i}" for i in range(4 * n_batches)])
        for i in range(n_batches):
            worker.put_minibatch_produced(QueuedMinibatchTask(DACT(di=np.arange(4 * i, 4 * i + 4)), "MultiplyByN"))
        joiner.set_join_quantities(1, n_batches)
        out = joiner.join_workers(whole, cx)
        np.testing.assert_array_equal(out.di, np.arange(4 * n_batches) * 3)
        assert list(out.ids) == list(whole.ids)
        if use_processes and n_batches:
            assert worker._pipeline.consumers and all(w.pid for w in worker._pipeline.consumers)
        joiner.set_join_quantities(1, 1)
        with pytest.raises(ValueError, match="expected 1 minibatches, got 0"):
            joiner.join_workers(DACT(di=[]), cx)
    finally:
        worker.join()
        worker.teardown()
    assert worker._pipeline.consumers == []


# ------------------------------------------------------------------ config and contexts as service trees
def test_config_routes_by_path_and_is_not_a_hyperparameter():
    from stepline.base import Identity
    p = Pipeline([Identity().set_name("step_1").set_config({"c2": 2}), Identity().set_name("step_2")])
    p.update_config({"c1": 1, "step_2__c3": 3})
    config = p.get_config()
    assert config["c1"] == 1 and config["step_1"]["c2"] == 2 and config["step_2"]["c3"] == 3
    assert config.to_flat_dict() == {"c1": 1, "step_1__c2": 2, "step_2__c3": 3}
    assert "c1" not in p.get_hyperparams().to_flat_dict()
    p.set_config({"c9": 9})
    assert p.get_config()["c9"] == 9 and "c1" not in p.get_config().to_flat_dict()
    with pytest.raises(KeyError, match="no child 'nope'.*step_1"):
        p.set_config({"nope__x": 1})


def test_context_apply_visits_the_context_then_its_step_services():
    from stepline.base import ExecutionContext as CX
    from stepline.base import Identity
    from stepline.hyperparams.space import RecursiveDict
    names = CX().apply(lambda s: RecursiveDict({"name": s.get_name()}))
    assert names.to_flat_dict() == {"name": "ExecutionContext"}
    cx = CX().set_service_locator({Identity: Identity(name="ident"), str: "not a step"})
    names = cx.apply(lambda s: RecursiveDict({"name": s.get_name()}))
    assert names["name"] == "ExecutionContext" and names["ident"]["name"] == "ident"
    assert [s.name for s in cx.get_children()] == ["ident"]


def test_an_unknown_hyperparameter_is_also_a_key_error():
    from stepline.base import Identity
    from stepline.core.errors import HyperparameterError
    from stepline.hyperparams.distributions import RandInt
    from stepline.hyperparams.space import HyperparameterSpace
    p = Pipeline([Identity(hyperparams_space=HyperparameterSpace({"k": RandInt(1, 3)})).set_name("step_1")])
    for bad in ({"step_3__hp": 2}, {"step_1__typo": 1}):
        with pytest.raises(KeyError) as caught:
            p.set_hyperparams(bad)
        assert isinstance(caught.value, HyperparameterError)
        assert str(caught.value).startswith("step '")  # a message, not a quoted key


def test_wildcards_are_the_shortest_unambiguous_names():
    from stepline.hyperparams.distributions import RandInt
    from stepline.hyperparams.space import HyperparameterSpace
    keys = ["model__layer__units", "model__layer__drop__units", "model__head__drop__units", "model__units",
            "prep__scale", "lr", "opt__lr__decay", "opt__opt__decay"]
    space = HyperparameterSpace({k: RandInt(1, 2 + i) for i, k in enumerate(keys)})
    wildcards = space.to_wildcards()
    assert list(wildcards) == ["*layer__units", "*layer*units", "*head*units", "model__units", "*scale", "lr",
                               "*lr__decay", "*opt__decay"]
    assert list(wildcards.values()) == list(space.to_flat_dict().values())


def test_apply_update_hyperparams_reaches_each_step_by_path():
    from stepline.steps.flow import ChooseOneStepOf
    from stepline.steps.numpy import MultiplyByN
    choose = ChooseOneStepOf([("a", MultiplyByN(2)), ("b", MultiplyByN(3))])
    p = Pipeline([choose])
    np.testing.assert_array_equal(p.transform(np.ones(2)), [2, 2])
    choose.apply("_update_hyperparams", hyperparams={"choice": "b", "b__multiply_by": 5})
    np.testing.assert_array_equal(p.transform(np.ones(2)), [5, 5])
    assert p.get_hyperparams()["ChooseOneStepOf__a__multiply_by"] == 2  # kept: update, not set
