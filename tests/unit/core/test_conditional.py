"""Class-conditional VAE and GAN: the models, label fidelity, and a tiny conditional loop through
train, evaluate (metrics.json, report) and export (ONNX with the ``z`` and ``label`` inputs)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from genloop.io.checkpoints import build_gan, build_vae
from genloop.core.label_fidelity import draw_labels, label_fidelity, per_class_labels, trained_classes
from genloop.core.metric_names import is_label_fidelity, label_fidelity_metrics
from genloop.core.models.conditional import ConditionalGenerator, ProjectionDiscriminator

SHAPE = (8, 8)
CLASSES = [0, 2, 5]


def hparams(**extra):
    return {"arch": "mlp", "latent_dim": 4, "hidden": 16, "channels": 8, "conditional": True,
            "classes": CLASSES, **extra}


def samplers():
    torch.manual_seed(0)
    mlp, conv = build_vae(hparams(), SHAPE), build_vae(hparams(arch="conv"), SHAPE)
    gen, _ = build_gan(hparams(), SHAPE)
    return {"vae_mlp": mlp.decoder, "vae_conv": conv.decoder, "gan": gen.eval()}


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_conditional_vae_reconstructs_and_decodes_image_shapes(arch):
    vae = build_vae(hparams(arch=arch), SHAPE)
    x, y = torch.rand(5, 1, *SHAPE), torch.tensor([0, 2, 5, 0, 2])
    logits, mu, logvar = vae(x, y)
    assert logits.shape == (5, 1, *SHAPE) and mu.shape == logvar.shape == (5, 4)
    assert vae.decoder(torch.randn(5, 4), y).shape == (5, 1, *SHAPE)


@pytest.mark.parametrize("name", ["vae_mlp", "vae_conv", "gan"])
def test_changing_the_label_changes_the_sample(name):
    sampler = samplers()[name]
    z = torch.randn(4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = sampler(z, torch.full((4,), 0)), sampler(z, torch.full((4,), 5))
        again = sampler(z, torch.full((4,), 0))
    assert a.shape == (4, 1, *SHAPE) and float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, again)
    assert float((a - b).abs().max()) > 1e-4


def test_projection_discriminator_adds_the_label_embedding_inner_product():
    torch.manual_seed(0)
    disc = ProjectionDiscriminator(8, *SHAPE, num_classes=6).eval()
    x, y = torch.rand(3, 1, *SHAPE), torch.tensor([0, 2, 5])
    with torch.no_grad():
        h = disc.phi(x * 2 - 1)
        expected = disc.psi(h).view(-1) + (disc.embed.weight[y] * h).sum(1)
        assert torch.allclose(disc(x, y), expected, atol=1e-6)
        assert not torch.allclose(disc(x, y), disc(x, torch.tensor([1, 1, 1])))


def test_conditional_generator_is_the_dcgan_generator_fed_z_times_the_label_embedding():
    gen = ConditionalGenerator(4, 8, *SHAPE, num_classes=3).eval()
    z, y = torch.randn(2, 4), torch.tensor([1, 2])
    with torch.no_grad():
        assert torch.equal(gen(z, y), gen.generator(z * gen.embed.weight[y]))


def test_label_fidelity_counts_the_share_predicted_as_their_label_per_class():
    per_class, mean = label_fidelity(np.array([0, 0, 1, 1, 1, 2]), np.array([0, 0, 1, 1, 2, 2]), [0, 1, 2])
    assert per_class == {0: 1.0, 1: 1.0, 2: 0.5}
    assert mean == pytest.approx(2.5 / 3)


def test_a_generator_returning_real_images_of_class_k_scores_the_classifier_accuracy():
    """Label fidelity's floor: a 'perfect' generator (it returns the real images of the asked class)
    scores exactly the classifier's per-class accuracy on those images."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    images = rng.random((300, 8, 8))
    images[:, 0, 0] = labels * 0.3 + rng.random(300) * 0.45  # the class, told noisily by one pixel

    def classify(x: np.ndarray) -> np.ndarray:  # a stub classifier: thresholds on that pixel
        return np.clip(x[:, 0, 0] // 0.3, 0, 2).astype(int)

    accuracy = {k: float((classify(images[labels == k]) == k).mean()) for k in range(3)}
    assert 0.3 < min(accuracy.values()) < 1.0  # the stub is imperfect, so the test can tell

    def perfect_generator(k: int) -> np.ndarray:
        return images[labels == k]

    asked = np.concatenate([np.full(int((labels == k).sum()), k) for k in range(3)])
    generated = np.concatenate([perfect_generator(k) for k in range(3)])
    per_class, mean = label_fidelity(classify(generated), asked, [0, 1, 2])
    assert per_class == accuracy
    assert mean == pytest.approx(np.mean(list(accuracy.values())))


def test_labels_are_drawn_from_the_training_label_distribution():
    train = np.array([3] * 90 + [7] * 10)
    drawn = draw_labels(train, 5000, seed=0)
    assert set(drawn.tolist()) == {3, 7}
    assert float((drawn == 7).float().mean()) == pytest.approx(0.1, abs=0.02)
    assert torch.equal(drawn, draw_labels(train, 5000, seed=0))
    assert trained_classes(train) == [3, 7]


def test_label_fidelity_metric_names_are_flat_and_recognised():
    metrics = label_fidelity_metrics({0: 0.9, 12: 0.5}, 0.7)
    assert metrics == {"label_fidelity": 0.7, "label_fidelity_0": 0.9, "label_fidelity_12": 0.5}
    assert all(is_label_fidelity(k) for k in metrics)
    assert not any(is_label_fidelity(k) for k in ("fid", "label_fidelity_real_floor", "label_fidelity_x"))


def test_headline_keeps_label_fidelity_only_for_models_that_have_it():
    from genloop.stages.evaluate import headline
    from genloop.core.metric_names import HEADLINE_METRICS

    floor = {k: 1.0 for k in HEADLINE_METRICS}
    plain = headline({"vae": dict(floor), "gan": dict(floor)}, floor)
    assert not any(is_label_fidelity(k) for block in plain.values() for k in block)
    fid_floor = label_fidelity_metrics({0: 0.99}, 0.99)
    conditional = headline({"vae": dict(floor), "gan": {**floor, **label_fidelity_metrics({0: 0.8}, 0.8)}},
                           {**floor, **fid_floor})
    assert conditional["gan"]["label_fidelity"] == 0.8 and conditional["gan"]["label_fidelity_0"] == 0.8
    assert "label_fidelity" not in conditional["vae"]
    assert conditional["real_floor"]["label_fidelity"] == 0.99
    assert conditional["gan"]["fid"] == 1.0  # promotion's metric is still there


# ---- a tiny conditional loop ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def conditional_project(genloop_tiny_project):
    from genloop.stages.evaluate import evaluate
    from genloop.stages.export import export

    project = genloop_tiny_project("conditional", {
        "train.vae.conditional": True, "train.gan.conditional": True, "export.parity_batch_sizes": [1, 3, 64],
    })
    evaluation = evaluate(project.params, project.paths, log_to_mlflow=False)
    exported = export(project.params, project.paths)  # registered too: the signature names both inputs
    return project, evaluation, exported


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["vae", "gan"])
def test_conditional_onnx_takes_z_and_an_int64_label_with_a_dynamic_batch(conditional_project, kind):
    from genloop.stages.export import CONDITIONAL_KEY, LABELS_KEY, read_metadata

    project, _, exported = conditional_project
    path = exported.models[kind].path
    model = onnx.load(str(path))
    inputs = {i.name: i.type.tensor_type for i in model.graph.input}
    assert list(inputs) == ["z", "label"]
    assert inputs["z"].elem_type == onnx.TensorProto.FLOAT and inputs["label"].elem_type == onnx.TensorProto.INT64
    z_dims, label_dims = inputs["z"].shape.dim, inputs["label"].shape.dim
    assert len(z_dims) == 2 and not z_dims[0].HasField("dim_value") and z_dims[1].dim_value > 0
    assert len(label_dims) == 1 and not label_dims[0].HasField("dim_value")
    assert [o.name for o in model.graph.output] == ["image"]
    classes = sorted(int(c) for c in np.unique(np.load(project.paths.augment / "train.npz")["labels"]))
    meta = read_metadata(path)
    assert json.loads(meta[LABELS_KEY]) == classes and meta[CONDITIONAL_KEY] == "true"
    version = exported.models[kind].registered_version
    assert version is not None
    from mlflow.models import get_model_info

    signature = get_model_info(f"models:/{exported.models[kind].registered_name}/{version}").signature
    assert [i.name for i in signature.inputs.inputs] == ["z", "label"]


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["vae", "gan"])
@pytest.mark.parametrize("batch", [1, 5, 33])
def test_conditional_onnx_matches_pytorch_at_odd_batch_sizes(conditional_project, kind, batch):
    from genloop.io.checkpoints import load_sampler
    from genloop.stages.export import session

    project, _, exported = conditional_project
    assert max(exported.models[kind].max_abs_diff.values()) <= 1e-4
    assert set(exported.models[kind].max_abs_diff) >= {1, 3, 7, 64}
    module, latent_dim = load_sampler(project.paths.train(kind) / "model.pt")
    gen = torch.Generator().manual_seed(batch)
    z, label = torch.randn(batch, latent_dim, generator=gen), torch.randint(0, 10, (batch,), generator=gen)
    got = session(path := exported.models[kind].path).run(["image"], {"z": z.numpy(), "label": label.numpy()})[0]
    with torch.no_grad():
        expected = module(z, label).numpy()
    assert got.shape == (batch, 1, 8, 8), path
    assert float(np.max(np.abs(got - expected))) <= 1e-4


