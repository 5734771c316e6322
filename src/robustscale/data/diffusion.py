"""A small class-conditional diffusion model of the embedded digits: the paper's extra data, in miniature.

The paper (and Gowal et al. 2021, Wang et al. 2023 before it) gets its largest robustness gains from images sampled
from a diffusion model trained on the training split. This module is that generator at 8x8x1 and CPU scale, trained
on the *training* split only (the caller passes the arrays; :func:`robustscale.data.generate.synthesize` refuses any
other split), in plain torch.

Recipe: Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models" (EDM):

- preconditioning (their Table 1): ``D(x; s) = c_skip x + c_out F(c_in x, c_noise)`` with ``sigma_data = 0.5``,
  ``c_noise = ln(s) / 4``; pixels scaled to [-1, 1];
- training: ``ln s ~ N(-1.2, 1.2^2)`` and the loss weight ``(s^2 + sigma_data^2) / (s sigma_data)^2`` (Table 1);
- sampling: their deterministic Heun sampler (Algorithm 1) on the ``rho = 7`` schedule from ``sigma_max = 80`` to
  ``sigma_min = 0.002``, 18 steps (35 network evaluations, their CIFAR-10 setting);
- an exponential moving average of the weights is what samples (Ho et al. 2020, Section 4; EDM, Appendix F).

Class conditioning uses classifier-free guidance (Ho & Salimans 2022): the label is replaced by a "no label" token
for 10% of training examples, and sampling mixes ``D_uncond + w (D_cond - D_uncond)``; ``w = 1`` is plain
conditional sampling.

What we simplified, for a model that trains in minutes on one CPU thread: the denoiser ``F`` is a residual MLP over
the 64 pixels (Ho et al.'s and EDM's U-Nets would cost ~100x more per image at this size), with a sinusoidal
embedding of ``c_noise`` and a learned class embedding added in every block; no augmentation pipeline, no dropout;
Adam at a constant rate after a short warm-up instead of EDM's longer schedules; grey (1-channel) images, copied to
the dataset's 3 channels on output.

Determinism: the weights' initialisation, every batch, noise level and sampling draw come from generators seeded by
``seed``, so the same seed gives bitwise the same images on one machine with the same torch thread count.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# EDM (Karras et al. 2022) values, Table 1 and Section 5 (CIFAR-10 settings).
SIGMA_DATA = 0.5
P_MEAN, P_STD = -1.2, 1.2
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0
SAMPLE_STEPS = 18
# Classifier-free guidance (Ho & Salimans 2022): label dropout 10% (their setting is 0.1-0.2).
LABEL_DROPOUT = 0.1


@dataclass(frozen=True)
class DiffusionRecipe:
    """Training and sampling knobs of the digits generator (defaults: measured in BENCHMARKS.md).

    Attributes:
        width: hidden units of the residual MLP denoiser.
        depth: residual blocks.
        train_steps: Adam steps (batch ``batch_size``).
        batch_size: images per step.
        lr: Adam learning rate (after ``warmup_steps`` of linear warm-up).
        ema_decay: weight EMA used for sampling.
        sample_steps: Heun steps of the EDM sampler (2 * steps - 1 network evaluations).
        guidance: classifier-free guidance weight ``w`` (1: conditional sampling, no guidance).
    """

    width: int = 256
    depth: int = 4
    train_steps: int = 4000
    batch_size: int = 256
    lr: float = 1e-3
    warmup_steps: int = 200
    ema_decay: float = 0.999
    sample_steps: int = SAMPLE_STEPS
    guidance: float = 1.0


# ---------------------------------------------------------------------------------------------- the network


def _sinusoid(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer-style sinusoidal embedding of a scalar per example (as DDPM's timestep embedding)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    angles = 1000.0 * x[:, None] * freqs[None]  # c_noise lies in about [-2, 1.1]: scale it up, as EDM's DDPM++ does
    return torch.cat([angles.cos(), angles.sin()], dim=1)


class _Block(nn.Module):
    """Pre-norm residual MLP block; the noise + class embedding is added between its two layers."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.emb = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        nn.init.zeros_(self.fc2.weight)  # each block starts as the identity
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        z = nn.functional.silu(self.fc1(nn.functional.silu(self.norm(h))) + self.emb(emb))
        return h + self.fc2(z)


