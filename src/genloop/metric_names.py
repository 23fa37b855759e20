"""The names of the evaluation metrics, shared by evaluate (which computes them), report (which
shows them) and whatever reads reports/metrics.json, so none of them imports another for a list."""
from __future__ import annotations

MODELS = ("vae", "gan")
# Scores of a set of samples; lower is better for fid, kid_*, class_tvd and train_copy_share, higher for
# is_*, precision, recall, density (about 1 for real data) and coverage; nn_train_distance_ratio is
# about 1 for real data and well below 1 when samples copy training images.
GENERATOR_METRICS = (
    "fid", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall", "density", "coverage",
    "class_tvd", "nn_train_distance_median", "nn_train_distance_ratio", "train_copy_share",
)
FLOOR_SUFFIX = "_real_floor"
# The metric names every model run carries, so `mlflow ui` compares them column by column.
EVAL_METRICS = (*GENERATOR_METRICS, *(m + FLOOR_SUFFIX for m in GENERATOR_METRICS), "classifier_accuracy")
# On the VAE run only, in nats per test image (BCE summed over pixels + KL), and SSIM in [0, 1].
VAE_METRICS = ("test_neg_elbo", "test_nll_iwae", "test_recon_ssim")
