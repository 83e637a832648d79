// The officer's screen. Everything lives in this page's memory only (no storage of any kind): the server
// sends a snapshot on (re)connection, then each change; "stop" (the app stopped) clears the page.
"use strict";

const cards = new Map(); // alert id -> {data, node}
let unit = null; // the unit's retained status, as the app last received it
let link = { connected: false };
let clearAfterS = 60;
let source = null;
// Frame time to card shown, for the benchmark: in this page's memory, read by the test driver.
window.lfrTimings = [];

const $ = (id) => document.getElementById(id);
const DECISION_WORDS = { engage: "Engage", no_action: "No action", false_alert: "False alert" };

function ago(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s ago`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min ago`;
}

function clock(epochS) {
  return new Date(epochS * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
}

function undecided(card) {
  return !(card.data.decision && card.data.decision.status === "accepted");
}

// Undecided alerts on top (newest first), then decided ones (newest first).
function order() {
  const list = [...cards.values()].sort((a, b) =>
    undecided(a) === undecided(b) ? b.data.time - a.data.time : undecided(a) ? -1 : 1);
  const ol = $("alerts");
  list.forEach((card) => ol.appendChild(card.node));
  $("empty").hidden = list.length > 0;
}

function picture(figure, b64) {
  const img = figure.querySelector("img");
  if (b64) {
    img.src = `data:image/jpeg;base64,${b64}`;
  } else {
    figure.classList.add("missing");
  }
}

function render(data) {
  const node = $("card-template").content.firstElementChild.cloneNode(true);
  node.dataset.alertId = data.id;
  node.querySelector(".subject").textContent = data.subject;
  node.querySelector(".category").textContent = data.category;
  node.querySelector(".reference").textContent = data.reference ? `Ref: ${data.reference}` : "";
  picture(node.querySelector(".live"), data.live);
  picture(node.querySelector(".context"), data.context);
  picture(node.querySelector(".watchlist"), data.watchlist);
  node.dataset.score = data.score;
  node.querySelector(".score").textContent =
    `Match ${data.score.toFixed(2)} (threshold ${data.threshold.toFixed(2)})`;
  const band = node.querySelector(".band");
  band.textContent = data.band;
  band.classList.toggle("uncalibrated", !data.calibrated);
  node.querySelector(".camera").textContent = `Camera ${data.camera}, seen at ${clock(data.time)}`;
  node.querySelectorAll(".buttons button").forEach((button) => {
    button.addEventListener("click", () => decide(data.id, button.dataset.decision));
  });
  return node;
}

function showDecision(card) {
  const d = card.data.decision;
  const answer = card.node.querySelector(".answer");
  const buttons = card.node.querySelectorAll(".buttons button");
  card.node.classList.toggle("decided", !!d && d.status === "accepted");
  card.node.classList.toggle("refused", !!d && (d.status === "refused" || d.status === "no_answer"));
  answer.className = "answer" + (d ? ` ${d.status}` : "");
  buttons.forEach((b) => {
    b.disabled = !!d && d.status === "pending";
    b.classList.toggle("chosen", !!d && d.decision === b.dataset.decision);
  });
  if (!d) { answer.textContent = ""; return; }
  const word = DECISION_WORDS[d.decision] || d.decision;
  if (d.status === "pending") answer.textContent = `${word}: waiting for the unit's answer…`;
  else if (d.status === "accepted") {
    const change = d.revision ? ` (replaces your earlier decision)` : "";
    answer.textContent = `${word}: accepted by the unit${change}. Clears in ${clearAfterS} s.`;
  } else if (d.status === "refused") answer.textContent = `${word}: REFUSED by the unit: ${d.reason}`;
  else answer.textContent = `${word}: ${d.reason}`;
}

function addAlert(data, fresh) {
  if (cards.has(data.id)) return;
  const card = { data, node: render(data) };
  cards.set(data.id, card);
  showDecision(card);
  order();
  tick();
  if (fresh) {
    notify();
    // Time from the frame to the card on screen: taken at the next frame the browser paints.
    requestAnimationFrame(() => {
      const shown = performance.timeOrigin + performance.now();
      window.lfrTimings.push({
        id: data.id,
        frame_to_card_ms: shown - data.time * 1000,
        frame_to_decoded_ms: data.decoded_at ? (data.decoded_at - data.time) * 1000 : null,
      });
    });
  }
}

let audio = null;
function notify() {
  if (navigator.vibrate) navigator.vibrate([300, 100, 300]);
  try {
    audio = audio || new AudioContext();
    if (audio.state === "suspended") audio.resume();
    const tone = audio.createOscillator();
    const gain = audio.createGain();
    tone.frequency.value = 880;
    gain.gain.value = 0.3;
    tone.connect(gain).connect(audio.destination);
    tone.start();
    tone.stop(audio.currentTime + 0.4);
  } catch (e) {
    // no sound where the device does not allow it
  }
}

async function decide(id, decision) {
  const card = cards.get(id);
  if (!card) return;
  card.data.decision = { decision, status: "pending" };
  showDecision(card);
  let result;
  try {
    const response = await fetch("decide", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ alert_id: id, decision }),
      cache: "no-store",
    });
    const body = await response.json();
    result = response.ok ? body : { decision, status: "no_answer", reason: body.error || `error ${response.status}` };
  } catch (e) {
    result = { decision, status: "no_answer", reason: "the handset app did not answer: press again" };
  }
  updateDecision(id, result);
}

