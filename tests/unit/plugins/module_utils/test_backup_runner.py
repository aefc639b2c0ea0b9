# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tests for plugins/module_utils/backup_runner.py (real temp dirs, real keys, real rsync when installed)."""

import datetime
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from ansible_collections.prodready.vps.plugins.module_utils import age
from ansible_collections.prodready.vps.plugins.module_utils import backup_archive as ba
from ansible_collections.prodready.vps.plugins.module_utils import backup_runner as br
from ansible_collections.prodready.vps.plugins.module_utils import retention

T0 = datetime.datetime(2026, 11, 22, 2, 0, 0, tzinfo=datetime.timezone.utc).timestamp()
DAY = 86400
HAS_RSYNC = shutil.which('rsync') is not None
FAKE_SSH = '''#!/bin/sh
# Stands in for ssh: drop the options and the host, run the remote command locally.
while [ $# -gt 0 ]; do
  case "$1" in
    -[Fpoil]) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
shift
exec sh -c "$*"
'''


class Clock:
    """A fake clock: every call returns the current time, advanced by ``step`` seconds."""

    def __init__(self, start=T0, step=0.0):
        self.now = start
        self.step = step

    def __call__(self):
        value = self.now
        self.now += self.step
        return value


@pytest.fixture(scope='module')
def keys():
    return age.generate_identity()


@pytest.fixture
def env(tmp_path, keys):
    secret, public = keys
    src = tmp_path / 'src'
    (src / 'app').mkdir(parents=True)
    (src / 'app' / 'app.env').write_bytes(b'SECRET=1\n')
    (src / 'app' / 'data.bin').write_bytes(os.urandom(50000))
    identity = tmp_path / 'identity.txt'
    identity.write_text(secret + '\n')
    os.chmod(identity, 0o600)
    config = {
        'job': 'daily',
        'dest': str(tmp_path / 'dest'),
        'sources': [str(src)],
        'commands': [{'name': 'postgresql/app.dump', 'argv': [sys.executable, '-c', 'print("dump")']}],
        'recipients': [public],
        'retention': {'keep_daily': 3},
        'lock_timeout': 0,
        'state_dir': str(tmp_path / 'state'),
        'textfile_dir': str(tmp_path / 'textfile'),
    }
    os.makedirs(config['dest'], 0o700)

    class Env:
        pass

    e = Env()
    e.tmp, e.src, e.config, e.secret, e.public, e.identity = tmp_path, src, config, secret, public, identity
    e.dest = Path(config['dest'])
    e.path = tmp_path / 'daily.json'
    e.write = lambda cfg=None: e.path.write_text(json.dumps(cfg or e.config))
    e.write()
    return e


def run(env, action='run', clock=None, extra=(), **kwargs):
    stream = io.StringIO()
    status = br.main(['--config', str(env.path)] + list(extra) + [action], clock=clock or Clock(), stream=stream, **kwargs)
    return status, stream.getvalue()


def metrics(env, job='daily'):
    text = (env.tmp / 'textfile' / f'prodready_backup_{job}.prom').read_text()
    values = {}
    for line in text.splitlines():
        if line.startswith('#'):
            continue
        match = re.match(r'^(\w+)\{job="([^"]+)"\} (\S+)$', line)
        assert match, line
        assert match.group(2) == job
        values[match.group(1)] = float(match.group(3))
    return values


def state(env, job='daily'):
    return json.loads((env.tmp / 'state' / f'{job}.json').read_text())


def visible(dest):
    return sorted(n for n in os.listdir(dest) if not n.startswith('.'))


# ---------------------------------------------------------------------------
# run


