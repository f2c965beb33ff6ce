// The kiosk's screen. The server (kiosk/ui/hub.py) sends the whole state over /ws on every
// change; this script renders it in the chosen language and sends back one action at a
// time. The PIN never passes through here as a value: each key press is sent on its own
// and the state brings back only how many digits the keypad holds.
"use strict";

const S = {
  state: null, lang: null, langs: [], cat: {}, fallback: {}, ws: null, muted: false,
  key: "", warnLeft: 0, warnTimer: null, remindTimer: null, lastScreen: "", copies: 1,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c) e.append(c);
  return e;
}

function t(key, params) {
  let s = S.cat[key];
  if (s === undefined) s = S.fallback[key];
  if (s === undefined) return key;
  for (const [k, v] of Object.entries(params || {})) s = s.split("{" + k + "}").join(String(v));
  return s;
}
const has = (key) => S.cat[key] !== undefined || S.fallback[key] !== undefined;
const yen = (n) => t("yen", { n: Number(n).toLocaleString("ja-JP") });
const copiesText = (n) => (n === 1 ? t("copies.one") : t("copies.count", { n }));

function reasonText(code) {
  if (!code) return "";
  if (has("reason." + code)) return t("reason." + code);
  const head = code.split(":")[0];
  return has("reason." + head) ? t("reason." + head) : t("reason.other");
}
const docName = (d) => (has("doc." + d) ? t("doc." + d) : d);

async function loadLang(lang) {
  const r = await fetch("/messages/" + encodeURIComponent(lang) + ".json");
  if (!r.ok) return;
  S.cat = await r.json();
  S.lang = lang;
  document.documentElement.lang = lang;
  document.title = t("app.title");
}

function send(op, extra) {
  if (S.ws && S.ws.readyState === WebSocket.OPEN) S.ws.send(JSON.stringify({ op, ...extra }));
}

// -- speech -------------------------------------------------------------------------------
// Spoken guidance from clips the kiosk rendered offline (kiosk/ui/voice.py): the page asks
// for catalogue keys, one after the other; a key without a clip (404) is skipped. A Linux
// kiosk's browser has no speechSynthesis voices, so nothing here depends on them.

const audio = new Audio();
audio.preload = "auto";
S.queue = [];
S.played = []; // the keys started, newest last (the browser tests read it)

function nextClip() {
  if (S.muted || !S.queue.length) return;
  const key = S.queue.shift();
  audio.src = "/voice/" + encodeURIComponent(S.lang) + "/" + encodeURIComponent(key) + ".wav";
  S.played.push(key);
  if (S.played.length > 50) S.played.shift();
  const p = audio.play();
  if (p && p.catch) p.catch(() => { /* refused (no clip, autoplay): the screen says it */ });
}
audio.addEventListener("ended", nextClip);
audio.addEventListener("error", nextClip);

function speakKeys(keys) {
  if (S.muted) return;
  stopSpeech();
  S.queue = keys.filter((k) => has(k));
  nextClip();
}

function stopSpeech() {
  S.queue = [];
  audio.pause();
  audio.removeAttribute("src");
  audio.load(); // drops what was buffered: nothing more comes out
}

function setMuted(m) {
  S.muted = m;
  const b = $("mute");
  b.setAttribute("aria-pressed", m ? "true" : "false");
  b.textContent = t(m ? "mute.on" : "mute.off");
  if (m) stopSpeech();
}

// What a screen says: its title, then its guidance; the card panel's words where the
// card is asked for.
function screenKeys(st) {
  const name = st.screen;
  const keys = ["screen." + name + ".title", "screen." + name + ".text"];
  if (name === "notice") keys.push("notice.1", "notice.2", "notice.3", "notice.4", "notice.5");
  if (st.take_card) keys.push("card.panel");
  return keys;
}

// -- the screens --------------------------------------------------------------------------

const CANCELLABLE = new Set(["card-out", "copies", "pin", "pin-wrong", "pin-incomplete", "menu", "item-refused",
  "options", "quote", "payment", "new-password", "pin-again"]);
