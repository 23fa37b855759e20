"""One typed configuration for every stage, loaded from ``params.yaml``.

Strict models (``extra="forbid"``) so a typo in ``params.yaml`` is an error naming the field,
not a silently ignored knob.
"""
from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from genloop.errors import GenloopError, display_path

# The two generator kinds genloop trains, in the order every table, loop and report lists them.
MODELS = ("vae", "gan")
MODEL_TITLES = {"vae": "VAE", "gan": "GAN"}  # how tables, pages and messages name each kind


def _word_literal(annotation: Any) -> bool:
    return typing.get_origin(annotation) is Literal and all(isinstance(v, str) for v in typing.get_args(annotation))


def _refuses_bool(annotation: Any) -> bool:
    """A number field (int, float, optional or in a list) that must not take ``true``/``false``, which pydantic
    would read as 1/0; fields that admit bool or anything (``Any``) keep their meaning."""
    if annotation is bool or annotation is Any:
        return False
    if annotation in (int, float):
        return True
    args = [a for a in typing.get_args(annotation) if (isinstance(a, type) or typing.get_args(a) or a is Any)
            and not _word_literal(a)]  # a word choice beside numbers ("all" | list[int]) leaves them numbers
    return bool(args) and typing.get_origin(annotation) is not Literal and \
        all(a is type(None) or _refuses_bool(a) for a in args) and any(a is not type(None) for a in args)


class Strict(BaseModel):
    # allow_inf_nan=False: .inf or .nan in any float field is refused (an infinite lr trained a NaN model).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, bool) for v in values) and _refuses_bool(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"expected a number, got {str(value).lower() if not isinstance(value, list) else value}")
        return value


class CollectConfig(Strict):
    """What collect reads and how it brings every image to one layout. Nothing is converted silently:
    mixed channels or sizes without a setting are an error listing the counts, and with one collect warns
    with the number of images it converted or resized."""

    source: str = "digits"
    channels: Literal["auto", 1, 3] = Field(
        "auto", description="auto: grey if every image is grey, colour if every image is colour, else an error; "
                            "1: colour images become grey (luma); 3: grey images are repeated into 3 channels")
    size: Literal["native"] | int = Field(
        "native", description="native: keep each image's size (all must agree); an int: resize to that square "
                              "side with resize_filter (the emoji source: native means 32)")
    resize_filter: Literal["nearest", "box", "bilinear", "hamming", "bicubic", "lanczos"] = Field(
        "lanczos", description="Pillow filter used whenever collect resizes")
    background: str = Field(
        "white", description="colour transparent pixels (RGBA, LA, palette transparency) are composited on: "
                             "a name or #rrggbb that Pillow's ImageColor knows")
    max_bytes: int = Field(
        500_000_000, ge=1, description="largest decoded pixel payload a source may declare (npz, IDX) or fill "
                                       "(folders), checked before inflating; collect holds it in memory")

    @model_validator(mode="after")
    def _known_size_and_background(self) -> "CollectConfig":
        if isinstance(self.size, int) and not 1 <= self.size <= 4096:
            raise ValueError(f"collect.size {self.size}: expected native or a side between 1 and 4096")
        from PIL import ImageColor  # only here: config stays light otherwise

        try:
            ImageColor.getrgb(self.background)
        except ValueError:
            raise ValueError(f"collect.background {self.background!r}: not a colour name or #rrggbb") from None
        return self


