// The Sightline console: plain JS over the public HTTP API only (/v1/...), no build step.
"use strict";

const TOKEN_KEY = "sightline.token"; // sessionStorage: this tab only, never in the URL
const COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"];
const EVENT_COLOURS = { face_plate: "#4363d8", pass_through: "#3cb44b", fiber_cut: "#e6194b", fiber_end: "#911eb4" };
const $ = (id) => document.getElementById(id);
let config = { mlflow_ui_url: null };
let catalogs = {};

// ---- API -------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

// The response when it is a 2xx; otherwise an ApiError with the API's own code and message.
async function fetchOk(path, options = {}) {
  const response = await fetch(path, options);
  if (response.ok) return response;
  const text = await response.text();
  let error = null;
  try { error = JSON.parse(text).error; } catch (_) { error = null; }
  throw new ApiError(response.status, error ? error.code : `http_${response.status}`,
    error ? error.message : `${response.status} ${response.statusText}: ${text.slice(0, 200)}`);
}

async function api(path, options = {}) {
  const text = await (await fetchOk(path, options)).text();
  try { return text ? JSON.parse(text) : null; } catch (_) { return null; }
}

function errorText(error) {
  return error instanceof ApiError ? `${error.status} ${error.code}: ${error.message}` : String(error.message || error);
}

function showError(box, error) {
  const element = $(box);
  if (!error) { element.hidden = true; element.textContent = ""; return; }
  element.hidden = false;
  element.textContent = errorText(error);
}

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  for (const child of children) element.append(child);
  return element;
}

function table(element, headers, rows) {
  element.replaceChildren(el("tr", {}, ...headers.map((h) => el("th", {}, h))),
    ...rows.map((row) => el("tr", {}, ...row.map((cell) => el("td", {}, cell)))));
}

const fmt = (value, digits = 3) => (value === null || value === undefined ? "-" : Number(value).toFixed(digits));
const significant = (value, digits = 3) => String(Number(Number(value).toPrecision(digits)));

// ---- navigation and model pickers --------------------------------------------------------
function showPage() {
  const page = (location.hash || "#detect").slice(1);
  for (const section of document.querySelectorAll(".page")) {
    section.classList.toggle("active", section.id === `page-${page}`);
  }
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.page === page);
  }
  if (page === "models") loadModels();
  if (page === "faces") loadGallery();
}

function fillPicker(select, group) {
  const catalog = catalogs[group];
  select.replaceChildren();
  if (!catalog || !catalog.models.length) {
    select.append(el("option", { value: "" }, "no model registered"));
    return;
  }
  const champion = catalog.models.find((m) => m.champion);
  select.append(el("option", { value: "" }, champion ? `★ champion: ${champion.family} v${champion.version}` : "champion"));
  for (const [family, version] of Object.entries(catalog.families)) {
    const star = champion && champion.version === version ? " ★" : "";
    select.append(el("option", { value: family }, `${family} v${version}${star}`));
  }
}

async function loadCatalogs() {
  try {
    catalogs = (await api("/v1/models")).groups;
    fillPicker($("detect-model"), "detection");
    fillPicker($("otdr-model"), "otdr");
  } catch (error) {
    showError("detect-error", error);
  }
}

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value !== "" && value !== null) search.set(key, value);
  return search.toString();
}

// ---- Detect ----------------------------------------------------------------------------
const detectResults = []; // {image, response, canvas, meta}

function decodeRle(rle) {
  // COCO's compressed RLE (pycocotools rleFrString): column-major run lengths.
  const [height, width] = rle.size;
  const counts = [];
  const s = rle.counts;
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = 1;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      p += 1; k += 1;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  const mask = new Uint8Array(height * width);
  let index = 0, value = 0;
  for (const run of counts) {
    for (let i = 0; i < run; i++, index++) {
      if (value) mask[(index % height) * width + Math.floor(index / height)] = 1;
    }
    value = 1 - value;
  }
  return { mask, height, width };
}