const PIN_SCREENS = new Set(["pin", "pin-wrong", "pin-incomplete", "pin-again"]);
const NOTICES = new Set(["refused", "cancelled", "not-issued", "pin-locked"]);

function title(key, params) {
  return el("h1", { id: "screen-title", tabindex: "-1", text: t(key, params) });
}
const lead = (text) => el("p", { class: "lead", text });

// Where the card is: the reader's slot with the card in it (an arrow shows which way).
function cardPicture(out) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 160 100");
  svg.setAttribute("class", "card-picture");
  svg.setAttribute("aria-hidden", "true");
  const add = (tag, attrs) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    svg.append(e);
  };
  add("rect", { x: 10, y: 55, width: 140, height: 35, rx: 6, fill: "#3b4a5a" }); // the reader
  add("rect", { x: 30, y: 58, width: 100, height: 6, rx: 3, fill: "#0d1620" }); // its slot
  add("rect", { x: 45, y: out ? 6 : 22, width: 70, height: 44, rx: 5, fill: "#f2c94c",
    stroke: "#1a1a1a", "stroke-width": 2 }); // the card
  add("rect", { x: 52, y: out ? 14 : 30, width: 16, height: 20, rx: 2, fill: "#ffffff" });
  add("path", { d: out ? "M140 48 L140 12 M132 20 L140 12 L148 20"
    : "M140 10 L140 46 M132 38 L140 46 L148 38", stroke: "#a3001b", "stroke-width": 5,
    fill: "none", "stroke-linecap": "round" });
  return svg;
}

function cardPanel(st) {
  return el("div", { class: "card-panel", id: "card-panel", role: "alert" },
    cardPicture(true),
    el("div", {}, el("strong", { text: t("card.panel") }),
      el("span", { text: t("card.panel_text") })));
}

function actions(st, ...buttons) {
  const row = el("div", { class: "actions" }, ...buttons);
  if (CANCELLABLE.has(st.screen) && st.in_session) {
    row.append(el("button", { type: "button", class: "cancel", id: "btn-cancel",
      text: t("btn.cancel"), onclick: () => askCancel() }));
  }
  return row;
}

// Cancel: with money inserted it asks once (the money goes back), otherwise at once.
function askCancel() {
  const st = S.state;
  if (!st || st.screen !== "payment" || !(st.credited > 0)) { send("cancel"); return; }
  const box = $("confirm");
  $("confirm-title").textContent = t("confirm.title");
  $("confirm-text").textContent = t("confirm.text", { n: Number(st.credited).toLocaleString("ja-JP") });
  $("confirm-yes").textContent = t("btn.cancel_yes");
  $("confirm-no").textContent = t("btn.continue");
  box.hidden = false;
  modal(true);
  $("confirm-no").focus();
}

function closeConfirm(cancel) {
  $("confirm").hidden = true;
  modal(false);
  if (cancel) send("cancel");
  else { const h = $("screen-title"); if (h) h.focus(); }
}

function figures(rows) {
  const dl = el("dl", { class: "figures" });
  for (const [label, value, id] of rows) {
    dl.append(el("dt", { text: label }), el("dd", { id, text: value }));
  }
  return dl;
}

