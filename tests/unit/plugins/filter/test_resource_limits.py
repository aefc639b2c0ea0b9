# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit and property tests for the ``prodready.vps.resource_limits`` filter."""

import math

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.prodready.vps.plugins.filter.resource_limits import (
    FilterModule,
    resource_limits,
)
from hypothesis import given, settings
from hypothesis import strategies as st

THREE = [
    {"name": "postgres", "priority": 8, "min_memory_mb": 256, "min_cpu": 0.25},
    {"name": "app", "priority": 5, "min_memory_mb": 128},
    {"name": "redis", "priority": 3, "min_memory_mb": 64, "max_memory_mb": 256},
]


def available(total_mb, cpus, reserve_mb=None, reserve_cpu=0.25):
    if reserve_mb is None:
        reserve_mb = max(256, total_mb / 10)
    return math.floor(total_mb - reserve_mb), math.floor(round((cpus - reserve_cpu) * 100, 6))


def cpu_units(value):
    return round(value * 100)


def test_registered_as_filter():
    assert FilterModule().filters() == {"resource_limits": resource_limits}


def test_three_services_on_2_cores_4gb():
    result = resource_limits(THREE, total_memory_mb=3913, cpu_count=2)
    assert list(result) == ["postgres", "app", "redis"]
    pg, app, redis = result["postgres"], result["app"], result["redis"]
    # available: 3913 - 391.3 -> 3521 MB; 2 - 0.25 -> 1.75 cores
    assert pg["memory_share_mb"] + app["memory_share_mb"] + redis["memory_share_mb"] == 3521
    assert redis["memory_share_mb"] == 256 and redis["memory_max_mb"] == 256
    assert pg == {
        "priority": 8,
        "memory_share_mb": 2029,
        "memory_reservation_mb": 1142,
        "memory_high_mb": 2738,
        "memory_max_mb": 3043,
        "cpu_share": 1.0,
        "cpu_reservation": 0.62,
        "cpus": 1.75,
        "cpu_quota_percent": 175,
        "cpu_weight": 160,
        "tasks_max": 4096,
        "limit_nofile": 65536,
        "limit_nproc": 4096,
        "systemd": {
            "MemoryLow": "1142M",
            "MemoryHigh": "2738M",
            "MemoryMax": "3043M",
            "CPUQuota": "175%",
            "CPUWeight": "160",
            "TasksMax": "4096",
            "LimitNOFILE": "65536",
            "LimitNPROC": "4096",
        },
        "compose": {
            "limits": {"cpus": "1.75", "memory": "3043M"},
            "reservations": {"cpus": "0.62", "memory": "1142M"},
        },
    }
    assert app["compose"] == {
        "limits": {"cpus": "0.94", "memory": "1854M"},
        "reservations": {"cpus": "0.23", "memory": "682M"},
    }
    assert app["cpu_weight"] == 100  # default priority 5 == systemd's default weight
    assert redis["cpu_weight"] == 60


def test_single_service_gets_everything_available():
    result = resource_limits([{"name": "app"}], total_memory_mb=2048, cpu_count=1)
    app = result["app"]
    assert app["memory_share_mb"] == 2048 - 256
    assert app["memory_max_mb"] == 1792
    assert app["memory_reservation_mb"] == 64 + (1792 - 64) // 2
    assert app["cpu_quota_percent"] == 75
    assert app["systemd"]["CPUQuota"] == "75%"
    assert app["compose"]["limits"]["cpus"] == "0.75"


def test_hard_partition_with_burst_one_and_full_reservation():
    services = {"api": {"priority": 7}, "worker": {"priority": 3, "max_cpu": 1}}
    result = resource_limits(services, 2048, 2, reserve_memory_mb=512, memory_burst=1, cpu_burst=1,
                             reservation_ratio=1)
    assert sum(r["memory_max_mb"] for r in result.values()) == 1536
    assert sum(r["memory_reservation_mb"] for r in result.values()) == 1536
    assert sum(r["cpu_quota_percent"] for r in result.values()) == 175
    for r in result.values():
        assert r["memory_max_mb"] == r["memory_share_mb"] == r["memory_reservation_mb"]
        assert r["memory_high_mb"] == r["memory_reservation_mb"]  # high is never below the guarantee
    assert result["api"]["memory_share_mb"] == 64 + round((1536 - 128) * 0.7)