def test_run_writes_backup_metrics_and_state(env):
    status, log = run(env, clock=Clock(T0))
    assert status == 0, log
    names = visible(env.dest)
    assert names == ['daily-2026-11-22T020000Z.tar.zst.age', 'daily-2026-11-22T020000Z.tar.zst.age.manifest.json'] \
        or names == ['daily-2026-11-22T020000Z.tar.gz.age', 'daily-2026-11-22T020000Z.tar.gz.age.manifest.json']
    archive = str(env.dest / names[0])
    assert ba.verify(archive, identity=str(env.identity))['mode'] == 'deep'
    values = metrics(env)
    assert values['prodready_backup_last_success_timestamp_seconds'] >= T0
    assert values['prodready_backup_last_failure_timestamp_seconds'] == 0
    assert values['prodready_backup_last_verified_restore_timestamp_seconds'] == 0
    assert values['prodready_backup_last_size_bytes'] == os.path.getsize(archive)
    assert values['prodready_backup_count'] == 1
    assert values['prodready_backup_last_duration_seconds'] == 0
    assert values['prodready_backup_last_run_timestamp_seconds'] == T0
    assert oct(os.stat(env.tmp / 'textfile' / 'prodready_backup_daily.prom').st_mode & 0o777) == '0o644'
    assert oct(os.stat(env.tmp / 'state' / 'daily.json').st_mode & 0o777) == '0o600'
    assert state(env)['last_backup'] == names[0]
    assert '<6>backup daily: wrote ' + names[0] in log
    manifest = json.loads((env.dest / names[1]).read_text())
    assert 'postgresql/app.dump' in [e['name'] for e in manifest['entries']]


def test_duration_and_timestamps_come_from_the_clock(env):
    status, log = run(env, clock=Clock(T0, step=5))
    assert status == 0, log
    values = metrics(env)
    assert values['prodready_backup_last_run_timestamp_seconds'] == T0
    assert values['prodready_backup_last_duration_seconds'] == 10   # start +5, name +10, end +15
    assert values['prodready_backup_last_success_timestamp_seconds'] == T0 + 15
    assert backups_in(env.dest) == ['daily-2026-11-22T020010Z.tar.zst.age'] or \
        backups_in(env.dest) == ['daily-2026-11-22T020010Z.tar.gz.age']


def test_every_timestamp_metric_is_written_before_the_first_success(env):
    text = br.render_metrics('daily', {'last_run': 5})
    assert 'prodready_backup_last_success_timestamp_seconds{job="daily"} 0' in text
    assert 'prodready_backup_last_failure_timestamp_seconds{job="daily"} 0' in text
    assert 'prodready_backup_last_verified_restore_timestamp_seconds{job="daily"} 0' in text
    assert 'prodready_backup_last_size_bytes' not in text
    assert 'prodready_backup_count' not in text
    assert '# TYPE prodready_backup_last_run_timestamp_seconds gauge' in text


def test_retention_over_days_with_a_fake_clock(env):
    clock = Clock(T0)
    for day in range(6):
        clock.now = T0 + day * DAY
        status, log = run(env, clock=clock)
        assert status == 0, log
    archives = [n for n in visible(env.dest) if n.endswith('.age')]
    assert [n[:len('daily-2026-11-22')] for n in archives] == ['daily-2026-11-25', 'daily-2026-11-26', 'daily-2026-11-27']
    assert metrics(env)['prodready_backup_count'] == 3
    assert 'pruned daily-2026-11-24' in log


def test_retention_only_touches_the_jobs_prefix(env):
    env.config['retention'] = {'keep_last': 3}
    env.write()
    other = dict(env.config, job='hourly', sources=[], retention={'keep_last': 1})
    other_path = env.tmp / 'hourly.json'
    other_path.write_text(json.dumps(other))
    clock = Clock(T0, step=1)
    for dummy in range(3):
        assert br.main(['--config', str(other_path), 'run'], clock=clock, stream=io.StringIO()) == 0
        assert run(env, clock=clock)[0] == 0
    names = [n for n in visible(env.dest) if n.endswith('.age')]
    assert len([n for n in names if n.startswith('hourly-')]) == 1
    assert len([n for n in names if n.startswith('daily-')]) == 3
    assert metrics(env, 'hourly')['prodready_backup_count'] == 1


def test_missing_source_fails_cleanly_and_keeps_older_backups(env):
    assert run(env, clock=Clock(T0))[0] == 0
    before = visible(env.dest)
    success = metrics(env)['prodready_backup_last_success_timestamp_seconds']
    env.config['sources'].append(str(env.tmp / 'gone'))
    env.write()
    status, log = run(env, clock=Clock(T0 + DAY))
    assert status == 1
    assert visible(env.dest) == before
    assert not [n for n in os.listdir(env.dest) if n.endswith('.tmp')]
    values = metrics(env)
    assert values['prodready_backup_last_failure_timestamp_seconds'] == T0 + DAY
    assert values['prodready_backup_last_success_timestamp_seconds'] == success
    assert values['prodready_backup_count'] == 1
    assert 'does not exist' in log and 'no backup was written' in log
    assert 'gone' in state(env)['last_error']


