"""Predictive maintenance (gridtwin.analytics.maintenance) on synthetic ramps: the predicted
crossing lies within 10 % of the true one on a noisy linear ramp, nothing is raised when the
crossing lies beyond the horizon, confidence falls with noise, and the detector raises and clears a
finding."""

from pathlib import Path

import numpy as np
import pytest

from gridtwin.analytics.base import Context
from gridtwin.analytics.maintenance import THRESHOLDS, MaintenanceDetector, Threshold, forecast
from gridtwin.site import load_site

EXAMPLE = Path(__file__).resolve().parents[2] / "host/gridtwin/examples/site.toml"

T0 = 1_780_000_000_000
H = 3_600_000
TH = Threshold("t_*", 85.0, unit="°C")


def ramp(seed, hours, start_c, rate_c_per_h, noise_c, step_s=60, t0=T0, spikes=0):
    rng = np.random.default_rng(seed)
    ts = t0 + np.arange(0, hours * 3600, step_s) * 1000
    y = start_c + rate_c_per_h * (ts - t0) / H + rng.normal(0, noise_c, len(ts))
    if spikes:  # a faulty reading now and then: Theil-Sen must not follow it
        y[rng.choice(len(y), spikes, replace=False)] += 40.0
    return ts, y


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_crossing_of_a_noisy_linear_ramp_within_10_percent(seed):
    # 12 h of a server warming 1.5 degC/h from 60 degC with +-1 degC noise and 5 spikes: at the end
    # it is at 78 degC, and 85 degC comes 4.67 h later
    ts, y = ramp(seed, 12, 60.0, 1.5, 1.0, spikes=5)
    now = int(ts[-1])
    fc = forecast(ts, y, TH, now, horizon_s=86400, node="srv_a", metric="t_cpu", role="server")
    true_left = (85.0 - (60.0 + 1.5 * (now - T0) / H)) / 1.5
    assert fc.status == "inside horizon"
    assert abs(fc.hours_left - true_left) <= 0.1 * true_left, (fc.hours_left, true_left)
    assert fc.confidence > 0.8
    assert fc.risks and "1.5" in fc.risks[0] and fc.actions[0].startswith("check the server's fans")


def test_no_alert_when_the_crossing_is_beyond_the_horizon():
    # 0.2 degC/h from 60 degC: 85 degC is ~113 h away, beyond a 24 h horizon
    ts, y = ramp(4, 12, 60.0, 0.2, 0.3)
    fc = forecast(ts, y, TH, int(ts[-1]), horizon_s=86400)
    assert fc.status == "beyond horizon" and fc.hours_left > 24
    det = MaintenanceDetector(Context(), horizon_s=86400)
    found = det.observe([("srv_a", "t_cpu", int(t), float(v)) for t, v in zip(ts, y)])
    assert found == []
    # a falling or flat temperature is never forecast to cross
    ts, y = ramp(5, 12, 80.0, -0.5, 0.3)
    assert forecast(ts, y, TH, int(ts[-1])).status == "away"


def test_confidence_falls_with_noise():
    conf = []
    for noise in (0.1, 1.0, 3.0, 10.0, 30.0):
        ts, y = ramp(6, 8, 60.0, 1.0, noise)
        conf.append(forecast(ts, y, TH, int(ts[-1])).confidence)
    assert conf == sorted(conf, reverse=True) and conf[0] > 0.95 and conf[-1] < 0.5, conf


def test_too_short_a_history_forecasts_nothing():
    # an hour's warm-up is not a trend (min span: a quarter of the horizon)
    ts, y = ramp(7, 1, 65.0, 20.0, 0.1)
    assert forecast(ts, y, TH, int(ts[-1]), horizon_s=86400).status == "too short"


