// anonray review page: frame viewer, track selection, region drawing, queued actions, apply.
// Served from the app itself (no external asset); every change is a POST carrying the access token header.
"use strict";

const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
const TOKEN = meta("anonray-token");
const TOKEN_HEADER = meta("anonray-token-header");
const $ = (id) => document.getElementById(id);
const COLOURS = { face: "#ffff00", plate: "#00ffff" };

function say(text, isError) {
  const status = $("status");
  status.textContent = text;
  status.className = isError ? "error" : "";
}

function reviewerName() {
  const field = $("reviewer");
  let name = field.value.trim();
  if (!name) {
    name = (window.prompt("Your name, recorded with each correction:") || "").trim();
    field.value = name;
  }
  if (name) localStorage.setItem("anonray-reviewer", name);
  return name;
}

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", [TOKEN_HEADER]: TOKEN },
    body: JSON.stringify(body || {}),
    credentials: "same-origin",
  });
  const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

async function queue(entry) {
  const reviewer = reviewerName();
  if (!reviewer) return say("say who you are first (reviewer)", true);
  try {
    const data = await post("/api/pending", { reviewer, entry });
    $("pending-count").textContent = `${data.pending} action(s) pending`;
    say(`queued: ${entry.action}`);
  } catch (err) {
    say(err.message, true);
  }
}

function setUpHeader() {
  $("reviewer").value = meta("anonray-reviewer") || localStorage.getItem("anonray-reviewer") || "";
  $("apply").addEventListener("click", async () => {
    say("applying: rendering the corrected outputs ...");
    try {
      const data = await post("/api/apply");
      const done = data.runs.map((r) => `${r.run_id}: ${r.corrected} corrected, ${r.reviewed} review status only, ` +
        `${r.failed} failed (${r.seconds} s)`).join("; ");
      $("pending-count").textContent = "0 action(s) pending";
      say(`applied ${done || "nothing"}`);
      if (window.viewer) window.viewer.show(window.viewer.index);
    } catch (err) {
      say(err.message, true);
    }
  });
  $("clear").addEventListener("click", async () => {
    await post("/api/pending/clear");
    $("pending-count").textContent = "0 action(s) pending";
    say("pending actions cleared");
  });
}

class Viewer {
  constructor(root) {
    this.videoId = root.dataset.videoId;
    this.file = root.dataset.file;
    this.frames = Number(root.dataset.frames);
    this.width = Number(root.dataset.width);
    this.height = Number(root.dataset.height);
    this.image = $("frame");
    this.canvas = $("overlay");
    this.regions = [];
    this.selected = null;
    this.drawn = null;
    this.drag = null;
    this.index = 0;
    this.bind();
    this.show(0);
  }

  bind() {
    $("prev").addEventListener("click", () => this.show(this.index - 1));
    $("next").addEventListener("click", () => this.show(this.index + 1));
    $("scrub").addEventListener("input", (e) => this.show(Number(e.target.value)));
    $("frame-number").addEventListener("change", (e) => this.show(Number(e.target.value)));
    this.image.addEventListener("load", () => this.draw());
    this.canvas.addEventListener("mousedown", (e) => this.down(e));
    this.canvas.addEventListener("mousemove", (e) => this.move(e));
    this.canvas.addEventListener("mouseup", (e) => this.up(e));
    $("remove-track").addEventListener("click", () => this.remove(false));
    $("remove-range").addEventListener("click", () => this.remove(true));
    $("add-region").addEventListener("click", () => this.add());
    $("approve").addEventListener("click", () => queue({ file: this.file, action: "approve", comment: $("comment").value }));
    $("reject").addEventListener("click", () => queue({ file: this.file, action: "reject", comment: $("comment").value }));
  }

  async show(index) {
    this.index = Math.max(0, Math.min(this.frames - 1, index));
    $("scrub").value = this.index;
    $("frame-number").value = this.index;
    const response = await fetch(`/api/file/${this.videoId}/regions/${this.index}`, { credentials: "same-origin" });
    this.regions = response.ok ? (await response.json()).regions : [];
    this.image.src = `/api/file/${this.videoId}/frame/${this.index}.jpg?v=${Date.now()}`;
    this.listRegions();
  }

