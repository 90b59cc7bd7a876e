// Placeholder until the dashboard page lands (it replaces this file): loads the instance list
// once, shows how many there are, and marks the page ready (`data-ready`, what the page tests
// wait for).
const reply = await fetch("/api/instances").catch(() => null);
const list = reply && reply.ok ? await reply.json() : null;
document.getElementById("status").textContent =
  list ? `${list.length} instance(s)` : "open the dashboard through serena-tray open";
document.documentElement.dataset.ready = "1";
