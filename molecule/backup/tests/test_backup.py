"""Effects of the backup role, checked on each backup host (and on the offsite host through Docker)."""

import base64
import json
import os
import re
import shlex
import sys
import time
from pathlib import Path

import pytest
import testinfra

# The collection's own code decrypts on the controller: .collections/ansible_collections/prodready/vps
# links to the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / '.collections'))
from ansible_collections.prodready.vps.plugins.module_utils import backup_archive as ba  # noqa: E402

# Docker's exec is much faster than the ansible backend; the names are fixed in molecule.yml.
testinfra_hosts = ['docker://prodready-backup-debian12', 'docker://prodready-backup-debian13']

DEST = '/var/backups/prodready'
CONFIG = '/etc/prodready/backup'
RUNNER = 'python3 -I -B /usr/local/lib/prodready/backup_runner.py'
METRICS = '/var/lib/prometheus/node-exporter/prodready_backup_{}.prom'
KEY = Path(os.environ.get('MOLECULE_EPHEMERAL_DIRECTORY', '/nonexistent')) / 'prodready-keys' / 'backup.agekey'
ROWS = "SELECT count(*) || ':' || md5(string_agg(id || '=' || payload, ',' ORDER BY id)) FROM items"


def run(host, command, timeout=None):
    result = host.run(command)
    assert result.rc == 0, 'command failed: %s\nstdout: %s\nstderr: %s' % (command, result.stdout, result.stderr)
    return result.stdout


def name_of(host):
    return host.backend.get_hostname()


def archives(host, prefix='daily-'):
    out = run(host, 'ls -1 %s' % DEST).split()
    return sorted(n for n in out if n.startswith(prefix) and n.endswith('.age'))


def temp_files(host):
    return [n for n in run(host, 'ls -1A %s' % DEST).split() if n.endswith('.tmp')]


def metrics(host, job='daily'):
    values = {}
    for line in host.file(METRICS.format(job)).content_string.splitlines():
        match = re.match(r'^(\w+)\{job="%s"\} (\S+)$' % job, line)
        if match:
            values[match.group(1)] = float(match.group(2))
    return values


def now(host):
    return float(run(host, 'date +%s').strip())


def start_backup(host, job='daily'):
    return host.run('systemctl start prodready-backup@%s.service' % job)


def sql(host, database, query):
    return run(host, 'runuser -u postgres -- psql -XtA -d %s -c %s' % (database, shlex.quote(query))).strip()


@pytest.fixture
def identity_on_host(host):
    """The controller's secret key, copied into the container for one test and removed afterwards."""
    assert KEY.exists(), 'the controller key %s is missing' % KEY
    path = '/root/test-identity.txt'
    encoded = base64.b64encode(KEY.read_bytes()).decode('ascii')
    run(host, 'umask 077 && echo %s | base64 -d > %s' % (encoded, path))
    try:
        yield path
    finally:
        host.run('rm -f %s' % path)


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail('timed out waiting for %s' % what)


# ---------------------------------------------------------------------------
# What the role installed


def test_timers_are_enabled_with_their_schedules(host):
    for timer, calendar in (('prodready-backup-daily.timer', '*-*-* 02:00:00'),
                            ('prodready-backup-hourly.timer', '*-*-* *:00:00'),
                            ('prodready-backup-verify.timer', 'Sun *-*-* 05:00:00')):
        props = dict(line.split('=', 1) for line in run(
            host, 'systemctl show -p TimersCalendar -p Persistent -p UnitFileState -p ActiveState -p RandomizedDelayUSec %s'
            % timer).splitlines())
        assert props['UnitFileState'] == 'enabled' and props['ActiveState'] == 'active', timer
        assert props['Persistent'] == 'yes', timer
        assert 'OnCalendar=%s ;' % calendar in props['TimersCalendar'], (timer, props['TimersCalendar'])
        assert props['RandomizedDelayUSec'] == '15min', timer


def test_services_are_sandboxed_and_hooked_when_the_hook_exists(host):
    props = dict(line.split('=', 1) for line in run(
        host, 'systemctl show -p ProtectSystem -p NoNewPrivileges -p PrivateTmp -p ReadWritePaths -p OnFailure '
              '-p Type prodready-backup@daily.service').splitlines())
    assert props['Type'] == 'oneshot'
    assert props['ProtectSystem'] == 'strict' and props['NoNewPrivileges'] == 'yes' and props['PrivateTmp'] == 'yes'
    assert DEST in props['ReadWritePaths']
    has_hook = host.file('/etc/systemd/system/prodready-onfailure@.service').exists
    assert props['OnFailure'] == ('prodready-onfailure@prodready-backup@daily.service.service' if has_hook else '')


def test_only_public_keys_on_the_host(host):
    config = json.loads(host.file('%s/daily.json' % CONFIG).content_string)
    conf = host.file('%s/daily.json' % CONFIG)
    assert conf.user == 'root' and conf.mode == 0o600
    assert host.file(CONFIG).mode == 0o700 and host.file(DEST).mode == 0o700
    assert config['recipients'] and all(r.startswith('age1') for r in config['recipients'])
    assert config['commands'][0]['argv'][:4] == ['runuser', '-u', 'postgres', '--']
    found = host.run("grep -rlE 'AGE-SECRET-KEY-1[0-9A-Z]{50}' /etc /root /var/lib/prodready /usr/local/lib/prodready %s"
                     % DEST)
    assert found.stdout.strip() == '', found.stdout


