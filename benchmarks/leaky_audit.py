"""The membership audit in a deliberately leaky setting: can it see a leak, and does DP-SGD hide it?

    python benchmarks/leaky_audit.py [--data ../shared/data/mnist-t10k] [--images 256] [--epochs 400]

A few hundred MNIST t10k images, trained on for many epochs, is where a generative model memorises
(the shipped runs' 8,000 images for a few epochs are not: their audits sit at chance). The target is
genloop's own MLP VAE trained by ``genloop.stages.train.fit_vae`` on ``--images`` members, once
without privacy and once with DP-SGD (``train.vae.privacy``, target ε, δ = 1e-5, Opacus' RDP
accountant); ``--images`` other images are the non-members. The attack is ``genloop.core.audit``'s:
the per-image loss (minus the ELBO, ``genloop.core.membership.elbo_scores``) of the target, plain and
calibrated by offline LiRA against ``--references`` models trained with the same recipe on disjoint
slices of an auxiliary set (``--references`` x ``--images`` further images; none a candidate).
Reported per arm: ROC AUC and TPR at 1% FPR of both attacks, ε, the training's and the attack's
seconds (the attack's cost: its reference trainings plus the loss passes).
Writes <out>/results.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import genloop  # noqa: F401 - before torch: sets OpenMP's wait policy as every genloop process has it
import torch

from genloop.config import VAEConfig
from genloop.core import audit, membership
from genloop.io.datasets import to_tensor
from genloop.io.idx import read_idx_folder
from genloop.stages.train import epoch_plan, fit_vae


def vae_config(args, epsilon: float | None, n: int) -> VAEConfig:
    privacy = ({"enabled": True, "target_epsilon": epsilon, "noise_multiplier": None, "delta": args.delta,
                "max_grad_norm": args.max_grad_norm} if epsilon is not None else {"enabled": False})
    return VAEConfig(arch="mlp", images=args.epochs * n, batch_size=args.batch_size, latent_dim=args.latent_dim,
                     hidden=args.hidden, beta=1.0, prior="standard", lr=args.lr, privacy=privacy)


def trainer_for(args, epsilon: float | None, record: dict):
    """The target's recipe as ``audit.TrainFn``: the same config for the target and every reference."""
    def train(images: torch.Tensor, seed: int) -> torch.nn.Module:
        cfg = vae_config(args, epsilon, len(images))
        torch.manual_seed(seed)
        trainer = fit_vae(cfg, images, images[:64], torch.device("cpu"), torch.Generator().manual_seed(seed))
        started = time.perf_counter()
        for count in epoch_plan(cfg.images, len(images)):
            trainer.run_epoch(count)
        record.setdefault("train_seconds", []).append(time.perf_counter() - started)
        if trainer.privacy is not None:
            record["epsilon"] = trainer.privacy.summary().get("epsilon")
        return trainer.state["vae"].eval()
    return train


def loss(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Minus each image's ELBO (β = 1, 16 z draws): lower on images the VAE fits better."""
    return -torch.from_numpy(membership.elbo_scores(model, images, seed=0))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/mnist-t10k")
    p.add_argument("--out", default="reports/leaky-audit")
    p.add_argument("--images", type=int, default=256, help="members, non-members and each reference's share")
    p.add_argument("--epochs", type=int, default=400)
    p.add_argument("--references", type=int, default=2)
    p.add_argument("--eps", default="none,10", help="comma-separated arms: none (non-private) or a target ε")
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--latent-dim", type=int, default=20)
    p.add_argument("--hidden", type=int, default=400)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    images, _ = read_idx_folder(Path(args.data))
    x = to_tensor(images[torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed)).numpy()])
    n = args.images
    members, non_members, auxiliary = x[:n], x[n:2 * n], x[2 * n:(2 + args.references) * n]
    rows = []
    for text in args.eps.split(","):
        epsilon = None if text == "none" else float(text)
        record: dict = {"arm": "non-private" if epsilon is None else f"DP-SGD, target ε {epsilon:g}"}
        train = trainer_for(args, epsilon, record)
        target = train(members, args.seed)
        result = audit.run_audit(target, train, loss, members, non_members, auxiliary, args.references, args.seed)
        record.update(loss_auc=result.loss_auc, loss_tpr_at_1pct_fpr=result.loss_tpr, lira_auc=result.lira_auc,
                      lira_tpr_at_1pct_fpr=result.lira_tpr, attack_seconds=result.seconds,
                      auc_2se=2 * membership.standard_error(0.5, n))
        rows.append(record)
        print(json.dumps(record), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
