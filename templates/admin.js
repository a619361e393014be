// Small improvements to the dashboard's pages. Every page works without them.
(function () {
  "use strict";

  // Live progress: while a digest sends, poll its progress and update the figures in place.
  var box = document.querySelector("[data-progress]");
  if (box && box.hasAttribute("data-active")) {
    var hint = box.querySelector(".noscript-hint");
    if (hint) hint.remove();
    var url = box.getAttribute("data-progress");
    var tick = function () {
      fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } })
        .then(function (r) {
          if (!r.ok) throw new Error("progress: " + r.status);
          return r.json();
        })
        .then(function (p) {
          box.querySelectorAll("[data-field]").forEach(function (el) {
            var v = p[el.getAttribute("data-field")];
            if (v === undefined || v === null) return;
            if (el.tagName === "PROGRESS") el.value = v;
            else el.textContent = v;
          });
          var status = box.querySelector(".status");
          if (status) status.className = "status status-" + p.status;
          if (p.active) {
            setTimeout(tick, 1000);
          } else {
            var cancel = box.querySelector("[data-cancel]");
            if (cancel) cancel.remove();
            box.setAttribute("data-done", "");
          }
        })
        .catch(function () {
          setTimeout(tick, 5000);
        });
    };
    setTimeout(tick, 1000);
  }

  // A button marked data-once sends its form once, however often it is clicked. (The server
  // also holds: the form carries one idempotency key.)
  document.querySelectorAll("form").forEach(function (form) {
    var once = form.querySelector("[data-once]");
    if (!once) return;
    form.addEventListener("submit", function (event) {
      if (form.hasAttribute("data-sent")) {
        event.preventDefault();
        return;
      }
      form.setAttribute("data-sent", "");
      once.setAttribute("aria-disabled", "true");
    });
  });
})();