function drawDetections(result) {
  const threshold = Number($("detect-threshold").value);
  const { canvas, image, response } = result;
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0);
  const shown = response.detections.filter((d) => d.score >= threshold);
  const lineWidth = Math.max(2, Math.round(Math.max(canvas.width, canvas.height) / 300));
  shown.forEach((detection) => {
    const colour = COLOURS[detection.label_id % COLOURS.length];
    if (detection.mask) {
      const { mask, height, width } = decodeRle(detection.mask);
      const overlay = context.getImageData(0, 0, width, height);
      const [r, g, b] = [1, 3, 5].map((i) => parseInt(colour.slice(i, i + 2), 16));
      for (let i = 0; i < mask.length; i++) {
        if (!mask[i]) continue;
        overlay.data[4 * i] = (overlay.data[4 * i] + r) / 2;
        overlay.data[4 * i + 1] = (overlay.data[4 * i + 1] + g) / 2;
        overlay.data[4 * i + 2] = (overlay.data[4 * i + 2] + b) / 2;
      }
      context.putImageData(overlay, 0, 0);
    }
    const [x1, y1, x2, y2] = detection.box;
    context.strokeStyle = colour;
    context.lineWidth = lineWidth;
    context.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const label = `${detection.label} ${detection.score.toFixed(2)}`;
    context.font = `${Math.max(12, lineWidth * 6)}px sans-serif`;
    const textHeight = Math.max(12, lineWidth * 6) + 4;
    context.fillStyle = colour;
    context.fillRect(x1, Math.max(0, y1 - textHeight), context.measureText(label).width + 6, textHeight);
    context.fillStyle = "#fff";
    context.fillText(label, x1 + 3, Math.max(textHeight - 4, y1 - 4));
    for (const [x, y, visible] of detection.keypoints || []) {
      if (!visible) continue;
      context.beginPath();
      context.arc(x, y, lineWidth * 1.5, 0, 2 * Math.PI);
      context.fill();
    }
  });
  canvas.dataset.drawnBoxes = String(shown.length);
  result.meta.textContent = `${response.model.family} v${response.model.version} · ${response.image.width}×${response.image.height} px · `
    + `${shown.length} of ${response.detections.length} detections with score ≥ ${threshold.toFixed(2)} · ${result.latencyMs.toFixed(0)} ms`;
}

function loadImage(file) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error(`${file.name}: the browser cannot display this file`));
    image.src = URL.createObjectURL(file);
  });
}

async function detectFiles(files) {
  showError("detect-error", null);
  $("detect-results").replaceChildren();
  detectResults.length = 0;
  for (const file of files) {
    const form = new FormData();
    form.append("image", file);
    const started = performance.now();
    try {
      // Every detection comes back (threshold 0); the slider filters here, without a new request.
      const response = await api(`/v1/detect?${query({ score_threshold: 0, model: $("detect-model").value })}`,
        { method: "POST", body: form });
      const latencyMs = performance.now() - started;
      const image = await loadImage(file);
      const canvas = el("canvas", { width: image.naturalWidth, height: image.naturalHeight, class: "detections" });
      const meta = el("p", { class: "meta" });
      $("detect-results").append(el("div", { class: "result" }, el("h3", {}, file.name), meta, canvas));
      const result = { image, response, canvas, meta, latencyMs };
      detectResults.push(result);
      drawDetections(result);
    } catch (error) {
      showError("detect-error", error instanceof ApiError ? new ApiError(error.status, error.code, `${file.name}: ${error.message}`) : error);
    }
  }
}

// ---- OTDR ------------------------------------------------------------------------------
// Positions to 0.1 m, or to the resolution's own precision when a sample is shorter than that.
function metresAt(resolution) {
  const digits = resolution > 0 ? Math.min(4, Math.max(1, Math.ceil(-Math.log10(resolution)))) : 1;
  return (value) => fmt(value, digits);
}

