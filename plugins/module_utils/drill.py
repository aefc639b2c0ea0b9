# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Disaster-recovery drill: chaos faults with their verdicts, and the drill report (RTO, RPO).

Used by ``playbooks/drill.yml`` through two modules: ``prodready.vps.drill_chaos``
(on the host: kill -9, SIGSTOP, a full scratch filesystem, each judged
``recovered`` / ``alerted`` / ``FAILED`` with its evidence) and
``prodready.vps.drill_report`` (on the controller: the JSON report). The
clock, the process table, systemd, HTTP and the filesystem are passed in, so
the logic is tested without any of them.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import calendar
import errno
import json
import os
import re
import signal
import time

from ansible_collections.prodready.vps.plugins.module_utils.diskguard import write_atomic

RECOVERED = 'recovered'
ALERTED = 'alerted'
FAILED = 'FAILED'
SKIPPED = 'skipped'
REPORT_FORMAT = 'prodready.vps/drill-report'
# Added to the unit's own restart (and watchdog) times to get the default bound:
# room for a loaded machine, not a speed target.
DEFAULT_SLACK = 20.0
FILL_CHUNK = 1024 * 1024

_SPAN_UNITS = (
    ('usec', 1e-6), ('us', 1e-6), ('msec', 1e-3), ('ms', 1e-3), ('seconds', 1.0), ('second', 1.0),
    ('sec', 1.0), ('s', 1.0), ('minutes', 60.0), ('minute', 60.0), ('min', 60.0), ('m', 60.0),
    ('hours', 3600.0), ('hour', 3600.0), ('hr', 3600.0), ('h', 3600.0), ('days', 86400.0), ('day', 86400.0),
    ('d', 86400.0),
)
_SPAN_RE = re.compile(r'\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)')


class DrillError(Exception):
    """Bad input (a message naming the problem)."""


def parse_timespan(text):
    """Seconds of a systemd time span as ``systemctl show`` prints it (``1min 30s``, ``100ms``, ``0``).

    ``infinity`` and an empty value give None.
    """
    text = (text or '').strip()
    if not text or text == 'infinity':
        return None
    total = 0.0
    pos = 0
    while pos < len(text):
        match = _SPAN_RE.match(text, pos)
        if not match or match.end() == pos:
            raise DrillError('cannot read the time span %r' % text)
        number, unit = float(match.group(1)), match.group(2)
        if not unit:
            factor = 1e-6 if text.isdigit() else 1.0  # a bare number from systemd is microseconds
        else:
            factor = dict(_SPAN_UNITS).get(unit)
            if factor is None:
                raise DrillError('unknown unit %r in the time span %r' % (unit, text))
        total += number * factor
        pos = match.end()
    return total


def parse_time(text):
    """Unix time of an ISO 8601 UTC time as the backup manifest writes it (``2026-11-22T02:00:00Z``)."""
    if not isinstance(text, str) or not text:
        raise DrillError('no creation time (the manifest has no "created")')
    value = text.strip()
    for fmt in ('%Y-%m-%dT%H:%M:%SZ', '%Y-%m-%dT%H:%M:%S.%fZ', '%Y-%m-%dT%H%M%SZ'):
        try:
            return float(calendar.timegm(time.strptime(value, fmt)))
        except ValueError:
            continue
    raise DrillError('cannot read the time %r (expected UTC like 2026-11-22T02:00:00Z)' % text)


def default_bound(fault, props, slack=DEFAULT_SLACK):
    """Seconds a fault may take to recover, from the unit's own settings plus ``slack``.

    kill: RestartSec; hang: WatchdogSec (the hang is noticed) + TimeoutAbortSec
    (SIGABRT then SIGKILL) + RestartSec.
    """
    restart = parse_timespan(props.get('RestartUSec')) or 0.0
    if fault == 'kill':
        return restart + slack
    watchdog = parse_timespan(props.get('WatchdogUSec')) or 0.0
    abort = parse_timespan(props.get('TimeoutAbortUSec'))
    if abort is None:
        abort = parse_timespan(props.get('TimeoutStopUSec')) or 0.0
    return watchdog + abort + restart + slack


