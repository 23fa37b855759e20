"""`genloop serve` with class-conditional generators: a `z` and an INT64 `label` input.

The graphs follow the export contract of conditional models: inputs `z` FP32 [-1, latent] and
`label` INT64 [-1], output `image`, ONNX metadata `genloop.labels` (the trained classes, JSON) and
`genloop.conditional` = "true". Built here from a tiny untrained torch module, served by the real
app under uvicorn, queried with httpx and tritonclient.http. Nothing is mocked.
"""
from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import torch

from genloop.stages.export import export_onnx
from genloop.io.imaging import grid_image
from genloop.core.models.gan import Generator
from genloop.serving import ServeSettings, ServingError
from genloop.serving.live import Interface, _check_same_interface
from genloop.serving.sessions import ModelHolder
from servers import LATENT, SIDE, TOL, ThreadServer, latents, run_schemathesis

COND, PLAIN = "genloop-cgan", "genloop-gan"
CLASSES = list(range(10))
EMBEDDED = 12  # the graph embeds 12 classes: 10 and 11 run in onnxruntime, but were never trained
MAX_BATCH_ROWS = 32


class TinyConditional(torch.nn.Module):
    """forward(z, label) -> images in [0, 1]: a label embedding beside z, one linear layer."""

    def __init__(self, latent_dim: int, side: int):
        super().__init__()
        self.side = side
        self.embed = torch.nn.Embedding(EMBEDDED, latent_dim)
        self.out = torch.nn.Linear(2 * latent_dim, side * side)

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(torch.cat([z, self.embed(label)], dim=1))).view(-1, 1, self.side, self.side)


def export_conditional(target: Path) -> Path:
    """The module exported as genloop.stages.export does: dynamo, one file, a dynamic batch on both inputs."""
    import logging
    import warnings

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    torch.manual_seed(0)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(TinyConditional(LATENT, SIDE).eval(), (torch.randn(8, LATENT), torch.arange(8)), str(target),
                          dynamo=True, external_data=False, input_names=["z", "label"], output_names=["image"],
                          dynamic_shapes={"z": {0: batch}, "label": {0: batch}}, verbose=False)
    return target


def with_props(source: Path, target: Path, props: dict[str, str] | None) -> Path:
    """A copy of the graph at ``source`` carrying the ONNX metadata ``props``."""
    import onnx

    graph = onnx.load(str(source))
    if props is not None:
        onnx.helper.set_model_props(graph, props)
    onnx.save(graph, str(target))
    return target


def contract_props(classes: list[int]) -> dict[str, str]:
    return {"genloop.labels": json.dumps(classes), "genloop.conditional": "true"}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("conditional-models")
    bare = export_conditional(folder / "bare.onnx")
    with_props(bare, folder / "cgan_generator.onnx", contract_props(CLASSES))
    torch.manual_seed(0)
    export_onnx(Generator(LATENT, 8, SIDE, SIDE).eval(), LATENT, folder / "gan_generator.onnx")
    return folder


@pytest.fixture(scope="module")
def reference(models_dir):
    """onnxruntime on the conditional graph outside the server: the expected images."""
    session = ort.InferenceSession(str(models_dir / "cgan_generator.onnx"), providers=["CPUExecutionProvider"])
    return lambda z, labels: session.run(["image"], {"z": np.asarray(z, np.float32),
                                                     "label": np.asarray(labels, np.int64)})[0]


def settings(models_dir: Path) -> ServeSettings:
    return ServeSettings(models={COND: models_dir / "cgan_generator.onnx", PLAIN: models_dir / "gan_generator.onnx"},
                         intra_op_threads=1, max_batch_rows=MAX_BATCH_ROWS, max_batch_delay_ms=25.0,
                         warmup_rows=[1, MAX_BATCH_ROWS])


@pytest.fixture(scope="module")
def server(models_dir):
    with ThreadServer(settings(models_dir), guarded=False) as live:
        yield live


def body(z: np.ndarray, labels, label_datatype: str = "INT64", label_shape=None, **extra) -> dict:
    labels = list(labels)
    return {"inputs": [
        {"name": "z", "shape": list(z.shape), "datatype": "FP32", "data": z.ravel().tolist()},
        {"name": "label", "shape": label_shape or [len(labels)], "datatype": label_datatype, "data": labels},
    ], **extra}


def images_of(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    out = response.json()["outputs"][0]
    return np.array(out["data"], np.float32).reshape(out["shape"])


# ---- metadata and inference -------------------------------------------------------------------------
@pytest.mark.integration
def test_metadata_lists_z_and_an_int64_label_and_the_trained_classes(server):
    meta = httpx.get(f"{server.url}/v2/models/{COND}").json()
    assert meta["inputs"] == [{"name": "z", "datatype": "FP32", "shape": [-1, LATENT]},
                              {"name": "label", "datatype": "INT64", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 1, SIDE, SIDE]}]
    assert meta["genloop_labels"] == CLASSES
    plain = httpx.get(f"{server.url}/v2/models/{PLAIN}").json()
    assert [i["name"] for i in plain["inputs"]] == ["z"] and "genloop_labels" not in plain


