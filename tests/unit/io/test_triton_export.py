"""The Triton model repository `genloop export` writes (genloop.io.triton).

No Triton server runs on these machines (PyPI's `tritonserver` here is a placeholder without a
binary), so each config.pbtxt is parsed with protobuf against Triton's own ModelConfig schema, the
compiled model_config_pb2 that ships inside tritonclient, and compared with the ONNX graph.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from genloop.config import TritonConfig
from genloop.stages.export import export_onnx
from genloop.core.models.gan import Generator
from genloop.core.models.vae import Decoder
from genloop.io.triton import TritonExportError, write_model, write_repository

LATENT, CHANNELS, SIDE = 4, 8, 8


def triton_model_config():
    """Triton's inference.ModelConfig message class, from tritonclient's compiled model_config.proto."""
    tritonclient = pytest.importorskip("tritonclient")
    text_format = pytest.importorskip("google.protobuf.text_format")
    file = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    if not file.is_file():
        pytest.skip("this tritonclient ships no model_config_pb2")
    # Loaded by path: importing tritonclient.grpc would need grpcio, which the schema does not.
    spec = importlib.util.spec_from_file_location("genloop_test_triton_model_config_pb2", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, text_format


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("triton-onnx")
    torch.manual_seed(0)
    export_onnx(Decoder(LATENT, CHANNELS, SIDE, SIDE).eval(), LATENT, folder / "vae_decoder.onnx")
    export_onnx(Generator(LATENT, CHANNELS, SIDE, SIDE).eval(), LATENT, folder / "gan_generator.onnx")
    return {"genloop-vae": folder / "vae_decoder.onnx", "genloop-gan": folder / "gan_generator.onnx"}


def test_repository_config_parses_as_triton_model_config_and_matches_the_graph(onnx_files, tmp_path):
    pb2, text_format = triton_model_config()
    config = TritonConfig(max_batch_size=64, max_queue_delay_microseconds=2500)
    written = write_repository(tmp_path / "triton", onnx_files, config,
                               {"genloop-vae": {"genloop_registry_version": "3"}})
    assert set(written) == set(onnx_files)
    for name, source in onnx_files.items():
        folder = tmp_path / "triton" / name
        assert (folder / "1" / "model.onnx").read_bytes() == source.read_bytes()
        parsed = text_format.Parse((folder / "config.pbtxt").read_text(), pb2.ModelConfig())
        assert parsed.name == name and parsed.platform == "onnxruntime_onnx"
        assert parsed.max_batch_size == 64
        assert parsed.dynamic_batching.max_queue_delay_microseconds == 2500
        assert [(g.kind, g.count) for g in parsed.instance_group] == [(pb2.ModelInstanceGroup.KIND_AUTO, 1)]

        # the same names, types and shapes (batch dimension removed) as the graph onnxruntime runs
        session = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        for declared, actual in [(parsed.input, session.get_inputs()), (parsed.output, session.get_outputs())]:
            assert [t.name for t in declared] == [a.name for a in actual]
            assert all(t.data_type == pb2.TYPE_FP32 and a.type == "tensor(float)" for t, a in zip(declared, actual))
            assert all(isinstance(a.shape[0], str) for a in actual)  # the graph's batch dimension is dynamic
            assert [list(t.dims) for t in declared] == [list(a.shape[1:]) for a in actual]
        assert [list(t.dims) for t in parsed.input] == [[LATENT]]
        assert [list(t.dims) for t in parsed.output] == [[1, SIDE, SIDE]]
        # and a batch as large as max_batch_size runs through that graph
        out = session.run(None, {"z": np.zeros((64, LATENT), np.float32)})[0]
        assert out.shape == (64, 1, SIDE, SIDE)
        params = {k: v.string_value for k, v in parsed.parameters.items()}
        assert params == ({"genloop_registry_version": "3"} if name == "genloop-vae" else {})


def test_instance_kind_and_count_come_from_params(onnx_files, tmp_path):
    pb2, text_format = triton_model_config()
    write_model(tmp_path, "g", onnx_files["genloop-gan"], TritonConfig(instance_kind="KIND_GPU", instance_count=2))
    parsed = text_format.Parse((tmp_path / "g" / "config.pbtxt").read_text(), pb2.ModelConfig())
    assert [(g.kind, g.count) for g in parsed.instance_group] == [(pb2.ModelInstanceGroup.KIND_GPU, 2)]


def test_rewriting_a_model_replaces_its_folder_and_leaves_others(onnx_files, tmp_path):
    repo = tmp_path / "triton"
    write_repository(repo, onnx_files, TritonConfig())
    (repo / "genloop-gan" / "2").mkdir()  # a stale version folder from elsewhere
    write_model(repo, "genloop-gan", onnx_files["genloop-vae"], TritonConfig())
    assert not (repo / "genloop-gan" / "2").exists()
    assert (repo / "genloop-gan" / "1" / "model.onnx").read_bytes() == onnx_files["genloop-vae"].read_bytes()
    assert (repo / "genloop-vae" / "1" / "model.onnx").read_bytes() == onnx_files["genloop-vae"].read_bytes()
    assert not list(repo.glob(".*"))


def test_a_graph_without_a_dynamic_batch_dimension_is_refused(tmp_path):
    fixed = tmp_path / "fixed.onnx"
    with torch.no_grad():
        torch.onnx.export(torch.nn.Linear(3, 2), (torch.zeros(5, 3),), str(fixed), dynamo=False,
                          input_names=["z"], output_names=["image"])
    onnx.checker.check_model(str(fixed))
    with pytest.raises(TritonExportError, match="dynamic batch dimension"):
        write_model(tmp_path / "triton", "fixed", fixed, TritonConfig())
    assert not (tmp_path / "triton" / "fixed").exists()


class _LabelledGenerator(torch.nn.Module):
    """A stand-in conditional generator: (z, label) -> image, label an INT64 per row."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(10, LATENT)
        self.out = torch.nn.Linear(LATENT, SIDE * SIDE)

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(z * self.embed(label))).view(-1, 1, SIDE, SIDE)


def test_a_per_row_label_input_is_declared_as_one_value_reshaped_to_a_scalar(tmp_path):
    pb2, text_format = triton_model_config()
    path = tmp_path / "cgan.onnx"
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(_LabelledGenerator().eval(), (torch.randn(4, LATENT), torch.zeros(4, dtype=torch.int64)),
                      str(path), dynamo=True, external_data=False, input_names=["z", "label"],
                      output_names=["image"], dynamic_shapes={"z": {0: batch}, "label": {0: batch}})
    write_model(tmp_path / "triton", "cgan", path, TritonConfig())
    parsed = text_format.Parse((tmp_path / "triton" / "cgan" / "config.pbtxt").read_text(), pb2.ModelConfig())
    by_name = {t.name: t for t in parsed.input}
    assert list(by_name["z"].dims) == [LATENT] and not by_name["z"].HasField("reshape")
    assert by_name["label"].data_type == pb2.TYPE_INT64
    assert list(by_name["label"].dims) == [1] and list(by_name["label"].reshape.shape) == []
    assert [list(t.dims) for t in parsed.output] == [[1, SIDE, SIDE]]
