// The run header's download links: GET /api/runs/{id}/export (the login cookie authorises them).

import { $ } from "./util.js";

const FORMATS = ["parquet", "csv"];

/** Point the links at run `id`'s export. */
export function setExportLinks(id) {
  for (const fmt of FORMATS) {
    $(`export-${fmt}`).href = `/api/runs/${encodeURIComponent(id)}/export?format=${fmt}`;
  }
}
