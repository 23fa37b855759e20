"""Training throughput and quality: genloop's loop against a pytorch/examples-style loop (run on demand).

Both arms train the same model class (genloop's MLP VAE, 784-400-20 on MNIST) from the same initial
weights with Adam(lr=1e-3), batch 128, on the same split, in one process, epochs interleaved (A, B,
A, B, ...) so that load from other processes on a shared machine hits both alike.

- genloop: ``genloop.stages.train.fit_vae``: images held as one float tensor, ``randperm`` batches, a
  validation pass per epoch (what ``genloop train`` runs).
- examples: ``vae/main.py`` of pytorch/examples: a Dataset returning one PIL image at a time through
  a ToTensor equivalent (torchvision does not install here), a DataLoader with shuffle, ``loss.item()``
  per step and a test pass per epoch.

images/s counts training images over each epoch's wall time (training plus its held-out pass);
images per CPU-second divides by the process's CPU time instead, which other processes on a shared
machine disturb far less (with ``--threads 1`` it is the work each loop does). The test ELBO is ``genloop.core.models.vae.negative_elbo_nats`` (the examples' test loss, nats per image).

    .venv/bin/python benchmarks/train_throughput.py --data ../shared/data/mnist-t10k --epochs 10
    .venv/bin/python benchmarks/train_throughput.py --epochs 10 --genloop-batch 512   # genloop's batch only
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import genloop  # noqa: F401 - before torch: sets OpenMP's wait policy as every genloop process has it
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from genloop.config import VAEConfig
from genloop.io.datasets import to_tensor
from genloop.io.idx import read_idx_folder
from genloop.core.models.vae import MLPVAE, loss_function, negative_elbo_nats
from genloop.stages.train import fit_vae


def pil_to_tensor(pic: Image.Image) -> torch.Tensor:
    """torchvision's ``ToTensor`` for a mode-L image: HxW uint8 -> 1xHxW float in [0, 1]."""
    img = torch.from_numpy(np.array(pic, np.uint8, copy=True))
    img = img.view(pic.size[1], pic.size[0], 1).permute((2, 0, 1)).contiguous()
    return img.to(dtype=torch.get_default_dtype()).div(255)


class ImageDataset(Dataset):
    """torchvision's MNIST ``__getitem__``: uint8 array -> PIL image -> transform, one item at a time."""

    def __init__(self, images: np.ndarray):
        self.images = torch.from_numpy(images)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return pil_to_tensor(Image.fromarray(self.images[index].numpy(), mode="L")), 0


def examples_arm(model: MLPVAE, train: np.ndarray, test: np.ndarray, seed: int):
    """pytorch/examples vae/main.py's train(epoch) + test(epoch), one call per epoch."""
    loader_rng = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(ImageDataset(train), batch_size=128, shuffle=True, generator=loader_rng)
    test_loader = DataLoader(ImageDataset(test), batch_size=128, shuffle=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def epoch() -> float:
        model.train()
        train_loss = 0.0
        for data, _ in train_loader:
            optimizer.zero_grad()
            recon_batch, mu, logvar = model(data)
            loss = loss_function(recon_batch, data, mu, logvar)[0]
            loss.backward()
            train_loss += loss.item()
            optimizer.step()
        model.eval()
        test_loss = 0.0
        with torch.no_grad():
            for data, _ in test_loader:
                recon_batch, mu, logvar = model(data)
                test_loss += loss_function(recon_batch, data, mu, logvar)[0].item()
        return train_loss / len(train_loader.dataset)

    return epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/mnist-t10k"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--test-share", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=0, help="0: one per core (genloop's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--genloop-batch", type=int, default=128, help="genloop arm only (examples: 128)")
    parser.add_argument("--genloop-lr", type=float, default=1e-3, help="genloop arm only (examples: 1e-3)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    images = read_idx_folder(args.data)[0]
    order = np.random.default_rng(args.seed).permutation(len(images))
    n_test = int(len(images) * args.test_share)
    test_np, train_np = images[order[:n_test]], images[order[n_test:]]
    train_t, test_t = to_tensor(train_np), to_tensor(test_np)
    h, w = train_np.shape[1:]
    print(f"data: {args.data} {len(train_np)} train / {len(test_np)} test images of {h}x{w}; "
          f"{torch.get_num_threads()} threads; torch {torch.__version__}; genloop arm batch {args.genloop_batch}, "
          f"lr {args.genloop_lr}; examples arm batch 128, lr 0.001")

    cfg = VAEConfig(arch="mlp", latent_dim=20, hidden=400, batch_size=args.genloop_batch, lr=args.genloop_lr,
                    images=args.epochs * len(train_np))
    torch.manual_seed(args.seed)
    genloop = fit_vae(cfg, train_t, test_t, torch.device("cpu"), torch.Generator().manual_seed(args.seed))
    genloop_model = genloop.state["vae"]
    examples_model = MLPVAE(20, 400, h, w)
    examples_model.load_state_dict(genloop_model.state_dict())  # same initial weights
    examples_epoch = examples_arm(examples_model, train_np, test_np, args.seed)

    rates: dict[str, list[float]] = {"genloop": [], "examples": []}
    cpu_rates: dict[str, list[float]] = {"genloop": [], "examples": []}
    for epoch in range(1, args.epochs + 1):
        for name, run in (("genloop", genloop.run_epoch), ("examples", examples_epoch)):
            started, cpu_started = time.perf_counter(), time.process_time()
            run()
            rates[name].append(len(train_np) / (time.perf_counter() - started))
            cpu_rates[name].append(len(train_np) / (time.process_time() - cpu_started))
        print(f"epoch {epoch:2d}: genloop {rates['genloop'][-1]:7,.0f} images/s "
              f"({cpu_rates['genloop'][-1]:,.0f} per CPU-s), examples {rates['examples'][-1]:7,.0f} images/s "
              f"({cpu_rates['examples'][-1]:,.0f} per CPU-s), ratio {rates['genloop'][-1] / rates['examples'][-1]:.2f}",
              flush=True)

    ratios = [g / e for g, e in zip(rates["genloop"], rates["examples"])]
    cpu_ratios = [g / e for g, e in zip(cpu_rates["genloop"], cpu_rates["examples"])]
    elbo = {name: negative_elbo_nats(m, test_t, seed=args.seed) for name, m in
            (("genloop", genloop_model), ("examples", examples_model))}
    print(f"median images/s: genloop {statistics.median(rates['genloop']):,.0f}, "
          f"examples {statistics.median(rates['examples']):,.0f}; "
          f"ratio median {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")
    print(f"median images per CPU-second: genloop {statistics.median(cpu_rates['genloop']):,.0f}, "
          f"examples {statistics.median(cpu_rates['examples']):,.0f}; ratio median {statistics.median(cpu_ratios):.2f} "
          f"(min {min(cpu_ratios):.2f}, max {max(cpu_ratios):.2f})")
    print(f"test negative ELBO after {args.epochs} epochs (nats/image, lower is better): "
          f"genloop {elbo['genloop']:.2f}, examples {elbo['examples']:.2f}")


if __name__ == "__main__":
    main()
