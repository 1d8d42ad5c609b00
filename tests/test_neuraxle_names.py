"""Neuraxle 0.8.1's names and their behaviour: ported code runs after renaming its imports."""
import logging
import pickle

import numpy as np
import pytest

from stepline.base import (AssertExpectedOutputIsNone, BaseService, BaseStep, BaseTransformer, ExecutionContext,
                           ExecutionMode, ExecutionPhase, ForceHandleIdentity, ForceHandleMixin, HandleOnlyMixin,
                           Identity, MetaStep, NamedStepsList, NonFittableMixin, StepWithContext,
                           TruncableJoblibStepSaver)
from stepline.data_container import (DACT, ExpandedDataContainer, ListDataContainer, StripAbsentValues,
                                     ZipDataContainer)
from stepline.pipeline import Joiner, MiniBatchSequentialPipeline, Pipeline
from stepline.steps.flow import (ChooseOneOrManyStepsOf, ExecutionPhaseSwitch, ExpandDim, IfExecutionPhaseIsThen,
                                 OptionalStep)
from stepline.steps.loop import FlattenForEach, ForEach, StepClonerForEachDataInput
from stepline.steps.misc import (AssertFalseStep, CallbackWrapper, FitCallbackStep, FitTransformCallbackStep,
                                 HandleCallbackStep, Sleep, TapeCallbackFunction, TransformCallbackStep,
                                 TransformOnlyCounterLoggingStep)
from stepline.steps.numpy import AddN, MultiplyByN, NumpyFFT, NumpyFlattenDatum, OneHotEncoder, ToList
from stepline.union import AddFeatures, FeatureUnion, ModelStacking, ZipFeatures

X = np.arange(12.0).reshape(6, 2)


# ------------------------------------------------------------------ data containers
def test_dact_takes_neuraxles_argument_order_and_short_names():
    dact = DACT([10, 20, 30], ["a", "b", "c"], [1, 2, 3])
    assert dact.ids == ["a", "b", "c"] and dact.di == [10, 20, 30] and dact.eo == [1, 2, 3]
    assert DACT(di=[5, 6]).ids == [0, 1] and DACT(di=[5, 6]).eo == [None, None]
    assert list(DACT(di=[5, 6], eo=[7, 8])) == [(0, 5, 7), (1, 6, 8)]
    assert DACT.from_di([1, 2]).di == [1, 2] and len(DACT.from_di([1, 2, 3])) == 3
    assert dact[1] == ("b", 20, 2) and dact.unpack() == (["a", "b", "c"], [10, 20, 30], [1, 2, 3])


def test_dact_minibatches_pad_strip_or_drop_the_last_batch():
    dact = DACT(di=np.arange(7), eo=np.arange(10, 17))
    assert [list(b.di) for b in dact.minibatches(3)] == [[0, 1, 2], [3, 4, 5], [6, None, None]]  # as Neuraxle
    assert [list(b.di) for b in dact.minibatches(3, keep_incomplete_batch=False)] == [[0, 1, 2], [3, 4, 5]]
    padded = list(dact.minibatches(3, default_value_data_inputs=0, default_value_expected_outputs=-1))
    assert list(padded[-1].di) == [6, 0, 0] and list(padded[-1].eo) == [16, -1, -1]
    stripped = list(dact.minibatches(3, default_value_data_inputs=StripAbsentValues()))
    assert list(stripped[-1].di) == [6] and dact.get_n_batches(3) == 3


def test_dact_sub_containers_by_name():
    dact = DACT(di=[1, 2]).add_sub_data_container("extra", DACT(di=[3, 4]))
    assert "extra" in dact and dact["extra"].di == [3, 4] and dact.get_sub_data_container_names() == ["extra"]
    with pytest.raises(KeyError, match="no sub data container named 'nope'"):
        dact["nope"]


