# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit and property tests for the ``prodready.vps.pgbouncer_pools`` filter."""

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.prodready.vps.plugins.filter.pgbouncer_pools import (
    FilterModule,
    pgbouncer_pools,
)
from hypothesis import given, settings
from hypothesis import strategies as st

BASE = {"clients": 200, "workload": "mixed", "databases": 1, "users": 1, "cpu_count": 2,
        "max_connections": 100, "reserved_connections": 10}


def test_registered_as_filter():
    assert FilterModule().filters() == {"pgbouncer_pools": pgbouncer_pools}


def test_200_clients_mixed_2_cores():
    result = pgbouncer_pools(BASE)
    notes = result.pop("notes")
    assert result == {
        "pool_mode": "transaction",
        "default_pool_size": 5,
        "min_pool_size": 1,
        "reserve_pool_size": 2,
        "max_client_conn": 250,
        "max_db_connections": 7,
        "max_prepared_statements": None,
        "fd_required": 357,
        "fd_limit": 1024,
        "budget": 90,
        "reserved_connections": 10,
        "target_connections": 5,
        "server_connections_max": 7,
    }
    assert any("no prepared statement support" in n for n in notes)
    assert any("cores * 2" in n for n in notes)


@pytest.mark.parametrize(
    "workload, mode, size",
    [("read-heavy", "transaction", 8), ("mixed", "transaction", 5), ("write-heavy", "transaction", 4),
     ("analytical", "session", 3), ("read_heavy", "transaction", 8), ("Write-Heavy", "transaction", 4)],
)
def test_workloads(workload, mode, size):
    result = pgbouncer_pools(dict(BASE, workload=workload))
    assert result["pool_mode"] == mode
    assert result["default_pool_size"] == size
    assert result["min_pool_size"] == (0 if mode == "session" else size // 4)


def test_keyword_arguments_override_input():
    assert pgbouncer_pools({}, **BASE) == pgbouncer_pools(BASE)
    assert pgbouncer_pools(BASE, workload="analytical")["pool_mode"] == "session"
    assert pgbouncer_pools(None, **BASE) == pgbouncer_pools(BASE)


def test_default_reserve_is_superuser_plus_direct():
    settings_ = {k: v for k, v in BASE.items() if k != "reserved_connections"}
    assert pgbouncer_pools(settings_)["budget"] == 100 - 3 - 5
    result = pgbouncer_pools(settings_, superuser_reserved_connections=5, direct_connections=15)
    assert result["budget"] == 80 and result["reserved_connections"] == 20


def test_prepared_statements_force_session_before_1_21():
    result = pgbouncer_pools(BASE, prepared_statements=True)
    assert result["pool_mode"] == "session"
    assert result["min_pool_size"] == 0
    assert any("Debian 12 ships 1.18" in n for n in result["notes"])


def test_prepared_statements_stay_in_transaction_mode_from_1_21():
    result = pgbouncer_pools(BASE, prepared_statements=True, pgbouncer_version="1.21.0")
    assert result["pool_mode"] == "transaction"
    assert result["max_prepared_statements"] == 200
    assert pgbouncer_pools(BASE, pgbouncer_version="1.22.1-1.pgdg120+1")["max_prepared_statements"] == 200


def test_forced_pool_mode():
    result = pgbouncer_pools(BASE, pool_mode="session")
    assert result["pool_mode"] == "session"
    assert any("forced by the caller" in n for n in result["notes"])
    assert pgbouncer_pools(BASE, prepared_statements=True, pool_mode="session")["pool_mode"] == "session"


def test_pools_shrink_to_fit_budget():
    result = pgbouncer_pools(dict(BASE, databases=3, users=4, cpu_count=8, max_connections=60, workload="read-heavy"))
    # budget 50 over 12 pools -> 4 per pool: pool 3 + reserve 1
    assert result["budget"] == 50
    assert (result["default_pool_size"], result["reserve_pool_size"]) == (3, 1)
    assert 12 * 4 <= 50
    assert any("reduced from 26 to 3" in n for n in result["notes"])
    assert result["server_connections_max"] <= 50


def test_reserve_shrinks_at_smallest_pool():
    result = pgbouncer_pools(dict(BASE, databases=2, users=2, max_connections=18, reserved_connections=10))
    # budget 8 over 4 pools -> exactly the minimum pool of 2, no room for a reserve
    assert (result["default_pool_size"], result["reserve_pool_size"]) == (2, 0)
    assert any("reserve_pool_size limited to 0" in n for n in result["notes"])


def test_max_db_connections_bounds_many_users_near_target():
    result = pgbouncer_pools(dict(BASE, users=5, max_connections=200))
    assert result["default_pool_size"] == 5 and result["reserve_pool_size"] == 2
    assert result["max_db_connections"] == 7  # target 5 + reserve 2, not 5 users * 7
    assert result["server_connections_max"] == 7


def test_pool_never_larger_than_clients():
    result = pgbouncer_pools(dict(BASE, clients=3, cpu_count=16))
    assert result["default_pool_size"] == 3
    assert result["max_client_conn"] == 10
    one = pgbouncer_pools(dict(BASE, clients=1, max_connections=12))
    assert one["default_pool_size"] == 1 and one["max_client_conn"] >= 1


def test_fd_limit_rounds_to_1024():
    result = pgbouncer_pools(dict(BASE, clients=2000))
    assert result["max_client_conn"] == 2500
    assert result["fd_required"] == 2500 + 7 + 100
    assert result["fd_limit"] == 3072


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"databases": 10, "users": 5, "max_connections": 100, "reserved_connections": 10},
         (r"backend budget too small: 10 database\(s\) x 5 user\(s\) = 50 pools need at least 100 server connections "
          r"\(pool size 2 each\) but the budget is only 90 \(max_connections 100 - 10 reserved by reserved_connections\)")),
        ({"max_connections": 10, "reserved_connections": 10},
         r"max_connections 10 leaves no backend connections for PgBouncer after reserving 10"),
        ({"max_connections": 5, "reserved_connections": None},
         r"max_connections 5 leaves .* after reserving 8 \(superuser_reserved_connections 3 \+ direct_connections 5\)"),
        ({"workload": "oltp"},
         r"workload 'oltp' is not supported; expected one of analytical, mixed, read-heavy, write-heavy"),
        ({"clients": 0}, r"'clients' must be at least 1, got 0"),
        ({"clients": None}, r"'clients' is required"),
        ({"clients": "many"}, r"'clients' must be a whole number, got str 'many'"),
        ({"cpu_count": True}, r"'cpu_count' must be a whole number, got boolean"),
        ({"max_connections": 99.5}, r"'max_connections' must be a whole number"),
        ({"pool_mode": "pipelined"}, r"pool_mode 'pipelined' is not supported"),
        ({"pool_mode": "transaction", "prepared_statements": True},
         r"pool_mode transaction cannot be used with prepared_statements on PgBouncer 1.18"),
        ({"pgbouncer_version": "latest"}, r"'pgbouncer_version' must look like '1.18'"),
        ({"prepared_statements": "maybe"}, r"'prepared_statements' must be a boolean"),
        ({"client_headroom": -0.5}, r"'client_headroom' must be a number of at least 0"),
        ({"max_conections": 100}, r"unknown option\(s\) max_conections"),
    ],
)
def test_errors(overrides, message):
    with pytest.raises(AnsibleFilterError, match=r"^pgbouncer_pools: " + message):
        pgbouncer_pools(dict(BASE, **overrides))