function pinScreen(st) {
  const wrong = st.screen === "pin-wrong";
  const again = st.screen === "pin-again";
  const head = title(wrong ? "screen.pin-wrong.title" : st.screen === "pin-incomplete"
    ? "screen.pin-incomplete.title" : again ? "screen.pin-again.title" : "screen.pin.title");
  if (wrong || st.screen === "pin-incomplete") head.classList.add("error");
  const col = el("div", { class: "col" }, head,
    lead(wrong ? t("screen.pin-wrong.text", { n: st.pin.tries_left })
      : st.screen === "pin-incomplete" ? t("screen.pin-incomplete.text")
        : again ? t("screen.pin-again.text") : t("screen.pin.text")));
  if (!wrong && st.pin.tries_left > 0 && st.pin.tries_left < 3) {
    col.append(el("p", { class: "reason", text: t("pin.tries", { n: st.pin.tries_left }) }));
  }
  col.append(el("div", { class: "pin-dots", id: "pin-dots", "aria-hidden": "true" }));
  col.append(el("p", { id: "pin-count", class: "note", "aria-live": "polite" }));
  const pad = el("div", { class: "keypad", role: "group", "aria-label": t("pin.keypad") });
  for (const d of ["1", "2", "3", "4", "5", "6", "7", "8", "9"]) {
    pad.append(el("button", { type: "button", "data-key": "d", id: "key-" + d,
      onclick: () => send("key", { key: d }), text: d }));
  }
  pad.append(el("button", { type: "button", class: "small", id: "key-clear",
    onclick: () => send("key", { key: "clear" }), text: t("btn.clear") }));
  pad.append(el("button", { type: "button", "data-key": "d", id: "key-0",
    onclick: () => send("key", { key: "0" }), text: "0" }));
  pad.append(el("button", { type: "button", class: "small", id: "key-back",
    onclick: () => send("key", { key: "back" }), text: t("btn.backspace") }));
  // 確定 right under the keys, where the finger already is; やめる on the other side.
  pad.append(el("button", { type: "button", class: "primary wide", id: "key-ok",
    onclick: () => send("key", { key: "ok" }), text: t("btn.ok") }));
  col.append(actions(st));
  return [el("div", { class: "split" }, col, pad)];
}

function menuScreen(st) {
  const list = el("ul", { class: "menu" });
  for (const item of st.menu) {
    const rid = "refusal-" + item.doc;
    const label = el("span", { class: "name", text: docName(item.doc) });
    if (item.refusal) {
      label.append(el("span", { class: "refusal", id: rid,
        text: t("menu.unavailable_reason", { reason: reasonText(item.refusal) }) }));
    }
    list.append(el("li", {}, el("button", {
      type: "button", class: item.refusal ? "refused" : "", "data-doc": item.doc,
      onclick: () => send("choose", { item: item.doc }),
    }, label, el("span", { class: "fee", text: item.refusal ? "" : yen(item.fee) }))));
  }
  if (st.reset_offered) {
    list.append(el("li", {}, el("button", { type: "button", "data-doc": "pin-reset",
      onclick: () => send("choose", { item: "pin-reset" }) },
    el("span", { class: "name", text: docName("pin-reset") }), el("span", { class: "fee" }))));
  }
  const head = [title("screen.menu.title")];
  if (st.municipality) {
    head.push(el("p", { class: "lead", id: "municipality",
      text: t("menu.municipality", { name: st.municipality }) }));
  }
  return [...head, lead(t("screen.menu.text")), list, actions(st)];
}

// The PIN-reset path: the reservation number from the app and the new signature password,
// typed twice. They leave the page once, on "Next", and the fields are emptied at once;
// the server answers only with the kind of a mistake, never with what was typed.
function newPasswordScreen(st) {
  const field = (id, key, type, extra) => el("div", { class: "field" },
    el("label", { for: id, text: t(key) }),
    el("input", { id, type, autocomplete: "off", autocapitalize: "characters",
      spellcheck: "false", ...(extra || {}) }));
  const form = el("form", { id: "reset-form", novalidate: true },
    el("div", { class: "fields" },
      field("reset-reservation", "reset.reservation", "text", { inputmode: "latin" }),
      el("p", { class: "note", id: "reset-rule", text: t("reset.rule") }),
      field("reset-password", "reset.password", "password",
        { "aria-describedby": "reset-rule", maxlength: "16" }),
      field("reset-confirm", "reset.confirm", "password", { maxlength: "16" })));
  const submit = (ev) => {
    if (ev) ev.preventDefault();
    const get = (id) => { const v = $(id).value; $(id).value = ""; return v; };
    send("reset", { reservation: get("reset-reservation"), password: get("reset-password"),
      confirm: get("reset-confirm") });
  };
  form.addEventListener("submit", submit);
  const parts = [title("screen.new-password.title"), lead(t("screen.new-password.text"))];
  if (st.reset_error) {
    parts.push(el("p", { class: "reason", id: "reset-error", role: "alert",
      text: t("reset.error." + st.reset_error) }));
  }
  form.append(actions(st, el("button", { type: "submit", class: "primary", id: "btn-reset-next",
    text: t("btn.next") })));
  parts.push(form);
  return parts;
}

