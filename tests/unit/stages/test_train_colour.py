"""Models sized from (C, H, W): colour images train and sample in colour, odd sides are padded and
cropped, checkpoints record (C, H, W) (older (H, W) ones read as grey), and grey models are
bit-identical to what the code made before colour existed."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from genloop.config import Params
from genloop.core.models.classifier import embed, train_classifier
from genloop.io.checkpoints import build_gan, build_vae, checkpoint_shape, load_sampler, save_checkpoint
from genloop.io.datasets import DataSetError, image_shape, to_tensor
from genloop.stages.train import FITTERS, Labels, epoch_plan
from tests.colour_data import coloured_squares

VARIANTS = [("vae", {"arch": "conv"}), ("vae", {"arch": "mlp", "hidden": 32}), ("gan", {})]


def _train(kind: str, over: dict, data: torch.Tensor, labels: torch.Tensor | None, images: int = 200):
    cfg = getattr(Params().train, kind).model_copy(
        update={**over, "images": images, "batch_size": 32, "conditional": labels is not None})
    torch.manual_seed(0)
    extra = {"labels": Labels.of(labels, labels[:16])} if labels is not None else {}
    trainer = FITTERS[kind](cfg, data, data[:16], torch.device("cpu"), torch.Generator().manual_seed(0), False,
                            **extra)
    metrics = [trainer.run_epoch(n) for n in epoch_plan(cfg.images, len(data))]
    trainer.sampler.eval()
    return cfg, trainer, metrics[-1]


def _sample(trainer, cfg, conditional: bool) -> torch.Tensor:
    z = torch.randn(5, cfg.latent_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return trainer.sampler(z, torch.tensor([0, 1, 2, 0, 1])) if conditional else trainer.sampler(z)


def _digest(modules: dict, out: torch.Tensor) -> str:
    h = hashlib.sha256()
    for name in sorted(modules):
        for key, value in sorted(modules[name].state_dict().items()):
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
    h.update(out.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def test_image_shape_and_to_tensor_put_channels_first_for_grey_and_colour():
    grey = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5)
    colour, _ = coloured_squares(2, side=8)
    assert image_shape(grey) == (1, 4, 5) and image_shape(colour) == (3, 8, 8)
    assert to_tensor(grey).shape == (2, 1, 4, 5)
    tensor = to_tensor(colour)
    assert tensor.shape == (2, 3, 8, 8)
    assert torch.equal(tensor[1, :, 3, 4], torch.from_numpy(colour[1, 3, 4]).float() / 255)
    with pytest.raises(DataSetError, match=r"\(N, H, W, 3\)"):
        image_shape(np.zeros((2, 4, 5, 2), np.uint8))


@pytest.mark.parametrize("conditional", [False, True], ids=["plain", "conditional"])
@pytest.mark.parametrize("kind,over", VARIANTS, ids=["conv-vae", "mlp-vae", "gan"])
def test_colour_models_train_and_sample_colour_images(kind, over, conditional):
    images, labels = coloured_squares(64, side=16)
    cfg, trainer, metrics = _train(kind, over, to_tensor(images), torch.from_numpy(labels) if conditional else None,
                                   images=64)
    out = _sample(trainer, cfg, conditional)
    assert out.shape == (5, 3, 16, 16)
    assert all(np.isfinite(v) for v in metrics.values())
    assert not torch.allclose(out[:, 0], out[:, 2])  # the channels are not copies of one grey image


@pytest.mark.parametrize("shape", [(3, 30, 30), (1, 30, 30), (3, 64, 64), (3, 7, 9)])
def test_sides_not_a_multiple_of_four_and_64x64_build_and_keep_their_size(shape):
    cfg = Params().train
    vae = build_vae(cfg.vae.model_dump(), shape)
    gen, disc = build_gan(cfg.gan.model_dump(), shape)
    x = torch.rand(2, *shape)
    assert vae(x)[0].shape == (2, *shape)
    gen.eval()
    assert gen(torch.randn(2, cfg.gan.latent_dim)).shape == (2, *shape)
    assert disc(x).shape == (2,)


def test_checkpoint_records_channels_and_an_old_height_width_checkpoint_reads_as_grey(tmp_path):
    cfg = Params().train.gan.model_dump()
    gen, disc = build_gan(cfg, (3, 16, 16))
    save_checkpoint(tmp_path / "colour.pt", "gan", cfg, (3, 16, 16), {"generator": gen, "discriminator": disc})
    assert checkpoint_shape(tmp_path / "colour.pt") == (3, 16, 16)
    sampler, latent = load_sampler(tmp_path / "colour.pt")
    assert sampler(torch.randn(2, latent)).shape == (2, 3, 16, 16)
    grey_gen, grey_disc = build_gan(cfg, (1, 8, 8))
    state = {"kind": "gan", "hparams": cfg, "shape": [8, 8],  # as written before colour
             "state_dicts": {"generator": grey_gen.state_dict(), "discriminator": grey_disc.state_dict()}}
    torch.save(state, tmp_path / "old.pt")
    assert checkpoint_shape(tmp_path / "old.pt") == (1, 8, 8)
    assert load_sampler(tmp_path / "old.pt")[0](torch.randn(2, latent)).shape == (2, 1, 8, 8)


# Digests computed with the code before models took channels (same seeds, torch 2.13.0+cpu, one thread):
# a grey model's weights and outputs must not change by a bit.
BEFORE_COLOUR = {
    (8, "vae", "conv", False): "bd6f8be02113e9a9", (8, "vae", "conv", True): "4b2f809d72c1a10a",
    (8, "vae", "mlp", False): "ada5f2454606195d", (8, "vae", "mlp", True): "92801d0184984b9b",
    (8, "gan", "", False): "7958c0f6471014f4", (8, "gan", "", True): "8780cd430b226093",
    (28, "vae", "conv", False): "2eea305ee3da7143", (28, "gan", "", False): "e0711e335768516b",
}
CLASSIFIERS_BEFORE_COLOUR = {(8, "cnn"): "30749a9886852362", (8, "mlp"): "d176d9aa01247844",
                             (28, "cnn"): "b6080a745695e3ae"}
same_torch = pytest.mark.skipif(torch.__version__ != "2.13.0+cpu",
                                reason="digests recorded with torch 2.13.0+cpu; other builds may round differently")


@pytest.fixture()
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@same_torch
@pytest.mark.parametrize("side,kind,arch,conditional", list(BEFORE_COLOUR))
def test_grey_models_train_bit_identical_to_before_colour(side, kind, arch, conditional, one_thread):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(96, side, side), dtype=np.uint8)
    labels = torch.from_numpy(rng.integers(0, 3, 96)).long()
    over = dict(VARIANTS)[kind] if kind == "gan" else {"arch": arch, **({"hidden": 32} if arch == "mlp" else {})}
    cfg, trainer, _ = _train(kind, over, to_tensor(images), labels if conditional else None)
    assert _digest(trainer.saved, _sample(trainer, cfg, conditional)) == BEFORE_COLOUR[(side, kind, arch, conditional)]


@same_torch
@pytest.mark.parametrize("side,arch", list(CLASSIFIERS_BEFORE_COLOUR))
def test_grey_classifier_trains_bit_identical_to_before_colour(side, arch, one_thread):
    images = to_tensor(np.random.default_rng(1).integers(0, 256, size=(64, side, side), dtype=np.uint8))
    model = train_classifier(images, torch.arange(64) % 3, 16, 3, 2, 0, batch_size=16, arch=arch)
    features, logits = embed(model, images[:5])
    assert _digest({"c": model}, torch.cat([features, logits], 1)) == CLASSIFIERS_BEFORE_COLOUR[(side, arch)]


def test_a_gan_checkpoint_without_discriminator_width_keys_rebuilds_the_discriminator_it_was_trained_with():
    _, old = build_gan({"latent_dim": 4, "channels": 8}, (3, 8, 8))
    _, wide = build_gan({"latent_dim": 4, "channels": 8, "disc_channels": 16, "disc_convs": 1}, (3, 8, 8))
    assert old.net[0].out_channels == 4 and wide.net[0].out_channels == 8
    assert sum(isinstance(m, torch.nn.Conv2d) for m in wide.modules()) == 4
    old.load_state_dict(build_gan({"latent_dim": 4, "channels": 8, "disc_channels": 0, "disc_convs": 0},
                                  (3, 8, 8))[1].state_dict())


@pytest.mark.parametrize("conditional", [False, True])
def test_a_nearest_upsampling_gan_with_a_deeper_discriminator_trains_reloads_and_exports_with_parity(
        tmp_path, conditional):
    from genloop.stages.export import export_onnx, parity

    images, classes = coloured_squares(64, side=16)
    data, labels = to_tensor(images), torch.from_numpy(classes)
    over = {"upsample": "nearest", "disc_convs": 1, "disc_channels": 16, "diffaugment": ["color", "translation"],
            "channels": 8}
    cfg, trainer, metrics = _train("gan", over, data, labels if conditional else None, images=64)
    assert all(np.isfinite(v) for v in metrics.values())
    hparams = {**cfg.model_dump(), **(Labels.of(labels, labels[:16]).hparams() if conditional else {})}
    save_checkpoint(tmp_path / "g.pt", "gan", hparams, tuple(data.shape[1:]), trainer.saved, sampler=trainer.sampler_name)
    sampler, latent_dim = load_sampler(tmp_path / "g.pt")
    assert any(isinstance(m, torch.nn.Upsample) for m in sampler.modules())
    export_onnx(sampler, latent_dim, tmp_path / "g.onnx", conditional=conditional)
    diffs = parity(sampler, latent_dim, tmp_path / "g.onnx", [1, 8], seed=0, classes=[0, 1, 2] if conditional else None)
    assert max(diffs.values()) < 1e-4
