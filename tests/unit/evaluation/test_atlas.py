"""The latent atlas (genloop.evaluation.atlas) and its page (genloop.evaluation.explain) on tiny models:
an 8x8 VAE trained a few steps on scikit-learn's digits, an untrained 8x8 GAN generator (GANSpace needs
no training), and a colour VAE on coloured squares."""
from __future__ import annotations

import io
import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from genloop.core.models.classifier import DigitClassifier, embed, normalise_features
from genloop.core.models.vae import loss_function
from genloop.evaluation import atlas, explain
from genloop.evaluation.report import render_html
from genloop.io.checkpoints import build_gan, build_vae

VAE_HPARAMS = {"latent_dim": 4, "channels": 8, "arch": "conv"}


def evaluation_data(images: np.ndarray, labels: np.ndarray, names: dict[int, str] | None = None):
    """What the atlas reads of genloop.evaluation.scoring.EvaluationData, from (N, C, H, W) floats."""
    x = torch.from_numpy(images).float()
    torch.manual_seed(0)
    classifier = DigitClassifier(x.shape[2], x.shape[3], 16, int(labels.max()) + 1, "cnn", x.shape[1]).eval()
    half = len(x) // 2
    return SimpleNamespace(reference=x[:half], reference_labels=labels[:half], held_out=x[half:],
                           held_out_labels=labels[half:], classifier=classifier, class_names=names or {},
                           reference_features=normalise_features(embed(classifier, x[:half])[0]))


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return evaluation_data((d.images[:600, None] / 16.0).astype(np.float32), d.target[:600].astype(np.int64))


def trained_vae(x: torch.Tensor, steps: int = 150):
    torch.manual_seed(0)
    vae = build_vae(VAE_HPARAMS, tuple(x.shape[1:]))
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    for step in range(steps):
        batch = x[(step * 64) % len(x):][:64]
        logits, mu, logvar = vae(batch)
        loss = loss_function(logits, batch, mu, logvar, beta=0.2)[0]  # a small β: no posterior collapse in few steps
        opt.zero_grad()
        loss.backward()
        opt.step()
    return vae.eval()


@pytest.fixture(scope="module")
def vae_atlas(digits):
    vae = trained_vae(digits.reference)
    return atlas.build(atlas.Generator("vae", vae.decoder, 4, vae=vae), digits, images=200, seed=0)


@pytest.fixture(scope="module")
def gan_atlas(digits):
    generator, _ = build_gan({"latent_dim": 6, "channels": 8}, (1, 8, 8))
    return atlas.build(atlas.Generator("gan", generator.eval(), 6, features=lambda z: generator.fc(z)), digits,
                       images=200, seed=0)


def png_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def test_vae_atlas_scores_every_explain_metric(vae_atlas):
    assert set(vae_atlas.metrics()) == set(atlas.EXPLAIN_METRICS)
    assert 0 <= vae_atlas.scores["mig"] <= 1 and 0 <= vae_atlas.scores["probe_accuracy"] <= 1
    assert 1 <= vae_atlas.scores["active_units"] <= 4
    assert set(vae_atlas.carriers) == {*atlas.factor_names(colour=False), "label"}
    assert all(0 <= c["axis"] < 4 for c in vae_atlas.carriers.values())
    assert not vae_atlas.skipped


def test_vae_atlas_draws_traversals_pca_map_and_attribution(vae_atlas):
    names = {name for name, _, _ in vae_atlas.figures}
    assert names == {"vae_traversal_dimensions.png", "vae_traversal_factors.png", "vae_pca_map.png",
                     "vae_attribution.png"}
    figures = {name: png for name, _, png in vae_atlas.figures}
    rows = int(vae_atlas.scores["active_units"])
    width, height = png_size(figures["vae_traversal_dimensions.png"])
    assert height == rows * (56 + 2) + 2 and width > atlas.STEPS * 58  # one row per active dimension, 7 columns
    width, height = png_size(figures["vae_attribution.png"])
    assert height == atlas.ATTRIBUTION_SAMPLES * 58 + 2 and width > (1 + atlas.ATTRIBUTION_K) * 58


def test_a_traversal_changes_the_image_along_an_active_dimension(digits):
    vae = trained_vae(digits.reference)
    mu, logvar = atlas.encode(vae, digits.held_out, None, 256)
    busiest = int(np.argmax(mu.std(0)))
    lat = np.zeros((1, 1, atlas.STEPS, 4), dtype=np.float32)
    lat[0, 0, :, busiest] = np.linspace(-3, 3, atlas.STEPS) * mu[:, busiest].std()
    images = atlas.decode_grid(vae.decoder, lat)[0, 0]
    assert images.shape == (atlas.STEPS, 1, 8, 8)
    assert np.abs(images[0] - images[-1]).mean() > 0.02