// Options that pick one of two values (the first is the default; ticking the option
// picks the second): shown as the two choices they are, each saying what prints.
const CHOICES = { kind: ["full", "individual"], year: ["last", "before_last"] };

function optionLabel(st, o, v) {
  if (o === "year") {
    const y = st.tax_years[v];
    return t("opt.year." + v, { year: y, fy: y + 1 });
  }
  return v === undefined ? (has("opt." + o) ? t("opt." + o) : o) : t("opt." + o + "." + v);
}

function optionsScreen(st) {
  const form = el("fieldset", { class: "options" },
    el("legend", { class: "sr-only", text: t("screen.options.title") }));
  const checks = st.offered.filter((o) => !CHOICES[o]);
  for (const o of checks) {
    const id = "opt-" + o;
    form.append(el("label", { class: "choice", for: id },
      el("input", { type: "checkbox", id, name: o, checked: st.options.includes(o) }),
      el("span", { text: optionLabel(st, o) })));
  }
  const groups = [];
  for (const o of st.offered.filter((x) => CHOICES[x])) {
    const g = el("fieldset", { class: "options", id: "group-" + o },
      el("legend", { class: "group-legend", text: t("opt." + o + ".legend") }));
    CHOICES[o].forEach((v, i) => {
      const id = "opt-" + o + "-" + v;
      const on = st.options.includes(o) ? i === 1 : i === 0;
      g.append(el("label", { class: "choice", for: id },
        el("input", { type: "radio", id, name: o, value: v, checked: on }),
        el("span", { text: optionLabel(st, o, v) })));
    });
    groups.push(g);
  }
  const parts = [title("screen.options.title"), lead(docName(st.item))];
  if (!st.offered.length) {
    parts.push(el("p", { class: "reason", id: "no-options", text: t("screen.options.none") }));
  } else if (checks.length) {
    parts.push(lead(t("screen.options.text")));
  }
  const chosen = () => [...form.querySelectorAll("input:checked")].map((i) => i.name).concat(
    groups.flatMap((g) => [...g.querySelectorAll("input:checked")]
      .filter((i) => i.value === CHOICES[i.name][1]).map((i) => i.name)));
  const next = el("button", { type: "button", class: "primary", id: "btn-next", text: t("btn.next"),
    onclick: () => send("options", { options: chosen() }) });
  if (checks.length) parts.push(form);
  parts.push(...groups);
  parts.push(actions(st, next));
  return parts;
}

function copiesScreen(st) {
  const most = Math.max(1, st.max_copies || 1);
  let n = Math.min(Math.max(1, S.copies || 1), most);
  const count = el("output", { id: "copies-n", class: "copies-n", "aria-live": "polite" });
  const total = el("p", { class: "lead", id: "copies-total" });
  const minus = el("button", { type: "button", id: "btn-minus", "aria-label": t("btn.fewer"),
    text: "－" });
  const plus = el("button", { type: "button", id: "btn-plus", "aria-label": t("btn.more"),
    text: "＋" });
  const draw = () => {
    S.copies = n;
    count.textContent = copiesText(n);
    total.textContent = t("copies.total", { unit: yen(st.unit_fee), n, fee: yen(st.unit_fee * n) });
    minus.disabled = n <= 1;
    plus.disabled = n >= most;
  };
  minus.addEventListener("click", () => { if (n > 1) { n -= 1; draw(); } });
  plus.addEventListener("click", () => { if (n < most) { n += 1; draw(); } });
  draw();
  const back = el("button", { type: "button", id: "btn-back", text: t("btn.back"),
    onclick: () => send("copies", { back: true }) });
  const next = el("button", { type: "button", class: "primary", id: "btn-next", text: t("btn.next"),
    onclick: () => send("copies", { n }) });
  return [title("screen.copies.title"), lead(docName(st.item)),
    lead(t("screen.copies.text", { max: most })),
    el("div", { class: "stepper" }, minus, count, plus), total, actions(st, next, back)];
}

