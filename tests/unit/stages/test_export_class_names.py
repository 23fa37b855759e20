"""Export writes the data's class names into a conditional graph's metadata, so a server says "faces"."""
from __future__ import annotations

import json

from genloop.paths import ProjectPaths
from genloop.stages.export import CLASS_NAMES_KEY, class_name_metadata


def _manifest(root, rows: list[tuple[int, str]]) -> ProjectPaths:
    paths = ProjectPaths.at(root)
    paths.manifest.parent.mkdir(parents=True, exist_ok=True)
    paths.manifest.write_text("label,class_name\n" + "".join(f"{label},{name}\n" for label, name in rows))
    return paths


def test_named_classes_are_written_for_the_trained_classes_only(tmp_path):
    paths = _manifest(tmp_path, [(0, "animals"), (2, "faces"), (2, "faces"), (5, "signs")])
    meta = class_name_metadata([0, 2], paths)
    assert json.loads(meta[CLASS_NAMES_KEY]) == {"0": "animals", "2": "faces"}


def test_a_class_the_manifest_does_not_name_keeps_its_value_beside_named_ones(tmp_path):
    paths = _manifest(tmp_path, [(0, "animals"), (1, "")])
    assert json.loads(class_name_metadata([0, 1, 3], paths)[CLASS_NAMES_KEY]) == {"0": "animals", "1": "1", "3": "3"}


def test_digits_named_by_their_values_and_a_project_without_manifest_add_nothing(tmp_path):
    assert class_name_metadata(list(range(10)), _manifest(tmp_path / "d", [(i, "") for i in range(10)])) == {}
    assert class_name_metadata([0, 1], ProjectPaths.at(tmp_path / "none")) == {}
