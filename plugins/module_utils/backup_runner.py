# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Host-side backup runner: the program the backup role's systemd timers start.

The ``backup`` role installs this file beside ``backup_archive.py``,
``age.py``, ``retention.py`` and ``textfile.py`` in
``/usr/local/lib/prodready/`` and runs it from ``prodready-backup@.service``::

    python3 -I /usr/local/lib/prodready/backup_runner.py --config /etc/prodready/backup/daily.json run

Actions:

``run``
    Under the destination's lock: write one backup (:func:`backup_archive.create`),
    apply retention (only after the backup was written), then, when
    ``offsite`` is configured, copy the job's archives and manifests to the
    offsite host with rsync over SSH and apply the same retention there.
``verify``
    Under the lock: verify the job's newest backup. Deep (decrypt and check
    every entry, then write the ``.verified`` marker) when an identity file
    is configured (``identity_file`` or ``--identity``), shallow (size and
    SHA-256 against the manifest) otherwise. Only a deep verification counts
    as a verified restore in the metrics. A configured identity file means the
    secret key lives on the host: whoever is root there can decrypt every
    backup. Leave it unset to keep the key off the host.
``prune``
    Under the lock: apply retention locally, and offsite when configured.
``check``
    Validate the configuration and exit (used by Ansible's ``validate:``);
    touches nothing.

Every action except ``check`` writes node_exporter textfile metrics
(``prodready_backup_<job>.prom``, see docs/metrics.md) on success **and** on
failure; a failure exits non-zero so that ``OnFailure=`` fires. The values
that must survive between runs (last success, last failure, ...) are kept in
``<state_dir>/<job>.json``.

Exit status: 0 success, 1 failure (metrics and state record it), 2 invalid
configuration or usage, 75 another run holds the lock (``lock_timeout``
expired; recorded as a failure too).

Offsite copies (``offsite``): ``rsync --files-from`` sends exactly the job's
archives and manifests present locally (files already there with the same
size and mtime are skipped; rsync writes each file under a temporary name
and renames it, so the remote never sees a partial archive under the real
name). Then the remote directory is listed (``rsync --list-only``), the
retention policy is applied to the remote backups of the job (names
present locally are never deleted) and the pruned archives and their
manifests are deleted with ``rsync --delete`` from an empty directory,
filtered to exactly those names. Only rsync runs on the remote side, so the
remote ``authorized_keys`` entry can be restricted to
``command="rrsync /srv/backups/HOST",restrict``. Unlike a mirror
(``rsync --delete`` of the whole directory), a wiped or emptied local
directory never empties the offsite copy.

Configuration (JSON, root-owned, mode 0600)::

    {
      "comment": "managed by Ansible",      # free text, ignored
      "job": "daily",                       # [a-z][a-z0-9_-]*, the metrics label
      "dest": "/var/backups/prodready",
      "prefix": "daily-",                   # default: JOB-
      "sources": ["/etc", {"path": "/srv/app", "exclude": ["cache"]}],
      "commands": [{"name": "postgresql/app.dump",
                    "argv": ["runuser", "-u", "postgres", "--", "pg_dump", "-Fc", "app"],
                    "timeout": 3600}],
      "recipients": ["age1..."],
      "compression": "auto",                # auto | zstd | gzip
      "compression_level": null,
      "retention": {"keep_daily": 7, "keep_weekly": 4},
      "lock_timeout": 3600,                 # seconds to wait for another run
      "state_dir": "/var/lib/prodready/backup",
      "textfile_dir": "/var/lib/prometheus/node-exporter",   # null or "": no metrics
      "identity_file": null,                # deep verification (the secret key on the host!)
      "offsite": {"host": "backup.example.com", "user": "backup", "path": "/srv/backups/web1",
                  "port": 22, "ssh_key": "/etc/prodready/backup/offsite_ed25519",
                  "known_hosts": "/etc/prodready/backup/known_hosts",   # null: accept-new into state_dir
                  "timeout": 300}
    }

The same file is the unit-tested library and the program installed on hosts.
Standard library plus what ``backup_archive`` needs (``cryptography``,
optionally ``zstandard``); Python 3.9+.
"""

from __future__ import (absolute_import, division, print_function)  # noqa: UP010, I001 (Ansible boilerplate)
__metaclass__ = type  # noqa: UP001

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

try:
    from ansible_collections.prodready.vps.plugins.module_utils import backup_archive, retention, textfile
except ImportError:  # host-side program: the files side by side
    # ``python3 -I`` on Python 3.11+ implies -P: the script's directory is not on sys.path.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import backup_archive  # type: ignore[no-redef]  # pylint: disable=wrong-import-position
    import retention  # type: ignore[no-redef]  # pylint: disable=wrong-import-position
    import textfile  # type: ignore[no-redef]  # pylint: disable=wrong-import-position


ACTIONS = ('run', 'verify', 'prune', 'check')
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_LOCKED = 75
JOB_RE = re.compile(r'\A[a-z][a-z0-9_-]{0,63}\Z')
PREFIX_RE = re.compile(r'\A(?:[A-Za-z0-9_-][A-Za-z0-9_.-]*)?\Z')
HOST_RE = re.compile(r'\A(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])\Z')
USER_RE = re.compile(r'\A[A-Za-z_][A-Za-z0-9_.-]*\Z')
SAFE_ARG_RE = re.compile(r'\A[^\s\'"\\]+\Z')   # rsync's -e splits on spaces and quotes
CONFIG_KEYS = ('comment', 'job', 'dest', 'prefix', 'sources', 'commands', 'recipients', 'compression', 'compression_level',
               'retention', 'lock_timeout', 'state_dir', 'textfile_dir', 'identity_file', 'offsite')
OFFSITE_KEYS = ('host', 'user', 'path', 'port', 'ssh_key', 'known_hosts', 'timeout', 'ssh_program', 'rsync_program')
DEFAULTS = {
    'prefix': None,
    'sources': [],
    'commands': [],
    'recipients': [],
    'compression': 'auto',
    'compression_level': None,
    'retention': {},
    'lock_timeout': 3600,
    'state_dir': '/var/lib/prodready/backup',
    'textfile_dir': '/var/lib/prometheus/node-exporter',
    'identity_file': None,
    'offsite': None,
}
OFFSITE_DEFAULTS = {'user': 'root', 'port': 22, 'ssh_key': None, 'known_hosts': None, 'timeout': 300,
                    'ssh_program': 'ssh', 'rsync_program': 'rsync'}
STATE_KEYS = ('last_run', 'last_success', 'last_failure', 'last_duration', 'last_size', 'last_verified_restore',
              'last_verify_failure', 'count', 'last_backup', 'last_error')
KNOWN_HOSTS_NAME = 'known_hosts'
OUTPUT_TAIL = 2000


class ConfigError(ValueError):
    """The job configuration is invalid."""


class OffsiteError(Exception):
    """Copying to or pruning on the offsite host failed."""


class Terminated(BaseException):
    """SIGTERM (systemd stopping the unit): unwind so temp files are removed."""


EXPECTED_ERRORS = (backup_archive.BackupError, retention.RetentionError, OffsiteError)


# ---------------------------------------------------------------------------
# Configuration


def _positive_number(config, key, allow_zero=True):
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f'{key} must be a {"non-negative" if allow_zero else "positive"} number, not {value!r}')
    return value


def _absolute(value, key, optional=False):
    if optional and value in (None, ''):
        return None
    if not isinstance(value, str) or not value.startswith('/'):
        raise ConfigError(f'{key} must be an absolute path, not {value!r}')
    return os.path.normpath(value)


def _check_offsite(offsite, state_dir):
    if not isinstance(offsite, dict):
        raise ConfigError('offsite must be a mapping or null')
    unknown = set(offsite) - set(OFFSITE_KEYS)
    if unknown:
        raise ConfigError('offsite: unknown keys {}'.format(', '.join(sorted(unknown))))
    result = dict(OFFSITE_DEFAULTS)
    result.update({k: v for k, v in offsite.items() if v is not None})
    host = result.get('host')
    if not isinstance(host, str) or not HOST_RE.match(host) or host.startswith('-'):
        raise ConfigError(f'offsite.host {host!r} is not a host name or address')
    if not isinstance(result['user'], str) or not USER_RE.match(result['user']):
        raise ConfigError('offsite.user {!r} is not a user name'.format(result['user']))
    path = result.get('path')
    if not isinstance(path, str) or not path or not SAFE_ARG_RE.match(path) or path.startswith('-'):
        raise ConfigError(f'offsite.path {path!r} must be a path without spaces or quotes')
    result['path'] = path.rstrip('/') or '/'
    port = result['port']
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f'offsite.port must be a port number, not {port!r}')
    for key in ('ssh_key', 'known_hosts'):
        if result[key] is not None:
            value = _absolute(result[key], 'offsite.' + key)
            if not SAFE_ARG_RE.match(value):
                raise ConfigError(f'offsite.{key} {value!r} must not contain spaces or quotes')
            result[key] = value
    timeout = result['timeout']
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
        raise ConfigError(f'offsite.timeout must be a positive integer (seconds), not {timeout!r}')
    for key in ('ssh_program', 'rsync_program'):
        if not isinstance(result[key], str) or not SAFE_ARG_RE.match(result[key]):
            raise ConfigError(f'offsite.{key} must be a program name or path without spaces')
    result['accept_new'] = result['known_hosts'] is None
    if result['accept_new']:
        result['known_hosts'] = os.path.join(state_dir, KNOWN_HOSTS_NAME)
    return result


def load_config(path):
    """Read, validate and complete a job configuration; raise ConfigError."""
    try:
        with open(path, 'rb') as handle:
            raw = json.loads(handle.read().decode('utf-8'))
    except (OSError, ValueError) as exc:
        raise ConfigError(f'cannot read the configuration {path}: {exc}')
    return normalize_config(raw)


def normalize_config(raw):
    if not isinstance(raw, dict):
        raise ConfigError('the configuration must be a JSON object')
    unknown = set(raw) - set(CONFIG_KEYS)
    if unknown:
        raise ConfigError('unknown keys {}'.format(', '.join(sorted(unknown))))
    raw = {k: v for k, v in raw.items() if k != 'comment'}  # free text, e.g. "managed by Ansible"
    config = dict(DEFAULTS)
    config.update({k: v for k, v in raw.items() if v is not None or k in ('textfile_dir', 'identity_file', 'offsite')})
    job = config.get('job')
    if not isinstance(job, str) or not JOB_RE.match(job):
        raise ConfigError(f'job {job!r} must match [a-z][a-z0-9_-]* (at most 64 characters)')
    config['dest'] = _absolute(config.get('dest'), 'dest')
    if config['prefix'] is None:
        config['prefix'] = job + '-'
    if not isinstance(config['prefix'], str) or not PREFIX_RE.match(config['prefix']):
        raise ConfigError('prefix {!r} may only contain letters, digits, _ . - and must not start with a dot'.format(config['prefix']))
    try:
        config['sources'] = backup_archive.normalize_sources(config['sources'])
        config['commands'] = backup_archive.normalize_commands(config['commands'])
        backup_archive.parse_recipients(config['recipients'])
    except backup_archive.BackupError as exc:
        raise ConfigError(str(exc))
    if not config['sources'] and not config['commands']:
        raise ConfigError('nothing to back up: give sources and/or commands')
    names = [c['name'] for c in config['commands']]
    if len(set(names)) != len(names):
        raise ConfigError('two commands write the same entry name')
    if config['compression'] not in ('auto', 'zstd', 'gzip'):
        raise ConfigError('compression must be auto, zstd or gzip, not {!r}'.format(config['compression']))
    if config['compression'] == 'auto':
        config['compression'] = 'zstd' if backup_archive.HAS_ZSTANDARD else 'gzip'
    if config['compression'] == 'zstd' and not backup_archive.HAS_ZSTANDARD:
        raise ConfigError('compression zstd needs the Python "zstandard" package (python3-zstandard)')
    level = config['compression_level']
    if level is not None:
        low, high = backup_archive.LEVELS[config['compression']]
        if isinstance(level, bool) or not isinstance(level, int) or not low <= level <= high:
            raise ConfigError('compression_level must be an integer from {} to {} for {}, not {!r}'.format(
                low, high, config['compression'], level))
    try:
        config['policy'] = retention.parse_policy(config['retention'] or {})
    except retention.RetentionError as exc:
        raise ConfigError(f'retention: {exc}')
    _positive_number(config, 'lock_timeout')
    config['state_dir'] = _absolute(config['state_dir'], 'state_dir')
    config['textfile_dir'] = _absolute(config['textfile_dir'], 'textfile_dir', optional=True)
    config['identity_file'] = _absolute(config['identity_file'], 'identity_file', optional=True)
    if config['offsite'] is not None:
        config['offsite'] = _check_offsite(config['offsite'], config['state_dir'])
    return config


# ---------------------------------------------------------------------------
# State and metrics


def state_path(config):
    return os.path.join(config['state_dir'], config['job'] + '.json')


def load_state(config, log):
    path = state_path(config)
    try:
        with open(path) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log(4, f'state file {path} is unreadable ({exc}); starting from empty state')
        return {}
    if not isinstance(data, dict):
        log(4, f'state file {path} is not a JSON object; starting from empty state')
        return {}
    return {k: data[k] for k in STATE_KEYS if k in data}


def write_atomic(path, data, mode):
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=directory)
    try:
        with os.fdopen(fd, 'wb') as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save_state(config, state):
    os.makedirs(config['state_dir'], mode=0o700, exist_ok=True)
    write_atomic(state_path(config), (json.dumps(state, indent=1, sort_keys=True) + '\n').encode('utf-8'), 0o600)


METRICS = (
    # (state key, metric name, help, always emitted (0 = never))
    ('last_run', 'prodready_backup_last_run_timestamp_seconds', 'When the backup runner last ran for the job.', True),
    ('last_success', 'prodready_backup_last_success_timestamp_seconds',
     'When the job last completed successfully (backup, retention and offsite copy); 0 = never.', True),
    ('last_failure', 'prodready_backup_last_failure_timestamp_seconds',
     'When a backup run of the job last failed; 0 = never.', True),
    ('last_duration', 'prodready_backup_last_duration_seconds', 'Duration of the last successful run.', False),
    ('last_size', 'prodready_backup_last_size_bytes', 'Size of the newest archive written by the job.', False),
    ('last_verified_restore', 'prodready_backup_last_verified_restore_timestamp_seconds',
     'When a backup of the job last passed a deep verification (decrypted, every entry checked); 0 = never.', True),
    ('last_verify_failure', 'prodready_backup_last_verify_failure_timestamp_seconds',
     'When verifying the newest backup of the job last failed; 0 = never.', True),
    ('count', 'prodready_backup_count', 'Backups of the job in the local backup directory.', False),
)


def metrics_filename(job):
    return f'prodready_backup_{job}.prom'


def render_metrics(job, state):
    metrics = []
    for key, name, help_text, always in METRICS:
        value = state.get(key)
        if value is None:
            if not always:
                continue
            value = 0
        metrics.append({'name': name, 'help': help_text, 'value': value, 'labels': {'job': job}})
    return textfile.render(metrics)


def write_metrics(config, state):
    """Write the job's textfile metrics; return the path, or None when metrics are off."""
    directory = config['textfile_dir']
    if not directory:
        return None
    os.makedirs(directory, mode=0o755, exist_ok=True)
    path = os.path.join(directory, metrics_filename(config['job']))
    write_atomic(path, render_metrics(config['job'], state).encode('utf-8'), 0o644)
    return path


# ---------------------------------------------------------------------------
# Offsite


def _tail(data):
    text = data.decode('utf-8', 'replace').strip() if isinstance(data, bytes) else (data or '').strip()
    return text[-OUTPUT_TAIL:]


def ssh_command(offsite):
    """The ``-e`` argument of rsync (rsync splits it on spaces)."""
    argv = [offsite['ssh_program'], '-F', 'none', '-p', str(offsite['port']),
            '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=30', '-o', 'ServerAliveInterval=30',
            '-o', 'ServerAliveCountMax=4',
            '-o', 'StrictHostKeyChecking=' + ('accept-new' if offsite['accept_new'] else 'yes'),
            '-o', 'UserKnownHostsFile=' + offsite['known_hosts']]
    if offsite['ssh_key']:
        argv += ['-o', 'IdentitiesOnly=yes', '-i', offsite['ssh_key']]
    return ' '.join(argv)


def remote_spec(offsite):
    path = offsite['path']
    return '{}@{}:{}'.format(offsite['user'], offsite['host'], path if path == '/' else path + '/')


class Offsite:
    """rsync over SSH to one remote directory; ``runner`` is ``subprocess.run`` (tests replace it)."""

    def __init__(self, offsite, runner=subprocess.run):
        self.cfg = offsite
        self.runner = runner

    def _rsync(self, args, what, stdin=b''):
        argv = [self.cfg['rsync_program'], '--timeout=%d' % self.cfg['timeout'], '-e', ssh_command(self.cfg)] + args
        try:
            done = self.runner(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        except OSError as exc:
            raise OffsiteError(f'{what}: cannot run {argv[0]}: {exc}')
        if done.returncode != 0:
            raise OffsiteError('{} failed (rsync exit status {}): {}'.format(
                what, done.returncode, _tail(done.stderr) or _tail(done.stdout) or 'no output'))
        return done.stdout.decode('utf-8', 'replace') if isinstance(done.stdout, bytes) else (done.stdout or '')

    def upload(self, dest, names):
        """Copy ``names`` (files in ``dest``) to the remote directory, mode 0600."""
        if not names:
            return
        self._rsync(['--times', '--perms', '--chmod=D0700,F0600', '--from0', '--files-from=-',
                     dest.rstrip('/') + '/', remote_spec(self.cfg)],
                    'copying to {}'.format(self.cfg['host']), stdin='\0'.join(names).encode('utf-8'))

    def list(self):
        """Names of the regular files in the remote directory."""
        out = self._rsync(['--list-only', remote_spec(self.cfg)], 'listing {}'.format(self.cfg['host']))
        names = []
        for line in out.splitlines():
            parts = line.split(None, 4)
            if len(parts) == 5 and parts[0].startswith('-'):
                names.append(parts[4])
        return names

    def delete(self, names):
        """Delete exactly ``names`` in the remote directory (rsync --delete from an empty directory)."""
        if not names:
            return
        for name in names:
            if not name or '/' in name or not SAFE_ARG_RE.match(name) or any(c in name for c in '*?[]'):
                raise OffsiteError(f'refusing to delete the remote name {name!r}')
        empty = tempfile.mkdtemp(prefix='prodready-backup-empty-')
        try:
            # Files matching no include are excluded, and excluded files are never deleted.
            rules = ''.join(f'/{name}\n' for name in names)
            self._rsync(['--recursive', '--delete', '--include-from=-', '--exclude=*', empty + '/',
                         remote_spec(self.cfg)], 'pruning on {}'.format(self.cfg['host']), stdin=rules.encode('utf-8'))
        finally:
            shutil.rmtree(empty, ignore_errors=True)


def plan_remote(remote_names, prefix, policy, local_names):
    """Which remote archives (and manifests) retention removes; local names are protected."""
    backups = []
    present = set(remote_names)
    for name in remote_names:
        parsed = backup_archive.parse_backup_name(name)
        if parsed is None or parsed[0] != prefix:
            continue
        backups.append({'id': name, 'time': parsed[1]})
    if policy.is_empty() or not backups:
        return []
    plan = retention.plan(backups, policy, protect=[n for n in local_names if n in present])
    victims = []
    for name in plan.remove_ids:
        victims.append(name)
        if name + backup_archive.MANIFEST_SUFFIX in present:
            victims.append(name + backup_archive.MANIFEST_SUFFIX)
    return victims


def sync_offsite(config, offsite, log):
    """Upload the job's local backups, then apply retention to the remote copies. Returns the names pruned."""
    dest, prefix = config['dest'], config['prefix']
    local = backup_archive.list_backups(dest, prefix)
    names = []
    for item in reversed(local):  # oldest first: the newest lands last
        names.append(item['name'])
        if item['manifest']:
            names.append(os.path.basename(item['manifest']))
    offsite.upload(dest, names)
    if config['policy'].is_empty():
        return []
    victims = plan_remote(offsite.list(), prefix, config['policy'], [i['name'] for i in local])
    offsite.delete(victims)
    if victims:
        log(6, 'offsite {}: pruned {}'.format(config['offsite']['host'], ', '.join(victims)))
    return victims


# ---------------------------------------------------------------------------
# Actions


def _now(clock):
    return datetime.datetime.fromtimestamp(clock(), datetime.timezone.utc)


def _count(config):
    return len(backup_archive.list_backups(config['dest'], config['prefix']))


def action_run(config, state, log, clock, offsite, progress):
    started = clock()
    dest = config['dest']
    with backup_archive.BackupLock(dest, config['lock_timeout']):
        made = backup_archive.create(
            dest, config['sources'], recipients=config['recipients'], commands=config['commands'],
            prefix=config['prefix'], lock=False, compression=config['compression'],
            compression_level=config['compression_level'], now=_now(clock))
        progress['written'] = made['name']
        state['last_size'] = made['size']
        state['last_backup'] = made['name']
        for warning in made['warnings']:
            log(4, warning)
        pruned = []
        if not config['policy'].is_empty():
            pruned = backup_archive.apply_retention(dest, config['policy'], prefix=config['prefix'], lock=False)['prune']
        state['count'] = _count(config)
        offsite_text = ''
        if offsite is not None:
            remote_pruned = sync_offsite(config, offsite, log)
            offsite_text = '; copied to {} (pruned {} there)'.format(config['offsite']['host'], len(remote_pruned))
    finished = clock()
    state['last_success'] = finished
    state['last_duration'] = round(finished - started, 3)
    log(6, 'wrote {} ({} bytes, {} entries) in {:.1f}s; pruned {}{}'.format(
        made['name'], made['size'], made['entries'], finished - started,
        ', '.join(pruned) if pruned else 'nothing', offsite_text))


def action_verify(config, state, log, clock, identity):
    dest = config['dest']
    with backup_archive.BackupLock(dest, config['lock_timeout']):
        backups = backup_archive.list_backups(dest, config['prefix']) if os.path.isdir(dest) else []
        state['count'] = len(backups)
        if not backups:
            raise backup_archive.BackupError('there is no backup with the prefix {!r} in {} to verify'.format(config['prefix'], dest))
        newest = backups[0]
        result = backup_archive.verify(newest['archive'], identity=identity, mark=identity is not None)
    if result['mode'] == 'deep':
        state['last_verified_restore'] = clock()
    log(6, '{} verification of {} passed ({} entries{})'.format(
        result['mode'], result['name'], result['entries'],
        ', marked verified' if result['mode'] == 'deep' else '; no identity configured, so nothing was decrypted'))


def action_prune(config, state, log, offsite):
    dest = config['dest']
    with backup_archive.BackupLock(dest, config['lock_timeout']):
        pruned = []
        if not config['policy'].is_empty():
            pruned = backup_archive.apply_retention(dest, config['policy'], prefix=config['prefix'], lock=False)['prune']
        state['count'] = _count(config)
        remote = []
        if offsite is not None:
            remote = sync_offsite(config, offsite, log)
    log(6, 'pruned {} locally and {} offsite'.format(len(pruned), len(remote)))


def _logger(stream, job):
    """Lines for the journal: ``<priority>`` prefixes (SyslogLevelPrefix)."""
    tag = f'backup {job}' if job else 'backup'

    def log(priority, message):
        for line in str(message).splitlines() or ['']:
            stream.write(f'<{priority}>{tag}: {line}\n')
        stream.flush()
    return log


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv=None, clock=time.time, stream=None, rsync_runner=subprocess.run):
    stream = stream or sys.stderr
    log = _logger(stream, None)
    parser = argparse.ArgumentParser(description='Run, verify or prune one prodready.vps backup job.')
    parser.add_argument('--config', required=True, help='job configuration (JSON)')
    parser.add_argument('--identity', help='age identity file for a deep verification (overrides identity_file)')
    parser.add_argument('--lock-timeout', type=float, help='seconds to wait for another run (overrides lock_timeout)')
    parser.add_argument('action', choices=ACTIONS)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        log(3, f'{args.config}: {exc}')
        return EXIT_CONFIG
    if args.action == 'check':
        log(6, '{}: job {} is valid'.format(args.config, config['job']))
        return EXIT_OK
    if args.lock_timeout is not None:
        if args.lock_timeout < 0:
            log(3, '--lock-timeout must not be negative')
            return EXIT_CONFIG
        config['lock_timeout'] = args.lock_timeout
    job = config['job']
    log = _logger(stream, job)
    progress = {'written': None}
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (tests)
        previous = None
    state = load_state(config, log)
    state['last_run'] = clock()
    status = EXIT_OK
    try:
        offsite = Offsite(config['offsite'], rsync_runner) if config['offsite'] else None
        if args.action == 'run':
            action_run(config, state, log, clock, offsite, progress)
        elif args.action == 'verify':
            identity = args.identity or config['identity_file']
            action_verify(config, state, log, clock, identity)
        else:
            action_prune(config, state, log, offsite)
        state.pop('last_error', None)
    except (Exception, Terminated) as exc:  # pylint: disable=broad-except  # every failure must reach the metrics
        status = EXIT_LOCKED if isinstance(exc, backup_archive.BackupLockedError) else EXIT_FAILED
        if isinstance(exc, Terminated):
            message = 'stopped by SIGTERM'
        elif isinstance(exc, OSError) and not isinstance(exc, backup_archive.BackupError):
            message = backup_archive._describe_oserror(exc)  # pylint: disable=protected-access
        elif isinstance(exc, EXPECTED_ERRORS):
            message = str(exc)
        else:  # a bug: keep the traceback for the journal
            log(3, traceback.format_exc())
            message = f'unexpected {type(exc).__name__}: {exc}'
        state['last_error'] = f'{args.action}: {message}'[:OUTPUT_TAIL]
        if args.action == 'verify':
            state['last_verify_failure'] = clock()
        else:
            state['last_failure'] = clock()
        log(3, '{} failed: {}'.format(args.action, message))
        if args.action == 'run':
            log(3, 'backup {} was written, the failure came after it'.format(progress['written'])
                if progress['written'] else 'no backup was written; existing backups were not touched')
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    for what, writer in (('state', save_state), ('metrics', write_metrics)):
        try:
            writer(config, state)
        except OSError as exc:
            log(3, f'cannot write the {what} of job {job}: {backup_archive._describe_oserror(exc)}')  # pylint: disable=protected-access
            if status == EXIT_OK:
                status = EXIT_FAILED
    return status


if __name__ == '__main__':
    raise SystemExit(main())