def test_failing_command_fails_with_its_stderr(env):
    env.config['commands'] = [{'name': 'postgresql/app.dump',
                               'argv': [sys.executable, '-c', 'import sys; sys.stderr.write("database gone"); sys.exit(3)']}]
    env.write()
    status, log = run(env)
    assert status == 1
    assert 'database gone' in log and 'status 3' in log
    assert visible(env.dest) == []
    assert metrics(env)['prodready_backup_last_failure_timestamp_seconds'] > 0


def test_failure_then_success_clears_the_error(env):
    env.config['sources'] = [str(env.tmp / 'gone')]
    env.write()
    assert run(env, clock=Clock(T0))[0] == 1
    env.config['sources'] = [str(env.src)]
    env.write()
    assert run(env, clock=Clock(T0 + 60))[0] == 0
    values = metrics(env)
    assert values['prodready_backup_last_failure_timestamp_seconds'] == T0
    assert values['prodready_backup_last_success_timestamp_seconds'] > values['prodready_backup_last_failure_timestamp_seconds']
    assert 'last_error' not in state(env)


def test_second_run_fails_at_once_when_the_lock_is_held(env):
    with ba.BackupLock(str(env.dest)):
        status, log = run(env)
    assert status == br.EXIT_LOCKED
    assert 'another backup run holds the lock' in log
    assert visible(env.dest) == []
    assert metrics(env)['prodready_backup_last_failure_timestamp_seconds'] > 0


def test_second_run_waits_for_the_lock(env):
    lock = ba.BackupLock(str(env.dest)).acquire()
    timer = threading.Timer(0.5, lock.release)
    timer.start()
    try:
        started = time.monotonic()
        status, log = run(env, extra=['--lock-timeout', '30'])
    finally:
        timer.cancel()
        lock.release()
    assert status == 0, log
    assert time.monotonic() - started >= 0.4
    assert len([n for n in visible(env.dest) if n.endswith('.age')]) == 1


def test_unwritable_metrics_directory_fails_the_run(env):
    (env.tmp / 'textfile').write_text('not a directory')
    status, log = run(env)
    assert status == 1
    assert 'cannot write the metrics' in log
    assert len([n for n in visible(env.dest) if n.endswith('.age')]) == 1


def test_metrics_can_be_switched_off(env):
    env.config['textfile_dir'] = None
    env.write()
    assert run(env)[0] == 0
    assert not (env.tmp / 'textfile').exists()
    assert state(env)['count'] == 1


def test_corrupt_state_is_replaced(env):
    (env.tmp / 'state').mkdir()
    (env.tmp / 'state' / 'daily.json').write_text('{not json')
    status, log = run(env)
    assert status == 0
    assert 'unreadable' in log
    assert state(env)['count'] == 1


# ---------------------------------------------------------------------------
# verify and prune


def test_verify_without_identity_is_shallow(env):
    assert run(env)[0] == 0
    status, log = run(env, 'verify')
    assert status == 0, log
    assert 'shallow verification' in log
    assert metrics(env)['prodready_backup_last_verified_restore_timestamp_seconds'] == 0
    assert not [n for n in os.listdir(env.dest) if n.endswith('.verified')]


def test_verify_with_identity_is_deep_and_marks(env):
    assert run(env)[0] == 0
    env.config['identity_file'] = str(env.identity)
    env.write()
    status, log = run(env, 'verify', clock=Clock(T0 + 7 * DAY))
    assert status == 0, log
    assert 'deep verification' in log
    assert metrics(env)['prodready_backup_last_verified_restore_timestamp_seconds'] == T0 + 7 * DAY
    assert ba.list_backups(str(env.dest))[0]['verified']


def test_verify_identity_on_the_command_line(env):
    assert run(env)[0] == 0
    status, log = run(env, 'verify', extra=['--identity', str(env.identity)])
    assert status == 0, log
    assert metrics(env)['prodready_backup_last_verified_restore_timestamp_seconds'] > 0


def test_verify_failure_is_recorded_apart_from_backup_failures(env):
    assert run(env)[0] == 0
    archive = [n for n in visible(env.dest) if n.endswith('.age')][0]
    with open(env.dest / archive, 'r+b') as handle:
        handle.seek(300)
        handle.write(b'\xff\xff\xff')
    status, log = run(env, 'verify', extra=['--identity', str(env.identity)])
    assert status == 1
    assert 'checksum mismatch' in log
    values = metrics(env)
    assert values['prodready_backup_last_verify_failure_timestamp_seconds'] > 0
    assert values['prodready_backup_last_failure_timestamp_seconds'] == 0
    assert values['prodready_backup_last_verified_restore_timestamp_seconds'] == 0