function quoteScreen(st) {
  const opts = st.offered.length ? st.offered.filter((o) => !CHOICES[o] && st.options.includes(o))
    .map((o) => optionLabel(st, o)).concat(st.offered.filter((o) => CHOICES[o])
      .map((o) => optionLabel(st, o, CHOICES[o][st.options.includes(o) ? 1 : 0]))) : [];
  const rows = [[t("quote.doc"), docName(st.item)]];
  if (st.municipality) rows.push([t("quote.municipality"), st.municipality]);
  rows.push([t("quote.options"), opts.length ? opts.join(t("list.sep")) : t("quote.none")],
    [t("quote.copies"), copiesText(st.copies), "quote-copies"],
    [t("quote.fee"), st.copies > 1 ? t("copies.total", { unit: yen(st.unit_fee), n: st.copies,
      fee: yen(st.fee) }) : yen(st.fee), "quote-fee"]);
  return [title("screen.quote.title"), figures(rows),
    actions(st, el("button", { type: "button", class: "primary", id: "btn-accept",
      text: t("btn.accept"), onclick: () => send("accept") }),
    el("button", { type: "button", id: "btn-back", text: t("btn.back_change"),
      onclick: () => send("back") }))];
}

function paymentScreen(st) {
  const live = el("div", { "aria-live": "polite", id: "payment-live" },
    figures([[t("payment.fee"), yen(st.fee), "pay-fee"],
      [t("payment.credited"), "", "pay-credited"],
      [t("payment.left"), "", "pay-left"], [t("payment.change"), "", "pay-change"]]));
  const acc = st.accepted || { coins: [], notes: [] };
  const money = (list) => list.map((n) => yen(n)).join(t("list.sep"));
  const parts = [title("screen.payment.title"), el("p", { class: "lead", id: "accepted",
    text: t("payment.accepted", { coins: money(acc.coins), notes: acc.notes.length
      ? money(acc.notes) : t("payment.no_notes") }) })];
  const refused = [1000, 2000, 5000, 10000].filter((n) => !acc.notes.includes(n));
  if (acc.notes.length && refused.length) {
    parts.push(el("p", { class: "note", id: "refused-notes",
      text: t("payment.notes_refused", { notes: money(refused) }) }));
  }
  return parts.concat([live, el("p", { class: "note", text: t("payment.cancel_note") }),
    actions(st)]);
}

function noticeScreen(st) {
  const n = st.notice || { kind: st.screen, reason: st.detail, amount: st.amount };
  const parts = [title("screen." + n.kind + ".title")];
  if (n.kind === "pin-locked") parts.push(el("p", { class: "reason", text: t("screen.pin-locked.text") }));
  else parts.push(el("p", { class: "reason", id: "reason", text: reasonText(n.reason) }));
  if (n.kind === "cancelled") {
    // How much went back, in yen: "any money you inserted" left people counting coins.
    parts.push(el("p", { class: "lead", id: "returned", text: n.amount > 0
      ? t("cancelled.returned", { n: Number(n.amount).toLocaleString("ja-JP") })
      : t("screen.cancelled.text") }));
  }
  if (n.kind === "not-issued") {
    parts.push(lead(t("screen.not-issued.text", { n: Number(n.amount).toLocaleString("ja-JP") })));
    if (st.txn) parts.push(el("p", { class: "lead", id: "slip-txn", text: t("not-issued.txn", { txn: st.txn }) }));
  }
  if (st.take_card) parts.push(cardPanel(st));
  return parts;
}