def _pid(props):
    try:
        return int(props.get('MainPID') or 0)
    except ValueError:
        return 0


def _restarts(props):
    try:
        return int(props.get('NRestarts') or 0)
    except ValueError:
        return 0


def process_fault(fault, unit, health_url, show, send_signal, probe, clock=time.monotonic, sleep=time.sleep,
                  bound=None, interval=0.2, journal=None):
    """Inflict ``fault`` (``kill``: SIGKILL, ``hang``: SIGSTOP) on ``unit``'s main process and judge the recovery.

    :param show: ``show(unit)`` -> dict of ``systemctl show`` properties (MainPID, ActiveState, NRestarts,
        RestartUSec, WatchdogUSec, TimeoutAbortUSec, Result).
    :param send_signal: ``send_signal(pid, signum)``; raises OSError when the process is gone.
    :param probe: ``probe(url)`` -> HTTP status (int) or None when nothing answered.
    :param journal: optional ``journal(unit)`` -> recent journal text of the unit (evidence only).
    :returns: dict with ``fault``, ``unit``, ``verdict`` (recovered or FAILED), ``seconds`` (fault to healthy),
        ``restart_seconds`` (fault to a new main process), ``old_pid``, ``new_pid``, ``restarts_before``,
        ``restarts_after``, ``bound``, ``evidence`` (a sentence).
    """
    if fault not in ('kill', 'hang'):
        raise DrillError('unknown process fault %r (kill or hang)' % fault)
    before = show(unit)
    result = {'fault': fault, 'unit': unit, 'health_url': health_url, 'verdict': FAILED, 'seconds': None,
              'restart_seconds': None, 'old_pid': _pid(before), 'new_pid': None,
              'restarts_before': _restarts(before), 'restarts_after': None}
    if bound is None:
        bound = default_bound(fault, before)
    result['bound'] = round(float(bound), 3)
    old = result['old_pid']
    if before.get('ActiveState') != 'active' or old <= 0:
        result['evidence'] = '%s was not running before the fault (%s, main PID %s): nothing to test' % (
            unit, before.get('ActiveState') or 'unknown', old)
        return result
    if fault == 'hang' and not parse_timespan(before.get('WatchdogUSec')):
        result['note'] = '%s has no WatchdogSec=: nothing notices a hang' % unit
    signum = signal.SIGKILL if fault == 'kill' else signal.SIGSTOP
    start = clock()
    try:
        send_signal(old, signum)
    except OSError as exc:
        result['evidence'] = 'could not signal PID %d: %s' % (old, exc)
        return result
    restarted = None
    healthy = None
    new_pid = 0
    state = before
    while True:
        elapsed = clock() - start
        state = show(unit)
        pid = _pid(state)
        if restarted is None and state.get('ActiveState') == 'active' and pid not in (0, old):
            restarted = elapsed
            new_pid = pid
            result['new_pid'] = pid
        if restarted is not None and probe(health_url) == 200:
            healthy = round(clock() - start, 3)
            result['seconds'] = healthy
            break
        if elapsed > bound:
            break
        sleep(interval)
    result['restarts_after'] = _restarts(state)
    if restarted is not None:
        result['restart_seconds'] = round(restarted, 3)
    if healthy is not None:
        result['verdict'] = RECOVERED
        how = 'systemd restarted it' if fault == 'kill' else 'the watchdog killed the hung process and systemd restarted it'
        result['evidence'] = '%s: PID %d -> %d, %s; %s answered 200 after %.1f s (bound %.0f s)' % (
            'SIGKILL' if fault == 'kill' else 'SIGSTOP', old, new_pid, how, health_url, healthy, bound)
    elif restarted is not None:
        result['evidence'] = 'a new process %d started after %.1f s but %s did not answer 200 within %.0f s' % (
            new_pid, restarted, health_url, bound)
    else:
        result['evidence'] = 'no new main process within %.0f s (state %s, main PID %s)' % (
            bound, state.get('ActiveState'), state.get('MainPID'))
        if fault == 'hang':
            # Never leave the service frozen: let the old process run again.
            try:
                send_signal(old, signal.SIGCONT)
                result['evidence'] += '; sent SIGCONT to PID %d' % old
            except OSError:
                pass
    if journal is not None:
        text = journal(unit) or ''
        result['watchdog_in_journal'] = 'watchdog' in text.lower()
    return result


