#!/usr/bin/env bash
# Connection-heavy pgbench (-C: a new connection for every transaction), straight
# to PostgreSQL and through PgBouncer, on a converged container of the Molecule
# scenario `pgbouncer` (or any host with the same users). Prints a Markdown row.
#
#   molecule converge -s pgbouncer
#   bench/pgbouncer_connections.sh [CONTAINER] [SECONDS] [CLIENTS]
set -euo pipefail
container=${1:-prodready-pgbouncer-debian12}
seconds=${2:-20}
clients=${3:-10}
run() { docker exec -e PGPASSWORD=app-secret-1 "$container" bash -c "$*"; }
pgbench=$(run 'ls /usr/lib/postgresql/*/bin/pgbench | tail -1')
run "$pgbench -i -q -s 2 -h 127.0.0.1 -p 5432 -U app appdb" >/dev/null 2>&1
tps() {  # port
  run "$pgbench -C -S -n -c $clients -j 2 -T $seconds -h 127.0.0.1 -p $1 -U app appdb" 2>/dev/null \
    | awk '/^tps = / {print $3; exit}'
}
direct=$(tps 5432)
pooled=$(tps 6432)
versions=$(run "pgbouncer --version | head -1; psql --version" | tr '\n' ' ')
ratio=$(awk -v a="$pooled" -v b="$direct" 'BEGIN {printf "%.1f", a / b}')
echo "| $container | $versions | $clients | $direct | $pooled | ${ratio}x |"
