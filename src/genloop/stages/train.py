"""Stage 4, train: the VAE and the GAN, each an MLflow run nested under the pipeline's parent run.

A training is bounded by the number of training images it sees (``train.<model>.images``), so a
budget costs the same per pixel on any data set: ``ceil(images / n)`` epochs over the n training
images, the last one a partial pass (the first ``images - (epochs - 1) * n`` of its shuffled order).

Training state is saved after every epoch (outputs/checkpoints/<model>/last.pt, outside the DVC
outputs so that `dvc repro`, which clears a stage's outputs before running it, keeps it); a
training started again with the same config and data continues from there, in the same MLflow run.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from genloop.io import atomic, tracking
from genloop.core import divergence, dp_merf, privacy, trust
from genloop.io.arrays import load_npz
from genloop.io.checkpoints import (build_gan, build_vae, load_training_state, restore_training_state,
                                 save_checkpoint, save_training_state)
from genloop.io.datasets import class_names, load_split, to_tensor
from genloop.config import ConfigError, DPMerfConfig, GANConfig, Params, VAEConfig
from genloop.errors import MissingInputError
from genloop.io.imaging import labelled_rows_image, save_grid
from genloop.core.label_fidelity import per_class_labels, trained_classes
from genloop.core.models.diffaugment import diff_augment
from genloop.core.models.conditional import ConditionalPriorDecoder, WithDrawnLabels
from genloop.core.models.gan import (WeightEMA, discriminator_loss, generator_loss, init_weights,
                                recalibrate_batch_norm)
from genloop.core.models.vae import LatentAffine, PriorDecoder, kl_weight, loss_function, loss_per_image, lr_factor
from genloop.paths import ProjectPaths

log = logging.getLogger(__name__)
RESUMED_TAG = "genloop.resumed_from_epoch"
RESUMED_RUN_TAG = "genloop.resumed_from_run"


@dataclass(frozen=True)
class TrainResult:
    model: str
    run_id: str
    parent_run_id: str
    checkpoint: Path
    epochs: int
    images: int  # training images seen (the budget, train.<model>.images)
    final_metrics: dict[str, float]
    images_per_second: float
    resumed_from_epoch: int = 0  # 0: trained from scratch


@dataclass(frozen=True)
class Trainer:
    """One model's training, one epoch per ``run_epoch()`` call.

    ``state`` and ``optimizers`` are what the per-epoch checkpoint holds; ``saved`` is what model.pt
    holds; ``sampler`` turns z into images (for the GAN it is ``saved[sampler_name]``).
    """
    state: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    saved: dict[str, nn.Module]
    sampler: nn.Module
    sampler_name: str | None
    run_epoch: Callable[..., dict[str, float]]  # run_epoch(images=None): one pass, or its first `images` images
    privacy: privacy.PrivateTraining | "MerfTraining" | None = None  # DP-SGD or DP-MERF: .summary() is the spent ε


def select_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def load_training_images(paths: ProjectPaths, augmented: bool = True) -> torch.Tensor:
    """The augment stage's training set; without ``augmented``, only its original (clean) images."""
    file = paths.augment / "train.npz"
    if not file.exists():
        raise MissingInputError(f"{file} is missing; run `genloop augment` first")
    arrays = load_npz(file)
    images = arrays["images"]
    if not augmented and "augmented" in arrays:
        images = images[~arrays["augmented"].astype(bool)]
    return to_tensor(images)


def load_training_labels(paths: ProjectPaths, augmented: bool = True) -> torch.Tensor:
    """The labels of ``load_training_images(paths, augmented)``, row for row (augment keeps each copy's label)."""
    arrays = load_npz(paths.augment / "train.npz")
    if "labels" not in arrays:
        raise MissingInputError(f"{paths.augment / 'train.npz'} has no labels; run `genloop augment` again")
    labels = arrays["labels"]
    if not augmented and "augmented" in arrays:
        labels = labels[~arrays["augmented"].astype(bool)]
    return torch.from_numpy(np.asarray(labels, dtype=np.int64))


@dataclass(frozen=True)
class Labels:
    """What a conditional model trains with: labels of the training and validation images, row for row,
    and the trained classes (the sorted distinct training labels), which the checkpoint stores."""
    train: torch.Tensor
    val: torch.Tensor
    classes: list[int]

    @staticmethod
    def of(train: torch.Tensor, val: torch.Tensor) -> "Labels":
        return Labels(train.long(), val.long(), trained_classes(train))

    def hparams(self) -> dict[str, Any]:
        return {"classes": self.classes}


