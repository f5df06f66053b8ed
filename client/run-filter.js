// The run list's filter (name, status, tag): which runs the sidebar shows.
// Options come from the statuses the page knows and the tags the runs carry.

import { state } from "./state.js";
import { RUN_STATUSES } from "./protocol.js";
import { $, el } from "./util.js";

const filter = { name: "", status: "", tag: "" };

/** Wire the filter inputs; `onChange` re-renders the list. */
export function initRunFilter(onChange) {
  const status = $("filter-status");
  for (const s of RUN_STATUSES) status.append(el("option", { value: s }, s));
  const read = () => {
    filter.name = $("filter-name").value.trim().toLowerCase();
    filter.status = status.value;
    filter.tag = $("filter-tag").value;
    onChange();
  };
  $("filter-name").addEventListener("input", read);
  status.addEventListener("change", read);
  $("filter-tag").addEventListener("change", read);
}

export function filterActive() {
  return Boolean(filter.name || filter.status || filter.tag);
}

/** Does run summary `r` pass the filter? */
export function runMatches(r) {
  if (filter.name && !String(r.name || "").toLowerCase().includes(filter.name)) return false;
  if (filter.status && r.status !== filter.status) return false;
  if (filter.tag && !(Array.isArray(r.tags) && r.tags.includes(filter.tag))) return false;
  return true;
}

/** Keep the tag choices equal to the tags the runs carry (the chosen one stays while it exists). */
export function renderTagOptions() {
  const tags = new Set();
  for (const r of state.runs.values()) for (const t of Array.isArray(r.tags) ? r.tags : []) tags.add(t);
  const select = $("filter-tag");
  const want = ["", ...[...tags].sort()];
  const have = [...select.options].map((o) => o.value);
  if (want.length === have.length && want.every((t, i) => t === have[i])) return;
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "" }, "any tag"), ...want.slice(1).map((t) => el("option", { value: t }, t)));
  select.value = tags.has(chosen) ? chosen : "";
  if (select.value !== chosen) select.dispatchEvent(new Event("change"));
}
