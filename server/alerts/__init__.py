"""Gradient-health alerts: rules over the ingested step records and probes (see docs/alerts.md).

Each kind is declared once beside its rule (``spec.KindSpec``: severity, clear steps, parameters, message,
remedies) in its own module of the ``rules`` package; ``kinds`` lists them in evaluation order, ``params``
is the PATCH API over their parameters, ``texts`` the plain-language sentences, ``doctable`` docs/alerts.md's
tables, ``series`` the ring buffers and batch arrays the rules read, ``engine`` the per-run bookkeeping (one
open alert per kind and layer), ``persist`` the SQLite tables.
"""
