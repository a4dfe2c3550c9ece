"""The generator contract: condition specs, conditions from CSV, the registry and Generator.sample's bookkeeping."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import FakeGenerator

from napari_microsynth import generators
from napari_microsynth.core.schema import PhaseSchema
from napari_microsynth.generators import available_generators, get_generator, register_generator
from napari_microsynth.generators.base import ConditionSpec, PropertyRange, conditions_from_csv

UHCS = PhaseSchema.bundled("uhcs")


def test_fraction_spec_validates_and_renormalises():
    spec = ConditionSpec.fractions(UHCS)
    assert spec.class_names == UHCS.names
    assert spec.validate([2, 1, 1, 0]) == {"fractions": [0.5, 0.25, 0.25, 0.0]}
    with pytest.raises(ValueError, match="needs 4 values"):
        spec.validate([0.5, 0.5])
    with pytest.raises(ValueError, match="non-negative"):
        spec.validate([0.5, 0.6, -0.1, 0.0])
    with pytest.raises(ValueError, match="at least one positive"):
        spec.validate([0, 0, 0, 0])


def test_property_and_none_specs():
    spec = ConditionSpec.of_properties([PropertyRange("anneal_temperature", 800, 1000, "degC")])
    assert spec.validate({"anneal_temperature": 900}) == {"properties": {"anneal_temperature": 900.0}}
    with pytest.raises(ValueError, match="outside the trained range"):
        spec.validate({"anneal_temperature": 1200})
    with pytest.raises(ValueError, match="missing"):
        spec.validate({"time": 3})
    assert ConditionSpec.from_dict(spec.to_dict()) == spec
    assert ConditionSpec.none().expand(None, 3) == [None, None, None]
    with pytest.raises(ValueError, match="unconditional"):
        ConditionSpec.none().expand([0.5, 0.5], 1)


def test_expand_repeats_one_condition_or_takes_a_list():
    spec = ConditionSpec.fractions(UHCS)
    assert len(spec.expand([1, 1, 1, 1], 3)) == 3
    rows = spec.expand([[1, 0, 0, 0], [0, 1, 0, 0]], None)
    assert [r["fractions"] for r in rows] == [[1, 0, 0, 0], [0, 1, 0, 0]]
    with pytest.raises(ValueError, match="2 conditions but n=5"):
        spec.expand([[1, 0, 0, 0], [0, 1, 0, 0]], 5)


def test_conditions_from_csv_by_phase_name_and_id(tmp_path):
    path = tmp_path / "targets.csv"
    path.write_text(
        "file,Ferrite Matrix,cementite network,spheroidite,3\n"
        "a.tif,60,20,10,10\n"
        "\n"
        "b.tif,0.5,0.5,0,0\n"
    )
    table = conditions_from_csv(path, UHCS)
    np.testing.assert_allclose(table, [[0.6, 0.2, 0.1, 0.1], [0.5, 0.5, 0.0, 0.0]])

    path.write_text("ferrite matrix,spheroidite\n1,2\n")
    with pytest.raises(ValueError, match="no column for"):
        conditions_from_csv(path, UHCS)
    path.write_text("0,1,2,3\n1,2,x,0\n")
    with pytest.raises(ValueError, match="line 2"):
        conditions_from_csv(path, UHCS)


def test_properties_from_csv(tmp_path):
    spec = ConditionSpec.of_properties([PropertyRange("T", 800, 1000), PropertyRange("t", 0, 24)])
    path = tmp_path / "p.csv"
    path.write_text("T,t\n850,1\n970,24\n")
    assert conditions_from_csv(path, spec) == [{"T": 850.0, "t": 1.0}, {"T": 970.0, "t": 24.0}]


def test_sample_fills_provenance_and_streams_one_by_one():
    gen = FakeGenerator(UHCS, "tiny")
    gen.model_checksum = "abc123"
    seen = []
    stream = gen.sample([2, 1, 1, 0], n=3, seed=10, progress=lambda d, t, m: seen.append(d))
    first = next(stream)
    assert seen == [1]  # nothing beyond the first pair was made yet
    pairs = [first, *stream]
    assert [p.provenance.seed for p in pairs] == [10, 11, 12]
    p = pairs[0].provenance
    assert (p.origin, p.generator, p.generator_version, p.model_checksum) == ("synthetic", "test-fake", "0", "abc123")
    assert p.condition == {"fractions": [0.5, 0.25, 0.25, 0.0]}
    assert p.extra == {"downscale": 1, "sampling": {"mode": "exact", "guidance_scale": 1.0, "fraction_control": 1.0}}
    assert pairs[0].name == "test-fake-10"
    np.testing.assert_allclose(pairs[0].fractions, [0.5, 0.25, 0.25, 0.0])
    # the same seed regenerates the same pair alone
    again = next(gen.sample([2, 1, 1, 0], n=1, seed=11))
    np.testing.assert_array_equal(again.image, pairs[1].image)


def test_sample_rejects_bad_input_before_any_work():
    gen = FakeGenerator(UHCS, "tiny")
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['steps'\]; known: fraction_control, guidance_scale, mode"):
        gen.sample([1, 1, 1, 1], steps=3)
    with pytest.raises(ValueError, match="mode must be one of exact, replay, noise"):
        gen.sample([1, 1, 1, 1], mode="stripes")
    with pytest.raises(ValueError, match="needs 4 values"):
        gen.sample([1, 1], n=2)


def test_registry_finds_builtin_and_registered_generators(monkeypatch):
    assert get_generator("pf-diffseg").name == "pf-diffseg"  # registered on first use, in the real registry
    monkeypatch.setattr(generators, "_REGISTRY", dict(generators._REGISTRY))  # leave no test entry behind
    assert "pf-diffseg" in available_generators()
    register_generator(FakeGenerator)
    assert get_generator("test-fake") is FakeGenerator
    with pytest.raises(KeyError, match="available: .*pf-diffseg"):
        get_generator("no-such-generator")

    class Impostor(FakeGenerator):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register_generator(Impostor)
