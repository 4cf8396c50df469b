// The fleet page: every enrolled gateway, silent ones first; sort by any column, filter, refresh.
"use strict";
(() => {
  const {api, el, iso, ago, age, fill} = CIM;
  let rows = [], now = 0, sortKey = "silent", sortDir = -1;
  const tbody = document.querySelector("#fleet tbody");
  const q = (id) => document.getElementById(id);

  function cmp(a, b) {
    let x = a[sortKey], y = b[sortKey];
    if (x === y) return a.dev < b.dev ? -1 : 1;
    if (x === null || x === undefined) return 1;
    if (y === null || y === undefined) return -1;
    return (x < y ? -1 : 1) * sortDir;
  }
  function render() {
    const type = q("site_type").value, state = q("state").value, text = q("search").value.toLowerCase();
    const shown = rows.filter((r) => (!type || r.site_type === type)
      && (!state || r.state === state || (state === "silent" && r.silent))
      && (!text || r.dev.includes(text) || (r.location || "").toLowerCase().includes(text)));
    shown.sort(cmp);
    fill(tbody, shown.map((r) => el("tr", {"data-dev": r.dev, "data-state": r.state, class: r.silent ? "silent" : ""},
      el("td", {title: r.silent_reason}, r.silent ? "!" : ""),
      el("td", {}, el("a", {href: `/gateway/${r.dev}`}, r.dev)),
      el("td", {}, r.site_type), el("td", {}, r.location || ""),
      el("td", {class: `state state-${r.state}`}, r.state === "unknown" ? "no status" : r.state),
      el("td", {title: iso(r.last_seen)}, ago(r.last_seen, now), r.silent ? el("div", {class: "why"}, r.silent_reason) : ""),
      el("td", {class: "num"}, r.backlog ?? ""), el("td", {class: "num"}, age(r.oldest_unacked_s)),
      el("td", {}, [r.sw, r.config, r.contract].map((v) => v ?? "-").join(" / ")),
      el("td", {class: r.unacked_alarms ? "num alarm" : "num"}, r.open_alarms
         ? `${r.open_alarms}${r.unacked_alarms ? ` (${r.unacked_alarms} unacked)` : ""}` : ""))));
    const silent = rows.filter((r) => r.silent).length;
    q("summary").textContent = `${shown.length} of ${rows.length} gateways shown; ${silent} silent`;
  }
  async function load() {
    const data = await api("/api/v1/fleet");
    rows = data.gateways; now = data.generated;
    const sel = q("site_type"), have = new Set([...sel.options].map((o) => o.value));
    for (const t of data.site_types) if (!have.has(t)) sel.append(el("option", {value: t}, t));
    render();
    document.body.dataset.loaded = String(Date.now());
  }
  for (const th of document.querySelectorAll("#fleet th[data-key]")) {
    th.addEventListener("click", () => {
      const key = th.dataset.key;
      sortDir = key === sortKey ? -sortDir : 1; sortKey = key;
      for (const o of document.querySelectorAll("#fleet th")) o.classList.remove("asc", "desc");
      th.classList.add(sortDir > 0 ? "asc" : "desc");
      render();
    });
  }
  for (const id of ["site_type", "state", "search"]) q(id).addEventListener("input", render);
  load();
  setInterval(load, 3000);
})();