def test_verify_with_a_wrong_key_fails(env):
    assert run(env)[0] == 0
    other = env.tmp / 'other.txt'
    other.write_text(age.generate_identity()[0] + '\n')
    status, log = run(env, 'verify', extra=['--identity', str(other)])
    assert status == 1
    assert 'none of the given identities' in log


def test_verify_with_no_backup_fails(env):
    status, log = run(env, 'verify')
    assert status == 1
    assert 'there is no backup' in log


def test_prune_applies_retention(env):
    clock = Clock(T0)
    for day in range(4):
        clock.now = T0 + day * DAY
        assert run(env, clock=clock)[0] == 0
    env.config['retention'] = {'keep_last': 1}
    env.write()
    status, log = run(env, 'prune')
    assert status == 0, log
    assert len([n for n in visible(env.dest) if n.endswith('.age')]) == 1
    assert metrics(env)['prodready_backup_count'] == 1


# ---------------------------------------------------------------------------
# configuration


@pytest.mark.parametrize('change, message', [
    ({'job': 'Bad Job'}, 'job'),
    ({'dest': 'relative'}, 'dest must be an absolute path'),
    ({'recipients': []}, 'at least one age recipient'),
    ({'sources': [], 'commands': []}, 'nothing to back up'),
    ({'retention': {'keep_dialy': 3}}, 'retention'),
    ({'compression': 'xz'}, 'compression'),
    ({'surprise': 1}, 'unknown keys surprise'),
    ({'offsite': {'host': '-oProxyCommand=x', 'path': '/srv'}}, 'offsite.host'),
    ({'offsite': {'host': 'backup', 'path': '/srv/my backups'}}, 'offsite.path'),
    ({'offsite': {'host': 'backup', 'path': '/srv', 'port': 0}}, 'offsite.port'),
    ({'offsite': {'host': 'backup', 'path': '/srv', 'sshkey': '/k'}}, 'offsite: unknown keys sshkey'),
    ({'commands': [{'name': '../x', 'argv': ['true']}]}, 'relative path'),
])
def test_invalid_configurations_are_refused(env, change, message):
    env.config.update(change)
    env.write()
    for action in ('check', 'run'):
        status, log = run(env, action)
        assert status == br.EXIT_CONFIG
        assert message in log
    assert not (env.tmp / 'textfile').exists()


def test_a_secret_key_given_as_recipient_is_refused_without_echoing_it(env):
    env.config['recipients'] = [env.secret]
    env.write()
    status, log = run(env, 'check')
    assert status == br.EXIT_CONFIG
    assert 'secret key' in log and env.secret not in log


def test_check_accepts_a_valid_configuration(env):
    status, log = run(env, 'check')
    assert status == 0
    assert 'job daily is valid' in log
    assert visible(env.dest) == [] and not (env.tmp / 'state').exists()


def test_defaults_are_filled_in(env):
    config = br.normalize_config({'job': 'db', 'dest': '/var/backups/x/', 'commands': [{'name': 'a', 'argv': ['true']}],
                                  'recipients': [env.public],
                                  'offsite': {'host': 'backup.example.com', 'path': '/srv/b/'}})
    assert config['prefix'] == 'db-'
    assert config['dest'] == '/var/backups/x'
    assert config['lock_timeout'] == 3600
    assert config['textfile_dir'] == '/var/lib/prometheus/node-exporter'
    assert config['offsite']['known_hosts'] == '/var/lib/prodready/backup/known_hosts'
    assert config['offsite']['accept_new'] is True
    assert config['offsite']['path'] == '/srv/b'
    command = br.ssh_command(config['offsite'])
    assert 'StrictHostKeyChecking=accept-new' in command and '-F none' in command
    assert br.remote_spec(config['offsite']) == 'root@backup.example.com:/srv/b/'


