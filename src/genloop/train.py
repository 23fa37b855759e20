"""Stage 4, train: the VAE and the GAN, each an MLflow run nested under the pipeline's parent run."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from genloop import atomic, tracking
from genloop.arrays import load_npz
from genloop.checkpoints import build_gan, build_vae, save_checkpoint
from genloop.clean import load_split
from genloop.config import GANConfig, Params, VAEConfig
from genloop.imaging import save_grid
from genloop.models.gan import init_weights
from genloop.models.vae import loss_function
from genloop.paths import ProjectPaths


@dataclass(frozen=True)
class TrainResult:
    model: str
    run_id: str
    parent_run_id: str
    checkpoint: Path
    epochs: int
    final_metrics: dict[str, float]
    images_per_second: float


def select_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) -> float (N, 1, H, W) in [0, 1], once, so batches are plain slices."""
    return torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0).unsqueeze(1)


def load_training_images(paths: ProjectPaths) -> torch.Tensor:
    file = paths.augment / "train.npz"
    if not file.exists():
        raise FileNotFoundError(f"{file} is missing; run `genloop augment` first")
    return to_tensor(load_npz(file)["images"])


def batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def fit_vae(cfg: VAEConfig, data: torch.Tensor, val: torch.Tensor, device: torch.device,
            generator: torch.Generator) -> tuple[Any, Callable[[], Iterator[dict[str, float]]]]:
    shape = (data.shape[2], data.shape[3])
    vae = build_vae(cfg.model_dump(), shape).to(device)
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.lr)
    data, val = data.to(device), val.to(device)

    def epochs() -> Iterator[dict[str, float]]:
        for _ in range(cfg.epochs):
            vae.train()
            totals = torch.zeros(3, device=device)
            for idx in batches(len(data), cfg.batch_size, generator):
                x = data[idx]
                logits, mu, logvar = vae(x)
                loss, bce, kl = loss_function(logits, x, mu, logvar, cfg.beta)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                totals += torch.stack([loss.detach(), bce.detach(), kl.detach()])
            vae.eval()
            with torch.no_grad():
                logits, mu, logvar = vae(val)
                val_loss = loss_function(logits, val, mu, logvar, cfg.beta)[0].item() / max(len(val), 1)
            loss, bce, kl = (totals / len(data)).tolist()
            yield {"train_loss": loss, "train_bce": bce, "train_kl": kl, "val_loss": val_loss}

    return {"vae": vae}, epochs


def fit_gan(cfg: GANConfig, data: torch.Tensor, val: torch.Tensor, device: torch.device,
            generator: torch.Generator) -> tuple[Any, Callable[[], Iterator[dict[str, float]]]]:
    """Non-saturating DCGAN training (Goodfellow et al. 2014; Radford et al. 2015)."""
    shape = (data.shape[2], data.shape[3])
    gen, disc = build_gan(cfg.model_dump(), shape)
    gen.apply(init_weights)
    disc.apply(init_weights)
    gen, disc, data = gen.to(device), disc.to(device), data.to(device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, 0.999))

    def epochs() -> Iterator[dict[str, float]]:
        for _ in range(cfg.epochs):
            gen.train()
            disc.train()
            totals = torch.zeros(3, device=device)
            steps = 0
            for idx in batches(len(data), cfg.batch_size, generator):
                if len(idx) < 2:  # batch norm needs two samples
                    continue
                real = data[idx]
                z = torch.randn(len(idx), cfg.latent_dim, device=device)
                fake = gen(z)
                d_real, d_fake = disc(real), disc(fake.detach())
                d_loss = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                          + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                d_gen = disc(fake)
                g_loss = F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen))
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                opt_g.step()
                accuracy = ((d_real > 0).float().mean() + (d_fake < 0).float().mean()) / 2
                totals += torch.stack([d_loss.detach(), g_loss.detach(), accuracy.detach()])
                steps += 1
            d_loss, g_loss, accuracy = (totals / max(steps, 1)).tolist()
            yield {"d_loss": d_loss, "g_loss": g_loss, "d_accuracy": accuracy}

    return {"generator": gen, "discriminator": disc}, epochs


