"""Private synthetic MNIST: DP-MERF at ε = 10 and ε = 1 (δ = 1e-5), judged by TSTR and FID.

    python benchmarks/private_mnist.py [--data ../shared/data/mnist-t10k] [--out reports/private-mnist]

Data: MNIST t10k, the first 8,000 images the private training set, the last 2,000 the real test
set (7.5x fewer training images than the literature's 60,000, which makes privacy harder: the
noise on a mean embedding shrinks as 1/n). For each arm (non-private, ε = 10, ε = 1) it releases
the per-class mean embedding once, trains the generator against it, draws 8,000 labelled samples
(labels from the released class shares), and reports:
- TSTR: the evaluation classifier's architecture (CNN, 15 epochs) trained on the samples and tested
  on the 2,000 real test images; the real floor is the same classifier trained on the 8,000 real images;
- FID against the test set in the penultimate features of the real-trained classifier (genloop's
  feature space; not Inception, so not comparable with published FIDs in absolute terms);
- CPU seconds (process time, all threads) and wall seconds of the private part (release + generator
  training), the budget figure on a shared machine.
Writes <out>/results.json and <out>/grid-eps<ε>.png (one row per class).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from genloop.core import dp_merf
from genloop.core.models.classifier import DigitClassifier, embed, train_classifier
from genloop.core.quality import fid
from genloop.core.tstr import accuracy, tstr
from genloop.io.idx import find_idx_parts, read_idx_part

DELTA = 1e-5


def load(folder: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    images, labels = read_idx_part(find_idx_parts(folder)[0])
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels)
    return x[:8000], y[:8000], x[-2000:], y[-2000:]


def views(args) -> list[dp_merf.View]:
    """--views "pool:bandwidth:features:weight,..." (e.g. "1:0.3:1500:1,2:0.3:1000:1")."""
    return [dp_merf.View(int(p), float(b), int(f), float(w))
            for p, b, f, w in (v.split(":") for v in args.views.split(","))]


def train_arm(args, x, y, epsilon):
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    features = dp_merf.FeatureMap(x.shape[1:], views(args), seed=args.seed)
    released = dp_merf.release(features, x, y, 10, epsilon, DELTA, seed=args.seed + 1,
                               count_weight=args.count_weight)
    generator = dp_merf.MerfGenerator(args.latent, x.shape[1:], 10, args.hidden, args.channels)
    dp_merf.train_generator(generator, features, released, args.steps, args.batch, args.lr, args.seed,
                            not args.biased, on_step=lambda i, loss: print(f"  step {i} loss {loss:.4f}", flush=True)
                            if i % 100 == 0 else None)
    return generator, released, time.process_time() - start_cpu, time.perf_counter() - start_wall


def real_classifier(args, x, y, out: Path):
    """The floor classifier (also the FID feature network), kept in <out> so reruns skip its training."""
    path = out / f"real-classifier-e{args.tstr_epochs}-s{args.seed}.pt"
    if path.exists():
        model = DigitClassifier(28, 28, 64, 10)
        model.load_state_dict(torch.load(path))
        return model.eval()
    model = train_classifier(x, y, 64, 10, args.tstr_epochs, args.seed)
    torch.save(model.state_dict(), path)
    return model


def grid_png(images: torch.Tensor, rows: int, path: Path) -> None:
    from PIL import Image

    cols = len(images) // rows
    arr = (images[:, 0].numpy() * 255).round().astype(np.uint8)
    h, w = arr.shape[1:]
    canvas = np.full((rows * (h + 2), cols * (w + 2)), 255, np.uint8)
    for i, im in enumerate(arr):
        r, c = divmod(i, cols)
        canvas[r * (h + 2):r * (h + 2) + h, c * (w + 2):c * (w + 2) + w] = im
    Image.fromarray(canvas).resize((canvas.shape[1] * 2, canvas.shape[0] * 2), Image.NEAREST).save(path)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="../shared/data/mnist-t10k")
    p.add_argument("--out", default="reports/private-mnist")
    p.add_argument("--eps", default="none,10,1")
    p.add_argument("--views", default="1:0.3:2000:1")
    p.add_argument("--biased", action="store_true", help="the plain (biased) MMD estimate of the paper")
    p.add_argument("--count-weight", type=float, default=0.25)
    p.add_argument("--latent", type=int, default=16)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tstr-epochs", type=int, default=15)
    p.add_argument("--cache", default=None, help="folder for the real-data classifier (default: --out)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x, y, xt, yt = load(Path(args.data))
    arms = []
    for eps_text in args.eps.split(","):  # the private part first, then the evaluation
        eps = None if eps_text == "none" else float(eps_text)
        arms.append((eps_text, eps, *train_arm(args, x, y, eps)))
    real = real_classifier(args, x, y, Path(args.cache or out))
    test_feats, _ = embed(real, xt)
    rows = [{"method": "real data (floor)", "epsilon": None, "tstr": accuracy(real, xt, yt),
             "fid": fid(test_feats, embed(real, x)[0])}]
    print(rows[-1], flush=True)
    for eps_text, eps, generator, released, cpu, wall in arms:
        labels = dp_merf.draw_labels(released, len(x), seed=args.seed + 2)
        synth = dp_merf.sample(generator, labels, seed=args.seed + 3)
        result = tstr(synth, labels, xt, yt, 10, args.tstr_epochs, args.seed)
        rows.append({"method": "DP-MERF" if eps else "MERF (no noise)", "epsilon": eps, "delta": DELTA if eps else None,
                     "sigma": released.sigma, "tstr": result.accuracy, "fid": fid(test_feats, embed(real, synth)[0]),
                     "cpu_s": cpu, "wall_s": wall})
        print(rows[-1], flush=True)
        grid = dp_merf.sample(generator, torch.arange(10).repeat_interleave(10), seed=args.seed + 4)
        grid_png(grid, 10, out / f"grid-eps{eps_text}.png")
    (out / "results.json").write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
