// Keeps a dashboard page current without a reload: fetch this same URL now and then and swap
// in its <main>. Pages read fine without it; it only adds the updates.
// Cheap for the server: it says "not modified" (304) while nothing shown changed; the next
// look waits ten times as long as the last answer took (a page of 50,000 checks is not drawn
// every two seconds), and nothing is fetched while the tab is hidden.
(function () {
  "use strict";
  var main = document.getElementById("main");
  var badge = document.getElementById("live");
  if (!main || document.body.dataset.live === "off") { return; }
  var tag = null;
  var timer = null;
  function show(text) {
    if (badge) { badge.hidden = false; badge.textContent = text; }
  }
  function later(ms) {
    clearTimeout(timer);
    timer = setTimeout(refresh, ms);
  }
  function refresh() {
    if (document.hidden) { return; }
    var started = Date.now();
    var headers = { "Accept": "text/html" };
    if (tag) { headers["If-None-Match"] = tag; }
    fetch(location.href, { credentials: "same-origin", cache: "no-store", headers: headers })
      .then(function (response) {
        if (response.status === 304) { return null; }
        if (!response.ok || response.redirected) { throw new Error("HTTP " + response.status); }
        tag = response.headers.get("ETag");
        return response.text();
      })
      .then(function (text) {
        if (text !== null) {
          var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("main");
          if (fresh && fresh.innerHTML !== main.innerHTML) { main.innerHTML = fresh.innerHTML; }
        }
        show("live");
      })
      .catch(function () { show("offline, retrying"); })
      .then(function () { later(Math.max(2000, 10 * (Date.now() - started))); });
  }
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) { later(0); }
  });
  show("live");
  later(2000);
})();