def test_zip_list_and_expanded_containers():
    a, b = DACT(di=np.ones((4, 3, 2))), DACT(di=np.zeros((4, 3)))
    zipped = ZipDataContainer.create_from(a, b)
    assert len(zipped.di) == 4 and zipped.di[0][1].shape == (3,)
    assert np.asarray(zipped.concatenate_inner_features().di).shape == (4, 3, 3)
    grown = ListDataContainer(ids=["a"], di=[1], eo=[2]).extend(DACT(ids=["b"], di=[3], eo=[4]))
    assert (grown.ids, grown.di, grown.eo) == (["a", "b"], [1, 3], [2, 4])
    expanded = ExpandedDataContainer.create_from(DACT(di=[1, 2, 3]))
    assert len(expanded.di) == 1 and expanded.reduce_dim().di == [1, 2, 3]


def test_handlers_take_a_dact():
    out = Pipeline([MultiplyByN(2)]).handle_transform(DACT(di=np.array([1, 2])), ExecutionContext())
    assert list(out.data_inputs) == [2, 4]


# ------------------------------------------------------------------ base names
def test_base_names_are_stepline_concepts():
    assert BaseService is BaseTransformer and issubclass(TruncableJoblibStepSaver, object)
    assert ExecutionMode.FIT_TRANSFORM.value == "fit_transform"
    assert NamedStepsList is not None


def test_execution_context_services_are_shared_with_pushed_contexts():
    cx = ExecutionContext().register_service(dict, {"k": 1})
    child = cx.push(Identity())
    assert child.has_service(dict) and child.get_service(dict) == {"k": 1}
    cx.set_service_locator({"db": "sqlite"})
    assert child.get_service("db") == "sqlite" and not child.has_service(dict)
    with pytest.raises(KeyError, match="no service registered for 'nope'"):
        child.get_service("nope")


def test_with_context_binds_the_context_for_plain_calls_and_save(tmp_path):
    p = Pipeline([MultiplyByN(3)]).set_name("p").with_context(ExecutionContext(tmp_path))
    assert isinstance(p, StepWithContext)
    p = p.fit(X)
    p.save()
    assert np.array_equal(ExecutionContext(tmp_path).load("p").transform(X), X * 3)


class _Recording(ForceHandleIdentity):
    def __init__(self):
        super().__init__()
        self.seen = []

    def _will_process(self, data_container, context):
        self.seen.append(context.execution_mode)
        return data_container, context


def test_force_handle_identity_routes_plain_calls_through_hooks():
    step = _Recording()
    step.fit_transform(X, X)
    step.transform(X)
    assert step.seen == [ExecutionMode.FIT_TRANSFORM, ExecutionMode.TRANSFORM]


def test_force_handle_mixin_names_the_missing_hook():
    class Incomplete(ForceHandleMixin, BaseStep):
        def __init__(self):
            BaseStep.__init__(self)
            ForceHandleMixin.__init__(self)

    with pytest.raises(NotImplementedError, match="Please define _fit_data_container in Incomplete"):
        Incomplete()


def test_handle_only_mixin_refuses_plain_calls():
    class OnlyHandles(NonFittableMixin, HandleOnlyMixin, BaseStep):
        def _transform_data_container(self, data_container, context):
            data_container.data_inputs = [d + 1 for d in data_container.data_inputs]
            return data_container

    with pytest.raises(RuntimeError, match="call handle_transform"):
        OnlyHandles().transform([1])
    assert Pipeline([OnlyHandles()]).transform([1, 2]) == [2, 3]


def test_neuraxle_style_hooks_on_a_plain_step():
    class Doubler(NonFittableMixin, BaseStep):
        def _transform_data_container(self, data_container, context):
            data_container.data_inputs = np.asarray(data_container.data_inputs) * 2
            return data_container

    assert list(Pipeline([Doubler()]).transform([1, 2])) == [2, 4]
    assert list(Doubler().transform([1, 2])) == [2, 4]  # plain calls go through the hook too


