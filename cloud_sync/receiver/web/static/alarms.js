// The alarms page: open alarms across the fleet (acknowledge as operator) and recent raises/clears.
"use strict";
(() => {
  const {api, el, iso, num, fill} = CIM;
  async function load() {
    const data = await api("/api/v1/alarms");
    fill(document.querySelector("#alarms tbody"), alarmRows(data.open, load));
    fill(document.querySelector("#recent tbody"), data.recent.map((e) => el("tr", {},
      el("td", {}, iso(e.t)), el("td", {}, el("a", {href: `/gateway/${e.dev}`}, e.dev)),
      el("td", {class: `kind-${e.kind}`}, e.kind), el("td", {}, e.point), el("td", {}, e.rule),
      el("td", {class: "num"}, num(e.value)), el("td", {}, e.msg), ackCell(e))));
    document.body.dataset.loaded = String(Date.now());
  }
  load();
  setInterval(load, 5000);
})();