function updateDecision(id, decision) {
  const card = cards.get(id);
  if (!card) return;
  card.data.decision = decision;
  showDecision(card);
  order();
}

function removeAlert(id) {
  const card = cards.get(id);
  if (!card) return;
  card.node.remove();
  cards.delete(id);
  order();
}

function clearAll() {
  cards.forEach((card) => card.node.remove());
  cards.clear();
  unit = null;
  order();
  showUnit();
}

const WATCHLIST_WORDS = {
  none: "NO WATCHLIST held",
  expired: "Watchlist EXPIRED",
  closed: "Deployment CLOSED",
  refused: "Watchlist REFUSED",
  waiting: "Watchlist waiting",
};

function showUnit() {
  const banner = $("unit");
  const state = unit ? unit.state : "unknown";
  banner.className = `banner ${state}`;
  const words = { online: "Unit ONLINE", offline: "Unit OFFLINE", stopped: "Unit STOPPED", unknown: "Unit state unknown" };
  $("unit-state").textContent = words[state] || state;
  const w = unit && unit.watchlist;
  const wl = $("watchlist");
  if (!unit) wl.textContent = "Waiting for the unit's status…";
  else if (!w) wl.textContent = "Watchlist: not known while the unit is offline";
  else if (w.state === "active") {
    const until = w.valid_until ? `, valid until ${clock(w.valid_until)}` : "";
    wl.textContent = `Watchlist active: ${w.deployment}, ${w.subjects} subject${w.subjects === 1 ? "" : "s"}${until}`;
  } else {
    const why = w.reason ? `: ${w.reason}` : "";
    wl.innerHTML = "";
    const span = document.createElement("span");
    span.className = "warn";
    span.textContent = `${WATCHLIST_WORDS[w.state] || w.state}${why}`;
    wl.appendChild(span);
  }
  const beacon = { ok: "Beacon OK", not_answering: "Beacon NOT ANSWERING", disconnected: "Beacon DISCONNECTED" };
  $("beacon").textContent = unit && unit.beacon ? beacon[unit.beacon] : unit && unit.state === "online" ? "No beacon" : "";
  $("link").textContent = link.connected ? "" : "Handset NOT CONNECTED to the broker";
  $("link").className = link.connected ? "" : "warn";
  tick();
}

function tick() {
  const now = Date.now() / 1000;
  cards.forEach((card) => { card.node.querySelector(".ago").textContent = ago(now - card.data.time); });
  if (unit) {
    const said = Date.parse(unit.time) / 1000;
    $("unit-fresh").textContent = `since ${clock(said)} (${ago(now - said)}), heard ${ago(now - unit.received_at)}`;
  } else {
    $("unit-fresh").textContent = "";
  }
}

function connect() {
  source = new EventSource("events");
  source.addEventListener("snapshot", (e) => {
    const s = JSON.parse(e.data);
    clearAll();
    clearAfterS = s.clear_after_s;
    link = s.link;
    unit = s.status;
    s.alerts.forEach((a) => addAlert(a, false));
    cards.forEach(showDecision);
    showUnit();
    document.body.dataset.ready = "1";
  });
  source.addEventListener("alert", (e) => addAlert(JSON.parse(e.data), true));
  source.addEventListener("decision", (e) => {
    const d = JSON.parse(e.data);
    updateDecision(d.id, d);
  });
  source.addEventListener("remove", (e) => removeAlert(JSON.parse(e.data).id));
  source.addEventListener("status", (e) => { unit = JSON.parse(e.data); showUnit(); });
  source.addEventListener("link", (e) => { link = JSON.parse(e.data); showUnit(); });
  source.addEventListener("stop", () => {
    source.close();
    clearAll();
    $("unit-state").textContent = "The handset app has stopped: alerts cleared";
    $("empty").textContent = "Start lfr-handset app again to see alerts.";
  });
  source.onerror = () => {
    // The app is gone or restarting: show nothing stale. EventSource reconnects by itself and gets a snapshot.
    clearAll();
    $("unit-state").textContent = "No connection to the handset app: alerts cleared, reconnecting…";
  };
}

document.addEventListener("keydown", (e) => {
  // j / k move between cards; the buttons are ordinary buttons (Tab, Enter, Space).
  if (e.key !== "j" && e.key !== "k") return;
  const nodes = [...document.querySelectorAll(".card")];
  const at = nodes.indexOf(document.activeElement && document.activeElement.closest(".card"));
  const next = nodes[Math.min(nodes.length - 1, Math.max(0, at + (e.key === "j" ? 1 : -1)))];
  if (next) next.focus();
});

setInterval(tick, 1000);
connect();
