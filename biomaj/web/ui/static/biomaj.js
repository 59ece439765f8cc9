// biomaj web UI: the little JavaScript the server-rendered pages need. No framework, no build.
//  - times shown in the reader's locale (<time data-epoch>);
//  - forms of class "api" sent to the REST API as JSON with the page's CSRF token: the API's own
//    authorization and error messages, shown as the API words them;
//  - live progress pushed by the server-sent events of /api/v1/events (never polled);
//  - a session log followed as it grows; the schedules page built from /api/v1/schedules.
"use strict";

(function () {
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  // --- formatting ------------------------------------------------------------------------------

  const UNITS = ["B", "KB", "MB", "GB", "TB", "PB"];
  function humanSize(n) {
    n = Math.max(0, Number(n) || 0);
    if (n < 1024) return `${Math.round(n)} B`;
    let unit = 0;
    while (Math.round(n * 10) / 10 >= 1024 && unit < UNITS.length - 1) { n /= 1024; unit += 1; }
    return `${n.toFixed(1)} ${UNITS[unit]}`;
  }
  const humanRate = (r) => `${humanSize(r)}/s`;
  function humanDuration(s) {
    if (s == null || s < 0) return "";
    if (s < 10) return `${s.toFixed(1)} s`;
    s = Math.round(s);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }

  function localizeTimes(root) {
    (root || document).querySelectorAll("time[data-epoch]").forEach((el) => {
      const date = new Date(Number(el.dataset.epoch) * 1000);
      if (!isNaN(date)) { el.textContent = date.toLocaleString(); el.title = date.toISOString(); }
    });
  }

  // --- messages --------------------------------------------------------------------------------

  let flashTimer = null;
  // job: the id of the job the message is about (its "queued" gives way when the job ends)
  function flash(message, kind, job) {
    const box = document.getElementById("flash");
    if (!box) return;
    box.textContent = message;
    box.className = `flash ${kind || "info"}`;
    box.dataset.job = job || "";
    box.hidden = false;
    clearTimeout(flashTimer);
    if (kind !== "error") flashTimer = setTimeout(() => { box.hidden = true; }, 8000);
  }

  // A job ended: its message goes, replaced by the outcome when there is one to tell.
  // jobId null: whichever job the message is about (the page learnt from the server that none runs).
  function jobEnded(jobId, outcome, kind) {
    const box = document.getElementById("flash");
    if (!box || !box.dataset.job || (jobId && box.dataset.job !== jobId)) return;
    if (outcome) { flash(outcome, kind); return; }
    box.hidden = true;
    box.dataset.job = "";
  }

  // --- the REST API ----------------------------------------------------------------------------

  function api(method, url, body) {
    const headers = { "X-CSRF-Token": csrf(), Accept: "application/json" };
    const init = { method, headers, credentials: "same-origin" };
    if (body !== undefined) { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
    return fetch(url, init);
  }

  async function answer(response) {
    let data = {};
    try { data = await response.json(); } catch (e) { /* not JSON */ }
    if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
    if (data && data.ok === false) throw new Error(data.error || "the operation failed");
    return data;
  }

  function formJson(form) {
    const body = {};
    for (const el of form.elements) {
      if (!el.name || el.name === "csrf_token" || el.disabled) continue;
      if (el.type === "checkbox") body[el.name] = el.checked;
      else if (el.value !== "") body[el.name] = el.value;
    }
    return body;
  }

  // Replace the parts of the page named by selectors with their fresh server rendering.
  async function refresh(selectors) {
    try {
      const response = await fetch(location.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (!response.ok) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const selector of selectors) {
        const now = document.querySelector(selector);
        const next = fresh.querySelector(selector);
        if (now && next) { now.replaceWith(next); localizeTimes(next); }
      }
      document.dispatchEvent(new CustomEvent("biomaj:refreshed", { detail: fresh }));
    } catch (e) { /* the next event tries again */ }
  }
  const refreshBank = () => refresh(["#bank-data", ".facts"]);

  document.addEventListener("submit", async (event) => {
    const form = event.target.closest("form.api");
    if (!form) return;
    event.preventDefault();
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    const button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    const live = document.getElementById("live");
    if (live && form.dataset.kind === "job") delete live.dataset.submitted;  // until the API names the new job
    try {
      const method = form.dataset.method || "POST";
      const data = await answer(await api(method, form.dataset.url, method === "DELETE" ? undefined : formJson(form)));
      done(form, data);
    } catch (error) {
      flash(error.message, "error");
    } finally {
      if (button && button.isConnected) button.disabled = false;
    }
  });

  function done(form, data) {
    if (form.dataset.kind === "job") {
      const jobs = Array.isArray(data) ? data : [data];
      flash(jobs.map((j) => `${j.kind} of ${j.bank}: ${j.state} (job ${String(j.id).slice(0, 8)})`).join("; "), "info",
            jobs.length ? jobs[0].id : "");
      const live = document.getElementById("live");
      if (live && jobs.length) live.dataset.submitted = jobs[0].id;
      // a quick job (a verify of a small release) may have ended before this answer: tell its outcome
      if (live && jobs.length && live.dataset.job === jobs[0].id && FINAL.includes(live.dataset.state)) {
        const status = document.getElementById("live-status");
        jobEnded(jobs[0].id, status ? status.textContent : "", live.dataset.state === "failed" ? "error" : "info");
      }
      if (form.dataset.firstUpdate) {
        // A bank never updated has no record yet, so the event stream could not tell whether
        // its events are ours: once the job has made the record, listen again and redraw.
        delete form.dataset.firstUpdate;
        document.body.dataset.firstUpdate = "pending";
        setTimeout(async () => {
          document.dispatchEvent(new CustomEvent("biomaj:reconnect"));
          await refresh(["#bank-data", ".facts", "#actions"]);
          document.body.dataset.firstUpdate = "done";
        }, 1000);
      }
      return;
    }
    const how = form.dataset.done;
    if (how === "reload") { location.reload(); return; }
    if (how === "refresh") { flash(`${data.action || "done"}: ${data.bank || ""} ${data.release || ""}`.trim(), "info"); refreshBank(); return; }
    if (how === "show-key") {
      const box = document.getElementById("new-key");
      if (box && data.api_key) {
        document.getElementById("new-key-value").textContent = data.api_key;
        box.hidden = false;
        box.scrollIntoView({ block: "nearest" });
      }
      if (form.id === "create-user") form.reset();
      refresh(["table.users"]);
      return;
    }
    if (Array.isArray(data)) flash(`${data.length} job(s) cancelled`, "info");
    else flash(data.state ? `${data.kind} of ${data.bank}: ${data.state}` : "done", "info");
  }

  // --- live progress of a bank ------------------------------------------------------------------

  const FINAL = ["done", "failed", "cancelled"];
  const ACTIVE = ["queued", "running"];

  function drawThroughput(svg, points) {
    while (svg.lastChild && svg.lastChild.nodeName !== "title") svg.removeChild(svg.lastChild);
    const W = 640, H = 160, L = 72, B = 24, T = 10, R = 8;
    const ns = "http://www.w3.org/2000/svg";
    const add = (name, attrs, text) => {
      const el = document.createElementNS(ns, name);
      for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
      if (text != null) el.textContent = text;
      svg.appendChild(el);
      return el;
    };
    const title = svg.querySelector("title");
    const box = svg.closest("figure");
    if (box) box.hidden = !points.length;
    if (!points.length) { if (title) title.textContent = "Download throughput over time (no download yet)"; return; }
    const t0 = points[0].t, span = Math.max(1, points[points.length - 1].t - t0);
    const top = Math.max(1, ...points.map((p) => p.rate));
    const x = (t) => L + ((t - t0) / span) * (W - L - R);
    const y = (r) => T + (1 - r / top) * (H - T - B);
    add("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B });
    add("line", { class: "grid", x1: L, y1: T, x2: W - R, y2: T });
    add("text", { class: "tick", x: L - 6, y: T + 4, "text-anchor": "end" }, humanRate(top));
    add("text", { class: "tick", x: L - 6, y: H - B, "text-anchor": "end" }, "0");
    add("text", { class: "tick", x: W - R, y: H - 6, "text-anchor": "end" }, humanDuration(span));
    add("polyline", { class: "line", points: points.map((p) => `${x(p.t).toFixed(1)},${y(p.rate).toFixed(1)}`).join(" ") });
    const last = points[points.length - 1];
    if (title) title.textContent = `Download throughput over ${humanDuration(span)}: now ${humanRate(last.rate)}, at most ${humanRate(top)}`;
  }

  function startLive(live) {
    const status = document.getElementById("live-status");
    const files = document.getElementById("live-files");
    const count = document.getElementById("live-count");
    const bytes = document.getElementById("live-bytes");
    const rate = document.getElementById("live-rate");
    const chart = document.getElementById("live-chart");
    const logBox = document.getElementById("live-log");
    const follow = document.getElementById("live-follow");
    const stepStart = {};
    let points = [];

    const stepItem = (name) => live.querySelector(`li[data-step="${CSS.escape(name)}"]`);
    function setStep(name, state, at) {
      const li = stepItem(name);
      if (!li) return;
      li.className = `step ${state}`;
      li.querySelector(".state").textContent = state;
      if (state === "running") stepStart[name] = at;
      else if (stepStart[name] != null && at) li.querySelector(".dur").textContent = humanDuration(at - stepStart[name]);
    }
    function reset() {
      live.querySelector("#live-steps").setAttribute("aria-label", "Steps of the running update");
      live.querySelectorAll("li[data-step]").forEach((li) => {
        li.className = "step pending";
        li.querySelector(".state").textContent = "pending";
        li.querySelector(".dur").textContent = "";
      });
      points = [];
      drawThroughput(chart, points);
      files.value = 0; files.max = 1;
      count.textContent = "no download yet"; bytes.textContent = ""; rate.textContent = "";
      logBox.textContent = "";
    }

    function onJob(e) {
      const p = e.progress || {};
      if (e.state === "queued" && !e.step) {
        if (e.kind === "update") reset();
      } else if (e.kind === "update" && e.step) {
        if (p.task_state) setStep(e.step, p.task_state, e.at);
        else if (!stepItem(e.step) || !stepItem(e.step).classList.contains("running")) setStep(e.step, "running", e.at);
      }
      if (p.files_total != null) {
        files.max = Math.max(1, p.files_total);
        files.value = p.files_done || 0;
        count.textContent = `${p.files_done || 0}/${p.files_total} files` + (p.files_failed ? `, ${p.files_failed} failed` + (p.failures_allowed != null ? ` (${p.failures_allowed} allowed)` : "") : "");
        bytes.textContent = humanSize(p.bytes || 0);
        rate.textContent = humanRate(p.rate || 0);
        points.push({ t: e.at, rate: p.rate || 0 });
        drawThroughput(chart, points);
      }
      status.textContent = `${e.kind} ${e.state}${e.step ? ": " + e.step : ""}${e.message ? " — " + e.message : ""}`;
      live.dataset.state = e.state;
      live.dataset.kind = e.kind;
      live.dataset.job = e.job_id;
      if (FINAL.includes(e.state)) {
        if (e.state !== "done") {
          live.querySelectorAll("li.step.running").forEach((li) => setStep(li.dataset.step, e.state === "failed" ? "failed" : "cancelled", e.at));
        }
        jobEnded(e.job_id, status.textContent, e.state === "failed" ? "error" : "info");
        setTimeout(refreshBank, 300);
      }
    }

    // The server's state, fetched again (refreshBank): a job this page saw queued or running has
    // ended without the page hearing its last event (it ended before the event stream opened, or
    // while it was reconnecting). Show the panel as the server draws it now: idle, the steps of
    // the last update.
    function catchUp(fresh) {
      const now = fresh && fresh.getElementById("live");
      if (!now || ACTIVE.includes(now.dataset.state) || !ACTIVE.includes(live.dataset.state)) return;
      live.dataset.state = now.dataset.state;
      status.replaceChildren(...now.querySelector("#live-status").childNodes);
      localizeTimes(status);
      const steps = live.querySelector("#live-steps");
      steps.setAttribute("aria-label", now.querySelector("#live-steps").getAttribute("aria-label"));
      now.querySelectorAll("li[data-step]").forEach((li) => {
        const mine = stepItem(li.dataset.step);
        if (mine) mine.replaceWith(li);
      });
      jobEnded(null);
    }
    document.addEventListener("biomaj:refreshed", (ev) => catchUp(ev.detail));

    let source = null;
    function connect() {
      if (source) source.close();
      const stream = source = new EventSource(live.dataset.events, { withCredentials: true });
      stream.onopen = () => {
        live.dataset.sse = "open";
        if (ACTIVE.includes(live.dataset.state)) refreshBank();  // it may have ended before we listened
      };
      stream.onerror = () => { live.dataset.sse = stream.readyState === EventSource.CLOSED ? "closed" : "reconnecting"; };
      stream.addEventListener("job", (ev) => onJob(JSON.parse(ev.data)));
      stream.addEventListener("log", (ev) => {
        logBox.append(JSON.parse(ev.data).line + "\n");
        if (follow.checked) logBox.scrollTop = logBox.scrollHeight;
      });
      stream.addEventListener("log_end", () => { live.dataset.log = "end"; });
    }
    connect();
    document.addEventListener("biomaj:reconnect", connect);
    window.addEventListener("pagehide", () => source.close());
  }

  // --- the dashboard ---------------------------------------------------------------------------

  function startDashboard(box) {
    let pending = null;
    const source = new EventSource(box.dataset.events, { withCredentials: true });
    source.onopen = () => {
      document.body.dataset.sse = "open";
      // a job shown queued or running may have ended before the stream opened
      if (document.querySelector("#banks tr.result-queued, #banks tr.result-running")) refresh(["#banks", ".summary"]);
    };
    source.addEventListener("job", (ev) => {
      const e = JSON.parse(ev.data);
      const row = document.querySelector(`#banks tr[data-bank="${CSS.escape(e.bank)}"]`);
      const cell = row && row.querySelector(".now");
      if (cell) {
        const p = e.progress || {};
        let text = `${e.kind} ${FINAL.includes(e.state) ? e.state : e.step || e.state}`;
        if (p.files_total != null) text += `: ${p.files_done || 0}/${p.files_total} files, ${humanRate(p.rate || 0)}`;
        cell.textContent = text;
      }
      if (FINAL.includes(e.state) || !row) {
        clearTimeout(pending);
        pending = setTimeout(() => refresh(["#banks", ".summary"]), 500);
      }
    });
    window.addEventListener("pagehide", () => source.close());
  }

  // --- a session log -----------------------------------------------------------------------------

  function startLog(view) {
    const pre = document.getElementById("log");
    const box = document.getElementById("log-follow");
    const state = document.getElementById("log-state");
    let controller = null;
    pre.scrollTop = pre.scrollHeight;

    async function follow() {
      controller = new AbortController();
      view.dataset.follow = "on";
      state.textContent = "Following the log…";
      try {
        const response = await fetch(`${view.dataset.url}?follow=1`, { credentials: "same-origin", signal: controller.signal });
        if (!response.ok) { await answer(response); return; }
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let first = true;
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          const text = decoder.decode(value, { stream: true });
          if (first) { pre.textContent = text; first = false; } else pre.append(text);
          if (box.checked) pre.scrollTop = pre.scrollHeight;
        }
        state.textContent = "End of the log: no job is running on the bank.";
        view.dataset.follow = "ended";
        box.checked = false;
      } catch (error) {
        if (error.name !== "AbortError") { state.textContent = ""; flash(error.message, "error"); }
        view.dataset.follow = "off";
      }
    }
    box.addEventListener("change", () => {
      if (box.checked) follow();
      else if (controller) { controller.abort(); state.textContent = "Not following."; }
    });
    if (box.checked) follow();
  }

  // --- schedules ---------------------------------------------------------------------------------

  function startSchedules(box) {
    const status = document.getElementById("schedules-status");
    const table = document.getElementById("schedules-table");
    const editor = document.getElementById("schedule-editor");
    const form = document.getElementById("schedule-form");
    const when = (epoch) => (epoch ? new Date(epoch * 1000).toLocaleString() : "–");
    const banksOf = (s) => (Array.isArray(s.banks) ? s.banks.join(", ") : s.banks || "");

    async function load() {
      let response;
      try { response = await fetch(box.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } }); }
      catch (e) { status.textContent = `The server did not answer: ${e.message}`; return; }
      if (response.status === 404 || response.status === 405) {
        box.dataset.state = "unavailable";
        status.textContent = "No scheduler on this server: it has no schedules API (/api/v1/schedules) yet.";
        table.hidden = true; editor.hidden = true;
        return;
      }
      let data;
      try { data = await answer(response); } catch (e) { box.dataset.state = "error"; status.textContent = e.message; return; }
      const schedules = Array.isArray(data) ? data : data.schedules || [];
      const body = table.tBodies[0];
      body.replaceChildren();
      for (const s of schedules) {
        const row = body.insertRow();
        row.dataset.schedule = s.name;
        const how = s.kind === "release" ? `release check every ${s.check_in || 1} d` : s.cron || "";
        const cells = [s.name, how, banksOf(s), s.user || "", when(s.next_run), when(s.last_run), s.last_result || ""];
        const labels = ["Name", "When", "Banks", "As user", "Next run", "Last run", "Last result"];
        cells.forEach((text, i) => { const c = row.insertCell(); c.textContent = text == null ? "" : String(text); c.dataset.label = labels[i]; });
        const actions = row.insertCell();
        actions.dataset.label = "Actions";
        if (s.kind !== "release") {
          const edit = document.createElement("button");
          edit.type = "button"; edit.textContent = "Edit";
          edit.addEventListener("click", () => {
            form.elements.name.value = s.name; form.elements.cron.value = s.cron || "";
            form.elements.banks.value = banksOf(s); form.elements.user.value = s.user || "";
            form.elements.cron.focus();
          });
          actions.append(edit, " ");
        }
        const remove = document.createElement("button");
        remove.type = "button"; remove.className = "danger";
        remove.textContent = s.kind === "release" ? "Reset" : "Delete";
        remove.addEventListener("click", async () => {
          const question = s.kind === "release" ? `Reset the release checks of ${banksOf(s)}?` : `Delete the schedule ${s.name}?`;
          if (!window.confirm(question)) return;
          try { await answer(await api("DELETE", `${box.dataset.url}/${encodeURIComponent(s.name)}`)); flash(`schedule ${s.name} deleted`, "info"); load(); }
          catch (e) { flash(e.message, "error"); }
        });
        actions.append(remove);
      }
      box.dataset.state = "loaded";
      status.textContent = schedules.length ? `${schedules.length} schedule(s).` : "No schedule yet.";
      table.hidden = !schedules.length;
      editor.hidden = false;
    }

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = {
        name: form.elements.name.value.trim(),
        cron: form.elements.cron.value.trim(),
        banks: form.elements.banks.value.split(/[,\s]+/).filter(Boolean),
      };
      if (form.elements.user.value.trim()) body.user = form.elements.user.value.trim();
      try {
        const data = await answer(await api("POST", box.dataset.url, body));
        flash(`schedule ${body.name} ${data.replaced ? "replaced" : "created"}`, "info");
        load();
      } catch (e) { flash(e.message, "error"); }
    });
    load();
  }

  // --- start -------------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    localizeTimes();
    const live = document.getElementById("live");
    if (live && live.dataset.events) startLive(live);
    const banks = document.getElementById("banks");
    if (banks && banks.dataset.events) startDashboard(banks);
    const log = document.getElementById("log-view");
    if (log) startLog(log);
    const schedules = document.getElementById("schedules");
    if (schedules) startSchedules(schedules);
  });
})();
