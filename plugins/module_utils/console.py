# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``prodready-ctl``: the operator console installed on hosts by the ``console`` role.

An interactive numbered menu (run without arguments) and the same actions as
subcommands for scripts (``--json`` for machine-readable output)::

    prodready-ctl                         # the menu
    prodready-ctl status [--json]         # state, memory, CPU, uptime, restarts per service
    prodready-ctl start|stop|restart [SERVICE...]
    prodready-ctl reload [SERVICE...]     # graceful: ExecReload= (SIGHUP) when the unit has one, else restart
    prodready-ctl logs SERVICE [-n 50] [-f] [--journal]
    prodready-ctl health [SERVICE...]     # GET each service's health URL
    prodready-ctl backup [--job daily]    # a backup now, through the backup role's unit (same sandbox)
    prodready-ctl backups [--job daily]   # the backups on this host
    prodready-ctl verify [--job daily]    # the restore test of the newest backup now
    prodready-ctl metrics                 # the prodready_* textfile metrics, summarised
    prodready-ctl troubleshoot [SERVICE]  # what is wrong and what to do about it
    prodready-ctl --config FILE check     # validate a services file (the role's validate:)

The services come from ``/etc/prodready/services.json`` (written by the
console role from ``prodready_services``; no secrets). Standard library
only, Python 3.8+. Start/stop/restart/reload, backups and reading the backup
configuration need root.

Exit status: 0 fine, 1 something is down or an action failed, 2 usage or
configuration error.
"""

from __future__ import (absolute_import, division, print_function)  # noqa: UP010, I001 (Ansible boilerplate)
__metaclass__ = type  # noqa: UP001

import argparse
import glob
import json
import os
import re
import socket
import subprocess
import sys
import time

try:  # Python 3
    from urllib import error as urlerror
    from urllib import request as urlrequest
except ImportError:  # pragma: no cover - Python 2 is not supported on hosts
    urlerror = urlrequest = None

CONFIG_FILE = '/etc/prodready/services.json'
DEFAULT_CONFIG = {
    'services': [],
    'backup_config_dir': '/etc/prodready/backup',
    'textfile_dir': '/var/lib/prometheus/node-exporter',
    'failures_dir': '/var/lib/prodready/failures',
    'firewall_table': 'prodready',
    'health_timeout': 5,
}
NAME_RE = re.compile(r'\A[a-z][a-z0-9_-]{0,63}\Z')
UNSET = ('', '[not set]', 'infinity', '18446744073709551615')
STATUS_PROPS = ('Id', 'Description', 'LoadState', 'ActiveState', 'SubState', 'UnitFileState', 'MainPID',
                'MemoryCurrent', 'MemoryMax', 'CPUUsageNSec', 'NRestarts', 'ActiveEnterTimestamp', 'Result',
                'ExecMainStatus', 'CanReload')
EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2
CLOCK_TICKS = os.sysconf('SC_CLK_TCK') if hasattr(os, 'sysconf') else 100

# systemd's Result= values and what they mean for an operator.
RESULT_HINTS = {
    'oom-kill': 'it was killed for using more memory than MemoryMax ({memory_max}): look for a leak, or give it more '
                '(max_memory_mb / priority in prodready_services)',
    'watchdog': 'it hung: no watchdog ping (or no health answer) within WatchdogSec, so systemd killed it; look for a '
                'blocked event loop, a deadlock or a slow dependency in the log',
    'start-limit-hit': 'it crashed too often and systemd stopped restarting it; fix the cause, then '
                       'systemctl reset-failed {unit} && systemctl start {unit}',
    'timeout': 'it did not start or stop in time (TimeoutStartSec / TimeoutStopSec)',
    'core-dump': 'it crashed with a core dump (a bug in the program or a native library)',
    'signal': 'it was killed by a signal',
    'exit-code': 'it exited with status {status}',
}
# Exit statuses systemd itself sets when it cannot start the program.
EXIT_STATUS_HINTS = {
    200: 'WorkingDirectory= does not exist (is the app deployed?)',
    203: 'the program of ExecStart= is missing or not executable (is the app deployed?)',
    209: 'systemd could not connect its output (is the log writer prodready-log-{name} running?)',
    210: 'a chroot/RootDirectory problem',
    217: 'the service user does not exist (run the hardening role)',
    218: 'capabilities could not be set up',
    226: 'a path in ReadWritePaths= or another sandbox path does not exist',
    233: 'RuntimeDirectory= or StateDirectory= could not be created',
    1: 'the app exited with an error: see its error log below',
    2: 'the app was started with wrong arguments or configuration: see its error log below',
}


class ConsoleError(Exception):
    """A problem the operator must fix (bad configuration, not root...)."""


# ---------------------------------------------------------------------------
# Host access (the tests replace this class)


class Host:
    """Commands, files and HTTP of the real host."""

    @staticmethod
    def run(argv, timeout=None):
        env = dict(os.environ, LC_ALL='C', SYSTEMD_COLORS='0', SYSTEMD_PAGER='')
        try:
            done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=timeout,
                                  check=False)
        except OSError as exc:
            return 127, '', str(exc)
        except subprocess.TimeoutExpired:
            return 124, '', '%s timed out' % argv[0]
        return done.returncode, done.stdout.decode('utf-8', 'replace'), done.stderr.decode('utf-8', 'replace')

    @staticmethod
    def interactive(argv):
        """Run with the terminal (journalctl -f, tail -F); Ctrl-C ends it and returns."""
        try:
            process = subprocess.Popen(argv)
        except OSError as exc:
            raise ConsoleError('cannot run %s: %s' % (argv[0], exc))
        try:
            return process.wait()
        except KeyboardInterrupt:
            process.terminate()
            process.wait()
            return 0

    @staticmethod
    def http_get(url, timeout):
        opener = urlrequest.build_opener(urlrequest.ProxyHandler({}))
        try:
            response = opener.open(url, timeout=timeout)
            return response.status, response.read(64 * 1024).decode('utf-8', 'replace')
        except urlerror.HTTPError as exc:
            return exc.code, (exc.read(64 * 1024) if exc.fp else b'').decode('utf-8', 'replace')
        except (urlerror.URLError, socket.timeout, OSError, ValueError) as exc:
            reason = getattr(exc, 'reason', exc)
            if 'refused' in str(reason):
                reason = 'connection refused'
            elif 'timed out' in str(reason):
                reason = 'no answer within %g s' % timeout
            raise ConsoleError(str(reason))

    @staticmethod
    def read(path):
        with open(path, 'rb') as handle:
            return handle.read().decode('utf-8', 'replace')

    @staticmethod
    def exists(path):
        return os.path.exists(path)

    @staticmethod
    def readable(path):
        return os.access(path, os.R_OK | (os.X_OK if os.path.isdir(path) else 0))

    @staticmethod
    def glob(pattern):
        return sorted(glob.glob(pattern))

    @staticmethod
    def now():
        return time.time()

    @staticmethod
    def hostname():
        return socket.gethostname()

    @staticmethod
    def list_backups(dest, prefix):
        """The backup role's own lister (backup_archive.list_backups), installed beside this file."""
        try:
            from ansible_collections.prodready.vps.plugins.module_utils import backup_archive
        except ImportError:
            here = os.path.dirname(os.path.abspath(__file__))
            if here not in sys.path:
                sys.path.insert(0, here)
            try:
                import backup_archive  # type: ignore[no-redef]  # pylint: disable=import-outside-toplevel
            except ImportError:
                raise ConsoleError('the backup role is not installed here (no backup_archive.py in %s)' % here)
        return backup_archive.list_backups(dest, prefix)


