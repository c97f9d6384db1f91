"""Multivariate anomalies: one scikit-learn ``IsolationForest`` per node, on its metrics and derived
features.

    det = IsolationForestDetector(ctx, train_s=86400, retrain_s=3600, contamination=0.001)
    findings = det.observe(batch)      # scores each node's new rows once its model is trained
    det.tick(now_ms)                   # trains what is due (in the worker unless background=False)
    det.close()                        # stops the worker

A node's *row* is the readings one message carried (same node, same ts). Its features are every
metric the node reports plus, derived: the power of each ``<p>_v``/``<p>_a`` pair without a
``<p>_w``, each metric's absolute deviation from its nominal (``nominal`` config, else the training
median) and each metric's rate of change per second (against the node's previous row; 0 after a
gap).

Training reads the last ``train_s`` of the node's *stored* readings (ctx.store, the daemon's
reader), so a restart or a new model never needs the readings in memory; the window ends at the
newest reading seen (the readings' clock, not the host's: a replay or the bench's simulated days
train on their own time). No model, no alert: a node needs ``min_samples`` stored rows first. Models
are retrained every ``retrain_s`` of reading time by a background thread and saved with their
training window (a pickle of numpy arrays, mode 0600, in the site's var/analytics/), and reloaded
at start. In the analytics process (``train_process``) each round of training fits in a Python
process of its own, so scikit-learn is never imported there.

Scoring does not call scikit-learn: each fitted forest is compiled into flat arrays and walked for
all of a node's new rows at once (numpy, one pass per tree level), which is what lets one worker
score tens of thousands of readings a second; it equals ``IsolationForest.decision_function`` (tests
check it). A row is anomalous below the contamination's offset; ``confirm`` anomalous rows among the
last ``confirm_window`` raise the condition (one row in ``1/contamination`` is an outlier by
construction: a single one is not worth an alert; three of thirty independent ones, about once a
year of a node's 10 s rows; a glitching sensor's spikes, one report in twenty, are almost never
three in a row, as the detector once waited for); a whole ``confirm_window`` of normal rows (and at
least ``clear_rows``) clears it. The finding names the metric that
strays most from its training median (robust z), kept for the life of the condition so the alert
keeps one key.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from pathlib import Path

from gridtwin.analytics.base import Context, Finding, LazyModule, Reading
from gridtwin.analytics.config import setting

np = LazyModule("numpy")  # imported at its first use: gridtwin.analytics.base.LazyModule

log = logging.getLogger("gridtwin.analytics.iforest")

# 2: the compiled arrays are saved, not scikit-learn's estimator; 3: pickled; 4: 7 bytes a tree node
MODEL_VERSION = 4
# a feature this many times farther from its median than all but 0.1 % of the training rows (robust
# deviations, at least 3): out of the envelope. The quantile, not the farthest row, so that an
# anomaly the training window holds does not widen the envelope for the next.
ENVELOPE, ENVELOPE_Q = 3.0, 0.999
IDLE_S = 10.0  # the training worker ends after this long without a request
ROUND_GAP_S = 60.0  # with train_process: a round of training (a process started) a minute at most
# retraining leaves out what the last model found outside its envelope, up to this share
MAX_EXCLUDED = 0.2
SEVERITY_BY_MARGIN = (
    (0.10, "high"),
    (0.05, "medium"),
    (0.0, "low"),
)  # how far below the offset the score is


def _avg_path(n: np.ndarray) -> np.ndarray:
    """c(n): the mean path length of an unsuccessful BST search (Liu et al. 2008), as scikit-learn
    computes it."""
    n = np.asarray(n, dtype=float)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


class CompiledForest:
    """A fitted IsolationForest as compact flat arrays, walked for all rows and trees level by
    level.

    Every tree's nodes concatenated, 7 bytes a node: ``step`` (int16) from a node to its right
    child (its left child is the next node: scikit-learn builds depth first), 0 at a leaf; ``feat``
    (uint8, uint16 beyond 256 features); ``val`` (float32): at a split, the threshold rounded down
    to the float32 below it, which the trees' float32 inputs compare against exactly as against the
    float64 split; at a leaf (step 0: a row that arrived stays), its path length (its depth plus
    the average path of the samples it holds). One array for both (they were two, 0 or -inf where
    unused: 11 bytes a node). scikit-learn's own trees (~90 bytes a node with their value arrays)
    are not kept: a node's forest is ~19 KB instead of ~1.4 MB."""

    __slots__ = ("step", "feat", "val", "roots", "levels", "denom", "offset")
    ARRAYS = ("step", "feat", "val", "roots")

    def __init__(self, step, feat, val, roots, levels: int, denom: float, offset: float):
        self.step, self.feat, self.val, self.roots = step, feat, val, roots
        self.levels, self.denom, self.offset = int(levels), float(denom), float(offset)

    @classmethod
    def from_model(cls, model) -> "CompiledForest":
        steps, feats, vals, roots = [], [], [], []
        base = 0
        n_features = int(model.n_features_in_)
        for tree, features, dpl, apl in zip(
            model.estimators_,
            model.estimators_features_,
            model._decision_path_lengths,
            model._average_path_length_per_tree,
        ):
            t = tree.tree_
            leaf = t.children_left < 0
            idx = np.arange(t.node_count)
            if not np.array_equal(t.children_left[~leaf], idx[~leaf] + 1):
                raise ValueError("a tree not built depth first: its left children do not follow")
            steps.append(np.where(leaf, 0, t.children_right - idx))
            feats.append(np.asarray(features)[np.where(leaf, 0, t.feature)])
            thr = np.where(leaf, -np.inf, t.threshold)
            t32 = thr.astype(np.float32)
            up = t32.astype(np.float64) > thr  # rounded up: one float32 lower keeps x <= thr exact
            t32[up] = np.nextafter(t32[up], np.float32(-np.inf))
            depth = np.asarray(dpl, dtype=float) + np.asarray(apl, dtype=float) - 1.0
            vals.append(np.where(leaf, depth.astype(np.float32), t32))
            roots.append(base)
            base += t.node_count
        step = np.concatenate(steps)
        if np.abs(step).max(initial=0) > np.iinfo(np.int16).max:
            raise ValueError("a tree too large for int16 steps: use max_samples <= 8192")
        return cls(
            step.astype(np.int16),
            np.concatenate(feats).astype(np.uint8 if n_features <= 256 else np.uint16),
            np.concatenate(vals).astype(np.float32),
            np.asarray(roots, dtype=np.int32),
            max(t.tree_.max_depth for t in model.estimators_),
            len(model.estimators_) * float(_avg_path(np.array([model._max_samples]))[0]),
            model.offset_,
        )

    def arrays(self) -> dict:
        """What is saved (numpy arrays and numbers: no scikit-learn object)."""
        d = {a: getattr(self, a) for a in self.ARRAYS}
        d.update(levels=self.levels, denom=self.denom, offset=self.offset)
        return d

    @classmethod
    def from_arrays(cls, d: dict) -> "CompiledForest":
        return cls(*(np.asarray(d[a]) for a in cls.ARRAYS), d["levels"], d["denom"], d["offset"])

    def decision(self, X: np.ndarray) -> np.ndarray:
        """IsolationForest.decision_function(X): negative = anomalous."""
        X = np.asarray(X, dtype=np.float32)  # the trees split on float32 inputs
        r = X.shape[0]
        node = np.broadcast_to(self.roots, (r, len(self.roots))).copy()
        rows = np.arange(r)[:, None]
        for _ in range(self.levels):
            step = self.step[node]
            go_left = (X[rows, self.feat[node]] <= self.val[node]) & (step != 0)
            node += np.where(go_left, 1, step)
        depth = self.val[node].sum(axis=1, dtype=np.float64)
        score = -(2.0 ** (-depth / self.denom)) if self.denom else -np.ones(r)
        return score - self.offset

    def nbytes(self) -> int:
        return sum(getattr(self, a).nbytes for a in self.ARRAYS)