function doneScreen(st) {
  const parts = [title("screen.done.title")];
  let key = "done." + (st.outcome || "cancelled");
  if (st.outcome === "printed" && st.change > 0) key = "done.printed_change";
  parts.push(lead(has(key) ? t(key, { n: Number(st.change).toLocaleString("ja-JP") })
    : t("done.cancelled")));
  if (st.notice) parts.push(el("p", { class: "reason", text: reasonText(st.notice.reason) }));
  if (st.notice && st.notice.kind === "cancelled" && st.notice.amount > 0) {
    parts.push(el("p", { class: "lead", id: "returned", text: t("cancelled.returned",
      { n: Number(st.notice.amount).toLocaleString("ja-JP") }) }));
  }
  if (st.outcome === "printed") {
    parts.push(figures([[t("quote.fee"), yen(st.fee)], [t("payment.change"), yen(st.change), "done-change"]]));
    // Change the hoppers could not pay: said, with the slip that proves it (never silent).
    if (st.refund > 0) {
      parts.push(el("p", { class: "reason", id: "refund-owed", text: t("done.refund_owed",
        { n: Number(st.refund).toLocaleString("ja-JP") }) }));
    }
  }
  if (st.txn) parts.push(el("p", { class: "lead", text: t("not-issued.txn", { txn: st.txn }) }));
  if (!st.in_session) {
    parts.push(el("div", { class: "actions" }, el("button", { type: "button", class: "primary",
      id: "btn-home", text: t("btn.home"), onclick: () => send("home") })));
  }
  return parts;
}

function simple(st, name, extra) {
  const parts = [title("screen." + name + ".title"), lead(t("screen." + name + ".text"))];
  return parts.concat(extra || []);
}

function render(st) {
  const s = st.screen;
  if (s === "start") {
    // PIN reset is chosen on the session's menu (a facepin reservation): from here it
    // starts like a certificate, with the card. A kiosk that does not offer it shows
    // nothing of it (a greyed-out button only puzzled people).
    return [title("screen.start.title"), lead(t("screen.start.text")),
      el("div", { class: "big" },
        el("button", { type: "button", class: "primary", id: "btn-start",
          text: t("btn.start_cert"), onclick: () => send("start") }),
        st.pin_reset ? el("button", { type: "button", id: "btn-reset",
          text: t("btn.start_reset"), onclick: () => send("start") }) : null)];
  }
  if (s === "card-left") {
    // The last session's card is still in the slot: nothing starts until it is taken.
    return [title("screen.card-left.title"), lead(t("screen.card-left.text")), cardPicture(true)];
  }
  if (s === "notice") {
    const list = el("ol", { class: "notice", id: "notice-list" });
    for (const k of ["notice.1", "notice.2", "notice.3", "notice.4", "notice.5"]) {
      list.append(el("li", { text: t(k) }));
    }
    return [title("screen.notice.title"), list, el("div", { class: "actions" },
      el("button", { type: "button", class: "primary", id: "btn-agree", text: t("btn.agree"),
        onclick: () => send("agree") }),
      el("button", { type: "button", id: "btn-back", text: t("btn.back"),
        onclick: () => send("home") }))];
  }
  if (s === "card-out") return simple(st, s, [cardPanel(st), actions(st)]);
  if (s === "copies") return copiesScreen(st);
  if (s === "setcard") {
    return simple(st, "setcard", [cardPicture(false), el("div", { class: "actions" }, el("button", {
      type: "button", id: "btn-back", text: t("btn.back"), onclick: () => send("home") }))]);
  }
  if (PIN_SCREENS.has(s)) return pinScreen(st);
  if (s === "menu") return menuScreen(st);
  if (s === "new-password") return newPasswordScreen(st);
  if (s === "item-refused") {
    return [title("screen.item-refused.title"), lead(docName(st.chosen)),
      el("p", { class: "reason", id: "reason", text: reasonText(st.detail) }),
      actions(st, el("button", { type: "button", class: "primary", id: "btn-menu",
        text: t("btn.menu"), onclick: () => send("menu") }))];
  }
  if (s === "options") return optionsScreen(st);
  if (s === "quote") return quoteScreen(st);
  if (s === "payment") return paymentScreen(st);
  if (s === "reading" || s === "working") {
    return simple(st, s, [el("div", { class: "spinner", "aria-hidden": "true" })]);
  }
  if (s === "printing") return simple(st, s, st.take_card || st.remind ? [cardPanel(st)] : []);
  if (s === "take-card") return simple(st, s, [cardPanel(st)]);
  if (s === "take-pages") {
    return simple(st, s, st.change > 0 ? [el("p", { class: "lead", id: "take-change",
      text: t("take-pages.change", { n: Number(st.change).toLocaleString("ja-JP") }) })] : []);
  }
  if (NOTICES.has(s)) return noticeScreen(st);
  if (s === "done") return doneScreen(st);
  if (s === "call-staff") {
    return simple(st, s, [el("p", { class: "note", text: st.detail })]);
  }
  if (has("screen." + s + ".title")) return simple(st, s);
  return [title("screen.working.title")];
}

