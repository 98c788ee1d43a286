// Live updates of the console's pages: one Server-Sent Events stream says which tasks changed;
// the page then fetches its own main part again (never more than one fetch at a time), and
// once each time the stream connects, for what changed before.
"use strict";

(() => {
  const main = document.getElementById("main");
  const badge = document.getElementById("live");
  if (!main || main.dataset.live !== "on") {
    return;
  }
  const taskId = main.dataset.task || null;
  let timer = null;
  let fetching = false;
  let again = false;

  async function refresh() {
    if (fetching) {
      again = true;
      return;
    }
    fetching = true;
    try {
      const answer = await fetch(window.location.href, {
        headers: { "X-Console-Fragment": "1" },
        credentials: "same-origin",
        redirect: "manual",
      });
      if (answer.ok) {
        main.innerHTML = await answer.text();
      } else if (answer.type === "opaqueredirect" || answer.status === 401) {
        window.location.assign("/console/sign-in");
      }
    } finally {
      fetching = false;
      if (again) {
        again = false;
        schedule();
      }
    }
  }

  function schedule() {
    if (timer === null) {
      timer = window.setTimeout(() => {
        timer = null;
        refresh();
      }, 200);
    }
  }

  const source = new EventSource("/console/events");
  source.addEventListener("open", () => {
    badge.textContent = "live";
    badge.dataset.state = "live";
    // Changes between the page's rendering and this (re)connection were not streamed.
    schedule();
  });
  source.addEventListener("error", () => {
    badge.textContent = "reconnecting…";
    badge.dataset.state = "down";
  });
  source.addEventListener("change", (event) => {
    const changed = JSON.parse(event.data);
    if (taskId === null || changed.includes(taskId)) {
      schedule();
    }
  });
})();
