"""Effects of the pgbouncer role, checked inside each container.

molecule/pgbouncer/vars/pgbouncer.yml: database appdb owned by app, a second user reporting (both SCRAM),
user, admin and stats users, auth_query on. side_effect.yml raised
default_pool_size to 7 by reload while a client held a transaction open.
"""

import json
import re
import shlex
import sys
from pathlib import Path

import pytest

# The collection, as ansible sees it (.collections/ansible_collections/prodready/vps -> the checkout).
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / '.collections'))
from ansible_collections.prodready.vps.plugins.filter.pgbouncer_pools import pgbouncer_pools  # noqa: E402  pylint: disable=wrong-import-position

PORT = 6432
EXPOSURE_MAX = 2.5


def psql(host, user, password, sql, db='appdb', via='127.0.0.1', port=PORT):
    cmd = 'PGPASSWORD=%s PGCONNECT_TIMEOUT=5 psql -XAtq -h %s -p %d -U %s -d %s -c %s' % (
        shlex.quote(password), via, port, user, db, shlex.quote(sql))
    return host.run(cmd)


def show(host, what, user='pgbouncer_admin', password='admin-secret-3'):
    result = psql(host, user, password, 'SHOW %s' % what, db='pgbouncer', via='/var/run/postgresql')
    assert result.rc == 0, result.stderr
    return [line.split('|') for line in result.stdout.splitlines()]


def running_config(host):
    return {row[0]: row[1] for row in show(host, 'CONFIG')}


def main_pid(host):
    return int(host.check_output('systemctl show -P MainPID pgbouncer.service'))


def test_scram_user_connects_and_wrong_password_is_refused(host):
    ok = psql(host, 'app', 'app-secret-1', 'SELECT current_user')
    assert ok.rc == 0 and ok.stdout.strip() == 'app', ok.stderr
    bad = psql(host, 'app', 'wrong-password', 'SELECT 1')
    assert bad.rc != 0 and re.search('(SASL|password) authentication failed', bad.stderr), bad.stderr


def test_second_user_connects_with_its_own_password_only(host):
    ok = psql(host, 'reporting', 'reporting-secret-2', 'SELECT current_user')
    assert ok.rc == 0 and ok.stdout.strip() == 'reporting', ok.stderr
    assert psql(host, 'reporting', 'app-secret-1', 'SELECT 1').rc != 0


def test_auth_file_holds_verifiers_not_passwords(host):
    userlist = host.file('/etc/pgbouncer/userlist.txt')
    assert userlist.user == 'postgres' and userlist.mode == 0o640
    text = userlist.content_string
    for secret in ('app-secret-1', 'reporting-secret-2', 'admin-secret-3', 'stats-secret-4', 'auth-secret-5'):
        assert secret not in text
    for user in ('app', 'reporting', 'pgbouncer_admin', 'pgbouncer_stats'):
        assert re.search(r'^"%s" "SCRAM-SHA-256\$4096:[^"]+"$' % user, text, re.M), user
    # The auth_query user logs in without a client: PgBouncer can only use an md5 hash for it.
    assert re.search(r'^"pgbouncer_auth" "md5[0-9a-f]{32}"$', text, re.M)
    # PostgreSQL holds the same verifier, which is what lets PgBouncer log in with it.
    stored = host.check_output("runuser -u postgres -- psql -XAtq -c \"SELECT rolpassword FROM pg_authid "
                               "WHERE rolname = 'app'\"")
    assert '"app" "%s"' % stored in text


def test_auth_query_function_is_closed_to_everyone_but_the_auth_user(host):
    """The lookup works for the auth user and for nobody else; logging in as a user known only to
    PostgreSQL does not work yet (see the role README, Known limitations)."""
    lookup = host.run("runuser -u postgres -- psql -XAtq -d appdb -c "
                      "\"SET ROLE pgbouncer_auth; SELECT usename FROM pgbouncer.get_auth('app')\"")
    assert lookup.rc == 0 and lookup.stdout.strip() == 'app', lookup.stderr
    superuser = host.run("runuser -u postgres -- psql -XAtq -d appdb -c "
                         "\"SET ROLE pgbouncer_auth; SELECT count(*) FROM pgbouncer.get_auth('postgres')\"")
    assert superuser.rc == 0 and superuser.stdout.strip() == '0'
    denied = psql(host, 'app', 'app-secret-1', "SELECT * FROM pgbouncer.get_auth('app')")
    assert denied.rc != 0 and 'permission denied' in denied.stderr


