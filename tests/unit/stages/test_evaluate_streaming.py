"""evaluate draws samples in blocks of evaluate.batch_size: the images do not depend on the block size, and
no block is larger (the audit's 10,000 samples in one forward pass were most of evaluate's peak memory)."""
from __future__ import annotations

import torch

from genloop.config import Params
from genloop.io.checkpoints import build_gan, build_vae, save_checkpoint
from genloop.stages.evaluate import sample, sample_blocks


def test_samples_are_drawn_in_blocks_and_do_not_depend_on_the_block_size(tmp_path):
    cfg = Params().train.gan.model_dump()
    gen, disc = build_gan(cfg, (3, 16, 16))
    save_checkpoint(tmp_path / "gan.pt", "gan", cfg, (3, 16, 16), {"generator": gen, "discriminator": disc})
    vae_cfg = {**Params().train.vae.model_dump(), "prior": "standard"}
    save_checkpoint(tmp_path / "vae.pt", "vae", vae_cfg, (1, 8, 8), {"vae": build_vae(vae_cfg, (1, 8, 8))})
    for name, shape in (("gan.pt", (3, 16, 16)), ("vae.pt", (1, 8, 8))):
        blocks = list(sample_blocks(tmp_path / name, 50, seed=3, batch_size=16))
        assert [len(b) for b in blocks] == [16, 16, 16, 2] and blocks[0].shape[1:] == shape
        whole = sample(tmp_path / name, 50, seed=3, batch_size=1024)
        torch.testing.assert_close(torch.cat(blocks), whole, rtol=1e-5, atol=1e-6)
        assert float(whole.min()) >= 0.0 and float(whole.max()) <= 1.0


def test_rows_per_pass_shrink_with_the_image_so_a_pass_holds_about_as_many_pixels():
    from genloop.evaluation.scoring import pass_rows

    assert pass_rows(1024, (1, 8, 8)) == pass_rows(1024, (1, 28, 28)) == 1024  # digits and MNIST as before
    assert pass_rows(1024, (3, 32, 32)) == 261 and pass_rows(1024, (3, 64, 64)) == 65
    assert pass_rows(1024, (3, 512, 512)) == 16 and pass_rows(8, (3, 64, 64)) == 8  # a floor, never above the setting