# ---------------------------------------------------------------------------
# A backup through the timer's service


def test_backup_through_the_service(host):
    before = archives(host)
    started = now(host)
    result = start_backup(host)
    assert result.rc == 0, run(host, 'journalctl --no-pager -n 30 -u prodready-backup@daily.service')
    after = archives(host)
    new = sorted(set(after) - set(before))
    assert len(new) == 1
    assert host.file('%s/%s.manifest.json' % (DEST, new[0])).mode == 0o600
    assert host.file('%s/%s' % (DEST, new[0])).mode == 0o600
    values = metrics(host)
    assert values['prodready_backup_last_success_timestamp_seconds'] >= started - 1
    assert values['prodready_backup_last_size_bytes'] == host.file('%s/%s' % (DEST, new[0])).size
    # keep_last 4, plus the newest deep-verified backup, which retention never deletes.
    assert values['prodready_backup_count'] == len(after) <= 5
    assert not temp_files(host)


def test_archive_decrypts_with_the_controller_key(host, tmp_path):
    name = archives(host)[-1]
    for suffix in ('', '.manifest.json'):
        data = base64.b64decode(run(host, 'base64 -w0 %s/%s%s' % (DEST, name, suffix)))
        (tmp_path / (name + suffix)).write_bytes(data)
    result = ba.verify(str(tmp_path / name), identity=str(KEY))
    assert result['mode'] == 'deep'
    restored = ba.restore(str(tmp_path / name), str(tmp_path / 'out'), identity=str(KEY))
    assert 'postgresql/appdb.dump' in restored['members']
    assert (tmp_path / 'out' / 'srv' / 'app' / 'app.env').read_text() == 'SECRET=demo\n'
    assert (tmp_path / 'out' / 'postgresql' / 'appdb.dump').read_bytes()[:5] == b'PGDMP'


def test_postgresql_dump_restores_into_a_fresh_database(host, identity_on_host):
    target = '/root/restore-test'
    host.run('rm -rf %s; runuser -u postgres -- dropdb --if-exists appdb_test' % target)
    script = ('import sys; sys.path.insert(0, "/usr/local/lib/prodready"); import backup_archive as ba; '
              'ba.restore(ba.find_archive("latest", "%s", "daily-"), "%s", identity="%s", '
              'only=["postgresql/appdb.dump"])' % (DEST, target, identity_on_host))
    run(host, 'python3 -I -B -c %s' % shlex.quote(script))
    run(host, 'runuser -u postgres -- createdb appdb_test')
    run(host, 'runuser -u postgres -- pg_restore --no-owner --exit-on-error -d appdb_test < %s/postgresql/appdb.dump'
        % target)
    original = sql(host, 'appdb', ROWS)
    assert original.startswith('500:')
    assert sql(host, 'appdb_test', ROWS) == original
    run(host, 'runuser -u postgres -- dropdb appdb_test; rm -rf %s' % target)


def test_restore_playbook_loaded_the_dump(host):
    """side_effect ran playbooks/backup.yml, then playbooks/restore.yml into appdb_playbook."""
    assert sql(host, 'appdb_playbook', ROWS) == sql(host, 'appdb', ROWS)


def test_offsite_holds_the_same_bytes(host):
    offsite = testinfra.get_host('docker://prodready-backup-offsite')
    remote_dir = '/srv/backups/%s' % name_of(host)
    local = archives(host)
    remote = sorted(n for n in offsite.run('ls -1 %s' % remote_dir).stdout.split()
                    if n.startswith('daily-') and n.endswith('.age'))
    assert remote == local
    for name in local[-2:]:
        mine = run(host, 'sha256sum %s/%s' % (DEST, name)).split()[0]
        theirs = offsite.run('sha256sum %s/%s' % (remote_dir, name)).stdout.split()[0]
        assert mine == theirs, name
        assert offsite.file('%s/%s.manifest.json' % (remote_dir, name)).exists
        assert offsite.file('%s/%s' % (remote_dir, name)).user == 'backup'
        assert offsite.file('%s/%s' % (remote_dir, name)).mode == 0o600


def test_hourly_database_job(host):
    result = start_backup(host, 'hourly')
    assert result.rc == 0, run(host, 'journalctl --no-pager -n 30 -u prodready-backup@hourly.service')
    newest = archives(host, 'hourly-')[-1]
    manifest = json.loads(host.file('%s/%s.manifest.json' % (DEST, newest)).content_string)
    assert [e['name'] for e in manifest['entries']] == ['postgresql/appdb.dump']
    assert metrics(host, 'hourly')['prodready_backup_count'] >= 1


# ---------------------------------------------------------------------------
# Restore test (verify)


