// Shared by every page: the JSON API with the session's CSRF token, and small DOM helpers.
"use strict";
const CIM = (() => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const role = document.body.dataset.role;

  async function api(path, opts = {}) {
    const headers = {"Accept": "application/json"};
    if (opts.body !== undefined) {
      headers["Content-Type"] = "application/json";
      headers["X-CSRF-Token"] = csrf;
    }
    const res = await fetch(path, {method: opts.method || "GET", headers, credentials: "same-origin",
                                   body: opts.body === undefined ? undefined : JSON.stringify(opts.body)});
    if (res.status === 401) { location.href = "/login"; throw new Error("logged out"); }
    const data = await res.json();
    if (!res.ok) throw new Error(data.detail || res.statusText);
    return data;
  }

  // el("td", {class: "x", title: "y"}, "text", child, ...): text is always text, never HTML.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "onclick") node.addEventListener("click", v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) node.append(c instanceof Node ? c : String(c ?? ""));
    return node;
  }

  function iso(t) { return t == null ? "" : new Date(t * 1000).toISOString().replace(/\.\d+Z$/, "Z"); }
  function age(s) {
    if (s == null) return "";
    if (s < 90) return `${Math.round(s)} s`;
    if (s < 5400) return `${Math.round(s / 60)} min`;
    if (s < 172800) return `${Math.round(s / 3600)} h`;
    return `${Math.round(s / 86400)} d`;
  }
  function ago(t, now) { return t == null ? "never" : `${age(Math.max(0, now - t))} ago`; }
  function num(v) {
    if (v === null || v === undefined) return "";
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(6).replace(/\.?0+$/, "");
    return String(v);
  }
  function fill(tbody, rows) { tbody.replaceChildren(...rows); }

  document.getElementById("logout")?.addEventListener("click", async () => {
    try { await api("/api/v1/logout", {method: "POST", body: {}}); } finally { location.href = "/login"; }
  });
  return {api, el, iso, age, ago, num, fill, role, operator: role === "operator"};
})();
