"""Unit tests for genloop.stages.collect: the digits source into data/, reproducibly, optionally under DVC."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from genloop.io import dvcio
from genloop.io.datasets import content_hash, read_dataset
from genloop.stages.collect import MANIFEST_COLUMNS, collect
from genloop.config import CollectConfig
from genloop.paths import ProjectPaths
from genloop.errors import SourceError


def test_collect_digits_writes_images_and_manifest(tmp_path):
    paths = ProjectPaths.at(tmp_path)
    result = collect(CollectConfig(source="digits"), paths, version_with_dvc=False)

    images = np.load(paths.images, allow_pickle=False)
    assert images.shape == (1797, 8, 8)
    assert images.dtype == np.uint8
    assert images.max() == 255 and images.min() == 0  # 0..16 rescaled to the full range

    manifest = pd.read_csv(paths.manifest)
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert len(manifest) == 1797
    assert manifest["id"].tolist() == list(range(1797))
    assert set(manifest["label"]) == set(range(10))
    assert (manifest["source"] == "digits").all()
    assert (manifest["height"] == 8).all() and (manifest["width"] == 8).all()
    # the manifest describes the stored pixels
    assert manifest["content_hash"].iloc[5] == content_hash(images[5])
    assert manifest["pixel_max"].iloc[5] == images[5].max()

    assert result.rows == 1797
    assert result.image_shape == (8, 8)
    assert result.data_dir == paths.data
    assert result.dvc_hash == "untracked"

    loaded_images, loaded_manifest = read_dataset(paths)
    np.testing.assert_array_equal(loaded_images, images)
    assert len(loaded_manifest) == len(images)


def test_collect_twice_is_byte_identical(tmp_path):
    paths = ProjectPaths.at(tmp_path)
    collect(CollectConfig(source="digits"), paths, version_with_dvc=False)
    first = (paths.images.read_bytes(), paths.manifest.read_bytes())
    collect(CollectConfig(source="digits"), paths, version_with_dvc=False)
    assert (paths.images.read_bytes(), paths.manifest.read_bytes()) == first
    assert sorted(p.name for p in paths.data.iterdir()) == ["images.npy", "manifest.csv"]


def test_unknown_source_raises_and_keeps_existing_data(tmp_path):
    paths = ProjectPaths.at(tmp_path)
    collect(CollectConfig(source="digits"), paths, version_with_dvc=False)
    before = (paths.images.read_bytes(), paths.manifest.read_bytes())

    with pytest.raises(SourceError, match="no-such-source"):
        collect(CollectConfig(source="no-such-source"), paths, version_with_dvc=False)
    assert (paths.images.read_bytes(), paths.manifest.read_bytes()) == before


def test_read_dataset_without_data_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="genloop collect"):
        read_dataset(ProjectPaths.at(tmp_path))


def test_content_hash_equal_for_equal_images_and_differs_otherwise():
    a = np.arange(64, dtype=np.uint8).reshape(8, 8)
    same = a.copy()
    one_pixel_off = a.copy()
    one_pixel_off[3, 3] += 1
    assert content_hash(a) == content_hash(same)
    assert content_hash(a) != content_hash(one_pixel_off)
    # same bytes in a different shape are a different image
    assert content_hash(a) != content_hash(a.reshape(4, 16))
    assert len(content_hash(a)) == 64


@pytest.mark.integration  # DVC subprocesses
@pytest.mark.skipif(
    shutil.which(dvcio._dvc_exe()) is None or shutil.which("git") is None, reason="needs dvc and git"
)
def test_collect_with_real_dvc_is_stable(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True, env=dvcio.dvc_env())
    dvcio.run_dvc(["init", "-q"], cwd=tmp_path)
    paths = ProjectPaths.at(tmp_path)

    first = collect(CollectConfig(source="digits"), paths, version_with_dvc=True)
    assert paths.data_dvc.exists()
    hash_one = dvcio.read_dvc_hash(paths.data_dvc)
    assert hash_one == first.dvc_hash
    assert hash_one.endswith(".dir")  # a folder is tracked as a directory hash

    second = collect(CollectConfig(source="digits"), paths, version_with_dvc=True)
    hash_two = dvcio.read_dvc_hash(paths.data_dvc)
    assert hash_two == hash_one == second.dvc_hash
