"""Every read a user makes of a server, checked in one place: the fault tests assert all of them answer 200."""

from __future__ import annotations

from typing import Any

import httpx

#: The per-run reads (the page's and the CLI's): each must answer 200 whatever a trainer sent.
RUN_READS = (
    "/api/runs/{id}",
    "/api/runs/{id}/metrics",
    "/api/runs/{id}/metrics?max_points=16",
    "/api/runs/{id}/alerts",
    "/api/runs/{id}/alert-rules",
    "/api/runs/{id}/commands",
    "/api/runs/{id}/export?format=csv",
    "/api/runs/{id}/export?format=parquet",
)


def failed_reads(srv: Any, run_ids: list[int], timeout: float = 30, label: bool = True) -> list[str]:
    """The reads that did not answer 200 with a complete body, as ``"GET path: status text"``; [] if all did.

    ``label``: also PATCH each run's note (a write: a server whose disk is full answers it 503)."""
    bad: list[str] = []
    with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=timeout) as client:
        paths = ["/api/runs", *(p.format(id=i) for i in run_ids for p in RUN_READS)]
        for path in paths:
            try:
                r = client.get(path)
                if r.status_code != 200:
                    bad.append(f"GET {path}: {r.status_code} {r.text[:200]}")
                elif "export" not in path:
                    r.json()
            except (httpx.HTTPError, ValueError) as err:  # a body broken off mid-stream, or not JSON
                bad.append(f"GET {path}: {type(err).__name__} {err}")
        for i in run_ids if label else ():
            r = client.patch(f"/api/runs/{i}", json={"note": "checked"})
            if r.status_code != 200:
                bad.append(f"PATCH /api/runs/{i}: {r.status_code} {r.text[:200]}")
    return bad


def stored_steps(srv: Any, run_id: int) -> list[int]:
    r = httpx.get(f"{srv.url}/api/runs/{run_id}/metrics", headers=srv.headers, timeout=30)
    assert r.status_code == 200, r.text
    return list(r.json()["step"])