def test_pools_are_the_filters_numbers_with_the_override(host):
    config = running_config(host)
    cpus = int(host.check_output('nproc'))
    expected = pgbouncer_pools(clients=100, workload='mixed', databases=1, users=2, cpu_count=cpus,
                               max_connections=100,
                               pgbouncer_version='1.18' if host.system_info.release.startswith('12') else '1.24')
    assert config['pool_mode'] == expected['pool_mode'] == 'transaction'
    assert int(config['default_pool_size']) == 7  # side_effect's override
    for key in ('reserve_pool_size', 'max_client_conn', 'max_db_connections', 'min_pool_size'):
        assert int(config[key]) == expected[key], key
    assert config['auth_type'] == 'scram-sha-256'
    limits = host.file('/proc/%d/limits' % main_pid(host)).content_string
    nofile = int(re.search(r'^Max open files\s+(\d+)', limits, re.M).group(1))
    assert nofile >= expected['fd_required'] and nofile % 1024 == 0


def test_stats_user_reads_but_cannot_administer(host):
    rows = show(host, 'STATS', user='pgbouncer_stats', password='stats-secret-4')
    assert any(row[0] == 'appdb' for row in rows)
    denied = psql(host, 'pgbouncer_stats', 'stats-secret-4', 'RELOAD', db='pgbouncer', via='/var/run/postgresql')
    assert denied.rc != 0 and 'admin' in denied.stderr.lower()


def test_listens_on_loopback_and_the_unix_socket_only(host):
    listening = host.check_output('ss -Hltn')
    ports = [line.split()[3] for line in listening.splitlines()]
    assert '127.0.0.1:%d' % PORT in ports
    assert not [p for p in ports if p.endswith(':%d' % PORT) and not p.startswith('127.0.0.1')]
    assert host.file('/var/run/postgresql/.s.PGSQL.%d' % PORT).is_socket


def test_session_survives_a_pool_size_reload(host):
    session = json.loads(host.file('/root/reload-session.json').content_string)
    pids = json.loads(host.file('/root/reload-pids.json').content_string)
    assert pids['before'] == pids['after'] and int(pids['before']) > 0, 'PgBouncer restarted: %s' % pids
    assert session['psql_exit'] == 0, host.file('/root/hold-session.log').content_string
    assert session['first'] and session['second'], session
    # Same transaction, so the same server backend answered both times.
    assert session['first'].split('|')[1] == session['second'].split('|')[1]
    assert running_config(host)['default_pool_size'] == '7'


def test_pgbench_50_clients_finish_without_failed_transactions(host):
    pgbench = host.check_output('ls /usr/lib/postgresql/*/bin/pgbench | tail -1')
    env = 'PGPASSWORD=app-secret-1'
    host.run_expect([0], '%s %s -i -q -s 2 -h 127.0.0.1 -p %d -U app appdb' % (env, pgbench, PORT))
    run = host.run('%s %s -c 50 -j 2 -T 20 -h 127.0.0.1 -p %d -U app appdb' % (env, pgbench, PORT))
    assert run.rc == 0, run.stderr
    processed = int(re.search(r'number of transactions actually processed: (\d+)', run.stdout).group(1))
    failed = re.search(r'number of failed transactions: (\d+)', run.stdout)
    assert processed > 0
    assert failed is not None and int(failed.group(1)) == 0, run.stdout
    assert 'aborted' not in run.stderr


def test_unit_is_sandboxed_in_effect(host):
    score = host.check_output("systemd-analyze security pgbouncer.service | tail -1")
    exposure = float(re.search(r'([0-9.]+)', score.split(':', 1)[1]).group(1))
    assert exposure <= EXPOSURE_MAX, score
    status = host.file('/proc/%d/status' % main_pid(host)).content_string
    assert re.search(r'^NoNewPrivs:\s+1$', status, re.M)
    assert re.search(r'^CapEff:\s+0+$', status, re.M)
    # ProtectSystem=strict: PgBouncer's own mount namespace has /usr and /etc read-only.
    mounts = host.file('/proc/%d/mountinfo' % main_pid(host)).content_string
    root_options = [line.split()[5].split(',') for line in mounts.splitlines() if line.split()[4] == '/']
    assert root_options and 'ro' in root_options[-1], root_options


@pytest.mark.parametrize('bad, message', [
    ('pool_mode = sometimes', 'pool_mode must be one of'),
    ('defualt_pool_size = 5', 'unknown setting defualt_pool_size'),
    ('max_client_conn = many', 'max_client_conn must be a whole number'),
])
def test_checker_refuses_bad_configurations(host, bad, message):
    host.run_expect([0], "sed '/^\\[pgbouncer\\]/a %s' /etc/pgbouncer/pgbouncer.ini > /root/bad.ini" % bad)
    result = host.run('python3 /usr/local/lib/prodready/pgbouncer-ini-check /root/bad.ini')
    assert result.rc == 1 and message in result.stderr
    assert host.run('python3 /usr/local/lib/prodready/pgbouncer-ini-check /etc/pgbouncer/pgbouncer.ini').rc == 0
