// The finegrain page: pick or drop photos, ask the server, show the top 5, the unknown verdict, the Grad-CAM
// overlay, the nearest training photos and (when the server has an index) the closest photos of the indexed
// collection. Plain DOM code, no libraries, nothing loaded from elsewhere.
"use strict";

const MAX_PER_REQUEST = 16;
const INDEX_K = 5;
const $ = (id) => document.getElementById(id);
let models = [];

function headers() {
  const key = $("api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

function say(text) { $("status").textContent = text; }

function pct(p) { return `${(100 * p).toFixed(p >= 0.995 || p < 0.001 ? 0 : 1)} %`; }

function pretty(label) { return String(label).replace(/_/g, " "); }

async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.error) return body.error.message + (body.error.fix ? ` (${body.error.fix})` : "");
  } catch (e) { /* not JSON: fall through */ }
  return `the server answered ${response.status} ${response.statusText}`;
}

async function loadModels() {
  let response;
  try {
    response = await fetch("/v1/models", { headers: headers() });
  } catch (e) {
    say("The server cannot be reached.");
    return;
  }
  if (response.status === 401) {
    $("key-row").hidden = false;
    say("This server needs an API key: type it above.");
    return;
  }
  if (!response.ok) { say(await errorText(response)); return; }
  const body = await response.json();
  models = body.models;
  if (body.api_key_required) $("key-row").hidden = false;
  const select = $("model");
  select.replaceChildren(...models.map((m) => new Option(`${m.name} (${m.classes.length} classes)`, m.name)));
  $("model-row").hidden = models.length < 2;
  say(`Ready: ${models.length === 1 ? "model " + models[0].name : models.length + " models"}.`);
}

function currentModel() { return models.find((m) => m.name === $("model").value) || models[0]; }

function newCard(file) {
  const card = $("card").content.firstElementChild.cloneNode(true);
  card.querySelector(".photo").src = URL.createObjectURL(file);
  card.querySelector(".filename").textContent = file.name;
  card.querySelector(".verdict").textContent = "Looking…";
  $("results").prepend(card);
  return card;
}

function showError(card, text) {
  card.querySelector(".verdict").textContent = "Could not read this photo.";
  const p = card.querySelector(".error");
  p.textContent = text;
  p.hidden = false;
}

function verdict(result, model) {
  const best = pretty(result.top_k[0].label);
  if (result.unknown === true) {
    return [`Not sure: this looks like none of the ${model.classes.length} classes this model knows ` +
            `(closest: ${best}).`, true];
  }
  const conf = result.top_k[0].prob;
  const hedge = conf < 0.5 ? "Maybe" : "Looks like";
  return [`${hedge} ${best} (${pct(conf)}).`, false];
}

function showPrediction(card, result, model) {
  if (result.status !== "ok") { showError(card, result.error); return false; }
  const [text, unknown] = verdict(result, model);
  const v = card.querySelector(".verdict");
  v.textContent = text;
  v.classList.toggle("unknown", unknown);
  card.querySelector(".top5").replaceChildren(...result.top_k.map(({ label, prob }) => {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = pretty(label);
    name.title = label;
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${Math.max(0, Math.min(100, 100 * prob))}%`;
    bar.append(fill);
    const value = document.createElement("span");
    value.className = "pct";
    value.textContent = pct(prob);
    li.append(name, bar, value);
    return li;
  }));
  return true;
}

function thumbnails(list, items, caption) {
  list.replaceChildren(...items.map((n) => {
    const li = document.createElement("li");
    li.title = n.name;
    if (n.thumbnail_jpeg_base64) {
      const img = document.createElement("img");
      img.src = `data:image/jpeg;base64,${n.thumbnail_jpeg_base64}`;
      img.alt = pretty(n.label || n.name);
      li.append(img);
    }
    li.append(document.createTextNode(caption(n)));
    return li;
  }));
}

function showExplanation(card, expl) {
  const overlay = card.querySelector(".overlay");
  overlay.src = `data:image/png;base64,${expl.overlay_png_base64}`;
  card.querySelector(".overlay-caption").textContent = `where the model looked for ${pretty(expl.target)}`;
  card.querySelector(".overlay-figure").hidden = false;
  if (!expl.neighbours.length) return;
  thumbnails(card.querySelector(".neighbours"), expl.neighbours,
             (n) => `${pretty(n.label || "?")} · ${n.similarity.toFixed(2)}`);
  card.querySelector(".neighbours-block").hidden = false;
}

function showIndexNeighbours(card, result) {
  if (result.status !== "ok" || !result.neighbours.length) return;
  thumbnails(card.querySelector(".index-neighbours"), result.neighbours,
             (n) => `${pretty(n.label || n.name)} · distance ${n.distance.toFixed(3)}`);
  card.querySelector(".index-block").hidden = false;
}

async function findSimilar(base, chunk, cards) {
  try {
    const r = await post(`${base}/neighbours?k=${INDEX_K}`, chunk);
    if (!r.ok) return;
    (await r.json()).results.forEach((result, k) => showIndexNeighbours(cards[k], result));
  } catch (e) { /* the predictions stand without the collection's photos */ }
}

async function post(path, files) {
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  return fetch(path, { method: "POST", body: form, headers: headers() });
}

async function classify(files) {
  const model = currentModel();
  if (!model) { say("No model is available yet."); return; }
  const base = `/v1/models/${encodeURIComponent(model.name)}`;
  for (let i = 0; i < files.length; i += MAX_PER_REQUEST) {
    const chunk = files.slice(i, i + MAX_PER_REQUEST);
    const cards = chunk.map(newCard);
    say(`Classifying ${chunk.length} photo${chunk.length > 1 ? "s" : ""}…`);
    let response;
    try {
      response = await post(`${base}/predict`, chunk);
    } catch (e) {
      cards.forEach((c) => showError(c, "the server cannot be reached"));
      continue;
    }
    if (!response.ok) {
      const text = await errorText(response);
      cards.forEach((c) => showError(c, text));
      if (response.status === 401) $("key-row").hidden = false;
      continue;
    }
    const body = await response.json();
    const explainable = cards.filter((c, k) => showPrediction(c, body.results[k], model) && model.explain);
    if (model.similar_images) await findSimilar(base, chunk, cards);
    for (const card of explainable) {
      const file = chunk[cards.indexOf(card)];
      try {
        const r = await post(`${base}/explain`, [file]);
        if (r.ok) showExplanation(card, await r.json());
      } catch (e) { /* the prediction stands without its overlay */ }
    }
  }
  say("Done.");
}

function setUp() {
  const stored = sessionStorage.getItem("finegrain-api-key");
  if (stored) $("api-key").value = stored;
  $("api-key").addEventListener("change", () => {
    sessionStorage.setItem("finegrain-api-key", $("api-key").value.trim());
    loadModels();
  });
  $("files").addEventListener("change", (e) => { classify([...e.target.files]); e.target.value = ""; });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    classify([...e.dataTransfer.files]);
  });
  loadModels();
}

document.addEventListener("DOMContentLoaded", setUp);
