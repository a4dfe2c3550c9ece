"""The contract every registered generator family passes: train briefly, stream pairs with provenance at the
asked fractions, reject bad options before work, save and load to the same pairs."""
from __future__ import annotations

import numpy as np
import pytest

from napari_microsynth.core.fractions import mask_fractions
from napari_microsynth.core.schema import PhaseSchema
from napari_microsynth.generators import available_generators, get_generator, load_generator

UHCS = PhaseSchema.bundled("uhcs")
TARGET = [0.55, 0.25, 0.15, 0.05]
pytestmark = pytest.mark.usefixtures("one_thread")


def quick_config(cls):
    """A few steps of each network the family trains, on 4x-reduced tiles of the tiny preset."""
    settings = dict(steps=3, batch_size=2, lr_warmup_steps=0, downscale=4)
    known = {f for f in cls.TrainConfig.__dataclass_fields__}
    settings.update({k: v for k, v in dict(translator_steps=3, translator_batch_size=2).items() if k in known})
    return cls.TrainConfig(**settings)


@pytest.fixture(scope="module", params=available_generators())
def family(request, uhcs_samples):
    cls = get_generator(request.param)
    generator = cls(UHCS, "tiny", device="cpu")
    report = generator.train(uhcs_samples, quick_config(cls))
    return generator, report


def test_training_reports_its_steps_and_records_the_data(family):
    generator, report = family
    assert report["steps"] == 3 and np.isfinite(report["final_loss"])
    assert generator.training.data_fingerprint and len(generator.training.sample_names) == 3


def test_pairs_stream_with_provenance_and_meet_the_fractions(family):
    generator, _ = family
    options = {"steps": 3} if "steps" in generator.sampling_defaults else {}
    pairs = list(generator.sample(TARGET, n=2, seed=5, **options))
    assert [p.provenance.seed for p in pairs] == [5, 6]
    for pair in pairs:
        assert pair.image.shape == pair.mask.shape and pair.image.dtype == np.float32
        assert 0 <= pair.image.min() and pair.image.max() <= 1
        assert pair.provenance.origin == "synthetic" and pair.provenance.generator == generator.name
        assert pair.provenance.condition == {"fractions": pytest.approx(TARGET)}
    if "fraction_control" in generator.sampling_defaults and generator.name != "pf-diffseg":
        # a family that makes the mask first meets the fractions exactly; PF-DiffSeg steers softly
        for pair in pairs:
            assert np.abs(mask_fractions(pair.mask, UHCS) - TARGET).max() < 0.02


def test_bad_options_and_conditions_fail_before_any_work(family):
    generator, _ = family
    with pytest.raises(TypeError, match="no sampling option"):
        generator.sample(TARGET, n=1, not_an_option=1)
    with pytest.raises(ValueError):
        generator.sample([0.5, -0.1, 0.3, 0.3], n=1)
    if "fraction_control" in generator.sampling_defaults:
        with pytest.raises(ValueError, match="fraction_control"):
            generator.sample(TARGET, n=1, fraction_control=1.5)


def test_saved_model_loads_and_makes_the_same_pair(family, tmp_path):
    generator, _ = family
    folder = generator.save(tmp_path / generator.name)
    again = load_generator(folder, device="cpu")
    assert type(again) is type(generator) and again.model_checksum == generator.model_checksum
    options = {"steps": 3} if "steps" in generator.sampling_defaults else {}
    a, b = (next(g.sample(TARGET, n=1, seed=1, **options)) for g in (generator, again))
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_allclose(a.image, b.image, atol=1e-5)