def test_gaps_compare_real_and_generated_per_measure_and_class(vae_atlas):
    overall = [g for g in vae_atlas.gaps if g["label"] is None]
    assert {g["measure"] for g in overall} == set(atlas.factor_names(colour=False))
    assert all(g["sentence"].startswith("generated images") for g in overall)
    per_class = [g for g in vae_atlas.gaps if g["label"] is not None]
    assert per_class and all(re.match(r"generated \d+s ", g["sentence"]) for g in per_class)
    assert per_class == sorted(per_class, key=lambda g: -np.nan_to_num(g["wasserstein_sd"]))


def test_gan_atlas_scores_its_ganspace_directions_without_encoder_scores(gan_atlas):
    assert "active_units" not in gan_atlas.scores
    assert {"mig", "dci_disentanglement", "dci_completeness", "dci_informativeness"} <= set(gan_atlas.metrics())
    assert len(gan_atlas.directions) == 6
    assert all(set(d["correlation"]) == set(atlas.factor_names(colour=False)) for d in gan_atlas.directions)
    figures = {name: png for name, _, png in gan_atlas.figures}
    assert set(figures) == {"gan_traversal_directions.png", "gan_attribution.png"}
    assert png_size(figures["gan_traversal_directions.png"])[1] == 6 * 58 + 2


def test_gan_directions_carry_the_unit_vector_and_step_the_explorer_slides_along(gan_atlas):
    from genloop.serving.explorer import gan_axes

    vectors = np.array([d["vector"] for d in gan_atlas.directions])
    assert vectors.shape == (6, 6) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # rounded to 6 decimals
    assert all(d["sd"] > 0 for d in gan_atlas.directions)
    axes, why = gan_axes(json.loads(json.dumps(gan_atlas.directions)), 6)  # as explain_detail.json stores them
    assert why == "" and len(axes) == 6 and axes[0]["vector"] == gan_atlas.directions[0]["vector"]


def test_a_vae_without_its_encoder_says_what_it_skipped(digits):
    vae = trained_vae(digits.reference, steps=5)
    result = atlas.build(atlas.Generator("vae", vae.decoder, 4), digits, images=100, seed=0)
    assert "active_units" not in result.scores and result.gaps
    assert any("no encoder" in s for s in result.skipped)
    assert [name for name, _, _ in result.figures] == ["vae_attribution.png"]


def test_colour_data_is_measured_on_luminance_without_stroke_measures():
    from tests.colour_data import CLASS_NAMES, coloured_squares

    images, labels = coloured_squares(240, side=8)
    data = evaluation_data(images.transpose(0, 3, 1, 2) / 255.0, labels, dict(enumerate(CLASS_NAMES)))
    vae = trained_vae(data.reference, steps=10)
    result = atlas.build(atlas.Generator("vae", vae.decoder, 4, vae=vae), data, images=120, seed=0)
    assert set(result.carriers) == {"area", "slant", "width", "height", "label"}
    assert any("luminance" in n and "length and thickness" in n for n in result.notes)
    assert any(g["label"] is not None and ("red" in g["sentence"] or "blue" in g["sentence"]
                                           or "green" in g["sentence"]) for g in result.gaps)


def test_the_page_shows_every_figure_offline_and_the_json_holds_the_scores(tmp_path, vae_atlas, gan_atlas):
    report = explain.write(tmp_path, "explain", {"vae": vae_atlas, "gan": gan_atlas}, {"models": "test"})
    page = report.html.read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == len(vae_atlas.figures) + len(gan_atlas.figures)
    assert all((tmp_path / src).is_file() for src in sources)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    scores = json.loads(report.json.read_text())
    assert set(scores) == {"vae", "gan"}
    assert set(atlas.EXPLAIN_METRICS) <= set(scores["vae"])
    assert all(isinstance(v, (int, float)) or v is None for block in scores.values() for v in block.values())
    detail = json.loads(explain.detail_file(report.json).read_text())
    assert {"carriers", "directions", "gaps", "skipped", "notes"} <= set(detail["vae"])


def test_the_evaluation_report_links_the_atlas():
    page = render_html({}, [], {}, explain="explain.html")
    assert '<a href="explain.html">' in page
    assert "explain.html" not in render_html({}, [], {})


def test_a_conditional_vae_is_encoded_and_traversed_with_each_images_label(digits):
    hparams = {**VAE_HPARAMS, "conditional": True, "classes": list(range(10))}
    torch.manual_seed(0)
    vae = build_vae(hparams, (1, 8, 8)).eval()
    result = atlas.build(atlas.Generator("vae", vae.decoder, 4, list(range(10)), vae=vae), digits, images=120, seed=0)
    assert set(result.metrics()) == set(atlas.EXPLAIN_METRICS)
    assert "vae_traversal_factors.png" in {name for name, _, _ in result.figures}
    # the gaps' generated classes are the requested labels, drawn like the training labels
    assert {g["label"] for g in result.gaps if g["label"] is not None} <= set(range(10))
