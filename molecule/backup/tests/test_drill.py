"""Effects of playbooks/drill.yml, run by side_effect on the fresh host prodready-backup-drill.

The drill restored the newest offsite backup of prodready-backup-debian12 (the
"lost" source) from prodready-backup-offsite, brought the sample service up on
it, broke it three ways and wrote its report on the controller.
"""

import json
import os
import shlex
import time
from pathlib import Path

import testinfra

testinfra_hosts = ['docker://prodready-backup-drill']

SOURCE = 'prodready-backup-debian12'
OFFSITE_DIR = '/srv/backups/%s' % SOURCE
REPORT = Path(os.environ.get('MOLECULE_EPHEMERAL_DIRECTORY', '/nonexistent')) / 'drill-reports' / 'latest.json'
ROWS = "SELECT count(*) || ':' || md5(string_agg(id || '=' || payload, ',' ORDER BY id)) FROM items"
HEALTH = 'http://127.0.0.1:8101/health'
HTTP_GET = ('import json, sys, urllib.request, urllib.error\n'
            'opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))\n'
            'try:\n'
            '    r = opener.open(sys.argv[1], timeout=5)\n'
            '    print(json.dumps({"status": r.status, "body": r.read().decode()}))\n'
            'except urllib.error.HTTPError as err:\n'
            '    print(json.dumps({"status": err.code, "body": err.read().decode()}))\n')


def run(host, command):
    result = host.run(command)
    assert result.rc == 0, 'command failed: %s\nstdout: %s\nstderr: %s' % (command, result.stdout, result.stderr)
    return result.stdout


def sql(host, database, query):
    return run(host, 'runuser -u postgres -- psql -XtA -d %s -c %s' % (database, shlex.quote(query))).strip()


def source():
    return testinfra.get_host('docker://' + SOURCE)


def offsite():
    return testinfra.get_host('docker://prodready-backup-offsite')


def report():
    assert REPORT.exists(), 'no drill report at %s' % REPORT
    return json.loads(REPORT.read_text())


def get(host, url):
    return json.loads(run(host, 'python3 -c %s %s' % (shlex.quote(HTTP_GET), shlex.quote(url))))


def test_restored_files_are_byte_identical_to_the_source(host):
    listing = 'cd /srv/app && find . -type f -print0 | sort -z | xargs -0 sha256sum'
    mine = run(host, listing)
    assert './app.env' in mine and './uploads/one.txt' in mine
    assert mine == run(source(), listing)
    assert host.file('/srv/app/app.env').mode == 0o600


def test_restored_database_has_the_source_rows(host):
    restored = sql(host, 'appdb', ROWS)
    assert restored.startswith('500:')
    assert restored == sql(source(), 'appdb', ROWS)
    # No unencrypted dump was left behind.
    assert not host.file('/var/lib/prodready-drill/restore').exists


def test_service_answers_healthy_on_the_restored_host(host):
    assert get(host, HEALTH)['status'] == 200
    ready = get(host, 'http://127.0.0.1:8101/ready')
    assert ready['status'] == 200, ready
    assert json.loads(get(host, 'http://127.0.0.1:8101/db')['body'])['status'] == 'pass'
    props = run(host, 'systemctl show -p WatchdogUSec -p Restart -p User sample-py.service')
    assert 'WatchdogUSec=10s' in props and 'Restart=always' in props and 'User=sample-py' in props


def test_report_has_rto_rpo_of_the_newest_offsite_backup(host):
    data = report()
    assert data['source'] == SOURCE and data['host'] == 'prodready-backup-drill'
    assert 0 < data['rto_seconds'] < 1800
    assert data['rto_seconds'] == round(data['healthy_at'] - data['started'], 1)
    assert data['rpo_seconds'] > 0
    name = data['restore']['archive']
    manifest = json.loads(offsite().file('%s/%s.manifest.json' % (OFFSITE_DIR, name)).content_string)
    assert manifest['created'] == data['backup_created']
    # It was the newest daily backup offsite when the drill started (later tests add newer ones).
    started_iso = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(data['started']))
    newer = []
    for other in offsite().run('ls -1 %s' % OFFSITE_DIR).stdout.split():
        if other.startswith('daily-') and other.endswith('.manifest.json'):
            created = json.loads(offsite().file('%s/%s' % (OFFSITE_DIR, other)).content_string)['created']
            if created > data['backup_created']:
                newer.append((created, other))
    assert all(item[0] >= started_iso for item in newer), (started_iso, newer)
    # The rows were compared with the source's database.
    assert data['restore']['databases'] == [{'name': 'appdb', 'restored_rows': sql(host, 'appdb', '%s' % ROWS),
                                             'expected_rows': sql(source(), 'appdb', ROWS),
                                             'expected_from': 'source (its live database at drill time)',
                                             'equal': True}]
    assert data['failed'] == []


def test_chaos_results_are_recovered_or_alerted(host):
    checks = {c['name']: c for c in report()['checks']}
    assert checks['restore']['verdict'] == 'recovered'
    assert checks['chaos_kill']['verdict'] == 'recovered', checks['chaos_kill']
    assert checks['chaos_hang']['verdict'] == 'recovered', checks['chaos_hang']
    assert checks['chaos_disk_fill']['verdict'] == 'alerted', checks['chaos_disk_fill']
    chaos = {c['fault']: c for c in report()['chaos']}
    for fault in ('kill', 'hang'):
        assert chaos[fault]['new_pid'] != chaos[fault]['old_pid'] and chaos[fault]['seconds'] <= chaos[fault]['bound']
    assert chaos['hang']['watchdog_in_journal'] is True
    assert chaos['disk_fill']['used_ratio'] >= 0.85 and chaos['disk_fill']['cleared']
    assert 'disk of /mnt/prodready-drill-scratch' in chaos['disk_fill']['warning']


def test_drill_cleaned_up_after_itself(host):
    assert host.run('findmnt /mnt/prodready-drill-scratch').rc != 0
    assert not host.file('/mnt/prodready-drill-scratch').exists
    assert host.service('sample-py').is_running
    # The main PID is the one the hang check ended with: nothing is still stopped.
    pid = run(host, 'systemctl show -p MainPID --value sample-py').strip()
    assert run(host, 'ps -o stat= -p %s' % pid).strip()[0] != 'T'