def fit_forest(X, n_estimators: int, max_samples: int, contamination: float, seed: int) -> dict:
    """scikit-learn's IsolationForest fitted on X, compiled: CompiledForest.arrays(). A function of
    its own so that it can run in a short-lived process (``train_process``): scikit-learn is ~150 MB
    of RSS once imported, and an interpreter never gives it back."""
    from sklearn.ensemble import IsolationForest

    model = IsolationForest(
        n_estimators=n_estimators,
        max_samples=min(max_samples, len(X)),
        contamination=contamination,
        random_state=seed,
    ).fit(X)
    return CompiledForest.from_model(model).arrays()


class _Trainer:
    """A Python process that fits forests for one round of training (``train_process``): each job
    pickled to its stdin, each forest's arrays pickled back on its stdout; it ends with the round.
    Not multiprocessing (its resource tracker, a process more), and this way the analytics process
    never imports scikit-learn (~150 MB of RSS an interpreter keeps). Started by gridtwin.procs: in
    a session of its own, and it dies with the thread that trains (the kernel's parent-death
    signal) if the analytics process is killed mid-round."""

    def __init__(self):
        import subprocess

        from gridtwin import procs
        from gridtwin.analytics.process import below_ingest

        cmd, env = procs.python_module("gridtwin.analytics.iforest")
        self.proc = procs.spawn(
            cmd,
            kind="training process",
            setup=below_ingest,  # a round is seconds of CPU: below ingest (its session too)
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )

    def fit(self, *args) -> dict:
        import pickle

        pickle.dump(args, self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        self.proc.stdin.flush()
        ok, result = pickle.load(self.proc.stdout)
        if not ok:
            raise RuntimeError(f"the training process failed: {result}")
        return result

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(10)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        finally:
            self.proc.stdout.close()
            from gridtwin import procs

            procs.reaped(self.proc)


def _trainer_main() -> None:
    """The training process: fit_forest for each job on stdin until it closes."""
    import pickle
    import signal
    import sys

    # a stray Ctrl-C or hang-up: the analytics process ends this one by closing its stdin (or it
    # ends with the round), never with a traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # whatever a library prints must not get into the pickles
    while True:
        try:
            args = pickle.load(inp)
        except EOFError:
            return
        try:
            result = (True, fit_forest(*args))
        except Exception as exc:  # said to the caller, which logs it
            result = (False, f"{type(exc).__name__}: {exc}")
        pickle.dump(result, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()


class Features:
    """The feature layout of one node: its metrics, power pairs, deviations and rates."""

    def __init__(self, metrics: list[str], nominal: dict[str, float], gap_s: float):
        self.metrics = sorted(metrics)
        have = set(self.metrics)
        self.pairs = [
            (m[:-2] + "_v", m[:-2] + "_a")
            for m in self.metrics
            if m.endswith("_v") and m[:-2] + "_a" in have and m[:-2] + "_w" not in have
        ]
        self.nominal = np.array([nominal.get(m, math.nan) for m in self.metrics])
        self.gap_s = gap_s
        # the training median: the nominal of a metric without one
        self.median_raw: np.ndarray | None = None
        self.pca: tuple | None = None  # (center, scale, components) of the training rows' metrics
        self._layout(0)

    def _layout(self, pcs: int) -> None:
        self.names = (
            self.metrics
            + [f"{v[:-2]}_w*" for v, _ in self.pairs]
            + [f"|{m}-nom|" for m in self.metrics]
            + [f"d{m}/dt" for m in self.metrics]
            + [f"relation{k + 1}" for k in range(pcs)]
        )
        # each feature back to the metric a user knows (a relation: the metric that weighs most in
        # it)
        heavy = (
            [self.metrics[int(np.argmax(np.abs(self.pca[2][:, k])))] for k in range(pcs)]
            if pcs
            else []
        )
        self.source = (
            self.metrics + [v for v, _ in self.pairs] + self.metrics + self.metrics + heavy
        )

    def fit(self, raw: np.ndarray) -> None:
        """Learn the medians and the node's usual relations from the training rows.

        An IsolationForest splits one feature at a time, so a reading that breaks the relation
        between two metrics (a voltage that belongs to another current) while each stays in its
        range looks normal to it. The principal components of the standardised metrics make each
        relation a feature of its own: the minor ones are near zero while the relations hold."""
        self.median_raw = np.median(raw, axis=0)
        if raw.shape[1] < 2:
            return
        center = raw.mean(axis=0)
        scale = raw.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        _u, _s, vt = np.linalg.svd((raw - center) / scale, full_matrices=False)
        self.pca = (center, scale, vt.T)
        self._layout(vt.shape[0])

    def matrix(self, ts: np.ndarray, raw: np.ndarray, prev: tuple | None) -> np.ndarray:
        """Features of rows (ts ms, raw values in self.metrics order), given the row before the
        first."""
        n = len(ts)
        col = {m: i for i, m in enumerate(self.metrics)}
        power = [raw[:, col[v]] * raw[:, col[a]] for v, a in self.pairs]
        med = self.median_raw if self.median_raw is not None else np.nanmedian(raw, axis=0)
        nom = np.where(np.isnan(self.nominal), med, self.nominal)
        dev = np.abs(raw - nom)
        prev_ts = np.empty(n)
        prev_raw = np.empty_like(raw)
        if n:
            prev_ts[1:], prev_raw[1:] = ts[:-1], raw[:-1]
            if prev is None:
                prev_ts[0], prev_raw[0] = ts[0], raw[0]
            else:
                prev_ts[0], prev_raw[0] = prev
        dt = (ts - prev_ts) / 1000.0
        ok = (dt > 0) & (dt <= self.gap_s)
        rate = np.where(ok[:, None], (raw - prev_raw) / np.where(ok, dt, 1.0)[:, None], 0.0)
        parts = [raw] + ([np.column_stack(power)] if power else []) + [dev, rate]
        if self.pca is not None:
            center, scale, comps = self.pca
            parts.append(((raw - center) / scale) @ comps)
        return np.column_stack(parts) if n else np.empty((0, len(self.names)))


class _Fit:
    """One node's trained model: the compiled forest (scikit-learn's is dropped once compiled), the
    feature layout, the training rows' median and robust scale per feature (the explanation) and the
    end of its training window."""

    __slots__ = ("forest", "feats", "center", "scale", "envelope", "trained_to")

    def __init__(
        self,
        forest: CompiledForest,
        feats: Features,
        center: np.ndarray,
        scale: np.ndarray,
        envelope: np.ndarray,
        trained_to: int,
    ):
        self.forest, self.feats = forest, feats
        self.center, self.scale, self.envelope, self.trained_to = (
            center,
            scale,
            envelope,
            int(trained_to),
        )

    def nbytes(self) -> int:
        f = self.feats
        extra = [f.nominal, f.median_raw, *(f.pca or ())]
        return self.forest.nbytes() + sum(
            a.nbytes for a in [self.center, self.scale, self.envelope, *extra] if a is not None
        )

    def judge(self, X: np.ndarray) -> np.ndarray:
        """Per row: the forest's decision, or below it when a feature leaves the training envelope.

        A forest cannot rank what lies beyond everything it was trained on: every split sends such a
        row with the training extremes, so a voltage 100 deviations off its usual relation scores
        like the most unusual minute of the day. Beyond the envelope (see ENVELOPE) a row is
        anomalous by how far out it is."""
        d = self.forest.decision(X)
        worst = self.worst(X)
        return np.where(worst > 1.0, np.minimum(d, -0.01 * worst), d)

    def worst(self, X: np.ndarray) -> np.ndarray:
        """Per row: how far its farthest feature is, in envelopes (> 1: outside)."""
        if not X.shape[1]:
            return np.zeros(len(X))
        return (np.abs((X - self.center) / self.scale) / self.envelope).max(axis=1)

    def outside(self, X: np.ndarray) -> np.ndarray:
        return self.worst(X) > 1.0


class _Node:
    __slots__ = (
        "metrics",
        "pending_ts",
        "pending",
        "last",
        "prev",
        "fit",
        "streak",
        "normal",
        "active",
        "active_metric",
        "newest",
        "tried_at",
    )

    def __init__(self):
        self.metrics: set[str] = set()
        self.pending_ts: int | None = None
        self.pending: dict[str, float] = {}
        self.last: dict[
            str, float
        ] = {}  # the last value of each metric (fills a row that lacks one)
        self.prev: tuple | None = None  # (ts, raw row) of the last scored row: the rates' reference
        # swapped whole by the trainer: the scorer never sees half a model
        self.fit: _Fit | None = None
        self.streak = 0  # the last confirm_window rows' verdicts, a bit each (1: anomalous)
        self.normal = 0  # normal rows in a row
        self.active = False
        self.active_metric = ""
        self.newest = 0  # newest reading ts seen (the training window's end)
        self.tried_at = None  # reading time of the last training attempt

    @property
    def trained_to(self):
        return self.fit.trained_to if self.fit is not None else None


class IsolationForestDetector:
    name = "iforest"

    def __init__(
        self,
        ctx: Context,
        *,
        train_s: float = 86400.0,
        retrain_s: float = 3600.0,
        contamination: float = 0.001,
        min_samples: int = 1000,
        max_train: int = 8192,
        n_estimators: int = 50,
        max_samples: int = 64,
        confirm: int = 3,
        confirm_window: int = 30,
        clear_rows: int = 5,
        nominal: dict[str, float] | None = None,
        gap_s: float = 120.0,
        seed: int = 0,
        path: str | os.PathLike | None = None,
        background: bool = True,
        min_metrics: int = 2,
        train_process: bool = False,
    ):
        if not 0.0 < contamination <= 0.5:
            raise ValueError(f"contamination {contamination} is not in (0, 0.5]")
        self.ctx = ctx
        self.train_ms, self.retrain_ms = int(train_s * 1000), int(retrain_s * 1000)
        self.contamination, self.min_samples, self.max_train = contamination, min_samples, max_train
        self.n_estimators, self.max_samples, self.seed = n_estimators, max_samples, seed
        self.confirm, self.clear_rows, self.gap_s, self.min_metrics = (
            confirm,
            clear_rows,
            gap_s,
            min_metrics,
        )
        # the last confirm_window rows' verdicts, one bit a row (1: anomalous), newest lowest
        self.confirm_window = max(confirm, min(int(confirm_window), 62))
        self._window_mask = (1 << self.confirm_window) - 1
        self.nominal = dict(nominal or {})
        self.nodes: dict[str, _Node] = {}
        self.path = Path(path) if path else self._default_path()
        self.background = background
        # fit in a process of its own, started for a round of training and ended with it (the
        # analytics process: scikit-learn never enters it); else on the training thread
        self.train_process = train_process
        self._pool = None
        self._last_round = -math.inf
        self.trainings = 0
        self._lock = threading.Lock()  # guards the set of nodes due for training
        self._due: set[str] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self.trained = (
            threading.Event()
        )  # set after each round that trained a model (tests await it)
        self.load()

    def _default_path(self) -> Path | None:
        site = self.ctx.site
        var = getattr(site, "var_dir", None) if site is not None else None
        return Path(var) / "analytics" / "iforest.joblib" if var else None

    # --- the stream ------------------------------------------------------------------------------

    def observe(self, batch: list[Reading]) -> list[Finding]:
        rows: dict[str, list] = {}
        nodes = self.nodes
        for node, metric, ts, value in batch:
            st = nodes.get(node)
            if st is None:
                st = nodes[node] = _Node()
            if st.pending_ts != ts:
                if st.pending:
                    rows.setdefault(node, []).append((st.pending_ts, st.pending))
                st.pending_ts, st.pending = ts, {}
            st.pending[metric] = value
            st.metrics.add(metric)
        # a message's readings are committed together: the rows still open are complete
        for node, st in nodes.items():
            if st.pending:
                rows.setdefault(node, []).append((st.pending_ts, st.pending))
                st.pending_ts, st.pending = None, {}
        out: list[Finding] = []
        for node, rs in rows.items():
            st = nodes[node]
            st.newest = max(st.newest, rs[-1][0])
            self._maybe_due(node, st)
            if st.fit is not None:
                out += self._score(node, st, rs)
            else:
                for _ts, m in rs:
                    st.last.update(m)
        return out

    def tick(self, now_ms: int) -> list[Finding]:
        """Training that is due: handed to the worker, or done here when background is off."""
        if self._due:
            if self.background:
                self._start_worker()
                self._wake.set()
            else:
                self.train_due()
        return []

    def _maybe_due(self, node: str, st: _Node) -> None:
        if len(st.metrics) < self.min_metrics:
            return
        if st.trained_to is None:
            # untrained: try again once another tenth of the warm-up's worth of time has passed
            if st.tried_at is None or st.newest - st.tried_at >= min(
                self.retrain_ms, self.train_ms // 10
            ):
                self._due.add(node)
        elif st.newest - st.trained_to >= self.retrain_ms:
            self._due.add(node)

    def _score(self, node: str, st: _Node, rs: list) -> list[Finding]:
        fit = st.fit
        feats = fit.feats
        metrics = feats.metrics
        raw = np.empty((len(rs), len(metrics)))
        ts = np.empty(len(rs))
        last = st.last
        for i, (t, m) in enumerate(rs):
            last.update(m)
            ts[i] = t
            raw[i] = [last.get(k, math.nan) for k in metrics]
        keep = ~np.isnan(raw).any(axis=1)
        if not keep.all():
            raw, ts, rs = raw[keep], ts[keep], [r for r, k in zip(rs, keep) if k]
            if not len(ts):
                return []
        X = feats.matrix(ts, raw, st.prev)
        st.prev = (ts[-1], raw[-1].copy())
        d = fit.judge(X)
        # findings of the batch: a condition's first row and its last, and its end; a condition that
        # starts and ends within one batch (a daemon's backlog, a replay) is reported whole
        out: list[Finding] = []
        hold = None
        mask = self._window_mask
        for i in range(len(d)):
            if d[i] < 0:
                st.streak = ((st.streak << 1) | 1) & mask
                st.normal = 0
                if st.streak.bit_count() >= self.confirm:
                    first = not st.active
                    if first:
                        st.active = True
                        st.active_metric = self._top_metric(fit, X[i])
                    f = self._finding(node, st, fit, int(ts[i]), raw[i], X[i], float(d[i]))
                    if first:
                        out.append(f)
                    else:
                        hold = f
            else:
                st.streak = (st.streak << 1) & mask
                st.normal += 1
                # over when the whole confirm window is normal: an intermittent fault (a sensor
                # spiking every 20 reports) holds one alert, not one per spike
                if st.active and not st.streak and st.normal >= self.clear_rows:
                    st.active = False
                    if hold is not None:
                        out.append(hold)
                        hold = None
                    out.append(
                        Finding(
                            node,
                            st.active_metric,
                            int(ts[i]),
                            None,
                            "iforest",
                            "low",
                            f"{node}: its metrics are back to their usual pattern",
                            cleared=True,
                        )
                    )
        if hold is not None:
            out.append(hold)
        return out

    @staticmethod
    def _top_metric(fit: _Fit, x: np.ndarray) -> str:
        z = np.abs((x - fit.center) / fit.scale)
        return fit.feats.source[int(np.nanargmax(z))]

    def _finding(
        self, node: str, st: _Node, fit: _Fit, ts: int, raw: np.ndarray, x: np.ndarray, d: float
    ) -> Finding:
        metric = st.active_metric
        if metric not in fit.feats.metrics:  # restored from a run whose model had other metrics
            metric = st.active_metric = self._top_metric(fit, x)
        k = fit.feats.metrics.index(metric)
        z = (x - fit.center) / fit.scale
        top = np.argsort(-np.abs(z))[:3]
        why = ", ".join(f"{fit.feats.names[j]} {z[j]:+.1f}σ" for j in top)
        sev = next(s for lim, s in SEVERITY_BY_MARGIN if -d >= lim)
        median = float(fit.feats.median_raw[k])
        return Finding(
            node,
            metric,
            ts,
            float(raw[k]),
            "iforest",
            sev,
            f"{node}: unusual combination of readings, mostly {metric} = {raw[k]:g} "
            f"(usually about {median:g}); {why}",
            detail={
                "score": round(d, 4),
                "top": [fit.feats.names[j] for j in top],
                "trained": [fit.trained_to - self.train_ms, fit.trained_to],
            },
        )

    # --- training --------------------------------------------------------------------------------

    def _start_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._run, name="gridtwin-iforest", daemon=True)
            self._worker.start()

    def _run(self) -> None:
        # the worker lives while there is training to do: it ends after IDLE_S without a request
        # (tick() starts it again), so a daemon that stops without close() leaves no thread behind
        # for long
        while not self._stop.is_set():
            if not self._wake.wait(IDLE_S):
                return
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.train_due()
            except Exception:  # a failed round is logged; the next one tries again, scoring goes on
                log.exception("IsolationForest training failed")

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout=10)

    def train_due(self) -> int:
        """Train every node that is due; returns how many got a model. Saves the models when any
        did."""
        # with train_process, a round that fits starts a process that imports scikit-learn: one such
        # round every ROUND_GAP_S at most (what falls due meanwhile waits for the next)
        if self.train_process and time.monotonic() - self._last_round < ROUND_GAP_S:
            return 0
        with self._lock:
            due, self._due = sorted(self._due), set()
        trained = 0
        try:
            for node in due:
                st = self.nodes[node]
                st.tried_at = st.newest
                if self.train_node(node, st.newest):
                    trained += 1
        finally:
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.close()
        if trained:
            self.save()
            self.trained.set()
        return trained

    def training_rows(
        self, node: str, metrics: list[str], lo: int, hi: int
    ) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(metrics, ts, raw rows) of the node's stored readings in [lo, hi], rows that carry every
        one of `metrics` the store holds: what analytics derives (an electrolyser's efficiency,
        gridtwin.analytics.derived) is seen but never stored, and a model cannot wait for it."""
        store = self.ctx.store
        if store is None:
            return [], (), ()
        cols: dict[int, list] = {}
        for j, m in enumerate(metrics):
            for ts, v in store.query(node, m, lo, hi + 1):
                if isinstance(v, (int, float)):
                    cols.setdefault(ts, [math.nan] * len(metrics))[j] = float(v)
        if len(cols) < self.min_samples:
            # too few rows to train on: said without numpy, which the analytics process then
            # imports only once a node can have a model
            return [], (), ()
        ts = np.array(sorted(cols), dtype=float)
        raw = np.array([cols[int(t)] for t in ts])
        stored = ~np.isnan(raw).all(axis=0)
        raw = raw[:, stored]
        keep = ~np.isnan(raw).any(axis=1)
        return [m for m, k in zip(metrics, stored) if k], ts[keep], raw[keep]

    def train_node(self, node: str, end_ms: int) -> bool:
        st = self.nodes[node]
        metrics, ts, raw = self.training_rows(
            node, sorted(st.metrics), end_ms - self.train_ms, end_ms
        )
        if len(ts) < self.min_samples or len(metrics) < self.min_metrics:
            log.debug(
                "%s: %d rows stored in the training window, %d needed",
                node,
                len(ts),
                self.min_samples,
            )
            return False
        old = st.fit
        if old is not None and old.feats.metrics == metrics:
            # what the last model found out of its envelope is not learnt as normal by the next (or
            # one fault in the window widens the envelope for all the others); unless it is most of
            # the window: then the normal has moved, and the model must follow
            out = old.outside(old.feats.matrix(ts, raw, None))
            if 0 < out.sum() <= MAX_EXCLUDED * len(ts):
                ts, raw = ts[~out], raw[~out]
        feats = Features(metrics, self.nominal, self.gap_s)
        feats.fit(raw)
        X = feats.matrix(ts, raw, None)
        if len(X) > self.max_train:  # evenly over the window, deterministic
            X = X[np.linspace(0, len(X) - 1, self.max_train).astype(int)]
        args = (X, self.n_estimators, self.max_samples, self.contamination, self.seed)
        if self.train_process:
            if self._pool is None:  # the round's first fit
                self._pool = _Trainer()
                self._last_round = time.monotonic()
            arrays = self._pool.fit(*args)
        else:
            # imported only now (in fit_forest): the import holds the GIL for a second or more,
            # which a daemon (or a demo's process) should spend only once a node can be trained
            arrays = fit_forest(*args)
        self._install(node, st, CompiledForest.from_arrays(arrays), feats, X, end_ms)
        self.trainings += 1
        return True

    def _install(
        self, node: str, st: _Node, forest, feats: Features, X: np.ndarray, end_ms: int
    ) -> None:
        """Install a node's model: forest is a CompiledForest (or a fitted IsolationForest)."""
        if not isinstance(forest, CompiledForest):
            forest = CompiledForest.from_model(forest)
        center = np.median(X, axis=0)
        scale = 1.4826 * np.median(np.abs(X - center), axis=0)
        scale = np.where(scale > 1e-9, scale, np.maximum(np.std(X, axis=0), 1e-6))
        envelope = ENVELOPE * np.maximum(
            np.quantile(np.abs((X - center) / scale), ENVELOPE_Q, axis=0), 3.0
        )
        # one assignment: the scorer sees old or new
        st.fit = _Fit(forest, feats, center, scale, envelope, end_ms)
        st.metrics.update(feats.metrics)

    # --- persistence -----------------------------------------------------------------------------

    def save(self) -> None:
        """Every trained model with its window and feature layout, atomically, readable by the
        daemon's user only."""
        if self.path is None:
            return
        import pickle  # not joblib: ~14 MB of RSS for what pickle does with these few arrays

        fits = {n: st.fit for n, st in list(self.nodes.items()) if st.fit is not None}
        models = {
            n: {
                "forest": f.forest.arrays(),
                "metrics": f.feats.metrics,
                "median": f.feats.median_raw,
                "pca": f.feats.pca,
                "center": f.center,
                "scale": f.scale,
                "envelope": f.envelope,
                "window": [f.trained_to - self.train_ms, f.trained_to],
            }
            for n, f in fits.items()
        }
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            pickle.dump(
                {
                    "version": MODEL_VERSION,
                    "train_ms": self.train_ms,
                    "nominal": self.nominal,
                    "models": models,
                },
                f,
                protocol=pickle.HIGHEST_PROTOCOL,
            )
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    def load(self) -> int:
        """Models saved by an earlier run (same training length): scoring resumes without a
        warm-up."""
        if self.path is None or not self.path.exists():
            return 0
        import pickle

        try:
            with open(self.path, "rb") as f:
                saved = pickle.load(f)  # the daemon's own file (mode 0600), as joblib's was
            if saved.get("version") != MODEL_VERSION or saved.get("train_ms") != self.train_ms:
                log.info("%s: saved with other settings; models are trained again", self.path)
                return 0
            for node, m in saved["models"].items():
                st = self.nodes.setdefault(node, _Node())
                feats = Features(m["metrics"], self.nominal, self.gap_s)
                feats.median_raw, feats.pca = m["median"], m["pca"]
                feats._layout(0 if feats.pca is None else feats.pca[2].shape[1])
                st.metrics.update(m["metrics"])
                forest = CompiledForest.from_arrays(m["forest"])
                st.fit = _Fit(forest, feats, m["center"], m["scale"], m["envelope"], m["window"][1])
                st.newest = int(m["window"][1])
            return len(saved["models"])
        except Exception as exc:  # a damaged or foreign file costs a warm-up, never the daemon
            log.warning(
                "%s: cannot load the saved models (%s); they are trained again", self.path, exc
            )
            return 0

    def state(self) -> dict:
        """What the engine saves for us: the conditions that are active (the models have their own
        file)."""
        return {"active": {n: st.active_metric for n, st in self.nodes.items() if st.active}}

    def restore(self, saved: dict) -> None:
        for node, metric in (saved or {}).get("active", {}).items():
            st = self.nodes.setdefault(node, _Node())
            st.active, st.active_metric = True, metric
            st.streak = (1 << self.confirm) - 1

    def memory_bytes(self) -> int:
        """The trained models' arrays: the compiled forests and the feature statistics."""
        return sum(st.fit.nbytes() for st in self.nodes.values() if st.fit is not None)


def from_context(ctx: Context) -> IsolationForestDetector | None:
    """The engine's plugin hook (gridtwin.analytics.engine.PLUGINS): the detector the site asks for
    ([analytics] iforest*, their defaults in the site schema)."""
    sec = ctx.config
    if not setting(sec, "iforest"):
        return None
    return IsolationForestDetector(
        ctx,
        train_s=setting(sec, "iforest_train_s"),
        retrain_s=setting(sec, "iforest_retrain_s"),
        contamination=setting(sec, "iforest_contamination"),
        min_samples=setting(sec, "iforest_min_samples"),
        n_estimators=setting(sec, "iforest_trees"),
        max_samples=setting(sec, "iforest_max_samples"),
    )


if __name__ == "__main__":  # the training process (_Trainer)
    _trainer_main()
