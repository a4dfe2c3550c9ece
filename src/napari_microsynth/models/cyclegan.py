"""CycleGAN (Zhu, Park, Isola & Efros, ICCV 2017), the unpaired translator of paper 003: the networks, the
losses and their training through the one trainer (:mod:`.trainer`).

**Partial (issue 14):** this module is the translator's model and training only. Not built yet: the
``phasefield-cyclegan`` generator family (model folder, conditions = simulator settings, the Synthesis
widget's controls), a command that trains it on real micrographs and simulated structures, a bundled
trained translator, and paper 003's segmentation experiment.

Domains as paper 003 names them: ``X`` real micrographs, ``Y`` simulated (untextured) structures;
``G: X -> Y``, ``F: Y -> X`` (``F`` makes the synthetic micrograph of a simulation, whose grain map stays
the label), critics ``D_X`` and ``D_Y``. Networks as the CycleGAN paper (appendix 7.2) and its reference
code: the ResNet generator c7s1-64, d128, d256, 9 residual blocks R256, u128, u64, c7s1-c with instance
normalisation, reflection padding and tanh output; the 70 x 70 PatchGAN critic C64-C128-C256-C512 (no norm
on the first, LeakyReLU 0.2) with a 1-channel output map. With 3 channels they have the reference code's
11.378 M and 2.765 M parameters (tested).

Losses per step: least-squares adversarial losses (LSGAN) for both mappings, cycle consistency
``lambda_cycle x (|F(G(x)) - x|_1 + |G(F(y)) - y|_1)`` with ``lambda_cycle = 10``, identity
``lambda_identity x lambda_cycle x (|G(y) - y|_1 + |F(x) - x|_1)`` with ``lambda_identity = 0.5``; Adam
(lr 2e-4, betas 0.5, 0.999), the learning rate constant for the first half of the steps and decayed
linearly to 0 over the second half; critic losses halved. One difference from the reference code: no
history pool of 50 generated images for the critics (the critics see the current batch), so that a
resumed run repeats the uninterrupted one exactly (the trainer's checkpoints hold modules and optimisers,
not a pool).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.progress import ProgressFn, StopFn, never_stop, no_progress
from .trainer import LoopSettings, Recipe, Run, TrainResult, train

#: network sizes: "paper" = CycleGAN's ResNet-9 generator and 70x70 PatchGAN (for 256 px crops on a GPU)
PRESETS: dict[str, dict[str, int]] = {
    "paper": {"base_channels": 64, "residual_blocks": 9, "critic_channels": 64, "critic_layers": 3},
    "small": {"base_channels": 16, "residual_blocks": 4, "critic_channels": 16, "critic_layers": 3},
    "tiny": {"base_channels": 8, "residual_blocks": 1, "critic_channels": 8, "critic_layers": 2},
}


@dataclass(frozen=True)
class CycleGANConfig:
    """Network sizes. ``channels``: 1 for grey micrographs; the generator halves the resolution twice, so
    image sides must be multiples of 4."""

    channels: int = 1
    base_channels: int = 64
    residual_blocks: int = 9
    critic_channels: int = 64
    critic_layers: int = 3

    def __post_init__(self) -> None:
        if min(self.channels, self.base_channels, self.critic_channels, self.critic_layers) < 1 or \
                self.residual_blocks < 0:
            raise ValueError(f"invalid CycleGAN sizes: {self}")

    @classmethod
    def preset(cls, name: str, channels: int = 1) -> CycleGANConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown CycleGAN preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(channels=channels, **PRESETS[name])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CycleGANConfig:
        return cls(**data)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """c7s1-k, d2k, d4k, R4k x blocks, u2k, uk, c7s1-channels, tanh: images in [-1, 1] to images in [-1, 1]."""

    def __init__(self, config: CycleGANConfig):
        super().__init__()
        c, k = config.channels, config.base_channels
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(c, k, 7), nn.InstanceNorm2d(k), nn.ReLU(True)]
        for mult in (1, 2):
            layers += [nn.Conv2d(k * mult, k * mult * 2, 3, stride=2, padding=1), nn.InstanceNorm2d(k * mult * 2),
                       nn.ReLU(True)]
        layers += [ResidualBlock(4 * k) for _ in range(config.residual_blocks)]
        for mult in (4, 2):
            layers += [nn.ConvTranspose2d(k * mult, k * mult // 2, 3, stride=2, padding=1, output_padding=1),
                       nn.InstanceNorm2d(k * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(k, c, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"CycleGAN images need sides that are multiples of 4, got {tuple(x.shape[-2:])}")
        return self.net(x)


class PatchCritic(nn.Module):
    """The PatchGAN critic: ``layers`` stride-2 convolutions (C64, C128, C256 for 3 layers), one stride-1
    C512, then a 1-channel map of real/fake scores (70 x 70 px receptive field for 3 layers)."""

    def __init__(self, config: CycleGANConfig):
        super().__init__()
        k = config.critic_channels
        layers: list[nn.Module] = [nn.Conv2d(config.channels, k, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        width = k
        for n in range(1, config.critic_layers):
            new = k * min(2**n, 8)
            layers += [nn.Conv2d(width, new, 4, stride=2, padding=1), nn.InstanceNorm2d(new), nn.LeakyReLU(0.2, True)]
            width = new
        new = k * min(2**config.critic_layers, 8)
        layers += [nn.Conv2d(width, new, 4, stride=1, padding=1), nn.InstanceNorm2d(new), nn.LeakyReLU(0.2, True),
                   nn.Conv2d(new, 1, 4, stride=1, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _init_weights(module: nn.Module) -> None:
    """The reference code's "normal" initialisation: conv weights N(0, 0.02), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def build_cyclegan(config: CycleGANConfig, seed: int = 0) -> dict[str, nn.Module]:
    """The four networks ``{"G": X->Y, "F": Y->X, "D_X", "D_Y"}``, initialised from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    modules: dict[str, nn.Module] = {"G": ResnetGenerator(config), "F": ResnetGenerator(config),
                                     "D_X": PatchCritic(config), "D_Y": PatchCritic(config)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        for module in modules.values():
            module.apply(_init_weights)
    return modules


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- training


@dataclass
class CycleGANTrainConfig:
    """Settings of a CycleGAN training (defaults: the CycleGAN paper's, batch size 1)."""

    steps: int = 10_000
    batch_size: int = 1
    crop: int = 256
    lr: float = 2e-4
    beta1: float = 0.5
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5
    checkpoint_dir: str | None = None
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    resume: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        if self.crop < 4 or self.crop % 4:
            raise ValueError(f"crop must be a multiple of 4 (the generator halves the resolution twice), "
                             f"got {self.crop}")
        if self.lambda_cycle < 0 or self.lambda_identity < 0:
            raise ValueError("the loss weights must be >= 0")


def to_model_range(image: np.ndarray) -> torch.Tensor:
    """A grey image in [0, 1] (H, W) as a (1, 1, H, W) tensor in [-1, 1]."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) * 2.0 - 1.0)[None, None]


def from_model_range(x: torch.Tensor) -> np.ndarray:
    """A (B, 1, H, W) tensor in [-1, 1] as (B, H, W) float32 images in [0, 1]."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1.0) / 2.0)[:, 0].numpy()


def unpaired_crops(images: Sequence[np.ndarray], crop: int, rng: np.random.Generator, n: int) -> torch.Tensor:
    """``n`` random ``crop`` x ``crop`` crops (random image, position, flips and 90-degree turns) of grey
    images in [0, 1], as a (n, 1, crop, crop) tensor in [-1, 1]."""
    out = np.empty((n, crop, crop), np.float32)
    for i in range(n):
        image = images[int(rng.integers(len(images)))]
        h, w = image.shape
        if h < crop or w < crop:
            raise ValueError(f"an image of {w}x{h} px is smaller than the {crop} px crop")
        r, c = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
        piece = image[r:r + crop, c:c + crop]
        piece = np.rot90(piece, int(rng.integers(4)))
        out[i] = piece[:, ::-1] if rng.random() < 0.5 else piece
    return torch.from_numpy(out * 2.0 - 1.0)[:, None]


def _lsgan(scores: torch.Tensor, real: bool) -> torch.Tensor:
    return F.mse_loss(scores, torch.full_like(scores, 1.0 if real else 0.0))


def cyclegan_step(run: Run, x: torch.Tensor, y: torch.Tensor, config: CycleGANTrainConfig) -> dict[str, float]:
    """One generator update (both mappings) and one critic update (both critics) on real ``x`` and
    simulated ``y`` batches in [-1, 1]; the logged loss is the generators' total."""
    G, F_, D_X, D_Y = (run.modules[k] for k in ("G", "F", "D_X", "D_Y"))
    x, y = x.to(run.device), y.to(run.device)
    for critic in (D_X, D_Y):
        critic.requires_grad_(False)
    fake_y, fake_x = G(x), F_(y)
    adversarial = _lsgan(D_Y(fake_y), True) + _lsgan(D_X(fake_x), True)
    cycle = F.l1_loss(F_(fake_y), x) + F.l1_loss(G(fake_x), y)
    identity = (F.l1_loss(G(y), y) + F.l1_loss(F_(x), x) if config.lambda_identity > 0
                else torch.zeros((), device=x.device))
    loss_g = adversarial + config.lambda_cycle * cycle + config.lambda_identity * config.lambda_cycle * identity
    run.update("generators", loss_g)
    for critic in (D_X, D_Y):
        critic.requires_grad_(True)
    loss_d = 0.5 * (_lsgan(D_Y(y), True) + _lsgan(D_Y(fake_y.detach()), False)) \
        + 0.5 * (_lsgan(D_X(x), True) + _lsgan(D_X(fake_x.detach()), False))
    run.update("critics", loss_d)
    return {"loss": float(loss_g.detach()), "adversarial": float(adversarial.detach()),
            "cycle": float(cycle.detach()), "identity": float(identity.detach()), "critic_loss": float(loss_d.detach())}


def train_cyclegan(modules: dict[str, nn.Module], real_images: Sequence[np.ndarray],
                   simulated_images: Sequence[np.ndarray], config: CycleGANTrainConfig,
                   device: torch.device | str = "cpu", progress: ProgressFn = no_progress,
                   should_stop: StopFn = never_stop) -> TrainResult:
    """Train the networks of :func:`build_cyclegan` in place on unpaired random crops of ``real_images``
    (domain X) and ``simulated_images`` (domain Y), grey (H, W) arrays in [0, 1]. Checkpoints, exact resume,
    progress and cancel are the trainer's; the history holds every step's losses (``loss``: the
    generators' total, ``cycle``, ``adversarial``, ``identity``, ``critic_loss``)."""
    if not real_images or not simulated_images:
        raise ValueError("CycleGAN training needs real micrographs and simulated structures (both unlabelled)")
    generators = [p for k in ("G", "F") for p in modules[k].parameters()]
    critics = [p for k in ("D_X", "D_Y") for p in modules[k].parameters()]
    betas = (config.beta1, 0.999)
    optimizers = {"generators": torch.optim.Adam(generators, lr=config.lr, betas=betas),
                  "critics": torch.optim.Adam(critics, lr=config.lr, betas=betas)}
    half = config.steps // 2

    def decay(step: int) -> float:  # constant, then linearly to 0 over the second half
        return 1.0 if step < half else max(0.0, 1.0 - (step - half) / max(config.steps - half, 1))

    schedulers = {name: torch.optim.lr_scheduler.LambdaLR(opt, decay) for name, opt in optimizers.items()}

    def draw(rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return (unpaired_crops(real_images, config.crop, rng, config.batch_size),
                unpaired_crops(simulated_images, config.crop, rng, config.batch_size))

    def step(run: Run, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        return cyclegan_step(run, batch[0], batch[1], config)

    identity = {"parameters": {name: parameter_count(m) for name, m in modules.items()}, "crop": config.crop,
                "batch_size": config.batch_size, "lambda_cycle": config.lambda_cycle,
                "lambda_identity": config.lambda_identity, "steps": config.steps}
    recipe = Recipe(modules, optimizers, draw, step, schedulers=schedulers, identity={"cyclegan": identity})
    settings = LoopSettings(config.steps, config.seed, device, "auto", config.checkpoint_dir, config.checkpoint_every,
                            config.keep_checkpoints, config.resume)
    return train(recipe, settings, progress, should_stop)


@torch.no_grad()
def translate(generator: nn.Module, images: Sequence[np.ndarray],
              device: torch.device | str = "cpu") -> list[np.ndarray]:
    """Each grey image in [0, 1] through ``generator`` (e.g. ``F``: simulation -> micrograph), padded by
    reflection to a multiple of 4 and cropped back."""
    generator.eval()
    out = []
    for image in images:
        h, w = image.shape
        x = to_model_range(image).to(device)
        x = F.pad(x, (0, (-w) % 4, 0, (-h) % 4), mode="reflect")
        out.append(from_model_range(generator(x))[0, :h, :w])
    return out
