# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The drill's logic with a fake clock, a fake systemd and a fake scratch filesystem."""

import errno
import json
import os
import signal

import pytest

from ansible_collections.prodready.vps.plugins.module_utils import diskguard
from ansible_collections.prodready.vps.plugins.module_utils import drill


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class FakeUnit:
    """A systemd unit whose main process is replaced ``restart_after`` seconds after a kill (None: never)."""

    def __init__(self, clock, restart_after=2.0, healthy_after=0.5, watchdog='10s', pid=812):
        self.clock = clock
        self.restart_after = restart_after
        self.healthy_after = healthy_after
        self.pid = pid
        self.restarts = 0
        self.faulted_at = None
        self.restarted_at = None
        self.signals = []
        self.watchdog = watchdog

    def show(self, unit):
        if self.faulted_at is not None and self.restarted_at is None and self.restart_after is not None \
                and self.clock() - self.faulted_at >= self.restart_after:
            self.restarted_at = self.clock()
            self.pid += 33
            self.restarts += 1
        return {'MainPID': str(self.pid), 'ActiveState': 'active', 'NRestarts': str(self.restarts),
                'RestartUSec': '1s', 'WatchdogUSec': self.watchdog, 'TimeoutAbortUSec': '5s'}

    def signal(self, pid, signum):
        self.signals.append((pid, signum))
        if signum in (signal.SIGKILL, signal.SIGSTOP) and self.faulted_at is None:
            self.faulted_at = self.clock()

    def probe(self, url):
        if self.faulted_at is None:
            return 200
        if self.restarted_at is not None and self.clock() - self.restarted_at >= self.healthy_after:
            return 200
        return None


def run_fault(fault, unit, clock, **kwargs):
    return drill.process_fault(fault, 'api.service', 'http://127.0.0.1:8000/health', unit.show, unit.signal,
                               unit.probe, clock=clock, sleep=clock.sleep, **kwargs)


@pytest.mark.parametrize('text, seconds', [('1s', 1.0), ('100ms', 0.1), ('1min 30s', 90.0), ('0', 0.0),
                                           ('2h', 7200.0), ('500000', 0.5), ('1.5s', 1.5)])
def test_parse_timespan(text, seconds):
    assert drill.parse_timespan(text) == pytest.approx(seconds)


def test_parse_timespan_infinity_and_errors():
    assert drill.parse_timespan('infinity') is None and drill.parse_timespan('') is None
    with pytest.raises(drill.DrillError, match='unknown unit'):
        drill.parse_timespan('3 fortnights')


def test_parse_time_of_a_manifest():
    assert drill.parse_time('1970-01-02T00:00:00Z') == 86400.0
    with pytest.raises(drill.DrillError, match='cannot read the time'):
        drill.parse_time('yesterday')
    with pytest.raises(drill.DrillError, match='no creation time'):
        drill.parse_time(None)


def test_default_bounds_come_from_the_unit():
    props = {'RestartUSec': '1s', 'WatchdogUSec': '10s', 'TimeoutAbortUSec': '5s'}
    assert drill.default_bound('kill', props) == 21.0
    assert drill.default_bound('hang', props) == 36.0
    assert drill.default_bound('hang', {'RestartUSec': '2s', 'WatchdogUSec': '0', 'TimeoutStopUSec': '35s'}) == 57.0


def test_kill_recovered_with_new_pid_and_timings():
    clock = FakeClock()
    unit = FakeUnit(clock, restart_after=2.0, healthy_after=0.6)
    result = run_fault('kill', unit, clock)
    assert result['verdict'] == drill.RECOVERED
    assert unit.signals == [(812, signal.SIGKILL)]
    assert result['old_pid'] == 812 and result['new_pid'] == 845
    assert result['restart_seconds'] == pytest.approx(2.0, abs=0.21)
    assert result['seconds'] == pytest.approx(2.6, abs=0.21)
    assert result['bound'] == 21.0 and result['restarts_after'] == 1
    assert 'PID 812 -> 845' in result['evidence']