// About `count` ticks at 1, 2 or 5 times a power of ten, labelled with no more digits than the step has.
function metreTicks(length, count = 8) {
  if (!(length > 0)) return [];
  const raw = length / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const digits = Math.max(0, -Math.floor(Math.log10(step)));
  const ticks = [];
  for (let k = 0; k * step <= length * (1 + 1e-9); k++) ticks.push({ metres: k * step, label: `${(k * step).toFixed(digits)} m` });
  return ticks;
}

function plotTrace(response) {
  const canvas = $("otdr-plot");
  const context = canvas.getContext("2d");
  const samples = response.trace.samples_db;
  const resolution = response.trace.resolution_m;
  const margin = { left: 60, right: 20, top: 20, bottom: 40 };
  const width = canvas.width - margin.left - margin.right;
  const height = canvas.height - margin.top - margin.bottom;
  const finite = samples.filter(Number.isFinite);
  const low = Math.min(...finite), high = Math.max(...finite);
  const length = samples.length * resolution;
  const metres = metresAt(resolution);
  const x = (position) => margin.left + (position / length) * width;
  const y = (db) => margin.top + (1 - (db - low) / (high - low || 1)) * height;
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.fillStyle = "#fff";
  context.fillRect(0, 0, canvas.width, canvas.height);
  for (const event of response.events) {
    context.fillStyle = `${EVENT_COLOURS[event.type] || "#888"}33`;
    context.fillRect(x(event.position_m), margin.top, Math.max(2, x(event.position_m + event.extent_m) - x(event.position_m)), height);
    context.fillStyle = EVENT_COLOURS[event.type] || "#888";
    context.font = "12px sans-serif";
    context.fillText(`${event.type} ${metres(event.position_m)} m`, x(event.position_m) + 2, margin.top + 12);
  }
  for (const key of response.key_events || []) {
    context.strokeStyle = "#b7791f";
    context.setLineDash([4, 4]);
    context.beginPath();
    context.moveTo(x(key.position_m), margin.top);
    context.lineTo(x(key.position_m), margin.top + height);
    context.stroke();
    context.setLineDash([]);
  }
  context.strokeStyle = "#1d2330";
  context.lineWidth = 1;
  context.beginPath();
  const step = Math.max(1, Math.floor(samples.length / (2 * width)));
  for (let i = 0; i < samples.length; i += step) {
    const px = x(i * resolution), py = y(samples[i]);
    if (i === 0) context.moveTo(px, py); else context.lineTo(px, py);
  }
  context.stroke();
  context.fillStyle = "#1d2330";
  context.font = "12px sans-serif";
  context.fillText(`${high.toFixed(1)} dB`, 4, margin.top + 10);
  context.fillText(`${low.toFixed(1)} dB`, 4, margin.top + height);
  context.textAlign = "center";
  const ticks = metreTicks(length);
  for (const tick of ticks) {
    context.fillRect(x(tick.metres), margin.top + height, 1, 5);
    context.fillText(tick.label, x(tick.metres), canvas.height - 15);
  }
  context.textAlign = "start";
  canvas.dataset.axisLabels = ticks.map((t) => t.label).join("|");
  canvas.dataset.drawnEvents = String(response.events.length);
  canvas.dataset.drawnSamples = String(samples.length);
}

function showOtdr(response, latencyMs) {
  $("otdr-result").hidden = false;
  const metres = metresAt(response.trace.resolution_m);
  $("otdr-summary").textContent = `${response.model.family} v${response.model.version} · ${response.trace.num_samples} samples, `
    + `${metres(response.trace.length_m)} m at ${significant(response.trace.resolution_m)} m/sample · ${response.events.length} events · ${latencyMs.toFixed(0)} ms`;
  plotTrace(response);
  table($("otdr-events"), ["type", "position (m)", "extent (m)", "score"],
    response.events.map((e) => [e.type, metres(e.position_m), metres(e.extent_m), fmt(e.score, 2)]));
  const keys = response.key_events || [];
  $("otdr-key-events-box").hidden = keys.length === 0;
  table($("otdr-key-events"), ["#", "position (m)", "loss (dB)", "reflectance (dB)", "code"],
    keys.map((k) => [String(k.number), metres(k.position_m), fmt(k.loss_db, 3), fmt(k.reflectance_db, 1), k.code]));
}