def test_dict_input_and_unknown_keys_ignored():
    result = resource_limits({"web": {"image": "nginx", "ports": [80]}, "db": None}, 4096, 2)
    assert set(result) == {"web", "db"}
    assert result["web"]["memory_share_mb"] == result["db"]["memory_share_mb"]


def test_caps_redistribute_to_others():
    services = [{"name": "small", "priority": 10, "max_memory_mb": 100, "max_cpu": 0.1}, {"name": "big", "priority": 1}]
    result = resource_limits(services, 1280, 2, reserve_memory_mb=256, reserve_cpu=0)
    assert result["small"]["memory_share_mb"] == 100
    assert result["big"]["memory_share_mb"] == 1024 - 100
    assert result["small"]["cpu_quota_percent"] == 10
    assert result["big"]["cpu_share"] == 1.9


def test_per_service_and_default_ulimits():
    result = resource_limits([{"name": "a", "limit_nofile": 1024}, {"name": "b"}], 4096, 2, tasks_max=256)
    assert result["a"]["systemd"]["LimitNOFILE"] == "1024"
    assert result["b"]["limit_nofile"] == 65536
    assert result["b"]["systemd"]["TasksMax"] == "256"


def test_numeric_strings_are_accepted():
    assert resource_limits([{"name": "a", "priority": "7"}], "4096", "2") == resource_limits(
        [{"name": "a", "priority": 7}], 4096, 2)


def test_empty_service_list():
    assert resource_limits([], 1024, 1) == {}


def test_deterministic():
    assert resource_limits(THREE, 3913, 2) == resource_limits(THREE, 3913, 2)


@pytest.mark.parametrize(
    "services, kwargs, message",
    [
        (THREE, {"total_memory_mb": 600, "cpu_count": 2},
         r"need at least 448 MB of memory together \(postgres 256, app 128, redis 64\) but only 344 MB"),
        (THREE, {"total_memory_mb": 4096, "cpu_count": 0.5, "reserve_cpu": 0.3},
         r"need at least 0.25 CPU cores together \(postgres 0.25, app 0.00, redis 0.00\) but only 0.20 are available"),
        ([{"name": "a", "min_cpu": 2}], {"total_memory_mb": 4096, "cpu_count": 2},
         r"need at least 2.00 CPU cores together \(a 2.00\) but only 1.75 are available"),
        ([{"name": "a", "priority": 11}], {"total_memory_mb": 4096, "cpu_count": 2},
         r"service 'a' priority must be at most 10, got 11"),
        ([{"name": "a", "priority": 0}], {"total_memory_mb": 4096, "cpu_count": 2},
         r"service 'a' priority must be at least 1, got 0"),
        ([{"name": "a", "priority": 2.5}], {"total_memory_mb": 4096, "cpu_count": 2},
         r"service 'a' priority must be a whole number"),
        ([{"name": "a", "priority": True}], {"total_memory_mb": 4096, "cpu_count": 2},
         r"service 'a' priority must be a number, got boolean"),
        ([{"name": "a", "min_memory_mb": "lots"}], {"total_memory_mb": 4096, "cpu_count": 2},
         r"service 'a' min_memory_mb must be a number, got 'lots'"),
        ([{"name": "a", "min_memory_mb": 512, "max_memory_mb": 256}], {"total_memory_mb": 4096, "cpu_count": 2},
         r"service 'a' max_memory_mb \(256\) is below its min_memory_mb \(512\)"),
        ([{"name": "a", "min_cpu": 1, "max_cpu": 0.5}], {"total_memory_mb": 4096, "cpu_count": 2},
         r"service 'a' max_cpu \(0.5\) is below its min_cpu \(1\)"),
        ([{"name": "a"}, {"name": "a"}], {"total_memory_mb": 4096, "cpu_count": 2},
         r"service 'a' is listed more than once"),
        ([{"priority": 3}], {"total_memory_mb": 4096, "cpu_count": 2},
         r"service #1 needs a non-empty string 'name'"),
        (["app"], {"total_memory_mb": 4096, "cpu_count": 2}, r"service #1 must be a dictionary"),
        ("app", {"total_memory_mb": 4096, "cpu_count": 2}, r"input must be a list of service dictionaries"),
        ({"a": 5}, {"total_memory_mb": 4096, "cpu_count": 2}, r"service 'a' must map to a dictionary"),
        ([{"name": "a"}], {"cpu_count": 2}, r"total_memory_mb \(MB of RAM on the host\) is required"),
        ([{"name": "a"}], {"total_memory_mb": 4096}, r"cpu_count \(CPU cores on the host\) is required"),
        ([{"name": "a"}], {"total_memory_mb": -1, "cpu_count": 2}, r"total_memory_mb .* must be greater than 0"),
        ([{"name": "a"}], {"total_memory_mb": 256, "cpu_count": 2},
         r"no memory left for services: total_memory_mb 256 minus the host reserve 256 MB"),
        ([{"name": "a"}], {"total_memory_mb": 4096, "cpu_count": 1, "reserve_cpu": 1},
         r"no CPU left for services: cpu_count 1 minus the host reserve 1 cores"),
        ([{"name": "a"}], {"total_memory_mb": 4096, "cpu_count": 1, "reservation_ratio": 2},
         r"reservation_ratio must be at most 1, got 2"),
        ([{"name": "a"}], {"total_memory_mb": 4096, "cpu_count": 1, "memory_burst": 0.5},
         r"memory_burst must be at least 1, got 0.5"),
        ([{"name": "a"}], {"total_memory_mb": 4096, "cpu_count": 1, "memory_high_ratio": 0},
         r"memory_high_ratio must be greater than 0"),
        ([{"name": "a"}], {"total_memory_mb": float("nan"), "cpu_count": 1}, r"must be a finite number"),
    ],
)
def test_errors(services, kwargs, message):
    with pytest.raises(AnsibleFilterError, match=r"^resource_limits: .*(" + message + ")"):
        resource_limits(services, **kwargs)


