"""Phase Learning Module (paper 001) and the segmenter networks built around it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_microsynth.core.schema import PhaseSchema
from napari_microsynth.models.plm import ABLATIONS, PhaseLearningModule, PLMFlags, SpatialAwareness
from napari_microsynth.models.segmenter import Segmenter, architectures

TILE = 64
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def schema() -> PhaseSchema:
    return PhaseSchema.bundled("metaldam")


@pytest.fixture(scope="module")
def tiles(shared_data) -> torch.Tensor:
    """Two real 64x64 SEM tiles (B, 1, 64, 64)."""
    from napari_microsynth.core.io import read_micrograph

    image, _ = read_micrograph(shared_data / "uhcs" / "images" / "uhcs0006.tif")
    return torch.from_numpy(np.stack([image[100:164, 200:264], image[400:464, 500:564]])[:, None].copy())


@pytest.mark.parametrize("setting", list(ABLATIONS))
def test_every_ablation_setting_segments_a_tile(setting, schema, tiles):
    torch.manual_seed(0)
    model = Segmenter.build(schema, preset="tiny", plm=setting, tile_size=TILE).eval()
    ratio = torch.tensor([0.3, 0.5, 0.1, 0.05, 0.05]) if model.uses_ratio else None
    with torch.no_grad():
        logits = model(tiles, ratio)
    assert logits.shape == (2, schema.n_classes, TILE, TILE)
    assert torch.isfinite(logits).all()
    assert model.uses_ratio == (setting in ("RE", "RE+SA", "RE+SA+FA"))
    if not model.uses_ratio:
        with pytest.raises(ValueError, match="takes no phase ratio"):
            model(tiles, torch.full((schema.n_classes,), 0.2))


@pytest.mark.parametrize("arch", ["Unet", "UnetPlusPlus", "Linknet", "MAnet", "FPN", "DeepLabV3Plus"])
def test_plm_on_several_architectures(arch, schema, tiles):
    torch.manual_seed(0)
    model = Segmenter.build(schema, arch=arch, preset="tiny", plm="RE+SA+FA", tile_size=TILE).eval()
    with torch.no_grad():
        features = model.image_features(tiles)
        logits = model(tiles, torch.tensor([0.3, 0.5, 0.1, 0.05, 0.05]))
    # The ratio-dependent part always works at input resolution on n phase channels.
    assert features.shape == (2, schema.n_classes, TILE, TILE)
    assert logits.shape == (2, schema.n_classes, TILE, TILE)


def test_architecture_names_and_sizes_are_checked(schema):
    assert {"Unet", "UnetPlusPlus", "Linknet", "MAnet"} <= set(architectures())
    with pytest.raises(ValueError, match="unknown architecture 'Unett'.*Unet"):
        Segmenter.build(schema, arch="Unett", preset="tiny")
    with pytest.raises(ValueError, match="unknown preset"):
        Segmenter.build(schema, preset="huge")
    with pytest.raises(ValueError, match="multiple of the encoder's output stride"):
        Segmenter.build(schema, preset="tiny", tile_size=70)
    model = Segmenter.build(schema, preset="tiny", tile_size=TILE)
    with pytest.raises(ValueError, match="must be a multiple of 16"):
        model(torch.zeros(1, 1, 60, 64))


def test_regulators_start_at_one_half_and_are_learned(schema, tiles):
    torch.manual_seed(0)
    model = Segmenter.build(schema, preset="tiny", plm="RE+SA+FA", tile_size=TILE)
    aggregator = model.head.aggregator
    assert aggregator.gamma.item() == 0.5 and aggregator.delta.item() == 0.5
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    target = torch.randint(0, schema.n_classes, (2, TILE, TILE))
    F.cross_entropy(model(tiles, torch.tensor([0.3, 0.5, 0.1, 0.05, 0.05])), target).backward()
    assert aggregator.gamma.grad is not None and aggregator.delta.grad is not None
    optimizer.step()
    assert aggregator.gamma.item() != 0.5 and aggregator.delta.item() != 0.5


def test_plm_adds_about_a_percent_of_parameters_or_less(schema):
    """Paper 001 (abstract, Table 6): the PLM costs about 1 % more parameters."""
    base = Segmenter.build(schema, preset="small", plm="baseline")
    plm = Segmenter.build(schema, preset="small", plm="RE+SA+FA")
    n_base = sum(p.numel() for p in base.parameters())
    n_plm = sum(p.numel() for p in plm.parameters())
    assert n_base < n_plm < 1.0107 * n_base


def test_no_ratio_is_the_zero_ratio_and_a_wrong_ratio_still_segments(schema, tiles):
    torch.manual_seed(0)
    model = Segmenter.build(schema, preset="tiny", plm="RE+SA+FA", tile_size=TILE).eval()
    with torch.no_grad():
        none = model(tiles, None)
        zeros = model(tiles, torch.zeros(schema.n_classes))
        inflated = model(tiles, torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0]))
        batch = model(tiles, torch.tensor([[0.3, 0.5, 0.1, 0.05, 0.05], [0.0, 0.0, 1.0, 0.0, 0.0]]))
    torch.testing.assert_close(none, zeros)
    assert torch.isfinite(inflated).all()
    assert not torch.allclose(inflated, none)
    torch.testing.assert_close(batch[1], inflated[1])
    with pytest.raises(ValueError, match="phase ratio must have shape"):
        model(tiles, torch.zeros(3))


def test_feature_aggregator_matches_the_papers_concatenation_form(schema):
    """The folded gate equals sigmoid(conv([S, S*e])), split, gated, weighted by gamma / delta."""
    torch.manual_seed(1)
    plm = PhaseLearningModule(in_channels=8, n_phases=5)
    with torch.no_grad():
        plm.aggregator.gamma.fill_(0.3)
        plm.aggregator.delta.fill_(0.8)
        features = torch.randn(2, 8, 16, 16)
        ratio = torch.tensor([[0.3, 0.5, 0.1, 0.05, 0.05], [0.6, 0.1, 0.1, 0.1, 0.1]])
        spatial = plm.phase_features(features)
        encoding = plm.ratio_encoder.mlp(ratio)[:, :, None, None]
        ratio_features = spatial * encoding
        weight = plm.aggregator.gate.weight[:, :, None, None]
        gates = torch.sigmoid(F.conv2d(torch.cat([spatial, ratio_features], 1), weight, plm.aggregator.gate.bias))
        g_image, g_ratio = gates.chunk(2, dim=1)
        fused = 0.3 * g_image * spatial + 0.8 * g_ratio * ratio_features
        literal = F.conv2d(fused, plm.output.weight[:, :, None, None], plm.output.bias)
        torch.testing.assert_close(plm(features, ratio), literal, rtol=1e-5, atol=1e-5)


def test_spatial_awareness_knows_where_a_pixel_is():
    """CoordConv: a spatially constant phase map gets position-dependent features."""
    torch.manual_seed(0)
    sa = SpatialAwareness(n_phases=3)
    with torch.no_grad():
        out = sa(torch.ones(1, 3, 32, 32))
    assert not torch.allclose(out[..., 8, 8], out[..., 24, 24])
    assert sa.conv.in_channels == 9 and sa.conv.groups == 3  # each phase with its own coordinates


def test_image_features_do_not_depend_on_the_ratio(schema, tiles):
    torch.manual_seed(0)
    model = Segmenter.build(schema, preset="tiny", plm="RE+SA+FA", tile_size=TILE).eval()
    with torch.no_grad():
        features = model.image_features(tiles)
        for ratio in (None, torch.tensor([0.3, 0.5, 0.1, 0.05, 0.05])):
            torch.testing.assert_close(model.ratio_head(features, ratio), model(tiles, ratio))


def test_flags_round_trip_through_names():
    for name, flags in ABLATIONS.items():
        parsed = PLMFlags.from_name(name)
        assert (parsed is None) == (flags is None)
        if parsed is not None:
            assert parsed.name == name
    assert PLMFlags.from_name("re+sa+fa") == PLMFlags()
    with pytest.raises(ValueError, match="unknown PLM setting"):
        PLMFlags.from_name("FA")


def test_a_wide_plm_has_the_ratio_encoder_size_of_paper_table_6(tiles):
    """Width 256 with three phases: RE 3 -> 128 -> 256 has 33 536 parameters (paper 001, Table 6: 0.0335 M)."""
    phases = [{"id": i, "name": n, "color": c} for i, (n, c) in
              enumerate([("bainite", (200, 0, 0)), ("ferrite", (0, 200, 0)), ("martensite", (0, 0, 200))])]
    three = PhaseSchema.from_dict({"name": "three", "phases": phases})
    torch.manual_seed(0)
    model = Segmenter.build(three, preset="tiny", plm="RE+SA+FA", tile_size=TILE, plm_width=256).eval()
    assert sum(p.numel() for p in model.head.ratio_encoder.parameters()) == 33_536
    assert model.feature_channels == 256
    with torch.no_grad():
        features = model.image_features(tiles)
        logits = model.ratio_head(features, torch.tensor([0.6, 0.3, 0.1]))
    assert features.shape == (2, 256, TILE, TILE) and logits.shape == (2, 3, TILE, TILE)
    narrow = Segmenter.build(three, preset="tiny", plm="RE+SA+FA", tile_size=TILE)
    assert narrow.feature_channels == 3
    with pytest.raises(ValueError, match="width"):
        PhaseLearningModule(16, 3, width=0)


def test_a_wide_plm_round_trips_through_its_model_folder(schema, tiles, tmp_path):
    torch.manual_seed(0)
    model = Segmenter.build(schema, preset="tiny", plm="RE+SA", tile_size=TILE, plm_width=12).eval()
    loaded = Segmenter.load(model.save(tmp_path / "wide"))
    ratio = torch.tensor([0.3, 0.5, 0.1, 0.05, 0.05])
    with torch.no_grad():
        torch.testing.assert_close(loaded(tiles, ratio), model(tiles, ratio))
    assert loaded.head.width == 12
