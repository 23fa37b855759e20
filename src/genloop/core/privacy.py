"""Differentially private training (DP-SGD, Abadi et al. 2016) through Opacus.

Each optimizer step clips every training image's gradient to ``max_grad_norm`` (per-sample
gradients from Opacus' ``GradSampleModule``, or their norms alone with ghost clipping) and adds
Gaussian noise of standard deviation ``noise_multiplier * max_grad_norm`` to their sum (Opacus'
``DPOptimizer``); an accountant turns (noise multiplier, sampling rate, steps) into the spent ε at
the configured δ. Every drawn batch counts as a step, one the loop skips too (the GAN skips batches
of under two images, which its generator's batch norm cannot take), so ε is never under-reported.

Sampling: the accountants (RDP and PRV alike) assume Poisson sampling, each image joining each
batch independently with probability ``batch_size / n``. So a private training draws its batches
that way (``poisson_batches``, as Opacus' ``DPDataLoader`` does) instead of genloop's shuffled
``randperm`` batches, which those bounds do not cover; batch sizes then vary around ``batch_size``,
and an epoch of ``images`` images is ``ceil(images / batch_size)`` such steps, so the planned steps
and the images budget are the same as without privacy.

This is what ``PrivacyEngine.make_private`` / ``make_private_with_epsilon`` set up, built from their
parts so that the batches keep coming from genloop's seeded, checkpointed generator (a resumed
training continues the same draws) and the data can stay one tensor on the device.

Opacus is imported inside the functions: only private trainings pay for it.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from genloop.config import ConfigError, PrivacyConfig
from genloop.errors import GenloopError

# What model.pt (``checkpoint["privacy"]``) and reports/metrics.json[MODEL] carry for a private training.
EPSILON, DELTA = "epsilon", "delta"


class StepCounter(nn.Module):
    """The private steps drawn so far, as a buffer: it rides in the per-epoch training state, so a
    resumed training accounts for the steps taken before the stop."""

    def __init__(self):
        super().__init__()
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))


def sample_rate(batch_size: int, n: int) -> float:
    """Poisson sampling probability of one image per step: the expected batch is ``batch_size``."""
    if n < 1:
        raise ValueError("the training set is empty")
    return min(1.0, batch_size / n)


def planned_steps(epoch_images: list[int], batch_size: int) -> int:
    """Private steps of a whole training: ``ceil(images / batch_size)`` per epoch of ``images`` images."""
    return max(1, sum(math.ceil(images / batch_size) for images in epoch_images))


def noise_multiplier(config: PrivacyConfig, rate: float, steps: int) -> float:
    """The configured noise multiplier, or the smallest one that keeps ``steps`` steps at ``rate``
    within ``target_epsilon`` at ``delta`` (what ``make_private_with_epsilon`` computes)."""
    if config.target_epsilon is None:
        return float(config.noise_multiplier)
    from opacus.accountants.utils import get_noise_multiplier

    try:
        return float(get_noise_multiplier(target_epsilon=config.target_epsilon, target_delta=config.delta,
                                          sample_rate=rate, steps=steps, accountant=config.accountant))
    except ValueError as exc:  # Opacus: "The privacy budget is too low."
        raise ConfigError(f"privacy.target_epsilon {config.target_epsilon:g} is too small: no noise multiplier keeps "
                          f"{steps} steps at sampling rate {rate:.3g} within it at delta {config.delta:g} ({exc}); "
                          "raise target_epsilon, or lower images") from None


class PrivacyAccountingError(GenloopError, ValueError):
    """The accountant gave an ε that is no guarantee (negative or NaN): the training must not pass as private."""


def check_delta(delta: float, n: int) -> None:
    """δ at most 1 / n: a larger δ lets a mechanism publish one of the n training images outright."""
    if delta * n > 1.0:
        raise ConfigError(f"privacy.delta {delta:g} exceeds 1 / training images (1/{n} = {1 / n:.3g}); "
                          f"set privacy.delta to {1 / n:.2g} or less (1e-5 is usual)")


def checked_epsilon(value: float, delta: float) -> float:
    """``value`` when it is a guarantee (>= 0; infinite is honest: no privacy); else a PrivacyAccountingError."""
    if math.isnan(value) or value < 0:
        raise PrivacyAccountingError(f"the privacy accountant gave epsilon {value:g} at delta {delta:g}, which is no "
                                     "guarantee; lower privacy.delta (1e-5 is usual) or the noise multiplier")
    return value


def epsilon(sigma: float, rate: float, steps: int, delta: float, accountant: str = "rdp") -> float:
    """ε spent by ``steps`` Poisson-sampled Gaussian steps of noise multiplier ``sigma`` at ``delta``."""
    if steps <= 0:
        return 0.0
    from opacus.accountants import create_accountant

    acc = create_accountant(accountant)
    acc.history = [(sigma, rate, steps)]
    return float(acc.get_epsilon(delta=delta))


def opacus_compatible(module: nn.Module) -> nn.Module:
    """A copy of ``module`` that Opacus can train: batch norm (which mixes the images of a batch, so no
    per-sample gradient exists) becomes group norm (``ModuleValidator.fix``), and in-place activations
    work out of place (Opacus' backward hooks forbid modifying their outputs in place). Anything else
    it cannot train is an error naming the layer."""
    from opacus.validators import ModuleValidator

    fixed = ModuleValidator.fix(module)
    for layer in fixed.modules():
        if getattr(layer, "inplace", False):
            layer.inplace = False
    problems = ModuleValidator.validate(fixed, strict=False)
    if problems:
        raise ValueError("Opacus cannot train this model privately: " + "; ".join(str(p) for p in problems))
    return fixed


def has_batch_norm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def poisson_batches(n: int, rate: float, steps: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """``steps`` index batches, each image in each independently with probability ``rate``."""
    for _ in range(steps):
        yield torch.nonzero(torch.rand(n, generator=generator) < rate).view(-1)


@dataclass
class PrivateTraining:
    """One model trained with DP-SGD: route every forward pass that the private loss sees through
    ``module``, step ``optimizer``, and draw batches with ``batches``."""

    config: PrivacyConfig
    module: Any  # opacus.GradSampleModule around the private model
    optimizer: Any  # opacus.optimizers.DPOptimizer around the model's optimizer
    counter: StepCounter
    rate: float
    sigma: float
    batch_size: int
    loss_reduction: str = "sum"
    ghost: bool = False

    def clipped_loss(self, per_image: torch.Tensor) -> Any:
        """The loss to call ``backward()`` on, from each image's own loss (shape (batch,)).

        With ghost clipping, a ``DPTensorFastGradientClipping`` whose ``backward()`` runs Opacus' two
        passes (per-image gradient norms without materialising per-image gradients, then the clipped
        sum); otherwise the plain reduced loss, clipped by the optimizer from per-image gradients.
        """
        if not self.ghost:
            return per_image.sum() if self.loss_reduction == "sum" else per_image.mean()
        from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping

        return DPTensorFastGradientClipping(self.module, self.optimizer, per_image, self.loss_reduction)

    def batches(self, n: int, batch_size: int, generator: torch.Generator,
                images: int | None = None) -> Iterator[torch.Tensor]:
        """The drop-in for genloop.stages.train.batches: ``ceil(images / batch_size)`` Poisson batches."""
        for idx in poisson_batches(n, self.rate, math.ceil((n if images is None else images) / batch_size),
                                   generator):
            self.counter.steps += 1
            yield idx

    def epsilon(self) -> float:
        return epsilon(self.sigma, self.rate, int(self.counter.steps), self.config.delta, self.config.accountant)

    def summary_epsilon(self) -> float:
        """The spent ε, refused (PrivacyAccountingError) when it is negative or not finite."""
        return checked_epsilon(self.epsilon(), self.config.delta)

    def summary(self) -> dict[str, Any]:
        """What model.pt, the MLflow run and the report carry: the spent ε at δ and how it was reached."""
        return {EPSILON: self.summary_epsilon(), DELTA: self.config.delta, "noise_multiplier": self.sigma,
                "max_grad_norm": self.config.max_grad_norm, "sample_rate": self.rate,
                "steps": int(self.counter.steps), "accountant": self.config.accountant,
                "sampling": "poisson", "clipping": "ghost" if self.ghost else "per_sample",
                "target_epsilon": self.config.target_epsilon}

    @contextmanager
    def without_per_sample_gradients(self) -> Iterator[None]:
        """Passes that train something else (the GAN generator's step through the discriminator):
        no per-sample gradients are computed or kept for them."""
        self.module.disable_hooks()
        try:
            yield
        finally:
            self.module.enable_hooks()


def private_training(config: PrivacyConfig, module: nn.Module, optimizer: torch.optim.Optimizer, n: int,
                     batch_size: int, steps: int, loss_reduction: str, ghost: bool = False) -> PrivateTraining:
    """Wrap ``module`` and ``optimizer`` for DP-SGD over ``steps`` planned steps on ``n`` images.

    ``loss_reduction`` says how the loss combines the batch's images, ``sum`` or ``mean``: Opacus
    needs it to recover each image's own gradient. ``module`` must hold no batch norm
    (``opacus_compatible``); its optimizer must be built on its parameters already.

    ``ghost``: ghost clipping (Li et al. 2022; Opacus' ``grad_sample_mode="ghost"``): each image's
    gradient norm comes from its layer inputs and output gradients, without the (batch x parameters)
    per-image gradients, at the price of a second backward pass; the same clipping and noise, so
    the same guarantee. Needs the loss per image (``PrivateTraining.clipped_loss``) and one forward
    pass per step, so the GAN discriminator (a real and a fake pass) keeps per-image gradients.
    """
    from opacus import GradSampleModule
    from opacus.grad_sample import GradSampleModuleFastGradientClipping
    from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping

    if has_batch_norm(module):
        raise ValueError("a privately trained model cannot hold batch norm; pass it through opacus_compatible")
    check_delta(config.delta, n)
    rate = sample_rate(batch_size, n)
    sigma = noise_multiplier(config, rate, steps)
    checked_epsilon(epsilon(sigma, rate, steps, config.delta, config.accountant), config.delta)  # before any work
    settings = dict(noise_multiplier=sigma, max_grad_norm=config.max_grad_norm,
                    expected_batch_size=max(1, round(rate * n)), loss_reduction=loss_reduction)
    if ghost:
        wrapped = GradSampleModuleFastGradientClipping(module, loss_reduction=loss_reduction,
                                                       max_grad_norm=config.max_grad_norm, use_ghost_clipping=True)
        dp_optimizer = DPOptimizerFastGradientClipping(optimizer, **settings)
    else:
        wrapped = GradSampleModule(module, loss_reduction=loss_reduction)
        dp_optimizer = DPOptimizer(optimizer, **settings)
    return PrivateTraining(config, wrapped, dp_optimizer, StepCounter(), rate, sigma, batch_size, loss_reduction, ghost)


def spent(checkpoint: dict[str, Any]) -> dict[str, float]:
    """``{"epsilon": ε, "delta": δ}`` of a model.pt's privacy record; empty for a non-private model."""
    record = checkpoint.get("privacy") or {}
    if EPSILON not in record:
        return {}
    return {EPSILON: float(record[EPSILON]), DELTA: float(record[DELTA])}