# ---------------------------------------------------------------------------
# Small helpers


def human_bytes(value):
    if value in UNSET or value is None:
        return '-'
    value = float(value)
    for unit in ('B', 'K', 'M', 'G', 'T'):
        if value < 1024 or unit == 'T':
            return ('%d%s' % (value, unit)) if unit == 'B' else ('%.1f%s' % (value, unit))
        value /= 1024.0
    return '-'  # pragma: no cover


def human_seconds(seconds):
    if seconds is None:
        return '-'
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return '%.1fs' % seconds
    if seconds < 3600:
        return '%dm%02ds' % (seconds // 60, seconds % 60)
    if seconds < 86400 * 2:
        return '%dh%02dm' % (seconds // 3600, (seconds % 3600) // 60)
    return '%dd%02dh' % (seconds // 86400, (seconds % 86400) // 3600)


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_show(text):
    """``systemctl show`` of several units -> {Id: {prop: value}}."""
    units = {}
    for block in re.split(r'\n\s*\n', text.strip()):
        props = dict(line.split('=', 1) for line in block.splitlines() if '=' in line)
        if props.get('Id'):
            units[props['Id']] = props
    return units


_SAMPLE_RE = re.compile(r'\A([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?\s*\Z')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_textfile(text):
    """Prometheus text format -> [{'name', 'labels', 'value'}] (comments and bad lines skipped)."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        match = _SAMPLE_RE.match(line)
        if not match:
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        labels = dict((k, v.replace('\\"', '"').replace('\\n', '\n').replace('\\\\', '\\'))
                      for k, v in _LABEL_RE.findall(match.group(2) or ''))
        samples.append({'name': match.group(1), 'labels': labels, 'value': value})
    return samples


def load_config(host, path):
    try:
        raw = json.loads(host.read(path))
    except FileNotFoundError:
        raise ConsoleError('%s does not exist: run the console role (site.yml --tags console)' % path)
    except PermissionError:
        raise ConsoleError('cannot read %s: run prodready-ctl as root' % path)
    except (OSError, ValueError) as exc:
        raise ConsoleError('cannot read %s: %s' % (path, exc))
    if not isinstance(raw, dict) or not isinstance(raw.get('services', []), list):
        raise ConsoleError('%s must be a JSON object with a "services" list' % path)
    config = dict(DEFAULT_CONFIG)
    config.update(raw)
    services = []
    for index, item in enumerate(config['services']):
        if not isinstance(item, dict) or not NAME_RE.match(str(item.get('name', ''))):
            raise ConsoleError('%s: services[%d] needs a name matching [a-z][a-z0-9_-]*' % (path, index))
        svc = {'name': item['name'], 'unit': item.get('unit') or item['name'] + '.service',
               'description': item.get('description') or '', 'health_url': item.get('health_url') or None,
               'log_dir': item.get('log_dir') or '/var/log/' + item['name'], 'enabled': item.get('enabled', True)}
        services.append(svc)
    config['services'] = services
    return config


# ---------------------------------------------------------------------------
# The console: every action returns data (for --json) and prints text


class Console:
    def __init__(self, config, host=None, out=None, stdin=None):
        self.config = config
        self.host = host or Host()
        self.out = out or sys.stdout
        self.stdin = stdin or sys.stdin

    # -- output
    def say(self, text=''):
        try:
            self.out.write(text + '\n')
        except UnicodeEncodeError:  # a terminal without UTF-8
            self.out.write(text.encode('ascii', 'replace').decode('ascii') + '\n')
        self.out.flush()

    @property
    def services(self):
        return self.config['services']

    def pick(self, names):
        """Services by name (all when ``names`` is empty); ConsoleError for unknown names."""
        if not names:
            return list(self.services)
        known = dict((s['name'], s) for s in self.services)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConsoleError('unknown service(s) %s; known: %s'
                               % (', '.join(unknown), ', '.join(known) or 'none (empty services.json)'))
        return [known[n] for n in names]

    def show(self, units, props=STATUS_PROPS):
        if not units:
            return {}
        argv = ['systemctl', 'show', '--no-pager', '--timestamp=unix']
        for prop in props:
            argv += ['-p', prop]
        rc, out, err = self.host.run(argv + ['--'] + list(units), timeout=30)
        if rc != 0:
            raise ConsoleError('systemctl show failed: %s' % (err or out).strip()[:300])
        parsed = parse_show(out)
        return dict((u, parsed.get(u, {'Id': u, 'LoadState': 'not-found'})) for u in units)

    def process_cpu_ns(self, pid):
        """CPU time of a process and its waited-for children, from /proc/<pid>/stat, in ns.

        The fallback where systemd has no CPU accounting for the unit (cgroup v1
        hosts and containers): it misses children still running, so it is a floor.
        """
        try:
            stat = self.host.read('/proc/%d/stat' % pid)
        except (OSError, UnicodeDecodeError):
            return None
        fields = stat.rpartition(')')[2].split()
        try:
            ticks = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
        except ValueError:
            return None
        return ticks * 1000000000 // CLOCK_TICKS

    # -- status
    def status_data(self, names=()):
        services = self.pick(names)
        shown = self.show([s['unit'] for s in services])
        now = self.host.now()
        rows = []
        for svc in services:
            props = shown[svc['unit']]
            entered = props.get('ActiveEnterTimestamp', '')
            since = float(entered[1:]) if entered.startswith('@') and entered[1:].replace('.', '').isdigit() else None
            cpu_ns = _int(props.get('CPUUsageNSec'))
            if cpu_ns is None and _int(props.get('MainPID')):
                cpu_ns = self.process_cpu_ns(_int(props.get('MainPID')))
            memory = _int(props.get('MemoryCurrent'))
            memory_max = _int(props.get('MemoryMax'))
            rows.append({
                'name': svc['name'], 'unit': svc['unit'], 'wanted': bool(svc['enabled']),
                'load': props.get('LoadState'),
                'active': props.get('ActiveState'), 'sub': props.get('SubState'),
                'enabled': props.get('UnitFileState'), 'pid': _int(props.get('MainPID')) or None,
                'memory_bytes': memory, 'memory_max_bytes': memory_max,
                'cpu_seconds': round(cpu_ns / 1e9, 3) if cpu_ns is not None else None,
                'uptime_seconds': round(now - since, 1) if since and props.get('ActiveState') == 'active' else None,
                'restarts': _int(props.get('NRestarts')), 'result': props.get('Result'),
                'exit_status': _int(props.get('ExecMainStatus')),
                'can_reload': props.get('CanReload') == 'yes',
            })
        return rows

    @staticmethod
    def status_line(row):
        if row['load'] != 'loaded':
            return '%-16s ○ not installed' % row['name']
        mark = '●' if row['active'] == 'active' else ('✗' if row['active'] == 'failed' else '○')
        text = '%-16s %s %-8s %-10s' % (row['name'], mark, row['active'], '(%s)' % row['sub'])
        if row['active'] == 'active':
            text += ' mem %s%s  cpu %s  up %s  restarts %s' % (
                human_bytes(row['memory_bytes']),
                '/' + human_bytes(row['memory_max_bytes']) if row['memory_max_bytes'] else '',
                human_seconds(row['cpu_seconds']), human_seconds(row['uptime_seconds']),
                row['restarts'] if row['restarts'] is not None else '-')
        elif row['result'] not in (None, '', 'success'):
            text += ' result %s' % row['result']
        return text

    def cmd_status(self, names=(), as_json=False):
        rows = self.status_data(names)
        down = [r for r in rows if r['active'] != 'active' and r['wanted']]
        if as_json:
            return {'host': self.host.hostname(), 'services': rows, 'backups': self.backup_summary()}, \
                EXIT_PROBLEM if down else EXIT_OK
        self.say('SERVICE STATUS (%s)' % self.host.hostname())
        for row in rows:
            self.say('  ' + self.status_line(row))
        if not rows:
            self.say('  no services in %s' % CONFIG_FILE)
        for line in self.backup_summary_lines():
            self.say(line)
        return None, EXIT_PROBLEM if down else EXIT_OK

    # -- start / stop / restart / reload
    def cmd_unit_action(self, verb, names=(), as_json=False):
        services = self.pick(names)
        results = []
        for svc in services:
            action = verb
            if verb == 'reload':
                can = self.show([svc['unit']], ('Id', 'CanReload'))[svc['unit']].get('CanReload') == 'yes'
                action = 'reload' if can else 'restart'
            rc, out, err = self.host.run(['systemctl', action, '--', svc['unit']], timeout=300)
            done = {'start': 'started', 'stop': 'stopped', 'restart': 'restarted', 'reload': 'reloaded'}[action]
            if verb == 'reload' and action == 'restart':
                done = 'restarted (the unit has no ExecReload=)'
            result = {'name': svc['name'], 'unit': svc['unit'], 'action': action, 'ok': rc == 0,
                      'message': done if rc == 0 else (err or out).strip()[:500] or 'systemctl exited with %d' % rc}
            results.append(result)
            if not as_json:
                self.say('  %-16s %s' % (svc['name'], result['message'] if rc == 0 else 'FAILED: ' + result['message']))
        status = EXIT_OK if all(r['ok'] for r in results) else EXIT_PROBLEM
        return ({'action': verb, 'results': results} if as_json else None), status

    # -- logs
    def log_files(self, svc):
        return [p for p in (os.path.join(svc['log_dir'], svc['name'] + '.log'),
                            os.path.join(svc['log_dir'], svc['name'] + '-error.log')) if self.host.exists(p)]

    def cmd_logs(self, name, lines=50, follow=False, journal=False, as_json=False):
        svc = self.pick([name])[0]
        files = [] if journal else self.log_files(svc)
        if follow:
            argv = (['tail', '-n', str(lines), '-F'] + files) if files else \
                ['journalctl', '--no-pager', '-n', str(lines), '-f', '-u', svc['unit']]
            if not as_json:
                self.say('Following %s (Ctrl-C to stop)' % (', '.join(files) or 'the journal of ' + svc['unit']))
            return None, EXIT_OK if self.host.interactive(argv) in (0, 130, -2) else EXIT_PROBLEM
        if files:
            argv = ['tail', '-n', str(lines)] + files
        else:
            argv = ['journalctl', '--no-pager', '-o', 'short-iso', '-n', str(lines), '-u', svc['unit']]
        rc, out, err = self.host.run(argv, timeout=30)
        if as_json:
            return {'name': svc['name'], 'source': files or ['journal:' + svc['unit']], 'lines': out.splitlines()}, \
                EXIT_OK if rc == 0 else EXIT_PROBLEM
        self.say(out.rstrip('\n') if rc == 0 else 'cannot read the logs: %s' % (err or out).strip())
        return None, EXIT_OK if rc == 0 else EXIT_PROBLEM

    # -- health
    def health_data(self, names=()):
        services = [s for s in self.pick(names) if s['health_url']]
        results = []
        for svc in services:
            started = time.time()
            try:
                status, body = self.host.http_get(svc['health_url'], float(self.config['health_timeout']))
                error = None
            except ConsoleError as exc:
                status, body, error = None, '', str(exc)
            results.append({'name': svc['name'], 'url': svc['health_url'], 'status': status,
                            'ok': status is not None and 200 <= status < 300,
                            'ms': round((time.time() - started) * 1000, 1), 'error': error,
                            'body': body.strip()[:200]})
        return results

    def cmd_health(self, names=(), as_json=False):
        results = self.health_data(names)
        status = EXIT_OK if all(r['ok'] for r in results) else EXIT_PROBLEM
        if as_json:
            return {'results': results}, status
        if not results:
            self.say('  no service has a health URL')
        for r in results:
            if r['ok']:
                self.say('  %-16s OK    %d in %.0f ms  %s' % (r['name'], r['status'], r['ms'], r['url']))
            else:
                problem = 'HTTP %d' % r['status'] if r['status'] else r['error']
                self.say('  %-16s DOWN  %s  %s' % (r['name'], problem, r['url']))
        return None, status

    # -- backups
    def backup_jobs(self):
        jobs = []
        directory = self.config['backup_config_dir']
        if self.host.exists(directory) and not self.host.readable(directory):
            raise ConsoleError('cannot read %s: run prodready-ctl as root' % directory)
        for path in self.host.glob(os.path.join(directory, '*.json')):
            try:
                data = json.loads(self.host.read(path))
            except PermissionError:
                raise ConsoleError('cannot read %s: run prodready-ctl as root' % path)
            except (OSError, ValueError) as exc:
                raise ConsoleError('cannot read %s: %s' % (path, exc))
            if isinstance(data, dict) and NAME_RE.match(str(data.get('job', ''))):
                jobs.append(data)
        return jobs

    def job_state(self, job):
        path = os.path.join(job.get('state_dir') or '/var/lib/prodready/backup', job['job'] + '.json')
        try:
            data = json.loads(self.host.read(path))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def backup_summary(self):
        try:
            jobs = self.backup_jobs()
        except ConsoleError as exc:
            return {'error': str(exc)}
        now = self.host.now()
        out = {}
        for job in jobs:
            state = self.job_state(job)
            success = float(state.get('last_success') or 0)
            failure = float(state.get('last_failure') or 0)
            out[job['job']] = {
                'last_success_age_seconds': round(now - success, 1) if success else None,
                'last_run_failed': failure > success,
                'last_error': state.get('last_error') if failure > success else None,
                'last_backup': state.get('last_backup'), 'count': state.get('count'),
            }
        return out

    def backup_summary_lines(self):
        summary = self.backup_summary()
        if 'error' in summary:
            return ['BACKUPS: %s' % summary['error']]
        if not summary:
            return ['BACKUPS: none configured']
        lines = ['BACKUPS']
        for job, info in sorted(summary.items()):
            age = info['last_success_age_seconds']
            text = '  %-16s last success %s' % (job, human_seconds(age) + ' ago' if age is not None else 'never')
            if info['last_run_failed']:
                text += '; LAST RUN FAILED: %s' % (info['last_error'] or 'see journalctl')[:160]
            lines.append(text)
        return lines

    def _job(self, name):
        jobs = dict((j['job'], j) for j in self.backup_jobs())
        if not jobs:
            raise ConsoleError('no backup job is configured here (%s is empty or missing)'
                               % self.config['backup_config_dir'])
        if name not in jobs:
            raise ConsoleError('no backup job %r; jobs here: %s' % (name, ', '.join(sorted(jobs))))
        return jobs[name]

    def _run_unit(self, unit, timeout=None):
        """Start a oneshot unit and wait for it (systemctl start blocks); return (ok, message)."""
        rc, out, err = self.host.run(['systemctl', 'start', '--', unit], timeout=timeout)
        _rc, last, _err = self.host.run(['journalctl', '--no-pager', '-o', 'cat', '-n', '3', '-u', unit], timeout=30)
        return rc == 0, (last.strip() or (err or out).strip())[-600:]

    def cmd_backup(self, job='daily', as_json=False):
        config = self._job(job)
        unit = 'prodready-backup@%s.service' % job
        if not as_json:
            self.say('Running %s (the same unit the timer starts)...' % unit)
        ok, message = self._run_unit(unit)
        state = self.job_state(config)
        data = {'job': job, 'ok': ok, 'unit': unit, 'last_backup': state.get('last_backup'),
                'size_bytes': state.get('last_size'), 'message': message}
        if as_json:
            return data, EXIT_OK if ok else EXIT_PROBLEM
        if ok:
            self.say('  backup written: %s (%s)' % (state.get('last_backup'), human_bytes(state.get('last_size'))))
        else:
            self.say('  BACKUP FAILED: %s' % (state.get('last_error') or message))
        return None, EXIT_OK if ok else EXIT_PROBLEM

    def cmd_backups(self, job=None, as_json=False):
        jobs = [self._job(job)] if job else self.backup_jobs()
        listing = []
        for config in jobs:
            prefix = config.get('prefix') or config['job'] + '-'
            dest = config.get('dest') or '/var/backups/prodready'
            items = [] if not self.host.exists(dest) else self.host.list_backups(dest, prefix)
            for item in items:
                listing.append({'job': config['job'], 'name': item['name'], 'time': item['time'], 'size': item['size'],
                                'verified': item.get('verified', False), 'verified_at': item.get('verified_at'),
                                'path': item['archive']})
        if as_json:
            return {'backups': listing}, EXIT_OK
        if not listing:
            self.say('  no backups yet' if jobs else '  no backup job is configured here')
        for item in listing:
            self.say('  %-8s %-44s %-22s %9s  %s' % (item['job'], item['name'], item['time'], human_bytes(item['size']),
                                                     'verified' if item['verified'] else ''))
        return None, EXIT_OK

    def cmd_verify(self, job='daily', as_json=False):
        config = self._job(job)
        unit = 'prodready-backup-verify@%s.service' % job
        if not as_json:
            self.say('Verifying the newest %s backup with %s...' % (job, unit))
        ok, message = self._run_unit(unit)
        state = self.job_state(config)
        deep = bool(config.get('identity_file'))
        data = {'job': job, 'ok': ok, 'mode': 'deep' if deep else 'shallow', 'message': message}
        if as_json:
            return data, EXIT_OK if ok else EXIT_PROBLEM
        if ok:
            note = '' if deep else ' (checksums only: no key on this host)'
            self.say('  %s verification passed%s' % (data['mode'], note))
        else:
            self.say('  VERIFICATION FAILED: %s' % (state.get('last_error') or message))
        return None, EXIT_OK if ok else EXIT_PROBLEM

    # -- metrics
    def metrics_data(self):
        samples = []
        for path in self.host.glob(os.path.join(self.config['textfile_dir'], 'prodready_*.prom')):
            try:
                for sample in parse_textfile(self.host.read(path)):
                    sample['file'] = os.path.basename(path)
                    samples.append(sample)
            except OSError:
                continue
        now = self.host.now()
        summary = {'backups': {}, 'filesystems': [], 'unit_failures': {}, 'writers': {}}
        for s in samples:
            name, labels, value = s['name'], s['labels'], s['value']
            if name.startswith('prodready_backup_') and 'job' in labels:
                job = summary['backups'].setdefault(labels['job'], {})
                key = name[len('prodready_backup_'):]
                if key.endswith('_timestamp_seconds'):
                    job[key[:-len('_timestamp_seconds')] + '_age_seconds'] = round(now - value, 1) if value else None
                else:
                    job[key] = value
            elif name == 'prodready_filesystem_used_ratio':
                summary['filesystems'].append({'path': labels.get('path'), 'mountpoint': labels.get('mountpoint'),
                                               'used_percent': round(value * 100, 1)})
            elif name == 'prodready_unit_failures_total':
                summary['unit_failures'][labels.get('unit', '?')] = int(value)
            elif name.endswith('_last_run_timestamp_seconds'):
                writer = name[len('prodready_'):-len('_last_run_timestamp_seconds')]
                summary['writers'][writer] = round(now - value, 1)
        return samples, summary

    def cmd_metrics(self, as_json=False):
        samples, summary = self.metrics_data()
        if as_json:
            return {'summary': summary, 'samples': samples}, EXIT_OK
        if not samples:
            self.say('  no prodready_*.prom files in %s' % self.config['textfile_dir'])
            return None, EXIT_OK
        self.say('PERFORMANCE AND HEALTH METRICS (%d samples from %s)' % (len(samples), self.config['textfile_dir']))
        for row in self.status_data():
            if row['load'] == 'loaded':
                self.say('  %-16s mem %s  cpu %s  restarts %s' % (
                    row['name'], human_bytes(row['memory_bytes']), human_seconds(row['cpu_seconds']), row['restarts']))
        for fs in summary['filesystems']:
            self.say('  disk %-20s %5.1f%% used (%s)' % (fs['path'], fs['used_percent'], fs['mountpoint']))
        for job, info in sorted(summary['backups'].items()):
            self.say('  backup %-14s last success %s ago, %s backups, last size %s, restore test %s' % (
                job, human_seconds(info.get('last_success_age_seconds')), int(info.get('count', 0)),
                human_bytes(info.get('last_size_bytes')),
                human_seconds(info['last_verified_restore_age_seconds']) + ' ago'
                if info.get('last_verified_restore_age_seconds') else 'never'))
        for unit, total in sorted(summary['unit_failures'].items()):
            self.say('  failures %-18s %d' % (unit, total))
        for writer, age in sorted(summary['writers'].items()):
            self.say('  writer %-16s ran %s ago' % (writer, human_seconds(age)))
        return None, EXIT_OK

    # -- troubleshooting
    def troubleshoot_data(self, names=()):
        hints = []

        def hint(level, subject, text, evidence=None):
            hints.append({'level': level, 'subject': subject, 'hint': text, 'evidence': evidence or []})
        rows = self.status_data(names)
        health = dict((r['name'], r) for r in self.health_data(names))
        for row in rows:
            svc = self.pick([row['name']])[0]
            if row['load'] != 'loaded':
                hint('error', row['name'], '%s is not installed: run the hardening role (site.yml --tags '
                                           'hardening_units)' % row['unit'])
                continue
            if row['active'] != 'active':
                why = RESULT_HINTS.get(row['result'], 'it is %s' % row['active']).format(
                    memory_max=human_bytes(row['memory_max_bytes']), unit=row['unit'], status=row['exit_status'])
                if row['result'] == 'exit-code' and row['exit_status'] in EXIT_STATUS_HINTS:
                    why += ': ' + EXIT_STATUS_HINTS[row['exit_status']].format(name=row['name'])
                hint('error', row['name'], '%s is %s (%s); %s' % (row['unit'], row['active'], row['result'], why),
                     self._evidence(svc))
                continue
            if row['restarts']:
                hint('warning', row['name'], 'systemd restarted %s %d time(s) since it was last started: '
                                             'prodready-ctl logs %s' % (row['unit'], row['restarts'], row['name']))
            if row['memory_bytes'] and row['memory_max_bytes'] and row['memory_bytes'] > 0.9 * row['memory_max_bytes']:
                hint('warning', row['name'], 'memory %s is above 90%% of MemoryMax %s: the next spike is an OOM kill'
                     % (human_bytes(row['memory_bytes']), human_bytes(row['memory_max_bytes'])))
            check = health.get(row['name'])
            if check and not check['ok']:
                hint('error', row['name'], 'running but its health URL fails (%s): the app is up but cannot serve '
                                           '(database down? migration missing?)'
                     % ('HTTP %d' % check['status'] if check['status'] else check['error']), self._evidence(svc))
        if not names:
            self._host_hints(hint)
        return hints

    def _evidence(self, svc):
        files = self.log_files(svc)
        error_logs = [f for f in files if f.endswith('-error.log')]
        if error_logs:
            _rc, out, _err = self.host.run(['tail', '-n', '15'] + error_logs, timeout=30)
        else:
            _rc, out, _err = self.host.run(['journalctl', '--no-pager', '-o', 'short-iso', '-n', '15', '-u',
                                            svc['unit']], timeout=30)
        return out.splitlines()[-15:]

    def _host_hints(self, hint):
        rc, out, _err = self.host.run(['systemctl', '--failed', '--plain', '--no-legend', '--no-pager'], timeout=30)
        failed = [line.split()[0] for line in out.splitlines() if line.strip()] if rc == 0 else []
        managed = set(s['unit'] for s in self.services)
        others = [u for u in failed if u not in managed]
        if others:
            hint('warning', 'host', 'failed units: %s (systemctl status <unit>; systemctl reset-failed once fixed)'
                 % ', '.join(others))
        _samples, summary = self.metrics_data()
        for fs in summary['filesystems']:
            if fs['used_percent'] >= 85:
                hint('warning', 'disk', '%s is %.1f%% full: old logs (journalctl --vacuum-size), old backups '
                                        '(retention), core dumps' % (fs['mountpoint'] or fs['path'], fs['used_percent']))
        backups = self.backup_summary()
        for job, info in sorted(backups.items()) if 'error' not in backups else []:
            if info['last_run_failed']:
                hint('error', 'backup', 'the last %s backup failed: %s (journalctl -u prodready-backup@%s)'
                     % (job, info['last_error'] or 'unknown error', job))
            elif info['last_success_age_seconds'] is None or info['last_success_age_seconds'] > 26 * 3600:
                hint('warning', 'backup', 'no %s backup for more than 26 h: prodready-ctl backup --job %s'
                     % (job, job))
        rc, _out, err = self.host.run(['nft', 'list', 'table', 'inet', self.config['firewall_table']], timeout=30)
        if rc not in (0, 127) and 'Operation not permitted' not in err:
            hint('error', 'firewall', 'the nftables table %s is not loaded: every port is open (systemctl restart '
                                      'nftables, or site.yml --tags hardening_firewall)' % self.config['firewall_table'])

    def cmd_troubleshoot(self, names=(), as_json=False):
        hints = self.troubleshoot_data(names)
        status = EXIT_PROBLEM if any(h['level'] == 'error' for h in hints) else EXIT_OK
        if as_json:
            return {'hints': hints}, status
        if not hints:
            self.say('  nothing wrong found: services active and healthy, backups recent, firewall loaded')
        for h in hints:
            self.say('  [%s] %s: %s' % (h['level'].upper(), h['subject'], h['hint']))
            for line in h['evidence']:
                self.say('      | ' + line)
        return None, status

    # -- the menu
    MENU = (
        ('1', 'Status dashboard'),
        ('2', 'Start all services'),
        ('3', 'Stop all services'),
        ('4', 'Restart all services'),
        ('5', 'Graceful reload'),
        ('6', 'View logs (live)'),
        ('7', 'Health check'),
        ('8', 'Backup now'),
        ('9', 'List / verify backups'),
        ('10', 'Performance metrics'),
        ('11', 'Troubleshooting'),
        ('0', 'Exit'),
    )

    def ask(self, prompt):
        self.out.write(prompt)
        self.out.flush()
        line = self.stdin.readline()
        if not line:
            raise EOFError
        if not (hasattr(self.stdin, 'isatty') and self.stdin.isatty()):
            self.say(line.strip())  # piped input: show it, as a terminal would
        return line.strip()

    def confirm(self, question):
        return self.ask('%s [y/N]: ' % question).lower() in ('y', 'yes')

    def choose_service(self):
        if len(self.services) == 1:
            return self.services[0]['name']
        for index, svc in enumerate(self.services, 1):
            self.say('  [%d] %s' % (index, svc['name']))
        answer = self.ask('Service [1-%d]: ' % len(self.services))
        if answer.isdigit() and 1 <= int(answer) <= len(self.services):
            return self.services[int(answer) - 1]['name']
        self.say('  no such service: %s' % answer)
        return None

    def banner(self):
        title = 'prodready-ctl - %s' % self.host.hostname()
        self.say()
        self.say('=' * 62)
        self.say('  ' + title)
        self.say('=' * 62)
        try:
            rows = self.status_data()
        except ConsoleError as exc:
            rows = []
            self.say('  (status unavailable: %s)' % exc)
        self.say('  SERVICE STATUS')
        for row in rows:
            self.say('    ' + self.status_line(row))
        if not rows:
            self.say('    no services in services.json')
        self.say('  MAIN MENU')
        for key, label in self.MENU:
            self.say('    [%s] %s' % (key, label))

    def menu(self):
        """The interactive loop; reads choices from ``stdin`` (a pipe works too). Returns the exit status."""
        while True:
            self.banner()
            try:
                choice = self.ask('Select option [0-11]: ')
            except (EOFError, KeyboardInterrupt):
                self.say()
                return EXIT_OK
            if choice in ('0', 'q', 'quit', 'exit'):
                return EXIT_OK
            try:
                label = dict(self.MENU).get(choice)
                if label:
                    self.say('--- %s' % label)
                self.menu_action(choice)
            except EOFError:
                self.say()
                return EXIT_OK
            except KeyboardInterrupt:
                self.say('\n  interrupted')
            except ConsoleError as exc:
                self.say('  ERROR: %s' % exc)

    def menu_action(self, choice):
        names = [s['name'] for s in self.services]
        if choice == '1':
            self.cmd_status()
            self.cmd_health()
        elif choice == '2':
            self.cmd_unit_action('start')
        elif choice == '3':
            if self.confirm('Stop %s?' % ', '.join(names)):
                self.cmd_unit_action('stop')
            else:
                self.say('  nothing stopped')
        elif choice == '4':
            if self.confirm('Restart %s (a short interruption)?' % ', '.join(names)):
                self.cmd_unit_action('restart')
            else:
                self.say('  nothing restarted')
        elif choice == '5':
            self.cmd_unit_action('reload')
        elif choice == '6':
            name = self.choose_service()
            if name:
                self.cmd_logs(name, lines=20, follow=True)
        elif choice == '7':
            self.cmd_health()
        elif choice == '8':
            self.cmd_backup('daily')
        elif choice == '9':
            self.cmd_backups()
            if self.backup_jobs() and self.confirm('Verify the newest daily backup now?'):
                self.cmd_verify('daily')
        elif choice == '10':
            self.cmd_metrics()
        elif choice == '11':
            self.cmd_troubleshoot()
        else:
            self.say('  invalid option: %r (choose 0-11)' % choice)


# ---------------------------------------------------------------------------
# Command line


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--json', action='store_true', help='machine-readable output')
    parser = argparse.ArgumentParser(prog='prodready-ctl', description='Operator console of a prodready.vps host '
                                     '(no arguments: the interactive menu).')
    parser.add_argument('--config', default=CONFIG_FILE, help='services file (default %(default)s)')
    sub = parser.add_subparsers(dest='command')
    sub.add_parser('menu', help='the interactive menu (the default)')
    for name, text in (('status', 'state, memory, CPU, uptime and restarts of the services'),
                       ('health', 'GET every health URL'), ('troubleshoot', 'what is wrong and what to do')):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument('services', nargs='*', metavar='SERVICE')
    for name in ('start', 'stop', 'restart', 'reload'):
        p = sub.add_parser(name, parents=[common], help='%s services (all when none is named)' % name)
        p.add_argument('services', nargs='*', metavar='SERVICE')
    p = sub.add_parser('logs', parents=[common], help='the last lines of a service log, or follow it')
    p.add_argument('service')
    p.add_argument('-n', '--lines', type=int, default=50)
    p.add_argument('-f', '--follow', action='store_true')
    p.add_argument('--journal', action='store_true', help='the journal instead of /var/log/<service>/')
    for name, text in (('backup', 'run a backup job now'), ('verify', 'restore-test the newest backup now')):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument('--job', default='daily')
    p = sub.add_parser('backups', parents=[common], help='list the backups on this host')
    p.add_argument('--job')
    sub.add_parser('metrics', parents=[common], help='the prodready_* textfile metrics')
    sub.add_parser('check', help='check the services file and exit (used by Ansible before installing it)')
    return parser


def dispatch(console, args):
    as_json = getattr(args, 'json', False)
    command = args.command
    if command in ('status', 'health', 'troubleshoot'):
        return getattr(console, 'cmd_' + command)(args.services, as_json=as_json)
    if command in ('start', 'stop', 'restart', 'reload'):
        return console.cmd_unit_action(command, args.services, as_json=as_json)
    if command == 'logs':
        return console.cmd_logs(args.service, lines=args.lines, follow=args.follow, journal=args.journal,
                                as_json=as_json)
    if command in ('backup', 'verify'):
        return getattr(console, 'cmd_' + command)(args.job, as_json=as_json)
    if command == 'backups':
        return console.cmd_backups(args.job, as_json=as_json)
    if command == 'metrics':
        return console.cmd_metrics(as_json=as_json)
    raise ConsoleError('unknown command %r' % command)  # pragma: no cover (argparse refuses first)


def main(argv=None, host=None, out=None, stdin=None):
    host = host or Host()
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        console = Console(load_config(host, args.config), host=host, out=out, stdin=stdin)
        if args.command == 'check':
            out.write('%s: %d service(s)\n' % (args.config, len(console.services)))
            return EXIT_OK
        if args.command in (None, 'menu'):
            return console.menu()
        data, status = dispatch(console, args)
    except ConsoleError as exc:
        if getattr(args, 'json', False):
            out.write(json.dumps({'error': str(exc)}) + '\n')
        else:
            sys.stderr.write('prodready-ctl: %s\n' % exc)
        return EXIT_USAGE
    if data is not None:
        out.write(json.dumps(data, indent=2, sort_keys=True) + '\n')
    return status


if __name__ == '__main__':
    raise SystemExit(main())
