"""Data steps (shuffling, epochs, minibatches) and output handlers."""
import numpy as np
import pytest

from conftest import Recorder, roundtrip
from stepline import CX, Pipeline
from stepline.base import BaseStep, DataContainer, NonFittableMixin
from stepline.steps.data import DataShuffler, EpochRepeater, MiniBatchSequentialPipeline
from stepline.steps.flow import TrainOnlyWrapper
from stepline.steps.numpy import AddN, FunctionStep, MultiplyByN, NumpyRavel
from stepline.steps.output_handlers import InputAndOutputTransformerWrapper, OutputTransformerWrapper

X = np.arange(20.0).reshape(10, 2)
Y = X[:, 0] * 10 + 1  # each label is a function of its row: pairs can be checked


def events(log, name):
    return [e for n, e in log if n == name]


class SeeData(BaseStep):
    """Records what fit sees; transform passes through. Learns the row count."""

    def __init__(self, seen=None, name=None):
        super().__init__(name=name)
        self.seen = [] if seen is None else seen

    def fit(self, data_inputs, expected_outputs=None):
        self.seen.append((np.array(data_inputs, copy=True), None if expected_outputs is None
                          else np.array(expected_outputs, copy=True)))
        self.n_rows_ = len(data_inputs)
        return self

    def transform(self, data_inputs):
        return data_inputs


class PartialSum(BaseStep):
    """Learns incrementally: keeps a running sum and count of all rows fitted on."""

    def __init__(self, name=None):
        super().__init__(name=name)
        self.total_, self.count_ = 0.0, 0

    def fit(self, data_inputs, expected_outputs=None):
        self.total_ += float(np.sum(data_inputs))
        self.count_ += len(data_inputs)
        return self

    def transform(self, data_inputs):
        return np.asarray(data_inputs) - self.total_ / self.count_


# ------------------------------------------------------------------ DataShuffler
def test_shuffler_keeps_pairs_and_is_a_permutation():
    _, dc = DataShuffler(seed=3).handle_fit_transform(DataContainer(X.copy(), Y.copy(), ids=list(range(10))),
                                                      CX())
    assert not np.array_equal(dc.data_inputs, X)
    np.testing.assert_array_equal(dc.expected_outputs, dc.data_inputs[:, 0] * 10 + 1)
    np.testing.assert_array_equal(np.sort(dc.data_inputs, axis=0), X)
    np.testing.assert_array_equal(dc.data_inputs, X[dc.ids])


