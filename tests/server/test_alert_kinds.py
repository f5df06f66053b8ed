"""Each alert kind is declared once (``KindSpec`` beside its rule); the protocol, the PATCH API and the docs agree."""

from __future__ import annotations

import pytest
from gradwatch.server.alerts import doctable
from gradwatch.server.alerts.kinds import RULE_TYPES, SPECS
from gradwatch.server.alerts.params import PatchError, settings, validate_patch
from gradwatch.server.alerts.spec import KindSpec

from gradwatch.protocol import ALERT_KINDS, ALERT_LABELS, SEVERITIES, AlertView


def test_the_rules_cover_exactly_the_protocols_kinds_in_its_order() -> None:
    assert tuple(SPECS) == ALERT_KINDS == tuple(ALERT_LABELS)
    assert all(rule.kind == kind and rule.spec is SPECS[kind] for kind, rule in RULE_TYPES.items())
    assert {s.severity for s in SPECS.values()} <= set(SEVERITIES)
    assert set(SEVERITIES) == set(AlertView.model_fields["severity"].annotation.__args__)  # type: ignore[union-attr]


def test_docs_tables_are_the_declared_parameters() -> None:
    text = doctable.DOC_PATH.read_text()
    assert doctable.update(text) == text, "docs/alerts.md is stale: run python -m gradwatch.server.alerts.doctable"
    for spec in SPECS.values():
        assert doctable.section_heading(spec) in text
        for name in spec.params:
            assert f"| `{name}` |" in text


def test_a_stale_docs_table_is_caught() -> None:
    text = doctable.DOC_PATH.read_text()
    missing = text.replace("| `spike_factor_learning` |", "| `spike_factor_forgotten` |")
    assert doctable.update(missing) != missing


@pytest.mark.parametrize("kind", ALERT_KINDS)
def test_the_patch_api_takes_the_declared_ranges(kind: str) -> None:
    spec = SPECS[kind]
    assert settings(kind).params == {n: p.default for n, p in spec.params.items()}
    for name, p in spec.params.items():
        assert validate_patch(kind, {"params": {name: p.high}}) == (None, {name: p.high})
        with pytest.raises(PatchError, match=rf"{kind}\.{name} must be between"):
            validate_patch(kind, {"params": {name: p.high * 2 + 1}})


def test_a_kind_the_protocol_does_not_name_is_refused() -> None:
    spec = SPECS["diverging"]
    with pytest.raises(TypeError, match=r"not in gradwatch\.protocol\.AlertKind"):
        KindSpec("runaway", "warning", 10, {}, (), spec.message)
    with pytest.raises(TypeError, match="severity 'fatal'"):
        KindSpec("diverging", "fatal", 10, {}, (), spec.message)