def _flat(prefix: str, obj: dict[str, Any]) -> dict[str, str]:
    return {f"{prefix}{k}": str(v) for k, v in obj.items()}


def train_model(kind: str, params: Params, paths: ProjectPaths, parent_run_id: str | None = None) -> TrainResult:
    """Train ``kind`` ('vae' or 'gan') on the augmented training split and log it as a child run."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric
    from tqdm.auto import tqdm

    cfg: VAEConfig | GANConfig = getattr(params.train, kind)
    fit = {"vae": fit_vae, "gan": fit_gan}[kind]
    torch.set_num_threads(params.train.threads or os.cpu_count() or 1)
    torch.manual_seed(params.seed)
    device = select_device(params.train.device)
    data = load_training_images(paths)
    val = to_tensor(load_split(paths, "val")[0])
    shape = (int(data.shape[2]), int(data.shape[3]))

    experiment_id = tracking.setup(params.mlflow, paths)
    parent_run_id = parent_run_id or tracking.parent_for_dvc(params.mlflow, paths)
    client = MlflowClient()
    run = client.create_run(experiment_id, run_name=kind, tags={
        "mlflow.parentRunId": parent_run_id, "genloop.model": kind, **tracking.lineage_tags(paths),
    })
    run_id = run.info.run_id
    out_dir = paths.train(kind)
    try:
        client.log_batch(run_id, params=[
            *(_param(k, v) for k, v in _flat("", cfg.model_dump()).items()),
            _param("seed", params.seed), _param("device", device.type),
            _param("train_images", len(data)), _param("image_shape", f"{shape[0]}x{shape[1]}"),
        ])
        tracking.log_data_input(run_id, paths)
        modules, epochs = fit(cfg, data, val, device, torch.Generator().manual_seed(params.seed))
        history: list[dict[str, float]] = []
        bar = tqdm(epochs(), total=cfg.epochs, desc=f"train {kind}", unit="epoch", disable=None)
        started = time.perf_counter()
        for epoch, metrics in enumerate(bar, start=1):
            metrics["images_per_s"] = len(data) / max(time.perf_counter() - started, 1e-9)
            history.append({"epoch": epoch, **metrics})
            stamp = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(k, float(v), stamp, epoch) for k, v in metrics.items()])
            bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items() if k != "images_per_s"})
            started = time.perf_counter()  # logging is not training time

        sampler = modules["vae"].decoder if kind == "vae" else modules["generator"]
        sampler.eval()
        with torch.no_grad():
            z = torch.randn(params.train.sample_grid, cfg.latent_dim,
                            generator=torch.Generator().manual_seed(params.seed)).to(device)
            samples = sampler(z).cpu().numpy()
        out_dir.mkdir(parents=True, exist_ok=True)
        grid = save_grid(samples, out_dir / "samples.png")
        save_checkpoint(out_dir / "model.pt", kind, cfg.model_dump(), shape, modules,
                        extra={"epochs": cfg.epochs, "run_id": run_id})
        _write_history(out_dir / "history.csv", history)
        final = {k: v for k, v in history[-1].items() if k != "epoch"}
        throughput = float(np.mean([h["images_per_s"] for h in history]))
        atomic.write_json(out_dir / "run.json", {"run_id": run_id, "parent_run_id": parent_run_id, "model": kind})
        client.log_artifact(run_id, str(grid))
        client.log_artifact(run_id, str(out_dir / "history.csv"))
        client.log_artifact(run_id, str(out_dir / "model.pt"), artifact_path="checkpoint")
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    return TrainResult(kind, run_id, parent_run_id, out_dir / "model.pt", cfg.epochs, final, throughput)


def _param(key: str, value: Any):
    from mlflow.entities import Param

    return Param(key, str(value))


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    keys = list(history[0])
    lines = [",".join(keys)] + [",".join(f"{row[k]:.6g}" if k != "epoch" else str(row[k]) for k in keys) for row in history]
    atomic.write_text(path, "\n".join(lines) + "\n")


def read_run_id(paths: ProjectPaths, kind: str) -> str:
    file = paths.train(kind) / "run.json"
    if not file.exists():
        raise FileNotFoundError(f"{file} is missing; run `genloop train --model {kind}` first")
    return str(json.loads(file.read_text())["run_id"])
