"""PixelCNN priors: causal, and the windowed sampler gives exactly the logits of a full pass."""
from __future__ import annotations

import pytest
import torch

from napari_microsynth.models.pixelcnn import PixelCNNPrior, PriorConfig


@pytest.mark.parametrize("config", [
    PriorConfig(n_codes=6, kind="gated", channels=8, layers=3, condition_dim=4),
    PriorConfig(n_codes=6, kind="plain", channels=8, layers=1),
])
def test_each_draw_sees_exactly_what_a_full_pass_over_the_finished_grid_sees(config):
    torch.manual_seed(0)
    prior = PixelCNNPrior(config).eval()
    for p in prior.parameters():  # large weights, so a leak from a later code would show
        p.data.normal_(0, 0.5)
    condition = torch.softmax(torch.randn(2, 4), 1) if config.condition_dim else None
    seen = {}

    def record(logits, i, j, codes):
        seen[i, j] = logits.clone()
        return logits

    codes = prior.sample((2, 14, 13), condition, [torch.Generator().manual_seed(s) for s in (1, 2)], adjust=record)
    with torch.no_grad():
        full = prior(codes, condition)
    worst = max(float((seen[i, j] - full[:, :, i, j]).abs().max()) for i in range(14) for j in range(13))
    assert worst < 1e-4
    assert len(torch.unique(codes)) > 1


def test_a_code_never_depends_on_codes_after_it():
    torch.manual_seed(0)
    prior = PixelCNNPrior(PriorConfig(n_codes=4, channels=8, layers=4)).eval()
    codes = torch.randint(0, 4, (1, 9, 9))
    base = prior(codes)
    changed = codes.clone()
    changed[0, 4, 5] = (changed[0, 4, 5] + 1) % 4  # cell (4, 5)
    diff = (prior(changed) - base).abs().amax(dim=1)[0] > 1e-6
    before = torch.zeros(9, 9, dtype=torch.bool)
    before[:4] = True
    before[4, :6] = True  # rows above, and this row up to and including the changed cell
    assert not diff[before].any()
    assert diff[4, 6] and diff[5:].any()  # the next cell and the rows below do see it (no blind spot there)


def test_the_condition_changes_the_distribution():
    torch.manual_seed(0)
    prior = PixelCNNPrior(PriorConfig(n_codes=4, channels=8, layers=2, condition_dim=3))
    codes = torch.randint(0, 4, (2, 5, 5))
    a = prior(codes, torch.tensor([[1.0, 0, 0], [1.0, 0, 0]]))
    b = prior(codes, torch.tensor([[0, 0, 1.0], [0, 0, 1.0]]))
    assert (a - b).abs().max() > 1e-3
    with pytest.raises(ValueError, match="condition of shape"):
        prior(codes)


def test_the_composition_tilt_hits_a_reachable_goal_and_leaves_an_already_met_one_alone():
    from napari_microsynth.models.pixelcnn import composition_tilt

    g = torch.Generator().manual_seed(0)
    composition = torch.distributions.Dirichlet(torch.full((4,), 0.3)).sample((10,))
    logits = torch.randn(5, 10, generator=g) * 2
    goal = torch.softmax(torch.randn(5, 10, generator=g), 1) @ composition  # inside what the codes can paint
    tilted = torch.softmax(composition_tilt(logits, composition, goal), 1)
    assert (tilted @ composition - goal).abs().max() < 1e-3
    own = torch.softmax(logits, 1) @ composition
    assert (composition_tilt(logits, composition, own) - logits).abs().max() < 1e-3


def test_a_grid_depends_only_on_its_own_seed():
    torch.manual_seed(0)
    prior = PixelCNNPrior(PriorConfig(n_codes=5, channels=8, layers=2)).eval()
    alone = prior.sample((1, 6, 6), generators=[torch.Generator().manual_seed(7)])
    together = prior.sample((3, 6, 6), generators=[torch.Generator().manual_seed(s) for s in (3, 7, 9)])
    assert torch.equal(alone[0], together[1])
