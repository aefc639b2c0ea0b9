# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filter ``prodready.vps.resource_limits``: share a host's memory and CPU between services.

The calculation is pure (no host access) and deterministic. All arithmetic is
done with exact fractions; memory is returned in whole MiB ("MB") and CPU in
hundredths of a core, so ``CPUQuota=150%`` and compose ``cpus: "1.50"``
describe the same limit.

Algorithm (documented for users in ``resource_limits.yml``):

1. ``available = total - reserve`` for memory and for CPU (the reserve is kept
   for the OS, sshd, journald, the kernel's page cache...).
2. Every service gets its minimum first. If the minimums do not fit into the
   available amount the filter refuses.
3. The remainder is shared in proportion to ``priority * weight`` with
   water-filling: a service that reaches its cap (``max_memory_mb`` /
   ``max_cpu``) keeps the cap and the rest is shared again between the others.
   Exact shares are rounded down and the leftover units are handed out by
   largest remainder (ties: higher weight first, then input order), so the
   integer shares still sum to at most the available amount.
4. Per service, from its fair share:
   reservation = min + reservation_ratio * (share - min)   (guarantee);
   limit = clamp(share * burst, min, cap or available)     (ceiling);
   MemoryHigh = max(reservation, limit * memory_high_ratio).

Every step is monotonic in the weight, so for two services with the same
minimums and caps the one with the higher priority never gets less.
"""

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction

from ansible.errors import AnsibleFilterError

FILTER = "resource_limits"
PRIORITY_MIN = 1
PRIORITY_MAX = 10
DEFAULT_PRIORITY = 5
# systemd's default CPUWeight is 100; priority 5 (the default) maps to it.
CPU_WEIGHT_PER_PRIORITY = 20
CPU_WEIGHT_MIN = 1
CPU_WEIGHT_MAX = 10000
# CPU is handled in hundredths of a core (1 unit == CPUQuota 1%).
CPU_UNITS_PER_CORE = 100


def _fail(message):
    raise AnsibleFilterError(f"{FILTER}: {message}")


def _number(value, what, *, minimum=None, strict_minimum=False, maximum=None, integer=False, allow_none=False):
    """Return ``value`` as an exact Fraction after validating it."""
    if value is None:
        if allow_none:
            return None
        _fail(f"{what} is required")
    if isinstance(value, bool):
        _fail(f"{what} must be a number, got boolean {value!r}")
    if isinstance(value, (int, Fraction)):
        result = Fraction(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            _fail(f"{what} must be a finite number, got {value!r}")
        result = Fraction(repr(float(value)))
    elif isinstance(value, str):
        try:
            result = Fraction(value.strip())
        except (ValueError, ZeroDivisionError):
            _fail(f"{what} must be a number, got {value!r}")
    else:
        _fail(f"{what} must be a number, got {type(value).__name__} {value!r}")
    if integer and result.denominator != 1:
        _fail(f"{what} must be a whole number, got {value!r}")
    if minimum is not None:
        if strict_minimum and result <= minimum:
            _fail(f"{what} must be greater than {_fmt_num(minimum)}, got {value!r}")
        if not strict_minimum and result < minimum:
            _fail(f"{what} must be at least {_fmt_num(minimum)}, got {value!r}")
    if maximum is not None and result > maximum:
        _fail(f"{what} must be at most {_fmt_num(maximum)}, got {value!r}")
    return result


def _fmt_num(value):
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):g}"


def _fmt_cpu(units):
    return f"{units // CPU_UNITS_PER_CORE}.{units % CPU_UNITS_PER_CORE:02d}"


def _water_fill(pool, floors, caps, weights):
    """Share ``pool`` exactly: floors first, the rest by weight, never above caps.

    Returns a list of Fractions. ``sum(floors) <= pool`` must hold.
    """
    alloc = [Fraction(f) for f in floors]
    remaining = Fraction(pool) - sum(alloc)
    active = [i for i in range(len(floors)) if caps[i] > floors[i] and weights[i] > 0]
    while active and remaining > 0:
        rate = remaining / sum(weights[i] for i in active)
        capped = [i for i in active if rate * weights[i] >= caps[i] - alloc[i]]
        if not capped:
            for i in active:
                alloc[i] += rate * weights[i]
            break
        for i in capped:
            remaining -= caps[i] - alloc[i]
            alloc[i] = Fraction(caps[i])
        active = [i for i in active if i not in capped]
    return alloc


def _round_shares(exact, weights):
    """Round exact shares to integers keeping their (integral) sum, by largest remainder.

    Ties on the fractional part go to the higher weight, so rounding never
    inverts the order of two services that only differ by weight.
    """
    floors = [math.floor(x) for x in exact]
    leftover = math.floor(sum(exact)) - sum(floors)
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - floors[i]), -weights[i], i))
    for i in order[:leftover]:
        floors[i] += 1
    return floors


def _parse_service(raw, index, default_min_memory_mb, defaults):
    if not isinstance(raw, Mapping):
        _fail(f"service #{index + 1} must be a dictionary with at least a 'name', got {type(raw).__name__} {raw!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        _fail(f"service #{index + 1} needs a non-empty string 'name', got {name!r}")
    name = str(name)
    svc = f"service '{name}'"
    priority = _number(raw.get("priority", DEFAULT_PRIORITY), f"{svc} priority", minimum=PRIORITY_MIN,
                       maximum=PRIORITY_MAX, integer=True)
    weight = _number(raw.get("weight", 1), f"{svc} weight", minimum=0, strict_minimum=True)
    min_mem = _number(raw.get("min_memory_mb", default_min_memory_mb), f"{svc} min_memory_mb", minimum=1)
    max_mem = _number(raw.get("max_memory_mb"), f"{svc} max_memory_mb", minimum=1, allow_none=True)
    min_cpu = _number(raw.get("min_cpu", 0), f"{svc} min_cpu (cores)", minimum=0)
    max_cpu = _number(raw.get("max_cpu"), f"{svc} max_cpu (cores)", minimum=Fraction(1, CPU_UNITS_PER_CORE),
                      allow_none=True)
    if max_mem is not None and max_mem < min_mem:
        _fail(f"{svc} max_memory_mb ({_fmt_num(max_mem)}) is below its min_memory_mb ({_fmt_num(min_mem)})")
    if max_cpu is not None and max_cpu < min_cpu:
        _fail(f"{svc} max_cpu ({_fmt_num(max_cpu)}) is below its min_cpu ({_fmt_num(min_cpu)})")
    parsed = {
        "name": name,
        "priority": int(priority),
        "weight": weight,
        "share_weight": priority * weight,
        "min_memory": math.ceil(min_mem),
        "max_memory": None if max_mem is None else max(math.floor(max_mem), math.ceil(min_mem)),
        "min_cpu": math.ceil(min_cpu * CPU_UNITS_PER_CORE),
        "max_cpu": None if max_cpu is None else max(math.floor(max_cpu * CPU_UNITS_PER_CORE),
                                                    math.ceil(min_cpu * CPU_UNITS_PER_CORE)),
    }
    for key, default in defaults.items():
        parsed[key] = int(_number(raw.get(key, default), f"{svc} {key}", minimum=1, integer=True))
    return parsed


def _normalise_services(services):
    if isinstance(services, Mapping):
        items = []
        for name, options in services.items():
            if options is None:
                options = {}
            if not isinstance(options, Mapping):
                _fail(f"service '{name}' must map to a dictionary of options, got {type(options).__name__} {options!r}")
            entry = dict(options)
            entry.setdefault("name", name)
            if entry["name"] != name:
                _fail(f"service '{name}' has a conflicting 'name' option {entry['name']!r}")
            items.append(entry)
        return items
    if isinstance(services, Sequence) and not isinstance(services, (str, bytes)):
        return list(services)
    _fail(f"input must be a list of service dictionaries (or a dictionary keyed by service name), "
          f"got {type(services).__name__} {services!r}")


def resource_limits(services, total_memory_mb=None, cpu_count=None, reserve_memory_mb=None, reserve_cpu=0.25,
                    reservation_ratio=0.5, memory_burst=1.5, cpu_burst=2.0, memory_high_ratio=0.9,
                    default_min_memory_mb=64, tasks_max=4096, limit_nofile=65536, limit_nproc=4096):
    """Calculate per-service memory/CPU limits and reservations for one host.

    See the module docstring and ``resource_limits.yml`` for the algorithm.
    Returns a dictionary keyed by service name.
    """
    total_mem = _number(total_memory_mb, "total_memory_mb (MB of RAM on the host)", minimum=0, strict_minimum=True)
    cpus = _number(cpu_count, "cpu_count (CPU cores on the host)", minimum=0, strict_minimum=True)
    if reserve_memory_mb is None:
        reserve_mem = max(Fraction(256), total_mem / 10)
    else:
        reserve_mem = _number(reserve_memory_mb, "reserve_memory_mb", minimum=0)
    reserve_cpus = _number(reserve_cpu, "reserve_cpu (cores)", minimum=0)
    ratio = _number(reservation_ratio, "reservation_ratio", minimum=0, maximum=1)
    mem_burst = _number(memory_burst, "memory_burst", minimum=1)
    cpu_burst_f = _number(cpu_burst, "cpu_burst", minimum=1)
    high_ratio = _number(memory_high_ratio, "memory_high_ratio", minimum=0, strict_minimum=True, maximum=1)
    default_min_mem = _number(default_min_memory_mb, "default_min_memory_mb", minimum=1)
    defaults = {
        "tasks_max": int(_number(tasks_max, "tasks_max", minimum=1, integer=True)),
        "limit_nofile": int(_number(limit_nofile, "limit_nofile", minimum=1, integer=True)),
        "limit_nproc": int(_number(limit_nproc, "limit_nproc", minimum=1, integer=True)),
    }

    avail_mem = math.floor(total_mem - reserve_mem)
    if avail_mem < 1:
        _fail(f"no memory left for services: total_memory_mb {_fmt_num(total_mem)} minus the host reserve "
              f"{_fmt_num(math.ceil(reserve_mem))} MB (reserve_memory_mb) leaves {avail_mem} MB")
    avail_cpu = math.floor((cpus - reserve_cpus) * CPU_UNITS_PER_CORE)
    if avail_cpu < 1:
        _fail(f"no CPU left for services: cpu_count {_fmt_num(cpus)} minus the host reserve "
              f"{_fmt_num(reserve_cpus)} cores (reserve_cpu) leaves {_fmt_cpu(max(avail_cpu, 0))} cores")

    parsed = [_parse_service(raw, i, default_min_mem, defaults) for i, raw in enumerate(_normalise_services(services))]
    seen = set()
    for svc in parsed:
        if svc["name"] in seen:
            _fail(f"service '{svc['name']}' is listed more than once; service names must be unique")
        seen.add(svc["name"])
    if not parsed:
        return {}

    need_mem = sum(s["min_memory"] for s in parsed)
    if need_mem > avail_mem:
        detail = ", ".join(f"{s['name']} {s['min_memory']}" for s in parsed)
        _fail(f"the services need at least {need_mem} MB of memory together ({detail}) but only {avail_mem} MB "
              f"are available (total_memory_mb {_fmt_num(total_mem)} minus {math.ceil(reserve_mem)} MB host reserve); "
              f"lower min_memory_mb, reserve_memory_mb or add RAM")
    need_cpu = sum(s["min_cpu"] for s in parsed)
    if need_cpu > avail_cpu:
        detail = ", ".join(f"{s['name']} {_fmt_cpu(s['min_cpu'])}" for s in parsed)
        _fail(f"the services need at least {_fmt_cpu(need_cpu)} CPU cores together ({detail}) but only "
              f"{_fmt_cpu(avail_cpu)} are available (cpu_count {_fmt_num(cpus)} minus {_fmt_num(reserve_cpus)} "
              f"host reserve); lower min_cpu, reserve_cpu or add cores")

    weights = [s["share_weight"] for s in parsed]
    mem_caps = [avail_mem if s["max_memory"] is None else min(s["max_memory"], avail_mem) for s in parsed]
    cpu_caps = [avail_cpu if s["max_cpu"] is None else min(s["max_cpu"], avail_cpu) for s in parsed]
    mem_share = _round_shares(
        _water_fill(avail_mem, [s["min_memory"] for s in parsed], mem_caps, weights), weights)
    cpu_share = _round_shares(
        _water_fill(avail_cpu, [s["min_cpu"] for s in parsed], cpu_caps, weights), weights)

    result = {}
    for i, svc in enumerate(parsed):
        mem_min, cpu_min = svc["min_memory"], svc["min_cpu"]
        mem_res = math.floor(mem_min + ratio * (mem_share[i] - mem_min))
        mem_max = min(mem_caps[i], max(mem_min, math.floor(mem_share[i] * mem_burst)))
        mem_high = min(mem_max, max(mem_res, math.floor(mem_max * high_ratio)))
        cpu_res = math.floor(cpu_min + ratio * (cpu_share[i] - cpu_min))
        cpu_quota = min(cpu_caps[i], max(cpu_min, 1, math.floor(cpu_share[i] * cpu_burst_f)))
        cpu_weight = min(CPU_WEIGHT_MAX, max(CPU_WEIGHT_MIN, math.floor(
            svc["share_weight"] * CPU_WEIGHT_PER_PRIORITY + Fraction(1, 2))))
        result[svc["name"]] = {
            "priority": svc["priority"],
            "memory_share_mb": mem_share[i],
            "memory_reservation_mb": mem_res,
            "memory_high_mb": mem_high,
            "memory_max_mb": mem_max,
            "cpu_share": cpu_share[i] / CPU_UNITS_PER_CORE,
            "cpu_reservation": cpu_res / CPU_UNITS_PER_CORE,
            "cpus": cpu_quota / CPU_UNITS_PER_CORE,
            "cpu_quota_percent": cpu_quota,
            "cpu_weight": cpu_weight,
            "tasks_max": svc["tasks_max"],
            "limit_nofile": svc["limit_nofile"],
            "limit_nproc": svc["limit_nproc"],
            "systemd": {
                "MemoryLow": f"{mem_res}M",
                "MemoryHigh": f"{mem_high}M",
                "MemoryMax": f"{mem_max}M",
                "CPUQuota": f"{cpu_quota}%",
                "CPUWeight": str(cpu_weight),
                "TasksMax": str(svc["tasks_max"]),
                "LimitNOFILE": str(svc["limit_nofile"]),
                "LimitNPROC": str(svc["limit_nproc"]),
            },
            "compose": {
                "limits": {"cpus": _fmt_cpu(cpu_quota), "memory": f"{mem_max}M"},
                "reservations": {"cpus": _fmt_cpu(cpu_res), "memory": f"{mem_res}M"},
            },
        }

    # Belt and braces: the guarantees must never over-commit the host.
    if sum(r["memory_reservation_mb"] for r in result.values()) > avail_mem or sum(
            round(r["cpu_reservation"] * CPU_UNITS_PER_CORE) for r in result.values()) > avail_cpu:
        _fail("internal error: reservations exceed the available resources; please report this with your input")
    return result


class FilterModule:
    """Ansible filters for sizing service resource limits."""

    def filters(self):
        return {"resource_limits": resource_limits}
