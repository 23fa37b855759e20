// genloop serve's latent explorer: plain JavaScript, no library, nothing from another host.
// It reads /explore/config.json (models, slider axes, encoder, real images) and draws what
// POST /v2/models/NAME/infer returns, so it always shows the version deployed now.
"use strict";

const state = {config: null, model: null, base: null, inFlight: false, pending: false, token: ""};
window.genloopFrames = [];  // {sent, drawn} per drawn image (performance.now() ms), read by the browser test
const $ = (id) => document.getElementById(id);

function say(id, text) { $(id).textContent = text || ""; }

async function api(path, body) {
  const headers = {};
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const options = {method: body === undefined ? "GET" : "POST", headers};
  if (body !== undefined) { headers["Content-Type"] = "application/json"; options.body = JSON.stringify(body); }
  const response = await fetch(path, options);
  let payload = null;
  try { payload = await response.json(); } catch (e) { payload = null; }
  if (response.status === 401) $("auth").hidden = false;
  if (!response.ok) {
    const why = payload && payload.error ? payload.error : response.status + " " + response.statusText;
    throw new Error(why);
  }
  return payload;
}

function drawTensor(canvas, data, shape) {
  // data: flat (N, C, H, W) floats in [0, 1]; draws the first image, grey (C = 1) or RGB (C = 3)
  const [c, h, w] = shape.length === 4 ? shape.slice(1) : [1, shape[shape.length - 2], shape[shape.length - 1]];
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(w, h);
  const plane = h * w;
  for (let i = 0; i < plane; i++) {
    for (let k = 0; k < 3; k++) {
      const v = data[(c === 3 ? k : 0) * plane + i];
      image.data[4 * i + k] = Math.max(0, Math.min(255, Math.round(v * 255)));
    }
    image.data[4 * i + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
}

function seededNormal(n, seed) {
  // mulberry32 then Box-Muller: a reproducible standard-normal vector
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return Array.from({length: n}, () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform()));
}

function latent() {
  const m = state.model;
  const z = state.base.slice();
  document.querySelectorAll("#axes input").forEach((slider, i) => {
    const axis = m.axes[i], step = Number(slider.value) * axis.sd;
    for (let d = 0; d < z.length; d++) z[d] += step * axis.vector[d];
  });
  return z;
}

function labelInput(m) {
  if (!m.labels) return [];
  return [{name: "label", shape: [1], datatype: "INT64", data: [Number($("label").value)]}];
}

async function render() {
  const m = state.model;
  if (!m || !m.loaded) return;
  if (state.inFlight) { state.pending = true; return; }
  state.inFlight = true;
  const sent = performance.now();
  try {
    const body = {inputs: [{name: m.latent, shape: [1, m.latent_dim], datatype: "FP32", data: latent()},
                           ...labelInput(m)]};
    const reply = await api("/v2/models/" + encodeURIComponent(m.name) + "/infer", body);
    const out = reply.outputs.find((o) => o.name === m.output) || reply.outputs[0];
    const canvas = $("view");
    drawTensor(canvas, out.data, out.shape);
    const drawn = performance.now();
    window.genloopFrames.push({sent, drawn});
    canvas.dataset.frame = String(Number(canvas.dataset.frame) + 1);
    say("latency", (drawn - sent).toFixed(1) + " ms");
    say("version", "serving v" + (reply.model_version || "?"));
    say("model-message", "");
  } catch (error) {
    say("model-message", "model " + m.name + ": " + error.message);
  } finally {
    state.inFlight = false;
    if (state.pending) { state.pending = false; render(); }
  }
}

function buildSliders(m) {
  const box = $("axes");
  box.replaceChildren();
  m.axes.forEach((axis, i) => {
    const row = document.createElement("label");
    row.className = "axis";
    const name = document.createElement("span"), value = document.createElement("span");
    name.textContent = axis.label; value.textContent = "0.00";
    const slider = document.createElement("input");
    Object.assign(slider, {type: "range", min: "-3", max: "3", step: "0.05", value: "0", id: "axis-" + i});
    slider.addEventListener("input", () => { value.textContent = Number(slider.value).toFixed(2); render(); });
    row.append(name, slider, value);
    box.append(row);
  });
  say("axes-note", m.axes_note + " (sliders in standard deviations)");
}

function buildClasses(m) {
  $("class-row").hidden = !m.labels;
  const select = $("label");
  const names = m.class_names || {};
  select.replaceChildren(...(m.labels || []).map((v) => new Option(names[v] ? `${v} ${names[v]}` : String(v), String(v))));
}

async function encode(m, pixels, thumb) {
  try {
    const enc = m.encoder;
    const inputs = [{name: enc.input, shape: [1, ...enc.shape], datatype: "FP32", data: pixels}, ...labelInput(m)];
    const reply = await api("/v2/models/" + encodeURIComponent(enc.name) + "/infer", {inputs});
    state.base = reply.outputs.find((o) => o.name === "mean").data.slice();
    document.querySelectorAll("#images canvas").forEach((c) => c.classList.toggle("chosen", c === thumb));
    resetSliders();
  } catch (error) {
    say("model-message", "encoder " + m.encoder.name + ": " + error.message);
  }
}

function buildImages(m) {
  const box = $("images");
  box.replaceChildren();
  say("images-note", m.images_note || (m.encoder ? "click an image: the encoder (" + m.encoder.name +
      ") places it in the latent space, the sliders then edit it" : ""));
  if (!m.encoder) return;
  m.images.forEach((pixels) => {
    const thumb = document.createElement("canvas");
    drawTensor(thumb, pixels, [1, ...m.encoder.shape]);
    thumb.addEventListener("click", () => encode(m, pixels, thumb));
    box.append(thumb);
  });
}

function resetSliders() {
  document.querySelectorAll("#axes input").forEach((s) => { s.value = "0"; s.nextSibling.textContent = "0.00"; });
  render();
}

function selectModel(name) {
  const m = state.config.models.find((x) => x.name === name);
  state.model = m;
  $("axes").replaceChildren(); $("images").replaceChildren();
  say("axes-note", ""); say("images-note", ""); say("version", ""); say("latency", "-");
  if (!m.loaded) {
    $("class-row").hidden = true;
    say("model-message", "model " + m.name + " is not loaded on this server (" + m.reason +
        "); POST /v2/repository/models/" + m.name + "/load serves it, then reload this page");
    return;
  }
  say("model-message", "");
  // A conditional GAN draws from z times its class embedding, so at z = 0 every class is the same
  // image: it starts from one fixed standard-normal z instead (the same one on every visit).
  state.base = m.labels && m.kind === "gan" ? seededNormal(m.latent_dim, 1) : new Array(m.latent_dim).fill(0);
  buildSliders(m); buildClasses(m); buildImages(m);
  render();
}

async function start() {
  try {
    state.config = await api("/explore/config.json");
  } catch (error) {
    say("message", "cannot read this server's models: " + error.message);
    return;
  }
  say("message", state.config.atlas_note && !state.config.atlas_note.startsWith("axes from")
      ? "latent atlas: " + state.config.atlas_note : "");
  const select = $("model");
  select.replaceChildren(...state.config.models.map((m) =>
    new Option(m.loaded ? m.name + " (" + m.kind + ", v" + m.version + ")" : m.name + " (not loaded)", m.name)));
  if (!state.config.models.length) { say("message", "this server serves no generator"); return; }
  const wanted = new URLSearchParams(location.search).get("model");
  if (wanted && state.config.models.some((m) => m.name === wanted)) select.value = wanted;
  selectModel(select.value);
}

$("model").addEventListener("change", (e) => selectModel(e.target.value));
$("label").addEventListener("change", render);
$("centre").addEventListener("click", () => { state.base = new Array(state.model.latent_dim).fill(0); resetSliders(); });
$("random").addEventListener("click", () => {
  // Box-Muller: a standard normal latent (the prior both models sample from)
  state.base = Array.from({length: state.model.latent_dim}, () =>
    Math.sqrt(-2 * Math.log(1 - Math.random())) * Math.cos(2 * Math.PI * Math.random()));
  resetSliders();
});
$("reset").addEventListener("click", resetSliders);
$("use-token").addEventListener("click", () => { state.token = $("token").value; $("auth").hidden = true; start(); });
start();
