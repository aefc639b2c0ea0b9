# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""prodready-ctl: subcommands against a fake systemd/journal, the menu driven by piped input, and the
installed script run as a separate process (standard library only, no Ansible on the path)."""

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.prodready.vps.plugins.module_utils import console

NOW = 1_800_000_000.0
MB = 1024 * 1024
CONFIG = {'services': [
    {'name': 'api', 'unit': 'api.service', 'health_url': 'http://127.0.0.1:8000/health', 'log_dir': '/var/log/api'},
    {'name': 'worker', 'unit': 'worker.service', 'health_url': None, 'log_dir': '/var/log/worker'},
]}
BACKUP_JOB = {'job': 'daily', 'dest': '/var/backups/prodready', 'state_dir': '/var/lib/prodready/backup',
              'identity_file': None}
METRICS = '''# HELP prodready_backup_last_success_timestamp_seconds When...
# TYPE prodready_backup_last_success_timestamp_seconds gauge
prodready_backup_last_success_timestamp_seconds{job="daily"} %d
prodready_backup_last_verified_restore_timestamp_seconds{job="daily"} 0
prodready_backup_count{job="daily"} 3
prodready_backup_last_size_bytes{job="daily"} 1048576
prodready_backup_last_run_timestamp_seconds{job="daily"} %d
''' % (NOW - 7200, NOW - 7200)
DISK = ('prodready_filesystem_used_ratio{path="/var/log",mountpoint="/"} 0.91\n'
        'prodready_diskguard_last_run_timestamp_seconds %d\n' % (NOW - 120))


class FakeHost:
    """systemd, journal, files and HTTP in memory; records every command."""

    def __init__(self):
        self.units = {
            'api.service': {'LoadState': 'loaded', 'ActiveState': 'active', 'SubState': 'running', 'MainPID': '4242',
                            'MemoryCurrent': str(64 * MB), 'MemoryMax': str(512 * MB), 'CPUUsageNSec': '1200000000',
                            'NRestarts': '0', 'ActiveEnterTimestamp': '@%d' % (NOW - 3 * 3600), 'Result': 'success',
                            'ExecMainStatus': '0', 'CanReload': 'yes', 'UnitFileState': 'enabled'},
            'worker.service': {'LoadState': 'loaded', 'ActiveState': 'active', 'SubState': 'running',
                               'MainPID': '4343', 'MemoryCurrent': str(30 * MB), 'MemoryMax': 'infinity',
                               'CPUUsageNSec': '[not set]', 'NRestarts': '2', 'ActiveEnterTimestamp': '@%d' % (NOW - 60),
                               'Result': 'success', 'ExecMainStatus': '0', 'CanReload': 'no',
                               'UnitFileState': 'enabled'},
        }
        self.files = {'/etc/prodready/services.json': json.dumps(CONFIG),
                      '/var/log/api/api.log': 'GET /health 200\n', '/var/log/api/api-error.log': 'Traceback...\n'}
        self.http = {'http://127.0.0.1:8000/health': (200, '{"status":"ok"}')}
        self.backups = []
        self.calls = []
        self.interactive_calls = []
        self.fail_units = set()
        self.nft_loaded = True
        self.unreadable = set()

    def add_backup_job(self, state):
        self.files['/etc/prodready/backup/daily.json'] = json.dumps(BACKUP_JOB)
        self.files['/var/lib/prodready/backup/daily.json'] = json.dumps(state)
        self.files['/var/backups/prodready'] = ''

    def run(self, argv, timeout=None):
        self.calls.append(list(argv))
        if argv[:2] == ['systemctl', 'show']:
            props = [argv[i + 1] for i, a in enumerate(argv) if a == '-p']
            blocks = []
            for unit in argv[argv.index('--') + 1:]:
                known = dict(self.units.get(unit, {'LoadState': 'not-found', 'ActiveState': 'inactive'}), Id=unit)
                blocks.append('\n'.join('%s=%s' % (p, known.get(p, '')) for p in props))
            return 0, '\n\n'.join(blocks) + '\n', ''
        if argv[0] == 'systemctl' and argv[1] in ('start', 'stop', 'restart', 'reload'):
            unit = argv[-1]
            if unit in self.fail_units:
                return 1, '', 'Job for %s failed because the control process exited with error code.\n' % unit
            if unit in self.units:
                self.units[unit]['ActiveState'] = 'inactive' if argv[1] == 'stop' else 'active'
            return 0, '', ''
        if argv[:2] == ['systemctl', '--failed']:
            return 0, 'api.service loaded failed failed api\ncron.service loaded failed failed cron\n', ''
        if argv[0] == 'journalctl':
            return 0, 'journal line 1\njournal line 2\n', ''
        if argv[0] == 'tail':
            return 0, ''.join(self.files.get(f, '') for f in argv if f.startswith('/')), ''
        if argv[0] == 'nft':
            return (0, 'table inet prodready {}\n', '') if self.nft_loaded else (1, '', 'Error: No such file\n')
        return 127, '', 'unexpected %s' % argv

    def interactive(self, argv):
        self.interactive_calls.append(list(argv))
        return 0

    def http_get(self, url, timeout):
        answer = self.http.get(url, 'connection refused')
        if isinstance(answer, str):
            raise console.ConsoleError(answer)
        return answer

    def read(self, path):
        if path not in self.files:
            raise FileNotFoundError(2, 'No such file or directory', path)
        return self.files[path]

    def exists(self, path):
        return path in self.files or any(p.startswith(path.rstrip('/') + '/') for p in self.files)

    def readable(self, path):
        return path not in self.unreadable

    def glob(self, pattern):
        import fnmatch
        return sorted(p for p in self.files if fnmatch.fnmatchcase(p, pattern))

    def now(self):
        return NOW

    def hostname(self):
        return 'web1'

    def list_backups(self, dest, prefix):
        return [b for b in self.backups if b['name'].startswith(prefix)]


@pytest.fixture
def host():
    return FakeHost()


def ctl(host, *argv, stdin=''):
    out = io.StringIO()
    code = console.main(list(argv), host=host, out=out, stdin=io.StringIO(stdin))
    return code, out.getvalue()


def ctl_json(host, *argv):
    code, text = ctl(host, *argv)
    return code, json.loads(text)


def systemctl_verbs(host):
    return [c[1:] for c in host.calls if c[0] == 'systemctl' and c[1] != 'show']


# ---- status ------------------------------------------------------------------------------------


def test_status_json(host):
    code, data = ctl_json(host, 'status', '--json')
    assert code == 0 and data['host'] == 'web1'
    api, worker = data['services']
    assert api == {'name': 'api', 'unit': 'api.service', 'wanted': True, 'load': 'loaded', 'active': 'active',
                   'sub': 'running', 'enabled': 'enabled', 'pid': 4242, 'memory_bytes': 64 * MB,
                   'memory_max_bytes': 512 * MB, 'cpu_seconds': 1.2, 'uptime_seconds': 10800.0, 'restarts': 0,
                   'result': 'success', 'exit_status': 0, 'can_reload': True}
    assert worker['memory_max_bytes'] is None and worker['cpu_seconds'] is None and worker['restarts'] == 2


def test_status_cpu_falls_back_to_the_main_process_without_cgroup_accounting(host):
    # utime 150, stime 50, cutime 30, cstime 20 ticks; the command name has a space and a ')'.
    host.files['/proc/4343/stat'] = '4343 (wor ker)) S 1 4343 4343 0 -1 4194560 100 0 0 0 150 50 30 20 20 0 1 0'
    code, data = ctl_json(host, 'status', '--json')
    api, worker = data['services']
    assert worker['cpu_seconds'] == round(250 * 1000000000 // console.CLOCK_TICKS / 1e9, 3) > 0
    assert api['cpu_seconds'] == 1.2  # systemd's accounting wins when it has it
    assert data['backups'] == {}


def test_status_text_and_a_failed_service(host):
    host.units['worker.service'].update(ActiveState='failed', SubState='failed', Result='oom-kill')
    code, text = ctl(host, 'status')
    assert code == 1
    assert 'api              ● active   (running)  mem 64.0M/512.0M  cpu 1.2s  up 3h00m  restarts 0' in text
    assert 'worker           ✗ failed   (failed)   result oom-kill' in text
    assert 'BACKUPS: none configured' in text


def test_status_shows_backup_state(host):
    host.add_backup_job({'last_success': NOW - 3600, 'last_failure': NOW - 60, 'last_error': 'run: disk full'})
    code, text = ctl(host, 'status')
    assert '  daily            last success 1h00m ago; LAST RUN FAILED: run: disk full' in text


# ---- start / stop / restart / reload -----------------------------------------------------------


def test_start_stop_restart_all_and_one(host):
    assert ctl(host, 'stop')[0] == 0
    assert ctl(host, 'start', 'worker')[0] == 0
    code, data = ctl_json(host, 'restart', '--json')
    assert code == 0 and [r['message'] for r in data['results']] == ['restarted', 'restarted']
    assert systemctl_verbs(host) == [['stop', '--', 'api.service'], ['stop', '--', 'worker.service'],
                                     ['start', '--', 'worker.service'], ['restart', '--', 'api.service'],
                                     ['restart', '--', 'worker.service']]


def test_failed_action_is_reported_with_systemds_message(host):
    host.fail_units.add('api.service')
    code, text = ctl(host, 'start', 'api')
    assert code == 1 and 'api              FAILED: Job for api.service failed' in text


def test_unknown_service_is_a_usage_error(host, capsys):
    code, _text = ctl(host, 'stop', 'nope')
    assert code == 2 and 'unknown service(s) nope; known: api, worker' in capsys.readouterr().err
    code, data = ctl_json(host, 'stop', 'nope', '--json')
    assert code == 2 and data == {'error': 'unknown service(s) nope; known: api, worker'}


def test_graceful_reload_uses_execreload_or_restarts(host):
    code, data = ctl_json(host, 'reload', '--json')
    assert code == 0
    assert [(r['name'], r['action'], r['message']) for r in data['results']] == [
        ('api', 'reload', 'reloaded'), ('worker', 'restart', 'restarted (the unit has no ExecReload=)')]


# ---- logs, health ------------------------------------------------------------------------------


def test_logs_from_files_journal_and_follow(host):
    code, text = ctl(host, 'logs', 'api', '-n', '5')
    assert code == 0 and 'GET /health 200' in text and 'Traceback' in text
    assert host.calls[-1] == ['tail', '-n', '5', '/var/log/api/api.log', '/var/log/api/api-error.log']
    code, data = ctl_json(host, 'logs', 'worker', '--json')
    assert data['source'] == ['journal:worker.service'] and data['lines'] == ['journal line 1', 'journal line 2']
    ctl(host, 'logs', 'api', '-f')
    ctl(host, 'logs', 'api', '-f', '--journal')
    assert host.interactive_calls == [
        ['tail', '-n', '50', '-F', '/var/log/api/api.log', '/var/log/api/api-error.log'],
        ['journalctl', '--no-pager', '-n', '50', '-f', '-u', 'api.service']]


def test_health(host):
    code, data = ctl_json(host, 'health', '--json')
    assert code == 0 and [(r['name'], r['status'], r['ok']) for r in data['results']] == [('api', 200, True)]
    host.http['http://127.0.0.1:8000/health'] = (503, 'db down')
    code, text = ctl(host, 'health')
    assert code == 1 and 'api              DOWN  HTTP 503  http://127.0.0.1:8000/health' in text
    del host.http['http://127.0.0.1:8000/health']
    code, data = ctl_json(host, 'health', '--json')
    assert code == 1 and data['results'][0]['error'] == 'connection refused'


# ---- backups -----------------------------------------------------------------------------------


def test_backup_now_runs_the_timers_unit(host):
    host.add_backup_job({'last_success': NOW, 'last_backup': 'daily-2027-01-15T020000Z.tar.zst.age',
                         'last_size': 3 * MB})
    code, text = ctl(host, 'backup')
    assert code == 0 and 'backup written: daily-2027-01-15T020000Z.tar.zst.age (3.0M)' in text
    assert ['start', '--', 'prodready-backup@daily.service'] in systemctl_verbs(host)


def test_failed_backup_shows_the_runners_error(host):
    host.add_backup_job({'last_success': 0, 'last_failure': NOW, 'last_error': 'run: /srv/app: permission denied'})
    host.fail_units.add('prodready-backup@daily.service')
    code, data = ctl_json(host, 'backup', '--json')
    assert code == 1 and data['ok'] is False
    code, text = ctl(host, 'backup')
    assert 'BACKUP FAILED: run: /srv/app: permission denied' in text


def test_backups_need_root(host, capsys):
    host.add_backup_job({})
    host.unreadable.add('/etc/prodready/backup')
    assert ctl(host, 'backups')[0] == 2
    assert 'cannot read /etc/prodready/backup: run prodready-ctl as root' in capsys.readouterr().err
    code, text = ctl(host, 'status')  # the status still works, and says why backups are missing
    assert code == 0 and 'BACKUPS: cannot read /etc/prodready/backup: run prodready-ctl as root' in text


def test_backup_of_an_unknown_job_or_without_backups(host, capsys):
    assert ctl(host, 'backup')[0] == 2
    assert 'no backup job is configured here' in capsys.readouterr().err
    host.add_backup_job({})
    assert ctl(host, 'backup', '--job', 'hourly')[0] == 2
    assert "no backup job 'hourly'; jobs here: daily" in capsys.readouterr().err


def test_list_and_verify_backups(host):
    host.add_backup_job({'last_success': NOW})
    host.backups = [{'name': 'daily-2027-01-15T020000Z.tar.zst.age', 'archive': '/var/backups/prodready/daily-x',
                     'time': '2027-01-15T02:00:00Z', 'size': 2 * MB, 'verified': True, 'verified_at': 'x'},
                    {'name': 'other-2027-01-15T020000Z.tar.zst.age', 'archive': '/y', 'time': 't', 'size': 1}]
    code, data = ctl_json(host, 'backups', '--json')
    assert code == 0 and [b['name'] for b in data['backups']] == ['daily-2027-01-15T020000Z.tar.zst.age']
    code, text = ctl(host, 'backups')
    assert 'daily    daily-2027-01-15T020000Z.tar.zst.age' in text and 'verified' in text
    code, text = ctl(host, 'verify')
    assert code == 0 and 'shallow verification passed (checksums only: no key on this host)' in text
    assert ['start', '--', 'prodready-backup-verify@daily.service'] in systemctl_verbs(host)


# ---- metrics, troubleshooting ------------------------------------------------------------------


def test_metrics_summary(host):
    host.files['/var/lib/prometheus/node-exporter/prodready_backup_daily.prom'] = METRICS
    host.files['/var/lib/prometheus/node-exporter/prodready_diskguard.prom'] = DISK
    host.files['/var/lib/prometheus/node-exporter/other.prom'] = 'foreign_metric 1\n'
    code, data = ctl_json(host, 'metrics', '--json')
    assert code == 0 and len(data['samples']) == 7
    assert data['summary']['backups']['daily'] == {
        'last_success_age_seconds': 7200.0, 'last_verified_restore_age_seconds': None, 'count': 3.0,
        'last_size_bytes': 1048576.0, 'last_run_age_seconds': 7200.0}
    assert data['summary']['filesystems'] == [{'path': '/var/log', 'mountpoint': '/', 'used_percent': 91.0}]
    # (the backup runner's last run is in its job's summary)
    assert data['summary']['writers'] == {'diskguard': 120.0}
    code, text = ctl(host, 'metrics')
    assert 'disk /var/log              91.0% used (/)' in text
    assert 'backup daily          last success 2h00m ago, 3 backups, last size 1.0M, restore test never' in text


def test_troubleshoot_explains_failures(host):
    host.units['api.service'].update(ActiveState='failed', SubState='failed', Result='exit-code', ExecMainStatus='203')
    host.units['worker.service'].update(MemoryMax=str(32 * MB), MemoryCurrent=str(31 * MB))
    host.files['/var/lib/prometheus/node-exporter/prodready_diskguard.prom'] = DISK
    host.add_backup_job({'last_success': NOW - 3600, 'last_failure': NOW - 60, 'last_error': 'run: disk full'})
    host.nft_loaded = False
    code, data = ctl_json(host, 'troubleshoot', '--json')
    assert code == 1
    text = '\n'.join('%s %s %s' % (h['level'], h['subject'], h['hint']) for h in data['hints'])
    assert ('error api api.service is failed (exit-code); it exited with status 203: the program of ExecStart= is '
            'missing or not executable') in text
    assert 'Traceback...' in data['hints'][0]['evidence']
    assert 'warning worker systemd restarted worker.service 2 time(s) since it was last started' in text
    assert 'warning worker memory 31.0M is above 90% of MemoryMax 32.0M' in text
    assert 'warning host failed units: cron.service' in text
    assert 'warning disk / is 91.0% full' in text
    assert 'error backup the last daily backup failed: run: disk full' in text
    assert 'error firewall the nftables table prodready is not loaded' in text


def test_troubleshoot_oom_watchdog_and_unhealthy(host):
    host.units['api.service'].update(ActiveState='failed', Result='oom-kill')
    host.units['worker.service'].update(ActiveState='activating', Result='watchdog')
    code, data = ctl_json(host, 'troubleshoot', 'api', 'worker', '--json')
    hints = [h['hint'] for h in data['hints']]
    assert 'more memory than MemoryMax (512.0M)' in hints[0] and 'it hung' in hints[1]
    host.units['api.service'].update(ActiveState='active', Result='success')
    host.http['http://127.0.0.1:8000/health'] = (500, 'boom')
    code, data = ctl_json(host, 'troubleshoot', 'api', '--json')
    assert code == 1 and 'running but its health URL fails (HTTP 500)' in data['hints'][0]['hint']


def test_troubleshoot_healthy_host(host):
    host.units['worker.service']['NRestarts'] = '0'
    code, text = ctl(host, 'troubleshoot', 'api', 'worker')
    assert code == 0 and 'nothing wrong found' in text


# ---- the menu ----------------------------------------------------------------------------------


def test_menu_driven_by_piped_input(host):
    host.add_backup_job({'last_success': NOW - 600})
    # status, stop (refused), stop (confirmed), live logs of worker, reload, bad choice, backups + verify, exit
    code, text = ctl(host, stdin='1\n3\nn\n3\ny\n6\n2\n5\n42\n9\ny\n0\n')
    assert code == 0
    assert text.count('MAIN MENU') == 8
    assert '[11] Troubleshooting' in text and 'Select option [0-11]: ' in text
    assert 'api              OK    200' in text
    assert 'Stop api, worker? [y/N]: n\n' in text and 'nothing stopped' in text
    # worker (service 2) has no log files: its journal
    assert host.interactive_calls == [['journalctl', '--no-pager', '-n', '20', '-f', '-u', 'worker.service']]
    assert "invalid option: '42' (choose 0-11)" in text
    assert systemctl_verbs(host) == [
        ['stop', '--', 'api.service'], ['stop', '--', 'worker.service'],
        ['reload', '--', 'api.service'], ['restart', '--', 'worker.service'],
        ['start', '--', 'prodready-backup-verify@daily.service']]


def test_menu_ends_at_end_of_input_and_survives_errors(host):
    code, text = ctl(host, stdin='8\n')  # backup now without a backup job, then EOF
    assert code == 0 and 'ERROR: no backup job is configured here' in text
    code, _text = ctl(host, stdin='3\n')  # EOF at the confirmation
    assert code == 0 and systemctl_verbs(host) == []


def test_missing_or_bad_config(host, capsys):
    del host.files['/etc/prodready/services.json']
    assert ctl(host, 'status')[0] == 2
    assert 'does not exist: run the console role' in capsys.readouterr().err
    host.files['/etc/prodready/services.json'] = '{"services": [{"name": "Bad Name"}]}'
    assert ctl(host, 'status')[0] == 2
    assert 'services[0] needs a name' in capsys.readouterr().err


def test_parse_textfile():
    samples = console.parse_textfile('# HELP x y\nm{a="1",b="q\\"x"} 2.5\nbad line here\nn 3 1700000000000\nnan_v abc\n')
    assert samples == [{'name': 'm', 'labels': {'a': '1', 'b': 'q"x'}, 'value': 2.5},
                       {'name': 'n', 'labels': {}, 'value': 3.0}]
    assert console.human_bytes(str(64 * MB)) == '64.0M' and console.human_bytes('[not set]') == '-'
    assert console.human_seconds(3 * 86400 + 7200) == '3d02h'


# ---- the installed program, as a process ---------------------------------------------------------

FAKE_SYSTEMCTL = '''#!/bin/sh
echo "systemctl $*" >> "$FAKE_LOG"
case "$1" in
  show)
    for unit in "$@"; do :; done
    printf 'Id=%s\\nLoadState=loaded\\nActiveState=active\\nSubState=running\\nMemoryCurrent=1048576\\n' "$unit"
    printf 'MemoryMax=infinity\\nCPUUsageNSec=5000000\\nNRestarts=0\\nActiveEnterTimestamp=@1\\nCanReload=no\\n' ;;
esac
exit 0
'''


def test_installed_script_runs_alone_with_piped_menu(tmp_path):
    lib = tmp_path / 'lib'
    lib.mkdir()
    source = Path(console.__file__)
    shutil.copy(str(source), str(lib / 'console.py'))
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'systemctl').write_text(FAKE_SYSTEMCTL)
    (bin_dir / 'systemctl').chmod(0o755)
    config = tmp_path / 'services.json'
    config.write_text(json.dumps({'services': [{'name': 'api'}], 'backup_config_dir': str(tmp_path / 'none'),
                                  'textfile_dir': str(tmp_path / 'none')}))
    env = dict(os.environ, PATH='%s:%s' % (bin_dir, os.environ['PATH']), FAKE_LOG=str(tmp_path / 'log'))
    argv = [sys.executable, '-I', str(lib / 'console.py'), '--config', str(config)]
    done = subprocess.run(argv + ['status', '--json'], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)['services'][0]['memory_bytes'] == 1048576
    done = subprocess.run(argv, input='4\ny\n0\n', env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert 'Restart api (a short interruption)? [y/N]: y\n' in done.stdout and 'restarted' in done.stdout
    assert 'systemctl restart -- api.service' in (tmp_path / 'log').read_text()


def test_check_validates_a_services_file(host, tmp_path):
    code, text = ctl(host, 'check')
    assert code == 0 and text == '/etc/prodready/services.json: 2 service(s)\n'
    host.files['/tmp/bad.json'] = '[]'
    assert ctl(host, '--config', '/tmp/bad.json', 'check')[0] == 2
