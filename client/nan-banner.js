// Non-finite values in the selected run: the NaN/Inf banner, the card's stat
// and its per-variable list.

import { state } from "./state.js";
import { $, el, fmtInt, plural } from "./util.js";

export function renderNanBanner() {
  const s = state.store;
  const banner = $("nan-banner");
  const stat = $("stat-nan");
  renderNonfiniteList(s);
  if (!s || !s.firstNonfinite) {
    banner.hidden = true;
    stat.textContent = s ? "none so far" : "";
    stat.className = "stat stat-ok";
    return;
  }
  const bad = s.nonfiniteVariables();
  const parts = [];
  if (bad.length) parts.push(plural(bad.length, "variable"));
  if (s.lossNonfinite) parts.push(`loss on ${plural(s.lossNonfinite, "step")}`);
  if (s.weightNonfinite) parts.push(`weights on ${plural(s.weightNonfinite, "step")}`);
  $("nan-title").textContent = `NaN/Inf detected since step ${fmtInt(s.firstNonfinite.step)}`;
  const names = bad.slice(0, 12).map((b) => `${b.name} (${fmtInt(b.count)})`);
  let detail = parts.length ? ` in ${parts.join(", ")}` : " in the global gradient norm";
  if (names.length) detail += `: ${names.join(", ")}${bad.length > names.length ? `, and ${bad.length - names.length} more` : ""}`;
  $("nan-detail").textContent = detail;
  banner.dataset.variables = JSON.stringify(bad.map((b) => b.name));
  banner.hidden = false;
  stat.textContent = `${plural(bad.length, "variable")} affected`;
  stat.className = "stat stat-bad";
}

let nfRendered = -1;
function renderNonfiniteList(s) {
  const version = s ? s.nfVersion : -1;
  if (version === nfRendered && s) return;
  nfRendered = version;
  const bad = s ? s.nonfiniteVariables() : [];
  const items = bad.slice(0, 200).map((b) =>
    el("li", { class: "nf-item", dataset: { testid: "nonfinite-var" }, title: b.name },
      el("span", { class: "nf-name" }, el("bdi", {}, b.name)),
      el("span", { class: "nf-count" }, fmtInt(b.count)),
      el("span", { class: "nf-sub" }, `${plural(b.steps, "step", fmtInt(b.steps))} · last at step ${fmtInt(b.last)}`)),
  );
  $("nf-list").replaceChildren(...items);
  $("nf-empty").hidden = bad.length > 0;
}
