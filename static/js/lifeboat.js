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