  listRegions() {
    const list = $("region-list");
    list.replaceChildren();
    for (const region of this.regions) {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "region";
      button.dataset.track = region.track_id;
      button.dataset.class = region.class;
      button.textContent = `${region.class} track ${region.track_id}`;
      button.addEventListener("click", () => this.select(region));
      item.append(button);
      list.append(item);
    }
  }

  scale() {
    return this.canvas.getBoundingClientRect().width / this.width;
  }

  point(event) {
    const rect = this.canvas.getBoundingClientRect();
    const s = rect.width / this.width;
    return [(event.clientX - rect.left) / s, (event.clientY - rect.top) / s];
  }

  draw() {
    const rect = this.canvas.getBoundingClientRect();
    this.canvas.width = rect.width;
    this.canvas.height = rect.height;
    const ctx = this.canvas.getContext("2d");
    const s = this.scale();
    ctx.clearRect(0, 0, rect.width, rect.height);
    const outline = (box, colour, width, ellipse) => {
      const [x0, y0, x1, y1] = box.map((v) => v * s);
      ctx.lineWidth = width;
      ctx.strokeStyle = colour;
      ctx.beginPath();
      if (ellipse) ctx.ellipse((x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2, 0, 0, 2 * Math.PI);
      else ctx.rect(x0, y0, x1 - x0, y1 - y0);
      ctx.stroke();
    };
    for (const r of this.regions) {
      const picked = this.selected && this.selected.track_id === r.track_id && this.selected.class === r.class;
      const colour = picked ? "#ff3030" : (COLOURS[r.class] || "#ff00ff");
      outline(r.box, "#000", 5, r.shape === "ellipse");
      outline(r.box, colour, 2, r.shape === "ellipse");
      const label = `${r.class} ${r.track_id}`;
      ctx.font = "12px system-ui, sans-serif";
      const [x, y] = [r.box[0] * s, Math.max(12, r.box[1] * s - 3)];
      ctx.fillStyle = "#000";
      ctx.fillRect(x, y - 11, ctx.measureText(label).width + 4, 14);
      ctx.fillStyle = colour;
      ctx.fillText(label, x + 2, y);
    }
    if (this.drawn) outline(this.drawn, "#ff3030", 2, $("add-shape").value === "ellipse");
  }

  down(event) {
    const [x, y] = this.point(event);
    const hit = this.regions.find((r) => x >= r.box[0] && x <= r.box[2] && y >= r.box[1] && y <= r.box[3]);
    if (hit) return this.select(hit);
    this.drag = [x, y];
  }

  move(event) {
    if (!this.drag) return;
    const [x, y] = this.point(event);
    this.drawn = this.box(this.drag, [x, y]);
    this.draw();
  }

  up(event) {
    if (!this.drag) return;
    const [x, y] = this.point(event);
    const box = this.box(this.drag, [x, y]);
    this.drag = null;
    if (box[2] - box[0] < 2 || box[3] - box[1] < 2) return;
    this.drawn = box;
    $("drawn").textContent = `[${box.join(", ")}]`;
    $("add-first").value = this.index;
    $("add-last").value = Math.min(this.frames - 1, this.index + 24);
    this.draw();
  }

  box(a, b) {
    const clamp = (v, hi) => Math.round(Math.max(0, Math.min(hi, v)));
    return [clamp(Math.min(a[0], b[0]), this.width), clamp(Math.min(a[1], b[1]), this.height),
      clamp(Math.max(a[0], b[0]), this.width), clamp(Math.max(a[1], b[1]), this.height)];
  }

  select(region) {
    this.selected = region;
    $("selected").textContent = `${region.class} track ${region.track_id}`;
    $("remove-first").value = this.index;
    $("remove-last").value = this.index;
    this.draw();
  }

  remove(ranged) {
    if (!this.selected) return say("select a mask first", true);
    const entry = { file: this.file, action: "remove_track", class: this.selected.class,
      track_id: this.selected.track_id, reason: $("remove-reason").value };
    if (ranged) entry.frames = [Number($("remove-first").value), Number($("remove-last").value)];
    queue(entry);
  }

  add() {
    if (!this.drawn) return say("drag on the frame to draw a region first", true);
    queue({ file: this.file, action: "add_region", box: this.drawn,
      frames: [Number($("add-first").value), Number($("add-last").value)],
      shape: $("add-shape").value, label: $("add-label").value, follow: $("add-follow").checked });
  }
}

setUpHeader();
const root = $("viewer");
if (root) window.viewer = new Viewer(root);
