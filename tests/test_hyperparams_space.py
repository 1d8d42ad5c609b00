"""Hyperparameter samples and spaces: flat/nested forms, JSON, sampling, and routing through steps."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepline import Pipeline
from stepline.base import HyperparameterError, Identity, MetaStep
from stepline.hyperparams.distributions import Boolean, Choice, LogUniform, RandInt, Uniform
from stepline.hyperparams.space import HyperparameterSamples, HyperparameterSpace
from stepline.steps.numpy import MultiplyByN


def nested_pipeline():
    return Pipeline([
        ("a", MultiplyByN(2)),
        ("inner", Pipeline([("b", MultiplyByN(3, hyperparams_space={"multiply_by": RandInt(1, 10)})),
                            ("w", MetaStep(MultiplyByN(5, name="c")))])),
    ], name="root")


# ----------------------------------------------------------------- containers
def test_nested_and_flat_forms_are_the_same():
    nested = HyperparameterSamples({"a": {"b": 1, "c": {"d": 2}}, "e": 3})
    flat = HyperparameterSamples({"a__b": 1, "a__c__d": 2, "e": 3})
    assert nested == flat
    assert nested.to_flat_dict() == {"a__b": 1, "a__c__d": 2, "e": 3}
    assert nested.to_nested_dict() == {"a": {"b": 1, "c": {"d": 2}}, "e": 3}
    assert nested["a"] == HyperparameterSamples({"b": 1, "c__d": 2})
    assert nested["a__c__d"] == 2 and "a" in nested and "zz" not in nested
    with pytest.raises(KeyError, match="zz"):
        nested["zz"]


def test_mixed_flat_and_nested_keys():
    hp = HyperparameterSamples({"a__b": 1, "a": {"c": 2}})
    assert hp.to_nested_dict() == {"a": {"b": 1, "c": 2}}


def test_value_and_group_conflict_is_an_error():
    with pytest.raises(ValueError, match="both a value and a group"):
        HyperparameterSamples({"a": 1, "a__b": 2}).to_nested_dict()


def test_bad_keys_refused():
    with pytest.raises(TypeError, match="non-empty strings"):
        HyperparameterSamples({1: 2})


@pytest.mark.parametrize("key", [1, "", None, ("a",)])
@pytest.mark.parametrize("value", [2, 0.5, "x", True, None, [1]])
def test_bad_keys_refused_on_item_assignment_whatever_the_value(key, value):
    samples = HyperparameterSamples({"a": 1})
    with pytest.raises(TypeError, match="non-empty strings"):
        samples[key] = value
    assert dict(samples) == {"a": 1}


def test_item_assignment_of_scalars_groups_and_leaf_mappings_and_a_pickle_round_trip():
    import pickle
    from stepline.hyperparams.distributions import FixedHyperparameter
    samples = HyperparameterSamples()
    samples["a"], samples["b"], samples["c"] = 1, None, {"d": 2, "e": {"f": 3}}
    samples["weights"] = {0: 1, 1: 2}  # a non-string key: a value, not a group
    assert dict(samples) == {"a": 1, "b": None, "c__d": 2, "c__e__f": 3, "weights": {0: 1, 1: 2}}
    again = pickle.loads(pickle.dumps(samples))
    assert type(again) is HyperparameterSamples and dict(again) == dict(samples)
    space = HyperparameterSpace({"g": {"h": Uniform(0, 1)}})
    space["n"] = 3
    again = pickle.loads(pickle.dumps(space))
    assert again["n"] == FixedHyperparameter(3) and isinstance(again["g__h"], Uniform)


def test_space_wraps_plain_values_as_fixed():
    from stepline.hyperparams.distributions import FixedHyperparameter
    space = HyperparameterSpace({"a": 3, "b": Uniform(0, 1)})
    assert space["a"] == FixedHyperparameter(3)
    assert space.rvs()["a"] == 3


def test_space_sampling_is_reproducible_with_seed_or_generator():
    space = HyperparameterSpace({"m": {"C": LogUniform(0.01, 10.0), "penalty": Choice(["l1", "l2"])},
                                 "n": RandInt(1, 100), "flag": Boolean()})
    a, b = space.rvs(random_state=7), space.rvs(random_state=7)
    assert isinstance(a, HyperparameterSamples) and a == b
    assert space.rvs(np.random.default_rng(3)) == space.rvs(np.random.default_rng(3))
    assert len({json.dumps(space.rvs().to_flat_dict(), sort_keys=True) for _ in range(20)}) > 1
    sample = space.rvs(1)
    assert set(sample) == {"m__C", "m__penalty", "n", "flag"}
    assert all(sample[k] in space[k] for k in sample)


def test_samples_json_round_trip():
    hp = HyperparameterSamples({"a": {"b": 1.5, "c": "x", "d": [1, 2]}, "e": True, "f": None})
    text = hp.to_json()
    assert json.loads(text) == {"a": {"b": 1.5, "c": "x", "d": [1, 2]}, "e": True, "f": None}
    assert HyperparameterSamples.from_json(text) == hp


def test_samples_json_refuses_unserialisable_values_clearly():
    with pytest.raises(TypeError, match="not JSON serialisable"):
        HyperparameterSamples({"a": object()}).to_json()


def test_space_json_round_trip_with_distributions():
    space = HyperparameterSpace({"step": {"C": LogUniform(0.01, 10.0), "fit_intercept": Boolean(),
                                          "penalty": Choice(["l1", "l2"]), "max_iter": RandInt(20, 200)},
                                 "u": Uniform(-1, 1), "fixed": 4})
    restored = HyperparameterSpace.from_json(space.to_json())
    assert restored == space
    assert restored.rvs(5) == space.rvs(5)


keys = st.lists(st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True), min_size=1, max_size=4)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys.map("__".join), st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=5)),
                       max_size=12))
def test_property_flat_nested_flat_round_trip(flat):
    prefixes = {k.split("__", 1)[0] for k in flat}
    # keep only valid trees: no key may be both a value and the prefix of another key
    flat = {k: v for k, v in flat.items() if not any(o != k and o.startswith(k + "__") for o in flat)}
    assert prefixes is not None
    samples = HyperparameterSamples(flat)
    assert HyperparameterSamples(samples.to_nested_dict()).to_flat_dict() == flat


# -------------------------------------------------------------------- on steps
def test_pipeline_collects_hyperparams_by_path():
    p = nested_pipeline()
    assert p.get_hyperparams().to_flat_dict() == {
        "a__multiply_by": 2, "inner__b__multiply_by": 3, "inner__w__c__multiply_by": 5}
    assert p.get_hyperparams_space().to_flat_dict() == {"inner__b__multiply_by": RandInt(1, 10)}


def test_set_hyperparams_routes_flat_and_nested_and_keeps_others():
    p = nested_pipeline()
    p.set_hyperparams({"inner__b__multiply_by": 4})
    p.set_hyperparams({"inner": {"w": {"c": {"multiply_by": 7}}}})
    assert p["inner"]["b"].hyperparams["multiply_by"] == 4
    assert p["inner"]["w"].wrapped.hyperparams["multiply_by"] == 7
    assert p["a"].hyperparams["multiply_by"] == 2
    np.testing.assert_array_equal(p.transform(np.ones(1)), [2 * 4 * 7])


def test_update_is_the_same_as_set_and_invalidates():
    p = nested_pipeline()
    assert not p.is_invalidated
    p.update_hyperparams({"a__multiply_by": 9})
    assert p["a"].hyperparams["multiply_by"] == 9 and p["a"].is_invalidated and p.is_invalidated
    assert not p["inner"].is_invalidated


def test_unknown_name_lists_valid_names():
    p = nested_pipeline()
    with pytest.raises(HyperparameterError, match=r"'b'.*'multipy_by'.*\['multiply_by'\]"):
        p.set_hyperparams({"inner__b__multipy_by": 1})


def test_unknown_child_path_is_an_error_naming_the_path():
    p = nested_pipeline()
    with pytest.raises(HyperparameterError, match="'root'.*'nope__b__multiply_by'.*children"):
        p.set_hyperparams({"nope__b__multiply_by": 1})


def test_key_naming_a_step_not_a_parameter():
    with pytest.raises(HyperparameterError, match="names the step"):
        nested_pipeline().set_hyperparams({"inner__b": 1})


def test_value_outside_space_names_step_param_and_space():
    p = nested_pipeline()
    with pytest.raises(HyperparameterError, match=r"50.*'multiply_by'.*'b'.*RandInt"):
        p.set_hyperparams({"inner__b__multiply_by": 50})


def test_space_sample_applies_to_pipeline():
    p = nested_pipeline()
    p.set_hyperparams_space({"a__multiply_by": RandInt(1, 3)})
    sample = p.get_hyperparams_space().rvs(random_state=0)
    p.set_hyperparams(sample)
    assert p.get_hyperparams()["a__multiply_by"] == sample["a__multiply_by"]
    assert p.get_hyperparams()["inner__b__multiply_by"] == sample["inner__b__multiply_by"]


def test_set_space_for_unknown_name_is_an_error():
    with pytest.raises(HyperparameterError, match="no hyperparameter 'zzz'"):
        nested_pipeline().set_hyperparams_space({"a__zzz": Uniform(0, 1)})


def test_step_that_declares_no_hyperparams_takes_any_name_as_neuraxle():
    step = Identity().set_hyperparams({"x": 1})
    assert step.get_hyperparams() == {"x": 1}
    with pytest.raises(HyperparameterError, match=r"'y'.*\['x'\]"):  # once declared, typos are refused
        step.set_hyperparams({"y": 2})


def test_sklearn_style_get_and_set_params():
    p = nested_pipeline()
    assert p.get_params()["inner__b__multiply_by"] == 3
    assert p.get_params(deep=False) == {}
    assert p.set_params(inner__b__multiply_by=6) is p
    assert p["inner"]["b"].get_params(deep=False) == {"multiply_by": 6}


def test_keys_are_stable_names_not_ids():
    assert nested_pipeline().get_hyperparams() == nested_pipeline().get_hyperparams()


def test_mapping_with_non_string_keys_is_a_value_not_a_group():
    hp = HyperparameterSamples({"clf": {"class_weight": {0: 1, 1: 2}, "C": 1.0}})
    assert hp.to_flat_dict() == {"clf__class_weight": {0: 1, 1: 2}, "clf__C": 1.0}
    step = MultiplyByN(1)
    step.hyperparams["weights"] = {0: 1}
    step.set_hyperparams({"weights": {0: 3, 1: 4}})
    assert step.hyperparams["weights"] == {0: 3, 1: 4}