def test_restore_test_service_and_deep_verification(host, identity_on_host):
    verified = metrics(host)['prodready_backup_last_verified_restore_timestamp_seconds']
    result = host.run('systemctl start prodready-backup-verify@daily.service')
    assert result.rc == 0, run(host, 'journalctl --no-pager -n 20 -u prodready-backup-verify@daily.service')
    assert 'shallow verification' in run(host, 'journalctl --no-pager -n 5 -u prodready-backup-verify@daily.service')
    # No identity on the host: nothing was decrypted, so no verified restore is recorded.
    assert metrics(host)['prodready_backup_last_verified_restore_timestamp_seconds'] == verified
    started = now(host)
    run(host, '%s --config %s/daily.json --identity %s verify' % (RUNNER, CONFIG, identity_on_host))
    assert metrics(host)['prodready_backup_last_verified_restore_timestamp_seconds'] >= started - 1
    assert host.file('%s/%s.verified' % (DEST, archives(host)[-1])).exists


# ---------------------------------------------------------------------------
# Failures


def test_failing_run_writes_nothing_and_records_the_failure(host):
    before = archives(host)
    success = metrics(host)['prodready_backup_last_success_timestamp_seconds']
    hooked = host.file('/etc/systemd/system/prodready-onfailure@.service').exists
    host.run('rm -f /var/lib/onfailure-test.log')
    started = now(host)
    run(host, 'mv /srv/app /srv/app.away')
    try:
        result = start_backup(host)
    finally:
        run(host, 'mv /srv/app.away /srv/app')
    assert result.rc != 0
    assert archives(host) == before
    assert not temp_files(host)
    values = metrics(host)
    assert values['prodready_backup_last_failure_timestamp_seconds'] >= started - 1
    assert values['prodready_backup_last_success_timestamp_seconds'] == success
    journal = run(host, 'journalctl --no-pager -n 10 -u prodready-backup@daily.service')
    assert 'source /srv/app does not exist' in journal and 'no backup was written' in journal
    if hooked:
        wait_for(lambda: host.file('/var/lib/onfailure-test.log').exists, 10, 'the OnFailure= hook')
        assert host.file('/var/lib/onfailure-test.log').content_string.strip() == 'prodready-backup@daily.service'
    # The next successful run (test_kill_9...) moves last_success past last_failure again.


def write_slow_job(host, seconds):
    """A job on the same directory whose command takes a while (the service's sandbox applies to it)."""
    script = ('import json; c = json.load(open("%s/daily.json")); '
              'c.update(job="slowtest", sources=[], offsite=None, retention={}, '
              'commands=[{"name": "slow.bin", "shell": "head -c 300000 /dev/urandom; sleep %d"}]); '
              'json.dump(c, open("%s/slowtest.json", "w"))' % (CONFIG, seconds, CONFIG))
    run(host, 'umask 077 && python3 -c %s' % shlex.quote(script))


def test_kill_9_leaves_no_archive_and_the_next_run_succeeds(host):
    write_slow_job(host, 60)
    before = archives(host)
    try:
        run(host, 'systemctl start --no-block prodready-backup@slowtest.service')
        wait_for(lambda: temp_files(host), 20, 'the slow job to start writing')
        # A second run on the same directory fails at once without touching anything.
        second = host.run('%s --config %s/daily.json --lock-timeout 0 run' % (RUNNER, CONFIG))
        assert second.rc == 75, second.stderr
        assert 'another backup run holds the lock' in second.stderr
        run(host, 'systemctl kill -s KILL prodready-backup@slowtest.service')
        wait_for(lambda: host.run('systemctl is-active prodready-backup@slowtest.service').stdout.strip()
                 in ('inactive', 'failed'), 20, 'the killed job to stop')
    finally:
        host.run('systemctl stop prodready-backup@slowtest.service; systemctl reset-failed prodready-backup@slowtest.service')
        host.run('rm -f %s/slowtest.json' % CONFIG)
    assert archives(host, 'slowtest-') == []
    assert archives(host) == before
    failure = metrics(host)['prodready_backup_last_failure_timestamp_seconds']
    assert start_backup(host).rc == 0
    assert not temp_files(host)
    assert len(set(archives(host)) - set(before)) == 1
    assert metrics(host)['prodready_backup_last_success_timestamp_seconds'] > failure


def test_concurrent_run_waits_for_the_lock(host):
    write_slow_job(host, 2)
    try:
        run(host, 'systemctl start --no-block prodready-backup@slowtest.service')
        wait_for(lambda: temp_files(host), 20, 'the slow job to start writing')
        started = time.monotonic()
        run(host, '%s --config %s/daily.json --lock-timeout 60 run' % (RUNNER, CONFIG))
        assert time.monotonic() - started >= 1
        assert host.run('systemctl is-active prodready-backup@slowtest.service').stdout.strip() == 'inactive'
        assert len(archives(host, 'slowtest-')) == 1
    finally:
        host.run('systemctl stop prodready-backup@slowtest.service')
        host.run('rm -f %s/slowtest.json %s/slowtest-* %s' % (CONFIG, DEST, METRICS.format('slowtest')))
