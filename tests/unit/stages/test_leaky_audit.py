"""The calibrated membership audit (genloop.core.audit) on genloop's own VAE as the train stage fits it:
in a leaky setting (a few dozen images, many epochs) it sees the non-private model's leak, and the
DP-SGD model trained the same way shows none beyond chance. benchmarks/leaky_audit.py is the
full-size version (MNIST, hundreds of images) whose figures BENCHMARKS.md gives."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from genloop.config import VAEConfig
from genloop.core import audit, membership
from genloop.stages.train import epoch_plan, fit_vae

N = 48  # members, non-members and each of the two references' share


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.float32) / 16.0
    order = np.random.default_rng(0).permutation(len(images))[:4 * N]
    return torch.from_numpy(images[order]).unsqueeze(1)


def recipe(private: bool):
    """300 epochs of batch 16; the private one DP-SGD at ε = 1 (δ 1e-5) for 100 epochs (its per-image
    clipping makes each step several times dearer; fewer steps also mean less noise for the same ε)."""
    privacy = {"enabled": True, "target_epsilon": 1.0, "noise_multiplier": None} if private else {"enabled": False}
    epochs, batch_size = (100 if private else 300), 16

    def train(images: torch.Tensor, seed: int) -> torch.nn.Module:
        cfg = VAEConfig(arch="mlp", images=epochs * len(images), batch_size=batch_size, latent_dim=8, hidden=256,
                        beta=1.0, prior="standard", lr=3e-3, privacy=privacy)
        torch.manual_seed(seed)
        trainer = fit_vae(cfg, images, images[:8], torch.device("cpu"), torch.Generator().manual_seed(seed))
        for count in epoch_plan(cfg.images, len(images)):
            trainer.run_epoch(count)
        return trainer.state["vae"].eval()
    return train


def loss(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return -torch.from_numpy(membership.elbo_scores(model, images, seed=0, draws=4))


def run(digits: torch.Tensor, private: bool) -> audit.AuditResult:
    train = recipe(private)
    members, non_members, auxiliary = digits[:N], digits[N:2 * N], digits[2 * N:]
    return audit.run_audit(train(members, 0), train, loss, members, non_members, auxiliary, references=2)


def test_the_audit_sees_the_leak_of_a_non_private_vae_trained_long_on_few_images(digits):
    result = run(digits, private=False)
    assert result.lira_auc >= 0.7 and result.loss_auc >= 0.7
    assert result.lira_tpr > 0.05


def test_the_same_vae_trained_with_dp_sgd_shows_no_leak_beyond_chance(digits):
    result = run(digits, private=True)
    assert abs(result.lira_auc - 0.5) < 3 * membership.standard_error(0.5, N)  # chance, within 3 s.e. (~0.18)
