"""The human side of ``genloop serve``: the landing page ``/``, the API docs ``/docs`` with their assets
served locally (Swagger UI from the fastapi-offline package, so the page works offline), and the live
explorer ``/explore`` (a static page and script under ``/static``; its data come from ``/explore/config.json``
and the server's own ``/v2/models/NAME/infer``). Nothing is loaded from another host.
"""
from __future__ import annotations

import html
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from genloop.serving.sessions import class_label

STATIC = Path(__file__).parent / "static"
DOCS_ASSETS = {"swagger-ui-bundle.js": "application/javascript", "swagger-ui.css": "text/css",
               "favicon.png": "image/png"}
PAGE_ASSETS = {"explore.html": "text/html", "explore.js": "application/javascript", "pages.css": "text/css"}


def swagger_folder() -> Path:
    """Swagger UI's files as the fastapi-offline package ships them (swagger-ui is Apache-2.0)."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def add_page_routes(app: FastAPI, serving, guarded: list, protected: list) -> None:
    """``/``, ``/docs``, ``/explore`` and their assets; ``guarded`` (the token unless --public-metrics)
    protects the pages that show what is served, ``protected`` the explorer's data like /v2."""
    from genloop.serving.explorer import explorer_config, read_atlas

    @app.get("/", include_in_schema=False, dependencies=guarded)
    async def landing():
        return HTMLResponse(landing_html(serving, app.version), headers={"Cache-Control": "no-store"})

    @app.get("/docs", include_in_schema=False, dependencies=guarded)
    async def swagger_ui():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="genloop serve: API",
                                   swagger_js_url="/static/docs/swagger-ui-bundle.js",
                                   swagger_css_url="/static/docs/swagger-ui.css",
                                   swagger_favicon_url="/static/docs/favicon.png")

    @app.get("/static/docs/{asset}", include_in_schema=False)
    async def docs_asset(asset: str):
        if asset not in DOCS_ASSETS:
            return JSONResponse({"error": f"no docs asset {asset!r}"}, status_code=404)
        return FileResponse(swagger_folder() / asset, media_type=DOCS_ASSETS[asset])

    @app.get("/static/{asset}", include_in_schema=False)
    async def page_asset(asset: str):
        if asset not in PAGE_ASSETS:
            return JSONResponse({"error": f"no asset {asset!r}"}, status_code=404)
        return FileResponse(STATIC / asset, media_type=PAGE_ASSETS[asset], headers={"Cache-Control": "no-cache"})

    @app.get("/explore", include_in_schema=False)
    async def explore():
        return FileResponse(STATIC / "explore.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    @app.get("/explore/config.json", include_in_schema=False, dependencies=protected)
    async def explore_config():
        settings = serving.settings
        config = explorer_config(serving.holder.models, serving.live.index(), read_atlas(settings.explain),
                                 settings.explore_images)
        return JSONResponse(config, headers={"Cache-Control": "no-store"})


def _source_line(serving, name: str, version: str) -> str:
    """Where a served version comes from: the registry's champion alias, or a file."""
    if serving.source.registry:
        poll = serving.settings.poll_seconds
        follow = f", checked every {poll:g} s" if poll > 0 else ", checked on load requests"
        return f"models:/{name}@champion = v{version}{follow}" if version else f"models:/{name}@champion"
    return f"file {serving.settings.models.get(name, '?')}"


def _model_rows(serving) -> str:
    from genloop.serving.explorer import model_kind

    rows = []
    for entry in serving.live.index():
        name, version, state = entry["name"], entry["version"], entry["state"]
        model = serving.holder.models.get(name)
        kind = model_kind(model) if model is not None else "-"
        labels = (", ".join(class_label(v, model.class_names) for v in model.labels)
                  if model is not None and model.labels else "-")
        reason = f" ({entry['reason']})" if state != "READY" and entry.get("reason") else ""
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in (
            name, kind, version or "-", _source_line(serving, name, version), f"{state}{reason}", labels)) + "</tr>")
    return "\n".join(rows)


def landing_html(serving, version: str) -> str:
    """The landing page: what this server serves, which version and from where, and where to go next."""
    ready = "ready" if serving.holder.ready else "not ready (loading or stopping)"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>genloop serve</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/pages.css"></head>
<body><main>
<h1>genloop serve <small>{html.escape(version)}</small></h1>
<p>Open Inference Protocol (KServe V2) server of the genloop generators: {ready}.</p>
<nav><a href="/explore">Explore the latent space</a> <a href="/docs">API docs</a>
<a href="/metrics">Prometheus metrics</a> <a href="/v2">Server metadata</a></nav>
<h2>Models</h2>
<table id="models"><thead><tr><th>name</th><th>kind</th><th>version</th><th>source</th><th>state</th>
<th>classes</th></tr></thead>
<tbody>
{_model_rows(serving)}
</tbody></table>
<p class="small">Inference: <code>POST /v2/models/NAME/infer</code>; a PNG grid of samples:
<code>GET /v2/models/NAME/generate?n=16&amp;seed=1</code>; live (re)loading:
<code>POST /v2/repository/models/NAME/load</code>.</p>
</main></body></html>
"""
