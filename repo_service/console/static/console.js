// The console's only script. Every page works without it; with it, an upload shows its progress and a
// campaign's page keeps itself up to date. Loaded from this origin only (the Content-Security-Policy
// allows no inline script), it reads and writes nothing but the page.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const upload = document.getElementById("upload");
  if (upload) watchUpload(upload);
  for (const region of document.querySelectorAll("[data-live]")) keepUpToDate(region);
});

// The message a console page answered with (its role="alert" paragraph), or null.
function messageOf(html) {
  const answer = new DOMParser().parseFromString(html, "text/html").querySelector(".message");
  return answer ? answer.textContent.trim() : null;
}

function watchUpload(form) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const box = document.getElementById(form.dataset.progress);
    const bar = box.querySelector("progress");
    const text = box.querySelector(".progress-text");
    const failure = document.getElementById("upload-error");
    const button = form.querySelector("button[type=submit]");
    failure.hidden = true;
    box.hidden = false;
    button.disabled = true;
    const request = new XMLHttpRequest();
    request.open("POST", form.action);
    request.setRequestHeader("X-Requested-With", "fwrepo-console");
    request.upload.addEventListener("progress", (progress) => {
      if (!progress.lengthComputable) return;
      const share = Math.floor((100 * progress.loaded) / progress.total);
      bar.value = share;
      text.textContent = `${share}% sent (${progress.loaded.toLocaleString()} of ${progress.total.toLocaleString()} bytes)`;
    });
    request.upload.addEventListener("load", () => {
      bar.value = 100;
      text.textContent = "Sent: checking and storing it…";
    });
    const fail = (message) => {
      box.hidden = true;
      button.disabled = false;
      failure.textContent = message;
      failure.hidden = false;
    };
    request.addEventListener("load", () => {
      if (request.status === 200 || request.status === 201) {
        text.textContent = request.status === 201 ? "Stored." : "Already stored with the same bytes.";
        window.location.assign(JSON.parse(request.responseText).location);
        return;
      }
      fail(messageOf(request.responseText) || `The upload failed (HTTP ${request.status}).`);
    });
    request.addEventListener("error", () => fail("The connection broke off: nothing was stored. Try again."));
    request.send(new FormData(form));
  });
}

// A region whose data-live URL answers its new content: fetched every data-interval ms until the content
// says it will not change any more (data-final on its first element).
function keepUpToDate(region) {
  const interval = Number(region.dataset.interval || 2000);
  const stamp = document.querySelector(region.dataset.stamp || "#live-stamp");
  const tick = async () => {
    // Replacing the region under a keyboard user's focus (a button, the state filter) would throw it back to
    // the top of the page: wait until the focus has left it.
    if (region.contains(document.activeElement)) {
      window.setTimeout(tick, interval);
      return;
    }
    try {
      const answer = await fetch(region.dataset.live, {credentials: "same-origin", headers: {"X-Requested-With": "fwrepo-console"}});
      if (answer.ok) {
        region.innerHTML = await answer.text();
        if (stamp) stamp.textContent = `Updated ${new Date().toLocaleTimeString()}`;
        if (region.querySelector("[data-final]")) {
          if (stamp) stamp.textContent += " (final)";
          return;
        }
      } else if (stamp) {
        stamp.textContent = `Not updated: HTTP ${answer.status}`;
      }
    } catch (error) {
      if (stamp) stamp.textContent = "Not updated: the connection failed; trying again";
    }
    window.setTimeout(tick, interval);
  };
  window.setTimeout(tick, interval);
}