class SplitConfig(Strict):
    val: float = Field(0.15, ge=0.0, lt=1.0)
    test: float = Field(0.15, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _leaves_training_data(self) -> "SplitConfig":
        if self.val + self.test >= 0.9:
            raise ValueError("split.val + split.test must leave at least 10% for training")
        return self


class CleanConfig(Strict):
    min_rows: int = Field(100, ge=1)
    max_rows: int = Field(5_000_000, ge=1)
    labels: Literal["all"] | list[int] = Field(
        "all", description="class labels an image may carry: all (every label found, 0 or above; -1, no label, "
                           "is quarantined) or a list, e.g. [0, 1, 2] (list -1 to keep unlabelled images)")
    pixel_min: int = 0
    pixel_max: int = 255
    min_pixel_std: float = Field(1.0, ge=0.0, description="below this an image counts as blank")
    max_quarantine_share: float = Field(0.05, ge=0.0, le=1.0)
    near_duplicate_distance: float = Field(
        0.03, ge=0.0, le=1.0,
        description="RMS pixel difference (pixels in [0, 1]) under which a val/test image is reported "
                    "as a near-duplicate of its nearest training image",
    )
    split: SplitConfig = SplitConfig()

    @field_validator("labels")
    @classmethod
    def _some_labels(cls, value: Literal["all"] | list[int]) -> Literal["all"] | list[int]:
        if value == []:
            raise ValueError("an empty list lets no image through; use all for every class label found")
        return value

    def allows(self, label: int) -> bool:
        """Whether an image with this label passes (all: every class label, i.e. 0 or above)."""
        return label >= 0 if self.labels == "all" else label in self.labels


class AugmentConfig(Strict):
    copies: int = Field(1, ge=0, description="augmented copies added per training image")
    rotation_degrees: float = Field(10.0, ge=0.0, le=180.0)
    scale_min: float = Field(0.9, gt=0.0)
    scale_max: float = Field(1.1, gt=0.0)
    crop_min: float = Field(0.85, gt=0.0, le=1.0, description="smallest side fraction kept by a crop")
    translate_max: float = Field(0.0, ge=0.0, le=0.5, description="largest shift, as a fraction of the side")
    elastic: bool = Field(False, description="add an elastic warp (Simard et al. 2003) in the same pass")
    elastic_alpha: float = Field(34.0, ge=0.0, description="elastic displacement scale, in pixels")
    elastic_sigma: float = Field(4.0, gt=0.0, description="smoothness of the elastic field (Gaussian sd, pixels)")
    colour_jitter: float = Field(0.0, ge=0.0, le=1.0, description="0: off; s: brightness, contrast and (colour "
                                 "images) saturation each scaled by a random factor in [1 - s, 1 + s]")
    fill: Literal["black", "white", "border"] = Field(
        "black", description="what a warp shows where it reads outside the image: black (digits, MNIST), white "
                             "(images on white, e.g. the emoji source), border (the nearest edge pixel)")
    preview_images: int = Field(32, ge=0, description="training images shown with their copies in preview.png")
    batch_size: int = Field(4096, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "AugmentConfig":
        if self.scale_min > self.scale_max:
            raise ValueError("augment.scale_min must not exceed augment.scale_max")
        return self


IMAGES_BUDGET = ("training images to see, the bound of a training: the same cost per pixel on any data set; "
                 "epochs = ceil(images / training set size), the last one partial")


# Largest δ accepted anywhere: a δ near 1 makes any ε meaningless (the accountant even reports ε < 0 there).
MAX_DELTA = 1e-2


class PrivacyConfig(Strict):
    """DP-SGD through Opacus (genloop.core.privacy): per-sample gradient clipping plus Gaussian noise, with the
    spent ε reported at ``delta``. Give either ``target_epsilon`` (the noise multiplier is then the smallest
    that stays within it over the planned steps) or ``noise_multiplier``, and null the other."""

    enabled: bool = Field(False, description="train this model with differential privacy (slower; batch norm "
                                             "becomes group norm, batches are Poisson-sampled)")
    target_epsilon: float | None = Field(None, gt=0.0, description="ε to spend over the whole training at delta")
    noise_multiplier: float | None = Field(1.0, gt=0.0, description="noise std / max_grad_norm; larger: smaller ε")
    max_grad_norm: float = Field(1.0, gt=0.0, description="each image's gradient is clipped to this L2 norm")
    delta: float = Field(1e-5, gt=0.0, le=MAX_DELTA, description="δ of the (ε, δ) guarantee, at most 1e-2 here and "
                                                                 "1 / training images at training time")
    accountant: Literal["rdp", "prv"] = Field("rdp", description="Opacus accountant turning noise, sampling rate "
                                                                 "and steps into ε (both assume Poisson sampling)")

    @model_validator(mode="after")
    def _one_noise_setting(self) -> "PrivacyConfig":
        if self.target_epsilon is not None and self.noise_multiplier is not None:
            raise ValueError("set either privacy.target_epsilon or privacy.noise_multiplier, and null the other "
                             f"(got target_epsilon={self.target_epsilon:g}, noise_multiplier={self.noise_multiplier:g})")
        if self.target_epsilon is None and self.noise_multiplier is None:
            raise ValueError("privacy.target_epsilon and privacy.noise_multiplier are both null; set one of them")
        return self


class VAEConfig(Strict):
    """Defaults measured on the digits (benchmarks/vae_sweep.py, BENCHMARKS.md): the MLP at β 0.25 with
    the fitted prior reached FID 18-28 (3 seeds) where the conv VAE at β 1 with N(0, I) sampling scored 117."""

    arch: Literal["conv", "mlp"] = Field("mlp", description="conv, or the pytorch/examples MLP (8x faster per image on CPU)")
    images: int = Field(1_000_000, ge=1, description=IMAGES_BUDGET)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    latent_dim: int = Field(8, ge=1)
    beta: float = Field(0.25, ge=0.0, description="KL weight; 0.25 sharpens samples (digits FID 41 -> 23) at +3 nats test ELBO")
    channels: int = Field(32, ge=1, description="conv arch: base channel count")
    decoder_convs: int = Field(0, ge=0, description="conv arch: extra 3x3 conv layers at each of the decoder's two lower resolutions")
    hidden: int = Field(400, ge=1, description="mlp arch: hidden units (400 in pytorch/examples)")
    kl_warmup: float = Field(0.0, ge=0.0, le=1.0, description="fraction of training over which the KL weight rises from 0 to beta")
    lr_schedule: Literal["constant", "cosine"] = Field("constant", description="cosine: decay lr to 0 over training")
    augmented: bool = Field(
        False, description="train on augment's copies too; off: they blur a likelihood model's samples "
                           "(MNIST FID 604 -> 3828, digits 15 -> 23)")
    prior: Literal["standard", "fitted_gaussian"] = Field(
        "fitted_gaussian",
        description="what the exported sampler feeds the decoder: standard = z ~ N(0, I) as is; fitted_gaussian = "
                    "z ~ N(0, I) mapped by mean + L z, a full-covariance Gaussian fitted to the training set's "
                    "aggregate posterior (means' covariance + mean posterior variance)")
    privacy: PrivacyConfig = PrivacyConfig()

    @model_validator(mode="after")
    def _private_prior(self) -> "VAEConfig":
        if self.privacy.enabled and self.prior == "fitted_gaussian":
            raise ValueError("privacy.enabled needs prior: standard; fitted_gaussian fits a Gaussian to the training "
                             "images' latents outside DP-SGD, which the privacy guarantee would not cover")
        return self
    conditional: bool = Field(
        False, description="class-conditional VAE (one-hot label into encoder and decoder); the sampler and "
                           "its ONNX graph take (z, label); a fitted prior is one Gaussian over all classes")


class DPMerfConfig(Strict):
    """DP-MERF (genloop.core.dp_merf): the per-class mean embedding of random Fourier features of the training
    images is released once with the analytic Gaussian mechanism at (epsilon, delta); the generator then
    trains on that release alone, which spends no further privacy however long it trains. Defaults: the
    configuration measured on MNIST t10k (benchmarks/private_mnist.py, BENCHMARKS.md)."""

    epsilon: float = Field(10.0, gt=0.0, description="ε of the one release (the whole training's budget)")
    delta: float = Field(1e-5, gt=0.0, le=MAX_DELTA, description="δ of the (ε, δ) guarantee, at most 1e-2 here and "
                                                                 "1 / training images at training time")
    count_weight: float = Field(0.25, gt=0.0, description="weight of the class-count entries in the released vector "
                                                          "(small: less of the noise budget spent on counts)")
    bandwidth: float = Field(0.3, gt=0.0, description="Gaussian kernel bandwidth as a per-pixel RMS distance")
    features: int = Field(2000, ge=1, description="random frequencies (the embedding has 2x as many entries per class)")
    steps: int = Field(1000, ge=1, description="generator optimizer steps against the release (free of privacy cost)")
    batch_size: int = Field(250, ge=2, description="generated images per step, every class equally")
    lr: float = Field(1e-3, gt=0.0, description="Adam learning rate, cosine-decayed over the steps")
    generator: Literal["dcgan", "merf"] = Field(
        "dcgan", description="dcgan: the conditional GAN's generator (channels, latent_dim); merf: DP-MERF's "
                             "smaller one (two linear layers, two upsampling convolutions; sides multiples of 4)")
    hidden: int = Field(256, ge=1, description="generator: merf only, width of its first linear layer")


class GANConfig(Strict):
    method: Literal["adversarial", "dp_merf"] = Field(
        "adversarial", description="adversarial: the GAN game (optionally DP-SGD, privacy); dp_merf: the generator "
                                   "trained against one private release of the data's mean embedding (dp_merf)")
    images: int = Field(400_000, ge=1, description=IMAGES_BUDGET + "; 400k: digits FID 1.09x the real floor")
    augmented: bool = Field(True, description="train on augment's copies too (MNIST FID 140 -> 125 with them)")
    batch_size: int = Field(64, ge=2, description="64 trains steadier than 128 on the 8x8 digits")
    lr_g: float = Field(2e-4, gt=0.0)
    lr_d: float = Field(2e-4, gt=0.0)
    beta1: float = Field(0.5, ge=0.0, lt=1.0)
    latent_dim: int = Field(32, ge=1)
    channels: int = Field(64, ge=2)
    upsample: Literal["transposed", "nearest"] = Field(
        "transposed", description="the generator's upsampling: DCGAN's transposed convolutions, or nearest then "
                                  "a 3x3 convolution (no checkerboard pattern; about 2x the generator's cost)")
    disc_channels: int = Field(0, ge=0, description="the discriminator's width; 0: channels, as the generator")
    disc_convs: int = Field(0, ge=0, description="extra 3x3 convolutions at each of the discriminator's two "
                                                 "resolutions: a stronger critic for varied colour images")
    loss: Literal["nonsaturating", "hinge"] = "nonsaturating"
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0, description="generator weight EMA; 0 turns it off")
    spectral_norm: bool = Field(False, description="spectral norm on the discriminator (drops its batch norm)")
    diffaugment: list[Literal["color", "translation", "cutout"]] = Field(
        default_factory=list,
        description="DiffAugment operations on real and fake images before the discriminator; off ([]): "
                    "translation+cutout raised FID at 400k images 5.3 -> 8.1 (digits), 140 -> 656 (MNIST)")
    privacy: PrivacyConfig = Field(PrivacyConfig(), description="DP-SGD on the discriminator, the only part that "
                                                                "sees real images")
    conditional: bool = Field(
        False, description="class-conditional GAN (z times a label embedding, projection discriminator); the "
                           "generator and its ONNX graph take (z, label)")
    dp_merf: DPMerfConfig = Field(DPMerfConfig(), description="method: dp_merf's settings")

    @model_validator(mode="after")
    def _private_discriminator(self) -> "GANConfig":
        if self.disc_channels == 1:
            raise ValueError("disc_channels must be 0 (the generator's channels) or at least 2")
        if self.privacy.enabled and self.spectral_norm:
            raise ValueError("privacy.enabled does not combine with spectral_norm (Opacus has no per-sample "
                             "gradients for parametrized layers); set spectral_norm: false")
        if self.method == "dp_merf":
            self._check_dp_merf()
        return self

    def _check_dp_merf(self) -> None:
        if not self.conditional:
            raise ValueError("method: dp_merf needs conditional: true (it releases one mean embedding per class)")
        if self.augmented:
            raise ValueError("method: dp_merf needs augmented: false (augment's copies of an image would each enter "
                             "the release, multiplying its sensitivity beyond what the noise covers)")
        if self.privacy.enabled:
            raise ValueError("method: dp_merf brings its own privacy (dp_merf.epsilon, dp_merf.delta); "
                             "set privacy.enabled: false")


def usable_cores() -> int:
    """Cores this process may run on."""
    import os

    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class TrainConfig(Strict):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(0, ge=0, description="torch intra-op threads; 0 means one per core this process may use "
                                                "(genloop makes idle OpenMP threads sleep, so trainings share cores)")
    warn_epochs: int = Field(1000, ge=1, description="warn before a training whose images budget means more epochs "
                                                     "than this over the training set (a tiny data set); the "
                                                     "digits' tuned VAE runs 798, so the shipped loop does not warn")
    sample_grid: int = Field(64, ge=1)
    compile: bool = Field(False, description="torch.compile the training step (falls back to eager on failure)")
    vae: VAEConfig = VAEConfig()
    gan: GANConfig = GANConfig()

    def torch_threads(self) -> int:
        """The intra-op threads to give torch: ``threads``, or one per core this process may use
        (its CPU affinity, which a container or ``taskset`` narrows, unlike ``os.cpu_count``)."""
        return self.threads or usable_cores()


class TrustConfig(Strict):
    """When evaluate calls its own figures untrustworthy (genloop.core.trust)."""

    min_held_out_images: int = Field(200, ge=2, description="fewer held-out (val + test) images make FID and its "
                                     "real-vs-real floor noise (64-dim feature covariances)")
    chance_factor: float = Field(1.5, ge=1.0, description="the classifier's held-out accuracy must exceed "
                                 "max(chance x chance_factor, chance + chance_margin)")
    chance_margin: float = Field(0.1, ge=0.0, lt=1.0)
    floor_ratio: float = Field(0.9, gt=0.0, le=1.0, description="a model FID below this times the real-vs-real "
                               "floor is suspect (copies, or features that cannot tell images apart)")


class EvaluateConfig(Strict):
    classifier_epochs: int = Field(15, ge=1)
    classifier_augment: bool = Field(
        False, description="train the evaluation's feature networks on mirrored and shifted batches: small colour "
                           "sets (icons, emoji) need it; digits are not mirror-symmetric")
    feature_dim: int = Field(64, ge=2)
    kid_subset_size: int = Field(500, ge=2, description="images per KID subset (at most the sample count); 100 left a subset spread ~60% of the mean")
    kid_subsets: int = Field(50, ge=1)
    is_splits: int = Field(10, ge=1, description="groups the Inception-Score analogue is averaged over")
    nearest_k: int = Field(5, ge=1, description="k of the k-NN precision/recall/density/coverage (Naeem et al.: 5)")
    manifold_max_reference: int = Field(
        5000, ge=2, description="training images (a seeded subset) the k-NN metrics compare with; cost grows with its square")
    copy_percentile: float = Field(
        1.0, gt=0.0, lt=100.0,
        description="a sample nearer a training image than this percentile of held-out real images counts as a copy")
    iwae_samples: int = Field(64, ge=1, description="importance samples per test image of the VAE's IWAE NLL estimate")
    iwae_images: int = Field(500, ge=1, description="test images (a seeded subset) the IWAE NLL is averaged over")
    recognisable_confidence: float = Field(
        0.9, gt=0.0, le=1.0, description="a sample is recognisable when the classifier gives one class at least this probability")
    batch_size: int = Field(1024, ge=1, description="rows per forward pass (images x IWAE samples included) of "
                                                    "28x28 grey images; larger images pass proportionally fewer")
    report_samples: int = Field(64, ge=1, description="samples per model in the report's grids")
    interpolation_rows: int = Field(6, ge=1, description="latent interpolations per model in the report")
    interpolation_steps: int = Field(10, ge=2, description="images per interpolation, both ends included")
    audit_images: int = Field(
        2000, ge=0, description="membership audit: training and held-out images per side (seeded subsets); 0: no audit")
    audit_samples: int = Field(
        10000, ge=1, description="membership audit: generated samples (a seeded draw) the distance attack searches")
    explain: bool = Field(True, description="write the latent atlas (reports/explain.html, explain.json) of both models")
    explain_images: int = Field(
        2000, ge=2, description="latent atlas: held-out images encoded and measured, and as many samples drawn")
    tstr_images: int = Field(
        10000, ge=0, description="TSTR (conditional models): labelled samples the classifier trains on, as many as "
                                 "the training split holds up to this; 0: no TSTR")
    trust: TrustConfig = TrustConfig()


class PromotionConfig(Strict):
    """The gate that moves a registered model's ``champion`` alias (genloop.io.promotion)."""

    enabled: bool = Field(True, description="false: register versions but never move the champion alias")
    metric: str = Field("fid", description="key of reports/metrics.json[MODEL] compared, e.g. fid, kid_mean")
    direction: Literal["minimize", "maximize"] = "minimize"
    margin: float = Field(0.0, ge=0.0, description="how much better than the champion a version must score")
    tolerance: float = Field(1e-6, ge=0.0, description="relative to the champion's figure: differences this small "
                             "are float noise, not an improvement (added to the margin)")
    max_epsilon: float | None = Field(None, gt=0.0, description="refuse a version whose training spent a larger "
                                      "differential-privacy ε, or was not private; null: no bound")
    require_trusted_evaluation: bool = Field(True, description="refuse a version whose evaluation "
                                             "(reports/metrics.json evaluation_trusted) cannot be trusted")


class ExportConfig(Strict):
    parity_tolerance: float = Field(1e-4, gt=0.0)
    parity_batch_sizes: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=lambda: [1, 64], min_length=1, description="batch sizes (1 to 4096) the ONNX parity check runs")
    register_models: bool = True
    vae_model_name: str = "genloop-vae"
    gan_model_name: str = "genloop-gan"
    promotion: PromotionConfig = PromotionConfig()

    @model_validator(mode="after")
    def _one_name_per_kind(self) -> "ExportConfig":
        if self.vae_model_name == self.gan_model_name:
            raise ValueError(f"export.vae_model_name and export.gan_model_name are both {self.vae_model_name!r}; "
                             "a registered model holds one kind (vae or gan): give each its own name")
        return self

    def model_name(self, kind: str) -> str:
        """The registered (and served) name of model kind ``vae`` or ``gan``."""
        return {"vae": self.vae_model_name, "gan": self.gan_model_name}[kind]

    def served_files(self) -> dict[str, str]:
        """Registered name -> the ONNX file export writes for it in models/ (what `genloop serve` serves)."""
        from genloop.paths import ONNX_FILES

        return {self.model_name(kind): file for kind, file in ONNX_FILES.items()}