// Parts that change without a new screen: updated in place (focus stays where it is).
function update(st) {
  const dots = $("pin-dots");
  if (dots) {
    const n = st.pin.count;
    dots.textContent = "●".repeat(n) + "○".repeat(Math.max(0, st.pin.max - n));
    $("pin-count").textContent = t("pin.count", { n });
  }
  if ($("pay-credited")) {
    $("pay-credited").textContent = yen(st.credited);
    $("pay-left").textContent = yen(Math.max(0, st.fee - st.credited));
    $("pay-change").textContent = yen(Math.max(0, st.credited - st.fee));
  }
  document.body.dataset.remind = String(st.remind || 0);
  remindSpeech(st);
  warning(st);
}

function structure(st) {
  return JSON.stringify([S.lang, st.screen, st.detail, st.in_session, st.notice, st.take_card,
    st.outcome, st.menu, st.item, st.offered, st.fee, st.txn, st.chosen, st.reset_error,
    st.reset_offered, st.v * (st.screen === "new-password" && st.reset_error ? 1 : 0),
    st.screen === "printing" ? Boolean(st.remind) : 0, st.municipality, st.copies,
    st.options, st.accepted]);
}

function show(st, force) {
  S.state = st;
  if (!st.in_session && st.screen === "start" && S.lastScreen && S.lastScreen !== "start"
      && S.lang !== st.lang) {
    // A new customer starts in the kiosk's language.
    loadLang(st.lang).then(() => { langButtons(); show(S.state, true); });
    return;
  }
  const key = structure(st);
  if (force || key !== S.key) {
    const changed = S.lastScreen !== st.screen;
    S.key = key;
    const box = $("screen");
    box.replaceChildren(...render(st).filter(Boolean));
    document.body.dataset.screen = st.screen;
    box.dataset.screen = st.screen;
    $("app-title").textContent = t("app.title");
    $("mute").textContent = t(S.muted ? "mute.on" : "mute.off");
    if (changed) {
      if (st.screen !== "copies") S.copies = st.copies || 1; // back again: as chosen before
      if (!$("confirm").hidden && st.screen !== "payment") closeConfirm(false);
      const h = $("screen-title");
      const lead = box.querySelector(".lead, .reason");
      $("announce").textContent = (h ? h.textContent : "") + " " + (lead ? lead.textContent : "");
      if (h && !$("warning").contains(document.activeElement)) h.focus();
      speakKeys(screenKeys(st));
    }
    S.lastScreen = st.screen;
  }
  update(st);
}

function remindSpeech(st) {
  const level = st.remind || 0;
  if (level >= 2 && !S.remindTimer) {
    // Repeated until the card is taken or 音声停止 is pressed (§1.3); louder at level 3.
    const say = () => {
      audio.volume = (S.state.remind || 0) >= 3 ? 1 : 0.8;
      if (audio.paused || audio.ended) speakKeys(["card.panel"]);
    };
    say();
    S.remindTimer = setInterval(() => {
      if ((S.state.remind || 0) >= 2) say();
    }, 6000);
  } else if (level < 2 && S.remindTimer) {
    clearInterval(S.remindTimer);
    S.remindTimer = null;
  }
}

