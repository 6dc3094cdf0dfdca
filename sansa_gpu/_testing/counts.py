"""Counts of what a device would pay for a kernel launch, recorded by the CPU executor
(``ExecutorDevice(count=True)``; see ``docs/executor_counts.md``). These are counts of the
kernel's accesses as the host compiler emits them, for *predictions* of device time
(``benchmarks/predict_device.py``); they are not measurements of a device.

Format of one launch's ``counts`` (:func:`derive_counts`)::

    {"blocks": int, "threads_per_block": int, "barriers": int, "early_groupings": int,
     "phases": {name: PHASE, ...},          # 'all' holds accesses made before any SANSA_PHASE
     "totals": PHASE plus "sectors" and "atomics": {"global": n, "shared": n}}

    PHASE = {"warp_instructions": n,        # warp-level memory instructions (every space)
             "lane_instructions": n,        # sum over them of their active lanes
             "busy_fraction": f,            # lane_instructions / (32 * warp_instructions): SIMT efficiency
             "thread_slots": n,             # threads of the blocks in the barrier intervals the phase ran in
             "threads_active": n,           # of those, the threads that made an access in the phase
             "active_thread_fraction": f,   # threads_active / thread_slots
             "intervals": n,                # (block, barrier interval) pairs the phase ran in
             "collectives": n,              # warp collectives (shuffles, ballots, __syncwarp) per warp
             "global" | "shared" | "constant": {"load" | "store" | "atomic":
                 {"warp_instructions": n, "lane_ops": n, "bytes": n, "sectors": n}}}

Sectors (32-byte segments touched per warp-level instruction) are counted for global memory (the
kernel's argument arrays) only.
"""

from __future__ import annotations

SPACES = ("global", "shared", "constant")
KINDS = ("load", "store", "atomic")
TALLY = ("warp_instructions", "lane_ops", "bytes", "sectors")
PHASE_SUMS = ("warp_instructions", "lane_instructions", "thread_slots", "threads_active", "intervals", "collectives")
LAUNCH_SUMS = ("blocks", "barriers", "early_groupings")


def _ratio(a, b):
    return a / b if b else None


def _finish_phase(p: dict) -> dict:
    p["busy_fraction"] = _ratio(p["lane_instructions"], 32 * p["warp_instructions"])
    p["active_thread_fraction"] = _ratio(p["threads_active"], p["thread_slots"])
    return p


def _empty_phase() -> dict:
    p = {k: 0 for k in PHASE_SUMS}
    for sp in SPACES:
        p[sp] = {k: {t: 0 for t in TALLY} for k in KINDS}
    return p


def _add_phase(dst: dict, src: dict, scale: float = 1) -> None:
    for k in PHASE_SUMS:
        dst[k] += src[k] * scale
    for sp in SPACES:
        for kind in KINDS:
            for t in TALLY:
                dst[sp][kind][t] += src[sp][kind][t] * scale


def _totals(phases: dict) -> dict:
    tot = _empty_phase()
    for p in phases.values():
        _add_phase(tot, p)
    _finish_phase(tot)
    g = tot["global"]
    tot["sectors"] = sum(g[k]["sectors"] for k in KINDS)
    tot["atomics"] = {"global": g["atomic"]["lane_ops"], "shared": tot["shared"]["atomic"]["lane_ops"]}
    return tot


def derive_counts(raw: dict) -> dict:
    """The executor runtime's counts of one launch (JSON) in the format above."""
    phases = {}
    for p in raw["phases"]:
        q = _empty_phase()
        _add_phase(q, p)
        phases[p["name"]] = _finish_phase(q)
    out = {k: raw[k] for k in LAUNCH_SUMS}
    out["threads_per_block"] = raw["threads_per_block"]
    out["phases"] = phases
    out["totals"] = _totals(phases)
    return out


def merge_counts(counts: list[dict], scale: float = 1) -> dict:
    """Sum of several launches' counts (each in the format above, or a launch record with a
    'counts' field), every count multiplied by ``scale`` (an extrapolation: the result's counts
    may then be fractional). Per-phase sums are by phase name; fractions are recomputed from the
    sums (lane-weighted), so a phase's busy_fraction is that of all its instructions together."""
    out = {k: 0 for k in LAUNCH_SUMS}
    tpb = set()
    phases: dict = {}
    for c in counts:
        c = c.get("counts", c)
        for k in LAUNCH_SUMS:
            out[k] += c[k] * scale
        tpb.add(c["threads_per_block"])
        for name, p in c["phases"].items():
            _add_phase(phases.setdefault(name, _empty_phase()), p, scale)
    out["threads_per_block"] = tpb.pop() if len(tpb) == 1 else sorted(tpb)
    out["phases"] = {name: _finish_phase(p) for name, p in phases.items()}
    out["totals"] = _totals(out["phases"])
    return out


def busy_table(counts: dict) -> dict:
    """{phase: {"busy_fraction", "active_thread_fraction", "warp_instructions", "global_sectors"}}:
    the short per-phase view of ``counts`` (one launch or merged) for records and reports."""
    c = counts.get("counts", counts)
    out = {}
    for name, p in c["phases"].items():
        out[name] = {"busy_fraction": p["busy_fraction"], "active_thread_fraction": p["active_thread_fraction"],
                     "warp_instructions": p["warp_instructions"],
                     "global_sectors": sum(p["global"][k]["sectors"] for k in KINDS)}
    return out