def test_input_must_be_a_dict():
    with pytest.raises(AnsibleFilterError, match=r"input must be a dictionary of settings"):
        pgbouncer_pools([BASE])


def test_string_numbers_and_booleans_accepted():
    as_strings = {k: str(v) for k, v in BASE.items()}
    assert pgbouncer_pools(as_strings) == pgbouncer_pools(BASE)
    assert pgbouncer_pools(BASE, prepared_statements="yes")["pool_mode"] == "session"


# ---------------------------------------------------------------- properties

WORKLOAD_MODES = {"read-heavy": "transaction", "write-heavy": "transaction", "mixed": "transaction",
                  "analytical": "session"}

case_st = st.fixed_dictionaries(
    {
        "clients": st.integers(1, 20000),
        "workload": st.sampled_from(sorted(WORKLOAD_MODES)),
        "databases": st.integers(1, 20),
        "users": st.integers(1, 20),
        "cpu_count": st.integers(1, 128),
        "max_connections": st.integers(1, 2000),
        "reserved_connections": st.integers(0, 50),
    },
    optional={
        "effective_spindles": st.integers(0, 16),
        "client_headroom": st.sampled_from([0, 0.1, 0.25, 1]),
        "fd_margin": st.integers(0, 500),
        "pgbouncer_version": st.sampled_from(["1.18", "1.21", "1.23.1"]),
        "prepared_statements": st.booleans(),
    },
)


@settings(max_examples=500, deadline=None)
@given(case_st)
def test_property_budget_clients_fds_and_mode(case):
    budget = case["max_connections"] - case["reserved_connections"]
    pairs = case["databases"] * case["users"]
    floor_size = min(2, case["clients"])
    if budget < 1 or budget // pairs < floor_size:
        with pytest.raises(AnsibleFilterError, match="budget too small|leaves no backend connections"):
            pgbouncer_pools(case)
        return
    result = pgbouncer_pools(case)
    pool, reserve = result["default_pool_size"], result["reserve_pool_size"]
    assert result["budget"] == budget
    assert (pool + reserve) * pairs <= budget
    assert result["server_connections_max"] <= budget
    assert result["server_connections_max"] == case["databases"] * result["max_db_connections"]
    assert pool <= result["max_db_connections"] <= case["users"] * (pool + reserve)
    assert floor_size <= pool <= case["clients"]
    assert 0 <= result["min_pool_size"] <= pool
    assert reserve >= 0
    assert result["max_client_conn"] >= case["clients"]
    assert result["fd_limit"] >= result["fd_required"] >= result["max_client_conn"] + result["server_connections_max"]
    assert result["fd_required"] >= result["max_client_conn"] + (pool + reserve) * pairs
    assert result["fd_limit"] % 1024 == 0
    expected_mode = WORKLOAD_MODES[case["workload"]]
    if case.get("prepared_statements") and case.get("pgbouncer_version", "1.18") == "1.18":
        expected_mode = "session"
    assert result["pool_mode"] == expected_mode
    assert all(isinstance(n, str) and n for n in result["notes"])


@settings(max_examples=200, deadline=None)
@given(case_st, st.integers(1, 64))
def test_property_pool_grows_with_budget(case, extra):
    """More max_connections never gives smaller pools."""
    try:
        small = pgbouncer_pools(case)
    except AnsibleFilterError:
        return
    large = pgbouncer_pools(case, max_connections=case["max_connections"] + extra)
    assert large["default_pool_size"] >= small["default_pool_size"]
    assert large["server_connections_max"] >= small["server_connections_max"]