@pytest.mark.integration
def test_infer_with_labels_matches_onnxruntime_and_the_label_changes_the_image(server, reference):
    z = np.repeat(latents(1, seed=1), 3, axis=0)  # one latent, three classes
    labels = [2, 7, 9]
    got = images_of(httpx.post(f"{server.url}/v2/models/{COND}/infer", json=body(z, labels)))
    assert got.shape == (3, 1, SIDE, SIDE) and 0.0 <= got.min() and got.max() <= 1.0
    np.testing.assert_allclose(got, reference(z, labels), rtol=0, atol=TOL)
    assert np.abs(got[0] - got[1]).max() > 1e-3 and np.abs(got[1] - got[2]).max() > 1e-3


@pytest.mark.integration
def test_binary_int64_labels_on_the_wire(server, reference):
    z, labels = latents(3, seed=2), np.array([0, 5, 9], np.int64)
    head = json.dumps({"inputs": [
        {"name": "z", "shape": [3, LATENT], "datatype": "FP32", "parameters": {"binary_data_size": z.nbytes}},
        {"name": "label", "shape": [3], "datatype": "INT64", "parameters": {"binary_data_size": labels.nbytes}},
    ], "outputs": [{"name": "image", "parameters": {"binary_data": False}}]}).encode()
    response = httpx.post(f"{server.url}/v2/models/{COND}/infer", content=head + z.tobytes() + labels.astype("<i8").tobytes(),
                          headers={"Inference-Header-Content-Length": str(len(head))})
    np.testing.assert_allclose(images_of(response), reference(z, labels), rtol=0, atol=TOL)


@pytest.mark.integration
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_triton_client_infers_with_z_and_label(server, reference, binary):
    httpclient = pytest.importorskip("tritonclient.http")
    z, labels = latents(4, seed=3), np.array([3, 3, 8, 0], np.int64)
    inputs = [httpclient.InferInput("z", list(z.shape), "FP32"), httpclient.InferInput("label", [len(labels)], "INT64")]
    inputs[0].set_data_from_numpy(z, binary_data=binary)
    inputs[1].set_data_from_numpy(labels, binary_data=binary)
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    try:
        meta = client.get_model_metadata(COND)
        assert {(i["name"], i["datatype"]) for i in meta["inputs"]} == {("z", "FP32"), ("label", "INT64")}
        result = client.infer(COND, inputs, request_id="labelled")
        got = result.as_numpy("image")
        assert result.get_response()["id"] == "labelled" and got.shape == (4, 1, SIDE, SIDE)
        np.testing.assert_allclose(got, reference(z, labels), rtol=0, atol=TOL)

        wrong = httpclient.InferInput("label", [len(labels)], "INT32")  # what np.int32 labels give
        wrong.set_data_from_numpy(labels.astype(np.int32), binary_data=binary)
        from tritonclient.utils import InferenceServerException

        with pytest.raises(InferenceServerException) as info:
            client.infer(COND, [inputs[0], wrong])
        assert info.value.status() == "400" and "expected 'INT64'" in info.value.message()
    finally:
        client.close()


