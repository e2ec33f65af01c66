"""Pure computations on what a run recorded: window throughput and latency, loss, drain, medians of repeats."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["aggregate", "by_origin", "check_loss", "cloud_delivery", "drain", "percentile", "window"]

KEEP_UP_RATIO = 0.95  # delivered / offered below this: the gateway does not keep up
MAX_P99_MS = 1000.0


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def window(received: dict[str, Any], t0: float, t1: float) -> dict[str, Any]:
    """Telemetry received in [t0, t1): points/s, events/s and sample-to-receipt latency."""
    recv, lat, npts = received["recv"], received["lat_ms"], received["npts"]
    points = events = 0
    lats: list[float] = []
    for r, latency, n in zip(recv, lat, npts, strict=True):
        if t0 <= r < t1 and n > 0:
            points += n
            events += 1
            lats.append(latency)
    lats.sort()
    span = t1 - t0
    return {
        "window_s": span,
        "points": points,
        "events": events,
        "delivered_points_per_s": points / span if span > 0 else 0.0,
        "events_per_s": events / span if span > 0 else 0.0,
        "p50_latency_ms": percentile(lats, 50),
        "p99_latency_ms": percentile(lats, 99),
        "max_latency_ms": lats[-1] if lats else None,
    }


def by_origin(received: dict[str, Any], t0: float, t1: float) -> dict[str, dict[str, Any]]:
    """`window` per origin of the telemetry (the driver: modbus, bacnet, opcua); empty for old recordings."""
    origins = received.get("origin")
    if not origins:
        return {}
    out = {}
    for name in sorted(set(origins)):
        keep = [o == name for o in origins]
        part = {
            key: [v for v, k in zip(received[key], keep, strict=True) if k]
            for key in ("recv", "lat_ms", "npts")
        }
        stats = window(part, t0, t1)
        if stats["points"]:
            out[name] = stats
    return out


def cloud_delivery(
    received: dict[str, Any], arrivals: dict[str, float], t0: float, t1: float
) -> dict[str, Any]:
    """Sample -> cloud latency of the events sampled in [t0, t1), joined by event id with the cloud's arrivals.

    The sample time is the subscriber's receipt minus its sample -> MQTT latency (the event's `time`).
    """
    lats: list[float] = []
    sampled = 0
    for rid, r, latency, n in zip(
        received["ids"], received["recv"], received["lat_ms"], received["npts"], strict=True
    ):
        sample = r - latency / 1000.0
        if n <= 0 or not t0 <= sample < t1:
            continue
        sampled += 1
        arrived = arrivals.get(rid)
        if arrived is not None:
            lats.append((arrived - sample) * 1000.0)
    lats.sort()
    return {
        "events_sampled": sampled,
        "events_in_cloud": len(lats),
        "p50_latency_ms": percentile(lats, 50),
        "p99_latency_ms": percentile(lats, 99),
        "max_latency_ms": lats[-1] if lats else None,
    }


def check_loss(received: dict[str, Any], outbox: dict[str, Any]) -> dict[str, Any]:
    """Zero loss, checked two ways.

    By sequence: every device's sequences are contiguous from its first to its last received (and start at 1).
    By outbox: every stored event the MQTT publisher's cursor says the broker acknowledged was received at
    least once. Stored events after the cursor when the gateway stopped are not lost (they stay in the outbox
    and go out after the next start); they are counted as `pending_at_stop`.
    """
    devices = received["devices"]
    gaps = sum(d["gaps"] for d in devices.values())
    missing_head = sum(d["first"] - 1 for d in devices.values())
    duplicates = sum(d["duplicates"] for d in devices.values())
    seen = set(received["ids"])
    cursors = outbox["cursors"]
    acked = lost = pending = 0
    lost_examples: list[str] = []
    for position, event_id, tenant, _type in outbox["rows"]:
        if position <= cursors.get(tenant, 0):
            acked += 1
            if event_id not in seen:
                lost += 1
                if len(lost_examples) < 5:
                    lost_examples.append(event_id)
        else:
            pending += 1
    return {
        "devices_seen": len(devices),
        "sequence_gaps": gaps,
        "missing_head": missing_head,
        "duplicates": duplicates,
        "stored_events": len(outbox["rows"]),
        "acked_events": acked,
        "lost_events": lost,
        "lost_examples": lost_examples,
        "pending_at_stop": pending,
        "zero_loss": gaps == 0 and missing_head == 0 and lost == 0,
    }


def drain(received: dict[str, Any], outage_start: float, broker_back: float) -> dict[str, Any]:
    """Backlog drain after the broker came back, measured at the subscriber.

    Delivery resumes at the first receipt after `broker_back`; the backlog is every event received from then
    on whose sample time is earlier than that moment (it waited in the outbox); the drain ends with the last
    of them. Rate = backlog events (points) / drain time.
    """
    recv, lat, npts = received["recv"], received["lat_ms"], received["npts"]
    after = [i for i, r in enumerate(recv) if r >= broker_back]
    if not after:
        return {"outage_s": broker_back - outage_start, "resumed": False}
    resumed = min(recv[i] for i in after)
    backlog = [i for i in after if recv[i] - lat[i] / 1000.0 < resumed]
    events = len(backlog)
    points = sum(npts[i] for i in backlog)
    end = max((recv[i] for i in backlog), default=resumed)
    span = end - resumed
    return {
        "outage_s": broker_back - outage_start,
        "resumed": True,
        "reconnect_s": resumed - broker_back,
        "backlog_events": events,
        "backlog_points": points,
        "drain_s": span,
        "drain_events_per_s": events / span if span > 0.001 else None,
        "drain_points_per_s": points / span if span > 0.001 else None,
    }


_SUMMED_MAX = {
    "sequence_gaps",
    "missing_head",
    "lost_events",
    "duplicates",
    "pending_at_stop",
    "exit_code",
}


def _median(values: list[Any]) -> Any:
    nums = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(nums) != len(values) or not nums:
        return values[0] if values else None
    return statistics.median(nums)


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the repeats' figures; loss counts and exit codes take the worst run; verdicts need all runs."""
    if len(runs) == 1:
        return {**runs[0], "repeats": 1}
    out: dict[str, Any] = {}
    for key, first in runs[0].items():
        values = [r.get(key) for r in runs]
        if isinstance(first, dict):
            out[key] = aggregate([v for v in values if isinstance(v, dict)]) if all(values) else first
            out[key].pop("repeats", None)
        elif isinstance(first, bool):
            out[key] = all(bool(v) for v in values)
        elif key in _SUMMED_MAX:
            out[key] = max((v for v in values if isinstance(v, int | float)), default=first)
        elif isinstance(first, int | float) or first is None:
            out[key] = (
                _median([v for v in values if v is not None]) if any(v is not None for v in values) else None
            )
        else:
            out[key] = first
    out["repeats"] = len(runs)
    return out


def keeps_up(result: dict[str, Any]) -> tuple[bool, list[str]]:
    """The ramp's criterion: delivered >= 95 % of offered, p99 < 1 s, zero loss, clean exit."""
    reasons = []
    offered = result["offered_points_per_s"]
    if result["delivered_points_per_s"] < KEEP_UP_RATIO * offered:
        reasons.append(f"delivered {result['delivered_points_per_s']:.0f} < 95 % of offered {offered:.0f}")
    p99 = result["p99_latency_ms"]
    if p99 is None or p99 >= MAX_P99_MS:
        reasons.append(f"p99 latency {p99} ms >= {MAX_P99_MS:g} ms")
    if not result["loss"]["zero_loss"]:
        reasons.append("loss")
    if result.get("exit_code") not in (0, None):
        reasons.append(f"gateway exit code {result['exit_code']}")
    return not reasons, reasons
