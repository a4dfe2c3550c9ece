"""The contract every registered generator family passes (and the test family of ``helpers``): one
constructor, declared options whose defaults pass their own checks and become CLI flags, a clear error for
an unknown option, brief training, pairs streamed with provenance at the asked fractions (or properties, for
a property-conditioned family), and a model folder that loads to the same pairs."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
from helpers import FakeGenerator, with_processing_conditions

from napari_microsynth import generators
from napari_microsynth.cli import main
from napari_microsynth.core.fractions import mask_fractions
from napari_microsynth.core.schema import PhaseSchema
from napari_microsynth.engines.generator_evaluation import default_condition
from napari_microsynth.generators import available_generators, get_generator, load_generator

UHCS = PhaseSchema.bundled("uhcs")
TARGET = [0.55, 0.25, 0.15, 0.05]
FAMILIES = [*available_generators(), FakeGenerator.name]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", autouse=True)
def fake_registered():
    """The test family is registered while this module runs (so the CLI and ``load_generator`` find it)."""
    generators.register_generator(FakeGenerator)
    yield
    generators._REGISTRY.pop(FakeGenerator.name)


QUICK = dict(steps=3, batch_size=2, lr_warmup_steps=0, downscale=4, translator_steps=3, translator_batch_size=2,
             prior_steps=3, prior_batch_size=2, code_bank=8, autoencoder_steps=3, autoencoder_batch_size=2,
             latent_bank=8)


def condition_for(generator):
    """What the contract asks a family for: TARGET fractions, or mid-range properties for a family conditioned
    on processing conditions."""
    return default_condition(generator) if generator.condition_spec.kind == "properties" else TARGET


def quick_config(cls):
    """A few steps of each network the family trains, on 4x-reduced tiles of its tiny preset."""
    names = {o.name for o in cls.training_options()}
    return cls.training_config(**{k: v for k, v in QUICK.items() if k in names})


def quick_sampling(cls) -> dict:
    """Few denoising steps where the family has them, and the fraction control on."""
    return cls.declared_sampling({"steps": 3, "fraction_control": 1.0})


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, uhcs_samples, fake_registered):
    cls = get_generator(request.param)
    generator = cls(UHCS, "tiny", "cpu", 0)
    samples = uhcs_samples
    if generator.condition_spec.kind == "properties":  # the micrographs' anneal conditions (pixel size left out)
        samples = with_processing_conditions(uhcs_samples)
    report = generator.train(samples, quick_config(cls))
    return generator, report


# ---------------------------------------------------------------- what a family declares


@pytest.mark.parametrize("name", FAMILIES)
def test_declared_options_have_defaults_that_pass_their_own_checks(name):
    cls = get_generator(name)
    for option in (*cls.training_options(), *cls.sampling_options()):
        assert option.help and option.kind in (bool, int, float, str), option
        assert option.check(option.default) == option.default, option
        text = "auto" if option.default is None else str(option.default)
        assert option.parse(text) == option.default, option
        assert not option.choices or option.default in option.choices, option
    assert cls.training_config() == cls.TrainConfig()
    # a sampling config resolves what the family leaves open (e.g. the sampler's own step count)
    assert None not in cls.sampling_settings().values()


@pytest.mark.parametrize("name", FAMILIES)
def test_unknown_options_are_a_value_error_listing_the_known_ones(name):
    cls = get_generator(name)
    known = sorted(o.name for o in cls.sampling_options())
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['not_an_option'\]; known: " + ", ".join(known)):
        cls(UHCS, "tiny", "cpu").sample(TARGET, n=1, not_an_option=1)
    with pytest.raises(ValueError, match="not_an_option"):
        cls.training_config(not_an_option=1)


@pytest.mark.parametrize("name", FAMILIES)
def test_one_constructor_for_every_family(name):
    cls = get_generator(name)
    parameters = inspect.signature(cls).parameters
    assert [(p.name, p.default) for p in parameters.values()][1:] == [("preset", "small"), ("device", "auto"),
                                                                        ("seed", 0)]
    assert "tiny" in cls.presets and "small" in cls.presets
    with pytest.raises(ValueError, match="preset 'huge'"):
        cls(UHCS, "huge", "cpu")
    a, b = cls(UHCS, "tiny", "cpu", 3), cls(UHCS, "tiny", device="cpu", seed=3)
    assert a.schema is UHCS and a.preset == "tiny" and str(a.device) == "cpu"
    spec = a.condition_spec
    assert spec.kind == "properties" or (spec.kind == "fractions" and spec.class_names == UHCS.names)
    assert a.resolution > 0 and a.downscale == 1 and a.pixel_size_um is None and a.model_checksum == ""
    first, again = (next(g.sample(condition_for(g), n=1, seed=1, **quick_sampling(cls))) for g in (a, b))
    np.testing.assert_array_equal(first.image, again.image)  # the seed fixes the untrained weights


@pytest.mark.parametrize("name", FAMILIES)
def test_cli_builds_a_flag_for_every_training_option(name, capsys):
    cls = get_generator(name)
    with pytest.raises(SystemExit):
        main(["train-generator", name, "--help"])
    shown = capsys.readouterr().out
    for option in cls.training_options():
        assert option.flag in shown, option.flag
    assert f"{name} training options (presets: {', '.join(cls.presets)})" in shown


# ---------------------------------------------------------------- what a trained family does


def test_training_reports_its_steps_and_records_the_data(family):
    generator, report = family
    assert report["steps"] == 3 and np.isfinite(report["final_loss"])
    assert generator.training.data_fingerprint and len(generator.training.sample_names) == 3
    assert generator.downscale == 4 and generator.pixel_size_um is None  # the fixtures record no pixel size


def test_pairs_stream_with_provenance_and_meet_the_fractions(family):
    generator, _ = family
    seen = []
    condition = condition_for(generator)
    stream = generator.sample(condition, n=2, seed=5, progress=lambda done, total, message: seen.append(done),
                              **quick_sampling(type(generator)))
    first = next(stream)
    pairs = [first, *stream]
    assert seen and [p.provenance.seed for p in pairs] == [5, 6]
    for pair in pairs:
        assert pair.image.shape == pair.mask.shape == (generator.resolution,) * 2 and pair.image.dtype == np.float32
        assert 0 <= pair.image.min() and pair.image.max() <= 1
        assert pair.provenance.origin == "synthetic" and pair.provenance.generator == generator.name
        assert pair.provenance.condition == (generator.condition_spec.validate(condition) if condition is not TARGET
                                             else {"fractions": pytest.approx(TARGET)})
        assert pair.provenance.extra["sampling"] == generator.sampling_settings(**quick_sampling(type(generator)))
        assert pair.provenance.extra["downscale"] == generator.downscale
    if generator.name != "pf-diffseg" and condition is TARGET:
        # a family that makes the mask first meets the fractions exactly; PF-DiffSeg steers softly
        for pair in pairs:
            assert np.abs(mask_fractions(pair.mask, UHCS) - TARGET).max() < 0.02


def test_bad_options_and_conditions_fail_before_any_work(family):
    generator, _ = family
    with pytest.raises(ValueError):
        generator.sample([0.5, -0.1, 0.3, 0.3], n=1)
    if "fraction_control" in {o.name for o in generator.sampling_options()}:
        with pytest.raises(ValueError, match="fraction_control"):
            generator.sample(TARGET, n=1, fraction_control=1.5)


def test_saved_model_loads_and_makes_the_same_pair(family, tmp_path, capsys):
    generator, _ = family
    folder = generator.save(tmp_path / generator.name)
    again = load_generator(folder, device="cpu")
    assert type(again) is type(generator) and again.model_checksum == generator.model_checksum
    assert (again.preset, again.resolution, again.downscale) == (generator.preset, generator.resolution, 4)
    options = quick_sampling(type(generator))
    a, b = (next(g.sample(condition_for(g), n=1, seed=1, **options)) for g in (generator, again))
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_allclose(a.image, b.image, atol=1e-5)

    # the CLI lists the family's sampling options for its model folder
    with pytest.raises(SystemExit):
        main(["generate", str(folder), "--help"])
    shown = capsys.readouterr().out
    for option in generator.sampling_options():
        assert option.flag in shown, option.flag
