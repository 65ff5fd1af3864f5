/* Leadwire form embed: <script src=".../v1/forms/{id}/embed.js" data-target="#where"></script> */
(function () {
  "use strict";
  var config = {{ config|tojson }};
  var script = document.currentScript;
  var target = null;
  if (script && script.getAttribute("data-target")) {
    target = document.querySelector(script.getAttribute("data-target"));
  }
  if (!target) {
    target = document.createElement("div");
    script.parentNode.insertBefore(target, script.nextSibling);
  }
  var uid = "lw-" + config.id.slice(-8) + "-";

  /* The form's look, as on the hosted page: stacked labelled fields, errors in the flow, the
     screen-reader text hidden. Every rule is inside :where(), so it weighs nothing: any rule
     of the page's own (`.lw-form label { ... }`, even `label { ... }`) overrides it. Put first
     in <head>, so the page's stylesheets also come later in the cascade. */
  var STYLE_ID = "lw-form-style";
  if (!document.getElementById(STYLE_ID)) {
    var style = document.createElement("style");
    style.id = STYLE_ID;
    style.textContent = [
      ":where(.lw-form) { max-width: 36rem; line-height: 1.5; }",
      ":where(.lw-form .lw-field) { margin: 0 0 1.25rem; }",
      ":where(.lw-form label, .lw-form legend) { display: block; font-weight: 600; }",
      ":where(.lw-form fieldset label) { font-weight: normal; }",
      ":where(.lw-form input:not([type=checkbox]):not([type=radio]):not([type=hidden]), .lw-form select, .lw-form textarea)" +
        " { display: block; width: 100%; padding: .5rem; font: inherit; border: 1px solid #6b6b6b; border-radius: 4px; box-sizing: border-box; }",
      ":where(.lw-form [aria-invalid=true]) { border: 2px solid #b00020; }",
      ":where(.lw-form .lw-error) { display: block; position: static; color: #b00020; font-weight: 600; margin: .25rem 0 0; }",
      ":where(.lw-form .lw-error[hidden]) { display: none; }",
      ":where(.lw-form .lw-req) { color: #b00020; }",
      ":where(.lw-form .lw-sr-only) { position: absolute; width: 1px; height: 1px; margin: -1px; padding: 0; border: 0; overflow: hidden; clip: rect(0 0 0 0); clip-path: inset(50%); white-space: nowrap; }",
      ":where(.lw-form button) { font: inherit; padding: .6rem 1.4rem; border: 0; border-radius: 4px; background: #1d4ed8; color: #fff; cursor: pointer; }",
      ":where(.lw-form button:focus, .lw-form input:focus, .lw-form select:focus, .lw-form textarea:focus) { outline: 3px solid #ffbf47; }"
    ].join("\n");
    document.head.insertBefore(style, document.head.firstChild);
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text) { node.textContent = text; }
    return node;
  }

  function requiredMark(label, required) {
    if (!required) { return; }
    label.appendChild(document.createTextNode(" "));
    label.appendChild(el("span", { "aria-hidden": "true", "class": "lw-req" }, "*"));
    label.appendChild(el("span", { "class": "lw-sr-only" }, " (required)"));
  }

  var form = el("form", { "novalidate": "", "class": "lw-form" });
  if (config.title) { form.appendChild(el("h2", {}, config.title)); }
  var status = el("div", { "role": "status", "aria-live": "polite", "class": "lw-status" });
  form.appendChild(status);
  var errorNodes = {};

  function fieldBox(name) {
    var box = el("div", { "class": "lw-field" });
    var error = el("p", { "id": uid + name + "-error", "class": "lw-error", "hidden": "" });
    errorNodes[name] = error;
    return [box, error];
  }

  config.fields.forEach(function (f) {
    var id = uid + f.name;
    if (f.type === "hidden") {
      form.appendChild(el("input", { "type": "hidden", "name": f.name, "value": "" }));
      return;
    }
    var parts = fieldBox(f.name), box = parts[0], error = parts[1], input;
    if (f.type === "multi-select") {
      var set = el("fieldset", { "id": id });
      var legend = el("legend", {}, f.label);
      requiredMark(legend, f.required);
      set.appendChild(legend);
      f.options.forEach(function (option) {
        var label = el("label");
        label.appendChild(el("input", { "type": "checkbox", "name": f.name, "value": option }));
        label.appendChild(document.createTextNode(" " + option));
        set.appendChild(label);
      });
      box.appendChild(set);
    } else if (f.type === "checkbox") {
      var wrap = el("label", { "for": id });
      input = el("input", { "type": "checkbox", "id": id, "name": f.name, "value": "on" });
      wrap.appendChild(input);
      wrap.appendChild(document.createTextNode(" " + f.label));
      requiredMark(wrap, f.required);
      box.appendChild(wrap);
    } else {
      var label = el("label", { "for": id }, f.label);
      requiredMark(label, f.required);
      box.appendChild(label);
      if (f.type === "textarea") {
        input = el("textarea", { "id": id, "name": f.name, "rows": "4" });
      } else if (f.type === "select") {
        input = el("select", { "id": id, "name": f.name });
        input.appendChild(el("option", { "value": "" }, "Choose…"));
        f.options.forEach(function (o) { input.appendChild(el("option", { "value": o }, o)); });
      } else {
        input = el("input", { "id": id, "name": f.name, "type": config.input_types[f.type] || "text" });
        if (f.placeholder) { input.setAttribute("placeholder", f.placeholder); }
      }
      if (f.max_length) { input.setAttribute("maxlength", String(f.max_length)); }
      box.appendChild(input);
    }
    if (input && f.required) { input.setAttribute("aria-required", "true"); }
    if (input) { input.setAttribute("aria-describedby", error.id); }
    box.appendChild(error);
    form.appendChild(box);
  });

  if (config.consent) {
    var parts = fieldBox("consent"), box = parts[0], error = parts[1];
    var wrap = el("label", { "for": uid + "consent" });
    wrap.appendChild(el("input", { "type": "checkbox", "id": uid + "consent", "name": "consent", "value": "on", "aria-describedby": error.id }));
    wrap.appendChild(document.createTextNode(" " + config.consent.text));
    requiredMark(wrap, config.consent.required);
    box.appendChild(wrap);
    box.appendChild(error);
    form.appendChild(box);
  }

  var trap = el("div", { "aria-hidden": "true", "style": "position:absolute;left:-10000px;width:1px;height:1px;overflow:hidden" });
  trap.appendChild(el("input", { "type": "text", "name": config.honeypot, "tabindex": "-1", "autocomplete": "off" }));
  form.appendChild(trap);
  var button = el("button", { "type": "submit" }, config.submit_label);
  form.appendChild(button);
  target.appendChild(form);

  function collect() {
    var data = {};
    new FormData(form).forEach(function (value, name) {
      if (typeof value !== "string") { return; }
      if (Object.prototype.hasOwnProperty.call(data, name)) {
        data[name] = [].concat(data[name], value);
      } else {
        data[name] = value;
      }
    });
    var query = new URLSearchParams(window.location.search);
    ["utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"].forEach(function (k) {
      if (query.get(k)) { data[k] = query.get(k); }
    });
    if (document.referrer) { data.referrer = document.referrer; }
    data.page_url = window.location.href;
    return data;
  }

  function showErrors(errors) {
    Object.keys(errorNodes).forEach(function (name) {
      errorNodes[name].hidden = true;
      errorNodes[name].textContent = "";
    });
    var first = null;
    (errors || []).forEach(function (e) {
      var node = errorNodes[e.field];
      if (!node) { return; }
      node.textContent = e.message;
      node.hidden = false;
      var input = document.getElementById(uid + e.field);
      if (input) {
        input.setAttribute("aria-invalid", "true");
        first = first || input;
      }
    });
    if (first) { first.focus(); }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    button.disabled = true;
    status.textContent = "Sending…";
    fetch(config.submit_url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify(collect())
    }).then(function (response) {
      return response.json().then(function (body) { return [response.status, body]; });
    }).then(function (result) {
      button.disabled = false;
      if (result[0] === 202) {
        if (config.redirect_url) { window.location.assign(config.redirect_url); return; }
        form.reset();
        showErrors([]);
        status.textContent = config.success_message;
      } else if (result[0] === 422) {
        status.textContent = "Please correct the highlighted fields.";
        showErrors(result[1].errors);
      } else {
        status.textContent = result[1].detail || "Something went wrong; please try again.";
      }
    }).catch(function () {
      button.disabled = false;
      status.textContent = "Could not send the form; please try again.";
    });
  });
}());