def test_known_hosts_file_means_strict_checking(env):
    config = br.normalize_config({'job': 'db', 'dest': '/b', 'sources': ['/etc'], 'recipients': [env.public],
                                  'offsite': {'host': 'h', 'path': '/p', 'user': 'backup', 'port': 2222,
                                              'known_hosts': '/etc/prodready/backup/known_hosts',
                                              'ssh_key': '/etc/prodready/backup/offsite_ed25519'}})
    command = br.ssh_command(config['offsite'])
    assert 'StrictHostKeyChecking=yes' in command
    assert '-i /etc/prodready/backup/offsite_ed25519' in command and '-p 2222' in command
    assert br.remote_spec(config['offsite']) == 'backup@h:/p/'
    assert br.remote_spec(dict(config['offsite'], path='/')) == 'backup@h:/'


# ---------------------------------------------------------------------------
# offsite


def test_plan_remote_keeps_local_names_and_other_prefixes():
    names = []
    for day in range(1, 7):
        name = f'daily-2026-11-{day:02d}T020000Z.tar.zst.age'
        names += [name, name + '.manifest.json']
    names += ['hourly-2026-11-01T020000Z.tar.zst.age', 'notes.txt']
    policy = retention.parse_policy({'keep_last': 2})
    victims = br.plan_remote(names, 'daily-', policy, local_names=['daily-2026-11-01T020000Z.tar.zst.age'])
    assert victims == [
        'daily-2026-11-04T020000Z.tar.zst.age', 'daily-2026-11-04T020000Z.tar.zst.age.manifest.json',
        'daily-2026-11-03T020000Z.tar.zst.age', 'daily-2026-11-03T020000Z.tar.zst.age.manifest.json',
        'daily-2026-11-02T020000Z.tar.zst.age', 'daily-2026-11-02T020000Z.tar.zst.age.manifest.json',
    ]
    assert br.plan_remote(names, 'daily-', retention.parse_policy({}), []) == []


def test_offsite_delete_refuses_odd_names():
    offsite = br.Offsite(br._check_offsite({'host': 'h', 'path': '/p'}, '/state'),
                         runner=lambda *a, **k: pytest.fail('rsync must not run'))
    for name in ('../x', 'a b', '*', 'x/y', ''):
        with pytest.raises(br.OffsiteError):
            offsite.delete([name])


@pytest.fixture
def offsite_env(env):
    if not HAS_RSYNC:
        pytest.skip('rsync is not installed')
    fake = env.tmp / 'fakessh'
    fake.write_text(FAKE_SSH)
    fake.chmod(0o755)
    remote = env.tmp / 'remote'
    remote.mkdir()
    env.remote = remote
    env.config['offsite'] = {'host': 'offsite.example', 'user': 'backup', 'path': str(remote),
                             'ssh_program': str(fake), 'timeout': 30}
    env.write()
    return env


def backups_in(path, prefix='daily-'):
    return [n for n in visible(path) if n.startswith(prefix) and n.endswith('.age')]


def test_offsite_copy_holds_the_same_bytes_and_retention(offsite_env):
    env = offsite_env
    clock = Clock(T0)
    for day in range(5):
        clock.now = T0 + day * DAY
        status, log = run(env, clock=clock)
        assert status == 0, log
    assert visible(env.remote) == visible(env.dest)
    for name in visible(env.dest):
        assert (env.remote / name).read_bytes() == (env.dest / name).read_bytes()
        assert oct(os.stat(env.remote / name).st_mode & 0o777) == '0o600'
    assert len(backups_in(env.remote)) == 3
    assert 'copied to offsite.example (pruned 2 there)' in log


def test_offsite_never_empties_when_the_local_directory_was_wiped(offsite_env):
    env = offsite_env
    clock = Clock(T0)
    for day in range(3):
        clock.now = T0 + day * DAY
        assert run(env, clock=clock)[0] == 0
    unrelated = env.remote / 'README'
    unrelated.write_text('kept')
    other_prefix = env.remote / 'hourly-2026-01-01T000000Z.tar.zst.age'
    other_prefix.write_text('kept')
    for name in os.listdir(env.dest):
        os.unlink(env.dest / name)
    clock.now = T0 + 3 * DAY
    assert run(env, clock=clock)[0] == 0
    assert len(backups_in(env.dest)) == 1
    remote = backups_in(env.remote)
    assert len(remote) == 3 and backups_in(env.dest)[0] in remote
    assert unrelated.exists() and other_prefix.exists()