class Denoiser(nn.Module):
    """EDM-preconditioned denoiser ``D(x; sigma, label)`` over flattened grey images in [-1, 1].

    ``label == num_classes`` is the "no label" token of classifier-free guidance.
    """

    def __init__(self, pixels: int = 64, num_classes: int = 10, width: int = 256, depth: int = 4):
        super().__init__()
        self.pixels, self.num_classes, self.width = pixels, num_classes, width
        self.inp = nn.Linear(pixels, width)
        self.label_emb = nn.Embedding(num_classes + 1, width)
        self.noise_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(_Block(width) for _ in range(depth))
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, pixels)

    def raw(self, x_in: torch.Tensor, c_noise: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """The network ``F`` of EDM's preconditioning."""
        emb = nn.functional.silu(self.noise_mlp(_sinusoid(c_noise, self.width)) + self.label_emb(label))
        h = self.inp(x_in)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(nn.functional.silu(self.out_norm(h)))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        s = sigma.reshape(-1, 1)
        total = s ** 2 + SIGMA_DATA ** 2
        c_skip, c_out, c_in = SIGMA_DATA ** 2 / total, s * SIGMA_DATA / total.sqrt(), 1.0 / total.sqrt()
        return c_skip * x + c_out * self.raw(c_in * x, sigma.log() / 4.0, label)


# ---------------------------------------------------------------------------------------------- training


def _to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC (grey copied to every channel) -> float (N, H*W) in [-1, 1] from the first channel."""
    grey = torch.as_tensor(np.asarray(images)[..., 0], dtype=torch.float32)
    return grey.reshape(len(grey), -1) / 127.5 - 1.0


def _edm_loss(net: Denoiser, x0: torch.Tensor, label: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """EDM's training loss (Karras et al. 2022, Table 1 / Eq. 8) with classifier-free label dropout."""
    n = len(x0)
    sigma = (P_MEAN + P_STD * torch.randn(n, generator=gen)).exp()
    weight = (sigma ** 2 + SIGMA_DATA ** 2) / (sigma * SIGMA_DATA) ** 2
    drop = torch.rand(n, generator=gen) < LABEL_DROPOUT
    label = torch.where(drop, torch.full_like(label, net.num_classes), label)
    noisy = x0 + sigma[:, None] * torch.randn(x0.shape, generator=gen)
    err = (net(noisy, sigma, label) - x0) ** 2
    return (weight[:, None] * err).mean()


@torch.no_grad()
def denoising_loss(net: Denoiser, images: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> float:
    """EDM's weighted loss of ``net`` on ``images`` with fixed noise draws (``seed``), labels kept: a yardstick to
    compare two models on the same footing (training draws its noise afresh every step)."""
    x0, y = _to_unit(images), torch.as_tensor(np.asarray(labels), dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    sigma = (P_MEAN + P_STD * torch.randn(len(x0), generator=gen)).exp()
    weight = (sigma ** 2 + SIGMA_DATA ** 2) / (sigma * SIGMA_DATA) ** 2
    noisy = x0 + sigma[:, None] * torch.randn(x0.shape, generator=gen)
    return float((weight[:, None] * (net(noisy, sigma, y) - x0) ** 2).mean())


def _init_model(pixels: int, num_classes: int, recipe: DiffusionRecipe, seed: int) -> Denoiser:
    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's global RNG
        torch.manual_seed(seed)
        return Denoiser(pixels, num_classes, recipe.width, recipe.depth)


def train_denoiser(images: np.ndarray, labels: np.ndarray, *, num_classes: int = 10,
                   recipe: DiffusionRecipe = DiffusionRecipe(), seed: int = 0, log=None) -> Denoiser:
    """Train the class-conditional denoiser on ``images`` (uint8 NHWC, the training split) and return its EMA copy.

    ``log(step, loss, seconds)``, when given, is called every 500 steps and at the end.
    """
    x_all, y_all = _to_unit(images), torch.as_tensor(np.asarray(labels), dtype=torch.long)
    net = _init_model(x_all.shape[1], num_classes, recipe, seed)
    ema = _init_model(x_all.shape[1], num_classes, recipe, seed)
    ema.load_state_dict(net.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=recipe.lr)
    gen = torch.Generator().manual_seed(seed)
    t0, running = time.perf_counter(), 0.0
    for step in range(recipe.train_steps):
        for group in opt.param_groups:
            group["lr"] = recipe.lr * min(1.0, (step + 1) / max(recipe.warmup_steps, 1))
        idx = torch.randint(len(x_all), (recipe.batch_size,), generator=gen)
        loss = _edm_loss(net, x_all[idx], y_all[idx], gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _ema_update(ema, net, min(recipe.ema_decay, (1 + step) / (10 + step)))
        running += loss.item()
        if log is not None and ((step + 1) % 500 == 0 or step + 1 == recipe.train_steps):
            log(step + 1, running / ((step % 500) + 1), time.perf_counter() - t0)
        if (step + 1) % 500 == 0:
            running = 0.0
    return ema.eval()


@torch.no_grad()
def _ema_update(ema: nn.Module, net: nn.Module, decay: float) -> None:
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in net.parameters()], 1.0 - decay)


# ---------------------------------------------------------------------------------------------- sampling


def sigma_schedule(steps: int) -> torch.Tensor:
    """EDM's noise levels (Karras et al. 2022, Eq. 5), ``steps`` values from sigma_max down to sigma_min, then 0."""
    i = torch.arange(steps, dtype=torch.float64)
    inv = 1.0 / RHO
    sigmas = (SIGMA_MAX ** inv + i / max(steps - 1, 1) * (SIGMA_MIN ** inv - SIGMA_MAX ** inv)) ** RHO
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)]).float()


