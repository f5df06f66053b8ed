// The selected run's tags and note: shown in its header, edited in place and
// saved with PATCH /api/runs/{id} (the server's answer, and the `run` message
// it pushes to every page, update the run list).

import { runModel } from "./run-model.js";
import { selectedRun, state } from "./state.js";
import { $, el, patchJSON, setText } from "./util.js";

export function initRunLabels() {
  $("labels-edit").addEventListener("click", () => {
    const d = selectedRun();
    if (!d) return;
    $("labels-tags").value = (d.tags || []).join(" ");
    $("labels-note").value = d.note || "";
    $("labels-error").hidden = true;
    $("labels-form").hidden = false;
    $("labels-edit").hidden = true;
    $("labels-tags").focus();
  });
  $("labels-cancel").addEventListener("click", closeForm);
  $("labels-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const id = state.selected;
    const tags = $("labels-tags").value.split(/[\s,]+/).filter(Boolean);
    try {
      const saved = await patchJSON(`/api/runs/${id}`, { tags, note: $("labels-note").value });
      runModel.upsertRun(saved);
      if (id === state.selected) closeForm();
    } catch (err) {
      const box = $("labels-error");
      box.textContent = `Not saved — ${err.status ? `${err.status}: ` : ""}${err.message}`;
      box.hidden = false;
    }
  });
}

function closeForm() {
  $("labels-form").hidden = true;
  $("labels-edit").hidden = false;
  renderRunLabels();
}

/** Show the selected run's tags and note (a new run selected closes the editor). */
export function renderRunLabels() {
  const d = selectedRun();
  const tags = d && Array.isArray(d.tags) ? d.tags : [];
  const node = $("run-tags");
  if (node.dataset.tags !== tags.join(" ")) {
    node.dataset.tags = tags.join(" ");
    node.replaceChildren(...tags.map((t) => el("span", { class: "tag" }, t)));
  }
  setText($("run-note"), d && d.note ? d.note : "");
}

/** A different run was selected: its labels, not the editor of the last one. */
export function resetRunLabels() {
  $("labels-form").hidden = true;
  $("labels-edit").hidden = false;
  renderRunLabels();
}
