// Progressive enhancement only: every page works without this file.
"use strict";
document.addEventListener("submit", (event) => {
  // Forms marked data-confirm ask before destructive actions.
  const form = event.target;
  const question = form.getAttribute && form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

// A select marked data-kind-select shows, in its form, only the fieldsets
// whose data-kind is the chosen value (the target form's Azure and
// directory fields). The hidden ones are disabled, so they are not sent.
function showKind(select) {
  const form = select.form;
  if (!form) {
    return;
  }
  for (const fs of form.querySelectorAll("fieldset[data-kind]")) {
    const on = fs.getAttribute("data-kind") === select.value;
    fs.hidden = !on;
    fs.disabled = !on;
  }
}
document.addEventListener("change", (event) => {
  if (event.target.matches && event.target.matches("select[data-kind-select]")) {
    showKind(event.target);
  }
});
document.addEventListener("DOMContentLoaded", () => {
  for (const select of document.querySelectorAll("select[data-kind-select]")) {
    showKind(select);
  }
  // The kind links are for browsers without this script.
  for (const links of document.querySelectorAll("[data-kind-links]")) {
    links.hidden = true;
  }
});
