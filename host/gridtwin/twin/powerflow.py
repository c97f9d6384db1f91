"""Power flow of the AC chain (utility, generator, switch, transformer, boards, UPS, PDU, servers).

The chain is a DAG held as numpy arrays in topological order and grouped by *level* (a source is
level 0, a component one deeper than its deepest parent). A step is two sweeps, each a handful of
array operations per level rather than a Python loop per component, so 10,000 components cost
about as much as 10 (see `make bench`):

1. Down (levels ascending): a component is energized when any of its *active* feeds has an
   energized parent and it is neither tripped nor faulted. A transfer switch has one active feed
   (its position); a UPS's output stays energized on battery while its state of charge is above
   zero.
2. Up (levels descending): each component's input is
       P_in = P_out / efficiency + no_load_kw + load_loss_kw * (P_out / capacity)^2
   (a UPS adds no_load_pct and load_loss_pct of its capacity to the last two: its part-load curve)
   (servers: P_in = demand). P_in is shared equally between its energized active parents and added
   to their P_out. A UPS on mains also draws its recharge power; on battery it draws nothing
   upstream and discharges P_out / battery_efficiency + no_load_kw from the battery instead.

Energy is conserved by construction, step by step:
   sum(source output) + battery discharge = sum(server demand) + sum(losses) + battery charge.
The UPS battery is Coulomb-counted: I = P_batt / V_batt, SoC -= I dt / (3600 Ah).
A component whose P_out stays above its capacity for `trip_delay_s` trips its breaker.
"""

from __future__ import annotations

import numpy as np

from gridtwin.twin.topology import Component

K_PASS, K_UTIL, K_GEN, K_SWITCH, K_UPS, K_LOAD = range(6)
_KIND_CODE = {
    "utility": K_UTIL,
    "generator": K_GEN,
    "transfer_switch": K_SWITCH,
    "ups": K_UPS,
    "server": K_LOAD,
    "transformer": K_PASS,
    "distribution": K_PASS,
    "pdu": K_PASS,
    "meter": K_PASS,
}