class ScratchFS:
    """The real operations of the disk-fill fault (a size-limited tmpfs the drill creates and removes)."""

    def __init__(self, run_command):
        self.run_command = run_command

    def is_mount(self, path):
        return os.path.ismount(path)

    def device(self, path):
        return os.stat(path).st_dev

    def mkdir(self, path):
        os.makedirs(path, 0o700)

    def rmdir(self, path):
        os.rmdir(path)

    def listdir(self, path):
        return os.listdir(path)

    def exists(self, path):
        return os.path.lexists(path)

    def mount(self, path, size_mb):
        rc, _out, err = self.run_command(['mount', '-t', 'tmpfs', '-o', 'size=%dm,mode=0700,nodev,nosuid,noexec' % size_mb,
                                          'prodready-drill', path])
        if rc != 0:
            raise OSError(errno.EIO, 'mount -t tmpfs on %s failed: %s' % (path, (err or '').strip()))

    def umount(self, path):
        rc, _out, err = self.run_command(['umount', path])
        if rc != 0:
            raise OSError(errno.EBUSY, 'umount %s failed: %s' % (path, (err or '').strip()))

    def fill(self, path):
        """Write zeros into ``path`` until the filesystem is full; return the bytes written."""
        written = 0
        chunk = b'\0' * FILL_CHUNK
        # Unbuffered: a buffered file would raise ENOSPC again when it is closed.
        with open(path, 'wb', buffering=0) as handle:
            while True:
                try:
                    count = handle.write(chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
                if not count:
                    break
                written += count
        return written

    def remove(self, path):
        if os.path.lexists(path):
            os.unlink(path)


def disk_fill(path, size_mb, threshold, fs, measure, probe=None, health_url=None, clock=time.monotonic):
    """Fill a scratch tmpfs at ``path`` and judge whether the disk guard detects it.

    :param fs: a ScratchFS (or a fake with the same methods).
    :param measure: ``measure(paths, threshold)`` -> ``(results, warnings)`` as ``diskguard.check``.
    :returns: dict with ``fault`` (disk_fill), ``verdict`` (alerted or FAILED), ``used_ratio`` during the fill,
        ``warning`` (the disk guard's line), ``cleared`` (below the threshold once the file is gone),
        ``cleaned_up`` (unmounted and removed), ``evidence``.
    """
    if not isinstance(path, str) or not path.startswith('/') or not path.strip('/'):
        raise DrillError('the scratch path must be an absolute path other than /, got %r' % (path,))
    path = '/' + os.path.normpath(path).lstrip('/')
    if not 1 <= int(size_mb) <= 1024:
        raise DrillError('the scratch size must be 1-1024 MiB, got %r' % (size_mb,))
    if not 1 <= int(threshold) <= 100:
        raise DrillError('the threshold must be 1-100 %%, got %r' % (threshold,))
    result = {'fault': 'disk_fill', 'path': path, 'size_mb': int(size_mb), 'threshold': int(threshold),
              'verdict': FAILED, 'used_ratio': None, 'warning': None, 'cleared': False, 'cleaned_up': False,
              'bytes_written': 0}
    if fs.exists(path):
        if fs.is_mount(path):
            raise DrillError('%s is already a mount point; the drill only fills a filesystem it creates' % path)
        if fs.listdir(path):
            raise DrillError('%s exists and is not empty; give an unused path (drill_scratch_path)' % path)
        created_dir = False
    else:
        fs.mkdir(path)
        created_dir = True
    mounted = False
    errors = []
    start = clock()
    try:
        fs.mount(path, int(size_mb))
        mounted = True
        parent = os.path.dirname(path) or '/'
        if not fs.is_mount(path) or fs.device(path) == fs.device(parent):
            raise OSError(errno.EINVAL, '%s is not a separate filesystem after mounting; not filling it' % path)
        filler = os.path.join(path, 'fill')
        result['bytes_written'] = fs.fill(filler)
        results, warnings = measure([path], int(threshold))
        use = (results.get(path) or (None, None))[1]
        if use is not None:
            result['used_ratio'] = round(use['used_ratio'], 4)
        mine = [w for w in warnings if path in w and 'disk of' in w]
        result['warning'] = mine[0] if mine else None
        result['detect_seconds'] = round(clock() - start, 3)
        if probe is not None and health_url:
            result['service_status_while_full'] = probe(health_url)
        fs.remove(filler)
        results, warnings = measure([path], int(threshold))
        after = (results.get(path) or (None, None))[1]
        result['used_ratio_after'] = round(after['used_ratio'], 4) if after else None
        result['cleared'] = bool(after) and after['used_ratio'] * 100 < int(threshold)
    except OSError as exc:
        errors.append(str(exc))
    finally:
        try:
            if mounted:
                fs.umount(path)
            if created_dir:
                fs.rmdir(path)
            result['cleaned_up'] = not (fs.exists(path) and fs.is_mount(path)) and (not created_dir or not fs.exists(path))
        except OSError as exc:
            errors.append(str(exc))
    if errors:
        result['error'] = '; '.join(errors)
    if result['warning'] and result['cleared'] and result['cleaned_up'] and not errors:
        result['verdict'] = ALERTED
        result['evidence'] = ('disk guard at %.1f%% used (threshold %d%%): "%s"; below the threshold again once the '
                              'file was removed; scratch filesystem unmounted' % (
                                  result['used_ratio'] * 100, int(threshold), result['warning']))
    else:
        missing = []
        if not result['warning']:
            missing.append('the disk guard gave no warning (used %s)' % result['used_ratio'])
        if not result['cleared']:
            missing.append('use did not fall below the threshold after the cleanup')
        if not result['cleaned_up']:
            missing.append('the scratch filesystem was not removed')
        result['evidence'] = '; '.join(missing + errors)
    return result


def _number(value):
    if value is None or value == '':
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DrillError('expected a number, got %r' % (value,))


def database_rows(restored_rows, expected_rows=None, expected_from=None):
    """Per-database row records from ``{db: rows text}`` maps (the psql output of drill_rows_query).

    A database without an expected value is recorded, not compared (``expected_rows`` None).
    """
    expected_rows = expected_rows or {}
    records = []
    for name in sorted(restored_rows or {}):
        expected = expected_rows.get(name)
        records.append({'name': name, 'restored_rows': restored_rows[name], 'expected_rows': expected,
                        'expected_from': expected_from if expected is not None else None,
                        'equal': None if expected is None else restored_rows[name] == expected})
    unknown = sorted(set(expected_rows) - set(restored_rows or {}))
    if unknown:
        raise DrillError('expected rows given for database(s) that were not restored: %s' % ', '.join(unknown))
    return records


def restore_verdict(restore):
    """Verdict of the restore part: healthy, and every database's rows as expected (where known)."""
    if restore.get('error'):
        return FAILED, 'the restore failed: %s' % restore['error']
    status = restore.get('health_status')
    if str(status) != '200':
        return FAILED, 'the service did not answer healthy (status %s)' % status
    databases = restore.get('databases') or []
    problems = ['%s: restored %r, expected %r (%s)'
                % (db['name'], db['restored_rows'], db['expected_rows'], db.get('expected_from') or 'given')
                for db in databases if db.get('equal') is False]
    if problems:
        return FAILED, 'rows differ: ' + '; '.join(problems)
    compared = [db['name'] for db in databases if db.get('equal')]
    unchecked = [db['name'] for db in databases if db.get('equal') is None]
    text = 'service healthy on the restored data'
    if compared:
        source = databases[0].get('expected_from') or 'expected rows'
        text += '; rows equal to the %s for %s' % (source, ', '.join(compared))
    if unchecked:
        text += '; rows recorded, not compared, for %s' % ', '.join(unchecked)
    return RECOVERED, text


def build_report(source, host, started, healthy_at, created, restore=None, chaos=None, now=None):
    """The drill report (a JSON-ready dict).

    ``started`` and ``healthy_at``: Unix times (controller clock) when the drill started and the restored service
    first answered healthy; ``created``: the backup's creation time from its manifest (ISO UTC).
    RTO = healthy_at - started; RPO = healthy_at - created (the age of the restored data when it came back).
    """
    now = time.time() if now is None else now
    report = {'format': REPORT_FORMAT, 'version': 1, 'source': source, 'host': host,
              'generated': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(now)), 'checks': []}
    if restore is not None:
        restore = dict(restore)
        if 'databases' not in restore and 'restored_rows' in restore:
            restore['databases'] = database_rows(restore.pop('restored_rows'), restore.pop('expected_rows', None),
                                                 restore.pop('expected_from', None))
        started_f = _number(started)
        healthy_f = _number(healthy_at)
        created_f = parse_time(created) if created else None
        report['started'] = started_f
        report['healthy_at'] = healthy_f
        report['backup_created'] = created
        report['rto_seconds'] = round(healthy_f - started_f, 1) if healthy_f is not None and started_f is not None else None
        report['rpo_seconds'] = round(healthy_f - created_f, 1) if healthy_f is not None and created_f is not None else None
        if report['rto_seconds'] is not None and report['rto_seconds'] < 0:
            raise DrillError('the service was healthy before the drill started (%s < %s)' % (healthy_at, started))
        verdict, evidence = restore_verdict(restore)
        if verdict != FAILED and report['rto_seconds'] is None:
            verdict, evidence = FAILED, 'no time of the first healthy answer'
        report['restore'] = restore
        report['checks'].append({'name': 'restore', 'verdict': verdict, 'evidence': evidence})
    for item in chaos or []:
        verdict = item.get('verdict')
        if verdict not in (RECOVERED, ALERTED, FAILED, SKIPPED):
            raise DrillError('unknown verdict %r of the chaos check %r' % (verdict, item.get('fault')))
        report['checks'].append({'name': 'chaos_%s' % item.get('fault'), 'verdict': verdict,
                                 'evidence': item.get('evidence', '')})
    report['chaos'] = list(chaos or [])
    report['failed'] = [c['name'] for c in report['checks'] if c['verdict'] == FAILED]
    return report


