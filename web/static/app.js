// dreamrate's web home: infinite scroll, rating and choosing with the keyboard.
// No build step; every click posts JSON with the session's CSRF token.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf"]').content;

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  const data = await response.json().catch(() => ({ error: "unexpected answer" }));
  return { ok: response.ok, data };
}

function say(text, bad) {
  const status = document.getElementById("status");
  if (status) {
    status.textContent = text;
    status.classList.toggle("error", Boolean(bad));
  }
}

function bump(id, label) {
  const counter = document.getElementById(id);
  if (!counter) return;
  const n = Number(counter.dataset.count) + 1;
  counter.dataset.count = String(n);
  counter.textContent = `${n} ${label} this visit`;
}

// -- gallery: load the next cards when the end comes into view ------------------------
function watchMore(grid) {
  const sentinel = grid.querySelector(".more");
  if (!sentinel) return;
  const observer = new IntersectionObserver(async (entries) => {
    if (!entries.some((e) => e.isIntersecting)) return;
    observer.disconnect();
    const response = await fetch(sentinel.dataset.more, { credentials: "same-origin" });
    if (!response.ok) { sentinel.textContent = "Could not load more."; return; }
    const html = await response.text();
    sentinel.remove();
    // Same-origin HTML the server escaped; cards already shown are dropped (the order of
    // "best rated" is refreshed every half minute, so a page may repeat one).
    const seen = new Set([...grid.querySelectorAll(".card")].map((c) => c.dataset.image));
    const incoming = document.createElement("template");
    incoming.innerHTML = html;
    incoming.content.querySelectorAll(".card").forEach((c) => {
      if (seen.has(c.dataset.image)) c.remove();
    });
    grid.append(incoming.content);
    watchMore(grid);
  }, { rootMargin: "400px" });
  observer.observe(sentinel);
}

// -- rating one image at a time ------------------------------------------------------
function setupRater(rater) {
  const guild = rater.dataset.guild;
  let current = null;
  let busy = false;
  const image = document.getElementById("rate-image");
  const prompt = document.getElementById("rate-prompt");

  async function next() {
    const response = await fetch(`/g/${guild}/rate/next`, { credentials: "same-origin" });
    const data = await response.json();
    current = data.image;
    if (!current) {
      image.removeAttribute("src");
      prompt.textContent = "";
      rater.dataset.image = "";
      say("Nothing left to rate here. Thank you!");
      return;
    }
    image.src = current.url;
    image.alt = current.prompt;
    prompt.textContent = current.prompt;
    rater.dataset.image = String(current.id);
  }

  // One click at a time: a key pressed while the next image loads must not rate the
  // one just rated again.
  async function rate(value) {
    if (!current || busy) return;
    busy = true;
    try {
      const { ok, data } = await post(`/g/${guild}/rate`, { image_id: current.id, value });
      if (!ok) { say(data.error, true); return; }
      await next();
      say(`Rated ${value}.`);
      bump("rated-count", "rated");
    } finally {
      busy = false;
    }
  }

  rater.querySelectorAll("button[data-value]").forEach((b) =>
    b.addEventListener("click", () => rate(Number(b.dataset.value))));
  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, textarea, select")) return;
    const button = [...rater.querySelectorAll("button[data-value]")]
      .find((b) => b.title === `key ${event.key}`);
    if (button) { event.preventDefault(); rate(Number(button.dataset.value)); }
  });
  next();
}

// -- the rating buttons of one image's page ------------------------------------------
function setupImageButtons(box) {
  const guild = box.dataset.guild;
  const imageId = Number(box.dataset.image);
  const rate = async (value) => {
    const { ok, data } = await post(`/g/${guild}/rate`, { image_id: imageId, value });
    if (!ok) { say(data.error, true); return; }
    document.getElementById("mine").textContent = String(value);
    say(`Rated ${value}.`);
  };
  box.querySelectorAll("button[data-value]").forEach((b) =>
    b.addEventListener("click", () => rate(Number(b.dataset.value))));
  document.addEventListener("keydown", (event) => {
    const button = [...box.querySelectorAll("button[data-value]")]
      .find((b) => b.title === `key ${event.key}`);
    if (button) { event.preventDefault(); rate(Number(button.dataset.value)); }
  });
}

// -- choosing between two ------------------------------------------------------------
function setupChooser(chooser) {
  const guild = chooser.dataset.guild;
  let pair = null;
  let busy = false;
  const left = document.getElementById("left-image");
  const right = document.getElementById("right-image");

  async function next() {
    const response = await fetch(`/g/${guild}/compare/next`, { credentials: "same-origin" });
    const data = await response.json();
    pair = data.pair;
    chooser.dataset.pair = pair ? pair.id : "";
    if (!pair) { say("No pair to compare here yet."); return; }
    left.src = pair.left.url;
    right.src = pair.right.url;
  }

  async function choose(winner) {
    if (!pair || busy) return;
    busy = true;
    try {
      const { ok, data } = await post(`/g/${guild}/compare`, { pair: pair.id, winner });
      if (!ok) { say(data.error, true); return; }
      await next();
      say(winner === "tie" ? "Noted: can't decide." : `You chose the ${winner === "a" ? "left" : "right"} one.`);
      bump("chosen-count", "chosen");
    } finally {
      busy = false;
    }
  }

  chooser.querySelectorAll("button[data-winner]").forEach((b) =>
    b.addEventListener("click", () => choose(b.dataset.winner)));
  document.addEventListener("keydown", (event) => {
    const winner = { ArrowLeft: "a", ArrowRight: "b", "=": "tie" }[event.key];
    if (winner) { event.preventDefault(); choose(winner); }
  });
  next();
}

document.addEventListener("DOMContentLoaded", () => {
  const grid = document.getElementById("gallery");
  if (grid) watchMore(grid);
  const rater = document.getElementById("rater");
  if (rater) setupRater(rater);
  const buttons = document.querySelector(".rate-buttons[data-image]");
  if (buttons) setupImageButtons(buttons);
  const chooser = document.getElementById("chooser");
  if (chooser) setupChooser(chooser);
  const erase = document.getElementById("erase-form");
  if (erase) erase.addEventListener("submit", (event) => {
    if (!window.confirm("Erase all your ratings and choices for good?")) event.preventDefault();
  });
});