def test_shuffler_seeded_is_reproducible_and_increments():
    a, b = DataShuffler(seed=7), DataShuffler(seed=7)
    out_a = [a.fit_transform(X)[1] for _ in range(3)]
    out_b = [b.fit_transform(X)[1] for _ in range(3)]
    for x, y in zip(out_a, out_b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(out_a[0], out_a[1])
    assert a.seed == 10


def test_shuffler_without_increment_repeats_the_same_order():
    s = DataShuffler(seed=7, increment_seed_after_each_fit=False)
    first, second = s.fit_transform(X)[1], s.fit_transform(X)[1]
    np.testing.assert_array_equal(first, second)
    assert s.seed == 7


def test_shuffler_unseeded_shuffles_differently():
    s = DataShuffler()
    outs = [s.fit_transform(X)[1] for _ in range(4)]
    assert any(not np.array_equal(outs[0], o) for o in outs[1:])
    assert s.seed is None


def test_shuffler_works_on_lists_and_leaves_input_untouched():
    xs, ys = [f"row{i}" for i in range(10)], list(range(10))
    _, dc = DataShuffler(seed=1).handle_fit_transform(DataContainer(xs, ys), CX())
    assert isinstance(dc.data_inputs, list) and sorted(dc.data_inputs) == sorted(xs)
    assert dc.data_inputs != xs
    assert dc.data_inputs == [f"row{i}" for i in dc.expected_outputs]
    assert xs == [f"row{i}" for i in range(10)]
    original = X.copy()
    DataShuffler(seed=1).fit_transform(X, Y)
    np.testing.assert_array_equal(X, original)


def test_shuffler_passes_through_in_transform():
    s = DataShuffler(seed=0)
    assert s.transform(X) is X
    assert s.seed == 0


def test_shuffler_refuses_unpaired_lengths():
    with pytest.raises(ValueError, match="10 data inputs but 3 expected outputs"):
        DataShuffler(seed=0).fit_transform(X, Y[:3])


def test_shuffler_refuses_data_it_cannot_index():
    with pytest.raises(TypeError, match="cannot index data of type str"):
        DataShuffler(seed=0).fit_transform("abcdef")


def test_shuffled_pairs_reach_the_next_step_in_a_pipeline():
    seen = []
    p = Pipeline([TrainOnlyWrapper(DataShuffler(seed=42)), SeeData(seen)])
    p = p.fit(X, Y)
    (xs, ys), = seen
    assert not np.array_equal(xs, X)
    np.testing.assert_array_equal(ys, xs[:, 0] * 10 + 1)
    np.testing.assert_array_equal(p.transform(X), X)


def test_shuffler_saves_its_seed(tmp_path):
    p = Pipeline([("shuffle", DataShuffler(seed=5)), ("m", MultiplyByN(2))], name="shuf")
    p, _ = p.fit_transform(X, Y)
    loaded = roundtrip(p, tmp_path, X)
    assert loaded["shuffle"].seed == 6
    np.testing.assert_array_equal(loaded.fit_transform(X, Y)[1], p.fit_transform(X, Y)[1])


# ------------------------------------------------------------------ EpochRepeater
def test_epoch_repeater_fits_n_times(log):
    p = Pipeline([("e", EpochRepeater(Recorder(log, "r", factor=2), epochs=3))])
    p = p.fit(X)
    assert events(log, "r") == ["setup", "fit", "fit", "fit"]
    log.clear()
    p, out = p.fit_transform(X)
    np.testing.assert_array_equal(out, X * 2)
    assert events(log, "r") == ["fit", "fit", "fit", "transform"]
    log.clear()
    p.set_hyperparams({"e__epochs": 1})
    p.fit(X)
    assert events(log, "r") == ["fit"]


def test_epoch_repeater_learns_incrementally_and_reshuffles_each_epoch():
    seen = []
    inner = Pipeline([DataShuffler(seed=0), SeeData(seen), ("sum", PartialSum())])
    step = EpochRepeater(inner, epochs=4).fit(X, Y)
    assert step.wrapped["sum"].count_ == 40
    orders = [xs[:, 0].tolist() for xs, _ in seen]
    assert len(orders) == 4 and len({tuple(o) for o in orders}) == 4
    for xs, ys in seen:
        np.testing.assert_array_equal(ys, xs[:, 0] * 10 + 1)


def test_epoch_repeater_refuses_bad_epochs():
    with pytest.raises(ValueError, match="epochs"):
        EpochRepeater(MultiplyByN(2), epochs=0)
    step = EpochRepeater(MultiplyByN(2), epochs=2)
    step.set_hyperparams({"epochs": -1})
    with pytest.raises(ValueError, match="epochs"):
        step.fit(X)


def test_epoch_repeater_saves_and_loads(tmp_path):
    p = Pipeline([("e", EpochRepeater(PartialSum(), epochs=3))], name="epochs")
    p = p.fit(X)
    loaded = roundtrip(p, tmp_path, X)
    assert loaded["e"].wrapped.count_ == 30 and loaded["e"].hyperparams["epochs"] == 3


# ------------------------------------------------------------------ MiniBatchSequentialPipeline
def test_minibatch_keeps_incomplete_last_batch():
    seen = []
    p = MiniBatchSequentialPipeline([MultiplyByN(2), SeeData(seen)], batch_size=4)
    p, out = p.fit_transform(X, Y)
    assert [len(xs) for xs, _ in seen] == [4, 4, 2]
    np.testing.assert_array_equal(out, X * 2)
    np.testing.assert_array_equal(np.concatenate([ys for _, ys in seen]), Y)
    np.testing.assert_array_equal(p.transform(X), X * 2)


def test_minibatch_drops_incomplete_last_batch():
    seen = []
    p = MiniBatchSequentialPipeline([MultiplyByN(2), SeeData(seen)], batch_size=4, keep_incomplete_batch=False)
    p, out = p.fit_transform(X, Y)
    assert [len(xs) for xs, _ in seen] == [4, 4]
    np.testing.assert_array_equal(out, X[:8] * 2)
    assert p.transform(X).shape == (8, 2)
    assert p.transform(X[:3]).shape == (0, 2)


def test_minibatch_fits_each_step_once_per_batch_in_order(log):
    p = MiniBatchSequentialPipeline([Recorder(log, "a"), Recorder(log, "b")], batch_size=5)
    p.fit(X)
    fits = [(n, e) for n, e in log if e == "fit"]
    assert fits == [("a", "fit"), ("b", "fit"), ("a", "fit"), ("b", "fit")]


def test_minibatch_incremental_step_sees_all_rows():
    p = MiniBatchSequentialPipeline([("sum", PartialSum())], batch_size=3).fit(X)
    assert p["sum"].count_ == 10 and p["sum"].total_ == X.sum()


def test_minibatch_concatenates_lists_as_lists():
    class Upper(NonFittableMixin, BaseStep):
        def transform(self, data_inputs):
            return [s.upper() for s in data_inputs]

    words = ["a", "b", "c", "d", "e"]
    out = MiniBatchSequentialPipeline([Upper()], batch_size=2).transform(words)
    assert out == ["A", "B", "C", "D", "E"]


def test_minibatch_concatenates_transformed_expected_outputs():
    seen = []
    inner = MiniBatchSequentialPipeline([OutputTransformerWrapper(MultiplyByN(-1))], batch_size=3)
    Pipeline([inner, SeeData(seen)]).fit(X, Y)
    (xs, ys), = seen
    np.testing.assert_array_equal(xs, X)
    np.testing.assert_array_equal(ys, -Y)


def test_minibatch_batch_size_is_a_hyperparameter():
    seen = []
    p = Pipeline([("mb", MiniBatchSequentialPipeline([SeeData(seen)], batch_size=4))])
    p.set_hyperparams({"mb__batch_size": 5})
    p.fit(X)
    assert [len(xs) for xs, _ in seen] == [5, 5]
    with pytest.raises(ValueError, match="batch_size"):
        MiniBatchSequentialPipeline([], batch_size=0)


def test_minibatch_saves_and_loads(tmp_path):
    p = Pipeline([("mb", MiniBatchSequentialPipeline([("sum", PartialSum()), ("m", MultiplyByN(3))],
                                                      batch_size=4, keep_incomplete_batch=False))], name="mbp")
    p = p.fit(X)
    loaded = roundtrip(p, tmp_path, X)
    assert loaded["mb"].keep_incomplete_batch is False and loaded["mb"].hyperparams["batch_size"] == 4
    assert loaded["mb"]["sum"].count_ == 8


# ------------------------------------------------------------------ OutputTransformerWrapper
def test_output_transformer_transforms_expected_outputs_only():
    seen = []
    p = Pipeline([("out", OutputTransformerWrapper(AddN(100))), SeeData(seen)])
    p, out = p.fit_transform(X, Y)
    np.testing.assert_array_equal(out, X)
    (xs, ys), = seen
    np.testing.assert_array_equal(xs, X)
    np.testing.assert_array_equal(ys, Y + 100)
    np.testing.assert_array_equal(p.transform(X), X)  # no expected outputs: passes through


def test_output_transformer_fits_on_expected_outputs():
    step = OutputTransformerWrapper(PartialSum())
    step = step.fit(X, Y)
    assert step.wrapped.total_ == Y.sum() and step.wrapped.count_ == 10
    dc = step.handle_transform(DataContainer(X, Y), CX())
    np.testing.assert_allclose(dc.expected_outputs, Y - Y.mean())
    np.testing.assert_array_equal(dc.data_inputs, X)


def test_output_transformer_without_expected_outputs_passes_through(log):
    step = OutputTransformerWrapper(Recorder(log, "r", factor=3))
    step, out = step.fit_transform(X)
    assert out is X and events(log, "r") == ["setup"]  # set up, never fitted nor run


def test_output_transformer_ravel_like_the_seed(tmp_path):
    seen = []
    p = Pipeline([("ravel", OutputTransformerWrapper(NumpyRavel())), SeeData(seen)], name="seedlike")
    p = p.fit(X, Y.reshape(-1, 1))
    assert seen[0][1].shape == (10,)
    loaded = roundtrip(p, tmp_path, X)
    assert isinstance(loaded["ravel"].wrapped, NumpyRavel)
    dc = loaded.handle_transform(DataContainer(X, Y.reshape(-1, 1)), CX())
    assert dc.expected_outputs.shape == (10,)


# ------------------------------------------------------------------ InputAndOutputTransformerWrapper
class DropOddRows(NonFittableMixin, BaseStep):
    def transform(self, data_inputs):
        xs, ys = data_inputs
        keep = np.arange(len(xs)) % 2 == 0
        return xs[keep], (None if ys is None else ys[keep])


class ScaleBoth(BaseStep):
    def fit(self, data_inputs, expected_outputs=None):
        xs, _ = data_inputs
        self.scale_ = float(np.max(np.abs(xs)))
        return self

    def transform(self, data_inputs):
        xs, ys = data_inputs
        return xs / self.scale_, (None if ys is None else ys / self.scale_)


def test_input_and_output_transformer_changes_both_together():
    seen = []
    p = Pipeline([("io", InputAndOutputTransformerWrapper(DropOddRows())), SeeData(seen)])
    p, out = p.fit_transform(X, Y)
    np.testing.assert_array_equal(out, X[::2])
    np.testing.assert_array_equal(seen[0][1], Y[::2])
    np.testing.assert_array_equal(p.transform(X), X[::2])


def test_input_and_output_transformer_fits_on_the_pair():
    step = InputAndOutputTransformerWrapper(ScaleBoth()).fit(X, Y)
    assert step.wrapped.scale_ == X.max()
    _, dc = step.handle_fit_transform(DataContainer(X, Y), CX())
    np.testing.assert_allclose(dc.data_inputs, X / X.max())
    np.testing.assert_allclose(dc.expected_outputs, Y / X.max())


def test_input_and_output_transformer_refuses_non_pairs():
    step = InputAndOutputTransformerWrapper(FunctionStep(lambda pair: pair[0], name="first"), name="io")
    with pytest.raises(TypeError, match="io.*first.*tuple.*ndarray"):
        step.transform(X)


def test_input_and_output_transformer_saves_and_loads(tmp_path):
    p = Pipeline([("io", InputAndOutputTransformerWrapper(ScaleBoth())), ("m", MultiplyByN(2))], name="iop")
    p = p.fit(X, Y)
    loaded = roundtrip(p, tmp_path, X)
    assert loaded["io"].wrapped.scale_ == X.max()