def summary_lines(report):
    """Human-readable lines for the play output."""
    lines = ['Disaster-recovery drill of %s on %s' % (report.get('source'), report.get('host'))]
    if 'rto_seconds' in report:
        rto = report['rto_seconds']
        rpo = report['rpo_seconds']
        lines.append('RTO %s (drill start to healthy), RPO %s (age of the restored data, backup of %s)' % (
            '%.1f s' % rto if rto is not None else 'unknown', '%.1f s' % rpo if rpo is not None else 'unknown',
            report.get('backup_created')))
    for check in report['checks']:
        lines.append('%-9s %s: %s' % (check['verdict'], check['name'], check['evidence']))
    return lines


def report_name(report, now=None):
    now = time.time() if now is None else now
    safe = re.sub(r'[^A-Za-z0-9_.-]', '_', '%s' % report.get('host'))
    return 'drill-%s-%s.json' % (safe, time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now)))


def write_report(directory, report, now=None):
    """Write the report atomically into ``directory`` (created 0700) and as ``latest.json``; return its path."""
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o700)
    text = json.dumps(report, indent=2, sort_keys=True) + '\n'
    name = report_name(report, now)
    for target in (name, 'latest.json'):
        write_atomic(directory, target, text, mode=0o600)
    return os.path.join(directory, name)