async function sendTrace(options) {
  showError("otdr-error", null);
  const started = performance.now();
  try {
    const params = query({ include_trace: "true", score_threshold: $("otdr-threshold").value, model: $("otdr-model").value });
    showOtdr(await api(`/v1/otdr/events?${params}`, { method: "POST", ...options }), performance.now() - started);
  } catch (error) {
    $("otdr-result").hidden = true;
    showError("otdr-error", error);
  }
}

function sendSor(file) {
  const form = new FormData();
  form.append("file", file);
  return sendTrace({ body: form });
}

function sendSamples() {
  const samples = $("otdr-samples").value.split(/[\s,;]+/).filter(Boolean).map(Number);
  const body = JSON.stringify({ samples, resolution_m: Number($("otdr-resolution").value) });
  return sendTrace({ body, headers: { "Content-Type": "application/json" } });
}

// ---- Faces -----------------------------------------------------------------------------
function facesAnswer(...children) {
  $("faces-result").replaceChildren(el("div", { class: "result", id: "faces-answer" }, ...children));
}

function modelLine(model) { return el("p", { class: "meta" }, `${model.family} v${model.version}`); }

function picture(blob, caption, kind) {
  const image = el("img", { alt: caption, class: kind });
  image.src = URL.createObjectURL(blob);
  return el("figure", {}, image, el("figcaption", {}, caption));
}

// The enrolled templates of `identity` as thumbnails (the routes need the tab's token: face images).
async function templatesOf(identity) {
  const box = el("div", { class: "templates", "data-person": identity });
  if (!sessionStorage.getItem(TOKEN_KEY)) {
    box.append(el("p", { class: "meta" }, `set the bearer token below to see ${identity}'s enrolled templates`));
    return box;
  }
  try {
    const person = await api(`/v1/faces/people/${encodeURIComponent(identity)}`, { headers: authHeaders() });
    const thumbnails = await Promise.all(person.thumbnails.map(async (t) => picture(
      await (await fetchOk(t.url, { headers: authHeaders() })).blob(), `template ${t.position + 1}`, "template")));
    box.append(el("p", { class: "meta" }, `${identity}: ${person.templates} templates, enrolled ${new Date(person.enrolled_at).toLocaleString()}`),
      el("div", { class: "pictures" }, ...thumbnails));
  } catch (error) {
    box.append(el("p", { class: "error" }, `${identity}'s templates: ${errorText(error)}`));
  }
  return box;
}

async function facesCall(action) {
  showError("faces-error", null);
  try {
    await action();
  } catch (error) {
    $("faces-result").replaceChildren();
    showError("faces-error", error);
  }
  loadGallery();
}

async function identify(event) {
  event.preventDefault();
  const query = event.target.elements.image.files[0];
  const form = new FormData();
  form.append("image", query);
  await facesCall(async () => {
    const answer = await api("/v1/faces/identify", { method: "POST", body: form });
    const who = answer.known
      ? el("p", { class: "known", "data-identity": answer.identity }, `${answer.identity}`)
      : el("p", { class: "unknown", "data-identity": "unknown" }, "unknown: nobody enrolled is closer than γ");
    const candidates = el("table");
    table(candidates, ["candidate", "distance"], answer.candidates.map((c) => [c.identity, fmt(c.distance)]));
    const matched = answer.known ? [await templatesOf(answer.identity)] : [];
    facesAnswer(who, el("p", {}, `distance ${fmt(answer.distance)} · γ ${fmt(answer.gamma)} · rule: ${answer.rule}`),
      el("div", { class: "pictures" }, picture(query, "query", "query"), ...matched), candidates, modelLine(answer.model));
  });
}