@pytest.mark.integration
def test_conditional_evaluation_reports_label_fidelity_with_every_other_metric(conditional_project):
    from genloop.core.metric_names import HEADLINE_METRICS, VAE_METRICS

    project, evaluation, _ = conditional_project
    report = json.loads(project.paths.metrics.read_text())
    for kind in ("vae", "gan"):
        assert set(HEADLINE_METRICS) <= set(report[kind])
        assert 0.0 <= report[kind]["label_fidelity"] <= 1.0
        per_class = [report[kind][f"label_fidelity_{k}"] for k in range(10)]
        assert report[kind]["label_fidelity"] == pytest.approx(np.mean(per_class))
        assert evaluation.metrics[kind]["label_fidelity_real_floor"] == report["real_floor"]["label_fidelity"]
    assert set(VAE_METRICS) <= set(report["vae"])
    assert 0.5 < report["real_floor"]["label_fidelity"] <= 1.0  # the classifier's per-class accuracy


@pytest.mark.integration
def test_report_shows_one_labelled_row_of_samples_per_class(conditional_project):
    project, evaluation, _ = conditional_project
    page = evaluation.html.read_text()
    for kind in ("vae", "gan"):
        name = f"samples_{kind}_per_class.png"
        assert f'src="figures/{name}"' in page
        image = Image.open(project.paths.reports / "figures" / name)
        plain = Image.open(project.paths.reports / "figures" / f"samples_{kind}.png")
        cell = 56 + 2  # grid_image's cell and padding at 8x8
        assert (image.height - 2) // cell == 10  # ten classes, ten rows
        assert image.width > plain.width // 2
    assert "Label fidelity" in page and "class 9" in page