// While the time-out dialog is up, nothing behind it takes focus or clicks.
function modal(on) {
  $("main").inert = on;
  document.querySelector("header").inert = on;
}

function warning(st) {
  const box = $("warning");
  if (st.warning === null || st.warning === undefined || !st.in_session) {
    if (!box.hidden) {
      box.hidden = true;
      modal(false);
      clearInterval(S.warnTimer);
      S.warnTimer = null;
      const h = $("screen-title");
      if (h) h.focus();
    }
    return;
  }
  if (!box.hidden) return;
  S.warnLeft = st.warning;
  $("warning-title").textContent = t("warning.title");
  $("warning-continue").textContent = t("btn.continue");
  const tick = () => { $("warning-text").textContent = t("warning.text", { n: Math.max(0, S.warnLeft) }); };
  tick();
  box.hidden = false;
  modal(true);
  $("warning-continue").focus();
  speakKeys(["warning.title"]);
  S.warnTimer = setInterval(() => { S.warnLeft -= 1; tick(); }, 1000);
}

// -- language switch, keyboard, connection ------------------------------------------------

function langButtons() {
  const nav = $("langs");
  nav.replaceChildren(...S.langs.map((l) => el("button", {
    type: "button", lang: l.lang, "data-lang": l.lang, "aria-pressed": l.lang === S.lang ? "true" : "false",
    text: l.name, onclick: async () => { await loadLang(l.lang); langButtons(); if (S.state) show(S.state, true); },
  })));
}

function onKey(ev) {
  const st = S.state;
  if (!st) return;
  if (!$("warning").hidden) {
    if (ev.key === "Escape") { ev.preventDefault(); send("extend"); }
    return; // Tab and Enter work on the dialog's button
  }
  if (PIN_SCREENS.has(st.screen)) {
    if (/^[0-9]$/.test(ev.key)) { ev.preventDefault(); send("key", { key: ev.key }); return; }
    if (ev.key === "Backspace") { ev.preventDefault(); send("key", { key: "back" }); return; }
    if (ev.key === "Delete") { ev.preventDefault(); send("key", { key: "clear" }); return; }
    if (ev.key === "Enter" && !(ev.target instanceof HTMLButtonElement)) {
      ev.preventDefault(); send("key", { key: "ok" }); return;
    }
  }
  if (!$("confirm").hidden) {
    if (ev.key === "Escape") { ev.preventDefault(); closeConfirm(false); }
    return;
  }
  if (ev.key === "Escape" && CANCELLABLE.has(st.screen) && st.in_session) {
    ev.preventDefault();
    askCancel();
  }
}

function connect() {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
  S.ws = ws;
  ws.onopen = () => { $("offline").hidden = true; };
  ws.onmessage = (m) => { try { show(JSON.parse(m.data)); } catch (e) { /* next frame */ } };
  ws.onclose = () => { $("offline").hidden = false; setTimeout(connect, 1000); };
}

async function main() {
  const r = await fetch("/languages.json");
  const info = await r.json();
  S.langs = info.languages;
  const r2 = await fetch("/messages/" + encodeURIComponent(info.default) + ".json");
  S.fallback = await r2.json();
  await loadLang(info.default);
  langButtons();
  $("mute").addEventListener("click", () => setMuted(!S.muted));
  $("warning-continue").addEventListener("click", () => send("extend"));
  $("confirm-yes").addEventListener("click", () => closeConfirm(true));
  $("confirm-no").addEventListener("click", () => closeConfirm(false));
  document.addEventListener("keydown", onKey);
  setMuted(false);
  connect();
}

window.kioskRender = (st) => show(st, true); // the browser tests' gallery of real states
main();