def batches(n: int, batch_size: int, generator: torch.Generator, images: int | None = None) -> Iterator[torch.Tensor]:
    """Shuffled index batches over the first ``images`` (default all ``n``) of one random order; the
    order draws the same RNG either way, so a partial epoch does not shift later ones."""
    order = torch.randperm(n, generator=generator)[:images]
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def epoch_plan(images: int, n: int) -> list[int]:
    """Images per epoch for a budget of ``images``: full passes over ``n``, the last one partial."""
    if n < 1:
        raise ValueError("the training set is empty")
    full, rest = divmod(images, n)
    return [n] * full + ([rest] if rest else [])


def adam(parameters: Iterator[nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Adam:
    """Adam with the fused kernel (CPU and CUDA): one pass over each tensor instead of a dozen ops;
    15% less CPU per step for the MLP VAE at batch 128."""
    return torch.optim.Adam(parameters, lr=lr, betas=betas, fused=True)


def compiled_or_eager(module: nn.Module, example: torch.Tensor, enabled: bool,
                      backend: str = "inductor") -> Callable[..., Any]:
    """``torch.compile(module)`` if it compiles and runs a training step on ``example``, else ``module``.

    The trial step's side effects (gradients, batch-norm statistics, RNG draws) are undone, so
    turning compile on does not change what is trained. Only full batches should use the compiled
    module: a ragged last batch would recompile it.
    """
    if not enabled:
        return module
    weights, rng = copy.deepcopy(module.state_dict()), torch.get_rng_state()
    try:
        compiled = torch.compile(module, backend=backend, dynamic=False)
        out = compiled(example)
        sum(o.float().sum() for o in (out if isinstance(out, tuple) else (out,))).backward()
    except Exception as exc:  # any compiler failure: train eagerly rather than not at all
        warnings.warn(f"torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); training eagerly",
                      RuntimeWarning, stacklevel=2)
        compiled = module
    finally:
        module.load_state_dict(weights)
        module.zero_grad(set_to_none=True)
        torch.set_rng_state(rng)
    return compiled


def planned_vae_steps(cfg: VAEConfig, train_images: int) -> int:
    """Optimizer steps the whole training takes: what KL warm-up and the lr schedule count against."""
    return max(1, sum(math.ceil(n / cfg.batch_size) for n in epoch_plan(cfg.images, train_images)))


def optimizer_steps(opt: torch.optim.Optimizer) -> int:
    """Steps taken so far, read from Adam's state so that a resumed training continues its schedules."""
    for state in opt.state.values():
        if "step" in state:
            return int(state["step"])
    return 0


@dataclass
class VAEEpochs:
    """One VAE training's epochs: ``__call__(images)`` runs one (see ``fit_vae``).

    ``full_batch`` runs full batches (compiled, or DP-SGD's per-sample-gradient wrapper, which then
    runs every batch); ``draw`` yields the batches' indices (shuffled, or Poisson-sampled under DP)."""
    cfg: VAEConfig
    vae: nn.Module
    prior: LatentAffine
    opt: torch.optim.Optimizer
    data: torch.Tensor
    val: torch.Tensor
    y_train: torch.Tensor | None
    y_val: torch.Tensor | None
    generator: torch.Generator
    total_steps: int
    full_batch: Callable[..., Any]
    draw: Callable[..., Iterator[torch.Tensor]]
    dp: privacy.PrivateTraining | None

    def model_for(self, size: int) -> Callable[..., Any]:
        return self.full_batch if self.dp is not None or size == self.cfg.batch_size else self.vae

    def step(self, idx: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """One optimizer step on batch ``idx``: (loss terms [nelbo, bce, kl], mu, logvar, the KL weight)."""
        cfg, opt = self.cfg, self.opt
        progress = step / self.total_steps
        beta = kl_weight(cfg.beta, cfg.kl_warmup, progress)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(cfg.lr_schedule, progress)
        x = self.data[idx]
        y = () if self.y_train is None else (self.y_train[idx],)
        logits, mu, logvar = self.model_for(len(idx))(x, *y)
        loss, bce, kl = loss_function(logits, x, mu, logvar, beta)
        opt.zero_grad(set_to_none=True)
        (loss if self.dp is None else self.dp.clipped_loss(loss_per_image(logits, x, mu, logvar, beta))).backward()
        opt.step()
        return torch.stack([bce.detach() + kl.detach(), bce.detach(), kl.detach()]), mu, logvar, beta

    def __call__(self, images: int | None = None) -> dict[str, float]:
        cfg, fitted = self.cfg, self.cfg.prior == "fitted_gaussian"
        self.vae.train()
        totals = torch.zeros(3, device=self.data.device)
        moments = latent_moments(cfg.latent_dim, self.data.device)
        step = first_step = optimizer_steps(self.opt)
        beta, seen = cfg.beta, 0
        for idx in self.draw(len(self.data), cfg.batch_size, self.generator, images):
            seen += len(idx)
            terms, mu, logvar, beta = self.step(idx, step)
            step += 1
            totals += terms
            if fitted:
                accumulate_moments(moments, mu, logvar)
        # Refit from this epoch's batches; a last partial epoch of under half the data keeps the previous
        # epoch's fit (the encoder moved little since), unless it is the first epoch.
        if (fitted and seen >= 2 and (2 * seen >= len(self.data) or first_step == 0)
                and bool(totals.isfinite().all())):  # a diverged epoch fails below, naming itself
            self.prior.fit_moments(seen, *moments)
        loss, bce, kl = (totals / max(seen, 1)).tolist()
        metrics = {"train_loss": loss, "train_bce": bce, "train_kl": kl, "val_loss": self.val_loss(),
                   "kl_weight": beta}
        return metrics if self.dp is None else {**metrics, "epsilon": self.dp.epsilon()}

    @torch.no_grad()
    def val_loss(self) -> float:
        """The plain negative ELBO (β = 1) per validation image, in eval mode."""
        self.vae.eval()
        logits, mu, logvar = self.vae(self.val, *(() if self.y_val is None else (self.y_val,)))
        return loss_function(logits, self.val, mu, logvar, 1.0)[0].item() / max(len(self.val), 1)


def latent_moments(latent_dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zeroed float64 sums of posterior means, their outer products and posterior variances."""
    return (torch.zeros(latent_dim, dtype=torch.float64, device=device),
            torch.zeros(latent_dim, latent_dim, dtype=torch.float64, device=device),
            torch.zeros(latent_dim, dtype=torch.float64, device=device))


def accumulate_moments(moments: tuple[torch.Tensor, torch.Tensor, torch.Tensor], mu: torch.Tensor,
                       logvar: torch.Tensor) -> None:
    m = mu.detach().double()
    moments[0].add_(m.sum(0))
    moments[1].add_(m.T @ m)
    moments[2].add_(logvar.detach().double().exp().sum(0))


def fit_vae(cfg: VAEConfig, data: torch.Tensor, val: torch.Tensor, device: torch.device,
            generator: torch.Generator, compile: bool = False, labels: Labels | None = None) -> Trainer:
    """Minimise the β-weighted negative ELBO (Kingma & Welling 2014) with Adam, in shuffled
    mini-batches, with optional KL warm-up and cosine lr decay over the planned steps. The logged
    train_loss and val_loss are the plain negative ELBO (β = 1) per image, comparable across β.

    With ``prior: fitted_gaussian``, each epoch also fits a full-covariance Gaussian to the aggregate
    posterior from the batches it saw (means' covariance + mean posterior variance; no extra pass, and
    the encoder moves little within the last epoch), and the sampler is ``decoder(mean + L z)``;
    ``state["prior"]`` holds the fit, so a resumed training keeps it.

    With ``privacy.enabled``, DP-SGD on the whole model (genloop.core.privacy): Poisson-sampled batches,
    per-image clipped (ghost clipping) and noised gradients, no torch.compile; each epoch reports the
    ε spent so far.

    With ``labels`` (``cfg.conditional``) it trains the conditional VAE on (x, y) pairs (not compiled).
    Images are (N, C, H, W); the model is sized from (C, H, W).
    """
    vae = build_vae({**cfg.model_dump(), **(labels.hparams() if labels else {})}, tuple(data.shape[1:])).to(device)
    prior = LatentAffine(cfg.latent_dim).to(device)
    opt = adam(vae.parameters(), cfg.lr)
    data, val = data.to(device), val.to(device)
    total_steps = planned_vae_steps(cfg, len(data))
    dp = privacy.private_training(cfg.privacy, vae, opt, len(data), cfg.batch_size, total_steps, "sum",
                                  ghost=True) if cfg.privacy.enabled else None
    if dp is not None:  # every batch through the per-sample-gradient wrapper, whatever its size
        opt, full_batch, draw = dp.optimizer, dp.module, dp.batches
    else:
        full_batch = compiled_or_eager(vae, data[:cfg.batch_size],
                                       compile and labels is None and len(data) >= cfg.batch_size)
        draw = batches
    epochs = VAEEpochs(cfg, vae, prior, opt, data, val, labels.train.to(device) if labels else None,
                       labels.val.to(device) if labels else None, generator, total_steps, full_batch, draw, dp)
    fitted = cfg.prior == "fitted_gaussian"
    state: dict[str, nn.Module] = {"vae": vae, **({"prior": prior} if fitted else {})}
    prior_decoder = PriorDecoder if labels is None else ConditionalPriorDecoder
    sampler = prior_decoder(prior, vae.decoder) if fitted else vae.decoder
    return Trainer(state={**state, **({"dp_steps": dp.counter} if dp else {})}, optimizers={"vae": opt},
                   saved=dict(state), sampler=sampler, sampler_name=None, run_epoch=epochs, privacy=dp)


@dataclass
class GANEpochs:
    """One GAN training's epochs: ``__call__(images)`` runs one (see ``fit_gan``).

    ``gen_full``/``disc_full`` run full batches (compiled, or the discriminator's DP-SGD wrapper);
    ``disc_any`` runs the ragged last batch; ``generator_step`` wraps the generator's step (under DP:
    no per-sample gradients for it)."""
    cfg: GANConfig
    gen: nn.Module
    disc: nn.Module
    gen_full: Callable[..., Any]
    disc_full: Callable[..., Any]
    disc_any: Callable[..., Any]
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    ema: WeightEMA | None
    data: torch.Tensor
    y_train: torch.Tensor | None
    generator: torch.Generator
    draw: Callable[..., Iterator[torch.Tensor]] = batches
    generator_step: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
    dp: privacy.PrivateTraining | None = None

    def labels_for(self, idx: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """(real images' labels, fakes' labels drawn from the training labels), or two () if unconditional."""
        if self.y_train is None:
            return (), ()
        drawn = torch.randint(len(self.y_train), (len(idx),), device=self.data.device)
        return (self.y_train[idx],), (self.y_train[drawn],)

    def step(self, idx: torch.Tensor) -> torch.Tensor:
        """One discriminator and one generator step on batch ``idx``: [d_loss, g_loss, d_accuracy]."""
        cfg = self.cfg
        g, d = (self.gen_full, self.disc_full) if len(idx) == cfg.batch_size else (self.gen, self.disc_any)
        real = self.data[idx]
        z = torch.randn(len(idx), cfg.latent_dim, device=self.data.device)
        y_real, y_fake = self.labels_for(idx)
        fake = g(z, *y_fake)
        d_real = d(diff_augment(real, cfg.diffaugment), *y_real)
        d_fake = d(diff_augment(fake.detach(), cfg.diffaugment), *y_fake)
        d_loss = discriminator_loss(cfg.loss, d_real, d_fake)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        with self.generator_step():
            g_loss = generator_loss(cfg.loss, d(diff_augment(fake, cfg.diffaugment), *y_fake))
            self.opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
        self.opt_g.step()
        if self.ema is not None:
            self.ema.update(self.gen)
        accuracy = ((d_real > 0).float().mean() + (d_fake < 0).float().mean()) / 2
        return torch.stack([d_loss.detach(), g_loss.detach(), accuracy.detach()])

    def __call__(self, images: int | None = None) -> dict[str, float]:
        self.gen.train()
        self.disc.train()
        totals = torch.zeros(3, device=self.data.device)
        steps = 0
        for idx in self.draw(len(self.data), self.cfg.batch_size, self.generator, images):
            if len(idx) < 2:  # batch norm needs two samples
                continue
            totals += self.step(idx)
            steps += 1
        d_loss, g_loss, accuracy = (totals / max(steps, 1)).tolist()
        metrics = {"d_loss": d_loss, "g_loss": g_loss, "d_accuracy": accuracy}
        return metrics if self.dp is None else {**metrics, "epsilon": self.dp.epsilon()}


def _gan_networks(cfg: GANConfig, shape: tuple[int, ...], device: torch.device,
                  labels: Labels | None) -> tuple[nn.Module, nn.Module, WeightEMA | None]:
    """Generator and discriminator, DCGAN-initialised, on ``device``, and the generator's EMA if any."""
    gen, disc = build_gan({**cfg.model_dump(), **(labels.hparams() if labels else {})}, shape)
    gen.apply(init_weights)
    disc.apply(init_weights)
    if cfg.privacy.enabled:
        disc = privacy.opacus_compatible(disc)
    gen, disc = gen.to(device), disc.to(device)
    return gen, disc, WeightEMA(gen, cfg.ema_decay).to(device) if cfg.ema_decay > 0 else None


def fit_gan(cfg: GANConfig, data: torch.Tensor, val: torch.Tensor, device: torch.device,
            generator: torch.Generator, compile: bool = False, labels: Labels | None = None) -> Trainer:
    """DCGAN training (Radford et al. 2015) with the non-saturating or hinge loss; optionally an EMA
    of the generator's weights (Yazıcı et al. 2019), which is what gets sampled and exported, and
    DiffAugment (Zhao et al. 2020) on everything the discriminator sees.

    With ``privacy.enabled``, DP-SGD on the discriminator only (genloop.core.privacy): it alone sees real
    images. Its batch norm becomes group norm (in-place activations out of place), batches are Poisson-sampled, and as in Opacus' DCGAN
    example the real and the fake pass both go through its per-sample-gradient wrapper, so image i's
    clipped gradient covers (real_i, fake_i). The generator learns only through the discriminator's
    outputs, so it is post-processing of a private model and inherits its (ε, δ); its own step
    computes no per-sample gradients.

    With ``labels`` (``cfg.conditional``) it trains the conditional GAN: real images with their labels,
    fakes with labels drawn from the training labels (their class distribution); not compiled.
    Images are (N, C, H, W); the networks are sized from (C, H, W)."""
    gen, disc, ema = _gan_networks(cfg, tuple(data.shape[1:]), device, labels)
    data = data.to(device)
    opt_g = adam(gen.parameters(), cfg.lr_g, betas=(cfg.beta1, 0.999))
    opt_d = adam(disc.parameters(), cfg.lr_d, betas=(cfg.beta1, 0.999))
    use_compiled = compile and labels is None and len(data) >= cfg.batch_size and not cfg.privacy.enabled
    gen_full = compiled_or_eager(gen, torch.zeros(cfg.batch_size, cfg.latent_dim, device=device), use_compiled)
    epochs = GANEpochs(cfg, gen, disc, gen_full, compiled_or_eager(disc, data[:cfg.batch_size], use_compiled),
                       disc, opt_g, opt_d, ema, data, labels.train.to(device) if labels else None, generator)
    if cfg.privacy.enabled:  # every discriminator pass through the per-sample-gradient wrapper
        steps = privacy.planned_steps(epoch_plan(cfg.images, len(data)), cfg.batch_size)
        dp = privacy.private_training(cfg.privacy, disc, opt_d, len(data), cfg.batch_size, steps, "mean")
        epochs.opt_d, epochs.disc_full, epochs.disc_any, epochs.dp = dp.optimizer, dp.module, dp.module, dp
        epochs.draw, epochs.generator_step = dp.batches, dp.without_per_sample_gradients
    dp = epochs.dp
    state: dict[str, nn.Module] = {"generator": gen, "discriminator": disc, **({"dp_steps": dp.counter} if dp else {})}
    saved = dict(state)
    if ema is not None:
        state["generator_ema"], saved["generator_ema"] = ema, ema.module
    sampler_name = "generator_ema" if ema is not None else "generator"
    saved.pop("dp_steps", None)
    return Trainer(state=state, optimizers={"generator": opt_g, "discriminator": epochs.opt_d}, saved=saved,
                   sampler=saved[sampler_name], sampler_name=sampler_name, run_epoch=epochs, privacy=dp)


@dataclass
class MerfTraining:
    """A DP-MERF training as one "epoch" (see ``fit_dp_merf``): the one private release, then the
    generator's steps against it. ``summary()`` is the release's privacy record once it has run."""
    cfg: DPMerfConfig
    gen: nn.Module
    data: torch.Tensor
    labels: torch.Tensor
    seed: int
    released: dp_merf.Release | None = None

    def __call__(self, images: int | None = None) -> dict[str, float]:
        cfg = self.cfg
        n = len(self.data)
        if cfg.delta > 1.0 / n:  # a larger δ lets a mechanism publish one training image outright
            raise ConfigError(f"train.gan.dp_merf.delta {cfg.delta:g} exceeds 1 / training images (1/{n}); "
                              f"set it to {1 / n:.2g} or less (1e-5 is usual)")
        features = dp_merf.FeatureMap(tuple(self.data.shape[1:]),
                                      [dp_merf.View(1, cfg.bandwidth, cfg.features)], seed=self.seed)
        self.released = dp_merf.release(features, self.data.cpu(), self.labels.cpu(), self.gen.num_classes,
                                        cfg.epsilon, cfg.delta, seed=self.seed + 1, count_weight=cfg.count_weight)
        losses: list[float] = []
        dp_merf.train_generator(self.gen, features, self.released, cfg.steps, cfg.batch_size, cfg.lr, self.seed,
                                on_step=lambda step, loss: losses.append(loss))
        tail = losses[-max(1, len(losses) // 20):]  # the last 5% of steps: the loss the generator ends at
        return {"mmd_loss": float(np.mean(tail)), "epsilon": float(cfg.epsilon)}

    def summary(self) -> dict[str, Any]:
        if self.released is None:
            raise RuntimeError("DP-MERF has not released anything yet")
        return self.released.summary()


def fit_dp_merf(cfg: GANConfig, data: torch.Tensor, val: torch.Tensor, device: torch.device,
                generator: torch.Generator, compile: bool = False, labels: Labels | None = None) -> Trainer:
    """The conditional GAN's generator trained by DP-MERF (genloop.core.dp_merf) instead of the GAN game:
    the training images are touched once, by one (ε, δ) release of their per-class random-feature mean
    embedding; the generator is then fitted to it (post-processing: no further privacy cost). The
    generator is the project's own, so checkpoints, export, serving and the gate treat it as any
    conditional GAN; no discriminator is trained. On CPU (the release and the feature map are small)."""
    if labels is None:
        raise ConfigError("train.gan.method: dp_merf needs train.gan.conditional: true and labelled training images")
    if cfg.dp_merf.generator == "merf" and (data.shape[-1] % 4 or data.shape[-2] % 4):
        raise ConfigError(f"train.gan.dp_merf.generator: merf needs image sides that are multiples of 4 (got "
                          f"{data.shape[-2]}x{data.shape[-1]}); use generator: dcgan")
    gen, _ = build_gan({**cfg.model_dump(), **labels.hparams()}, tuple(data.shape[1:]))
    if cfg.dp_merf.generator == "dcgan":  # the DCGAN's N(0, 0.02) init; merf keeps torch's defaults
        gen.apply(init_weights)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    epochs = MerfTraining(cfg.dp_merf, gen, data, labels.train, seed)
    return Trainer(state={"generator": gen}, optimizers={}, saved={"generator": gen}, sampler=gen,
                   sampler_name="generator", run_epoch=epochs, privacy=epochs)


FITTERS: dict[str, Callable[..., Trainer]] = {"vae": fit_vae, "gan": fit_gan}


def fitter(kind: str, cfg: VAEConfig | GANConfig) -> Callable[..., Trainer]:
    """The training ``kind``'s config asks for: DP-MERF for a GAN with ``method: dp_merf``."""
    return fit_dp_merf if getattr(cfg, "method", "adversarial") == "dp_merf" else FITTERS[kind]


def training_plan(cfg: VAEConfig | GANConfig, n: int) -> list[int]:
    """Images per epoch: the images budget's epochs, or one step holding the whole of a DP-MERF training."""
    return [n] if getattr(cfg, "method", "adversarial") == "dp_merf" else epoch_plan(cfg.images, n)


def training_fingerprint(kind: str, cfg: VAEConfig | GANConfig, seed: int, device: torch.device,
                         inputs: list[Path]) -> str:
    """What a saved training state must match to be resumed: model config, seed, device and the
    bytes of the training and validation files."""
    digest = hashlib.sha256(json.dumps(
        {"kind": kind, "config": cfg.model_dump(), "seed": seed, "device": device.type}, sort_keys=True,
    ).encode())
    for file in inputs:
        with file.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _flat(prefix: str, obj: dict[str, Any]) -> dict[str, str]:
    return {f"{prefix}{k}": str(v) for k, v in obj.items()}


def _start_run(experiment_id: str, kind: str, parent_run_id: str, paths: ProjectPaths,
               logged_params: dict[str, Any], tags: dict[str, str] | None = None) -> str:
    return tracking.start_child_run(experiment_id, parent_run_id, tracking.child_run_name(kind, paths), paths,
                                    params=logged_params,
                                    tags={"genloop.model": kind, **(tags or {})}, data_input=True)


def _resume_run(experiment_id: str, run_id: str, epoch: int, kind: str, parent_run_id: str,
                paths: ProjectPaths, logged_params: dict[str, Any]) -> str:
    """Continue ``run_id`` (re-parented under this pipeline); if it is gone, a new run tagged with it."""
    if tracking.reopen_child_run(experiment_id, run_id, parent_run_id, {RESUMED_TAG: str(epoch)}):
        return run_id
    return _start_run(experiment_id, kind, parent_run_id, paths, logged_params,
                      tags={RESUMED_RUN_TAG: run_id, RESUMED_TAG: str(epoch)})


@dataclass(frozen=True)
class TrainingInputs:
    """What one model trains from: training images (N, C, H, W), validation images, labels if conditional."""
    data: torch.Tensor
    val: torch.Tensor
    labels: Labels | None

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images, what the model and its checkpoint are sized from."""
        c, h, w = (int(d) for d in self.data.shape[1:])
        return c, h, w


def load_training_inputs(cfg: VAEConfig | GANConfig, paths: ProjectPaths) -> TrainingInputs:
    data = load_training_images(paths, cfg.augmented)
    val_images, val_labels = load_split(paths, "val")
    labels = (Labels.of(load_training_labels(paths, cfg.augmented), torch.from_numpy(val_labels.astype(np.int64)))
              if cfg.conditional else None)
    return TrainingInputs(data, to_tensor(val_images), labels)


def shape_param(shape: tuple[int, int, int]) -> str:
    """The ``image_shape`` param: ``HxW`` for grey (as before colour), ``HxWxC`` for colour."""
    c, h, w = shape
    return f"{h}x{w}" if c == 1 else f"{h}x{w}x{c}"


def _open_run(kind: str, cfg: VAEConfig | GANConfig, params: Params, paths: ProjectPaths,
              parent_run_id: str | None, device: torch.device, inputs: TrainingInputs,
              saved: dict[str, Any] | None) -> tuple[str, str, list[dict[str, float]], int]:
    """The MLflow run this training logs to (the interrupted one when resuming): (run id, parent run id,
    history so far, epochs already done)."""
    experiment_id = tracking.setup(params.mlflow, paths)
    parent_run_id = parent_run_id or tracking.parent_for_dvc(params.mlflow, paths)
    logged_params = {**_flat("", cfg.model_dump()), "seed": params.seed, "device": device.type,
                     "train_images": len(inputs.data), "image_shape": shape_param(inputs.shape)}
    if saved is None:
        return _start_run(experiment_id, kind, parent_run_id, paths, logged_params), parent_run_id, [], 0
    history, start = [dict(row) for row in saved["history"]], int(saved["epoch"])
    run_id = _resume_run(experiment_id, str(saved["run_id"]), start, kind, parent_run_id, paths, logged_params)
    log.warning("%s: resuming from epoch %d of %d (%s), MLflow run %s", kind, start,
                len(training_plan(cfg, len(inputs.data))), paths.training_state(kind), run_id)
    return run_id, parent_run_id, history, start


def _run_epochs(kind: str, cfg: VAEConfig | GANConfig, trainer: Trainer, plan: list[int], start: int,
                history: list[dict[str, float]], run_id: str, checkpoint: Callable[[int], None]) -> None:
    """Epochs ``start + 1 ..`` of ``plan``, each logged to ``history`` and MLflow and checkpointed."""
    from tqdm.auto import tqdm

    epochs = len(plan)
    bar = tqdm(range(start + 1, epochs + 1), initial=start, total=epochs, desc=f"train {kind}",
               unit="epoch", disable=None)
    progress = ProgressLog(kind, epochs, sum(plan), enabled=bar.disable)
    for epoch in bar:
        started = time.perf_counter()
        metrics = trainer.run_epoch(plan[epoch - 1])
        divergence.check_finite(kind, epoch, metrics)  # before a diverged state is saved
        metrics["images_per_s"] = plan[epoch - 1] / max(time.perf_counter() - started, 1e-9)
        metrics["images"] = float(sum(plan[:epoch]))
        history.append({"epoch": epoch, **metrics})
        checkpoint(epoch)
        tracking.log_metric_rows(run_id, [history[-1]])
        bar.set_postfix({k: f"{v:.4g}" if k not in ("images_per_s", "images") else f"{v:,.0f}"
                         for k, v in metrics.items()})
        progress.epoch_done(epoch, metrics)


def _sample_grid(trainer: Trainer, cfg: VAEConfig | GANConfig, params: Params, labels: Labels | None,
                 device: torch.device, path: Path, names: dict[int, str] | None = None) -> Path:
    """The trained sampler (EMA generator's batch norm recalibrated) in eval mode, and its grid at ``path``
    (a conditional model's rows labelled with the class ``names`` where the data names them)."""
    sampler = trainer.sampler
    if trainer.sampler_name == "generator_ema":
        recalibrate_batch_norm(sampler if labels is None else WithDrawnLabels(sampler, labels.train, params.seed),
                               cfg.latent_dim, params.seed)
    sampler.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    if labels is not None:
        return save_class_rows(sampler, cfg.latent_dim, labels.classes, params.train.sample_grid, params.seed, path,
                               names)
    with torch.no_grad():
        z = torch.randn(params.train.sample_grid, cfg.latent_dim,
                        generator=torch.Generator().manual_seed(params.seed)).to(device)
        samples = sampler(z).cpu().numpy()
    return save_grid(samples, path)


def _save_outputs(kind: str, cfg: VAEConfig | GANConfig, trainer: Trainer, inputs: TrainingInputs, run_id: str,
                  parent_run_id: str, history: list[dict[str, float]], grid: Path, out_dir: Path) -> None:
    """model.pt (shape (C, H, W)), history.csv and run.json, and their MLflow artifacts."""
    labels = inputs.labels
    spent = {"privacy": trainer.privacy.summary()} if trainer.privacy is not None else {}
    save_checkpoint(out_dir / "model.pt", kind, {**cfg.model_dump(), **(labels.hparams() if labels else {})},
                    inputs.shape, trainer.saved,
                    extra={"epochs": len(training_plan(cfg, len(inputs.data))), "images": cfg.images,
                           "run_id": run_id, **spent},
                    sampler=trainer.sampler_name)
    if spent:
        tracking.log_privacy(run_id, spent["privacy"])
    _write_history(out_dir / "history.csv", history)
    atomic.write_json(out_dir / "run.json", {"run_id": run_id, "parent_run_id": parent_run_id, "model": kind})
    tracking.log_files(run_id, [grid, out_dir / "history.csv"])
    tracking.log_files(run_id, [out_dir / "model.pt"], artifact_path="checkpoint")


def warn_if_overlong(kind: str, images: int, train_images: int, max_epochs: int, run_id: str) -> None:
    """Warn (log and MLflow tag ``genloop.budget_warning``) before a training whose images budget means
    hundreds of epochs over a tiny training set: hours spent memorising it (genloop.core.trust)."""
    warning = trust.budget_warning(kind, images, train_images, max_epochs)
    if warning is not None:
        log.warning("%s", warning)
        tracking.set_tags(run_id, {trust.BUDGET_TAG: warning})


def train_model(kind: str, params: Params, paths: ProjectPaths, parent_run_id: str | None = None,
                resume: bool = True) -> TrainResult:
    """Train ``kind`` ('vae' or 'gan') on the augmented training split and log it as a child run.

    With ``resume`` (the default), a training state saved by an interrupted run with the same config
    and data is continued from its last finished epoch; any other state is ignored and overwritten.
    """
    cfg: VAEConfig | GANConfig = getattr(params.train, kind)
    torch.set_num_threads(params.train.torch_threads())
    torch.manual_seed(params.seed)
    device = select_device(params.train.device)
    inputs = load_training_inputs(cfg, paths)
    batch_rng = torch.Generator().manual_seed(params.seed)
    trainer = fitter(kind, cfg)(cfg, inputs.data, inputs.val, device, batch_rng, params.train.compile,
                                **({"labels": inputs.labels} if inputs.labels else {}))
    plan = training_plan(cfg, len(inputs.data))
    state_file = paths.training_state(kind)
    fingerprint = training_fingerprint(kind, cfg, params.seed, device,
                                       [paths.augment / "train.npz", paths.clean / "val.npz"])
    saved = load_training_state(state_file, fingerprint) if resume else None
    if saved is not None:
        restore_training_state(saved, trainer.state, trainer.optimizers, batch_rng)
    run_id, parent_run_id, history, start = _open_run(kind, cfg, params, paths, parent_run_id, device, inputs, saved)
    warn_if_overlong(kind, sum(plan), len(inputs.data), params.train.warn_epochs, run_id)
    out_dir = paths.train(kind)
    with tracking.finished_or_failed(run_id):
        if saved is not None:  # epochs finished before the stop but not yet logged (or a new run)
            logged = tracking.logged_steps(run_id, "images_per_s")
            tracking.log_metric_rows(run_id, [row for row in history if int(row["epoch"]) not in logged])
        _run_epochs(kind, cfg, trainer, plan, start, history, run_id,
                    lambda epoch: save_training_state(state_file, fingerprint, epoch, run_id, history,
                                                      trainer.state, trainer.optimizers, batch_rng))
        grid = _sample_grid(trainer, cfg, params, inputs.labels, device, out_dir / "samples.png",
                            class_names(paths) if inputs.labels else None)
        _save_outputs(kind, cfg, trainer, inputs, run_id, parent_run_id, history, grid, out_dir)
    state_file.unlink(missing_ok=True)  # model.pt now holds the result; a new training starts fresh
    final = {k: v for k, v in history[-1].items() if k not in ("epoch", "images")}
    throughput = float(np.average([h["images_per_s"] for h in history], weights=plan[:len(history)]))
    return TrainResult(kind, run_id, parent_run_id, out_dir / "model.pt", len(plan), cfg.images, final, throughput,
                       start)


@torch.no_grad()
def save_class_rows(sampler: nn.Module, latent_dim: int, classes: list[int], sample_grid: int, seed: int,
                    path: Path, names: dict[int, str] | None = None) -> Path:
    """A conditional sampler's grid: one row per class, labelled with its name (``names``, else its value),
    about ``sample_grid`` images in all."""
    from genloop.core.label_fidelity import conditional_samples

    per_class = max(1, sample_grid // len(classes))
    images = conditional_samples(sampler, per_class_labels(classes, per_class), latent_dim, seed).numpy()
    atomic.write_bytes(path, labelled_rows_image(images, [(names or {}).get(c, str(c)) for c in classes]))
    return path


class ProgressLog:
    """Progress lines through ``logging`` when no progress bar is drawn (no terminal: tqdm is off):
    one every ``every_s`` seconds at most, and always the last epoch."""

    def __init__(self, kind: str, epochs: int, images: int, enabled: bool, every_s: float = 10.0):
        self.kind, self.epochs, self.images, self.enabled, self.every_s = kind, epochs, images, enabled, every_s
        self.last = time.perf_counter()

    def epoch_done(self, epoch: int, metrics: dict[str, float]) -> None:
        now = time.perf_counter()
        if not self.enabled or (now - self.last < self.every_s and epoch < self.epochs):
            return
        self.last = now
        losses = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k not in ("images_per_s", "images"))
        log.info("train %s: epoch %d/%d, %s/%s images, %s, %.0f images/s", self.kind, epoch, self.epochs,
                 f"{metrics['images']:,.0f}", f"{self.images:,}", losses, metrics["images_per_s"])


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    keys = list(history[0])
    lines = [",".join(keys)] + [",".join(f"{row[k]:.6g}" if k != "epoch" else str(row[k]) for k in keys) for row in history]
    atomic.write_text(path, "\n".join(lines) + "\n")
