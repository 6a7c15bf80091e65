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

// Times are written in UTC ("2026-03-09 10:00:00 UTC", or RFC 3339 in
// messages); with this script they read in the viewer's time zone, the
// UTC time on hover. Call lifeboatLocalTimes(element) after changing a
// part of the page.
const utcTime = /\b(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(?:\.\d+)?(?: UTC|Z)/g;
const localFormat = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric",
  hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZoneName: "short",
});
function lifeboatLocalTimes(root) {
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {
    acceptNode(node) {
      const p = node.parentElement;
      if (!p || p.closest("script, style, textarea, time, code, pre, [data-utc]")) {
        return NodeFilter.FILTER_REJECT;
      }
      utcTime.lastIndex = 0;
      return utcTime.test(node.nodeValue) ? NodeFilter.FILTER_ACCEPT : NodeFilter.FILTER_REJECT;
    },
  });
  const nodes = [];
  while (walker.nextNode()) {
    nodes.push(walker.currentNode);
  }
  for (const node of nodes) {
    const text = node.nodeValue;
    const frag = document.createDocumentFragment();
    let last = 0;
    utcTime.lastIndex = 0;
    for (let m; (m = utcTime.exec(text)) !== null; ) {
      const when = new Date(m[1] + "T" + m[2] + "Z");
      if (isNaN(when)) {
        continue;
      }
      frag.append(text.slice(last, m.index));
      const t = document.createElement("time");
      t.dateTime = when.toISOString();
      t.title = m[1] + " " + m[2] + " UTC";
      t.textContent = localFormat.format(when);
      frag.append(t);
      last = m.index + m[0].length;
    }
    frag.append(text.slice(last));
    node.replaceWith(frag);
  }
}
window.lifeboatLocalTimes = lifeboatLocalTimes;
document.addEventListener("DOMContentLoaded", () => lifeboatLocalTimes(document.body));