def test_kill_not_restarted_is_failed_after_the_bound():
    clock = FakeClock()
    unit = FakeUnit(clock, restart_after=None)
    result = run_fault('kill', unit, clock, bound=5)
    assert result['verdict'] == drill.FAILED and result['new_pid'] is None
    assert 'no new main process within 5 s' in result['evidence']
    assert clock.now - 100.0 == pytest.approx(5.2, abs=0.21)


def test_restarted_but_never_healthy_is_failed():
    clock = FakeClock()
    unit = FakeUnit(clock, restart_after=1.0, healthy_after=100)
    result = run_fault('kill', unit, clock, bound=5)
    assert result['verdict'] == drill.FAILED and result['new_pid'] == 845
    assert 'did not answer 200' in result['evidence']


def test_hang_not_caught_gets_sigcont_and_fails():
    clock = FakeClock()
    unit = FakeUnit(clock, restart_after=None, watchdog='0')
    result = run_fault('hang', unit, clock, bound=3)
    assert result['verdict'] == drill.FAILED
    assert unit.signals == [(812, signal.SIGSTOP), (812, signal.SIGCONT)]
    assert 'no WatchdogSec=' in result['note'] and 'sent SIGCONT' in result['evidence']


def test_hang_recovered_by_the_watchdog_with_journal_evidence():
    clock = FakeClock()
    unit = FakeUnit(clock, restart_after=16.0)
    result = run_fault('hang', unit, clock, journal=lambda u: 'api.service: Watchdog timeout (limit 10s)!')
    assert result['verdict'] == drill.RECOVERED and result['watchdog_in_journal'] is True
    assert result['bound'] == 36.0 and result['seconds'] == pytest.approx(16.6, abs=0.3)
    assert 'watchdog' in result['evidence']


def test_fault_on_a_stopped_service_is_failed_without_signal():
    clock = FakeClock()
    unit = FakeUnit(clock)
    unit.pid = 0
    result = run_fault('kill', unit, clock)
    assert result['verdict'] == drill.FAILED and unit.signals == []
    assert 'was not running' in result['evidence']


def test_unknown_fault():
    with pytest.raises(drill.DrillError, match='unknown process fault'):
        drill.process_fault('melt', 'a', 'u', None, None, None)


class FakeFS:
    """A scratch filesystem of ``size`` bytes; records every operation."""

    def __init__(self, size=16 * 1024 * 1024, umount_fails=False):
        self.size = size
        self.dirs = set()
        self.mounted = set()
        self.files = {}
        self.ops = []
        self.umount_fails = umount_fails

    def exists(self, path):
        return path in self.dirs

    def is_mount(self, path):
        return path in self.mounted

    def listdir(self, path):
        return [f for f in self.files if f.startswith(path + '/')]

    def device(self, path):
        return 2 if path in self.mounted else 1

    def mkdir(self, path):
        self.ops.append('mkdir')
        self.dirs.add(path)

    def rmdir(self, path):
        self.ops.append('rmdir')
        self.dirs.discard(path)

    def mount(self, path, size_mb):
        self.ops.append('mount %d' % size_mb)
        self.mounted.add(path)

    def umount(self, path):
        self.ops.append('umount')
        if self.umount_fails:
            raise OSError(errno.EBUSY, 'umount %s failed: target is busy' % path)
        self.mounted.discard(path)

    def fill(self, path):
        self.ops.append('fill')
        self.files[path] = self.size
        return self.size

    def remove(self, path):
        self.ops.append('remove')
        self.files.pop(path, None)

    def statvfs(self, path):
        used = sum(self.files.values()) // 4096
        total = self.size // 4096

        class St:
            f_frsize = 4096
            f_blocks = total
            f_bfree = total - used
            f_bavail = total - used
            f_files = 1000
            f_ffree = 1000 - len(self.files)
        return St()


def measure_with(fs, monkeypatch):
    monkeypatch.setattr(diskguard.os.path, 'exists', lambda p: True)
    monkeypatch.setattr(diskguard, 'find_mountpoint', lambda p: p)
    return lambda paths, threshold: diskguard.check(paths, threshold, statvfs=fs.statvfs)