class ServeConfig(Strict):
    """Defaults of ``genloop serve``; its command-line options override them."""

    max_batch_rows: int = Field(256, ge=1, description="rows the dynamic batcher merges into one onnxruntime run")
    max_batch_delay_ms: float = Field(5.0, ge=0.0, le=10_000.0, description="longest wait for requests to batch with")
    max_rows_per_request: int = Field(1024, ge=1)
    threads: int = Field(0, ge=0, description="onnxruntime intra-op threads per model; 0: one per core")
    poll_seconds: float = Field(10.0, ge=0.0, description="how often a server of the registry's champions checks "
                                                          "the alias; 0: only on load requests")
    public_metrics: bool = Field(False, description="with a token: leave /metrics, /docs, /openapi.json open")
    timeout_keep_alive: float = Field(5.0, gt=0.0, description="seconds before an idle connection, or one that "
                                                               "has not sent its request head, is closed")
    limit_concurrency: int | None = Field(1000, ge=1, description="connections + tasks before new ones get 503")
    body_timeout: float = Field(30.0, gt=0.0, description="seconds a request's body may take to arrive after its "
                                                          "head; a slower one is closed")
    max_connections_per_client: int | None = Field(100, ge=1, description="open connections from one client "
                                                                          "address; more are refused with 503")
    h11_max_incomplete_event_size: int = Field(65536, ge=1024, description="largest request line + headers, bytes")


