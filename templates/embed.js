// Bulletin's signup box, improved where script runs: the form posts with fetch and its messages
// appear in the page; without script it is an ordinary form that posts to Bulletin's own page.
// Self-hosted, no dependencies. Marks: form[data-bulletin], and an element [data-bulletin-message]
// inside it for the message (one is added after the button when there is none).
(function () {
  "use strict";
  var THANKS = "Thank you! We've sent you a confirmation email.";
  var TROUBLE = "Something went wrong. Please try again in a moment.";

  function messageBox(form) {
    var box = form.querySelector("[data-bulletin-message]");
    if (!box) {
      box = document.createElement("p");
      box.setAttribute("data-bulletin-message", "");
      form.appendChild(box);
    }
    box.setAttribute("role", "alert");
    return box;
  }

  function show(form, text, field) {
    var box = messageBox(form);
    var input = form.querySelector('[name="email"]');
    box.textContent = text;
    box.hidden = false;
    if (input) {
      if (!box.id) box.id = "bulletin-message-" + Math.random().toString(36).slice(2);
      input.setAttribute("aria-invalid", field === "email" ? "true" : "false");
      input.setAttribute("aria-describedby", box.id);
      if (field === "email") input.focus();
    }
  }

  function thank(form) {
    var done = document.createElement("p");
    done.setAttribute("role", "status");
    done.setAttribute("data-bulletin-thanks", "");
    done.className = form.className;
    done.textContent = THANKS;
    form.replaceWith(done);
  }

  function body(form) {
    var data = { email: "", lists: [], website: "" };
    var fields = form.elements;
    for (var i = 0; i < fields.length; i++) {
      var f = fields[i];
      if (!f.name || ((f.type === "checkbox" || f.type === "radio") && !f.checked)) continue;
      if (f.name === "lists") data.lists.push(f.value);
      else if (f.name === "email" || f.name === "website") data[f.name] = f.value;
    }
    return JSON.stringify(data);
  }

  function enhance(form) {
    // Bulletin's messages say what is wrong; the browser's own bubbles would not reach them.
    form.noValidate = true;
    form.addEventListener("submit", function (event) {
      if (!window.fetch) return;
      event.preventDefault();
      var button = form.querySelector('[type="submit"]');
      if (button) button.disabled = true;
      fetch(form.action, {
        method: "POST",
        mode: "cors",
        credentials: "omit",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: body(form)
      })
        .then(function (response) {
          return response.json().then(function (answer) {
            if (response.ok) return thank(form);
            var error = (answer && answer.error) || {};
            show(form, error.message || TROUBLE, error.field);
          });
        })
        .catch(function () {
          // No answer it could read (offline, or this site is not allowed here): post as the
          // page would without script, to Bulletin's own page.
          form.submit();
        })
        .then(function () {
          if (button) button.disabled = false;
        });
    });
  }

  function start() {
    var forms = document.querySelectorAll("form[data-bulletin]");
    for (var i = 0; i < forms.length; i++) enhance(forms[i]);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
