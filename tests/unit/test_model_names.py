"""Model and file names are stated once (params.export and genloop.paths) and every user follows them."""
from pathlib import Path

from genloop.config import ExportConfig
from genloop.paths import ENCODER_FILE, ONNX_FILES, ProjectPaths
from genloop.config import sampling_seed
from genloop.serving.settings import default_model_paths, served_model_paths


def test_renamed_registry_names_are_what_serve_serves_by_default(tmp_path):
    export = ExportConfig(vae_model_name="digits-decoder", gan_model_name="digits-generator")
    served = served_model_paths(tmp_path / "models", export)  # a folder of its own: no encoder in it
    assert served == {"digits-decoder": tmp_path / "models" / ONNX_FILES["vae"],
                      "digits-generator": tmp_path / "models" / ONNX_FILES["gan"]}


def test_serve_serves_the_vae_encoder_beside_its_decoder_when_export_wrote_one(tmp_path):
    export = ExportConfig(vae_model_name="digits-decoder")
    (tmp_path / ENCODER_FILE).write_bytes(b"onnx")
    served = served_model_paths(tmp_path, export)
    assert served["digits-decoder-encoder"] == tmp_path / ENCODER_FILE
    assert served["digits-decoder"] == tmp_path / ONNX_FILES["vae"]


def test_the_settings_default_never_depends_on_the_working_directorys_models(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / ENCODER_FILE).write_bytes(b"onnx")
    monkeypatch.chdir(tmp_path)
    assert default_model_paths() == {name: Path("models") / file
                                     for name, file in ExportConfig().served_files().items()}


def test_export_writes_each_kind_where_project_paths_says(tmp_path):
    paths = ProjectPaths.at(tmp_path)
    assert {kind: paths.onnx(kind).name for kind in ("vae", "gan")} == ONNX_FILES
    assert all(paths.onnx(kind).parent == paths.models for kind in ONNX_FILES)


def test_scoring_never_replays_the_training_seed():
    assert all(sampling_seed(seed) != seed for seed in (0, 1, 42, 2**31))


def test_switch_off_keeps_what_the_user_set_and_quiets_the_rest():
    from genloop.io.telemetry import QUIET_ENV, quiet_env

    env = quiet_env({"DO_NOT_TRACK": "false", "PATH": "/bin"})
    assert env["DO_NOT_TRACK"] == "false" and env["PATH"] == "/bin"
    assert {k: env[k] for k in QUIET_ENV if k != "DO_NOT_TRACK"} == {k: v for k, v in QUIET_ENV.items() if k != "DO_NOT_TRACK"}
