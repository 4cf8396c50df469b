// One table of open alarms with acknowledgement, used by the alarms and gateway pages.
"use strict";
function alarmRows(alarms, reload) {
  const {el, iso, num} = CIM;
  return alarms.map((a) => {
    let ackCell;
    const key = `${a.dev}/${a.seq}/${a.point}/${a.rule}`;
    if (a.ack) ackCell = el("td", {class: "acked", "data-key": key}, `by ${a.ack.by} at ${iso(a.ack.at)}`);
    else if (CIM.operator) {
      ackCell = el("td", {}, el("button", {type: "button", class: "ack", "data-key": key,
        onclick: async (ev) => {
          ev.target.disabled = true;
          try { await CIM.api("/api/v1/alarms/ack", {method: "POST",
                  body: {dev: a.dev, seq: a.seq, point: a.point, rule: a.rule}}); }
          catch (e) { alert(e.message); }
          reload();
        }}, "Acknowledge"));
    } else ackCell = el("td", {class: "unacked", "data-key": key}, "not yet");
    return el("tr", {class: a.ack ? "" : "alarm"},
      el("td", {}, iso(a.t)), el("td", {}, el("a", {href: `/gateway/${a.dev}`}, a.dev)),
      el("td", {}, a.point), el("td", {}, a.rule), el("td", {class: "num"}, num(a.value)),
      el("td", {}, a.msg), ackCell);
  });
}

// The acknowledgement of a raise in the history, whether or not it has cleared since.
function ackCell(e) {
  if (e.kind !== "raise") return CIM.el("td", {});
  const key = `${e.dev}/${e.seq}/${e.point}/${e.rule}`;
  return e.ack ? CIM.el("td", {class: "acked", "data-key": key}, `by ${e.ack.by} at ${CIM.iso(e.ack.at)}`)
               : CIM.el("td", {class: "unacked", "data-key": key}, "not yet");
}
