// The login form: posts JSON with the login page's CSRF token; a one-time password must be replaced.
"use strict";
(() => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const form = document.getElementById("login");
  const msg = document.getElementById("msg");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {user: form.user.value, password: form.password.value};
    if (!document.getElementById("newpw").hidden) body.new_password = form.new_password.value;
    msg.textContent = "";
    const res = await fetch("/api/v1/login", {method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}, body: JSON.stringify(body)});
    const data = await res.json();
    if (res.ok) { location.href = "/"; return; }
    if (data.error === "password_change_required") {
      document.getElementById("newpw").hidden = false;
      form.new_password.required = true;
      form.new_password.focus();
    }
    msg.textContent = data.detail || "could not log in";
  });
})();