def test_disk_fill_is_alerted_and_cleaned_up(monkeypatch):
    fs = FakeFS()
    result = drill.disk_fill('/mnt/scratch', 16, 85, fs, measure_with(fs, monkeypatch), probe=lambda u: 200,
                             health_url='http://x/health')
    assert result['verdict'] == drill.ALERTED, result
    assert result['used_ratio'] == 1.0 and result['used_ratio_after'] == 0.0
    assert 'disk of /mnt/scratch' in result['warning'] and 'threshold 85%' in result['warning']
    assert result['cleared'] and result['cleaned_up'] and result['service_status_while_full'] == 200
    assert fs.ops == ['mkdir', 'mount 16', 'fill', 'remove', 'umount', 'rmdir']
    assert not fs.mounted and not fs.dirs


def test_disk_fill_without_a_warning_is_failed(monkeypatch):
    fs = FakeFS()
    fs.fill = lambda path: fs.files.__setitem__(path, fs.size // 2) or fs.size // 2  # half full: below 85 %
    result = drill.disk_fill('/mnt/scratch', 16, 85, fs, measure_with(fs, monkeypatch))
    assert result['verdict'] == drill.FAILED and 'gave no warning' in result['evidence']
    assert result['cleaned_up'] and not fs.mounted


def test_disk_fill_reports_a_failed_umount(monkeypatch):
    fs = FakeFS(umount_fails=True)
    result = drill.disk_fill('/mnt/scratch', 16, 85, fs, measure_with(fs, monkeypatch))
    assert result['verdict'] == drill.FAILED
    assert 'target is busy' in result['error'] and not result['cleaned_up']


def test_disk_fill_never_fills_the_parent_filesystem(monkeypatch):
    fs = FakeFS()
    fs.device = lambda path: 1  # the mount did not take: same device as the parent
    result = drill.disk_fill('/mnt/scratch', 16, 85, fs, measure_with(fs, monkeypatch))
    assert result['verdict'] == drill.FAILED and 'fill' not in fs.ops
    assert 'not a separate filesystem' in result['error'] and 'umount' in fs.ops


@pytest.mark.parametrize('path, message', [('/', 'other than /'), ('relative/dir', 'absolute path'),
                                           ('//', 'other than /')])
def test_disk_fill_refuses_bad_paths(path, message):
    with pytest.raises(drill.DrillError, match=message):
        drill.disk_fill(path, 16, 85, FakeFS(), None)


def test_disk_fill_refuses_an_existing_mount_or_a_used_directory():
    fs = FakeFS()
    fs.dirs.add('/mnt/scratch')
    fs.mounted.add('/mnt/scratch')
    with pytest.raises(drill.DrillError, match='already a mount point'):
        drill.disk_fill('/mnt/scratch', 16, 85, fs, None)
    fs.mounted.clear()
    fs.files['/mnt/scratch/data'] = 1
    with pytest.raises(drill.DrillError, match='not empty'):
        drill.disk_fill('/mnt/scratch', 16, 85, fs, None)
    assert fs.ops == []


def test_disk_fill_bad_sizes():
    with pytest.raises(drill.DrillError, match='1-1024 MiB'):
        drill.disk_fill('/mnt/x', 0, 85, FakeFS(), None)
    with pytest.raises(drill.DrillError, match='1-100'):
        drill.disk_fill('/mnt/x', 16, 101, FakeFS(), None)


def test_real_scratchfs_fill_stops_at_enospc(tmp_path, monkeypatch):
    written = []

    class Full:
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def write(self, data):
            if len(written) == 3:
                raise OSError(errno.ENOSPC, 'No space left on device')
            written.append(len(data))
            return len(data) // 2 if len(written) == 3 else len(data)  # a short write just before the end

    monkeypatch.setattr('builtins.open', Full)
    assert drill.ScratchFS(None).fill(str(tmp_path / 'f')) == 2 * drill.FILL_CHUNK + drill.FILL_CHUNK // 2


def chaos_ok():
    return [{'fault': 'kill', 'verdict': 'recovered', 'evidence': 'PID 1 -> 2'},
            {'fault': 'hang', 'verdict': 'recovered', 'evidence': 'watchdog'},
            {'fault': 'disk_fill', 'verdict': 'alerted', 'evidence': 'disk guard at 100%'}]


def test_report_rto_rpo_and_verdicts():
    created = '1970-01-02T00:00:00Z'  # 86400
    restore = {'health_status': 200, 'restored_rows': {'appdb': '500:abc'}, 'expected_rows': {'appdb': '500:abc'},
               'expected_from': 'source'}
    report = drill.build_report('web1', 'web1-dr', 90000.0, 90093.5, created, restore=restore, chaos=chaos_ok(),
                                now=90100.0)
    assert report['rto_seconds'] == 93.5 and report['rpo_seconds'] == 3693.5
    assert report['failed'] == []
    assert [c['name'] for c in report['checks']] == ['restore', 'chaos_kill', 'chaos_hang', 'chaos_disk_fill']
    assert report['restore']['databases'] == [{'name': 'appdb', 'restored_rows': '500:abc', 'expected_rows': '500:abc',
                                               'expected_from': 'source', 'equal': True}]
    assert 'rows equal to the source for appdb' in report['checks'][0]['evidence']
    lines = drill.summary_lines(report)
    assert lines[1].startswith('RTO 93.5 s (drill start to healthy), RPO 3693.5 s')
    assert lines[2].startswith('recovered restore:')


def test_report_rows_differ_or_unhealthy_or_error_fail():
    base = {'health_status': 200, 'restored_rows': {'a': '1'}, 'expected_rows': {'a': '2'}, 'expected_from': 'source'}
    report = drill.build_report('s', 'h', 1.0, 2.0, '1970-01-01T00:00:00Z', restore=base)
    assert report['failed'] == ['restore'] and 'rows differ' in report['checks'][0]['evidence']
    report = drill.build_report('s', 'h', 1.0, 2.0, '1970-01-01T00:00:00Z',
                                restore={'health_status': 503, 'restored_rows': {}})
    assert report['failed'] == ['restore'] and 'status 503' in report['checks'][0]['evidence']
    report = drill.build_report('s', 'h', 1.0, None, None, restore={'error': 'Fetch: no backup'})
    assert report['failed'] == ['restore'] and report['rto_seconds'] is None
    assert 'the restore failed: Fetch: no backup' in report['checks'][0]['evidence']


def test_report_rows_without_expectation_are_recorded_not_compared():
    report = drill.build_report('s', 'h', 1.0, 2.0, '1970-01-01T00:00:00Z',
                                restore={'health_status': 200, 'restored_rows': {'a': 'public.t|5'}, 'expected_rows': {}})
    assert report['failed'] == [] and 'recorded, not compared, for a' in report['checks'][0]['evidence']
    with pytest.raises(drill.DrillError, match='not restored: b'):
        drill.build_report('s', 'h', 1.0, 2.0, '1970-01-01T00:00:00Z',
                           restore={'health_status': 200, 'restored_rows': {'a': '1'}, 'expected_rows': {'b': '1'}})


def test_report_chaos_only_and_failed_chaos():
    chaos = chaos_ok()
    chaos[1] = dict(chaos[1], verdict='FAILED')
    report = drill.build_report('s', 'h', None, None, None, chaos=chaos)
    assert 'rto_seconds' not in report and report['failed'] == ['chaos_hang']
    with pytest.raises(drill.DrillError, match='unknown verdict'):
        drill.build_report('s', 'h', None, None, None, chaos=[{'fault': 'kill', 'verdict': 'fine'}])


def test_report_healthy_before_start_is_an_error():
    with pytest.raises(drill.DrillError, match='healthy before the drill started'):
        drill.build_report('s', 'h', 10.0, 5.0, '1970-01-01T00:00:00Z', restore={'health_status': 200})


def test_write_report_atomic_private_and_latest(tmp_path):
    report = drill.build_report('s', 'web/1', None, None, None, chaos=chaos_ok(), now=0)
    path = drill.write_report(str(tmp_path / 'reports'), report, now=0)
    assert os.path.basename(path) == 'drill-web_1-19700101T000000Z.json'
    assert json.loads(open(path).read()) == report
    assert json.loads((tmp_path / 'reports' / 'latest.json').read_text()) == report
    assert oct(os.stat(path).st_mode & 0o777) == '0o600'
    assert oct(os.stat(str(tmp_path / 'reports')).st_mode & 0o777) == '0o700'
    assert sorted(os.listdir(str(tmp_path / 'reports'))) == ['drill-web_1-19700101T000000Z.json', 'latest.json']
