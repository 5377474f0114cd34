"""End-to-end tests of ``mmbilevel verify-table1`` through ``mmbilevel.cli.main``."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

import mmbilevel.cli.verify as verify_cli
from mmbilevel.cli import main
from mmbilevel.symbolic import row_names, verify_table1

CATALOGUE_ROWS = ["isru", "sigmoid", "softplus", "arctan", "tanh", "sin", "arcsinh"]


def run_json(capsys: pytest.CaptureFixture[str], *options: str) -> tuple[int, list[dict]]:
    status = main(["verify-table1", "--json", *options])
    return status, json.loads(capsys.readouterr().out)


def test_json_one_object_per_row(capsys: pytest.CaptureFixture[str]) -> None:
    status, data = run_json(capsys)
    assert status == 0
    assert [entry["row"] for entry in data] == list(row_names())


def test_json_contains_catalogue_rows(capsys: pytest.CaptureFixture[str]) -> None:
    _, data = run_json(capsys)
    assert {entry["row"] for entry in data} >= set(CATALOGUE_ROWS)


def test_json_fields(capsys: pytest.CaptureFixture[str]) -> None:
    _, data = run_json(capsys)
    for entry in data:
        assert isinstance(entry["holds"], bool)
        assert isinstance(entry["checks"], dict)
        assert all(isinstance(v, bool) for v in entry["checks"].values())
        assert entry["holds"] == all(entry["checks"].values())
        assert set(entry["notes"]) == set(entry["checks"])


def test_json_verdicts(capsys: pytest.CaptureFixture[str]) -> None:
    _, data = run_json(capsys)
    holds = {entry["row"]: entry["holds"] for entry in data}
    assert holds == {
        "isru": False,
        "sigmoid": True,
        "softplus": False,
        "arctan": True,
        "tanh": True,
        "sin": False,
        "arcsinh": True,
        "example_3_1_isru": False,
        "example_3_2_arctan": False,
    }


def test_json_sin_details(capsys: pytest.CaptureFixture[str]) -> None:
    _, data = run_json(capsys, "--row", "sin")
    (entry,) = data
    assert entry["checks"]["essentially_smooth"] is False
    assert entry["checks"]["gradient_onto"] is False
    assert entry["counterexamples"]["bregman_projection"]["y"] != 0
    assert "rho" in entry["corrections"]
    assert entry["corrected_checks"]["bregman_projection"] is True


def test_json_softplus_correction_holds(capsys: pytest.CaptureFixture[str]) -> None:
    _, data = run_json(capsys, "--row", "softplus")
    assert data[0]["corrected_holds"] is True
    assert "Li₂(e⁻ᵗ)" in data[0]["corrections"]["phi"]


def test_json_repeated_rows(capsys: pytest.CaptureFixture[str]) -> None:
    _, data = run_json(capsys, "--row", "tanh", "--row", "example_3_2_arctan")
    assert [entry["row"] for entry in data] == ["tanh", "example_3_2_arctan"]


def test_text_table(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["verify-table1"])
    text = capsys.readouterr().out
    assert status == 0
    for name in row_names():
        assert name in text
    assert "✓" in text
    assert "✗" in text
    assert "Failures and corrections" in text
    assert "t ↦ t²/2 + Li₂(e⁻ᵗ)" in text


def test_strict_fails_on_failing_rows(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify-table1", "--strict", "--row", "sin"]) == 1


def test_strict_passes_on_holding_rows(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify-table1", "--strict", "--row", "sigmoid"]) == 0


def test_unknown_row_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["verify-table1", "--row", "relu"])
    assert excinfo.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_changed_verdict_exit_status(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stored expectation that disagrees with the checks makes the command fail.
    (report,) = verify_table1(["sigmoid"])
    wrong = replace(report, expected={**report.expected, "conjugate": False})
    monkeypatch.setattr(verify_cli, "verify_table1", lambda names=None: (wrong,))
    assert main(["verify-table1", "--json"]) == 1
