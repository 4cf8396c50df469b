// One table of open alarms with acknowledgement, used by the alarms and gateway pages.
"use strict";
function alarmRows(alarms, reload) {
  const {el, iso, num} = CIM;
  return alarms.map((a) => {
    let ackCell;
    if (a.ack) ackCell = el("td", {class: "acked"}, `by ${a.ack.by} at ${iso(a.ack.at)}`);
    else if (CIM.operator) {
      ackCell = el("td", {}, el("button", {type: "button", class: "ack",
        "data-key": `${a.dev}/${a.seq}/${a.point}/${a.rule}`,
        onclick: async (ev) => {
          ev.target.disabled = true;
          try { await CIM.api("/api/v1/alarms/ack", {method: "POST",
                  body: {dev: a.dev, seq: a.seq, point: a.point, rule: a.rule}}); }
          catch (e) { alert(e.message); }
          reload();
        }}, "Acknowledge"));
    } else ackCell = el("td", {class: "unacked"}, "not yet");
    return el("tr", {class: a.ack ? "" : "alarm"},
      el("td", {}, iso(a.t)), el("td", {}, el("a", {href: `/gateway/${a.dev}`}, a.dev)),
      el("td", {}, a.point), el("td", {}, a.rule), el("td", {class: "num"}, num(a.value)),
      el("td", {}, a.msg), ackCell);
  });
}