class ACNetwork:
    def __init__(self, comps: list[Component]):
        self.comps = comps
        self.ids = [c.id for c in comps]
        self.pos = {c.id: i for i, c in enumerate(comps)}
        n = self.n = len(comps)
        self.code = np.array([_KIND_CODE[c.kind] for c in comps], dtype=np.int8)

        def arr(name, default):
            return np.array([float(c.params.get(name, default)) for c in comps])

        self.eff = arr("efficiency", 1.0)
        self.cap = np.array([float(c.params.get("capacity_kw", np.inf)) for c in comps])
        cap = np.where(np.isfinite(self.cap), self.cap, 1.0)
        # A UPS may give its constant and copper losses in % of its rating (its part-load curve).
        self.p0 = arr("no_load_kw", 0.0) + arr("no_load_pct", 0.0) / 100.0 * cap
        self.k2 = (arr("load_loss_kw", 0.0) + arr("load_loss_pct", 0.0) / 100.0 * cap) / cap**2
        self.trip_delay = arr("trip_delay_s", 2.0)
        self.level = np.zeros(n, dtype=np.int32)
        child, parent, slot = [], [], []
        for i, c in enumerate(comps):
            for s, p in enumerate(c.parents):
                j = self.pos[p]
                self.level[i] = max(self.level[i], self.level[j] + 1)
                child.append(i), parent.append(j), slot.append(s)
        self.e_child = np.array(child, dtype=np.int64)
        self.e_parent = np.array(parent, dtype=np.int64)
        self.e_slot = np.array(slot, dtype=np.int64)
        self.e_active = np.ones(len(child), dtype=bool)
        # A transfer switch starts on its normal (first) source.
        sw = self.code[self.e_child] == K_SWITCH
        self.e_active[sw] = self.e_slot[sw] == 0
        self.levels = []
        for lv in range(int(self.level.max()) + 1 if n else 0):
            idx = np.nonzero(self.level == lv)[0]
            e = np.nonzero(self.level[self.e_child] == lv)[0]
            local = np.searchsorted(idx, self.e_child[e])  # edge -> position within idx
            self.levels.append((idx, e, local))
        # State.
        self.avail = np.zeros(n, dtype=bool)  # sources: able to supply (set by the engine)
        self.fault = np.zeros(n, dtype=bool)  # forced open (set_fault)
        self.tripped = np.zeros(n, dtype=bool)  # breaker tripped on overload
        self.en = np.zeros(n, dtype=bool)
        self.in_ok = np.zeros(n, dtype=bool)  # some feed is live (UPS: on mains)
        self.over_s = np.zeros(n)
        self.p_out = np.zeros(n)
        self.p_in = np.zeros(n)
        self.loss = np.zeros(n)
        self.demand = np.zeros(n)
        # Servers.
        self.load_idx = np.nonzero(self.code == K_LOAD)[0]
        self.base_kw = arr("load_kw", 0.0)[self.load_idx]
        self.noise = arr("noise_pct", 0.0)[self.load_idx] / 100.0
        self.demand_override = np.full(len(self.load_idx), np.nan)
        # UPS batteries.
        self.ups_idx = np.nonzero(self.code == K_UPS)[0]
        u = self.ups_idx
        self.batt_v = arr("battery_v", 480.0)[u]
        self.batt_ah = arr("battery_ah", 40.0)[u]
        self.batt_eff = arr("battery_efficiency", 0.95)[u]
        self.charge_kw = arr("charge_kw", 0.0)[u]
        self.soc = arr("soc0_pct", 100.0)[u] / 100.0
        self.batt_kw = np.zeros(len(u))  # + charging, - discharging (DC side)
        self.batt_a = np.zeros(len(u))
        self.is_ups = self.code == K_UPS
        self.ups_of = np.full(n, -1)
        self.ups_of[u] = np.arange(len(u))
        self.sources = np.nonzero((self.code == K_UTIL) | (self.code == K_GEN))[0]
        # Breakers that tripped in the last step; empty until a step has run (and always, without a
        # chain).
        self.new_trips = np.zeros(0, dtype=np.int64)

    def select(self, i: int, slot: int) -> None:
        """Point transfer switch i at parent `slot` (-1: open)."""
        e = self.e_child == i
        self.e_active[e] = self.e_slot[e] == slot

    def step(self, dt: float, rng) -> None:
        n = self.n
        if n == 0:
            return
        blocked = self.fault | self.tripped
        en = self.en
        in_ok = self.in_ok
        has_batt = np.zeros(n, dtype=bool)
        has_batt[self.ups_idx] = self.soc > 0.0
        for lv, (idx, e, local) in enumerate(self.levels):
            if lv == 0:
                live = self.avail[idx].copy()
            else:
                ok = en[self.e_parent[e]] & self.e_active[e]
                live = np.bincount(local, weights=ok, minlength=len(idx)) > 0
            in_ok[idx] = live
            en[idx] = (live | has_batt[idx]) & ~blocked[idx]
        # Demand of energized servers, with seeded noise (always drawn, so runs stay aligned).
        z = rng.standard_normal(len(self.load_idx))
        d = np.maximum(0.0, self.base_kw * (1.0 + self.noise * z))
        d = np.where(np.isnan(self.demand_override), d, self.demand_override)
        self.demand[self.load_idx] = np.where(en[self.load_idx], d, 0.0)
        p_out = self.p_out
        p_out[:] = self.demand
        p_in = self.p_in
        soc_room_kwh = (1.0 - self.soc) * self.batt_v * self.batt_ah / 1000.0
        charge = np.minimum(self.charge_kw, soc_room_kwh * 3600.0 / dt)
        for idx, e, local in reversed(self.levels):
            po = p_out[idx]
            pin = po / self.eff[idx] + self.p0[idx] + self.k2[idx] * po * po
            pin = np.where(en[idx], pin, 0.0)
            ups = self.is_ups[idx]
            if ups.any():
                ui = idx[ups]
                k = self.ups_of[ui]
                on_mains = in_ok[ui] & en[ui]
                batt_draw = np.where(
                    en[ui] & ~on_mains, po[ups] / self.batt_eff[k] + self.p0[ui], 0.0
                )
                ch = np.where(on_mains, charge[k], 0.0)
                self.batt_kw[k] = ch - batt_draw
                pin[ups] = np.where(on_mains, pin[ups] + ch / self.eff[ui], 0.0)
            p_in[idx] = pin
            if len(e):
                ok = en[self.e_parent[e]] & self.e_active[e]
                cnt = np.bincount(local, weights=ok, minlength=len(idx))
                share = np.where(ok, 1.0 / np.maximum(cnt[local], 1.0), 0.0)
                p_out += np.bincount(self.e_parent[e], weights=pin[local] * share, minlength=n)
        # Sources deliver what is drawn: no upstream, no loss.
        p_in[self.sources] = p_out[self.sources]
        self.loss = p_in - p_out
        u = self.ups_idx
        self.loss[u] = p_in[u] - self.batt_kw - p_out[u]
        self.loss[self.load_idx] = 0.0
        # Coulomb counting.
        self.batt_a = self.batt_kw * 1000.0 / self.batt_v
        self.soc = np.clip(self.soc + self.batt_a * dt / (3600.0 * self.batt_ah), 0.0, 1.0)
        # Breakers: sustained overload trips.
        over = en & (p_out > self.cap)
        self.over_s = np.where(over, self.over_s + dt, 0.0)
        self.new_trips = np.nonzero(over & (self.over_s >= self.trip_delay) & ~self.tripped)[0]
        self.tripped[self.new_trips] = True