async function verify(event) {
  event.preventDefault();
  const fields = event.target.elements;
  const identity = fields.identity.value.trim();
  const images = [fields.image.files[0], ...(identity ? [] : [fields.image2.files[0]])].filter(Boolean);
  const form = new FormData();
  for (const image of images) form.append("image", image);
  if (identity) form.append("identity", identity);
  await facesCall(async () => {
    const answer = await api("/v1/faces/verify", { method: "POST", body: form });
    const subject = answer.identity ? `the image and ${answer.identity}` : "the two images";
    const shown = images.map((image, i) => picture(image, images.length > 1 ? `image ${i + 1}` : "query", "query"));
    if (answer.identity) shown.push(await templatesOf(answer.identity));
    facesAnswer(el("p", { class: answer.same ? "known" : "unknown", "data-same": String(answer.same) }, `${subject}: ${answer.same ? "same person" : "not the same person"}`),
      el("p", {}, `distance ${fmt(answer.distance)} · γ ${fmt(answer.gamma)}`), el("div", { class: "pictures" }, ...shown), modelLine(answer.model));
  });
}

async function enroll(event) {
  event.preventDefault();
  const fields = event.target.elements;
  const form = new FormData();
  form.append("identity", fields.identity.value);
  for (const file of fields.image.files) form.append("image", file);
  await facesCall(async () => {
    const answer = await api("/v1/faces/enroll", { method: "POST", body: form, headers: authHeaders() });
    facesAnswer(el("p", { class: "known" }, `enrolled ${answer.identity}: ${answer.added} templates added, ${answer.templates} held`), modelLine(answer.model));
  });
}

async function deleteIdentity() {
  const identity = $("enroll-form").elements.identity.value;
  await facesCall(async () => {
    const answer = await api(`/v1/faces/${encodeURIComponent(identity)}`, { method: "DELETE", headers: authHeaders() });
    facesAnswer(el("p", {}, `deleted ${answer.identity}: ${answer.removed} templates removed`));
  });
}

async function loadGallery() {
  try {
    const info = await api("/v1/faces");
    $("gallery-info").textContent = `${info.identities} people, ${info.templates} templates enrolled`
      + (info.model_version ? ` (embedded by version ${info.model_version})` : "");
  } catch (error) {
    $("gallery-info").textContent = error instanceof ApiError && error.status === 404 ? "face routes not served" : "";
  }
}

// ---- Camera (where the browser allows it: a secure context such as localhost or https) ------
let cameraStream = null;

function cameraUsable() {
  return window.isSecureContext && Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
}