class TritonConfig(Strict):
    """The Triton model repository `genloop export` writes beside the ONNX files (models/triton)."""

    write: bool = True
    max_batch_size: int = Field(256, ge=1, le=4096, description="Triton batches up to this (the ONNX graph: 4096)")
    max_queue_delay_microseconds: int = Field(5000, ge=0, description="dynamic_batching wait for more requests")
    instance_kind: Literal["KIND_AUTO", "KIND_GPU", "KIND_CPU"] = Field(
        "KIND_AUTO", description="KIND_AUTO: on the GPU(s) when Triton has them, else on the CPU")
    instance_count: int = Field(1, ge=1)


class DeployConfig(Strict):
    """Where a promotion goes live: servers told to load the new champion, and the Triton repository."""

    servers: list[str] = Field(default_factory=list, description="base URLs of `genloop serve` (or Triton) servers "
                                                                 "notified after a promotion")
    token_env: str = Field("GENLOOP_SERVE_TOKEN", description="environment variable holding their bearer token")
    timeout_seconds: float = Field(30.0, gt=0.0, description="per server; a load downloads and warms up the model")
    triton: TritonConfig = TritonConfig()


class MlflowConfig(Strict):
    tracking_uri: str = "sqlite:///mlflow/mlflow.db"
    artifact_root: str = "mlflow/artifacts"
    experiment: str = "genloop"


