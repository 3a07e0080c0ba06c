// The corpus viewer. Every string from the corpus is untrusted (LLM-generated or from a manifest):
// it reaches the screen only through textContent, Node.append(string) and attribute values, never
// through innerHTML or any other HTML parser.
"use strict";

(function () {
  const page = JSON.parse(document.getElementById("corpus-data").textContent);
  const predictions = page.predictions || null;
  const ALL = "(all)";
  const state = { view: "references", selected: null, filters: {} };
  let current = null;  // {video, answers: [{start, end, els}], playhead}

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key === "onclick") node.addEventListener("click", value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  function seconds(t) { return t === null || t === undefined ? "?" : t.toFixed(1) + " s"; }
  function span(a, b) { return seconds(a) + " - " + seconds(b); }
  function kinds(video) { return [...new Set(video.dialogues.map((d) => d.kind))].sort(); }
  function quarantined(video) { return video.quarantine.length > 0; }
  function repliesOf(questionId) {
    return predictions && predictions.by_question[questionId] ? predictions.by_question[questionId] : null;
  }
  function predictionCount(video) {
    let n = 0;
    for (const d of video.dialogues) for (const q of d.questions) if (repliesOf(q.question_id)) n += 1;
    return n;
  }

  // ---------------------------------------------------------------- header, views, filters

  function buildHeader() {
    const c = page.corpus;
    document.getElementById("title").textContent = c.name + " - corpus viewer";
    const videos = page.videos;
    // The table counts, as the dataset card gives them; the list also holds the quarantined items
    // that never became a video, so it may be longer.
    let text = c.videos + " videos, " + c.dialogues + " dialogues, " + c.quarantined + " quarantined items";
    if (c.videos_shown < c.videos_total) text += " (list: first " + c.videos_shown + " of " + c.videos_total + " by id)";
    document.getElementById("summary").textContent = text;

    const views = document.getElementById("views");
    const tabs = [["references", "Dialogues"]];
    if (predictions) tabs.push(["predictions", "Predictions vs references"]);
    for (const [view, label] of tabs) {
      views.append(el("button", { type: "button", "data-view": view, text: label, onclick: () => setView(view) }));
    }
    if (predictions) {
      const skipped = Object.entries(predictions.skip_counts).map(([r, n]) => r + " " + n).join(", ");
      views.append(el("span", { class: "note", id: "prediction-summary", text:
        "  " + predictions.file + ": " + Object.keys(predictions.by_question).length + " questions with replies; " +
        predictions.unmatched_questions.length + " question ids not in this corpus; skipped lines: " + (skipped || "none") }));
    }
    markView();

    const form = document.getElementById("filters");
    const choices = {
      source: [...new Set(videos.map((v) => v.source))].sort(),
      split: [...new Set(videos.map((v) => v.split))].sort(),
      kind: [...new Set(videos.flatMap(kinds))].sort().concat(["none"]),
      quarantined: ["yes", "no"],
    };
    for (const [name, values] of Object.entries(choices)) {
      const select = el("select", { name: name, "data-filter": name });
      for (const value of [ALL, ...values]) select.append(el("option", { value: value, text: value }));
      select.addEventListener("change", () => { state.filters[name] = select.value; renderList(); });
      form.append(el("label", {}, name.replace("_", " "), select));
    }
    const search = el("input", { type: "search", name: "search", placeholder: "video id" });
    search.addEventListener("input", () => { state.filters.search = search.value; renderList(); });
    form.append(el("label", {}, "find", search));
  }

  function setView(view) {
    state.view = view;
    markView();
    if (state.selected !== null) showVideo(state.selected);
  }

  function markView() {
    for (const b of document.querySelectorAll("#views button")) b.classList.toggle("active", b.dataset.view === state.view);
  }

  function passes(video) {
    const f = state.filters;
    if (f.source && f.source !== ALL && video.source !== f.source) return false;
    if (f.split && f.split !== ALL && video.split !== f.split) return false;
    if (f.kind && f.kind !== ALL) {
      const k = kinds(video);
      if (f.kind === "none" ? k.length > 0 : !k.includes(f.kind)) return false;
    }
    if (f.quarantined && f.quarantined !== ALL && quarantined(video) !== (f.quarantined === "yes")) return false;
    if (f.search && !video.video_id.toLowerCase().includes(f.search.toLowerCase())) return false;
    return true;
  }

  // ---------------------------------------------------------------- the list

  function renderList() {
    const table = document.getElementById("video-list");
    const head = table.tHead;
    head.replaceChildren(el("tr", {}, ...["video", "source", "split", "length", "dialogues", "quarantine"]
      .concat(predictions ? ["pred."] : []).map((h) => el("th", { text: h }))));
    const body = table.tBodies[0];
    body.replaceChildren();
    page.videos.forEach((video, i) => {
      if (!passes(video)) return;
      const reasons = video.quarantine.map((q) => q.stage + "/" + q.reason).join(", ");
      const row = el("tr", { "data-video-id": video.video_id, class: (quarantined(video) ? "quarantined" : "") +
                             (state.selected === i ? " selected" : ""), onclick: () => selectVideo(i) },
        el("td", { class: "video-id", text: video.video_id }),
        el("td", { text: video.source }),
        el("td", { text: video.split }),
        el("td", { text: video.duration_s === null ? "-" : seconds(video.duration_s) }),
        el("td", { text: String(video.dialogues.length), title: kinds(video).join(", ") || null }),
        el("td", { class: "quarantine", text: reasons || "-",
                   title: video.quarantine.map((q) => q.item_id + ": " + q.detail).join("\n") || null }));
      if (predictions) row.append(el("td", { text: String(predictionCount(video)) }));
      body.append(row);
    });
  }

  function selectVideo(i) {
    const id = page.videos[i].video_id;
    history.replaceState(null, "", "#" + encodeURIComponent(id));
    showVideo(i);
  }

  // ---------------------------------------------------------------- one video

  function extentOf(video) {
    let end = video.duration_s || 0;
    for (const s of video.scenes.concat(video.segments)) end = Math.max(end, s.end_s || 0);
    for (const d of video.dialogues) for (const r of d.references) end = Math.max(end, r.end_s || 0);
    return end > 0 ? end : 1;
  }

  function showVideo(i) {
    state.selected = i;
    for (const row of document.querySelectorAll("#video-list tbody tr")) {
      row.classList.toggle("selected", row.dataset.videoId === page.videos[i].video_id);
    }
    const video = page.videos[i];
    const extent = extentOf(video);
    const pct = (t) => (100 * Math.min(Math.max(t || 0, 0), extent) / extent) + "%";
    const width = (a, b) => (100 * Math.max((b || 0) - (a || 0), 0) / extent) + "%";
    const detail = document.getElementById("detail");
    const answers = [];
    let player = null;

    // Times on the page are stream times (0 = the video's first frame); the player's clock reads
    // the container's timestamps, which start at `player_start_s` (an MP4 edit list, a WebM cut).
    const offset = video.player_start_s || 0;

    function seek(t) {
      if (player) player.currentTime = t + offset;
      highlight(t);
    }

    function place(node, start, end) {
      node.style.left = pct(start);
      if (end !== undefined) node.style.width = width(start, end);
      return node;
    }

    function lane(label, cls, ...items) {
      const track = el("div", { class: "lane-track" }, ...items);
      const bottom = Math.max(22, ...items.map((item) => (parseFloat(item.style.top) || 0) + 21));
      track.style.minHeight = bottom + "px";
      return el("div", { class: "lane " + (cls || "") }, el("span", { class: "lane-label", text: label, title: label }), track);
    }

    // Windows of one lane may overlap (an immediate reply and the answer that follows it): each
    // bar goes to the first row where it fits, under the row of question and reply markers.
    function stack(bars, spans, top) {
      const rowEnds = [];
      spans.forEach((s, k) => {
        let row = rowEnds.findIndex((end) => end <= s.start_s);
        if (row < 0) { row = rowEnds.length; rowEnds.push(0); }
        rowEnds[row] = s.end_s;
        bars[k].style.top = (top + 19 * row) + "px";
      });
      return bars;
    }

    function answerBar(ref, index) {
      const bar = place(el("div", {
        class: "bar answer" + (ref.immediate ? " immediate" : ""), "data-question-id": ref.question_id,
        "data-answer-index": index, title: (ref.immediate ? "[immediate] " : "") + span(ref.start_s, ref.end_s) + "  " + ref.answer,
        onclick: () => seek(ref.start_s),
      }, ref.immediate ? "immediate: " + ref.answer : ref.answer), ref.start_s, ref.end_s);
      return bar;
    }

    function answerItem(ref, index) {
      return el("li", { class: "answer", "data-answer-index": index, onclick: () => seek(ref.start_s) },
        el("span", { class: "time", text: span(ref.start_s, ref.end_s) }), ref.answer,
        ref.immediate ? el("span", { class: "tag immediate", text: "immediate" }) : null,
        ref.evidence.length ? el("span", { class: "tag", text: "evidence " + ref.evidence.join(", ") }) : null);
    }

    function questionMarker(q) {
      return place(el("div", { class: "marker question", "data-question-id": q.question_id,
                               title: seconds(q.time_s) + "  " + q.text, onclick: () => seek(q.time_s) }), q.time_s);
    }

    function replyMarker(reply, q) {
      const scored = reply.score === null ? "" : " scored-" + Math.max(0, Math.min(2, Math.round(reply.score)));
      return place(el("div", { class: "marker reply" + scored, "data-question-id": q.question_id,
                               title: seconds(reply.time_s) + (reply.score === null ? "" : "  score " + reply.score) + "  " + reply.text,
                               onclick: () => seek(reply.time_s) }), reply.time_s);
    }

    const head = [el("h2", { text: video.video_id }),
      el("p", { class: "meta", text: ["source " + video.source, "split " + video.split,
        video.duration_s === null ? null : "length " + seconds(video.duration_s),
        video.width ? video.width + "x" + video.height : null, video.licence || null].filter(Boolean).join("  |  ") })];
    if (video.src) {
      player = el("video", { controls: "", muted: "", preload: "metadata", src: video.src });
      player.muted = true;
      head.push(player);
    } else {
      head.push(el("p", { class: "no-player", text: "No player: " + video.no_player }));
    }

    const ticks = [];
    const step = extent > 120 ? 30 : extent > 40 ? 10 : extent > 12 ? 5 : 1;
    for (let t = 0; t <= extent + 1e-9; t += step) ticks.push(place(el("span", { class: "tick", text: t + "s" }), t));
    const lanes = [lane("time", "axis", ...ticks),
      lane("scenes", "", ...video.scenes.map((s) => place(el("div", {
        class: "block scene" + (s.scene_id % 2 ? " odd" : ""), title: "scene " + s.scene_id + "  " + span(s.start_s, s.end_s),
        onclick: () => seek(s.start_s) }, String(s.scene_id)), s.start_s, s.end_s))),
      lane("segments", "", ...video.segments.map((s) => place(el("div", {
        class: "block segment", title: s.segment_id + " (" + s.origin + ")  " + span(s.start_s, s.end_s) + "  " + s.text,
        onclick: () => seek(s.start_s) }, s.text), s.start_s, s.end_s)))];
    const transcript = el("div", { class: "transcript" });

    for (const d of video.dialogues) {
      const refIndex = (ref) => d.references.indexOf(ref);
      const register = (ref, bar, item) => answers.push({ start: ref.start_s, end: ref.end_s, els: [bar, item] });
      transcript.append(el("h3", { text: d.dialogue_id + "  (" + d.kind.replace("_", " ") + ", " + d.split + ")" }));
      if (state.view === "references") {
        const bars = stack(d.references.map((ref) => answerBar(ref, refIndex(ref))), d.references, 13);
        lanes.push(lane(d.dialogue_id, "dialogue", ...d.questions.map(questionMarker), ...bars));
        const list = el("ul", {});
        for (const q of d.questions) {
          list.append(el("li", { class: "question", "data-question-id": q.question_id, onclick: () => seek(q.time_s) },
            el("span", { class: "time", text: seconds(q.time_s) }), "Q: " + q.text));
          d.references.forEach((ref, k) => {
            if (ref.question_id !== q.question_id) return;
            const item = answerItem(ref, k);
            register(ref, bars[k], item);
            list.append(item);
          });
        }
        transcript.append(list);
      } else {
        for (const q of d.questions) {
          const refs = d.references.filter((ref) => ref.question_id === q.question_id);
          const replies = repliesOf(q.question_id) || [];
          const bars = stack(refs.map((ref) => answerBar(ref, refIndex(ref))), refs, 13);
          lanes.push(lane(q.question_id, "dialogue", questionMarker(q), ...bars, ...replies.map((r) => replyMarker(r, q))));
          const list = el("ul", {}, el("li", { class: "question", "data-question-id": q.question_id, onclick: () => seek(q.time_s) },
            el("span", { class: "time", text: seconds(q.time_s) }), "Q: " + q.text));
          refs.forEach((ref, k) => {
            const item = answerItem(ref, refIndex(ref));
            register(ref, bars[k], item);
            list.append(item);
          });
          if (!repliesOf(q.question_id)) list.append(el("li", { class: "note", text: "no prediction line for this question" }));
          for (const r of replies) {
            const inside = refs.some((ref) => r.time_s >= ref.start_s && r.time_s <= ref.end_s);
            list.append(el("li", { class: "reply", onclick: () => seek(r.time_s) },
              el("span", { class: "time", text: seconds(r.time_s) }), "Model: " + r.text,
              el("span", { class: "tag " + (inside ? "inside" : "outside"), text: inside ? "in a reference window" : "outside every window" }),
              r.score === null ? null : el("span", { class: "tag score", text: "judge score " + r.score })));
          }
          transcript.append(list);
        }
      }
    }
    if (!video.dialogues.length) transcript.append(el("p", { class: "note", text: "No dialogues for this video." }));

    const playhead = el("div", { class: "playhead" });
    const timeline = el("div", { class: "timeline" }, ...lanes, el("div", { class: "playhead-track" }, playhead));
    const parts = [...head, timeline, transcript];
    if (video.quarantine.length) {
      parts.push(el("h3", { text: "Quarantined items" }), el("table", { class: "quarantine" },
        el("thead", {}, el("tr", {}, ...["item", "stage", "reason", "kind", "detail"].map((h) => el("th", { text: h })))),
        el("tbody", {}, ...video.quarantine.map((q) => el("tr", {},
          el("td", { text: q.item_id }), el("td", { text: q.stage }), el("td", { class: "reason", text: q.reason }),
          el("td", { text: q.kind }), el("td", { text: q.detail }))))));
      // The raw LLM replies of a failed dialogue request (first try and repair), as text only.
      for (const q of video.quarantine.filter((r) => r.raw_replies && r.raw_replies.length)) {
        parts.push(el("details", { class: "raw-replies", "data-item-id": q.item_id },
          el("summary", { text: "Raw LLM replies for " + q.item_id + " (" + q.reason + ")" }),
          ...q.raw_replies.map((r) => el("div", { class: "raw-reply" },
            el("p", { class: "note", text: r.attempt + ": " + r.reason + (r.repeats_first ? " (repeats the first reply)" : "") +
                                          (r.problems.length ? " - " + r.problems.join("; ") : "") }),
            el("pre", { text: r.text })))));
      }
    }
    detail.replaceChildren(...parts);
    current = { video: video, answers: answers, playhead: playhead, pct: pct };
    if (player) {
      for (const event of ["timeupdate", "seeked", "seeking"]) player.addEventListener(event, () => highlight(player.currentTime - offset));
    }
    highlight(0);
  }

  // The current answer: its reply window holds the play position (half-open, so two windows that
  // touch never light up together).
  function highlight(t) {
    if (!current) return;
    current.playhead.style.left = current.pct(t);
    for (const a of current.answers) {
      const on = a.start !== null && a.end !== null && t >= a.start && t < a.end;
      for (const node of a.els) if (node) node.classList.toggle("current", on);
    }
  }

  function fromHash() {
    let id = null;
    try { id = decodeURIComponent(location.hash.slice(1)); } catch (error) { return null; }
    const i = page.videos.findIndex((v) => v.video_id === id);
    return i >= 0 ? i : null;
  }

  buildHeader();
  renderList();
  // Open on the video the hash names, else the first with dialogues to watch (not a quarantined
  // row without a player, which sorts first by id).
  const first = fromHash();
  const watchable = page.videos.findIndex((v) => v.dialogues.length > 0 && v.src);
  if (first !== null) showVideo(first);
  else if (page.videos.length) showVideo(watchable >= 0 ? watchable : 0);
  window.addEventListener("hashchange", () => { const i = fromHash(); if (i !== null) showVideo(i); });
})();
