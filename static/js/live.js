// Live pages. Progressive enhancement only: every page works without this
// file (a running job's page then reloads itself).
//
// A page with elements marked data-live follows its event stream, at
// /events followed by the page's own address (handlers/events.go). Each
// "page" event is the whole page rendered again; its data-live elements
// that differ replace the open page's, so nothing reloads and a form being
// filled in keeps what was typed. When the page's shape changes (another
// set of forms or sections, say a VM that became protected), the page's
// main part is replaced as a whole, unless the user has typed into it:
// then its live parts still follow, and a notice offers a reload.
"use strict";
(() => {
  const main = document.querySelector("main");
  if (!window.EventSource || !main || !main.querySelector("[data-live]")) {
    return;
  }
  let typed = false;
  const noteTyping = () => { typed = true; };
  main.addEventListener("input", noteTyping, true);
  main.addEventListener("change", noteTyping, true);

  // shape is what the page offers outside its live parts: its live parts'
  // names, and the forms and named elements around them.
  const shape = (root) => {
    const names = Array.from(root.querySelectorAll("[data-live]"), (e) => e.dataset.live);
    const rest = root.cloneNode(true);
    rest.querySelectorAll("[data-live], [data-testid='flash'], [data-testid='live-notice']").forEach((e) => e.remove());
    const marks = Array.from(rest.querySelectorAll("form[action], [data-testid]"),
      (e) => e.getAttribute("action") || e.dataset.testid);
    return names.join(" ") + " | " + marks.join(" ");
  };

  const notice = (text, withReload) => {
    let p = main.querySelector("[data-testid='live-notice']");
    if (!p) {
      p = document.createElement("p");
      p.className = "flash live-notice";
      p.setAttribute("role", "status");
      p.dataset.testid = "live-notice";
      main.prepend(p);
    }
    p.textContent = text + " ";
    if (withReload) {
      const a = document.createElement("a");
      a.href = location.href;
      a.textContent = "Reload the page";
      p.append(a);
    }
  };

  const apply = (html) => {
    const doc = new DOMParser().parseFromString(html, "text/html");
    const next = doc.querySelector("main");
    if (!next) {
      return;
    }
    document.title = doc.title;
    const reshaped = shape(next) !== shape(main);
    // lifeboat.js shows times in the viewer's zone; new parts need it too.
    const localize = (el) => window.lifeboatLocalTimes && window.lifeboatLocalTimes(el);
    if (reshaped && !typed) {
      main.replaceChildren(...Array.from(next.childNodes, (n) => document.importNode(n, true)));
      localize(main);
      return;
    }
    localize(next);
    next.querySelectorAll("[data-live]").forEach((fresh) => {
      const old = main.querySelector(`[data-live="${CSS.escape(fresh.dataset.live)}"]`);
      if (old && old.outerHTML !== fresh.outerHTML) {
        old.replaceWith(document.importNode(fresh, true));
      }
    });
    if (reshaped) {
      notice("This page has changed since it loaded.", true);
    }
  };

  const stream = new EventSource("/events" + location.pathname + location.search);
  stream.addEventListener("page", (event) => apply(event.data));
  stream.addEventListener("end", () => {
    stream.close();
    notice("Live updates stopped: what this page shows is gone or cannot be read.", true);
  });
  stream.addEventListener("error", () => {
    // The browser connects again by itself after a stream ends; it gives
    // up only on an answer that is not a stream (logged out, too many
    // live pages, an error).
    if (stream.readyState === EventSource.CLOSED) {
      notice("Live updates stopped.", true);
    }
  });
})();