class ScheduleConfig(Strict):
    """The scheduled loop (deployment ``genloop-loop/scheduled``); ``cron: null`` serves no schedule."""

    cron: str | None = Field(None, description="5-field cron, e.g. '0 3 * * *' (daily 03:00)")
    timezone: str = "UTC"
    source: str | None = Field(None, description="source to collect from; null: collect.source")
    mode: Literal["replace", "append"] = Field(
        "replace", description="replace: data/ mirrors the source; append: each tick adds the source as a batch")

    @model_validator(mode="after")
    def _valid_cron(self) -> "ScheduleConfig":
        if self.cron is not None:
            from prefect._vendor.croniter import croniter  # only when a schedule is set: prefect is heavy

            if len(self.cron.split()) != 5 or not croniter.is_valid(self.cron):
                raise ValueError(f"schedule.cron {self.cron!r} is not a 5-field cron expression like '0 3 * * *'")
        return self


class SweepRange(Strict):
    """A numeric range: sampled by ``random`` (log-uniform with ``log``), or ``num`` points for ``grid``."""

    low: float
    high: float
    log: bool = False
    integer: bool = False
    num: int | None = Field(None, ge=2, description="grid points (grid only)")

    @model_validator(mode="after")
    def _ordered(self) -> "SweepRange":
        if self.low > self.high:
            raise ValueError(f"sweep range low={self.low} exceeds high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError("a log sweep range needs low > 0")
        return self


class SweepConfig(Strict):
    """Hyperparameter search run by the ``genloop-sweep`` flow; ``space`` maps dotted params keys to
    a list of values or a range."""

    method: Literal["grid", "random"] = "grid"
    n_trials: int | None = Field(None, ge=1, description="random: how many; grid: at most this many (null: all)")
    seed: int = 0
    space: dict[str, list[Any] | SweepRange] = Field(
        default_factory=lambda: {"train.vae.latent_dim": [8, 16], "train.vae.beta": [0.5, 1.0]})
    metric: str = Field("vae.fid", description="MODEL.METRIC scored per trial, e.g. vae.fid, gan.kid_mean")
    direction: Literal["minimize", "maximize"] = "minimize"
    workers: int = Field(2, ge=1, description="Dask LocalCluster worker processes (ignored with dask_address)")
    threads_per_trial: int = Field(1, ge=1, description="torch threads inside each trial")
    dask_address: str | None = Field(None, description="tcp://host:port of an existing Dask scheduler")

    @model_validator(mode="after")
    def _complete(self) -> "SweepConfig":
        if not self.space:
            raise ValueError("sweep.space is empty; give at least one dotted key, e.g. train.vae.beta: [0.5, 1.0]")
        if self.method == "random" and self.n_trials is None:
            raise ValueError("sweep.method random needs sweep.n_trials")
        for key, dim in self.space.items():
            if isinstance(dim, list) and not dim:
                raise ValueError(f"sweep.space.{key} is an empty list")
            if self.method == "grid" and isinstance(dim, SweepRange) and dim.num is None:
                raise ValueError(f"sweep.space.{key}: a range in a grid sweep needs num (how many points)")
        model, _, name = self.metric.partition(".")
        if model not in MODELS or not name:
            raise ValueError(f"sweep.metric {self.metric!r}: expected MODEL.METRIC with MODEL vae or gan, e.g. vae.fid")
        return self


class Params(Strict):
    seed: int = 42
    collect: CollectConfig = CollectConfig()
    clean: CleanConfig = CleanConfig()
    augment: AugmentConfig = AugmentConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    export: ExportConfig = ExportConfig()
    serve: ServeConfig = ServeConfig()
    deploy: DeployConfig = DeployConfig()
    mlflow: MlflowConfig = MlflowConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    sweep: SweepConfig = SweepConfig()

    @model_validator(mode="after")
    def _conditional_needs_labels(self) -> "Params":
        unknown = [] if self.clean.labels == "all" else sorted(label for label in self.clean.labels if label < 0)
        for kind in MODELS:
            if getattr(self.train, kind).conditional and unknown:
                raise ValueError(f"train.{kind}.conditional needs labelled images, but clean.labels lets through "
                                 f"{unknown} (-1: no label); drop it from clean.labels or set train.{kind}.conditional: false")
        return self


class ConfigError(GenloopError, ValueError):
    """A params file or override that cannot be used; the message names the file (or option) and field."""


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def dotted_to_nested(overrides: dict[str, Any]) -> dict[str, Any]:
    """``{"train.vae.images": 2}`` -> ``{"train": {"vae": {"images": 2}}}`` (as ``dvc exp -S`` spells them)."""
    nested: dict[str, Any] = {}
    for dotted, value in overrides.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def describe_errors(exc: ValidationError, prefix: str = "") -> str:
    """pydantic's errors as one line of ``field.path: message`` items (no URLs, no input dumps)."""
    return "; ".join(
        f"{prefix}{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
        for err in exc.errors()
    )


def field_paths(model: type[BaseModel] = None, prefix: str = "") -> list[str]:
    """Every dotted key the config accepts (sections too), e.g. ``train``, ``train.vae.images``."""
    model = model or Params
    paths = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            paths.extend(field_paths(info.annotation, f"{path}."))
    return paths


def _leaf_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        keys.extend(_leaf_keys(value, f"{path}.") if isinstance(value, dict) and value else [path])
    return keys


def _suggest(key: str) -> str:
    near = difflib.get_close_matches(key, field_paths(), n=3, cutoff=0.6)
    if not near:  # a typo in the section part: look among the siblings of the last good section
        parent = key.rpartition(".")[0]
        near = [p for p in field_paths() if p.rpartition(".")[0] == parent][:8]
        return f"; valid keys there: {', '.join(near)}" if near else ""
    return f"; did you mean {' or '.join(near)}?"


def _describe_error(err: dict, origin: str, override_keys: list[str]) -> str:
    """One pydantic error, said in the user's terms: which key, where it came from, what to do."""
    key = ".".join(str(p) for p in err["loc"]) or "<root>"
    from_option = next((o for o in override_keys if key == o or key.startswith(o + ".") or o.startswith(key + ".")),
                       None)
    where = f"-S {from_option}" if from_option else origin
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown key {key}{_hint(key) or _suggest(key)}"
    message = err["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if key == "<root>" else f"{where}: {key}: {message}"


def _hint(key: str) -> str:
    """Why a key that used to exist is gone, where that is the likely cause."""
    if key.startswith("train.") and key.endswith(".epochs"):
        return (" (trainings are bounded by `images`, the training images to see, instead of epochs; "
                "e.g. -S train.vae.images=50000)")
    return ""


def params_from_dict(raw: dict[str, Any], origin: str = "<params>", override_keys: list[str] | None = None) -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe_error(err, origin, override_keys or []) for err in exc.errors())
        raise ConfigError(f"invalid parameters: {problems}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (plain YAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice in one mapping",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def yaml_load(text: str) -> Any:
    """``yaml.safe_load`` refusing duplicate keys: what genloop reads params (and -S values) with."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def _read_params_file(path: Path, required: bool) -> dict[str, Any]:
    shown = display_path(path)
    if not path.exists():
        if required:
            raise ConfigError(f"{shown}: params file not found")
        return {}
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{shown}: not a text (UTF-8) YAML file (byte {exc.start} is 0x{exc.object[exc.start]:02x})") from None
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read ({exc.strerror or exc})") from None
    if "\x00" in text:
        raise ConfigError(f"{shown}: not a text YAML file (it holds NUL bytes)")
    try:
        raw = yaml_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{shown}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{shown}: expected a mapping at the top level")
    return raw


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None,
                required: bool = False) -> Params:
    """Read ``params.yaml``; ``overrides`` (nested or dotted keys) win over the file. A missing file
    means the defaults unless ``required`` (a file the user named)."""
    path = Path(path)
    raw = _read_params_file(path, required)
    override_keys: list[str] = []
    if overrides:
        flat = {k: v for k, v in overrides.items() if "." in k}
        nested = {k: v for k, v in overrides.items() if "." not in k}
        override_keys = [*flat, *_leaf_keys(nested)]
        raw = _merge(_merge(raw, nested), dotted_to_nested(flat))
    return params_from_dict(raw, origin=display_path(path), override_keys=override_keys)



def sampling_seed(seed: int) -> int:
    """The z stream a generator is scored on (evaluate, the promotion gate's re-scoring, sweeps); apart
    from ``seed`` itself, which trains, so scoring never replays training's first draws."""
    return seed + 1
