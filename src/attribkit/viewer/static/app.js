// attribkit viewer: a small hash-routed page over the JSON API of attribkit.viewer.server.
// Every piece of stored text is put in the page with text nodes only (no HTML parsing), so a context
// holding markup is shown as text. Nothing is fetched from anywhere but this server.
"use strict";

(function () {
  const app = document.getElementById("app");
  const POS = [230, 85, 13]; // the unit pushes the target up
  const NEG = [33, 102, 172]; // the unit pushes the target down
  let info = { model: null };
  let spanToken = 0;

  // --- DOM helpers (text only) ---------------------------------------------------------------
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "data") for (const [k, v] of Object.entries(value)) node.dataset[k] = v;
      else if (key === "on") for (const [k, fn] of Object.entries(value)) node.addEventListener(k, fn);
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function render(...nodes) {
    // replaceChildren would turn null into the text "null": drop empty slots first.
    app.replaceChildren(...nodes.flat(Infinity).filter((n) => n !== null && n !== undefined && n !== false));
  }

  function fmt(x, digits) {
    if (x === null || x === undefined || !Number.isFinite(x)) return "n/a";
    const d = digits === undefined ? 3 : digits;
    const a = Math.abs(x);
    const s = a !== 0 && (a < 1e-3 || a >= 1e5) ? x.toExponential(2) : x.toFixed(d);
    return x > 0 ? "+" + s : s;
  }

  function plain(x, digits) {
    if (x === null || x === undefined || !Number.isFinite(x)) return "n/a";
    return x.toFixed(digits === undefined ? 3 : digits);
  }

  function costText(cost) {
    if (!cost) return "";
    const calls = cost.model_calls !== undefined ? cost.model_calls : cost.forward_passes;
    let s = `${calls} model call${calls === 1 ? "" : "s"}`;
    if (cost.backward_passes) s += ` (${cost.forward_passes} fwd, ${cost.backward_passes} bwd)`;
    if (cost.cache_hits) s += `, ${cost.cache_hits} cached`;
    return s + `, ${Number(cost.seconds || 0).toFixed(2)} s`;
  }

  function when(iso) {
    return iso ? iso.replace("T", " ").replace("+00:00", " UTC") : "";
  }

  function maxAbs(vector) {
    let m = 0;
    for (const v of vector) if (v !== null && Math.abs(v) > m) m = Math.abs(v);
    return m || 1;
  }

  function shade(node, score, scale, maxAlpha) {
    node.classList.toggle("nan", score === null);
    if (score === null) {
      node.style.backgroundColor = "";
      return;
    }
    const t = Math.min(1, Math.abs(score) / scale);
    const [r, g, b] = score >= 0 ? POS : NEG;
    node.style.backgroundColor = `rgba(${r}, ${g}, ${b}, ${((maxAlpha || 0.78) * t).toFixed(3)})`;
  }

  async function api(path, options) {
    const response = await fetch(path, options);
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = { error: response.statusText };
    }
    if (!response.ok) {
      const err = new Error((body && body.error) || response.statusText);
      err.status = response.status;
      throw err;
    }
    return body;
  }

  function legend(scale, note) {
    return el(
      "div",
      { class: "legend", "aria-label": "colour scale" },
      el("span", { class: "legend-end" }, fmt(-scale)),
      el("span", { class: "legend-bar" }),
      el("span", { class: "legend-end" }, fmt(scale)),
      el("span", { class: "legend-note" }, note || "blue lowers the target, orange raises it")
    );
  }

  function showError(message) {
    render(
      el("p", {}, el("a", { href: "#/" }, "← all runs")),
      el("div", { class: "error", role: "alert" }, message)
    );
  }

  // --- rendering blocks shared by views ------------------------------------------------------
  function textWithUnits(text, units) {
    // The source text, each unit a <span class="unit" data-unit=i>; gaps stay plain text.
    const box = el("div", { class: "source" });
    const nodes = [];
    let pos = 0;
    const ordered = units.map((u, i) => [u, i]).sort((a, b) => a[0].start - b[0].start);
    for (const [u, i] of ordered) {
      if (u.start > pos) box.appendChild(document.createTextNode(text.slice(pos, u.start)));
      const node = el("span", { class: "unit", data: { unit: String(i) } }, text.slice(u.start, u.end));
      box.appendChild(node);
      nodes[i] = node;
      pos = Math.max(pos, u.end);
    }
    if (pos < text.length) box.appendChild(document.createTextNode(text.slice(pos)));
    return { box, nodes };
  }

  function paintUnits(nodes, vector, ranking, unitsLabel) {
    const scale = maxAbs(vector);
    nodes.forEach((node, i) => {
      if (!node) return;
      shade(node, vector[i], scale);
      const rank = ranking.indexOf(i) + 1;
      node.title = `${unitsLabel || "unit"} #${i} · score ${fmt(vector[i])} · rank ${rank}`;
      node.classList.remove("source-top");
    });
    if (ranking.length && nodes[ranking[0]] && vector[ranking[0]] !== null) {
      nodes[ranking[0]].classList.add("source-top");
    }
    return scale;
  }

  function rankList(units, vector, ranking, limit) {
    const scale = maxAbs(vector);
    const list = el("ol", { class: "ranking" });
    const shown = ranking.slice(0, limit || ranking.length);
    shown.forEach((i, r) => {
      const v = vector[i];
      const fill = el("span", { class: "fill " + (v !== null && v < 0 ? "neg" : "pos") });
      fill.style.width = v === null ? "0" : `${(50 * Math.min(1, Math.abs(v) / scale)).toFixed(1)}%`;
      if (v !== null && v < 0) fill.style.right = "50%";
      else fill.style.left = "50%";
      list.appendChild(
        el(
          "li",
          { class: r === 0 ? "rank-item first" : "rank-item", data: { unit: String(i) } },
          el("span", { class: "rank-no" }, String(r + 1)),
          el("span", { class: "track", "aria-hidden": "true" }, fill),
          el("span", { class: "score" }, fmt(v)),
          el("span", { class: "rank-label" }, units[i].label),
          el("span", { class: "unit-no" }, `#${i}`)
        )
      );
    });
    if (limit && ranking.length > limit) {
      list.appendChild(el("li", { class: "more muted" }, `… ${ranking.length - limit} more units`));
    }
    return list;
  }

  function featureBars(units, vector) {
    const scale = maxAbs(vector);
    const rows = el("div", { class: "features" });
    units.forEach((u, i) => {
      const v = vector[i];
      const fill = el("span", { class: "fill " + (v !== null && v < 0 ? "neg" : "pos") });
      fill.style.width = v === null ? "0" : `${(50 * Math.min(1, Math.abs(v) / scale)).toFixed(1)}%`;
      if (v !== null && v < 0) fill.style.right = "50%";
      else fill.style.left = "50%";
      const value = u.meta && u.meta.value !== undefined ? u.meta.value : null;
      rows.appendChild(
        el(
          "div",
          { class: "feature", data: { unit: String(i) } },
          el("span", { class: "feature-name" }, u.label),
          el("span", { class: "feature-value" }, value === null ? "" : `= ${plain(value, 3)}`),
          el("span", { class: "track wide" }, fill),
          el("span", { class: "score" }, fmt(v))
        )
      );
    });
    return rows;
  }

  function imageOverlay(run, units, vector) {
    const src = String(run.inputs.image_png || (run.attribution.input || {}).image_png || "");
    const shape = run.inputs.image_shape || (run.attribution.input || {}).shape || [1, 1];
    const [h, w] = shape;
    const scale = maxAbs(vector);
    const wrap = el("div", { class: "image-wrap" });
    if (src.startsWith("data:image/png;base64,")) {
      wrap.appendChild(el("img", { src, alt: "the attributed image" }));
    }
    units.forEach((u, i) => {
      const [top, left, bottom, right] = u.box;
      const cell = el("div", { class: "patch", data: { unit: String(i) } });
      cell.style.top = `${(100 * top) / h}%`;
      cell.style.left = `${(100 * left) / w}%`;
      cell.style.height = `${(100 * (bottom - top)) / h}%`;
      cell.style.width = `${(100 * (right - left)) / w}%`;
      shade(cell, vector[i], scale, 0.55); // the image shows through
      cell.title = `${u.label} · score ${fmt(vector[i])}`;
      wrap.appendChild(cell);
    });
    return wrap;
  }

  function matrixScale(scores) {
    let m = 0;
    for (const row of scores) for (const v of row) if (v !== null && Math.abs(v) > m) m = Math.abs(v);
    return m || 1;
  }

  // A generation run: one row per generated token, one column per input token; every token is
  // a text node, a cell the row cannot see (or did not score) stays blank.
  function tokenHeatmap(tokens) {
    const scale = matrixScale(tokens.scores);
    const head = el(
      "tr",
      {},
      el("th", { class: "corner", scope: "col" }, "generated ↓ · input →"),
      tokens.columns.map((c, j) =>
        el(
          "th",
          { class: "tok col role-" + (tokens.roles[j] || "input"), scope: "col", data: { col: String(j) }, title: `input token #${j} (${tokens.roles[j] || "input"})` },
          c
        )
      )
    );
    const body = el("tbody");
    tokens.scores.forEach((row, i) => {
      const tr = el("tr", { data: { row: String(i) } }, el("th", { class: "tok row", scope: "row" }, tokens.rows[i]));
      row.forEach((v, j) => {
        const td = el("td", { class: "cell", data: { row: String(i), col: String(j) } });
        shade(td, v, scale, 0.85);
        td.title = `${tokens.rows[i]} ← ${tokens.columns[j]}: ` + (v === null ? "not scored" : fmt(v));
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    return el("div", { class: "token-scroll" }, el("table", { class: "token-map" }, el("thead", {}, head), body));
  }

  // A reasoning run's sentence×sentence matrix (e.g. suppression's M[j][i]: the effect on
  // sentence j of suppressing sentence i): row and column heads are sentence numbers (their
  // text in the title), a cell without a value stays blank.
  function reasoningMatrix(matrix, units) {
    const scale = matrixScale(matrix);
    const label = (i) => (units[i] ? String(units[i].label) : "");
    const head = el(
      "tr",
      {},
      el("th", { class: "corner", scope: "col" }, "sentence ↓ · sentence →"),
      matrix.map((_, j) => el("th", { class: "tok col", scope: "col", data: { col: String(j) }, title: `#${j}: ${label(j)}` }, `#${j}`))
    );
    const body = el("tbody");
    matrix.forEach((row, i) => {
      const tr = el("tr", { data: { row: String(i) } }, el("th", { class: "tok row", scope: "row", title: label(i) }, `#${i}`));
      row.forEach((v, j) => {
        const td = el("td", { class: "cell", data: { row: String(i), col: String(j) } });
        shade(td, v, scale, 0.85);
        td.title = `#${i} ← #${j}: ` + (v === null ? "no value" : fmt(v));
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    return el("div", { class: "token-scroll" }, el("table", { class: "token-map reasoning-matrix" }, el("thead", {}, head), body));
  }

  // An agents run: the turns of the log as their labels ("Step i - agent"; an agents run keeps
  // no turn text), each shaded by its score; the decided turn and, when stored, the gold turn
  // marked; the scored final turn (left out of the units) closes the list.
  function agentTurns(run) {
    const a = run.attribution;
    const info = run.agents || {};
    const decided = info.decision ? info.decision.unit : null;
    const gold = info.gold ? info.gold.unit : null;
    const list = el("ol", { class: "turns" });
    const nodes = a.units.map((u, i) => {
      const meta = u.meta || {};
      const classes = ["turn", "unit"];
      if (i === decided) classes.push("turn-decided");
      if (i === gold) classes.push("turn-gold");
      const node = el(
        "li",
        { class: classes.join(" "), data: { unit: String(i) } },
        el("span", { class: "turn-label" }, u.label),
        el("span", { class: "turn-marks" }, i === decided ? el("span", { class: "badge decided-badge" }, "decision") : null, i === gold ? el("span", { class: "badge gold-badge" }, "gold") : null),
        el("span", { class: "score" }, "")
      );
      node.dataset.agent = meta.agent === undefined ? "" : String(meta.agent);
      list.appendChild(node);
      return node;
    });
    const steps = (a.input || {}).steps || [];
    if (Number.isInteger(info.outcome_step) && !steps.includes(info.outcome_step)) {
      list.appendChild(el("li", { class: "turn turn-outcome muted" }, el("span", { class: "turn-label" }, `Step ${info.outcome_step}`), el("span", { class: "turn-marks" }, "the scored final answer (not attributed)")));
    }
    function paint(vector, ranking) {
      paintUnits(nodes, vector, ranking, "turn");
      nodes.forEach((node, i) => {
        node.querySelector(".score").textContent = fmt(vector[i]);
      });
    }
    paint(run.vector, a.ranking || []);
    return { node: list, paint };
  }

  function agentTotals(info) {
    const totals = info.totals || [];
    const d = info.decision || {};
    const g = info.gold || {};
    const scale = maxAbs(totals.map((t) => t[1]));
    const body = el("tbody");
    totals.forEach(([agent, total], r) => {
      const fill = el("span", { class: "fill " + (total !== null && total < 0 ? "neg" : "pos") });
      fill.style.width = total === null ? "0" : `${(50 * Math.min(1, Math.abs(total) / scale)).toFixed(1)}%`;
      if (total !== null && total < 0) fill.style.right = "50%";
      else fill.style.left = "50%";
      const classes = ["agent-row"];
      if (agent === d.agent) classes.push("agent-decided");
      if (agent === g.agent) classes.push("agent-gold");
      const row = el(
        "tr",
        { class: classes.join(" ") },
        el("td", { class: "num" }, String(r + 1)),
        el("td", { class: "agent-name" }, agent, agent === d.agent ? el("span", { class: "badge decided-badge" }, "decision") : null, agent === g.agent ? el("span", { class: "badge gold-badge" }, "gold") : null),
        el("td", { class: "num agent-total" }, fmt(total)),
        el("td", { class: "bar" }, el("span", { class: "track wide", "aria-hidden": "true" }, fill))
      );
      row.dataset.agent = agent;
      body.appendChild(row);
    });
    return el(
      "table",
      { class: "runs agent-totals" },
      el("thead", {}, el("tr", {}, ["#", "Agent", "Total", ""].map((h) => el("th", {}, h)))),
      body
    );
  }

  function agentDecision(info) {
    const d = info.decision;
    const g = info.gold;
    const none = (x) => (x === null || x === undefined ? "none" : String(x));
    const box = el("div", { class: "decision", role: "note" });
    if (!d) {
      box.appendChild(el("div", { class: "decision-line" }, "No decision recorded."));
    } else {
      box.appendChild(
        el(
          "div",
          { class: "decision-line" },
          el("span", { class: "badge decided-badge" }, "decision"),
          " agent ",
          el("span", { class: "decision-agent" }, none(d.agent)),
          " at step ",
          el("span", { class: "decision-step" }, none(d.step))
        )
      );
      if (d.reason) box.appendChild(el("div", { class: "decision-reason" }, d.reason));
    }
    if (g) {
      const hit = (ok) => el("span", { class: "match " + (ok ? "yes" : "no") }, ok ? "✓" : "✗");
      box.appendChild(
        el(
          "div",
          { class: "gold-line" },
          el("span", { class: "badge gold-badge" }, "gold"),
          " agent ",
          el("span", { class: "gold-agent" }, none(g.agent)),
          d && g.agent !== null ? [" ", hit(d.agent === g.agent)] : null,
          " at step ",
          el("span", { class: "gold-step" }, none(g.step)),
          d && g.step !== null ? [" ", hit(d.step === g.step)] : null
        )
      );
    }
    if (info.path && info.path.length) {
      box.appendChild(
        el(
          "div",
          { class: "agent-path" },
          "Dependency path: ",
          info.path.map((p) => `Step ${p.step}` + (p.agent === null || p.agent === undefined ? "" : ` - ${p.agent}`)).join(" → ")
        )
      );
    }
    return box;
  }

  // A provenance run: which known source produced the text, or "unknown". The decision (the
  // prediction with the rejection rule applied, the explained source) above; beside the text,
  // a bar per source (its probability on the full text, highest first, the prediction marked)
  // and an "unknown" row with the rule and whether it fired. Names are text nodes.
  function provenanceDecision(info) {
    const none = (x) => (x === null || x === undefined ? "none recorded" : String(x));
    return el(
      "div",
      { class: "decision provenance-decision", role: "note", data: { unknown: info.unknown ? "1" : "0" } },
      el(
        "div",
        { class: "decision-line" },
        el("span", { class: "badge decided-badge" }, "prediction"),
        " ",
        el("span", { class: "prov-prediction" + (info.unknown ? " is-unknown" : "") }, none(info.prediction)),
        " ",
        el("span", { class: "prov-rule muted" }, `(${info.rule || ""})`)
      ),
      info.source === null || info.source === undefined
        ? null
        : el(
            "div",
            { class: "decision-reason" },
            "Explained source: ",
            el("span", { class: "prov-source" }, String(info.source)),
            " — each unit of the text is scored by its effect on this source's probability."
          )
    );
  }

  function sourceBars(info) {
    const body = el("tbody");
    (info.sources || []).forEach(([name, p], r) => {
      const predicted = !info.unknown && name === info.prediction;
      const explained = name === info.source;
      const fill = el("span", { class: "fill " + (predicted ? "pos" : "prob") });
      fill.style.left = "0";
      fill.style.width = p === null ? "0" : `${(100 * Math.min(1, Math.max(0, p))).toFixed(1)}%`;
      const classes = ["source-row"];
      if (predicted) classes.push("source-predicted");
      if (explained) classes.push("source-explained");
      const row = el(
        "tr",
        { class: classes.join(" "), title: `p(${name} | text) = ${p === null ? "n/a" : plain(p, 4)}` },
        el("td", { class: "num" }, String(r + 1)),
        el(
          "td",
          { class: "source-name" },
          name,
          predicted ? el("span", { class: "badge decided-badge" }, "prediction") : null,
          explained ? el("span", { class: "badge" }, "explained") : null
        ),
        el("td", { class: "bar" }, el("span", { class: "track prob wide", "aria-hidden": "true" }, fill)),
        el("td", { class: "num source-p" }, p === null ? "n/a" : plain(p, 3))
      );
      row.dataset.source = name;
      body.appendChild(row);
    });
    body.appendChild(
      el(
        "tr",
        { class: "unknown-row" + (info.unknown ? " fired" : ""), data: { fired: info.unknown ? "1" : "0" } },
        el("td", { class: "num" }, ""),
        el(
          "td",
          { class: "source-name" },
          "unknown",
          info.unknown ? el("span", { class: "badge decided-badge" }, "prediction") : null
        ),
        el(
          "td",
          { class: "unknown-rule", colspan: "2" },
          el("span", { class: "badge " + (info.unknown ? "error" : "stored") }, info.unknown ? "fired" : "not fired"),
          " ",
          info.rule || ""
        )
      )
    );
    return el(
      "table",
      { class: "runs source-dist" },
      el("thead", {}, el("tr", {}, ["#", "Source", "", "p"].map((h) => el("th", {}, h)))),
      body
    );
  }

  // A tabular run: one signed bar per feature (its value beside its name), ordered by |score|.
  // With responsiveness (a responsiveness run, whose scores are the responsiveness, or an
  // attribution carrying extras.responsiveness: feature name -> score) each feature is marked
  // responsive, not responsive or immutable (attribkit.viz.html.feature_recourse). Names are text.
  function respMark(f, kind) {
    if (!kind) return null;
    if (f.actionable === false && !f.responsive) return el("span", { class: "resp-mark resp-immutable" }, "immutable");
    if (f.responsiveness === null || f.responsiveness === undefined) return null;
    if (f.responsiveness > 0) return el("span", { class: "resp-mark resp-yes" }, `responsive ${plain(f.responsiveness, 2)}`);
    return el("span", { class: "resp-mark resp-no" }, "not responsive");
  }

  function tabularBars(info, vector) {
    const features = (info && info.features) || [];
    const kind = info ? info.kind : null;
    const scale = maxAbs(vector);
    const key = (i) => (vector[i] === null || vector[i] === undefined ? -1 : Math.abs(vector[i]));
    const order = features.map((_, i) => i).sort((i, j) => key(j) - key(i) || i - j);
    const rows = el("div", { class: "features tabular" });
    for (const i of order) {
      const f = features[i];
      const v = vector[i] === undefined ? null : vector[i];
      const fill = el("span", { class: "fill " + (v !== null && v < 0 ? "neg" : "pos") });
      fill.style.width = v === null ? "0" : `${(50 * Math.min(1, Math.abs(v) / scale)).toFixed(1)}%`;
      if (v !== null && v < 0) fill.style.right = "50%";
      else fill.style.left = "50%";
      const row = el(
        "div",
        { class: "feature tab-feature", data: { unit: String(i) } },
        el("span", { class: "feature-name" }, f.name),
        el("span", { class: "feature-value" }, f.value === null || f.value === undefined ? "" : `= ${plain(f.value, 3)}`),
        el("span", { class: "track wide" }, fill),
        el("span", { class: "score" }, fmt(v)),
        el("span", { class: "resp-slot" }, respMark(f, kind))
      );
      row.dataset.responsive = f.responsive === null || f.responsive === undefined ? "" : f.responsive ? "1" : "0";
      rows.appendChild(row);
    }
    return rows;
  }

  function recourseNote(info) {
    if (!info || (info.fixed === null && info.denied === null)) return null;
    const line = el("div", { class: "decision-line" });
    if (info.fixed) {
      line.append(el("span", { class: "badge error" }, "fixed"), " no single-feature action flips the decision: every reason misleads");
    } else if (info.denied === false) {
      line.append(el("span", { class: "badge stored" }, "not denied"), " the model already gives the favourable outcome");
    } else {
      line.append(el("span", { class: "badge decided-badge" }, "not fixed"), " some feasible single-feature action flips the decision");
    }
    return el("div", { class: "decision recourse-note", role: "note", data: { fixed: info.fixed ? "1" : "0" } }, line);
  }

  // A time-series run: one inline SVG per channel (built element by element, no markup parsed):
  // a rectangle per step shaded by its map score under the series' line.
  const SVG_NS = "http://www.w3.org/2000/svg";
  function svgEl(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    for (const child of children) node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    return node;
  }

  function seriesCharts(info) {
    const W = 600;
    const H = 120;
    const PAD = 8;
    const steps = Math.max(1, info.steps || 1);
    const stepW = W / steps;
    const [lo, hi] = info.value_range || [0, 0];
    const span = hi - lo || 1;
    const box = el("div", { class: "series-charts" });
    (info.channels || []).forEach((ch, c) => {
      const shades = svgEl("g", { class: "shades" });
      (ch.map || []).forEach((s, i) => {
        if (s === null || s === 0 || !info.scale) return;
        const [r, g, b] = s >= 0 ? POS : NEG;
        const alpha = 0.85 * Math.min(1, Math.abs(s) / info.scale);
        shades.appendChild(
          svgEl(
            "rect",
            { class: "shade", x: (i * stepW).toFixed(2), y: 0, width: stepW.toFixed(2), height: H, "shape-rendering": "crispEdges", fill: `rgb(${r}, ${g}, ${b})`, "fill-opacity": alpha.toFixed(3), "data-step": i },
            svgEl("title", {}, `step ${i} · score ${fmt(s)}`)
          )
        );
      });
      let d = "";
      let penUp = true;
      (ch.values || []).forEach((v, i) => {
        if (v === null) {
          penUp = true;
          return;
        }
        const x = (i + 0.5) * stepW;
        const y = H - PAD - ((v - lo) / span) * (H - 2 * PAD);
        d += `${penUp ? "M" : "L"}${x.toFixed(2)},${y.toFixed(2)} `;
        penUp = false;
      });
      const svg = svgEl("svg", { class: "series-svg", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" }, svgEl("title", {}, ch.name), shades);
      if (d) svg.appendChild(svgEl("path", { class: "series-line", d: d.trim(), "vector-effect": "non-scaling-stroke" }));
      box.appendChild(el("figure", { class: "series-chart", data: { channel: String(c) } }, el("figcaption", { class: "series-name" }, ch.name), svg));
    });
    return box;
  }

  function seriesCaption(info) {
    if (!info || info.class_name === null || info.class_name === undefined) return null;
    const predicted = info.prediction_name === null || info.prediction_name === undefined ? "" : ` (the model predicts ${info.prediction_name})`;
    return el("p", { class: "image-class" }, "Explained class: ", el("span", { class: "class-label" }, info.class_name), predicted);
  }

  function hasTextRanges(a) {
    const units = a.units || [];
    return (
      typeof (a.input || {}).text === "string" &&
      units.length > 0 &&
      units.every((u) => Number.isInteger(u.start) && Number.isInteger(u.end))
    );
  }

  function generationText(target) {
    const t = target && typeof target === "object" ? target : {};
    return el(
      "div",
      { class: "qa" },
      el("h2", {}, "Prompt"),
      el("p", { class: "gen-prompt" }, t.prompt === undefined ? "" : String(t.prompt)),
      el("h2", {}, "Response"),
      el("p", { class: "gen-response" }, t.response === undefined ? "" : String(t.response)),
      t.foil ? [el("h2", {}, "Foil"), el("p", { class: "gen-foil" }, String(t.foil))] : null
    );
  }

  // An image run with a map: the map over the image (drawn by the server) beside the image.
  function imageMap(run) {
    const a = run.attribution;
    const src = String(run.inputs.image_png || (a.input || {}).image_png || "");
    const pair = el("div", { class: "image-pair" });
    const box = detectionBox(a);
    if (String(run.overlay || "").startsWith("data:image/png;base64,")) {
      pair.appendChild(
        el("figure", { class: "image-fig" }, el("div", { class: "image-box" }, el("img", { class: "overlay", src: run.overlay, alt: "attribution map over the image" }), box && box()), el("figcaption", {}, "map over the image"))
      );
    }
    if (src.startsWith("data:image/png;base64,")) {
      pair.appendChild(el("figure", { class: "image-fig" }, el("div", { class: "image-box" }, el("img", { class: "original", src, alt: "the attributed image" }), box && box()), el("figcaption", {}, box ? "image and the explained box" : "image")));
    }
    return pair;
  }

  // A detection run's target box (x1, y1, x2, y2 in pixels) as a maker of outline elements placed
  // in percent of the stored image's (H, W, ...) shape; null for other runs.
  function detectionBox(a) {
    const t = a.target || {};
    const shape = (a.input || {}).shape || [];
    const b = t.box;
    if (t.kind !== "detection_object" || !Array.isArray(b) || b.length !== 4 || !(shape[0] > 0 && shape[1] > 0)) return null;
    const [x1, y1, x2, y2] = b.map(Number);
    const [h, w] = [Number(shape[0]), Number(shape[1])];
    const pct = (v, n) => `${Math.max(0, Math.min(100, (100 * v) / n)).toFixed(2)}%`;
    return () => {
      // positioned through the CSSOM: the page's CSP refuses inline style attributes
      const node = el("div", { class: "det-box", title: `box [${b.join(", ")}]` });
      Object.assign(node.style, { left: pct(x1, w), top: pct(y1, h), width: pct(x2 - x1, w), height: pct(y2 - y1, h) });
      return node;
    };
  }

  function detectionCaption(t) {
    const notes = [];
    if (typeof t.score === "number") notes.push(`score ${t.score.toFixed(2)}`);
    if (Array.isArray(t.box)) notes.push(`box [${t.box.map((v) => Math.round(Number(v))).join(", ")}]`);
    if (t.mode) notes.push(`${t.mode} score`);
    if (t.source) notes.push(String(t.source));
    const name = t.class === undefined || t.class === null ? `#${t.label}` : String(t.class);
    return el("p", { class: "image-class" }, "Explained detection: ", el("span", { class: "class-label" }, name), ` (${notes.join(", ")})`);
  }

  function neuronTable(top, word) {
    return el(
      "table",
      { class: "neuron-top" },
      el("thead", {}, el("tr", {}, el("th", {}, "rank"), el("th", {}, "layer"), el("th", {}, word), el("th", {}, "score"))),
      el("tbody", {}, top.map((r, i) => el("tr", { class: "neuron-row" }, el("td", {}, String(i + 1)), el("td", {}, String(r[0])), el("td", {}, String(r[1])), el("td", {}, r[2] === null ? "n/a" : Number(r[2]).toPrecision(4)))))
    );
  }

  // A program's node tree (GenerationPrograms): op(args) with its instruction, output and cited
  // sentences (unit indices into `units`), children nested under their parent.
  function programTree(node, units) {
    const list = el("ul", { class: "program-tree" });
    list.appendChild(programNode(node, units));
    return list;
  }

  function programNode(node, units) {
    const n = node && typeof node === "object" ? node : {};
    const args = Array.isArray(n.args) ? n.args.map(String) : [];
    const call = n.op === "source" || n.op === "copy" ? args.join(", ") : `${String(n.op)}(${args.join(", ")})`;
    const cites = (Array.isArray(n.citations) ? n.citations : []).filter((i) => Number.isInteger(i) && i >= 0 && i < units.length);
    const item = el(
      "li",
      { class: "program-node", data: { op: String(n.op) } },
      el("code", { class: "program-call" }, call),
      n.instruction ? el("span", { class: "program-instruction" }, ` instruction: ${String(n.instruction)}`) : null,
      n.error ? el("p", { class: "program-error" }, `failed: ${String(n.error)}`) : null,
      n.output !== null && n.output !== undefined && n.op !== "source" ? el("p", { class: "program-output" }, String(n.output)) : null,
      el(
        "ul",
        { class: "program-cites" },
        cites.map((i) => el("li", { class: "program-cite", data: { unit: String(i) } }, el("span", { class: "cite-id" }, `S${i + 1} `), String(units[i].label)))
      )
    );
    const children = Array.isArray(n.children) ? n.children.filter((c) => c && c.op !== "source") : [];
    if (children.length) item.appendChild(el("ul", { class: "program-children" }, children.map((c) => programNode(c, units))));
    return item;
  }

  function classCaption(target) {
    if (target && typeof target === "object" && target.kind === "detection_object") return detectionCaption(target);
    if (!target || typeof target !== "object" || target.class === undefined) return null;
    const label = target.label === undefined || target.label === null ? `#${target.class}` : String(target.label);
    const notes = [`class ${target.class}`];
    if (target.output) notes.push(String(target.output));
    if (target.predicted) notes.push("the predicted class");
    return el("p", { class: "image-class" }, "Explained class: ", el("span", { class: "class-label" }, label), ` (${notes.join(", ")})`);
  }

  function mapLegend() {
    return el(
      "div",
      { class: "legend", "aria-label": "colour scale" },
      el("span", { class: "legend-end" }, "low"),
      el("span", { class: "legend-bar map" }),
      el("span", { class: "legend-end" }, "high"),
      el("span", { class: "legend-note" }, "evidence for the class (positive part of the map)")
    );
  }

  function metaList(run) {
    const a = run.attribution;
    const target = a.target;
    const rows = [
      ["method", run.method],
      ["model", run.model],
      ["task", run.task],
      ["created", when(run.created)],
      ["cost", costText(run.cost)],
      ["units", `${run.units} ${(a.input || {}).kind || ""}`.trim()],
    ];
    if (run.dataset) rows.push(["dataset", `${run.dataset} / ${run.key}`]);
    if (run.params && Object.keys(run.params).length) rows.push(["params", JSON.stringify(run.params)]);
    if (run.statistic !== null && run.statistic !== undefined && Number.isFinite(run.statistic)) {
      rows.push(["statistic", `detector statistic: ${Number(run.statistic).toPrecision(4)}, higher = more machine-like`]);
    }
    if (target && typeof target === "object" && target.description) rows.push(["target", target.description]);
    else if (typeof target === "string") rows.push(["target", target]);
    rows.push(["id", run.id]);
    return el(
      "dl",
      { class: "meta" },
      rows.map(([k, v]) => [el("dt", {}, k), el("dd", { class: "meta-" + k }, v)])
    );
  }

  // Draw the input of one run (any kind) shaded by `vector`; returns {node, paint(vector, ranking)}.
  function inputView(run, vector, ranking) {
    const a = run.attribution;
    const units = a.units;
    if (run.view === "context" || run.view === "text" || run.view === "reasoning" || run.view === "program") {
      const { box, nodes } = textWithUnits(a.input.text, units);
      paintUnits(nodes, vector, ranking);
      return { node: box, paint: (v, r) => paintUnits(nodes, v, r) };
    }
    if (run.view === "agents") return agentTurns(run);
    if (run.view === "provenance" && String((a.input || {}).image_png || "").startsWith("data:image/png;base64,") && units.every((u) => Array.isArray(u.box))) {
      return { node: imageOverlay(run, units, vector) }; // an image's source: its patches over it
    }
    if (run.view === "provenance" && hasTextRanges(a)) {
      const { box, nodes } = textWithUnits(a.input.text, units);
      paintUnits(nodes, vector, ranking);
      return { node: box, paint: (v, r) => paintUnits(nodes, v, r) };
    }
    if (run.view === "generation") return { node: tokenHeatmap(run.tokens) };
    if (run.view === "image") return { node: run.overlay ? imageMap(run) : imageOverlay(run, units, vector) };
    if (run.view === "features") return { node: featureBars(units, vector) };
    if (run.view === "tabular") return { node: tabularBars(run.tabular, vector) };
    if (run.view === "timeseries" && run.series) return { node: seriesCharts(run.series) };
    return { node: rankList(units, vector, ranking, 30) };
  }

  // --- list ---------------------------------------------------------------------------------
  async function showList(params) {
    const query = new URLSearchParams();
    for (const k of ["task", "method", "model"]) if (params.get(k)) query.set(k, params.get(k));
    const data = await api("api/runs?" + query.toString());
    const picked = new Set();
    const compareBtn = el("button", { type: "button", class: "btn", id: "compare-btn", disabled: true }, "Compare 2 selected");
    const hint = el("span", { class: "muted" }, "Tick two runs on the same input to compare them.");
    compareBtn.addEventListener("click", () => {
      const [x, y] = [...picked];
      location.hash = `#/compare/${x}/${y}`;
    });

    const filters = el("form", { class: "filters", "aria-label": "filters" });
    for (const name of ["task", "method", "model"]) {
      const select = el("select", { name, id: "filter-" + name }, el("option", { value: "" }, `any ${name}`));
      for (const v of data.facets[name]) {
        const option = el("option", { value: v }, v);
        if (params.get(name) === v) option.selected = true;
        select.appendChild(option);
      }
      select.addEventListener("change", () => {
        const next = new URLSearchParams(params);
        if (select.value) next.set(name, select.value);
        else next.delete(name);
        location.hash = "#/" + (next.toString() ? "?" + next.toString() : "");
      });
      filters.appendChild(el("label", {}, el("span", {}, name), select));
    }
    filters.addEventListener("submit", (e) => e.preventDefault());

    const table = el(
      "table",
      { class: "runs" },
      el(
        "thead",
        {},
        el("tr", {}, ["", "Target", "Task", "Method", "Model", "Units", "Cost", "Created"].map((h) => el("th", {}, h)))
      )
    );
    const body = el("tbody");
    for (const run of data.runs) {
      const box = el("input", { type: "checkbox", "aria-label": "select for comparison", data: { id: run.id } });
      box.addEventListener("change", () => {
        if (box.checked) picked.add(run.id);
        else picked.delete(run.id);
        compareBtn.disabled = picked.size !== 2;
      });
      body.appendChild(
        el(
          "tr",
          { class: "run-row", data: { id: run.id } },
          el("td", {}, box),
          el("td", { class: "target" }, el("a", { class: "run-link", href: `#/run/${run.id}` }, run.target || `(run ${run.id.slice(0, 8)})`)),
          el("td", {}, el("span", { class: "tag" }, run.task)),
          el("td", {}, run.method),
          el("td", {}, run.model),
          el("td", { class: "num" }, String(run.units)),
          el("td", { class: "num" }, costText(run.cost)),
          el("td", { class: "muted nowrap" }, when(run.created))
        )
      );
    }
    table.appendChild(body);
    const shown = data.runs.length;
    render(
      el("h1", {}, "Stored runs"),
      el("p", { class: "muted" }, `${shown} shown of ${data.total} runs`),
      filters,
      el("div", { class: "compare-bar" }, compareBtn, hint),
      shown ? table : el("p", { class: "empty" }, "No runs match. Store some with attribkit.store or `attribkit run-dataset`.")
    );
  }

  // --- one run -------------------------------------------------------------------------------
  async function showRun(id) {
    const run = await api(`api/runs/${encodeURIComponent(id)}`);
    const a = run.attribution;
    const head = [
      el("p", { class: "crumbs" }, el("a", { href: "#/" }, "← all runs")),
      el("h1", {}, `${run.method} · ${run.task}`, el("span", { class: "tag view-tag" }, run.view)),
      metaList(run),
    ];
    if (run.same_input && run.same_input.length) {
      head.push(
        el(
          "p",
          { class: "compare-with" },
          "Compare with another run on this input: ",
          run.same_input.map((o) =>
            el("a", { class: "chip", href: `#/compare/${run.id}/${o.id}` }, `${o.method} (${o.model})`)
          )
        )
      );
    }
    const ranking = a.ranking || [];
    if (run.view === "context") {
      render(...head, contextView(run));
      return;
    }
    const view = inputView(run, run.vector, ranking);
    let blocks;
    if (run.view === "generation") {
      blocks = [
        generationText(a.target),
        el("h2", {}, "Generated tokens × input tokens"),
        legend(matrixScale(run.tokens.scores), "a row per generated token; blank: a token it cannot see"),
        view.node,
        el("h2", {}, "Ranked input tokens ", el("span", { class: "hint" }, "summed over the generated tokens")),
        rankList(a.units, run.vector, ranking, 20),
      ];
    } else if (run.view === "neurons") {
      const info = run.neurons || { shape: [0, 0], top: [], unit: "neuron" };
      const word = info.unit === "head" ? "head" : "neuron";
      const t = a.target || {};
      blocks = [
        el("p", { class: "neuron-target" }, "Explained: ", el("span", { class: "class-label" }, t.description === undefined ? "" : String(t.description)),
          info.logprob === null || info.logprob === undefined ? "" : ` (log p = ${Number(info.logprob).toFixed(3)})`),
        el("h2", {}, `Layer × ${word} map `, el("span", { class: "hint" }, `${info.shape[0]} layers (rows, first at the top) × ${info.shape[1]} ${word}s (columns); middle colour = 0, scale ±${Number(info.scale || 0).toPrecision(3)}`)),
        String(info.map_png || "").startsWith("data:image/png;base64,") ? el("img", { class: "neuron-map", src: info.map_png, alt: `${word} scores by layer` }) : null,
        el("h2", {}, `Top ${word}s`),
        neuronTable(info.top || [], word),
      ];
    } else if (run.view === "program") {
      const t = a.target || {};
      blocks = [
        el("h2", {}, "Output sentence"),
        el("p", { class: "program-sentence" }, t.sentence === null || t.sentence === undefined ? "(the program produced no sentence)" : String(t.sentence)),
        el("h2", {}, "Program ", el("span", { class: "hint" }, "inner calls first; each node lists the sentences it cites")),
        programTree(a.extras.program, a.units),
        el("h2", {}, "Context ", el("span", { class: "hint" }, "the cited sentences shaded")),
        view.node,
      ];
    } else if (run.view === "reasoning") {
      const r = run.reasoning || {};
      blocks = [
        el("h2", {}, "Problem"),
        el("p", { class: "problem" }, r.problem === null || r.problem === undefined ? "" : String(r.problem)),
        el("h2", {}, "Reasoning ", el("span", { class: "hint" }, "each sentence shaded by its score")),
        legend(maxAbs(run.vector), "blue lowers the answer's log-probability, orange raises it"),
        view.node,
        el("h2", {}, "Answer"),
        el("p", { class: "answer" }, r.answer === null || r.answer === undefined ? "" : String(r.answer)),
      ];
      if (r.matrix) {
        blocks.push(
          el("h2", {}, "Sentence × sentence"),
          legend(matrixScale(r.matrix), "row: the sentence affected; column: the sentence removed or suppressed; blank: no value"),
          reasoningMatrix(r.matrix, a.units)
        );
      }
      blocks.push(el("h2", {}, "Ranked sentences"), rankList(a.units, run.vector, ranking, 20));
    } else if (run.view === "agents") {
      const info = run.agents || {};
      blocks = [
        agentDecision(info),
        el("div", { class: "cols" },
          el("div", { class: "col-main" },
            el("h2", {}, "Turns ", el("span", { class: "hint" }, "each turn shaded by its score")),
            legend(maxAbs(run.vector), "orange: more to blame for the failure, blue: less"),
            view.node
          ),
          el("div", { class: "col-side" }, el("h2", {}, "Agents ", el("span", { class: "hint" }, "total of their turns' scores")), agentTotals(info))
        ),
        el("h2", {}, "Ranked turns"),
        rankList(a.units, run.vector, ranking, 20),
      ];
    } else if (run.view === "provenance") {
      const info = run.provenance || { sources: [], unknown: false, rule: "" };
      const explained = info.source === null || info.source === undefined ? "the explained source" : `p(${info.source})`;
      blocks = [
        provenanceDecision(info),
        el("div", { class: "cols" },
          el("div", { class: "col-main" },
            el("h2", {}, hasTextRanges(a) ? "Text " : "Input ", el("span", { class: "hint" }, "each unit shaded by its score")),
            legend(maxAbs(run.vector), `blue lowers ${explained}, orange raises it`),
            view.node
          ),
          el("div", { class: "col-side" },
            el("h2", {}, "Source distribution ", el("span", { class: "hint" }, "on the full text")),
            sourceBars(info)
          )
        ),
        el("h2", {}, "Ranked units"),
        rankList(a.units, run.vector, ranking, 20),
      ];
    } else if (run.view === "tabular") {
      const info = run.tabular || { features: [], kind: null, fixed: null, denied: null };
      const hint = info.kind === "responsiveness"
        ? "bar: share of the feature's feasible actions that reach the target"
        : info.kind
          ? "bar: the attribution; mark: whether some feasible action on the feature flips the decision"
          : "bar: the attribution";
      blocks = [
        recourseNote(info),
        el("h2", {}, "Features ", el("span", { class: "hint" }, hint)),
        legend(maxAbs(run.vector), info.kind === "responsiveness" ? "orange: the share of the feature's feasible actions that flip the decision" : undefined),
        view.node,
      ];
    } else if (run.view === "timeseries") {
      const info = run.series;
      blocks = [
        seriesCaption(info),
        el("h2", {}, "Series ", el("span", { class: "hint" }, "each channel's line, its attribution shaded under it")),
        legend(info && info.scale ? info.scale : maxAbs(run.vector), "blue lowers the class score, orange raises it"),
        view.node,
        el("h2", {}, "Ranked units"),
        rankList(a.units, run.vector, ranking, 20),
      ];
    } else {
      const withMap = run.view === "image" && run.overlay;
      blocks = [
        run.view === "image" ? classCaption(a.target) : null,
        el("h2", {}, "Attribution"),
        withMap ? mapLegend() : legend(maxAbs(run.vector)),
        view.node,
      ];
      if (run.view !== "generic") blocks.push(el("h2", {}, "Ranked units"), rankList(a.units, run.vector, ranking, 20));
    }
    render(...head, el("section", { class: "view view-" + run.view }, blocks));
  }

  function contextView(run) {
    const a = run.attribution;
    const target = a.target;
    const response = String(target.response);
    const units = a.units;

    // The response as clickable sentences (character ranges from the server).
    const respEl = el("p", { class: "response", id: "response" });
    const sentNodes = [];
    let pos = 0;
    for (const [s, e] of run.sentences) {
      if (s > pos) respEl.appendChild(document.createTextNode(response.slice(pos, s)));
      const node = el(
        "span",
        { class: "sent", tabindex: "0", role: "button", data: { start: String(s), end: String(e) } },
        response.slice(s, e)
      );
      node.addEventListener("click", () => {
        const sel = window.getSelection();
        if (sel && !sel.isCollapsed && respEl.contains(sel.anchorNode)) return; // a drag: mouseup handles it
        querySpan(s, e);
      });
      node.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter" || ev.key === " ") {
          ev.preventDefault();
          querySpan(s, e);
        }
      });
      respEl.appendChild(node);
      sentNodes.push(node);
      pos = e;
    }
    if (pos < response.length) respEl.appendChild(document.createTextNode(response.slice(pos)));
    respEl.addEventListener("mouseup", () => {
      const sel = window.getSelection();
      if (!sel || sel.isCollapsed || !sel.rangeCount) return;
      const range = sel.getRangeAt(0);
      if (!respEl.contains(range.startContainer) || !respEl.contains(range.endContainer)) return;
      const before = document.createRange();
      before.selectNodeContents(respEl);
      before.setEnd(range.startContainer, range.startOffset);
      let start = before.toString().length;
      let end = start + range.toString().length;
      while (start < end && /\s/.test(response[start])) start++;
      while (end > start && /\s/.test(response[end - 1])) end--;
      if (end > start) querySpan(start, end);
    });

    const { box, nodes } = textWithUnits(a.input.text, units);
    const legendSlot = el("div", { class: "legend-slot" });
    const rankTitle = el("h2", { id: "rank-title" }, "Sources of the whole response");
    const rankSlot = el("div", { id: "ranking-slot" });
    const status = el("div", { id: "span-status", class: "span-status", role: "status", data: { state: "idle" } });
    const resetBtn = el("button", { type: "button", class: "btn small", id: "whole-response" }, "Whole response");
    const chips = el("div", { class: "chips", id: "stored-spans" });

    function paint(vector, ranking, title) {
      const scale = paintUnits(nodes, vector, ranking, "sentence");
      legendSlot.replaceChildren(legend(scale));
      rankTitle.textContent = title;
      rankSlot.replaceChildren(rankList(units, vector, ranking));
    }

    function markSelection(s, e) {
      for (const node of sentNodes) {
        const ns = Number(node.dataset.start);
        const ne = Number(node.dataset.end);
        node.classList.toggle("sent-selected", s !== null && ns < e && ne > s);
      }
    }

    function addChip(span) {
      const [s, e] = span.span;
      if (chips.querySelector(`[data-start="${s}"][data-end="${e}"]`)) return;
      chips.appendChild(
        el(
          "button",
          { type: "button", class: "chip", data: { start: String(s), end: String(e) }, on: { click: () => querySpan(s, e) } },
          `“${response.slice(s, e)}”`
        )
      );
    }

    function whole() {
      spanToken++;
      markSelection(null, null);
      paint(run.vector, a.ranking, "Sources of the whole response");
      status.dataset.state = "idle";
      status.textContent = "Click a sentence of the response, or select any part of it, to see its sources.";
    }

    async function querySpan(s, e) {
      const token = ++spanToken;
      markSelection(s, e);
      status.dataset.state = "busy";
      status.textContent = `Finding the sources of “${response.slice(s, e)}”…`;
      try {
        const r = await api(`api/runs/${encodeURIComponent(run.id)}/span`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ start: s, end: e }),
        });
        if (token !== spanToken) return;
        paint(r.vector, r.attribution.ranking, `Sources of “${r.text}”`);
        status.dataset.state = r.live ? "live" : "stored";
        status.replaceChildren(
          el("span", { class: "badge " + (r.live ? "live" : "stored") }, r.live ? "computed live" : "stored"),
          ` “${r.text}” — ` +
            (r.live
              ? `${costText(r.cost)}; now stored in the run store`
              : r.cost.model_calls
                ? `stored span result (cost when computed: ${costText(r.cost)})`
                : "stored span result (computed from the run's cached passes: no extra model calls)")
        );
        addChip(r);
      } catch (err) {
        if (token !== spanToken) return;
        status.dataset.state = "error";
        status.replaceChildren(el("span", { class: "badge error" }, err.status === 409 ? "not stored" : "error"), " " + err.message);
      }
    }

    resetBtn.addEventListener("click", whole);
    for (const span of run.spans) if (span.span) addChip(span);
    whole();

    return el(
      "section",
      { class: "view view-context" },
      el(
        "div",
        { class: "qa" },
        el("h2", {}, "Query"),
        el("p", { class: "query" }, target.query),
        el("h2", {}, "Response ", el("span", { class: "hint" }, "click a sentence or select text")),
        respEl,
        el("div", { class: "span-bar" }, status, resetBtn),
        el(
          "div",
          { class: "stored-spans" },
          el("span", { class: "muted" }, run.spans.length || info.model ? "Span results: " : "No stored span results. "),
          chips,
          info.model ? null : el("span", { class: "muted small" }, "(no model loaded: only stored spans can be shown)")
        )
      ),
      el(
        "div",
        { class: "cols" },
        el("div", { class: "col-main" }, el("h2", {}, "Context"), legendSlot, box),
        el("div", { class: "col-side" }, rankTitle, rankSlot)
      )
    );
  }

  // --- compare -------------------------------------------------------------------------------
  async function showCompare(a, b) {
    const data = await api(`api/compare?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}&k=3`);
    const ag = data.agreement;
    const metric = (name, value, note) =>
      el("div", { class: "metric", data: { metric: name } }, el("div", { class: "metric-value" }, value), el("div", { class: "metric-name" }, note));
    const metrics = el(
      "div",
      { class: "metrics" },
      metric("spearman", plain(ag.spearman), "Spearman ρ"),
      metric("kendall", plain(ag.kendall), "Kendall τ"),
      metric("top_k_overlap", plain(ag.top_k_overlap, 2), `top-${ag.k} overlap`),
      metric("sign_agreement", plain(ag.sign_agreement, 2), "sign agreement"),
      metric("n_compared", String(ag.n_compared), "units compared")
    );
    const side = (run, label) => {
      const view = inputView(run, run.vector, run.attribution.ranking);
      return el(
        "div",
        { class: "side", data: { run: run.id } },
        el("h2", {}, el("span", { class: "side-label" }, label), " ", el("a", { href: `#/run/${run.id}` }, run.method)),
        el("p", { class: "muted" }, `${run.model} · ${costText(run.cost)} · ${when(run.created)}`),
        run.view === "image" && run.overlay
          ? mapLegend()
          : legend(run.view === "generation" ? matrixScale(run.tokens.scores) : maxAbs(run.vector), " "),
        view.node
      );
    };
    const units = data.a.attribution.units;
    const rankA = data.a.attribution.ranking;
    const rankB = data.b.attribution.ranking;
    const table = el(
      "table",
      { class: "runs compare-table" },
      el("thead", {}, el("tr", {}, ["rank A", "rank B", "unit", "score A", "score B"].map((h) => el("th", {}, h))))
    );
    const tbody = el("tbody");
    rankA.slice(0, 15).forEach((i, r) => {
      tbody.appendChild(
        el(
          "tr",
          {},
          el("td", { class: "num" }, String(r + 1)),
          el("td", { class: "num" }, String(rankB.indexOf(i) + 1)),
          el("td", { class: "target" }, units[i].label),
          el("td", { class: "num" }, fmt(data.a.vector[i])),
          el("td", { class: "num" }, fmt(data.b.vector[i]))
        )
      );
    });
    table.appendChild(tbody);
    const target = data.a.attribution.target;
    render(
      el("p", { class: "crumbs" }, el("a", { href: "#/" }, "← all runs")),
      el("h1", {}, `${data.a.method} vs ${data.b.method}`),
      target && typeof target === "object" && target.query
        ? el("p", { class: "qa-line" }, el("b", {}, "Query: "), target.query, el("br"), el("b", {}, "Response: "), target.response)
        : null,
      target && typeof target === "object" && data.a.view === "reasoning"
        ? el("p", { class: "qa-line" }, el("b", {}, "Problem: "), String(target.problem), el("br"), el("b", {}, "Answer: "), String(target.answer))
        : null,
      target && typeof target === "object" && target.prompt !== undefined
        ? el("p", { class: "qa-line" }, el("b", {}, "Prompt: "), String(target.prompt), el("br"), el("b", {}, "Response: "), String(target.response))
        : null,
      target && typeof target === "object" && data.a.view === "agents"
        ? el("p", { class: "qa-line" }, `Log ${String((data.a.attribution.input || {}).log_id || "(no id)")} · ${String((data.a.attribution.input || {}).n_turns)} turns · outcome: ${String(target.outcome)}`)
        : null,
      data.a.view === "provenance" && data.a.provenance
        ? el("p", { class: "qa-line" }, el("b", {}, "Prediction: "), String(data.a.provenance.prediction), ` (${data.a.provenance.rule})`, el("br"), el("b", {}, "Explained source: "), String(data.a.provenance.source))
        : null,
      data.a.view === "image" ? classCaption(target) : null,
      data.same_input ? null : el("p", { class: "warn" }, "These runs have the same units but not the same target; read the agreement with care."),
      el("h2", {}, "Rank agreement"),
      metrics,
      el("div", { class: "cols two" }, side(data.a, "A"), side(data.b, "B")),
      el("h2", {}, "Top units of A, with their rank in B"),
      table
    );
  }

  // --- routing -------------------------------------------------------------------------------
  async function route() {
    const hash = location.hash.replace(/^#/, "") || "/";
    const [path, qs] = hash.split("?");
    const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
    spanToken++;
    try {
      if (parts[0] === "run" && parts[1]) await showRun(parts[1]);
      else if (parts[0] === "compare" && parts[1] && parts[2]) await showCompare(parts[1], parts[2]);
      else await showList(new URLSearchParams(qs || ""));
      document.body.dataset.ready = "1";
    } catch (err) {
      showError(err.message);
      document.body.dataset.ready = "1";
    }
  }

  async function start() {
    try {
      info = await api("api/info");
      const where = document.getElementById("server-info");
      where.replaceChildren(
        el("span", {}, info.store),
        el("span", { class: "badge " + (info.model ? "live" : "stored") }, info.model ? `live model: ${info.model}` : "no model (stored spans only)")
      );
    } catch (err) {
      /* the views report errors themselves */
    }
    window.addEventListener("hashchange", route);
    route();
  }

  start();
})();