def test_assertion_steps_raise_except_in_prod(caplog):
    with pytest.raises(AssertionError, match="expected outputs should be None"):
        Pipeline([AssertExpectedOutputIsNone()]).fit_transform(X, X)
    Pipeline([AssertExpectedOutputIsNone()]).fit_transform(X, None)
    prod = ExecutionContext(execution_phase=ExecutionPhase.PROD)
    with caplog.at_level(logging.ERROR):
        AssertExpectedOutputIsNone().handle_transform(DACT(di=X, eo=X), prod)
    assert "expected outputs should be None" in caplog.text


# ------------------------------------------------------------------ pipelines
def test_inverse_transform_undoes_the_steps_in_reverse():
    p = Pipeline([MultiplyByN(2), AddN(1), Identity()])
    assert np.allclose(p.inverse_transform(p.transform(X)), X)


def test_slicing_by_step_name():
    p = Pipeline([("a", Identity()), ("b", Identity()), ("c", Identity())])
    assert p["b":].keys() == ["b", "c"] and p[:"c"].keys() == ["a", "b"] and p["b":"c"].keys() == ["b"]
    with pytest.raises(KeyError, match="no step named 'z'"):
        p["z":]


class _TwoWays(NonFittableMixin, BaseStep):
    def transform(self, data_inputs):
        return "a"

    def transform_b(self, data_inputs):
        return "b"


def test_mutate_and_will_mutate_to():
    p = Pipeline([_TwoWays()])
    assert p.mutate(new_method="transform_b", method_to_assign_to="transform").transform([0]) == "b"
    assert p.transform([0]) == "a"  # the original is unchanged
    q = Pipeline([_TwoWays().will_mutate_to(Identity())]).mutate()
    assert q.transform([7]) == [7]


def test_apply_in_neuraxles_forms():
    p = Pipeline([("a", Identity()), ("b", Identity())])
    names = p.apply(lambda step: {"name": step.name})
    assert names["name"] == "Pipeline" and names["a"]["name"] == "a"
    assert p.apply("get_name")["b"] == "b"


def test_a_step_that_declares_no_hyperparams_takes_any_name():
    p = Pipeline([("a", Identity()), ("m", MultiplyByN(2))])
    p.set_hyperparams({"a__learning_rate": 0.1})
    assert p["a"].hyperparams["learning_rate"] == 0.1
    with pytest.raises(Exception, match="multiply_byy"):
        p.set_hyperparams({"m__multiply_byy": 3})  # a declared step still refuses typos


def test_minibatch_pipeline_with_joiner_barriers():
    tape = TapeCallbackFunction()
    p = MiniBatchSequentialPipeline([TransformCallbackStep(tape), MultiplyByN(2), Joiner(batch_size=3)])
    assert list(p.transform(list(range(6)))) == [0, 2, 4, 6, 8, 10]
    assert [list(d) for d in tape.data] == [[0, 1, 2], [3, 4, 5]]
    p = MiniBatchSequentialPipeline([TransformCallbackStep(tape.reset()), Joiner(batch_size=3,
                                                                                default_value_data_inputs=-1)])
    assert list(p.transform(list(range(4)))) == [0, 1, 2, 3]  # the padding never comes out
    assert [list(d) for d in tape.data] == [[0, 1, 2], [3, -1, -1]]
    tail = MiniBatchSequentialPipeline([MultiplyByN(2), Joiner(batch_size=3), MultiplyByN(3)])
    assert list(tail.transform(list(range(6)))) == [0, 6, 12, 18, 24, 30]  # after the last Joiner: all rows at once


def test_streaming_stage_of_four():
    from stepline.distributed.streaming import SequentialQueuedPipeline
    p = SequentialQueuedPipeline([("double", 2, 3, MultiplyByN(2))], batch_size=2, use_processes=False)
    assert p.workers_per_stage == {"double": 2} and p.max_queued_minibatches == 3
    assert list(p.transform(list(range(5)))) == [0, 2, 4, 6, 8]


