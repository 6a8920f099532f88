// The rating page's script: shows a pair, unlocks the answers once both videos have played to
// the end, sends the vote (resending the same decision id when no answer came), then names the
// models. The page's state is in #rating[data-state]: loading, watching, answering, sending,
// revealed, done, waiting (no task list yet) (tests and screen readers read it). When done or
// waiting on a page that follows the newest task list, it asks again as often as the server
// looks for a new list (LOOK_AGAIN_MS, at least 1 s).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const root = $("rating");
  const base = root.dataset.base;
  const videos = { left: $("video-left"), right: $("video-right") };
  const answerButtons = Array.from(document.querySelectorAll("button[data-answer]"));
  const axes = Array.from(new Set(answerButtons.map((b) => b.dataset.axis)));
  const keys = new Map(answerButtons.map((b) => [b.dataset.key, b]));
  const submit = $("submit"), next = $("next"), play = $("play");
  let pair = null, decisionId = null, ended = {}, endedAt = null, answers = {};
  const LOOK_AGAIN_MS = Number(root.dataset.lookAgainMs) || 30000;  // the server's check interval

  const setState = (state) => { root.dataset.state = state; refresh(); };
  const state = () => root.dataset.state;
  const say = (text) => { $("status").textContent = text; };
  const bothEnded = () => Boolean(ended.left && ended.right);
  const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

  // A fresh id per pair shown: a resent vote carries the same one, so the server stores it once.
  // crypto.getRandomValues, not randomUUID: the page may be served over plain http off loopback.
  function newDecisionId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function refresh() {
    const open = state() === "answering";
    for (const b of answerButtons) {
      b.disabled = !open;
      b.setAttribute("aria-pressed", String(answers[b.dataset.axis] === b.dataset.answer));
    }
    submit.disabled = !(open && axes.every((axis) => answers[axis]));
    play.disabled = !(open || state() === "watching");
    $("watch-hint").hidden = bothEnded();
  }

  function showProgress(progress) {
    $("progress").textContent = `${progress.done} / ${progress.total}`;
  }

  // GET or POST with retries on network errors and 5xx; other answers go back to the caller.
  async function request(url, options, attempts = 6) {
    for (let attempt = 1; ; attempt++) {
      try {
        const response = await fetch(url, { cache: "no-store", ...options });
        if (response.status < 500 || attempt >= attempts) return response;
      } catch (err) {
        if (attempt >= attempts) throw err;
      }
      say(`No answer from the server, trying again (${attempt}/${attempts - 1}) ...`);
      await sleep(500 * attempt);
    }
  }

  // New pairs appear when rating_tasks writes a new list; a finished page picks them up.
  function lookAgain() {
    const was = state();
    if (was !== "done" && was !== "waiting") return;
    loadNext().catch(() => {}).finally(() => {
      if (state() === "loading") { setState(was); setTimeout(lookAgain, LOOK_AGAIN_MS); }  // no answer: later
    });
  }

  async function loadNext() {
    setState("loading");
    say("");
    const response = await request(`${base}/next`, {});
    if (!response.ok) { say(`Could not load the next pair (HTTP ${response.status}).`); return; }
    const body = await response.json();
    showProgress(body.progress);
    $("task").hidden = body.done;
    $("done").hidden = !body.done;
    if (body.done) {
      $("done-title").textContent = body.waiting ? "No pairs to rate yet." : "All pairs are rated. Thank you!";
      $("done-more").hidden = !body.follows_latest;
      setState(body.waiting ? "waiting" : "done");
      if (body.follows_latest) setTimeout(lookAgain, LOOK_AGAIN_MS);
      return;
    }
    pair = body.pair;
    decisionId = newDecisionId();
    ended = {};
    endedAt = null;
    answers = {};
    $("prompt").textContent = pair.prompt || "";
    const frame = $("conditioning");
    frame.hidden = !pair.conditioning;
    if (pair.conditioning) frame.src = pair.conditioning; else frame.removeAttribute("src");
    for (const side of ["left", "right"]) {
      $(`model-${side}`).textContent = "";
      videos[side].src = pair[side];
      videos[side].load();
    }
    submit.hidden = false;
    next.hidden = true;
    setState("watching");
  }

  function playBoth() {
    if (!["watching", "answering"].includes(state())) return;
    for (const video of Object.values(videos)) {
      video.currentTime = 0;
      video.play().catch((err) => say(`The video could not play: ${err.message}`));
    }
  }

  function choose(button) {
    if (button.disabled) return;
    answers[button.dataset.axis] = button.dataset.answer;
    refresh();
  }

  async function sendVote() {
    if (submit.disabled) return;
    const seconds = endedAt === null ? null : (performance.now() - endedAt) / 1000;
    const payload = JSON.stringify({ pair_id: pair.pair_id, decision_id: decisionId, answers, seconds });
    setState("sending");
    let response;
    try {
      response = await request(`${base}/vote`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: payload,
      });
    } catch (err) {
      say(`The vote could not be sent (${err.message}); press Enter to try again.`);
      setState("answering");
      return;
    }
    const body = await response.json().catch(() => ({}));
    // 409: a resent vote that was stored before, or a pair this rater already decided: both
    // mean the pair is done, as for a 200.
    if (response.status !== 200 && response.status !== 409) {
      say(`The vote was refused (HTTP ${response.status}): ${JSON.stringify(body.detail || body)}`);
      setState("answering");
      return;
    }
    if (body.progress) showProgress(body.progress);
    if (body.reveal) {
      $("model-left").textContent = body.reveal.left;
      $("model-right").textContent = body.reveal.right;
    }
    say(body.status === "stored" ? "" : `(${body.status.replace("_", " ")})`);
    submit.hidden = true;
    next.hidden = false;
    setState("revealed");
  }

  for (const [side, video] of Object.entries(videos)) {
    video.addEventListener("ended", () => {
      if (ended[side] || !pair) return;
      ended[side] = true;
      if (bothEnded()) {
        endedAt = performance.now();
        setState("answering");
      } else {
        refresh();
      }
    });
    video.addEventListener("error", () => {
      const code = video.error ? video.error.code : "?";
      say(`Video ${side === "left" ? "A" : "B"} could not be loaded (media error ${code}).`);
    });
  }
  for (const b of answerButtons) b.addEventListener("click", () => { choose(b); b.blur(); });
  play.addEventListener("click", () => { playBoth(); play.blur(); });
  submit.addEventListener("click", () => { submit.blur(); sendVote(); });
  next.addEventListener("click", () => { next.blur(); loadNext(); });

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.altKey || event.metaKey || event.repeat) return;
    if (event.key === " ") {
      event.preventDefault();  // not a click on whatever button has the focus, nor a scroll
      playBoth();
    } else if (event.key === "Enter") {
      event.preventDefault();
      if (state() === "answering") sendVote();
      else if (state() === "revealed") loadNext();
    } else if (keys.has(event.key)) {
      choose(keys.get(event.key));
    }
  });

  loadNext().catch((err) => say(`Could not load the next pair (${err.message}).`));
})();
