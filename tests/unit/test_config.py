"""Unit tests for genloop.config: strict params loading, overrides, error messages."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from genloop.config import ConfigError, Params, SplitConfig, dotted_to_nested, load_params


def test_defaults_load_when_file_absent(tmp_path):
    params = load_params(tmp_path / "params.yaml")
    assert params == Params()
    assert params.seed == 42
    assert params.collect.source == "digits"
    assert params.clean.labels == "all"


def test_shipped_params_file_matches_the_code_defaults():
    """params.yaml documents every knob; it must not drift from the defaults in config.py."""
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[2] / "params.yaml"
    assert load_params(shipped) == Params()


def test_file_values_are_read(tmp_path):
    file = tmp_path / "params.yaml"
    file.write_text("seed: 7\ntrain:\n  vae:\n    images: 3000\n")
    params = load_params(file)
    assert params.seed == 7
    assert params.train.vae.images == 3000
    # untouched siblings keep their defaults
    assert params.train.vae.batch_size == 128
    assert params.train.gan.images == Params().train.gan.images


def test_typo_key_names_file_and_field_path(tmp_path):
    file = tmp_path / "params.yaml"
    file.write_text("train:\n  vae:\n    epoch: 3\n")
    with pytest.raises(ConfigError) as info:
        load_params(file)
    message = str(info.value)
    assert str(file) in message
    assert "train.vae.epoch" in message


def test_wrong_type_names_field(tmp_path):
    file = tmp_path / "params.yaml"
    file.write_text("augment:\n  copies: many\n")
    with pytest.raises(ConfigError, match=r"augment\.copies"):
        load_params(file)


def test_dotted_override_wins_over_file(tmp_path):
    file = tmp_path / "params.yaml"
    file.write_text("train:\n  vae:\n    images: 3000\n    lr: 0.5\n")
    params = load_params(file, overrides={"train.vae.images": 2000})
    assert params.train.vae.images == 2000
    assert params.train.vae.lr == 0.5  # sibling from the file survives the merge


def test_nested_override_merges_with_file(tmp_path):
    file = tmp_path / "params.yaml"
    file.write_text("seed: 1\ntrain:\n  vae:\n    images: 3000\n")
    params = load_params(file, overrides={"seed": 9, "train": {"gan": {"images": 4000}}})
    assert params.seed == 9
    assert params.train.gan.images == 4000
    assert params.train.vae.images == 3000


def test_override_without_file(tmp_path):
    params = load_params(tmp_path / "missing.yaml", overrides={"clean.split.val": 0.2})
    assert params.clean.split.val == 0.2


def test_bad_override_key_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.vae\.epochz"):
        load_params(tmp_path / "params.yaml", overrides={"train.vae.epochz": 2})


def test_dotted_to_nested():
    assert dotted_to_nested({"a.b.c": 1, "a.b.d": 2, "e": 3}) == {"a": {"b": {"c": 1, "d": 2}}, "e": 3}


def test_invalid_yaml_names_file(tmp_path):
    file = tmp_path / "params.yaml"
    file.write_text("train: [unclosed\n  vae: {images: 3\n")
    with pytest.raises(ConfigError) as info:
        load_params(file)
    assert str(file) in str(info.value)
    assert "YAML" in str(info.value)


def test_non_mapping_top_level_rejected(tmp_path):
    file = tmp_path / "params.yaml"
    file.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_params(file)


def test_empty_file_gives_defaults(tmp_path):
    file = tmp_path / "params.yaml"
    file.write_text("")
    assert load_params(file) == Params()


def test_split_too_large_rejected(tmp_path):
    file = tmp_path / "params.yaml"
    file.write_text("clean:\n  split:\n    val: 0.5\n    test: 0.45\n")
    with pytest.raises(ConfigError) as info:
        load_params(file)
    assert str(file) in str(info.value)
    assert "clean.split" in str(info.value)


def test_split_just_below_limit_accepted_and_at_the_limit_rejected():
    split = SplitConfig(val=0.45, test=0.449)
    assert (split.val, split.test) == (0.45, 0.449)
    with pytest.raises(ValidationError, match="at least 10% for training"):
        SplitConfig(val=0.5, test=0.4)


def test_params_are_frozen():
    params = Params()
    with pytest.raises(ValidationError, match="Instance is frozen"):
        params.seed = 3  # type: ignore[misc]
    with pytest.raises(ValidationError, match="Instance is frozen"):
        params.train.vae.lr = 0.5  # type: ignore[misc]
    assert (params.seed, params.train.vae.lr) == (Params().seed, Params().train.vae.lr)


def test_unknown_override_key_names_the_option_and_suggests_the_nearest_keys(tmp_path):
    file = tmp_path / "params.yaml"
    file.write_text("seed: 1\n")
    with pytest.raises(ConfigError) as info:
        load_params(file, overrides={"train.vae.imagez": 2})
    message = str(info.value)
    assert "-S train.vae.imagez: unknown key train.vae.imagez; did you mean train.vae.images" in message
    assert str(file) not in message  # the file is not to blame
    assert "Extra inputs" not in message


def test_unknown_file_key_names_the_file_and_suggests_the_nearest_keys(tmp_path):
    file = tmp_path / "params.yaml"
    file.write_text("clean:\n  min_row: 5\n")
    with pytest.raises(ConfigError, match=rf"{file}: unknown key clean\.min_row; did you mean clean\.min_rows"):
        load_params(file, overrides={"seed": 3})


def test_missing_params_file_fails_when_required(tmp_path):
    with pytest.raises(ConfigError, match=rf"{tmp_path / 'nope.yaml'}: params file not found"):
        load_params(tmp_path / "nope.yaml", required=True)


def test_binary_params_file_names_the_file(tmp_path):
    file = tmp_path / "params.yaml"
    file.write_bytes(b"\x7fELF\x02\x01\x01\x00\xff\xfe\x00")
    with pytest.raises(ConfigError, match=rf"{file}: not a text \(UTF-8\) YAML file"):
        load_params(file)


def test_non_utf8_file_name_is_shown_escaped(tmp_path):
    import os

    file = tmp_path / os.fsdecode(b"p\xff.yaml")
    file.write_text("seed: [1\n")
    with pytest.raises(ConfigError) as info:
        load_params(file)
    assert "p\\xff.yaml: not valid YAML at line 2" in str(info.value)
    str(info.value).encode("utf-8")  # printable as it is


def test_config_error_is_a_user_error():
    from genloop.errors import GenloopError, is_user_error

    assert issubclass(ConfigError, GenloopError) and is_user_error(ConfigError("x"))
    assert not is_user_error(ValueError("a bug"))


def test_the_old_epochs_budget_is_rejected_with_a_pointer_to_images(tmp_path):
    file = tmp_path / "params.yaml"
    file.write_text("train:\n  gan:\n    epochs: 60\n")
    with pytest.raises(ConfigError, match=r"unknown key train\.gan\.epochs \(trainings are bounded by `images`"):
        load_params(file)


def test_one_registered_name_for_both_kinds_is_refused_naming_both_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"-S export\.gan_model_name.*export\.vae_model_name and "
                                          r"export\.gan_model_name are both 'genloop-vae'"):
        load_params(tmp_path / "params.yaml", {"export.gan_model_name": "genloop-vae"})


@pytest.mark.parametrize("key,value", [("train.vae.lr", float("inf")), ("train.gan.lr_g", float("nan")),
                                       ("evaluate.copy_percentile", float("-inf")),
                                       ("export.promotion.max_epsilon", float("inf"))])
def test_non_finite_numbers_are_refused_in_every_float_field(tmp_path, key, value):
    with pytest.raises(ConfigError, match=rf"{key.replace('.', r'[.]')}: Input should be a finite number"):
        load_params(tmp_path / "params.yaml", {key: value})


def test_yaml_inf_in_the_params_file_is_refused(tmp_path):
    file = tmp_path / "params.yaml"
    file.write_text("train:\n  vae:\n    lr: .inf\n")
    with pytest.raises(ConfigError, match=r"train\.vae\.lr: Input should be a finite number"):
        load_params(file)


@pytest.mark.parametrize("sizes", [[-3], [0], [], [1, 5000]])
def test_parity_batch_sizes_must_be_between_1_and_the_graphs_4096(tmp_path, sizes):
    with pytest.raises(ConfigError, match=r"export\.parity_batch_sizes"):
        load_params(tmp_path / "params.yaml", {"export.parity_batch_sizes": sizes})


@pytest.mark.parametrize("key,value", [("train.vae.images", True), ("train.gan.lr_d", False),
                                       ("clean.labels", [0, True]), ("export.promotion.max_epsilon", True)])
def test_true_or_false_for_a_number_is_refused_not_read_as_1_or_0(tmp_path, key, value):
    with pytest.raises(ConfigError, match=rf"{key.replace('.', r'[.]')}: expected a number"):
        load_params(tmp_path / "params.yaml", {key: value})
    assert load_params(tmp_path / "params.yaml", {"train.compile": True}).train.compile is True


def test_a_key_given_twice_in_the_params_file_is_refused_naming_it(tmp_path):
    file = tmp_path / "params.yaml"
    file.write_text("train:\n  vae:\n    images: 5000\n    lr: 0.01\n    images: 7000\n")
    with pytest.raises(ConfigError, match=r"params\.yaml: not valid YAML at line 5.*'images' is given twice"):
        load_params(file)


def test_the_epochs_hint_cites_no_issue_number(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_params(tmp_path / "params.yaml", {"train.vae.epochs": 3})
    assert "issue" not in str(caught.value) and "train.vae.images=" in str(caught.value)


def test_a_conditional_model_on_unlabelled_images_is_refused_at_config_time(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.gan\.conditional needs labelled images.*clean\.labels lets through \[-1\]"):
        load_params(tmp_path / "params.yaml", {"clean.labels": [-1], "train.gan.conditional": True})
    assert load_params(tmp_path / "params.yaml", {"clean.labels": [-1]}).clean.labels == [-1]  # unconditional: fine


def test_clean_labels_take_all_or_a_list_and_refuse_anything_else(tmp_path):
    file = tmp_path / "params.yaml"
    assert load_params(file, {"clean.labels": "all"}).clean.labels == "all"
    assert load_params(file, {"clean.labels": [0, 3, 11]}).clean.labels == [0, 3, 11]
    assert load_params(file, {"clean.labels": "all", "train.gan.conditional": True}).train.gan.conditional
    for bad in ("some", []):
        with pytest.raises(ConfigError, match=r"clean\.labels"):
            load_params(file, {"clean.labels": bad})
