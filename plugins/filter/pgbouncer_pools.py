# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filter ``prodready.vps.pgbouncer_pools``: size PgBouncer pools against PostgreSQL's connection budget.

Pure and deterministic; see ``pgbouncer_pools.yml`` for the user documentation.

Outline:

* ``target = ceil((cpu_count * 2 + effective_spindles) * workload factor)``,
  the number of busy server connections that saturates the database host
  (the PostgreSQL wiki's "cores * 2 + effective spindles" rule), at least 2
  and never more than ``clients``;
* ``pool_mode``: ``session`` for analytical work (long queries, session state)
  and whenever prepared statements are needed on PgBouncer < 1.21, otherwise
  ``transaction``;
* ``budget = max_connections - reserved_connections``; every (database, user)
  pair gets its own pool, so ``(default_pool_size + reserve_pool_size) *
  databases * users`` must fit into the budget. Pools are shrunk until they
  fit; below a pool of 2 (1 when there is a single client) the filter refuses.
"""

import math
import re
from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

FILTER = "pgbouncer_pools"

# workload -> (factor applied to cores * 2 + effective spindles, pool mode)
WORKLOADS = {
    "read-heavy": (1.5, "transaction"),
    "mixed": (1.0, "transaction"),
    "write-heavy": (0.75, "transaction"),
    "analytical": (0.5, "session"),
}
POOL_MODES = ("session", "transaction", "statement")
# PgBouncer supports protocol-level prepared statements in transaction/statement mode from 1.21 on.
PREPARED_STATEMENTS_VERSION = (1, 21)
MAX_PREPARED_STATEMENTS = 200
MIN_POOL_SIZE_FLOOR = 2
FD_ROUND = 1024

OPTIONS = {
    "clients": None,
    "workload": "mixed",
    "databases": 1,
    "users": 1,
    "cpu_count": None,
    "effective_spindles": 1,
    "max_connections": None,
    "reserved_connections": None,
    "superuser_reserved_connections": 3,
    "direct_connections": 5,
    "pgbouncer_version": "1.18",
    "prepared_statements": False,
    "pool_mode": None,
    "client_headroom": 0.25,
    "fd_margin": 100,
}


def _fail(message):
    raise AnsibleFilterError(f"{FILTER}: {message}")


def _int(settings, key, minimum):
    value = settings[key]
    if value is None:
        _fail(f"'{key}' is required")
    if isinstance(value, bool):
        _fail(f"'{key}' must be a whole number, got boolean {value!r}")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        _fail(f"'{key}' must be a whole number, got {type(value).__name__} {value!r}")
    if value < minimum:
        _fail(f"'{key}' must be at least {minimum}, got {value}")
    return int(value)


def _float(settings, key, minimum):
    value = settings[key]
    if isinstance(value, bool) or value is None:
        _fail(f"'{key}' must be a number, got {value!r}")
    try:
        result = float(value)
    except (TypeError, ValueError):
        _fail(f"'{key}' must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(result) or result < minimum:
        _fail(f"'{key}' must be a number of at least {minimum}, got {value!r}")
    return result


def _bool(settings, key):
    value = settings[key]
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("yes", "true", "on", "1", "no", "false", "off", "0"):
        return value.strip().lower() in ("yes", "true", "on", "1")
    _fail(f"'{key}' must be a boolean, got {value!r}")


def _version(value):
    match = re.match(r"^\s*v?(\d+)\.(\d+)", str(value))
    if isinstance(value, bool) or match is None:
        _fail(f"'pgbouncer_version' must look like '1.18' or '1.21.0', got {value!r}")
    return int(match.group(1)), int(match.group(2))


def _reserve_for(pool_size):
    """Reserve pool: a quarter of the pool, at least one connection."""
    return max(1, math.ceil(pool_size / 4))


def pgbouncer_pools(settings=None, **kwargs):
    """Return PgBouncer pool settings; ``settings`` dict and keyword options are merged (keywords win)."""
    if settings is None:
        settings = {}
    if not isinstance(settings, Mapping):
        _fail(f"input must be a dictionary of settings (for example {{'clients': 200, 'cpu_count': 2, "
              f"'max_connections': 100}}), got {type(settings).__name__} {settings!r}")
    merged = dict(settings)
    merged.update(kwargs)
    unknown = sorted(str(k) for k in merged if k not in OPTIONS)
    if unknown:
        _fail(f"unknown option(s) {', '.join(unknown)}; expected some of {', '.join(OPTIONS)}")
    opts = dict(OPTIONS)
    opts.update(merged)

    clients = _int(opts, "clients", 1)
    databases = _int(opts, "databases", 1)
    users = _int(opts, "users", 1)
    cpu_count = _int(opts, "cpu_count", 1)
    spindles = _int(opts, "effective_spindles", 0)
    max_connections = _int(opts, "max_connections", 1)
    headroom = _float(opts, "client_headroom", 0)
    fd_margin = _int(opts, "fd_margin", 0)
    prepared = _bool(opts, "prepared_statements")
    version = _version(opts["pgbouncer_version"])
    workload = str(opts["workload"]).strip().lower().replace("_", "-").replace(" ", "-")
    if workload not in WORKLOADS:
        _fail(f"workload {opts['workload']!r} is not supported; expected one of {', '.join(sorted(WORKLOADS))}")
    if opts["reserved_connections"] is None:
        superuser = _int(opts, "superuser_reserved_connections", 0)
        direct = _int(opts, "direct_connections", 0)
        reserved = superuser + direct
        reserved_how = f"superuser_reserved_connections {superuser} + direct_connections {direct}"
    else:
        reserved = _int(opts, "reserved_connections", 0)
        reserved_how = "reserved_connections"

    notes = []
    budget = max_connections - reserved
    if budget < 1:
        _fail(f"max_connections {max_connections} leaves no backend connections for PgBouncer after reserving "
              f"{reserved} ({reserved_how}); raise max_connections or lower the reserve")
    pairs = databases * users

    factor, pool_mode = WORKLOADS[workload]
    version_text = f"{version[0]}.{version[1]}"
    prepared_in_pool = prepared and version >= PREPARED_STATEMENTS_VERSION
    if prepared and not prepared_in_pool and pool_mode != "session":
        pool_mode = "session"
        notes.append(f"prepared_statements is true and PgBouncer {version_text} < 1.21 cannot track prepared "
                     f"statements in transaction mode (Debian 12 ships 1.18): using pool_mode session")
    forced = opts["pool_mode"]
    if forced is not None:
        forced = str(forced).strip().lower()
        if forced not in POOL_MODES:
            _fail(f"pool_mode {opts['pool_mode']!r} is not supported; expected one of {', '.join(POOL_MODES)}")
        if prepared and not prepared_in_pool and forced != "session":
            _fail(f"pool_mode {forced} cannot be used with prepared_statements on PgBouncer {version_text}: "
                  f"protocol-level prepared statements need session mode before PgBouncer 1.21")
        if forced != pool_mode:
            notes.append(f"pool_mode {forced} forced by the caller (the {workload} default is {pool_mode})")
        pool_mode = forced
    elif pool_mode == "session":
        notes.append(f"{workload} workload: pool_mode session, long queries keep their server connection "
                     f"and session state (SET, temp tables, advisory locks) stays valid")
    else:
        notes.append(f"{workload} workload: pool_mode transaction, server connections are shared between "
                     f"clients between transactions")
    if version >= PREPARED_STATEMENTS_VERSION and pool_mode != "session":
        notes.append(f"PgBouncer {version_text} tracks protocol-level prepared statements in {pool_mode} mode "
                     f"(max_prepared_statements {MAX_PREPARED_STATEMENTS})")
    if not prepared and version < PREPARED_STATEMENTS_VERSION and pool_mode != "session":
        notes.append(f"PgBouncer {version_text} has no prepared statement support in {pool_mode} mode: clients "
                     f"must not use protocol-level prepared statements (psycopg prepare_threshold=None, "
                     f"asyncpg statement_cache_size=0, JDBC prepareThreshold=0)")

    base = cpu_count * 2 + spindles
    target = max(MIN_POOL_SIZE_FLOOR, math.ceil(base * factor))
    desired = min(target, clients)
    notes.append(f"target {target} busy server connections = ceil(({cpu_count} cores * 2 + {spindles} "
                 f"effective spindles) * {factor} for {workload})"
                 + (f", capped at {clients} clients" if desired < target else ""))

    floor_size = min(MIN_POOL_SIZE_FLOOR, clients)
    per_pool = budget // pairs
    if per_pool < floor_size:
        _fail(f"backend budget too small: {databases} database(s) x {users} user(s) = {pairs} pools need at least "
              f"{floor_size * pairs} server connections (pool size {floor_size} each) but the budget is only "
              f"{budget} (max_connections {max_connections} - {reserved} reserved by {reserved_how}); "
              f"raise max_connections, lower the reserve or use fewer database/user pairs")

    pool_size = desired
    while pool_size > floor_size and pool_size + _reserve_for(pool_size) > per_pool:
        pool_size -= 1
    reserve = min(_reserve_for(pool_size), per_pool - pool_size)
    if pool_size < desired:
        notes.append(f"pool size reduced from {desired} to {pool_size} so that {pairs} pool(s) x "
                     f"({pool_size} + {reserve} reserve) fit the backend budget of {budget}")
    if reserve < _reserve_for(pool_size):
        notes.append(f"reserve_pool_size limited to {reserve} by the backend budget of {budget}")

    min_pool = 0 if pool_mode == "session" else pool_size // 4
    per_db_pools = users * (pool_size + reserve)
    max_db_connections = min(per_db_pools, max(pool_size + reserve, target + _reserve_for(target)))
    server_connections_max = databases * max_db_connections
    pool_connections_max = pairs * (pool_size + reserve)
    if max_db_connections < per_db_pools:
        notes.append(f"max_db_connections {max_db_connections} keeps the {users} users of a database near the "
                     f"CPU target instead of {per_db_pools} connections")

    max_client_conn = max(clients, math.ceil(clients * (1 + headroom) / 10) * 10)
    fd_required = max_client_conn + pool_connections_max + fd_margin
    fd_limit = math.ceil(fd_required / FD_ROUND) * FD_ROUND
    notes.append(f"file descriptors: max_client_conn {max_client_conn} + {pairs} pool(s) x "
                 f"{pool_size + reserve} server connections + {fd_margin} margin = {fd_required}, "
                 f"rounded up to LimitNOFILE {fd_limit}")

    return {
        "pool_mode": pool_mode,
        "default_pool_size": pool_size,
        "min_pool_size": min_pool,
        "reserve_pool_size": reserve,
        "max_client_conn": max_client_conn,
        "max_db_connections": max_db_connections,
        "max_prepared_statements": MAX_PREPARED_STATEMENTS if version >= PREPARED_STATEMENTS_VERSION else None,
        "fd_required": fd_required,
        "fd_limit": fd_limit,
        "budget": budget,
        "reserved_connections": reserved,
        "target_connections": target,
        "server_connections_max": server_connections_max,
        "notes": notes,
    }


class FilterModule:
    """Ansible filters for sizing PgBouncer."""

    def filters(self):
        return {"pgbouncer_pools": pgbouncer_pools}
