"""The names of the evaluation metrics, shared by evaluate (which computes them) and report (which
shows them), so neither imports the other."""
from __future__ import annotations


# Scores of a set of samples; lower is better for fid, fid_alt, kid_*, class_tvd and train_copy_share,
# higher for recognisable_share, is_*, precision, recall, density (about 1 for real data) and
# coverage; nn_train_distance_ratio is about 1 for real data and well below 1 when samples copy
# training images.
GENERATOR_METRICS = (
    "fid", "fid_alt", "recognisable_share", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall",
    "density", "coverage", "class_tvd", "nn_train_distance_median", "nn_train_distance_ratio", "train_copy_share",
)
# What reports/metrics.json (and so `dvc metrics show`) carries per model, beside the floor block.
HEADLINE_METRICS = ("fid", "fid_alt", "recognisable_share", "kid_mean", "precision", "recall", "density",
                    "coverage", "class_tvd", "train_copy_share")
FLOOR_SUFFIX = "_real_floor"
# The metric names every model's child run carries in MLflow, so `mlflow ui` compares them column by column.
RUN_METRICS = (*GENERATOR_METRICS, *(m + FLOOR_SUFFIX for m in GENERATOR_METRICS), "classifier_accuracy")
# The names reports/metrics.json[vae|gan] carries (the VAE adds VAE_METRICS).
EVAL_METRICS = HEADLINE_METRICS
# On the VAE only, in nats per test image (BCE summed over pixels + KL), and SSIM in [0, 1].
VAE_METRICS = ("test_neg_elbo", "test_nll_iwae", "test_recon_ssim")
# The membership-inference audit (genloop.core.membership) per model: ROC AUC (0.5 = no leak, 1 = every training
# image told apart) and true-positive rate at 1% false positives of an attacker telling clean training images
# from held-out ones; the nearest-generated-sample distance attack on both models, the ELBO attack on the VAE.
MIA_METRICS = ("mia_distance_auc", "mia_distance_tpr_at_1fpr")
VAE_MIA_METRICS = ("mia_elbo_auc", "mia_elbo_tpr_at_1fpr")
# Conditional models only (genloop.core.label_fidelity): the mean share of samples generated for class k that
# the classifier puts in k, and one flat key per trained class (label_fidelity_3); higher is better, the
# floor is the classifier's (per-class) accuracy on held-out real images.
LABEL_FIDELITY = "label_fidelity"
# Conditional models only (genloop.core.tstr): train on synthetic, test on real. The evaluation classifier's
# architecture trained on labelled samples, its accuracy on the held-out real images, beside the same
# classifier trained on the real training split (the floor); higher is better.
TSTR_METRICS = ("tstr_accuracy", "tstr_real_accuracy")


def label_fidelity_metrics(per_class: dict[int, float], mean: float) -> dict[str, float]:
    return {LABEL_FIDELITY: mean, **{f"{LABEL_FIDELITY}_{k}": v for k, v in sorted(per_class.items())}}


def is_label_fidelity(key: str) -> bool:
    suffix = key.removeprefix(LABEL_FIDELITY)
    return key.startswith(LABEL_FIDELITY) and (suffix == "" or (suffix[:1] == "_" and suffix[1:].isdigit()))
