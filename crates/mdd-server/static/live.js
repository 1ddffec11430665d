// Keeps a dashboard page current without a reload: every two seconds, fetch this same URL
// and swap in its <main>. Pages read fine without it; it only adds the updates.
(function () {
  "use strict";
  var main = document.getElementById("main");
  var badge = document.getElementById("live");
  if (!main || document.body.dataset.live === "off") { return; }
  function show(text) {
    if (badge) { badge.hidden = false; badge.textContent = text; }
  }
  function refresh() {
    fetch(location.href, { credentials: "same-origin", cache: "no-store", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (!response.ok || response.redirected) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("main");
        if (fresh && fresh.innerHTML !== main.innerHTML) { main.innerHTML = fresh.innerHTML; }
        show("live");
      })
      .catch(function () { show("offline, retrying"); })
      .then(function () { setTimeout(refresh, 2000); });
  }
  show("live");
  setTimeout(refresh, 2000);
})();