# ------------------------------------------------------------------ steps.misc
def test_callback_steps_record_calls():
    fit_tape, tr_tape = TapeCallbackFunction(), TapeCallbackFunction()
    p = Pipeline([FitCallbackStep(fit_tape, ["f"]), FitTransformCallbackStep(tr_tape, fit_tape, ["ft"])])
    p.fit_transform([1, 2], [3, 4])
    assert fit_tape.get_name_tape() == ["f", "ft"] and tr_tape.get_data() == [[1, 2]]
    tape = TapeCallbackFunction()
    Pipeline([TransformCallbackStep(tape, ["1"]), TransformCallbackStep(tape, ["2"])]).transform([0])
    assert tape.get_name_tape() == ["1", "2"]


def test_callback_wrapper_and_handle_callback():
    t, f = TapeCallbackFunction(), TapeCallbackFunction()
    w = CallbackWrapper(MultiplyByN(2), t, f)
    _, out = w.fit_transform(np.array([1, 2]), None)
    assert list(out) == [2, 4] and len(t.data) == 1 and len(f.data) == 1
    calls = []
    HandleCallbackStep(calls.append, calls.append, calls.append).fit_transform([1])
    assert isinstance(calls[0][0], DACT)


def test_assert_false_sleep_and_counter():
    with pytest.raises(AssertionError, match="never"):
        Pipeline([AssertFalseStep("never")]).transform([1])
    assert Sleep(sleep_time=0.0).transform([1]) == [1]
    counter = TransformOnlyCounterLoggingStep()
    Pipeline([counter]).transform([1])
    assert counter.logging_call_counter == 1


# ------------------------------------------------------------------ loops and unions
def test_for_each_and_step_cloner():
    tape = TapeCallbackFunction()
    Pipeline([ForEach(FitCallbackStep(tape))]).fit([[0, 1], [2, 3]], [[4, 5], [6, 7]])
    assert tape.data == [([0, 1], [4, 5]), ([2, 3], [6, 7])]
    cloner = StepClonerForEachDataInput(MultiplyByN(2))
    cloner, out = cloner.fit_transform(np.ones((3, 2)), np.ones((3, 2)))
    assert len(cloner) == 3 and cloner.keys()[0] == "MultiplyByN[0]" and np.allclose(out, 2)
    assert np.allclose(cloner.inverse_transform(out), 1)


def test_flatten_for_each_and_expand_dim():
    data = np.arange(12.0).reshape(3, 4)
    assert FlattenForEach(MultiplyByN(2)).transform(data).shape == (3, 4)
    assert FlattenForEach(MultiplyByN(2), then_unflatten=False).transform(data).shape == (12,)
    tape = TapeCallbackFunction()
    out = ExpandDim(TransformCallbackStep(tape)).transform([1, 2, 3])
    assert tape.data == [[[1, 2, 3]]] and out == [1, 2, 3]


def test_unions_add_stack_zip():
    assert AddFeatures([MultiplyByN(2)]).transform(X).shape == (6, 4)
    from sklearn.linear_model import LinearRegression
    from stepline.steps.sklearn import SKLearnWrapper
    stack = ModelStacking([MultiplyByN(2), AddN(1)], judge=SKLearnWrapper(LinearRegression()))
    stack, out = stack.fit_transform(X, X[:, 0])
    assert out.shape == (6,) and stack.get_children()[-1].name == "judge" and stack.judge.is_fitted
    zipped = FeatureUnion([Identity(), MultiplyByN(2)], joiner=ZipFeatures()).transform(X)
    assert len(zipped) == 6 and np.allclose(zipped[1][1], X[1] * 2)