def test_detector_raises_then_clears_with_role_actions():
    site = load_site(
        EXAMPLE
    )  # EL1: an electrolyser whose t_stack is a DS18B20 (the catalog's temperature)
    det = MaintenanceDetector(Context(site=site), horizon_s=86400)
    assert (
        det.threshold_for("EL1", "t_stack") is not None
        and det.threshold_for("EL1", "stack_v") is None
    )
    assert (
        det.threshold_for("grid1", "t_box") is not None
        and det.threshold_for("grid1", "mains_hz") is None
    )
    # a metric the catalog does not describe goes by its name (a server's thermometer the site does
    # not wire)
    assert (
        det.threshold_for("srv_a", "t_c").limit == 85.0
        and det.threshold_for("srv_a", "load_kw") is None
    )
    assert (
        det.threshold_for("EL1", "t_stack").limit == 88.0
    )  # a stack runs at 80 degC and trips at 90
    ts, y = ramp(8, 10, 58.0, 2.5, 0.5)  # crosses 88 degC at 12 h
    found = det.observe([("EL1", "t_stack", int(t), float(v)) for t, v in zip(ts, y)])
    raised = [f for f in found if not f.cleared]
    assert raised and not any(f.cleared for f in found)
    first, last = raised[0], raised[-1]
    assert first.kind == "maintenance" and first.metric == "t_stack"
    # raised once the history spans a quarter of the horizon (6 h), forecasting the crossing at 12 h
    assert first.ts - T0 >= 6 * H
    assert abs(last.detail["crossing"] - (T0 + 12 * H)) <= 0.1 * (last.detail["crossing"] - last.ts)
    assert "lye cooling" in last.description and last.detail["actions"][0].startswith(
        "check the lye"
    )
    # the stack is cooled: the temperature falls and the forecast clears
    ts2, y2 = ramp(9, 8, float(y[-1]), -3.0, 0.5, t0=int(ts[-1]) + 60_000)
    found = det.observe([("EL1", "t_stack", int(t), float(v)) for t, v in zip(ts2, y2)])
    assert any(f.cleared for f in found)
    # its buckets survive a restart
    again = MaintenanceDetector(Context(site=site), horizon_s=86400)
    again.restore(det.state())
    assert list(again.series[("EL1", "t_stack")].points) == list(
        det.series[("EL1", "t_stack")].points
    )


def test_default_thresholds_are_the_seed_systems():
    assert (
        THRESHOLDS[-1].limit == 85.0
        and THRESHOLDS[-1].quantity == "temperature"
        and not THRESHOLDS[-1].roles
    )


def test_theil_sen_equals_scipys_without_importing_scipy():
    """The forecast's Theil–Sen and its 95 % interval (Sen 1968, with ties) are scipy's
    theilslopes, computed without importing scipy.stats (~90 MB more RSS in the analytics
    process)."""
    import subprocess
    import sys

    from scipy.stats import theilslopes

    from gridtwin.analytics.maintenance import theil_sen

    rng = np.random.default_rng(0)
    for k in range(100):
        n = int(rng.integers(3, 90))
        x = np.sort(rng.choice(np.arange(0, 500, 1.0 if k % 2 else 5.0), n, replace=k % 3 == 0))
        y = np.round(0.3 * x + rng.normal(0, 3, n), 1 if k % 4 else 0)
        assert np.allclose(theil_sen(x, y), tuple(theilslopes(y, x, alpha=0.95)))
    code = (
        "import sys; from gridtwin.analytics.maintenance import theil_sen; "
        "theil_sen([0, 1, 2, 3], [1, 2, 2, 4]); print('scipy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_days_buckets_of_a_thermometer_take_a_few_kilobytes():
    """A series keeps a horizon's 5-minute means (289): as two arrays, 16 bytes a bucket; a deque of
    (ms, mean) tuples took ~120 (1,000 nodes with two thermometers each: 69 MB after a day)."""
    import sys

    det = MaintenanceDetector(Context(), horizon_s=86400)
    det.observe([("srv", "t_c", T0 + k * 60_000, 40.0 + k * 1e-3) for k in range(26 * 60)])
    (s,) = [s for s in det.series.values() if s is not None]
    assert len(s.points) == det.keep == 289
    assert sys.getsizeof(s.points.ts) + sys.getsizeof(s.points.vals) <= 6_000
    again = MaintenanceDetector(Context(), horizon_s=86400)
    again.restore(det.state())
    assert again.forecasts()[0].slope_per_h == det.forecasts()[0].slope_per_h


def test_first_sight_of_a_node_s_metrics_reads_the_site_once(monkeypatch):
    # a fresh daemon draining a backlog meets every (node, metric) at once: the catalog's metrics
    # of a node are worked out once for all its metrics (once for each was most of analytics' CPU)
    import gridtwin.catalog as catalog

    calls = []
    real = catalog.node_metrics
    monkeypatch.setattr(catalog, "node_metrics", lambda n: calls.append(n.id) or real(n))
    site = load_site(EXAMPLE)
    det = MaintenanceDetector(Context(site=site), horizon_s=86400)
    metrics = ["t_stack", "stack_v", "stack_a", "h2_nm3h", "t_c"]
    det.observe([("EL1", m, T0, 20.0) for m in metrics] + [("grid1", "t_box", T0, 20.0)])
    assert sorted(calls) == ["EL1", "grid1"]
    assert det.series[("EL1", "t_stack")] is not None and det.series[("EL1", "stack_v")] is None
