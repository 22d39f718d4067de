// cogsample serve: the page. Plain JavaScript, no build step, nothing loaded from outside.
// The API: GET /api/config, GET/POST /api/jobs, GET/DELETE /api/jobs/ID (JSON; errors {"error"}).
"use strict";

(() => {
  const TOKEN_KEY = "cogsample.token";
  const POLL_MS = 1000;
  const HIDDEN_POLL_MS = 5000;
  const STATUS_TEXT = {
    queued: "queued",
    running: "running",
    finished: "finished",
    failed: "failed",
    cancelled: "cancelled",
  };

  const $ = (id) => document.getElementById(id);
  const state = {
    config: null,
    image: null, // the chosen first frame as a data URL
    elements: new Map(), // job id -> its <li>
    statuses: new Map(), // job id -> last status seen (to announce changes)
    timer: null,
    polling: false,
  };

  // ---------- the API ----------

  function token() {
    return $("token").value.trim();
  }

  function headers(extra) {
    const h = { Accept: "application/json", ...extra };
    const t = token();
    if (t) h.Authorization = `Bearer ${t}`;
    return h;
  }

  async function api(method, path, body) {
    const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
    if (body !== undefined) init.body = JSON.stringify(body);
    const res = await fetch(path, init);
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!res.ok) {
      const message = (data && data.error) || `${res.status} ${res.statusText || "error"}`;
      const err = new Error(message);
      err.status = res.status;
      throw err;
    }
    return { status: res.status, data };
  }

  /** A file URL of the API, with ?token=TOKEN where the server wants one (a <video> sends no header). */
  function fileUrl(url) {
    const t = token();
    if (!t || !(state.config && state.config.token_required)) return url;
    return `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(t)}`;
  }

  // ---------- small helpers ----------

  /** One argument as a POSIX shell reads it back unchanged. */
  function shellQuote(arg) {
    const s = String(arg);
    if (s === "") return "''";
    if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(s)) return s;
    return `'${s.replace(/'/g, `'"'"'`)}'`;
  }

  function ago(unixSeconds) {
    if (typeof unixSeconds !== "number") return "";
    const s = Math.max(0, Date.now() / 1000 - unixSeconds);
    if (s < 10) return "just now";
    if (s < 60) return `${Math.floor(s)} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return new Date(unixSeconds * 1000).toLocaleString();
  }

  function ordinal(n) {
    const tail = n % 100 >= 11 && n % 100 <= 13 ? "th" : ["th", "st", "nd", "rd"][n % 10] || "th";
    return `${n}${tail}`;
  }

  function bytes(n) {
    if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
    if (n >= 1 << 10) return `${Math.round(n / (1 << 10))} KiB`;
    return `${n} bytes`;
  }

  function showError(message) {
    const el = $("error");
    el.textContent = message || "";
    el.hidden = !message;
  }

  function announce(message) {
    $("announce").textContent = message;
  }

  function showTokenField(focus) {
    $("token-field").hidden = false;
    if (focus) $("token").focus();
  }

  // ---------- the configuration ----------

  async function loadConfig() {
    try {
      const { data } = await api("GET", "/api/config");
      applyConfig(data);
      schedule(0);
    } catch (err) {
      if (err.status === 401 || err.status === 403) {
        showTokenField(true);
        $("model").textContent = "This server requires a token.";
        showError(err.message);
      } else {
        $("model").textContent = "The server does not answer; retrying…";
        setTimeout(loadConfig, 2000);
      }
    }
  }

  function applyConfig(config) {
    state.config = config;
    const d = config.defaults || {};
    if (config.token_required) showTokenField(!token());

    const native = d.native || {};
    const frames = d.frames != null ? d.frames : native.frames;
    const width = d.width != null ? d.width : native.width;
    const height = d.height != null ? d.height : native.height;
    const parts = [`${config.i2v ? "image-to-video" : "text-to-video"}`];
    if (frames != null) parts.push(`${frames} frames`);
    if (width != null && height != null) parts.push(`${width}×${height}`);
    if (d.steps != null) parts.push(`${d.steps} steps`);
    const model = $("model");
    model.textContent = "";
    const name = document.createElement("strong");
    name.textContent = config.model;
    model.append("Model ", name, ` · ${parts.join(" · ")}`);

    placeholder("steps", d.steps, "model's");
    placeholder("seed", d.seed, "");
    placeholder("scale", d.scale, "");
    placeholder("frames", frames, "model's");
    updateStepsPlaceholder();

    const image = $("image");
    image.disabled = !config.i2v;
    $("image-note").textContent = config.i2v ? "optional" : "not for this model";
    const most = config.max_upload_bytes ? Math.floor(((config.max_upload_bytes - 4096) * 3) / 4) : 0;
    const limit = most > 0 ? `, at most ${bytes(most)}` : "";
    $("image-hint").textContent = config.i2v
      ? `PNG, JPEG or WebP${limit}; without one the model makes its own first frame.`
      : "Only image-to-video models take a first frame.";
  }

  function placeholder(id, value, fallback) {
    const el = $(id);
    el.placeholder = value != null ? String(value) : fallback;
    el.dataset.placeholder = el.placeholder;
  }

  function updateStepsPlaceholder() {
    const el = $("steps");
    el.placeholder = $("fast").checked ? "20 (fast)" : el.dataset.placeholder || "";
  }

  // ---------- the form ----------

  function readImage() {
    const input = $("image");
    const file = input.files && input.files[0];
    state.image = null;
    $("image-preview").hidden = true;
    if (!file) return;
    const limit = state.config && state.config.max_upload_bytes;
    const sent = Math.ceil(file.size / 3) * 4 + 4096; // as a base64 data URL, in a JSON body
    if (limit && sent > limit) {
      const most = Math.floor(((limit - 4096) * 3) / 4);
      showError(`The image is ${bytes(file.size)}; the server takes images of at most ${bytes(most)}.`);
      input.value = "";
      return;
    }
    const reader = new FileReader();
    reader.onload = () => {
      state.image = reader.result;
      $("image-thumb").src = reader.result;
      $("image-preview").hidden = false;
      showError("");
    };
    reader.onerror = () => showError(`Could not read ${file.name}.`);
    reader.readAsDataURL(file);
  }

  function clearImage() {
    $("image").value = "";
    state.image = null;
    $("image-preview").hidden = true;
  }

  /** The request's JSON from the form: empty fields are left out (the server's defaults). */
  function requestBody() {
    const body = {};
    const prompt = $("prompt").value.trim();
    if (!prompt) throw new Error("Write a prompt first.");
    body.prompt = prompt;
    const negative = $("negative_prompt").value.trim();
    if (negative) body.negative_prompt = negative;
    const integer = (id, label) => {
      const el = $(id);
      const raw = el.value.trim();
      if (el.validity && el.validity.badInput) throw new Error(`${label} must be a whole number.`);
      if (!raw) return undefined;
      if (!/^-?\d+$/.test(raw)) throw new Error(`${label} must be a whole number, not "${raw}".`);
      return Number.parseInt(raw, 10);
    };
    const steps = integer("steps", "Steps");
    if (steps !== undefined) body.steps = steps;
    const seed = integer("seed", "The seed");
    if (seed !== undefined) body.seed = seed;
    const scaleEl = $("scale");
    if (scaleEl.validity && scaleEl.validity.badInput) throw new Error("The guidance scale must be a number.");
    const scale = scaleEl.value.trim();
    if (scale) {
      const value = Number(scale);
      if (!Number.isFinite(value)) throw new Error(`The guidance scale must be a number, not "${scale}".`);
      body.scale = value;
    }
    const frames = $("frames").value.trim();
    if (frames) body.frames = /^\d+$/.test(frames) ? Number.parseInt(frames, 10) : frames;
    if ($("fast").checked) body.fast = true;
    if (state.image) body.image = state.image;
    return body;
  }

  async function submit(event) {
    event.preventDefault();
    let body;
    try {
      body = requestBody();
    } catch (err) {
      showError(err.message);
      return;
    }
    const button = $("submit");
    button.disabled = true;
    button.textContent = "Submitting…";
    try {
      const { data } = await api("POST", "/api/jobs", body);
      showError("");
      if (data && data.id) {
        updateJob(data);
        announce(`Accepted: ${data.prompt || body.prompt}`);
      }
      schedule(0);
    } catch (err) {
      showError(err.message);
      if (err.status === 401 || err.status === 403) showTokenField(true);
    } finally {
      button.disabled = false;
      button.textContent = "Generate";
    }
  }

  // ---------- the queue ----------

  function schedule(delay) {
    clearTimeout(state.timer);
    state.timer = setTimeout(poll, delay);
  }

  async function poll() {
    if (state.polling) return;
    state.polling = true;
    try {
      const { data } = await api("GET", "/api/jobs");
      render((data && data.jobs) || []);
    } catch (err) {
      if (err.status === 401 || err.status === 403) {
        showTokenField(false);
        $("queue-status").textContent = "a valid token is needed to see the queue";
      } else {
        $("queue-status").textContent = "the server does not answer; retrying…";
      }
    } finally {
      state.polling = false;
      state.timer = setTimeout(poll, document.hidden ? HIDDEN_POLL_MS : POLL_MS);
    }
  }

  function render(jobs) {
    const list = $("jobs");
    const seen = new Set();
    let queuedBefore = 0;
    for (const job of jobs) {
      job._position = job.status === "queued" ? ++queuedBefore : 0;
      seen.add(job.id);
    }
    // newest first; an element is moved only when out of place (moving a <video> pauses it)
    const ordered = jobs.slice().reverse();
    ordered.forEach((job, i) => {
      const el = updateJob(job);
      if (list.children[i] !== el) list.insertBefore(el, list.children[i] || null);
    });
    for (const [id, el] of state.elements) {
      if (!seen.has(id)) {
        el.remove();
        state.elements.delete(id);
        state.statuses.delete(id);
      }
    }
    $("empty").hidden = jobs.length > 0;
    const counts = {};
    for (const job of jobs) counts[job.status] = (counts[job.status] || 0) + 1;
    const summary = ["running", "queued", "finished", "failed", "cancelled"]
      .filter((s) => counts[s])
      .map((s) => `${counts[s]} ${s}`);
    $("queue-status").textContent = summary.join(" · ");
  }

  function jobElement(job) {
    let el = state.elements.get(job.id);
    if (el) return el;
    el = $("job-template").content.firstElementChild.cloneNode(true);
    el.dataset.id = job.id;
    el.querySelector(".cancel").addEventListener("click", () => cancel(job.id, el));
    el.querySelector(".copy").addEventListener("click", () => copyCommand(el));
    const video = el.querySelector("video");
    video.addEventListener("error", () => {
      const p = el.querySelector(".job-error");
      p.hidden = false;
      p.textContent = "This browser cannot play the video: download it with the link below.";
    });
    state.elements.set(job.id, el);
    const list = $("jobs");
    list.insertBefore(el, list.firstChild);
    return el;
  }

  function updateJob(job) {
    const el = jobElement(job);
    const status = job.status || "queued";
    const before = state.statuses.get(job.id);
    el.dataset.status = status;
    el.setAttribute("aria-label", `${job.prompt || job.name}: ${STATUS_TEXT[status] || status}`);
    if (before && before !== status) announce(`${job.prompt || job.name}: ${STATUS_TEXT[status] || status}`);
    state.statuses.set(job.id, status);

    el.querySelector(".job-prompt").textContent = job.prompt || job.name || job.id;
    const badge = el.querySelector(".badge");
    badge.textContent = STATUS_TEXT[status] || status;
    badge.className = `badge badge-${status}`;

    const meta = [];
    if (job.seed != null) meta.push(`seed ${job.seed}`);
    if (job.accepted) meta.push(`accepted ${ago(job.accepted)}`);
    if (job.name) meta.push(job.name);
    el.querySelector(".job-meta").textContent = meta.join(" · ");

    updateProgress(el, job, status);
    el.querySelector(".cancel").hidden = status !== "queued";

    const error = el.querySelector(".job-error");
    if (status === "failed") {
      error.hidden = false;
      error.textContent = job.error || "failed";
    } else if (!el.querySelector("video").error) {
      error.hidden = true;
    }
    if (status === "finished" && job.files && !el.dataset.loaded) showResult(el, job);
    return el;
  }

  function updateProgress(el, job, status) {
    const box = el.querySelector(".job-progress");
    const bar = el.querySelector(".progress");
    const text = el.querySelector(".progress-text");
    const steps = Number(job.steps) || 0;
    const step = Math.min(Number(job.step) || 0, steps || Infinity);
    box.hidden = status === "failed" || status === "cancelled";
    bar.max = steps || 1;
    if (status === "finished") {
      bar.value = bar.max;
      text.textContent = el.dataset.summary || (steps ? `${steps} steps` : "done");
    } else if (status === "running") {
      if (step > 0) {
        bar.value = step;
      } else {
        bar.removeAttribute("value"); // indeterminate until the first step
      }
      const forwards = job.forwards != null ? ` · ${job.forwards} forwards` : "";
      text.textContent = step > 0 ? `step ${step} / ${steps}${forwards}` : `starting…${forwards}`;
    } else {
      bar.value = 0;
      text.textContent = job._position ? `${ordinal(job._position)} in the queue` : "waiting";
    }
    bar.setAttribute("aria-label", text.textContent);
  }

  function showResult(el, job) {
    el.dataset.loaded = "1";
    const files = job.files;
    el.querySelector(".result").hidden = false;
    const video = el.querySelector("video");
    if (files.video) video.src = fileUrl(files.video);
    const sheet = el.querySelector("img.sheet");
    if (files.sheet) sheet.src = fileUrl(files.sheet);
    sheet.alt = `contact sheet of "${job.prompt || job.name}"`;

    const links = el.querySelector(".files");
    links.textContent = "";
    const labels = { video: "video (mp4)", sheet: "contact sheet", latents: "latents", meta: "metadata (json)" };
    for (const key of ["video", "sheet", "latents", "meta"]) {
      if (!files[key]) continue;
      const a = document.createElement("a");
      a.href = fileUrl(files[key]);
      a.textContent = labels[key];
      if (key !== "meta") a.download = "";
      links.append(a);
    }
    if (files.meta) loadMeta(el, files.meta);
    else el.querySelector(".meta").hidden = true;
  }

  async function loadMeta(el, url) {
    const pre = el.querySelector(".meta-json");
    const command = el.querySelector(".command");
    try {
      const res = await fetch(fileUrl(url), { headers: headers() });
      if (!res.ok) throw new Error(`${res.status} ${res.statusText}`);
      const meta = await res.json();
      pre.textContent = JSON.stringify(meta, null, 2);
      el.dataset.summary = summary(meta);
      el.querySelector(".progress-text").textContent = el.dataset.summary;
      if (Array.isArray(meta.command)) {
        command.textContent = "";
        meta.command.forEach((arg, i) => {
          if (i) command.append(" ");
          const span = document.createElement("span");
          span.textContent = shellQuote(arg);
          if (String(arg).startsWith("-")) span.className = "flag"; // no line break inside --a-flag
          command.append(span);
        });
      } else {
        el.querySelector(".command-row").hidden = true;
      }
    } catch (err) {
      pre.textContent = `could not load the metadata: ${err.message}`;
      el.querySelector(".command-row").hidden = true;
      delete el.dataset.loaded; // try again on a later poll
    }
  }

  /** What a finished video cost, from its metadata: steps, forwards, seconds. */
  function summary(meta) {
    const parts = [];
    if (meta.steps != null) parts.push(`${meta.steps} steps`);
    if (meta.forwards != null) parts.push(`${meta.forwards} forwards`);
    const t = meta.timings_s || {};
    const total = Object.values(t).reduce((a, b) => a + (typeof b === "number" ? b : 0), 0);
    if (total > 0) parts.push(`${total < 10 ? total.toFixed(1) : Math.round(total)} s`);
    if (meta.frames != null && meta.width != null && meta.height != null) {
      parts.push(`${meta.frames} frames ${meta.width}×${meta.height}`);
    }
    return parts.join(" · ") || "done";
  }

  async function cancel(id, el) {
    const button = el.querySelector(".cancel");
    button.disabled = true;
    try {
      const { data } = await api("DELETE", `/api/jobs/${encodeURIComponent(id)}`);
      showError("");
      if (data && data.id) updateJob(data);
      schedule(0);
    } catch (err) {
      showError(`Cancel: ${err.message}`);
    } finally {
      button.disabled = false;
    }
  }

  async function copyCommand(el) {
    const text = el.querySelector(".command").textContent;
    const button = el.querySelector(".copy");
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      const range = document.createRange();
      range.selectNodeContents(el.querySelector(".command"));
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      document.execCommand("copy");
    }
    button.textContent = "Copied";
    setTimeout(() => {
      button.textContent = "Copy";
    }, 1500);
  }

  // ---------- start ----------

  function start() {
    const tokenInput = $("token");
    tokenInput.value = localStorage.getItem(TOKEN_KEY) || "";
    tokenInput.addEventListener("change", () => {
      localStorage.setItem(TOKEN_KEY, token());
      showError("");
      if (!state.config) loadConfig();
      else schedule(0);
    });
    $("form").addEventListener("submit", submit);
    $("prompt").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("form").requestSubmit();
    });
    $("image").addEventListener("change", readImage);
    $("image-clear").addEventListener("click", clearImage);
    $("fast").addEventListener("change", updateStepsPlaceholder);
    $("seed-random").addEventListener("click", () => {
      $("seed").value = String(Math.floor(Math.random() * 2 ** 31));
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) schedule(0);
    });
    showError("");
    loadConfig();
  }

  start();
})();