# ------------------------------------------------------------------ flow
def test_phase_steps():
    train = ExecutionContext(execution_phase=ExecutionPhase.TRAIN)
    step = IfExecutionPhaseIsThen(ExecutionPhase.TRAIN, MultiplyByN(2))
    assert list(step.handle_transform(DACT(di=np.array([1])), train).di) == [2]
    prod = ExecutionContext(execution_phase=ExecutionPhase.PROD)
    assert list(step.handle_transform(DACT(di=np.array([1])), prod).di) == [1]
    with pytest.raises(ValueError, match="UNSPECIFIED"):
        step.handle_transform(DACT(di=[1]), ExecutionContext())
    switch = ExecutionPhaseSwitch({ExecutionPhase.TRAIN: MultiplyByN(2)}, default=AddN(10))
    assert list(switch.handle_transform(DACT(di=np.array([1])), prod).di) == [11]


def test_optional_nullified_and_choose_one_or_many():
    off = OptionalStep(MultiplyByN(2), nullified_return_value=[]).set_hyperparams({"enabled": False})
    assert off.transform(np.arange(3)) == []
    c = ChooseOneOrManyStepsOf([("a", MultiplyByN(2)), ("b", AddN(1))])
    c.set_hyperparams({"b__enabled": False})
    assert np.allclose(c.transform(X), X * 2)


# ------------------------------------------------------------------ numpy
def test_more_numpy_steps():
    assert OneHotEncoder(3).transform(np.array([0, 2, -1])).tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 0]]
    assert NumpyFlattenDatum().transform(np.ones((2, 3, 4))).shape == (2, 12)
    assert ToList().transform(np.array([[1, 2]])) == [[1, 2]]
    assert NumpyFFT().transform(np.ones((4, 8, 2))).shape == (4, 5, 2)


def test_ported_steps_pickle():
    step = Pipeline([ForEach(MultiplyByN(2)), OptionalStep(AddN(1), nullified_return_value=[])])
    assert pickle.loads(pickle.dumps(step)).keys() == step.keys()


def test_sub_container_merging_steps():
    from stepline.steps.data import InnerConcatenateDataContainer, ZipBatchDataContainer
    main = DACT(di=np.ones((4, 3, 2)), eo=np.ones((4, 3, 2)))
    main.add_sub_data_container("side", DACT(di=np.zeros((4, 3)), eo=np.zeros((4, 3))))
    out = Pipeline([InnerConcatenateDataContainer(["side"])]).handle_transform(main.copy(), ExecutionContext())
    assert out.di.shape == (4, 3, 3) and out.eo.shape == (4, 3, 3) and out.get_sub_data_container_names() == []
    zipped = ZipBatchDataContainer(["side"]).handle_transform(main, ExecutionContext())
    assert zipped.di[0][1].shape == (3,) and zipped.eo[0][1].shape == (3,)
    with pytest.raises(KeyError, match="no sub data container named \\['nope'\\]"):
        InnerConcatenateDataContainer(["nope"]).handle_transform(main, ExecutionContext())


def test_ids_input_and_output_wrapper():
    from stepline.steps.output_handlers import IdsInputAndOutputTransformerWrapper

    class Reverse(NonFittableMixin, BaseStep):
        def transform(self, data_inputs):
            ids, di, eo = data_inputs
            return list(reversed(ids)), list(reversed(di)), list(reversed(eo))

    out = IdsInputAndOutputTransformerWrapper(Reverse()).handle_transform(DACT(ids=["a", "b"], eo=[1, 2], di=[3, 4]),
                                                                          ExecutionContext())
    assert (out.ids, out.di, out.eo) == (["b", "a"], [4, 3], [2, 1])


def test_composites_take_type_hints():
    from typing import Generic
    hinted: MetaStep[Identity] = MetaStep(Identity())
    assert issubclass(MetaStep, Generic) and issubclass(Pipeline, Generic)
    assert isinstance(hinted.get_step(), Identity) and Pipeline[Identity] is not None