# ---------------------------------------------------------------- properties

service_st = st.fixed_dictionaries(
    {},
    optional={
        "priority": st.integers(1, 10),
        "weight": st.sampled_from([0.5, 1, 1.5, 2]),
        "min_memory_mb": st.integers(1, 512),
        "max_memory_mb": st.integers(1, 4096),
        "min_cpu": st.sampled_from([0, 0.05, 0.1, 0.25, 0.5]),
        "max_cpu": st.sampled_from([0.1, 0.5, 1, 2, 4]),
    },
)


@st.composite
def scenario(draw):
    raw = draw(st.lists(service_st, min_size=1, max_size=8))
    services = []
    for i, svc in enumerate(raw):
        svc = dict(svc, name=f"svc{i}")
        if "max_memory_mb" in svc:
            svc["max_memory_mb"] = max(svc["max_memory_mb"], svc.get("min_memory_mb", 64))
        if "max_cpu" in svc:
            svc["max_cpu"] = max(svc["max_cpu"], svc.get("min_cpu", 0))
        services.append(svc)
    kwargs = {
        "total_memory_mb": draw(st.integers(512, 65536)),
        "cpu_count": draw(st.integers(1, 32)),
        "reservation_ratio": draw(st.sampled_from([0, 0.25, 0.5, 1])),
        "memory_burst": draw(st.sampled_from([1, 1.5, 3])),
        "cpu_burst": draw(st.sampled_from([1, 2, 4])),
    }
    if draw(st.booleans()):
        kwargs["reserve_memory_mb"] = draw(st.integers(0, 1024))
    if draw(st.booleans()):
        kwargs["reserve_cpu"] = draw(st.sampled_from([0, 0.1, 0.5]))
    return services, kwargs


def fits(services, kwargs):
    avail_mem, avail_cpu = available(kwargs["total_memory_mb"], kwargs["cpu_count"],
                                     kwargs.get("reserve_memory_mb"), kwargs.get("reserve_cpu", 0.25))
    need_mem = sum(s.get("min_memory_mb", 64) for s in services)
    need_cpu = sum(math.ceil(round(s.get("min_cpu", 0) * 100, 6)) for s in services)
    return need_mem <= avail_mem and need_cpu <= avail_cpu, avail_mem, avail_cpu