# ---- bad labels: a 400 whose message says what to change ---------------------------------------------
z2 = latents(2, seed=4)
BAD_LABELS = {
    # name: (request body, fragments of the error message)
    "out-of-set": (body(z2, [3, 42]), ["[42]", "trained on [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"]),
    "embedded-but-untrained": (body(z2, [10, 11]), ["[10, 11]", "trained on"]),
    "negative": (body(z2, [-1, 0]), ["[-1]", "trained on"]),
    "fp32-datatype": (body(z2, [1.0, 2.0], label_datatype="FP32"), ["datatype 'FP32'", "expected 'INT64'"]),
    "int32-datatype": (body(z2, [1, 2], label_datatype="INT32"), ["expected 'INT64'"]),
    "floats-as-int64": (body(z2, [1.5, 2]), ["only integers for INT64", "1.5"]),
    "booleans-as-int64": (body(z2, [True, 2]), ["only integers for INT64"]),
    "beyond-int64": (body(z2, [2**63, 2]), ["outside the INT64 range"]),
    "null-label": (body(z2, [None, 3]), ["input 'label'", "only integers for INT64", "null"]),
    "null-label-first-of-nested": (body(z2, [[None], [3]], label_shape=[2]), ["input 'label'", "null"]),
    "null-latent": ({"inputs": [{**body(z2, [1, 2])["inputs"][0], "data": [None] + z2.ravel().tolist()[1:]},
                                body(z2, [1, 2])["inputs"][1]]}, ["input 'z'", "only numbers for FP32", "null"]),
    "more-labels-than-latents": (body(z2, [1, 2, 3]), ["batch size 3", "input 'z''s 2"]),
    "fewer-labels-than-latents": (body(latents(3, seed=4), [1]), ["batch size 1", "input 'z''s 3"]),
    "label-with-two-dims": (body(z2, [1, 2], label_shape=[2, 1]), ["does not match the model's [-1]"]),
    "no-label": ({"inputs": body(z2, [1, 2])["inputs"][:1]}, ["missing input(s) ['label']"]),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", list(BAD_LABELS))
def test_bad_labels_are_a_400_naming_the_problem(server, case):
    request, fragments = BAD_LABELS[case]
    response = httpx.post(f"{server.url}/v2/models/{COND}/infer", json=request)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    for fragment in fragments:
        assert fragment in error, error


@pytest.mark.integration
def test_label_sent_to_an_unconditional_model_is_refused(server):
    response = httpx.post(f"{server.url}/v2/models/{PLAIN}/infer", json=body(z2, [1, 2]))
    assert response.status_code == 400 and "no input 'label'" in response.json()["error"]


# ---- dynamic batching keeps each request's labels with its latents -------------------------------------
@pytest.mark.integration
def test_concurrent_labelled_requests_are_batched_row_aligned(server, reference):
    batcher = server.app.state.live.slots[COND].batcher
    batches_before, requests_before = batcher.stats.batches, batcher.stats.requests
    rng = np.random.default_rng(5)
    requests = [(latents(1 + i % 3, seed=300 + i), rng.integers(0, 10, 1 + i % 3).tolist()) for i in range(12)]

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            return await asyncio.gather(*(client.post(f"/v2/models/{COND}/infer", json=body(z, labels, id=str(i)))
                                          for i, (z, labels) in enumerate(requests)))

    for i, ((z, labels), response) in enumerate(zip(requests, asyncio.run(fire()))):
        assert response.json()["id"] == str(i)
        np.testing.assert_allclose(images_of(response), reference(z, labels), rtol=0, atol=TOL)
    batches = batcher.stats.batches - batches_before
    assert batcher.stats.requests - requests_before == 12
    assert batches < 12, f"12 concurrent labelled requests ran as {batches} separate batches"


# ---- the PNG endpoint ----------------------------------------------------------------------------------
def png_size(content: bytes) -> tuple[int, int]:
    from PIL import Image

    image = Image.open(io.BytesIO(content))
    assert image.format == "PNG"
    return image.size


@pytest.mark.integration
def test_generate_with_a_label_draws_that_class_from_the_seeded_latents(server, reference):
    url = f"{server.url}/v2/models/{COND}/generate"
    seven = httpx.get(url, params={"n": 6, "seed": 3, "label": 7})
    assert seven.status_code == 200 and seven.headers["content-type"] == "image/png"
    z = np.random.default_rng(3).standard_normal((6, LATENT)).astype(np.float32)
    assert seven.content == grid_image(reference(z, [7] * 6))
    three = httpx.get(url, params={"n": 6, "seed": 3, "label": 3})
    assert three.status_code == 200 and three.content != seven.content
    assert httpx.get(url, params={"n": 6, "seed": 3, "label": 7}).content == seven.content


@pytest.mark.integration
def test_generate_without_a_label_draws_one_row_per_trained_class(server, reference):
    response = httpx.get(f"{server.url}/v2/models/{COND}/generate", params={"n": 16, "seed": 9})
    assert response.status_code == 200, response.text
    per_class = -(-16 // len(CLASSES))  # 16 samples over 10 classes: 2 columns, 10 rows
    z = np.random.default_rng(9).standard_normal((per_class, LATENT)).astype(np.float32)
    expected = reference(np.tile(z, (len(CLASSES), 1)), np.repeat(CLASSES, per_class))
    assert response.content == grid_image(expected, per_class)
    width, height = png_size(response.content)
    assert height > 4 * width  # 10 rows of 2


@pytest.mark.integration
@pytest.mark.parametrize("model,label,status,fragments", [
    (COND, 42, 400, ["label 42", "trained on [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"]),
    (COND, 10, 400, ["label 10", "trained on"]),
    (PLAIN, 7, 400, ["unconditional", "leave 'label' out"]),
    (COND, "seven", 400, ["label"]),
])
def test_generate_refuses_labels_it_cannot_draw(server, model, label, status, fragments):
    response = httpx.get(f"{server.url}/v2/models/{model}/generate", params={"label": label})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    for fragment in fragments:
        assert fragment in error, error


@pytest.mark.integration
def test_generate_on_an_unconditional_model_is_unchanged(server):
    url = f"{server.url}/v2/models/{PLAIN}/generate"
    first = httpx.get(url, params={"n": 4, "seed": 1})
    assert first.status_code == 200 and httpx.get(url, params={"n": 4, "seed": 1}).content == first.content
    session = ort.InferenceSession(str(server.app.state.holder.get(PLAIN).path), providers=["CPUExecutionProvider"])
    z = np.random.default_rng(1).standard_normal((4, LATENT)).astype(np.float32)
    expected = grid_image(session.run(["image"], {"z": z})[0])
    assert first.content == expected


# ---- loading: the label input and its metadata come together --------------------------------------------
@pytest.mark.parametrize("props,fragment", [
    (None, "no 'genloop.labels' metadata"),
    ({"genloop.labels": "0-9", "genloop.conditional": "true"}, "not a JSON list of distinct integers"),
    ({"genloop.labels": "[]", "genloop.conditional": "true"}, "not a JSON list of distinct integers"),
    ({"genloop.labels": "[1, 1]", "genloop.conditional": "true"}, "not a JSON list of distinct integers"),
    ({"genloop.labels": f"[0, {2**63}]", "genloop.conditional": "true"}, f"{2**63}, outside the INT64 range"),
    ({"genloop.labels": f"[{-2**63 - 1}, 0]", "genloop.conditional": "true"}, "outside the INT64 range"),
])
def test_a_label_input_without_valid_trained_classes_is_not_served(models_dir, tmp_path, props, fragment):
    path = with_props(models_dir / "bare.onnx", tmp_path / "cgan.onnx", props)
    holder = ModelHolder(ServeSettings(models={COND: path}, intra_op_threads=1))
    with pytest.raises(ServingError, match=fragment) as info:
        holder.load()
    assert str(path) in str(info.value)


@pytest.mark.integration
def test_class_names_in_the_graph_reach_the_metadata_and_the_index_page(models_dir, tmp_path):
    names = {str(c): f"group-{c}" for c in CLASSES}
    names["2"] = "faces & <smileys>"
    path = with_props(models_dir / "bare.onnx", tmp_path / "named.onnx",
                      {**contract_props(CLASSES), "genloop.class_names": json.dumps(names)})
    broken = with_props(models_dir / "bare.onnx", tmp_path / "broken.onnx",
                        {**contract_props(CLASSES), "genloop.class_names": "[not json"})
    serve = ServeSettings(models={COND: path, "broken": broken}, intra_op_threads=1, warmup_rows=[1])
    with ThreadServer(serve, guarded=False) as live:
        meta = httpx.get(f"{live.url}/v2/models/{COND}").json()
        page = httpx.get(f"{live.url}/").text
        unnamed = httpx.get(f"{live.url}/v2/models/broken").json()
    assert meta["genloop_class_names"] == names and meta["genloop_labels"] == CLASSES
    assert "2 faces &amp; &lt;smileys&gt;" in page and "9 group-9" in page  # escaped, label beside its name
    assert unnamed["genloop_labels"] == CLASSES and "genloop_class_names" not in unnamed  # served, unnamed


def test_conditional_metadata_on_a_graph_without_label_is_not_served(models_dir, tmp_path):
    path = with_props(models_dir / "gan_generator.onnx", tmp_path / "plain.onnx", contract_props(CLASSES))
    with pytest.raises(ServingError, match="no 'label' input"):
        ModelHolder(ServeSettings(models={PLAIN: path}, intra_op_threads=1)).load()


def test_a_new_version_may_add_classes_but_not_drop_served_ones(models_dir, tmp_path):
    files = {name: with_props(models_dir / "bare.onnx", tmp_path / f"{name}.onnx", contract_props(classes))
             for name, classes in (("ten", CLASSES), ("five", CLASSES[:5]), ("eleven", CLASSES + [10]))}
    holder = ModelHolder(ServeSettings(models={COND: files["ten"]}, intra_op_threads=1))
    ten, five, eleven = (holder.build(COND, files[name], version) for name, version in
                         (("ten", "1"), ("five", "2"), ("eleven", "3")))
    assert ten.labels == tuple(CLASSES) and ten.conditional
    _check_same_interface(Interface.of(ten), eleven)
    with pytest.raises(ServingError, match=r"label\(s\) \[5, 6, 7, 8, 9\]"):
        _check_same_interface(Interface.of(ten), five)


# ---- schemathesis on a server with a conditional model: never a 5xx ----------------------------------------
@pytest.mark.integration
def test_schemathesis_finds_no_server_error_with_a_conditional_model(server, tmp_path):
    result = run_schemathesis(server.url, tmp_path, 2, "--include-path-regex", "/(infer|generate)$")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
