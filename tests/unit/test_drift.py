"""Drift detection against real Evidently: verdicts, thresholds, reports, the request log, too little traffic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("evidently")
np = pytest.importorskip("numpy")
pd = pytest.importorskip("pandas")

from mlspec.errors import MlspecError  # noqa: E402
from mlspec.runtime.drift import (  # noqa: E402
    P_VALUE_METHODS,
    STATTESTS,
    DriftError,
    DriftResult,
    InsufficientDataError,
    detect_drift,
    read_request_log,
)

pytestmark = pytest.mark.slow  # engine-backed: runs Evidently

FEATURES = ["amount", "txn_count_7d", "age_days"]
# spec method -> a threshold that separates a 2-sigma shift from sampling noise at these sizes
NUMERIC_METHODS = {"psi": 0.2, "ks": 0.01, "wasserstein": 0.1, "jensenshannon": 0.2, "kl_div": 0.1}


def _normal(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(loc=[100.0, 5.0, 300.0], scale=[20.0, 2.0, 50.0], size=(rows, 3)), columns=FEATURES)


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return _normal(4000, seed=1)


@pytest.fixture(scope="module")
def same() -> pd.DataFrame:
    return _normal(1500, seed=2)


@pytest.fixture(scope="module")
def shifted(same: pd.DataFrame) -> pd.DataFrame:
    frame = same.copy()
    frame["txn_count_7d"] += 2 * 2.0  # two standard deviations
    return frame


def _run(reference: pd.DataFrame, current: pd.DataFrame, out: Path, method: str, threshold: float) -> DriftResult:
    return detect_drift(
        reference, current, deployment="fraud", features=FEATURES, method=method, threshold=threshold, out_dir=out
    )


def test_every_spec_method_maps_to_an_evidently_stattest() -> None:
    from evidently.legacy.calculations.stattests.registry import _registered_stat_tests

    assert set(STATTESTS) == {"psi", "ks", "wasserstein", "jensenshannon", "chisquare", "kl_div"}
    assert all(name in _registered_stat_tests for name in STATTESTS.values())
    assert {"ks", "chisquare"} == P_VALUE_METHODS


@pytest.mark.parametrize("method", sorted(NUMERIC_METHODS))
def test_same_distribution_is_not_drift(
    reference: pd.DataFrame, same: pd.DataFrame, tmp_path: Path, method: str
) -> None:
    result = _run(reference, same, tmp_path, method, NUMERIC_METHODS[method])
    assert not result.drift_detected
    assert result.drifted_features == ()
    assert [f.feature for f in result.features] == FEATURES
    assert all(f.method == method and f.threshold == NUMERIC_METHODS[method] for f in result.features)


@pytest.mark.parametrize("method", sorted(NUMERIC_METHODS))
def test_two_sigma_shift_flags_exactly_that_feature(
    reference: pd.DataFrame, shifted: pd.DataFrame, tmp_path: Path, method: str
) -> None:
    result = _run(reference, shifted, tmp_path, method, NUMERIC_METHODS[method])
    assert result.drift_detected
    assert result.drifted_features == ("txn_count_7d",)
    assert (result.reference_rows, result.current_rows) == (4000, 1500)


@pytest.mark.parametrize(
    ("method", "high"), [("psi", 50.0), ("wasserstein", 5.0), ("jensenshannon", 0.99), ("kl_div", 50.0)]
)
def test_distance_below_a_high_threshold_is_not_drift(
    reference: pd.DataFrame, shifted: pd.DataFrame, tmp_path: Path, method: str, high: float
) -> None:
    result = _run(reference, shifted, tmp_path, method, high)
    assert not result.drift_detected
    score = result.features[1].score
    assert 0 < score < high
    # Evidently's rule for distances: drift when score >= threshold, on either side of the measured score
    assert _run(reference, shifted, tmp_path, method, score * 0.999).drifted_features == ("txn_count_7d",)
    assert not _run(reference, shifted, tmp_path, method, score * 1.001).features[1].drifted


def test_ks_threshold_is_a_significance_level(reference: pd.DataFrame, same: pd.DataFrame, tmp_path: Path) -> None:
    mild = same.copy()
    mild["txn_count_7d"] += 0.15 * 2.0
    p_value = _run(reference, mild, tmp_path, "ks", 0.05).features[1].score
    assert 0 < p_value < 0.05
    # p-value test: drift when p <= threshold, so a stricter (smaller) threshold than p is not drift
    assert not _run(reference, mild, tmp_path, "ks", p_value * 0.5).features[1].drifted
    assert _run(reference, mild, tmp_path, "ks", p_value * 2).features[1].drifted


def test_chisquare_on_categorical_features(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    channels, regions = ["web", "app", "pos"], ["eu", "us"]
    reference = pd.DataFrame(
        {"channel": rng.choice(channels, 3000, p=[0.5, 0.3, 0.2]), "region": rng.choice(regions, 3000, p=[0.6, 0.4])}
    )
    current = pd.DataFrame(
        {"channel": rng.choice(channels, 1000, p=[0.2, 0.3, 0.5]), "region": rng.choice(regions, 1000, p=[0.6, 0.4])}
    )
    kwargs = {"deployment": "fraud", "features": ["channel", "region"], "out_dir": tmp_path}
    result = detect_drift(reference, current, method="chisquare", threshold=0.01, **kwargs)
    assert result.drifted_features == ("channel",)
    # psi takes categorical features too
    assert detect_drift(reference, current, method="psi", threshold=0.2, **kwargs).drifted_features == ("channel",)


def test_method_that_does_not_fit_a_feature_type_is_refused(
    reference: pd.DataFrame, same: pd.DataFrame, tmp_path: Path
) -> None:
    with pytest.raises(DriftError, match="chisquare does not apply to feature"):
        _run(reference, same, tmp_path, "chisquare", 0.05)
    with pytest.raises(DriftError, match=r"ks does not apply to feature\(s\) amount \(cat\)"):
        detect_drift(
            reference, same, deployment="fraud", features=FEATURES, method="ks", threshold=0.05, out_dir=tmp_path,
            categorical=["amount"],
        )  # fmt: skip
    with pytest.raises(DriftError, match="unknown drift method"):
        _run(reference, same, tmp_path, "ttest", 0.05)
    with pytest.raises(DriftError, match="below 1"):
        _run(reference, same, tmp_path, "ks", 1.5)
    assert list(tmp_path.iterdir()) == []


def test_reports_are_written_and_the_summary_reads_back(
    reference: pd.DataFrame, shifted: pd.DataFrame, tmp_path: Path
) -> None:
    out = tmp_path / "reports"
    result = _run(reference, shifted, out, "psi", 0.2)
    html_path, json_path = out / "fraud-drift.html", out / "fraud-drift.json"
    assert (result.html_report, result.json_summary) == (str(html_path), str(json_path))
    assert sorted(p.name for p in out.iterdir()) == ["fraud-drift.html", "fraud-drift.json"]  # no temp files left

    html = html_path.read_text(encoding="utf-8")
    assert html.lstrip().startswith("<!DOCTYPE html>")
    assert "window.drawDashboard" in html and 'id="root_metric_' in html  # Evidently's dashboard bootstrap
    assert "Data Drift" in html and "PSI" in html
    assert all(f'"{name}"' in html for name in FEATURES)

    summary = json.loads(json_path.read_text(encoding="utf-8"))
    assert DriftResult.from_dict(summary) == result
    assert summary["drift_detected"] is True and summary["drifted_features"] == ["txn_count_7d"]
    assert summary["drift_rule"] == "score >= threshold" and summary["evidently_stattest"] == "psi"
    assert summary["generated_at"].endswith("+00:00")
    assert {k: v for k, v in summary.items() if k not in {"generated_at", "schema_version"}} == result.to_dict()


def test_sampling_is_deterministic_and_bounded(reference: pd.DataFrame, shifted: pd.DataFrame, tmp_path: Path) -> None:
    def run() -> DriftResult:
        return detect_drift(
            reference, shifted, deployment="fraud", features=FEATURES, method="wasserstein", threshold=0.1,
            out_dir=tmp_path, max_rows=500,
        )  # fmt: skip

    first, second = run(), run()
    assert first == second
    assert (first.reference_rows, first.current_rows, first.max_rows) == (4000, 1500, 500)
    assert first.drifted_features == ("txn_count_7d",)


def test_too_little_traffic_raises_and_writes_nothing(
    reference: pd.DataFrame, shifted: pd.DataFrame, tmp_path: Path
) -> None:
    with pytest.raises(InsufficientDataError, match="not enough logged traffic for fraud yet: 29 request") as info:
        _run(reference, shifted.head(29), tmp_path, "psi", 0.2)
    assert isinstance(info.value, MlspecError) and (info.value.rows, info.value.min_rows) == (29, 30)
    assert info.value.hint

    sparse = shifted.head(200).copy()
    sparse.loc[20:, "age_days"] = None  # the server logged this feature for only 20 requests
    with pytest.raises(InsufficientDataError, match="feature age_days"):
        _run(reference, sparse, tmp_path, "psi", 0.2)
    assert list(tmp_path.iterdir()) == []

    # exactly min_rows is enough (a 2-sigma shift is plain even in 30 requests)
    result = _run(reference, shifted.head(30), tmp_path, "ks", 0.001)
    assert result.current_rows == 30 and result.drifted_features == ("txn_count_7d",)


def _write_log(path: Path, frame: pd.DataFrame, start: float = 1_763_870_000.0) -> None:
    lines = [
        json.dumps({"ts": start + i, "variant": "stable", "features": row, "score": 0.1})
        for i, row in enumerate(frame.to_dict(orient="records"))
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_read_request_log_skips_malformed_lines_and_keeps_feature_order(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    good = [
        {"ts": 10.0, "variant": "stable", "features": {"a": 1, "b": 2.5, "c": "web", "extra": 9}, "score": 0.1},
        {"ts": 11, "variant": "canary", "features": {"a": 3, "c": "app"}, "score": 0.2},
        {"ts": 12.5, "features": {"a": 5, "b": 6.0, "c": None}},
    ]
    bad = [
        "not json",
        '{"ts": 13, "features": {"a": 1',  # truncated by a crash
        "[1, 2, 3]",
        '{"ts": "yesterday", "features": {"a": 1}}',
        '{"ts": true, "features": {"a": 1}}',
        '{"features": {"a": 1}}',
        '{"ts": 14, "features": [1, 2]}',
        '{"ts": 15, "features": {"a": {"nested": 1}}}',
    ]
    lines = [json.dumps(good[0]), bad[0], bad[1], json.dumps(good[1]), "", *bad[2:], "   ", json.dumps(good[2])]
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")

    frame = read_request_log(log, ["c", "a", "b"])
    assert list(frame.columns) == ["c", "a", "b"]
    assert frame.attrs["malformed_lines"] == len(bad)
    assert frame["c"].tolist() == ["web", "app", None]
    assert frame["a"].tolist() == [1, 3, 5]
    assert frame["b"].iloc[0] == 2.5 and pd.isna(frame["b"].iloc[1])

    assert read_request_log(log, ["a"], since=11)["a"].tolist() == [3, 5]
    assert read_request_log(log, ["a"], limit=2)["a"].tolist() == [3, 5]  # the most recent
    assert read_request_log(log, ["a"], since=12, limit=5)["a"].tolist() == [5]
    empty = read_request_log(log, ["a", "b"], since=100)
    assert list(empty.columns) == ["a", "b"] and len(empty) == 0

    with pytest.raises(DriftError, match="request log not found"):
        read_request_log(tmp_path / "missing", ["a"])


def test_read_request_log_reads_the_flat_form_the_model_server_writes(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    lines = [
        {"a": 1.5, "b": 2.0, "timestamp": "2025-11-23T04:33:20.000000Z", "deployment": "fraud", "variant": "stable"},
        {"a": 2.5, "b": 3.0, "timestamp": "2025-11-23T04:33:21.500000Z", "deployment": "fraud", "variant": "stable"},
        {"a": 3.5, "b": 4.0, "timestamp": "last tuesday", "deployment": "fraud", "variant": "stable"},
        {"a": 4.5, "b": 5.0, "deployment": "fraud"},
    ]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    frame = read_request_log(log, ["b", "a"])
    assert frame.to_dict(orient="list") == {"b": [2.0, 3.0], "a": [1.5, 2.5]}
    assert frame.attrs["malformed_lines"] == 2
    assert read_request_log(log, ["a"], since=1_763_872_401.0)["a"].tolist() == [2.5]  # 04:33:21 UTC


def test_a_sealed_request_log_holds_no_feature_value_and_reads_back_only_with_the_key(tmp_path: Path) -> None:
    from mlspec.crypto import LocalKey
    from mlspec.serving.reqlog import RequestLog

    key = LocalKey.generate("file://keys/local.key")
    path = tmp_path / "requests.jsonl"
    log = RequestLog(str(path), 1.0, ("amount", "txn_count_7d"), "fraud-api", interval=3600, kek=key)
    rows = np.array([[1234.5, 7.0], [99.25, 3.0]], dtype=np.float32)
    log.add("stable", "3", rows, np.array([0.9, 0.1], dtype=np.float32))
    log.flush()
    log.add("stable", "3", rows[:1], np.array([0.8], dtype=np.float32))
    log.close()
    raw = path.read_bytes()
    assert raw.count(b"\n") == 2 and b"amount" not in raw and b"1234.5" not in raw  # two sealed flushes
    frame = read_request_log(path, ["txn_count_7d", "amount"], keys=key)
    assert frame.to_dict(orient="list") == {"txn_count_7d": [7.0, 3.0, 7.0], "amount": [1234.5, 99.25, 1234.5]}
    with pytest.raises(MlspecError, match="sealed with the environment's key and no key was given"):
        read_request_log(path, ["amount"])
    with pytest.raises(MlspecError, match=r"requests\.jsonl"):
        read_request_log(path, ["amount"], keys=LocalKey.generate("file://keys/local.key"))


def test_forged_plain_rows_in_a_sealed_request_log_are_rejected_and_counted(tmp_path: Path) -> None:
    from mlspec.crypto import LocalKey
    from mlspec.serving.reqlog import RequestLog

    key = LocalKey.generate("file://keys/local.key")
    path = tmp_path / "requests.jsonl"
    log = RequestLog(str(path), 1.0, ("amount", "txn_count_7d"), "fraud-api", interval=3600, kek=key)
    log.add("stable", "3", np.array([[10.0, 1.0]], dtype=np.float32), np.array([0.2], dtype=np.float32))
    log.close()
    forged = [json.dumps({"ts": 1e9 + i, "features": {"amount": 1e6, "txn_count_7d": 99}}) for i in range(300)]
    with path.open("a") as handle:  # what an attacker with write access to the log appends
        handle.write("\n".join(forged) + "\n")
    trusted = read_request_log(path, ["amount", "txn_count_7d"], keys=key, sealed=True)
    assert trusted.to_dict(orient="list") == {"amount": [10.0], "txn_count_7d": [1.0]}
    assert trusted.attrs["unsealed_lines"] == 300
    # without the environment sealing its logs, plain rows are what the server writes, and they count
    assert len(read_request_log(path, ["amount", "txn_count_7d"], keys=key)) == 301


def test_request_log_folder_to_drift_report(reference: pd.DataFrame, shifted: pd.DataFrame, tmp_path: Path) -> None:
    logs = tmp_path / "requests" / "fraud"
    logs.mkdir(parents=True)
    _write_log(logs / "part-0001.jsonl", shifted.iloc[:700])
    _write_log(logs / "part-0002.jsonl", shifted.iloc[700:], start=1_763_880_000.0)
    (logs / "notes.txt").write_text("not a log", encoding="utf-8")

    current = read_request_log(logs, FEATURES)
    assert len(current) == 1500 and current.attrs["malformed_lines"] == 0
    assert np.allclose(current.to_numpy(), shifted.to_numpy())
    result = _run(reference, current, tmp_path / "out", "ks", 0.01)
    assert result.drifted_features == ("txn_count_7d",)

    recent = read_request_log(logs, FEATURES, since=1_763_880_000.0)
    assert len(recent) == 800