@settings(max_examples=300, deadline=None)
@given(scenario())
def test_property_never_overcommits_and_respects_minimums_and_caps(case):
    services, kwargs = case
    ok, avail_mem, avail_cpu = fits(services, kwargs)
    if not ok:
        with pytest.raises(AnsibleFilterError, match="need at least|no memory left|no CPU left"):
            resource_limits(services, **kwargs)
        return
    result = resource_limits(services, **kwargs)
    assert list(result) == [s["name"] for s in services]
    assert sum(r["memory_reservation_mb"] for r in result.values()) <= avail_mem
    assert sum(cpu_units(r["cpu_reservation"]) for r in result.values()) <= avail_cpu
    assert sum(r["memory_share_mb"] for r in result.values()) <= avail_mem
    assert sum(cpu_units(r["cpu_share"]) for r in result.values()) <= avail_cpu
    for svc in services:
        r = result[svc["name"]]
        min_mem = svc.get("min_memory_mb", 64)
        min_cpu = round(svc.get("min_cpu", 0) * 100)
        assert min_mem <= r["memory_reservation_mb"] <= r["memory_share_mb"] <= r["memory_max_mb"] <= avail_mem
        assert r["memory_reservation_mb"] <= r["memory_high_mb"] <= r["memory_max_mb"]
        assert min_cpu <= cpu_units(r["cpu_reservation"]) <= cpu_units(r["cpu_share"]) <= r["cpu_quota_percent"]
        assert 1 <= r["cpu_quota_percent"] <= avail_cpu
        if "max_memory_mb" in svc:
            assert r["memory_max_mb"] <= svc["max_memory_mb"]
        if "max_cpu" in svc:
            assert r["cpu_quota_percent"] <= round(svc["max_cpu"] * 100)
        assert 1 <= r["cpu_weight"] <= 10000
        assert r["systemd"]["MemoryMax"] == f"{r['memory_max_mb']}M"
        assert r["systemd"]["MemoryLow"] == f"{r['memory_reservation_mb']}M"
        assert r["systemd"]["CPUQuota"] == f"{r['cpu_quota_percent']}%"
        assert r["compose"]["limits"]["memory"] == f"{r['memory_max_mb']}M"
        assert float(r["compose"]["limits"]["cpus"]) == r["cpus"] == r["cpu_quota_percent"] / 100
        assert float(r["compose"]["reservations"]["cpus"]) == r["cpu_reservation"]


@settings(max_examples=300, deadline=None)
@given(scenario(), st.data())
def test_property_monotonic_in_priority(case, data):
    services, kwargs = case
    # Add two twins that only differ by priority (same min/max/weight).
    template = {k: v for k, v in data.draw(service_st).items() if k != "priority"}
    if "max_memory_mb" in template:
        template["max_memory_mb"] = max(template["max_memory_mb"], template.get("min_memory_mb", 64))
    if "max_cpu" in template:
        template["max_cpu"] = max(template["max_cpu"], template.get("min_cpu", 0))
    low = data.draw(st.integers(1, 9))
    high = data.draw(st.integers(low + 1, 10))
    order = data.draw(st.booleans())
    twins = [dict(template, name="twin_low", priority=low), dict(template, name="twin_high", priority=high)]
    services = services + (twins if order else twins[::-1])
    if not fits(services, kwargs)[0]:
        return
    result = resource_limits(services, **kwargs)
    lo, hi = result["twin_low"], result["twin_high"]
    for key in ("memory_share_mb", "memory_reservation_mb", "memory_high_mb", "memory_max_mb", "cpu_share",
                "cpu_reservation", "cpus", "cpu_quota_percent", "cpu_weight"):
        assert hi[key] >= lo[key], key


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 10), st.integers(1, 10))
def test_property_priority_order_of_equal_services(p1, p2):
    result = resource_limits([{"name": "a", "priority": p1}, {"name": "b", "priority": p2}], 8192, 4)
    a, b = result["a"], result["b"]
    if p1 == p2:
        assert abs(a["memory_share_mb"] - b["memory_share_mb"]) <= 1
    elif p1 > p2:
        assert a["memory_share_mb"] > b["memory_share_mb"] and a["cpu_weight"] > b["cpu_weight"]
    else:
        assert a["memory_share_mb"] < b["memory_share_mb"] and a["cpu_weight"] < b["cpu_weight"]
