"""Collect keeps what it reads: colour stays colour, mixed inputs need a setting, every conversion is
counted, alpha is composited on a stated background, and hostile headers are refused before inflating.
Real PNG, npz and IDX files written here; the collect stage and the CLI run on them."""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from genloop.cli import main
from genloop.config import CollectConfig
from genloop.io.idx import write_idx
from genloop.io.sources import SourceError, load_source
from genloop.paths import ProjectPaths
from genloop.stages.collect import ORIGIN_COLUMNS, collect, read_dataset


def colour_image(seed: int, size: tuple[int, int] = (6, 5)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def save(path: Path, image: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def colour_folder(root: Path, per_class: int = 3, size: tuple[int, int] = (6, 5)) -> Path:
    for c, name in enumerate(("cat", "dog")):
        for i in range(per_class):
            save(root / name / f"{i}.png", Image.fromarray(colour_image(10 * c + i, size)))
    return root


def test_colour_folder_is_collected_with_three_channels_and_origins_in_the_manifest(tmp_path):
    src = colour_folder(tmp_path / "imgs")
    paths = ProjectPaths.at(tmp_path / "project")

    result = collect(CollectConfig(source=f"folder:{src}"), paths, version_with_dvc=False)

    images, manifest = read_dataset(paths)
    assert images.shape == (6, 6, 5, 3) and images.dtype == np.uint8
    assert (images[0] == colour_image(0)).all()  # the pixels themselves, channel last
    assert result.channels == 3 and result.warnings == ()
    assert list(manifest.columns[-4:]) == ORIGIN_COLUMNS
    assert (manifest["channels"] == 3).all() and (manifest["orig_mode"] == "RGB").all()
    assert (manifest["orig_height"] == 6).all() and (manifest["orig_width"] == 5).all()


def mixed_folder(root: Path) -> Path:
    save(root / "a" / "grey.png", Image.fromarray(np.full((6, 5), 90, np.uint8)))
    save(root / "a" / "grey2.png", Image.fromarray(np.full((6, 5), 40, np.uint8)))
    save(root / "b" / "rgb.png", Image.fromarray(colour_image(1)))
    save(root / "b" / "big.png", Image.fromarray(colour_image(2, (12, 10))).convert("RGBA"))
    return root


def test_mixed_modes_and_sizes_without_settings_is_one_error_with_counts_and_settings(tmp_path):
    src = mixed_folder(tmp_path)
    with pytest.raises(SourceError) as err:
        load_source(f"folder:{src}")
    text = str(err.value)
    assert "grey 2" in text and "colour 2" in text
    assert "L 2" in text and "RGB 1" in text and "RGBA 1" in text
    assert "6x5 3" in text and "12x10 1" in text
    assert "collect.channels" in text and "collect.size" in text


def test_mixed_inputs_with_settings_are_converted_and_every_conversion_is_counted(tmp_path):
    src = mixed_folder(tmp_path / "imgs")
    paths = ProjectPaths.at(tmp_path / "project")
    config = CollectConfig(source=f"folder:{src}", channels=3, size=8, resize_filter="bilinear")

    result = collect(config, paths, version_with_dvc=False)

    images, manifest = read_dataset(paths)
    assert images.shape == (4, 8, 8, 3)
    assert (images[0] == 90).all()  # a flat grey image stays flat and grey in every channel
    assert any("converted 2 of 4 images to colour" in w for w in result.warnings)
    assert any("resized 4 of 4 images to 8x8 with bilinear" in w for w in result.warnings)
    assert manifest["orig_mode"].tolist() == ["L", "L", "RGBA", "RGB"]  # a/grey, a/grey2, b/big, b/rgb
    assert manifest["orig_height"].tolist() == [6, 6, 12, 6]


def test_grey_setting_turns_colour_into_luma(tmp_path):
    src = mixed_folder(tmp_path)
    batch = load_source(f"folder:{src}", config=CollectConfig(channels=1, size=6))
    assert batch.images.shape == (4, 6, 6)
    assert any("converted 2 of 4 images to grey" in n for n in batch.notes)


@pytest.mark.parametrize("background, value", [("white", 255), ("black", 0), ("#808080", 128)])
def test_transparent_rgba_is_composited_on_the_stated_background(tmp_path, background, value):
    rgba = np.zeros((6, 6, 4), np.uint8)
    rgba[..., 0] = 255  # red, but fully transparent except one opaque pixel
    rgba[0, 0, 3] = 255
    save(tmp_path / "x" / "icon.png", Image.fromarray(rgba, mode="RGBA"))

    batch = load_source(f"folder:{tmp_path}", config=CollectConfig(background=background))

    image = batch.images[0]
    assert image.shape == (6, 6, 3)
    assert (image[0, 0] == [255, 0, 0]).all()
    assert (image[1:, 1:] == value).all()


def test_grey_with_alpha_stays_grey_on_white(tmp_path):
    la = Image.fromarray(np.stack([np.full((4, 4), 10, np.uint8), np.zeros((4, 4), np.uint8)], axis=2), mode="LA")
    save(tmp_path / "x" / "la.png", la)
    batch = load_source(f"folder:{tmp_path}")
    assert batch.images.shape == (1, 4, 4) and (batch.images == 255).all()
    assert batch.modes == ("LA",)


def test_palette_png_is_expanded_to_its_colours_and_a_grey_palette_stays_grey(tmp_path):
    rgb = Image.fromarray(colour_image(3)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    grey = Image.fromarray(np.tile(np.arange(0, 250, 50, dtype=np.uint8), (6, 1))).convert("RGB").convert("P")
    save(tmp_path / "c" / "p.png", rgb)
    save(tmp_path / "g" / "p.png", grey)

    colour = load_source(f"folder:{tmp_path}", config=CollectConfig(channels=3))

    assert colour.images.shape == (2, 6, 5, 3)
    assert (colour.images[0] == np.asarray(rgb.convert("RGB"))).all()
    assert colour.modes == ("P", "P")
    assert any("converted 1 of 2 images to colour" in n for n in colour.notes)  # only the grey palette
    assert load_source(f"folder:{tmp_path / 'g'}/..", config=CollectConfig(channels=1)).images.ndim == 3


def test_16_bit_colour_png_is_refused_or_read_and_16_bit_grey_is_scaled(tmp_path):
    save(tmp_path / "0" / "deep.png", Image.fromarray(np.full((3, 3), 257 * 200, np.uint16)))
    batch = load_source(f"folder:{tmp_path}")
    assert batch.images.dtype == np.uint8 and (batch.images == 200).all()
    assert batch.modes[0].startswith("I")


def test_colour_npz_is_kept_and_can_be_turned_grey_with_a_warning(tmp_path):
    images = np.stack([colour_image(i, (4, 4)) for i in range(3)])
    file = tmp_path / "c.npz"
    np.savez(file, images=images, labels=np.array([0, 1, 2]))

    kept = load_source(f"npz:{file}")
    grey = load_source(f"npz:{file}", config=CollectConfig(channels=1))

    assert kept.images.shape == (3, 4, 4, 3) and (kept.images == images).all() and kept.notes == ()
    assert grey.images.shape == (3, 4, 4) and "converted 3 of 3 images to grey" in grey.notes[0]


# ---- class names that pandas would read as missing ------------------------------------------------

@pytest.mark.parametrize("odd", ["NA", "null", "NaN", "None"])
def test_class_folders_named_like_missing_values_keep_name_and_label_on_append(tmp_path, odd):
    src = tmp_path / "imgs"
    for name, value in ((odd, 50), ("cat", 150)):
        save(src / name / "a.png", Image.fromarray(np.full((4, 4), value, np.uint8)))
    paths = ProjectPaths.at(tmp_path / "project")
    collect(CollectConfig(source=f"folder:{src}"), paths, version_with_dvc=False)
    save(src / odd / "b.png", Image.fromarray(np.full((4, 4), value - 1, np.uint8)))

    collect(CollectConfig(source=f"folder:{src}"), paths, version_with_dvc=False, mode="append")

    _, manifest = read_dataset(paths)
    by_name = manifest.groupby("class_name")["label"].unique()
    assert sorted(by_name.index) == sorted([odd, "cat"])
    assert all(len(labels) == 1 for labels in by_name)  # one label per class, also after the append
    raw = pd.read_csv(paths.manifest, keep_default_na=False, dtype=str)
    assert (raw["class_name"] != "").all()


# ---- names and headers that must give one clear error -------------------------------------------

def test_non_utf8_class_folder_name_is_one_error_naming_it(tmp_path):
    root = os.fsencode(tmp_path / "imgs")
    os.makedirs(root + b"/caf\xe9")
    Image.fromarray(np.full((4, 4), 9, np.uint8)).save(root + b"/caf\xe9/a.png")
    with pytest.raises(SourceError, match=r"caf\\xe9: class folder name is not valid UTF-8"):
        load_source(f"folder:{os.fsdecode(root)}")


def test_idx_header_promising_terabytes_is_refused_from_the_header(tmp_path):
    header = bytes([0, 0, 8, 3]) + np.asarray([5_000_000, 4096, 4096], dtype=">u4").tobytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(header + b"\0" * 64)
    with pytest.raises(SourceError, match=r"header promises 5000000x4096x4096 = \d+ bytes, more than collect.max_bytes"):
        load_source(f"idx:{tmp_path}", max_rows=5_000_000)


def npz_declaring(path: Path, shape: tuple[int, ...], dtype: str = "<u1", body: bytes = b"") -> Path:
    """An .npz whose 'images' header declares ``shape`` but whose data is only ``body``: small on disk."""
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, {"descr": dtype, "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("images.npy", npy.getvalue() + body)
    return path


def test_npz_declaring_more_bytes_than_the_budget_is_refused_before_inflating(tmp_path):
    file = npz_declaring(tmp_path / "bomb.npz", (200_000, 64, 64))
    with pytest.raises(SourceError, match=r"declares shape \(200000, 64, 64\) of uint8 = 819200000 bytes, more than "
                                          r"collect.max_bytes=500000000; refused before inflating"):
        load_source(f"npz:{file}")


def test_npz_declaring_more_rows_than_clean_max_rows_is_refused(tmp_path):
    file = npz_declaring(tmp_path / "rows.npz", (5000, 2, 2))
    with pytest.raises(SourceError, match="declares 5000 rows, more than clean.max_rows=100"):
        load_source(f"npz:{file}", max_rows=100)


def test_npz_float_labels_outside_int64_are_refused(tmp_path):
    file = tmp_path / "l.npz"
    np.savez(file, images=np.full((2, 3, 3), 7, np.uint8), labels=np.array([1.0, 1e30]))
    with pytest.raises(SourceError, match="outside the int64 range"):
        load_source(f"npz:{file}")


# ---- the command line ---------------------------------------------------------------------------

def test_cli_mixed_folder_is_one_error_line_and_settings_give_counted_warnings(tmp_path):
    src = mixed_folder(tmp_path / "imgs")
    root = tmp_path / "project"
    root.mkdir()
    runner = CliRunner()

    refused = runner.invoke(main, ["--root", str(root), "collect", "--no-dvc", "--source", f"folder:{src}"])
    done = runner.invoke(main, ["--root", str(root), "-S", "collect.channels=3", "-S", "collect.size=8",
                                "collect", "--no-dvc", "--source", f"folder:{src}"])

    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert [line for line in refused.output.splitlines() if line.startswith("error:")][0].count("collect.size") == 1
    assert done.exit_code == 0, done.output
    assert "warning:" in done.output and "converted 2 of 4 images to colour" in done.output
    assert "collected 4 images of 8x8 colour" in done.output


# ---- the emoji source ---------------------------------------------------------------------------

def test_emoji_without_the_font_names_the_package_and_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLOOP_EMOJI_FONT", str(tmp_path / "missing.ttf"))
    with pytest.raises(SourceError, match=r"fonts-noto-color-emoji .*apt-get install -y fonts-noto-color-emoji.*"
                                          r"make emoji-font"):
        load_source("emoji")


def test_emoji_groups_leave_out_sequence_parts_and_name_common_ones():
    from genloop.io.emoji import group_of

    assert group_of(0x1F600) == "faces" and group_of(0x1F98A) == "animals" and group_of(0x1F680) == "transport-map"
    assert group_of(0x1F1E6) == "" and group_of(0x1F3FB) == "" and group_of(0x41) == ""


def test_emoji_source_renders_colour_glyphs_in_named_classes(monkeypatch):
    from genloop.io import emoji

    if not any(p.is_file() for p in emoji.FONT_PATHS):
        pytest.skip("fonts-noto-color-emoji is not installed (make emoji-font installs it)")
    monkeypatch.delenv("GENLOOP_EMOJI_FONT", raising=False)
    monkeypatch.setattr(emoji, "GROUPS", ((0x1F600, 0x1F605, "faces"), (0x1F980, 0x1F982, "animals")))

    batch = load_source("emoji", config=CollectConfig(size=16))

    assert batch.images.shape == (9, 16, 16, 3) and batch.images.dtype == np.uint8
    assert batch.classes == {"animals": 0, "faces": 1} and batch.labels.tolist() == [1] * 6 + [0] * 3
    assert batch.modes == ("RGBA",) * 9 and (batch.images[:, 0, 0] == 255).all()  # corners: white background
    spread = batch.images.astype(int)
    assert (np.abs(spread[..., 0] - spread[..., 2]) > 60).any()  # colour, not grey: faces are yellow
    assert any("resized 9 of 9 images to 16x16" in n for n in batch.notes)
