"""genloop serve's pages for people: the landing page, offline API docs and the explorer's data.

Real uvicorn servers on tiny exported models (a VAE's decoder and encoder, a GAN); the browser side of
/explore is tests/integration/test_explorer_browser.py.
"""
from __future__ import annotations

import re
from pathlib import Path

import httpx
import numpy as np
import pytest

from explorer_models import ENCODER, REAL_IMAGES, make_models, write_atlas, write_images
from genloop.serving import ServeSettings
from servers import GAN, LATENT, SIDE, TOKEN, VAE, ThreadServer

pytestmark = pytest.mark.integration
EXTERNAL = re.compile(r"(?:src|href)\s*=\s*[\"']?\s*(?:https?:)?//", re.I)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    return make_models(tmp_path_factory.mktemp("explorer-models"))


def settings(models: dict[str, Path], **overrides) -> ServeSettings:
    return ServeSettings(models=models, intra_op_threads=1, warmup_rows=[1], **overrides)


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    folder = tmp_path_factory.mktemp("explorer-reports")
    with ThreadServer(settings(models, explain=write_atlas(folder),
                               explore_images=write_images(folder / "test.npz"))) as live:
        yield live


def test_landing_page_lists_the_served_models_with_versions_and_links(server):
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    rows = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td>", page.text)
    assert {(name, kind, version, state) for name, kind, version, _, state in rows} == {
        (VAE, "vae", "1", "READY"), (ENCODER, "encoder", "1", "READY"), (GAN, "gan", "1", "READY")}
    for link in ("/explore", "/docs", "/metrics"):
        assert f'href="{link}"' in page.text
    assert not EXTERNAL.search(page.text), "the landing page loads something from another host"
    assert httpx.get(server.url + "/static/pages.css").status_code == 200


class PinnedChampions:
    """A registry side (genloop.serving.live.ModelSource) whose champion stays at one version."""

    registry = True

    def __init__(self, models: dict[str, Path], version: str):
        self.models, self.version = models, version

    def latest(self, name: str) -> str:
        return self.version

    def fetch(self, name: str, version: str) -> Path:
        return self.models[name]

    def close(self) -> None:
        pass


def test_landing_page_names_the_champion_alias_of_a_registry_server(models):
    served = {VAE: models[VAE]}
    with ThreadServer(settings(served, versions={VAE: "7"}, poll_seconds=0), source=PinnedChampions(served, "7")) as live:
        page = httpx.get(live.url + "/").text
    assert f"models:/{VAE}@champion = v7, checked on load requests" in page


def test_docs_load_every_asset_from_this_server(server):
    page = httpx.get(server.url + "/docs")
    assert page.status_code == 200
    assert not re.search(r"https?://", page.text), "the docs page names another host"
    assets = re.findall(r"(?:src|href)=\"([^\"]+)\"", page.text) + re.findall(r"url: '([^']+)'", page.text)
    assert {"/static/docs/swagger-ui-bundle.js", "/static/docs/swagger-ui.css", "/openapi.json"} <= set(assets)
    for asset in assets:
        answer = httpx.get(server.url + asset)
        assert answer.status_code == 200 and answer.content, asset
    assert httpx.get(server.url + "/static/docs/index.html").status_code == 404  # only the named files


def test_docs_and_landing_page_follow_the_token_unless_public(models):
    with ThreadServer(settings(models, token=TOKEN)) as live:
        for path in ("/", "/docs", "/explore/config.json"):
            assert httpx.get(live.url + path).status_code == 401, path
            assert httpx.get(live.url + path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        # the static page and its script hold nothing served: the page asks for the token itself
        assert httpx.get(live.url + "/explore").status_code == 200


def test_explorer_sliders_are_the_atlas_active_dimensions_and_gan_directions(server):
    config = httpx.get(server.url + "/explore/config.json").json()
    by_name = {m["name"]: m for m in config["models"]}
    assert set(by_name) == {VAE, GAN}, "the encoder is no model of its own on the page"
    vae, gan = by_name[VAE], by_name[GAN]
    assert [a["vector"].index(1.0) for a in vae["axes"]] == [2, 0]  # most KL first, inactive ones left out
    assert "active dimensions from the latent atlas" in vae["axes_note"]
    assert [a["vector"] for a in gan["axes"]] == [[0.6, 0.8, 0.0, 0.0], [0.0, 0.6, 0.8, 0.0]]
    assert gan["axes"][0]["label"] == "d0 (slant)" and gan["axes"][0]["sd"] == 1.5
    assert vae["encoder"] == {"name": ENCODER, "input": "images", "shape": [1, SIDE, SIDE]}
    assert gan["encoder"] is None and gan["images"] == []
    images = np.asarray(vae["images"])
    assert images.shape == (REAL_IMAGES, SIDE * SIDE) and 0 <= images.min() and images.max() <= 1


def test_explorer_without_atlas_moves_the_first_dimensions_and_says_why(models, tmp_path):
    write_atlas(tmp_path, gan_vectors=False)
    with ThreadServer(settings(models, explain=tmp_path / "explain.json")) as live:
        gan = next(m for m in httpx.get(live.url + "/explore/config.json").json()["models"] if m["name"] == GAN)
        assert [a["label"] for a in gan["axes"]] == [f"z{i}" for i in range(LATENT)]
        assert "carry no latent vector" in gan["axes_note"] and "first 4 latent dimensions" in gan["axes_note"]
    with ThreadServer(settings(models, explain=tmp_path / "absent.json", explore_images=tmp_path / "none.npz")) as live:
        config = httpx.get(live.url + "/explore/config.json").json()
        assert "no latent atlas at" in config["atlas_note"]
        vae = next(m for m in config["models"] if m["name"] == VAE)
        assert vae["images"] == [] and "no real images at" in vae["images_note"]


def test_explorer_config_says_a_model_is_not_loaded(models):
    with ThreadServer(settings(models)) as live:
        assert httpx.post(f"{live.url}/v2/repository/models/{GAN}/unload").status_code == 200
        gan = next(m for m in httpx.get(live.url + "/explore/config.json").json()["models"] if m["name"] == GAN)
        assert gan == {"name": GAN, "loaded": False, "reason": "unloaded"}
        assert "UNAVAILABLE (unloaded)" in httpx.get(live.url + "/").text


def test_encoder_gets_an_image_of_the_wrong_size_as_a_400_naming_the_shape(server):
    body = {"inputs": [{"name": "images", "shape": [1, 1, SIDE + 1, SIDE], "datatype": "FP32",
                        "data": [0.5] * ((SIDE + 1) * SIDE)}]}
    answer = httpx.post(f"{server.url}/v2/models/{ENCODER}/infer", json=body)
    assert answer.status_code == 400 and f"[-1, 1, {SIDE}, {SIDE}]" in answer.json()["error"], answer.text