def test_offsite_failure_fails_the_run_but_keeps_the_local_backup(offsite_env):
    env = offsite_env
    env.config['offsite']['path'] = str(env.tmp / 'no' / 'such' / 'dir')
    env.write()
    status, log = run(env)
    assert status == 1
    assert 'copying to offsite.example failed' in log
    assert 'was written, the failure came after it' in log
    assert len(backups_in(env.dest)) == 1
    values = metrics(env)
    assert values['prodready_backup_last_failure_timestamp_seconds'] > 0
    assert values['prodready_backup_last_success_timestamp_seconds'] == 0
    assert values['prodready_backup_count'] == 1
    assert values['prodready_backup_last_size_bytes'] > 0


def test_offsite_unreachable_host(offsite_env):
    env = offsite_env
    env.config['offsite']['ssh_program'] = '/bin/false'
    env.write()
    status, log = run(env)
    assert status == 1
    assert 'copying to offsite.example failed (rsync exit status' in log


def test_prune_action_prunes_offsite_too(offsite_env):
    env = offsite_env
    clock = Clock(T0)
    for day in range(3):
        clock.now = T0 + day * DAY
        assert run(env, clock=clock)[0] == 0
    env.config['retention'] = {'keep_last': 1}
    env.write()
    status, log = run(env, 'prune')
    assert status == 0, log
    assert backups_in(env.remote) == backups_in(env.dest) and len(backups_in(env.dest)) == 1


# ---------------------------------------------------------------------------
# The installed layout: the files side by side, python3 -I, signals


@pytest.fixture
def installed(env):
    lib = env.tmp / 'lib'
    lib.mkdir()
    for name in ('backup_runner.py', 'backup_archive.py', 'age.py', 'retention.py', 'textfile.py'):
        shutil.copy(Path(br.__file__).parent / name, lib / name)
    env.runner = [sys.executable, '-I', str(lib / 'backup_runner.py'), '--config', str(env.path)]
    return env


def test_installed_copy_runs_under_python_isolated_mode(installed):
    env = installed
    done = subprocess.run(env.runner + ['run'], capture_output=True, text=True, cwd='/', timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith('<6>backup daily: wrote daily-')
    assert metrics(env)['prodready_backup_count'] == 1


def slow_job(env):
    env.config['commands'] = [{'name': 'postgresql/slow.dump', 'argv': [
        sys.executable, '-c', 'import sys, time; sys.stdout.write("x" * 100000); sys.stdout.flush(); time.sleep(60)']}]
    env.write()


def start_slow(env):
    child = subprocess.Popen(env.runner + ['run'], stderr=subprocess.PIPE, text=True, cwd='/', start_new_session=True)
    deadline = time.monotonic() + 30
    while not [n for n in os.listdir(env.dest) if n.endswith('.tmp')]:
        assert child.poll() is None and time.monotonic() < deadline, 'the runner never started its backup'
        time.sleep(0.02)
    time.sleep(0.2)
    return child


def test_sigterm_removes_temp_files_and_records_the_failure(installed):
    env = installed
    assert subprocess.run(env.runner + ['run'], cwd='/', timeout=120, check=False).returncode == 0
    before = visible(env.dest)
    slow_job(env)
    child = start_slow(env)
    try:
        os.kill(child.pid, signal.SIGTERM)
        _out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert child.returncode == 1
    assert 'stopped by SIGTERM' in err
    assert visible(env.dest) == before
    assert not [n for n in os.listdir(env.dest) if n.endswith('.tmp')]
    assert metrics(env)['prodready_backup_last_failure_timestamp_seconds'] > 0


def test_kill_9_leaves_no_archive_and_the_next_run_succeeds(installed):
    env = installed
    good = dict(env.config)
    slow_job(env)
    child = start_slow(env)
    try:
        status, log = run(env)  # a second run while the first holds the lock: fails cleanly
        assert status == br.EXIT_LOCKED
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert visible(env.dest) == []
    env.config = good
    env.write()
    status, log = run(env)
    assert status == 0, log
    assert not [n for n in os.listdir(env.dest) if n.endswith('.tmp')]
    assert len(backups_in(env.dest)) == 1


def test_an_unexpected_error_is_recorded_with_its_traceback(env, monkeypatch):
    def broken(*args, **kwargs):
        raise TypeError('data must be bytes')

    monkeypatch.setattr(br.backup_archive, 'create', broken)
    status, log = run(env)
    assert status == 1
    assert 'Traceback' in log and 'unexpected TypeError: data must be bytes' in log
    assert metrics(env)['prodready_backup_last_failure_timestamp_seconds'] > 0