def _guided(net: Denoiser, x: torch.Tensor, sigma: float, label: torch.Tensor, guidance: float) -> torch.Tensor:
    s = torch.full((len(x),), sigma)
    cond = net(x, s, label)
    if guidance == 1.0:
        return cond
    uncond = net(x, s, torch.full_like(label, net.num_classes))
    return uncond + guidance * (cond - uncond)


@torch.no_grad()
def heun_sample(net: Denoiser, label: torch.Tensor, *, steps: int = SAMPLE_STEPS, guidance: float = 1.0,
                gen: torch.Generator) -> torch.Tensor:
    """EDM's deterministic 2nd-order sampler (Karras et al. 2022, Algorithm 1). Returns (N, pixels) in [-1, 1]."""
    sigmas = sigma_schedule(steps)
    x = torch.randn((len(label), net.pixels), generator=gen) * sigmas[0]
    for i in range(steps):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        d = (x - _guided(net, x, s, label, guidance)) / s
        x_next = x + (s_next - s) * d
        if s_next > 0:  # Heun correction, except on the last step to sigma = 0
            d_next = (x_next - _guided(net, x_next, s_next, label, guidance)) / s_next
            x_next = x + (s_next - s) * 0.5 * (d + d_next)
        x = x_next
    return x.clamp(-1.0, 1.0)


def sample_images(net: Denoiser, labels: np.ndarray, *, shape: tuple[int, int, int], seed: int = 0,
                  recipe: DiffusionRecipe = DiffusionRecipe(), chunk: int = 2000) -> np.ndarray:
    """Draw one image per label; returns uint8 NHWC of ``shape`` (H, W, C) with the grey copied to every channel."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    parts = [heun_sample(net, y[i:i + chunk], steps=recipe.sample_steps, guidance=recipe.guidance, gen=gen)
             for i in range(0, len(y), chunk)]
    flat = torch.cat(parts) if parts else torch.empty(0, net.pixels)
    grey = ((flat + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    h, w, c = shape
    return np.ascontiguousarray(grey.reshape(-1, h, w, 1).repeat(c, axis=3))


def sample_class_conditional(images: np.ndarray, labels: np.ndarray, n: int, *, seed: int = 0,
                             recipe: DiffusionRecipe = DiffusionRecipe(), num_classes: int = 10,
                             log=None) -> tuple[np.ndarray, np.ndarray]:
    """Train the diffusion model on ``images`` (the training split) and draw ``n`` new labelled images.

    Classes are drawn in proportion to their training frequency, as the GMM does. Returns ``(uint8 NHWC, int64)``.
    """
    net = train_denoiser(images, labels, num_classes=num_classes, recipe=recipe, seed=seed, log=log)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(np.asarray(labels), return_counts=True)
    y = rng.choice(classes, size=n, p=counts / counts.sum()).astype(np.int64)
    x = sample_images(net, y, shape=tuple(images.shape[1:]), seed=seed + 1, recipe=recipe)
    return x, y
