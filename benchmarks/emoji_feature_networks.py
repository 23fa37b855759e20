"""How much the FID ratio of a colour data set depends on the evaluation's feature network: re-score a
trained project's GAN and VAE under feature networks trained in different ways (run on demand).

    cd PROJECT && python BENCHMARKS_DIR/emoji_feature_networks.py --params recipes/emoji.yaml \\
        cnn:15:plain cnn:40:aug cnn:60:aug cnn:40:aug:onecycle mlp:40:aug

PROJECT is a project after a loop (clean splits and both trained models), e.g. the emoji recipe's. Each
variant is ARCH:EPOCHS:(plain|aug)[:onecycle]: the project's classifier (``cnn`` or ``mlp``), trained
with ``genloop.core.models.classifier.train_classifier`` (Adam 1e-3, what evaluate does; ``aug`` =
``evaluate.classifier_augment``), or with ``onecycle``: AdamW with a one-cycle schedule and label
smoothing 0.1. Printed per variant: held-out accuracy, the FID floor (held-out vs training images) and
each model's FID against the training images, in that network's raw features, and the ratios.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from genloop.config import load_params, sampling_seed
from genloop.core import quality
from genloop.core.models.classifier import DigitClassifier, embed, flip_and_shift, train_classifier
from genloop.evaluation.scoring import ALT_SEED_OFFSET, load_evaluation_data
from genloop.paths import ProjectPaths
from genloop.stages.evaluate import sample


def one_cycle(images: torch.Tensor, labels: torch.Tensor, arch: str, epochs: int, augment: bool, seed: int,
              classes: int) -> DigitClassifier:
    """AdamW, a one-cycle learning rate (peak 3e-3) and label smoothing 0.1, batches of 64."""
    torch.manual_seed(seed)
    gen, augment_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    model = DigitClassifier(images.shape[2], images.shape[3], 64, classes, arch, images.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    steps = epochs * -(-len(images) // 64)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(images), generator=gen).split(64):
            x = flip_and_shift(images[idx], augment_gen) if augment else images[idx]
            loss = F.cross_entropy(model(x), labels[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("variants", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(1)
    params, paths = load_params(args.params), ProjectPaths.at(".")
    data = load_evaluation_data(params, paths)
    fakes = {k: sample(paths.train(k) / "model.pt", len(data.held_out), sampling_seed(params.seed),
                       data.reference_labels) for k in ("gan", "vae")}
    y = torch.as_tensor(data.reference_labels, dtype=torch.long)
    held_out_labels = torch.as_tensor(data.held_out_labels, dtype=torch.long)
    for variant in args.variants:
        arch, epochs, mode, *rest = variant.split(":")
        seed = params.seed + (ALT_SEED_OFFSET if arch == "mlp" else 0)
        started = time.time()
        if rest == ["onecycle"]:
            model = one_cycle(data.reference, y, arch, int(epochs), mode == "aug", seed, data.num_classes)
        else:
            model = train_classifier(data.reference, y, 64, data.num_classes, int(epochs), seed, arch=arch,
                                     augment=mode == "aug")
        with torch.no_grad():
            reference, _ = embed(model, data.reference)
            held_out, logits = embed(model, data.held_out)
            accuracy = float((logits.argmax(1) == held_out_labels).float().mean())
            floor = quality.fid(reference, held_out)
            fid = {k: quality.fid(reference, embed(model, f)[0]) for k, f in fakes.items()}
        print(f"{variant}: accuracy {accuracy:.3f}, floor {floor:.3f}, GAN {fid['gan']:.2f} "
              f"({fid['gan'] / floor:.1f}x), VAE {fid['vae']:.2f} ({fid['vae'] / floor:.1f}x), "
              f"{time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
