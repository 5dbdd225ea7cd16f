// dpsynth web form: the few things a page cannot do without a script.
// Upload with a progress bar, live job progress, and showing only the domain inputs
// that fit a column's kind. Everything else is plain forms.
"use strict";

function showError(id, message) {
  const el = document.getElementById(id + "-error");
  const input = document.getElementById(id);
  if (el) {
    el.textContent = message;
    el.hidden = !message;
  }
  if (input) {
    if (message) {
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", id + "-error");
    } else {
      input.removeAttribute("aria-invalid");
    }
  }
}

function setupUpload(form) {
  const file = document.getElementById("file");
  const name = document.getElementById("name");
  const budget = document.getElementById("budget");
  const block = document.getElementById("upload-progress");
  const bar = document.getElementById("upload-bar");
  const status = document.getElementById("upload-status");
  const button = document.getElementById("upload-button");

  file.addEventListener("change", () => {
    showError("file", "");
    if (file.files.length && !name.value.trim()) {
      name.value = file.files[0].name.replace(/\.(csv|parquet|pq)$/i, "");
    }
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    ["file", "name", "budget"].forEach((id) => showError(id, ""));
    if (!file.files.length) {
      showError("file", "choose a .csv or .parquet file");
      file.focus();
      return;
    }
    if (!name.value.trim()) {
      showError("name", "give the dataset a name");
      name.focus();
      return;
    }
    const chosen = file.files[0];
    const query = new URLSearchParams({ name: name.value.trim(), filename: chosen.name, budget: budget.value.trim() });
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/ui/datasets/upload?" + query.toString());
    xhr.setRequestHeader("X-CSRF-Token", form.dataset.csrf);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("Content-Type", chosen.type || "application/octet-stream");
    block.hidden = false;
    button.disabled = true;
    bar.value = 0;
    status.textContent = "Uploading… 0%";
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) {
        const pct = Math.round((100 * e.loaded) / e.total);
        bar.value = pct;
        bar.textContent = pct + "%";
        status.textContent = pct < 100 ? "Uploading… " + pct + "%" : "Checking the table…";
      }
    };
    xhr.upload.onload = () => { bar.value = 100; status.textContent = "Checking the table…"; };
    xhr.onload = () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (err) { body = {}; }
      if (xhr.status === 201 && body.next) {
        status.textContent = "Done. Opening the schema review…";
        window.location.assign(body.next);
        return;
      }
      if (xhr.status === 401 && body.login) {
        window.location.assign(body.login);
        return;
      }
      block.hidden = true;
      button.disabled = false;
      const field = body.field || "file";
      let message = typeof body.detail === "string" ? body.detail : "the upload failed (" + xhr.status + ")";
      if (xhr.status === 413 && !body.detail) { message = "the file is larger than the service accepts"; }
      showError(field, "Not accepted: " + message);
      const input = document.getElementById(field);
      if (input) { input.focus(); }
    };
    xhr.onerror = () => {
      block.hidden = true;
      button.disabled = false;
      showError("file", "The connection failed during the upload; nothing was kept. Try again.");
    };
    xhr.send(chosen);
  });
}

const PHASES = {
  queued: "waiting for a worker",
  starting: "starting",
  measure: "measuring noisy statistics",
  generator: "fitting the generator",
  "dp-gan": "training against the DP-SGD discriminator",
  done: "done",
};

function setupJob(section) {
  const url = section.dataset.statusUrl;
  const final = ["succeeded", "failed", "cancelled"];
  if (final.includes(section.dataset.state)) { return; }
  const bar = document.getElementById("job-bar");
  const text = (id, value) => { const el = document.getElementById(id); if (el) { el.textContent = value; } };
  const fmt = (x) => (x >= 0.001 || x === 0 ? Number(x.toPrecision(3)).toString() : x.toExponential(2));
  const poll = () => {
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
      .then((job) => {
        const pct = Math.round(job.progress * 1000) / 10;
        bar.value = pct;
        bar.textContent = pct + "%";
        text("job-percent", Math.round(job.progress * 100) + "%");
        text("job-phase", PHASES[job.phase] || job.phase);
        text("job-epoch", job.epoch.toFixed(2));
        text("job-eps", fmt(job.epsilon_spent));
        text("job-state", job.state);
        const badge = document.getElementById("job-badge");
        if (badge) { badge.textContent = job.state; badge.className = "badge state-" + job.state; }
        if (final.includes(job.state)) {
          window.location.reload();
          return;
        }
        window.setTimeout(poll, 700);
      })
      .catch(() => window.setTimeout(poll, 3000));
  };
  window.setTimeout(poll, 800);
}

const NUMERIC = ["continuous", "integer", "datetime"];

function setupSchema(form) {
  const update = (i) => {
    const kind = document.getElementById("kind_" + i).value;
    const bounds = form.querySelector('[data-bounds="' + i + '"]');
    const cats = form.querySelector('[data-categories="' + i + '"]');
    const choice = form.querySelector('[data-domain="' + i + '"]');
    const fixed = form.querySelector('[data-fixed="' + i + '"]');
    const pub = form.querySelector('input[name="domain_' + i + '"][value="public"]').checked;
    const free = NUMERIC.includes(kind) || kind === "categorical";
    choice.hidden = !free;
    bounds.hidden = !(NUMERIC.includes(kind) && pub);
    cats.hidden = !(kind === "categorical" && pub);
    fixed.textContent = kind === "boolean" ? "yes / no: always public" :
      (kind === "identifier" || kind === "text") ? "dropped: not synthesized" : "";
    if (kind === "datetime") {
      bounds.querySelectorAll("input").forEach((el) => { el.placeholder = el.id.startsWith("low") ? "2020-01-01" : "2024-12-31"; });
    }
  };
  form.querySelectorAll("[data-kind]").forEach((select) => {
    const i = select.dataset.kind;
    select.addEventListener("change", () => update(i));
    form.querySelectorAll('input[name="domain_' + i + '"]').forEach((r) => r.addEventListener("change", () => update(i)));
    update(i);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const upload = document.getElementById("upload-form");
  if (upload) { setupUpload(upload); }
  const job = document.getElementById("job-progress");
  if (job) { setupJob(job); }
  const schema = document.getElementById("schema-form");
  if (schema) { setupSchema(schema); }
});
