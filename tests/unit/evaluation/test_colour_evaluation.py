"""Evaluation on colour images: the classifier takes three channels, the metrics score (N, 3, H, W)
samples against the real floor, pixel distances and SSIM use every channel, and the report draws
colour grids with the classes named as the data names them."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from genloop.config import Params
from genloop.core import membership, quality
from genloop.core.models.vae import ConvVAE
from genloop.evaluation.report import write_report
from genloop.evaluation.scoring import load_evaluation_data, score
from genloop.io.arrays import save_npz
from genloop.io.datasets import to_tensor
from genloop.io.imaging import grid_image, labelled_rows_image
from genloop.paths import ProjectPaths
from tests.colour_data import CLASS_NAMES, COLOURS, coloured_squares


@pytest.fixture(scope="module")
def colour_project(tmp_path_factory) -> tuple[Params, ProjectPaths]:
    """Clean splits of coloured squares and a manifest naming the classes red, green, blue."""
    paths = ProjectPaths.at(tmp_path_factory.mktemp("colour"))
    paths.clean.mkdir(parents=True)
    for split, n, seed in (("train", 90, 0), ("val", 30, 1), ("test", 30, 2)):
        images, labels = coloured_squares(n, side=16, seed=seed)
        save_npz(paths.clean / f"{split}.npz", images=images, labels=labels)
    paths.data.mkdir(parents=True)
    paths.manifest.write_text("id,label,class_name\n" + "".join(
        f"{i},{i % 3},{CLASS_NAMES[i % 3]}\n" for i in range(6)))
    base = Params()
    params = base.model_copy(update={
        "clean": base.clean.model_copy(update={"labels": [0, 1, 2]}),
        "evaluate": base.evaluate.model_copy(update={
            "classifier_epochs": 40, "feature_dim": 16, "kid_subsets": 5, "kid_subset_size": 20, "is_splits": 2})})
    return params, paths


def test_classifier_and_metrics_work_on_three_channels(colour_project):
    params, paths = colour_project
    data = load_evaluation_data(params, paths)
    assert data.image_shape == (3, 16, 16)
    assert data.classifier.channels == 3 and data.alt_classifier.channels == 3
    assert data.classifier_accuracy > 0.9  # the colour is the class: a grey classifier could not tell them
    assert data.class_names == {0: "red", 1: "green", 2: "blue"}
    floor, _ = score(data, data.held_out, params.evaluate, params.seed)
    swapped, _ = score(data, data.held_out[:, [2, 1, 0]], params.evaluate, params.seed)  # red <-> blue
    assert swapped["fid"] > floor["fid"] and swapped["fid_alt"] > floor["fid_alt"]
    with pytest.raises(ValueError, match=r"expected \(N, 3, 16, 16\)"):
        score(data, data.held_out[:, :1], params.evaluate, params.seed)


def test_pixel_distances_and_ssim_use_every_channel():
    images = to_tensor(coloured_squares(6, side=16)[0])
    blue_only = images.clone()
    blue_only[:, 2] = 1.0 - blue_only[:, 2]  # red and green channels unchanged
    assert (quality.nearest_distances(blue_only, images) > 0.1).all()
    assert (-membership.distance_scores(blue_only, images) > 0.1).all()
    vae = ConvVAE(4, 8, 16, 16, image_channels=3)
    assert -1.0 <= quality.reconstruction_ssim(vae, images) <= 1.0
    assert np.isfinite(quality.iwae_nll(vae, images, 4, seed=0))


def test_colour_grid_is_an_rgb_png_with_the_sample_colours():
    images, _ = coloured_squares(3, side=8)
    png = Image.open(io.BytesIO(grid_image(to_tensor(images).numpy(), ncols=3, cell=8, pad=0)))
    assert png.mode == "RGB" and png.size == (24, 8)
    pixels = np.asarray(png)
    for i, label in enumerate(range(3)):  # each tile holds its square's colour somewhere
        assert (pixels[:, 8 * i:8 * (i + 1)] == COLOURS[label]).all(-1).any()
    rows = Image.open(io.BytesIO(labelled_rows_image(to_tensor(images).numpy(), ["red", "green", "blue"])))
    assert rows.mode == "RGB"


def test_report_draws_colour_samples_and_names_classes(colour_project):
    params, paths = colour_project
    images = to_tensor(coloured_squares(9, side=16)[0]).numpy()
    report = {"class_shares": {"real_train": {"0": 0.3, "1": 0.3, "2": 0.4}, "vae": {"0": 0.5, "1": 0.5, "2": 0.0}},
              "class_names": {"0": "red", "1": "green", "2": "blue"}}
    html = write_report(params, paths, report, {"vae": images}, {}, images,
                        per_class={"vae": ([0, 1, 2], images.reshape(3, 3, 3, 16, 16))})
    assert Image.open(html.figures / "samples_vae.png").mode == "RGB"
    assert Image.open(html.figures / "samples_real.png").mode == "RGB"
    assert Image.open(html.figures / "samples_vae_per_class.png").mode == "RGB"
    assert "one digit" not in html.index.read_text()


def test_long_class_names_are_angled_and_digit_labels_keep_their_figure():
    """Named classes (the emoji groups) overlapped on the class chart; the digits' chart stays as it was."""
    from genloop.evaluation.report import class_distribution_png, tick_style

    assert tick_style([str(d) for d in range(10)]) == {}
    assert tick_style(["faces", "transport-map"])["rotation"] > 0
    shares = {"real_train": {"0": 0.5, "1": 0.5}, "vae": {"0": 0.4, "1": 0.6}}
    named = Image.open(io.BytesIO(class_distribution_png(shares, {"0": "activities-places", "1": "faces"})))
    plain = Image.open(io.BytesIO(class_distribution_png(shares)))
    assert named.size[1] > plain.size[1]  # taller: room for the angled names
