// idr console: live figures and the per-minute chart (dashboard), batch upload progress.
// No inline scripts (the CSP forbids them); data comes from data- attributes and JSON endpoints.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";

  const W = 600, H = 160, padB = 18, padT = 8;

  // One bar per point of series (height p[1], on a scale of max) in svg, its <title> kept:
  // the scale's two labels, each bar's tooltip tip(p), the base line when axis is set, and
  // whatever else a point shows: each(p, i, bw, text).
  function drawBars(svg, series, { max, padL, axis, tip, each }) {
    while (svg.lastChild && svg.lastChild.nodeName !== "title") svg.removeChild(svg.lastChild);
    const bw = (W - padL) / Math.max(1, series.length);
    if (axis) {
      const line = document.createElementNS(SVG, "line");
      line.setAttribute("x1", padL); line.setAttribute("x2", W);
      line.setAttribute("y1", H - padB); line.setAttribute("y2", H - padB);
      line.setAttribute("class", "axis");
      svg.appendChild(line);
    }
    const text = (x, y, s, anchor) => {
      const t = document.createElementNS(SVG, "text");
      t.setAttribute("x", x); t.setAttribute("y", y);
      if (anchor) t.setAttribute("text-anchor", anchor);
      t.textContent = s;
      svg.appendChild(t);
    };
    text(padL - 4, padT + 8, String(max), "end");
    text(padL - 4, H - padB, "0", "end");
    series.forEach((p, i) => {
      const h = ((H - padB - padT) * p[1]) / max;
      const r = document.createElementNS(SVG, "rect");
      r.setAttribute("x", (padL + i * bw + 1).toFixed(1));
      r.setAttribute("y", (H - padB - h).toFixed(1));
      r.setAttribute("width", Math.max(1, bw - 2).toFixed(1));
      r.setAttribute("height", h.toFixed(1));
      r.setAttribute("class", "bar");
      const title = document.createElementNS(SVG, "title");
      title.textContent = tip(p);
      r.appendChild(title);
      svg.appendChild(r);
      each(p, i, bw, text);
    });
  }

  function drawChart(svg, series) {
    // series: [[minuteStartUnixSeconds, count], ...] oldest first
    const padL = 34;
    const time = (p, opts) => new Date(p[0] * 1000).toLocaleTimeString([], opts);
    drawBars(svg, series, {
      max: Math.max(1, ...series.map((p) => p[1])),
      padL,
      axis: true,
      tip: (p) => time(p) + ": " + p[1],
      each: (p, i, bw, text) => {
        if (i % 10 === 0) text(padL + i * bw, H - 4, time(p, { hour: "2-digit", minute: "2-digit" }));
      },
    });
    const cap = document.getElementById("chart-caption");
    if (cap) {
      const last = series.length ? series[series.length - 1][1] : 0;
      const sum = series.reduce((a, p) => a + p[1], 0);
      cap.textContent = "Σ " + sum + " · " + last + " / min";
    }
  }

  function setText(id, v) {
    const el = document.getElementById(id);
    if (el && v !== undefined && v !== null) el.textContent = String(v);
  }

  function dashboard() {
    const fig = document.getElementById("figures");
    const svg = document.getElementById("chart");
    if (!fig || !svg) return;
    try { drawChart(svg, JSON.parse(svg.dataset.series || "[]")); } catch (e) { /* keep the page usable */ }
    const url = fig.dataset.statsUrl;
    async function poll() {
      try {
        const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
        if (r.ok) {
          const s = await r.json();
          setText("f-registered", s.registered);
          setText("f-today", s.resolutions_today);
          setText("f-total", s.resolutions_total);
          setText("f-secondary", s.secondary);
          setText("f-enterprise", s.enterprise);
          setText("f-errors", s.errors);
          if (s.replication) {
            setText("r-epoch", s.replication.epoch);
            setText("r-lag", s.replication.lag_entries + " / " + s.replication.lag_seconds + " s");
          }
          drawChart(svg, s.per_minute || []);
          setText("updated", new Date(s.time * 1000).toLocaleTimeString());
        }
      } catch (e) { /* the node may be restarting; try again */ }
      setTimeout(poll, 5000);
    }
    setTimeout(poll, 1000);
  }

  function drawDays(svg, days, resolutions, registered) {
    // one bar per day: resolutions; registrations as a dot on the same scale
    const series = days.map((d, i) => [d, resolutions[i] || 0, registered[i] || 0]);
    const padL = 44;
    const max = Math.max(1, ...series.map((p) => Math.max(p[1], p[2])));
    drawBars(svg, series, {
      max,
      padL,
      axis: false,
      tip: (p) => p[0] + ": " + p[1] + " / " + p[2],
      each: (p, i, bw, text) => {
        const c = document.createElementNS(SVG, "circle");
        c.setAttribute("cx", (padL + i * bw + bw / 2).toFixed(1));
        c.setAttribute("cy", (H - padB - ((H - padB - padT) * p[2]) / max).toFixed(1));
        c.setAttribute("r", "3");
        c.setAttribute("class", "dot");
        svg.appendChild(c);
        if (i === 0 || i === series.length - 1) text(padL + i * bw + bw / 2, H - 4, p[0].slice(5), "middle");
      },
    });
  }

  function federation() {
    const box = document.getElementById("federation");
    const svg = document.getElementById("fed-trend");
    if (!box || !svg) return;
    const draw = (days, res, reg) => { try { drawDays(svg, days, res, reg); } catch (e) { /* keep the page */ } };
    draw(JSON.parse(svg.dataset.days || "[]"), JSON.parse(svg.dataset.series || "[]"), JSON.parse(svg.dataset.registered || "[]"));
    async function poll() {
      try {
        const r = await fetch(box.dataset.statsUrl, { credentials: "same-origin", cache: "no-store" });
        if (r.ok) {
          const s = await r.json();
          setText("fed-secondary", s.secondary_nodes);
          setText("fed-enterprise", s.enterprise_nodes);
          setText("fed-registered", s.registered);
          setText("fed-resolutions", s.resolutions);
          draw(s.days.map((d) => d.day), s.days.map((d) => d.resolutions), s.days.map((d) => d.registered));
        }
      } catch (e) { /* the node may be restarting; try again */ }
      setTimeout(poll, 5000);
    }
    setTimeout(poll, 1000);
  }

  function batch() {
    const form = document.getElementById("batch-form");
    if (!form) return;
    const sel = document.getElementById("batch-template");
    const hdr = document.getElementById("batch-header");
    const showHeader = () => { const o = sel.options[sel.selectedIndex]; if (o && hdr) hdr.textContent = o.dataset.header; };
    sel.addEventListener("change", showHeader);
    showHeader();
    const box = document.getElementById("batch-status");
    const bar = document.getElementById("batch-progress");
    const err = document.getElementById("batch-error");
    const report = document.getElementById("batch-report");
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      box.hidden = false; err.hidden = true; report.hidden = true;
      document.getElementById("batch-finished").hidden = true;
      let job;
      try {
        const r = await fetch(form.action, { method: "POST", body: new FormData(form), credentials: "same-origin" });
        job = await r.json();
        if (!r.ok) throw new Error(job.error || r.statusText);
      } catch (e) {
        err.textContent = e.message; err.hidden = false; return;
      }
      const show = (j) => {
        bar.max = Math.max(1, j.total); bar.value = j.done;
        setText("batch-done", j.done); setText("batch-total", j.total);
        setText("batch-ok", j.ok); setText("batch-failed", j.failed);
      };
      show(job);
      const tick = async () => {
        const r = await fetch("/console/api/jobs/" + encodeURIComponent(job.id), { credentials: "same-origin", cache: "no-store" });
        const j = await r.json();
        if (!r.ok) { err.textContent = j.error || r.statusText; err.hidden = false; return; }
        show(j);
        if (j.finished) {
          document.getElementById("batch-finished").hidden = false;
          if (j.failed > 0) { report.href = "/console/batch/" + encodeURIComponent(j.id) + "/errors.csv"; report.hidden = false; }
        } else {
          setTimeout(tick, 300);
        }
      };
      setTimeout(tick, 200);
    });
  }

  document.addEventListener("DOMContentLoaded", () => { dashboard(); federation(); batch(); });
})();
