// One gateway: summary, points with last values, a zoomable chart (decimated on the server),
// open alarms, events, seq gaps and rejects.
"use strict";
(() => {
  const {api, el, iso, ago, age, num, fill} = CIM;
  const dev = document.body.dataset.dev;
  const chartBox = document.getElementById("chart");
  const pointSel = document.getElementById("point");
  let plot = null, windowS = 86400, range = null, seq = 0;

  function dl(box, pairs) {
    box.replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  }
  async function load() {
    const d = await api(`/api/v1/gateways/${encodeURIComponent(dev)}`);
    const g = d.gateway, s = d.status || {}, now = Date.now() / 1000;
    dl(document.getElementById("summary"), [
      ["State", `${g.state === "unknown" ? "no status yet" : g.state}${g.silent ? " — SILENT: " + g.silent_reason : ""}`],
      ["Last seen", `${ago(g.last_seen, now)} ${g.last_seen ? "(" + iso(g.last_seen) + ")" : ""}`],
      ["Site type", g.site_type], ["Location", g.location || ""], ["Keys", g.keys],
      ["Backlog", g.backlog == null ? "unknown (not in its status)" : `${g.backlog} readings, oldest ${age(g.oldest_unacked_s)}`],
      ["Versions", [g.sw, g.config, g.contract].map((v) => v ?? "-").join(" / ")],
      ["Clock", s.clock || ""], ["Status", s.status_at ? `${s.signed ? "signed" : "unsigned"}, received ${iso(s.status_at)}` : "none"],
    ]);
    document.getElementById("summary").dataset.state = g.state;
    fill(document.querySelector("#points tbody"), d.points.map((p) => el("tr", {},
      el("td", {}, el("a", {href: "#chart", onclick: () => { pointSel.value = p.point; range = null; draw(); }}, p.point)),
      el("td", {class: "num"}, num(p.value)), el("td", {}, p.unit || ""),
      el("td", {class: p.quality === "good" ? "" : "alarm"}, p.quality), el("td", {}, iso(p.t)))));
    const have = [...pointSel.options].map((o) => o.value);
    for (const p of d.points) if (!have.includes(p.point) && typeof p.value !== "string") pointSel.append(el("option", {value: p.point}, p.point));
    fill(document.querySelector("#alarms tbody"), alarmRows(d.open_alarms, load));
    fill(document.querySelector("#events tbody"), d.events.map((e) => el("tr", {},
      el("td", {}, iso(e.t)), el("td", {class: "num"}, e.seq), el("td", {class: `kind-${e.kind}`}, e.kind),
      el("td", {}, e.point), el("td", {}, e.rule), el("td", {class: "num"}, num(e.value)), el("td", {}, e.msg))));
    const rejects = Object.entries(d.rejects).map(([r, n]) => `${r} ${n}`).join(", ") || "none";
    const gaps = d.gaps.map(([a, b]) => a === b ? `${a}` : `${a}-${b}`).join(", ") || "none";
    dl(document.getElementById("batches"), [["Messages stored", d.messages], ["Last seq", d.last_seq],
      ["Seq gaps (not sent, not acked yet, or lost)", gaps], ["Rejected", rejects]]);
    if (!plot && pointSel.value) draw();
    document.body.dataset.loaded = String(Date.now());
  }

  async function draw() {
    const point = pointSel.value;
    if (!point) return;
    const until = range ? range[1] : Date.now() / 1000, since = range ? range[0] : until - windowS;
    const width = Math.max(200, Math.min(4000, Math.round(chartBox.clientWidth || 800)));
    const mine = ++seq;
    chartBox.dataset.state = "loading";
    const q = new URLSearchParams({point, since, until, width});
    const s = await api(`/api/v1/gateways/${encodeURIComponent(dev)}/series?${q}`);
    if (mine !== seq) return;  // a newer request is on its way
    document.getElementById("chartinfo").textContent =
      `${s.readings} readings, ${s.t.length} columns${s.t.length < s.readings ? ` (min/max per ${num(s.bucket_s)} s)` : ""}`;
    const data = [s.t, s.min, s.max];
    const opts = {
      width: chartBox.clientWidth || 800, height: 300,
      scales: {x: {time: true, min: since, max: until}},
      series: [{}, {label: `${point} min`, stroke: "#1f6feb", width: 1},
                   {label: `${point} max`, stroke: "#1f6feb", width: 1}],
      bands: [{series: [2, 1], fill: "rgba(31,111,235,0.25)"}],
      cursor: {drag: {x: true, y: false}},
      hooks: {setSelect: [(u) => {
        if (u.select.width < 3) return;
        const a = u.posToVal(u.select.left, "x"), b = u.posToVal(u.select.left + u.select.width, "x");
        range = [a, b]; draw();
      }]},
    };
    if (plot) plot.destroy();
    plot = new uPlot(opts, data, chartBox);
    plot.over.addEventListener("dblclick", () => { range = null; draw(); });
    chartBox.dataset.state = "drawn";
    chartBox.dataset.readings = String(s.readings);
    chartBox.dataset.point = point;
  }

  pointSel.addEventListener("change", () => { range = null; draw(); });
  for (const b of document.querySelectorAll("[data-window]")) {
    b.addEventListener("click", () => {
      windowS = Number(b.dataset.window); range = null;
      for (const o of document.querySelectorAll("[data-window]")) o.classList.toggle("on", o === b);
      draw();
    });
  }
  load();
  setInterval(load, 5000);
})();