async function startCamera() {
  showError("faces-error", null);
  try {
    cameraStream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (error) {
    showError("faces-error", new Error(`camera: ${error.message || error.name}`));
    return;
  }
  $("camera-video").srcObject = cameraStream;
  $("camera-panel").hidden = false;
  $("camera-start").hidden = true;
}

function stopCamera() {
  for (const track of cameraStream ? cameraStream.getTracks() : []) track.stop();
  cameraStream = null;
  $("camera-video").srcObject = null;
  $("camera-panel").hidden = true;
  $("camera-start").hidden = false;
}

async function cameraFrame() {
  const video = $("camera-video");
  if (!video.videoWidth) throw new Error("the camera has not delivered a picture yet; try again");
  const canvas = el("canvas", { width: video.videoWidth, height: video.videoHeight });
  canvas.getContext("2d").drawImage(video, 0, 0);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
  return new File([blob], `camera-${new Date().toISOString().replace(/[:.]/g, "-")}.jpg`, { type: "image/jpeg" });
}

// A captured frame goes into the form's file input, exactly as a picked file would.
async function capture(target) {
  showError("faces-error", null);
  const form = $(`${target}-form`);
  const input = target === "verify" && form.elements.image.files.length ? form.elements.image2 : form.elements.image;
  try {
    const frame = await cameraFrame();
    const files = new DataTransfer();
    if (target === "enroll") for (const file of input.files) files.items.add(file);
    files.items.add(frame);
    input.files = files.files;
    $("camera-state").textContent = `${frame.name} → ${target}`;
  } catch (error) {
    showError("faces-error", error);
    return;
  }
  if (target === "identify") form.requestSubmit();
}

function showTokenState() {
  $("token-state").textContent = sessionStorage.getItem(TOKEN_KEY) ? "token set for this tab" : "no token set";
}

// ---- Models ----------------------------------------------------------------------------
async function loadModels() {
  showError("models-error", null);
  try {
    const { models } = await api("/v1/models");
    const metricNames = [...new Set(models.flatMap((m) => Object.keys(m.metrics || {})))].sort();
    table($("models-table"), ["registered model", "version", "family", "task", "champion", "classes", ...metricNames, "MLflow run"],
      models.map((m) => [m.name, m.version, m.family, m.task, m.champion ? "★ champion" : "", m.class_names.join(", ") || "-",
        ...metricNames.map((name) => fmt((m.metrics || {})[name], 4)), runLink(m)]));
  } catch (error) {
    showError("models-error", error);
  }
}

function runLink(model) {
  if (!model.run_id) return "-";
  if (!config.mlflow_ui_url) return model.run_id;
  return el("a", { href: `${config.mlflow_ui_url.replace(/\/$/, "")}/#/runs/${model.run_id}`, target: "_blank", rel: "noopener" }, model.run_id.slice(0, 8));
}

// ---- wiring ----------------------------------------------------------------------------
// Files dropped on a page go where picked files go (instead of the browser opening them).
function acceptDrops(section, onFiles) {
  section.addEventListener("dragover", (event) => { event.preventDefault(); section.classList.add("dropping"); });
  section.addEventListener("dragleave", () => section.classList.remove("dropping"));
  section.addEventListener("drop", (event) => {
    event.preventDefault();
    section.classList.remove("dropping");
    if (event.dataTransfer.files.length) onFiles([...event.dataTransfer.files]);
  });
}

async function start() {
  try { config = await api("/ui/config.json"); } catch (_) { /* the console works without it */ }
  $("detect-files").addEventListener("change", (e) => detectFiles([...e.target.files]));
  $("detect-threshold").addEventListener("input", (e) => {
    $("detect-threshold-value").textContent = Number(e.target.value).toFixed(2);
    detectResults.forEach(drawDetections);
  });
  $("otdr-file").addEventListener("change", (e) => e.target.files[0] && sendSor(e.target.files[0]));
  $("otdr-send-samples").addEventListener("click", sendSamples);
  acceptDrops($("page-detect"), detectFiles);
  acceptDrops($("page-otdr"), (files) => sendSor(files[0]));
  $("identify-form").addEventListener("submit", identify);
  $("verify-form").addEventListener("submit", verify);
  $("enroll-form").addEventListener("submit", enroll);
  $("delete-button").addEventListener("click", deleteIdentity);
  $("camera-box").hidden = !cameraUsable();
  $("camera-start").addEventListener("click", startCamera);
  $("camera-stop").addEventListener("click", stopCamera);
  for (const button of document.querySelectorAll("#camera-panel [data-capture]")) {
    button.addEventListener("click", () => capture(button.dataset.capture));
  }
  $("token").addEventListener("change", (e) => {
    if (e.target.value) sessionStorage.setItem(TOKEN_KEY, e.target.value); else sessionStorage.removeItem(TOKEN_KEY);
    e.target.value = "";
    showTokenState();
  });
  showTokenState();
  window.addEventListener("hashchange", showPage);
  await loadCatalogs();
  showPage();
  document.body.dataset.ready = "true";
}

start();
