"""Gradient-health alerts: rules over the ingested step records and probes (see docs/alerts.md).

``params`` holds every rule's tunable numbers, ``series`` the ring buffers and
batch arrays the rules read, ``rules``/``probe_rules`` the six detectors,
``texts`` the plain-language messages and remedies, ``engine`` the per-run
bookkeeping (one open alert per kind and layer), ``persist`` the SQLite tables.
"""