def test_triton_config_gives_a_per_row_label_dims_1_reshaped_to_a_scalar():
    from genloop.config import TritonConfig
    from genloop.io.triton import TritonTensor, model_config

    text = model_config("m", [TritonTensor("z", "TYPE_FP32", (8,)), TritonTensor("label", "TYPE_INT64", ())],
                        [TritonTensor("image", "TYPE_FP32", (1, 8, 8))], TritonConfig())
    label = text[text.index('name: "label"'):text.index("]\noutput")]
    assert "data_type: TYPE_INT64" in label and "dims: [ 1 ]" in label and "reshape: { shape: [ ] }" in label
    assert "dims: [ 8 ]" in text and "reshape" not in text[:text.index('name: "label"')]


def test_benchmark_fid_without_torchmetrics_equals_the_evaluate_stage_fid():
    import sys
    from pathlib import Path

    from genloop.core.quality import fid

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
    try:
        from conditional_vs_unconditional import frechet_distance
    finally:
        sys.path.pop(0)
    g = torch.Generator().manual_seed(0)
    a, b = torch.relu(torch.randn(600, 16, generator=g)), torch.relu(torch.randn(500, 16, generator=g) * 1.3 + 0.2)
    a[:, 3] = b[:, 3] = 0  # a dead unit: singular covariances, as ReLU features give
    assert frechet_distance(a, b) == pytest.approx(fid(a, b), rel=1e-4)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
