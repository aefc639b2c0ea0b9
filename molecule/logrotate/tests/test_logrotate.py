"""Effects of the logrotate role, checked inside each container."""

import re
import time

import pytest

DATED = re.compile(r'^(?P<base>[a-z-]+\.log)-(?P<date>\d{8}-\d{6})(?P<gz>\.gz)?$')


def run(host, command):
    result = host.run(command)
    assert result.rc == 0, 'command failed: %s\nstdout: %s\nstderr: %s' % (command, result.stdout, result.stderr)
    return result.stdout


def wait_inactive(host, unit, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if host.run('systemctl is-active %s' % unit).stdout.strip() in ('inactive', 'failed'):
            return
        time.sleep(1)
    pytest.fail('%s still active after %d s' % (unit, timeout))


def read_all_lines(host, log_dir, base):
    """Every line of <base> and its rotated (possibly compressed) files."""
    return run(host, 'cd %s && for f in %s %s-*; do [ -e "$f" ] || continue; '
                     'case "$f" in *.gz) zcat "$f";; *) cat "$f";; esac; done' % (log_dir, base, base)).splitlines()


def rotate_times(host, conf, times, pause=1.05):
    # dateformat has seconds: a pause of over a second keeps names unique.
    run(host, 'for i in $(seq %d); do sleep %s; logrotate -f %s || exit 1; done' % (times, pause, conf))


def test_configs_installed_and_valid(host):
    for name in ('lrtest', 'lrretain', 'extra-audit'):
        conf = host.file('/etc/logrotate.d/prodready-%s' % name)
        assert conf.exists and conf.user == 'root' and conf.mode == 0o644
        assert 'dateformat -%Y%m%d-%H%M%S' in conf.content_string
        run(host, '/usr/local/lib/prodready/logrotate-validate /etc/logrotate.d/prodready-%s' % name)
    lrtest = host.file('/etc/logrotate.d/prodready-lrtest').content_string
    for directive in ('daily', 'rotate 200', 'maxsize 100M', 'compress', 'delaycompress', 'dateext',
                      'missingok', 'notifempty', 'su lrtest lrtest', 'create 0640 lrtest lrtest'):
        assert re.search(r'^\s+%s$' % re.escape(directive), lrtest, re.M), directive
    assert 'copytruncate' not in lrtest
    assert re.search(r'^\s+rotate 30$', host.file('/etc/logrotate.d/prodready-extra-audit').content_string, re.M)


def test_log_directory_and_writer(host):
    log_dir = host.file('/var/log/lrtest')
    assert log_dir.is_directory and log_dir.user == 'lrtest' and log_dir.mode == 0o750
    writer = host.service('prodready-log-lrtest.service')
    assert writer.is_running and writer.is_enabled
    pid = run(host, 'systemctl show -p MainPID --value prodready-log-lrtest.service').strip()
    status = host.file('/proc/%s/status' % pid).content_string
    assert re.search(r'^NoNewPrivs:\s+1$', status, re.M)
    assert re.search(r'^Seccomp:\s+2$', status, re.M)
    assert run(host, 'ps -o user= -p %s' % pid).strip() == 'lrtest'
    fifo = host.file('/run/prodready-log/lrtest.stdout')
    assert fifo.exists and fifo.mode == 0o600
    assert run(host, 'stat -c %F /run/prodready-log/lrtest.stdout').strip() == 'fifo'


def test_forced_rotation_compresses_dates_owner_mode_and_retention(host):
    run(host, 'rm -f /var/log/lrretain/*')
    run(host, 'systemctl restart prodready-log-lrretain.service')
    for dummy in range(4):
        run(host, 'systemctl start lrretain.service')
        wait_inactive(host, 'lrretain.service', 30)
        rotate_times(host, '/etc/logrotate.d/prodready-lrretain', 1)
    names = sorted(run(host, 'ls /var/log/lrretain').split())
    rotated = [DATED.match(n) for n in names if n.startswith('lrretain.log-')]
    assert all(rotated), names
    # rotate 2: the oldest were removed, the two newest stay.
    assert len(rotated) == 2, names
    # delaycompress: the newest rotated file is plain, the older one compressed.
    assert rotated[0].group('gz') == '.gz' and rotated[1].group('gz') is None, names
    for name in names:
        f = host.file('/var/log/lrretain/' + name)
        assert f.user == 'lrretain' and f.group == 'lrretain' and f.mode == 0o640, name
    # After the last rotation the writer reopened a new, empty file.
    current = host.file('/var/log/lrretain/lrretain.log')
    assert current.exists and current.size == 0 and current.mode == 0o640
    # Dates in the names are the rotation times (this year).
    assert rotated[-1].group('date')[:4] == run(host, 'date -u +%Y').strip()


def test_no_line_lost_at_5000_lines_per_second_through_50_rotations(host):
    count = 300000
    run(host, 'rm -f /var/log/lrtest/*')
    run(host, 'systemctl restart prodready-log-lrtest.service')
    run(host, 'systemctl start lrtest.service')
    rotate_times(host, '/etc/logrotate.d/prodready-lrtest', 50)
    wait_inactive(host, 'lrtest.service', 120)
    assert run(host, 'systemctl show -p Result --value lrtest.service').strip() == 'success'
    rotated = run(host, 'ls /var/log/lrtest').split()
    assert len([n for n in rotated if n.startswith('lrtest.log-')]) >= 45, rotated

    deadline = time.time() + 30
    while True:
        lines = read_all_lines(host, '/var/log/lrtest', 'lrtest.log')
        if len(lines) >= count or time.time() > deadline:
            break
        time.sleep(1)
    numbers = [int(line.split()[1]) for line in lines]
    assert len(numbers) == count, 'expected %d lines, found %d' % (count, len(numbers))
    assert sorted(numbers) == list(range(count)), 'lines lost or duplicated'
    errors = [int(line.split()[1]) for line in read_all_lines(host, '/var/log/lrtest', 'lrtest-error.log')]
    assert sorted(errors) == list(range(0, count, 100))


def test_journald_persistent_with_caps(host):
    conf = run(host, 'systemd-analyze cat-config systemd/journald.conf')
    for line in ('Storage=persistent', 'SystemMaxUse=1G', 'SystemKeepFree=2G', 'MaxRetentionSec=1month'):
        assert line in conf
    assert host.file('/var/log/journal').is_directory
    # journald writes the persistent journal (not only /run).
    assert run(host, 'journalctl --header | grep -c "^File path: /var/log/journal" || true').strip() != '0'


def test_logrotate_runs_hourly(host):
    calendar = run(host, 'systemctl show -p TimersCalendar --value logrotate.timer')
    assert 'OnCalendar=hourly' in calendar or '*-*-* *:00:00' in calendar, calendar
    assert host.service('logrotate.timer').is_enabled


def test_diskguard_metrics_and_warning(host):
    assert host.service('prodready-diskguard.timer').is_enabled
    run(host, 'systemctl start prodready-diskguard.service')
    metrics = host.file('/var/lib/prometheus/node-exporter/prodready_diskguard.prom').content_string
    assert re.search(r'^prodready_filesystem_used_ratio\{path="/var/log",mountpoint="[^"]+"\} 0?\.\d+', metrics, re.M)
    assert re.search(r'^prodready_filesystem_inodes_used_ratio\{path="/var/log"', metrics, re.M)
    assert re.search(r'^prodready_diskguard_last_run_timestamp_seconds \d{10}$', metrics, re.M)
    # Above the threshold it warns (threshold 1% is always exceeded on a real disk).
    out = host.run('python3 /usr/local/lib/prodready/diskguard.py --textfile-dir /tmp --threshold 1 /var/log')
    assert out.rc == 0 and re.search(r'diskguard: disk of /var/log .* threshold 1%', out.stderr), out.stderr
