# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the watchdog helper.

The poll/ping decisions run on a fake clock with a scripted probe; sd_notify
goes to a real AF_UNIX datagram socket; signal forwarding and exit statuses use
real child processes. Network use is loopback only.
"""

import collections
import http.server
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from ansible_collections.prodready.vps.plugins.module_utils import watchdog
from process_harness import SOCKET_ACTIVATE, NotifySocket, free_port, kill_group, listening_socket

SCRIPT = watchdog.__file__
SAMPLE_APP = os.path.join(os.path.dirname(SCRIPT), '..', '..', 'sample-apps', 'python', 'prodready_sample_app.py')


# --- helpers -------------------------------------------------------------------

@pytest.fixture
def notify_socket():
    sock = NotifySocket()
    yield sock
    sock.close()


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class FakeStop:
    """``threading.Event`` look-alike: waiting advances the fake clock; stops at ``until``."""

    def __init__(self, clock, until):
        self.clock = clock
        self.until = until

    def wait(self, timeout):
        self.clock.now += timeout
        return self.clock.now > self.until


class ScriptedProbe:
    """Returns scripted results, records when it ran, and may take (fake) time."""

    def __init__(self, clock, results, duration=0.0):
        self.clock = clock
        self.results = list(results)
        self.duration = duration
        self.times = []

    def __call__(self):
        self.times.append(self.clock.now)
        self.clock.now += self.duration
        if not self.results:
            return True, 'ok'
        result = self.results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result


class Recorder:
    """Notifier stand-in that records each message with the fake time it was sent."""

    def __init__(self, clock):
        self.clock = clock
        self.sent = []

    def __call__(self, *fields):
        self.sent.append((self.clock.now, list(fields)))
        return True

    def times_of(self, field):
        return [when for when, fields in self.sent if field in fields]


Polled = collections.namedtuple('Polled', 'probe notifier logged')
Finished = collections.namedtuple('Finished', 'code out err')


def run_poller(results, until, interval=5.0, start_interval=1.0, duration=0.0):
    clock = FakeClock()
    probe = ScriptedProbe(clock, results, duration)
    notifier = Recorder(clock)
    logged = []
    poller = watchdog.Poller(probe, watchdog.HealthGate('http://app/health'), notifier, interval, start_interval,
                             clock=clock, logger=lambda priority, message: logged.append((priority, message)))
    poller.run(FakeStop(clock, until))
    return Polled(probe, notifier, logged)


OK = (True, 'HTTP 200 in 1ms')
FAIL = (False, 'HTTP 500 in 1ms')


class HealthHandler(http.server.BaseHTTPRequestHandler):
    """Health endpoint whose answer the test sets through ``server.status``/``server.hang``."""

    def do_GET(self):
        if self.server.hang:
            time.sleep(self.server.hang)
        body = b'{"status": "x"}'
        self.send_response(self.server.status)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        pass


@pytest.fixture
def health_server():
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), HealthHandler)
    server.daemon_threads = True
    server.status = 200
    server.hang = 0
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    server.url = f'http://127.0.0.1:{server.server_address[1]}/health'
    yield server
    server.shutdown()
    server.server_close()


def closed_port_url():
    return f'http://127.0.0.1:{free_port()}/health'


def start_helper(command, url=None, env=None, interval='0.2', extra=(), **kwargs):
    argv = [sys.executable, SCRIPT, '--url', url or closed_port_url(), '--interval', interval,
            '--start-interval', '0.1', '--timeout', '0.5'] + list(extra) + ['--'] + list(command)
    full_env = dict(os.environ)
    for key in watchdog.NOTIFY_VARIABLES + watchdog.LISTEN_VARIABLES:
        full_env.pop(key, None)
    full_env.update(env or {})
    # A session of its own, so cleanup can kill the app too if the helper fails to.
    return subprocess.Popen(argv, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, **kwargs)


def finish(proc, timeout=10):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise AssertionError('process did not exit in time') from None
    return Finished(proc.returncode, out.decode(), err.decode())


def wait_for_line(stream, expected, timeout=10):
    """Read lines from a pipe until one equals ``expected`` (bounded by select)."""
    deadline = time.monotonic() + timeout
    buf = b''
    while time.monotonic() < deadline:
        if select.select([stream], [], [], max(0.0, deadline - time.monotonic()))[0]:
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            if expected.encode() in buf.split(b'\n'):
                return buf.decode()
    raise AssertionError(f'no line {expected!r} within {timeout}s; got {buf!r}')


# Child programs for the supervisor tests.
CHILD_EXIT_7 = 'import sys; sys.exit(7)'
CHILD_TRAPS = (
    'import signal, sys, time\n'
    'def on(signum, frame):\n'
    '    print(signal.Signals(signum).name, flush=True)\n'
    '    if signum == signal.SIGTERM:\n'
    '        sys.exit(0)\n'
    'signal.signal(signal.SIGTERM, on)\n'
    'signal.signal(signal.SIGHUP, on)\n'
    'signal.signal(signal.SIGUSR1, on)\n'
    'print("up", flush=True)\n'
    'deadline = time.time() + 20\n'
    'while time.time() < deadline:\n'
    '    time.sleep(0.05)\n'
    'sys.exit(3)\n'
)
CHILD_SLEEPS = 'import os, time; print(os.getpid(), flush=True); print("up", flush=True); time.sleep(20)'
CHILD_ENV = (
    'import os, json\n'
    'print(json.dumps({k: os.environ.get(k) for k in '
    '("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID", "LISTEN_FDS", "KEEP")}))\n'
)


# --- sd_notify -------------------------------------------------------------------

def test_notify_address_forms():
    assert watchdog.notify_address('/run/systemd/notify') == '/run/systemd/notify'
    assert watchdog.notify_address('@abstract/name') == '\0abstract/name'
    assert watchdog.notify_address('') is None
    assert watchdog.notify_address(None) is None
    assert watchdog.notify_address('vsock:2:1234') is None


def test_format_message():
    assert watchdog.format_message(['READY=1', 'STATUS=serving on :8000']) == b'READY=1\nSTATUS=serving on :8000'
    assert watchdog.format_message({'WATCHDOG': 1, 'STATUS': 'ok'}) == b'STATUS=ok\nWATCHDOG=1'
    with pytest.raises(ValueError):
        watchdog.format_message(['READY'])
    with pytest.raises(ValueError):
        watchdog.format_message(['STATUS=two\nlines'])


def test_notifier_sends_datagrams_to_the_socket(notify_socket):
    notifier = watchdog.Notifier({'NOTIFY_SOCKET': notify_socket.env_value})
    assert notifier.enabled
    assert notifier('READY=1', 'STATUS=healthy')
    assert notifier('WATCHDOG=1')
    assert notify_socket.receive(2) == 'READY=1\nSTATUS=healthy'
    assert notify_socket.receive(2) == 'WATCHDOG=1'


def test_notifier_abstract_namespace():
    sock = NotifySocket(abstract=True)
    try:
        notifier = watchdog.Notifier({'NOTIFY_SOCKET': sock.env_value})
        assert notifier('WATCHDOG=1')
        assert sock.receive(2) == 'WATCHDOG=1'
    finally:
        sock.close()


def test_notifier_is_a_noop_outside_systemd_and_survives_a_dead_socket(tmp_path, capsys):
    assert not watchdog.Notifier({})('READY=1')
    assert not watchdog.Notifier({})('READY=1')
    dead = watchdog.Notifier({'NOTIFY_SOCKET': str(tmp_path / 'gone')})
    for dummy in range(5):
        assert not dead('WATCHDOG=1')
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 3 and errors[0].startswith('<3>prodready-watchdog: sd_notify to ')


# --- decisions (fake clock, scripted probe) --------------------------------------

def test_gate_ready_once_then_ping_only_after_successes():
    gate = watchdog.HealthGate('http://app/health')
    sent = gate.observe(False, 'ConnectionRefusedError: refused')[0]
    assert sent == [['STATUS=starting: waiting for http://app/health (ConnectionRefusedError: refused)']]
    sent, line = gate.observe(True, 'HTTP 200 in 3ms')
    assert sent[0][0] == 'READY=1' and sent[-1] == ['WATCHDOG=1']
    assert line[0] == 6
    sent, line = gate.observe(True, 'HTTP 200 in 3ms')
    assert sent == [['WATCHDOG=1']] and line is None
    sent, line = gate.observe(False, 'no answer within 5.0s')
    assert not any('WATCHDOG=1' in fields or 'READY=1' in fields for fields in sent)
    assert sent[0][0].startswith('STATUS=unhealthy (1 failed check(s)') and line[0] == 4
    sent, line = gate.observe(False, 'HTTP 503\nmultiline')
    assert sent == [['STATUS=unhealthy (2 failed check(s) in a row, watchdog pings paused): HTTP 503 multiline']]
    assert line is None  # logged once per outage, not per poll
    sent, line = gate.observe(True, 'HTTP 200 in 2ms')
    assert sent == [['STATUS=healthy again after 2 failed check(s): HTTP 200 in 2ms'], ['WATCHDOG=1']]
    assert line[0] == 5
    assert (gate.polls, gate.pings, gate.failures) == (6, 3, 0)


def test_gate_is_silent_once_stopping():
    gate = watchdog.HealthGate()
    gate.observe(True, 'ok')
    gate.stop()
    assert gate.observe(True, 'ok') == ([], None)


def test_poller_schedule_and_pings_stop_while_the_probe_fails():
    probe, notifier, logged = run_poller([FAIL, FAIL, OK, OK, FAIL, FAIL, FAIL, OK], until=36)
    # Every start_interval until the first success, then every interval.
    assert probe.times == [0, 1, 2, 7, 12, 17, 22, 27, 32]
    assert notifier.times_of('READY=1') == [2]
    assert notifier.times_of('WATCHDOG=1') == [2, 7, 27, 32]
    # No ping for 20 s: a WatchdogSec=15 unit is killed and restarted by systemd.
    pings = notifier.times_of('WATCHDOG=1')
    assert max(pings[i + 1] - pings[i] for i in range(len(pings) - 1)) == 20
    assert [entry[0] for entry in logged] == [6, 4, 5]


def test_poller_never_pings_if_the_app_never_gets_healthy():
    probe, notifier, logged = run_poller([FAIL] * 100, until=10, start_interval=0.5)
    assert len(probe.times) == 21
    assert notifier.times_of('WATCHDOG=1') == [] and notifier.times_of('READY=1') == []
    assert logged == []


def test_poller_slow_probe_delays_the_next_poll():
    probe, notifier = run_poller([OK] * 5, until=30, interval=5, duration=7)[:2]
    assert probe.times == [0, 7, 14, 21, 28]
    assert notifier.times_of('WATCHDOG=1') == [7, 14, 21, 28, 35]


def test_poller_counts_a_probe_exception_as_a_failure():
    polled = run_poller([OK, RuntimeError('boom'), OK], until=12)
    assert polled.notifier.times_of('WATCHDOG=1') == [0, 10]
    assert any('probe error RuntimeError: boom' in sent[1][0] for sent in polled.notifier.sent)
    assert [entry[0] for entry in polled.logged] == [6, 4, 5]


def test_start_interval_is_capped_by_the_interval():
    poller = watchdog.Poller(None, watchdog.HealthGate(), None, interval=0.5, start_interval=2)
    assert poller.start_interval == 0.5


def test_effective_interval_respects_watchdog_usec():
    assert watchdog.effective_interval(None, {}) == (5.0, None)
    assert watchdog.effective_interval(None, {'WATCHDOG_USEC': '30000000'}) == (15.0, None)
    assert watchdog.effective_interval(5.0, {'WATCHDOG_USEC': '30000000'}) == (5.0, None)
    interval, warning = watchdog.effective_interval(20.0, {'WATCHDOG_USEC': '10000000'})
    assert interval == 5.0 and 'more than half of WatchdogSec' in warning
    assert watchdog.effective_interval(3.0, {'WATCHDOG_USEC': 'junk'}) == (3.0, None)


def test_parse_args():
    args = watchdog.parse_args(['--url', 'http://127.0.0.1:8000/health', '--interval', '5', '--',
                                '/usr/bin/node', 'app.js', '--port', '8000'])
    assert args.command == ['/usr/bin/node', 'app.js', '--port', '8000']
    assert args.interval == 5.0 and args.start_interval == 1.0 and args.timeout is None
    assert watchdog.parse_args(['--url', 'http://x/', 'app']).command == ['app']
    for bad in (['--url', 'http://x/'], ['--url', 'http://x/', '--interval', '0', '--', 'app'], ['--', 'app']):
        with pytest.raises(SystemExit):
            watchdog.parse_args(bad)


def test_exit_status():
    assert watchdog.exit_status(0) == 0
    assert watchdog.exit_status(7) == 7
    assert watchdog.exit_status(-signal.SIGKILL) == 137
    assert watchdog.exit_status(-signal.SIGABRT) == 134


def test_child_environment_hides_notify_and_foreign_listen_variables():
    environ = {'NOTIFY_SOCKET': '/run/n', 'WATCHDOG_USEC': '1', 'WATCHDOG_PID': '10', 'LISTEN_PID': '99',
               'LISTEN_FDS': '1', 'PATH': '/bin'}
    env, fds = watchdog.child_environment(environ, pid=10)
    assert env == {'PATH': '/bin'} and fds == ()
    environ['LISTEN_PID'] = '10'
    environ['LISTEN_FDS'] = '2'
    env, fds = watchdog.child_environment(environ, pid=10)
    assert env == {'PATH': '/bin', 'LISTEN_FDS': '2'} and fds == (3, 4)
    assert watchdog.child_argv(['app', 'x'], ()) == ['app', 'x']
    assert watchdog.child_argv(['app'], (3,))[:2] == ['/bin/sh', '-c']


# --- the HTTP probe (loopback server) ----------------------------------------------

def test_http_probe(health_server):
    probe = watchdog.HttpProbe(health_server.url, timeout=0.5)
    ok, detail = probe()
    assert ok and detail.startswith('HTTP 200 in ')
    health_server.status = 503
    ok, detail = probe()
    assert not ok and detail.startswith('HTTP 503 in ')
    health_server.status, health_server.hang = 200, 1.5
    started = time.monotonic()
    ok, detail = probe()
    assert not ok and detail == 'no answer within 0.5s'
    assert time.monotonic() - started < 1.4
    ok, detail = watchdog.HttpProbe(closed_port_url(), timeout=0.5)()
    assert not ok and 'ConnectionRefusedError' in detail


def test_http_probe_ignores_proxy_settings(health_server, monkeypatch):
    monkeypatch.setenv('http_proxy', 'http://127.0.0.1:9/')
    monkeypatch.setenv('HTTP_PROXY', 'http://127.0.0.1:9/')
    assert watchdog.HttpProbe(health_server.url, timeout=0.5)()[0]


def test_http_probe_rejects_bad_urls():
    for url in ('ftp://x/', 'http:///nohost', '127.0.0.1:8000/health'):
        with pytest.raises(ValueError):
            watchdog.HttpProbe(url)


# --- the supervisor (real child processes) ---------------------------------------

def test_supervisor_in_process_returns_the_child_status_and_restores_handlers():
    before = signal.getsignal(signal.SIGTERM)
    supervisor = watchdog.Supervisor([sys.executable, '-c', CHILD_EXIT_7])
    assert supervisor.run() == 7
    assert signal.getsignal(signal.SIGTERM) is before


def test_helper_exits_with_the_child_status():
    done = finish(start_helper([sys.executable, '-c', CHILD_EXIT_7]))
    assert done.code == 7
    assert 'app exited with status 7' in done.err


def test_helper_reports_a_missing_command():
    done = finish(start_helper(['/nonexistent/app']))
    assert done.code == 127 and 'cannot start /nonexistent/app' in done.err


def test_helper_forwards_signals_and_stops(notify_socket):
    proc = start_helper([sys.executable, '-c', CHILD_TRAPS], env={'NOTIFY_SOCKET': notify_socket.env_value})
    try:
        wait_for_line(proc.stdout, 'up')
        proc.send_signal(signal.SIGHUP)
        wait_for_line(proc.stdout, 'SIGHUP')
        proc.send_signal(signal.SIGUSR1)
        wait_for_line(proc.stdout, 'SIGUSR1')
        proc.send_signal(signal.SIGTERM)
        done = finish(proc)
    finally:
        kill_group(proc)
    assert done.code == 0  # the child's own status after its graceful exit
    assert 'SIGTERM' in done.out
    assert notify_socket.wait_for('STOPPING=1', timeout=2)


def test_helper_dies_by_the_clean_signal_that_killed_the_child():
    proc = start_helper([sys.executable, '-c', CHILD_SLEEPS])
    try:
        wait_for_line(proc.stdout, 'up')
        proc.send_signal(signal.SIGTERM)
        done = finish(proc)
    finally:
        kill_group(proc)
    assert done.code == -signal.SIGTERM  # what systemd counts as a clean stop
    assert 'app killed by SIGTERM' in done.err


def test_helper_wakes_a_stopped_child_so_the_signal_acts_at_once():
    """A hung (SIGSTOPped) app still dies on the watchdog's SIGABRT, without waiting for SIGKILL."""
    proc = start_helper([sys.executable, '-c', CHILD_SLEEPS])
    try:
        first = wait_for_line(proc.stdout, 'up')
        child_pid = int(first.split()[0])
        os.kill(child_pid, signal.SIGSTOP)
        proc.send_signal(signal.SIGABRT)
        done = finish(proc)
    finally:
        kill_group(proc)
    assert done.code == 128 + signal.SIGABRT
    assert 'app killed by SIGABRT' in done.err


def test_helper_exit_status_when_the_child_is_killed():
    proc = start_helper([sys.executable, '-c', CHILD_SLEEPS])
    try:
        first = wait_for_line(proc.stdout, 'up')
        child_pid = int(first.split()[0])
        os.kill(child_pid, signal.SIGKILL)
        done = finish(proc)
    finally:
        kill_group(proc)
    assert done.code == 128 + signal.SIGKILL
    assert 'app killed by SIGKILL' in done.err


def test_helper_child_environment_end_to_end():
    done = finish(start_helper([sys.executable, '-c', CHILD_ENV], env={
        'NOTIFY_SOCKET': '/nonexistent/notify', 'WATCHDOG_USEC': '10000000', 'WATCHDOG_PID': '1', 'KEEP': 'yes'}))
    assert done.code == 0
    assert json.loads(done.out) == {'NOTIFY_SOCKET': None, 'WATCHDOG_USEC': None, 'WATCHDOG_PID': None,
                                    'LISTEN_PID': None, 'LISTEN_FDS': None, 'KEEP': 'yes'}


def test_helper_ready_pings_and_pause_while_unhealthy(health_server, notify_socket):
    proc = start_helper([sys.executable, '-c', CHILD_SLEEPS], url=health_server.url,
                        env={'NOTIFY_SOCKET': notify_socket.env_value, 'WATCHDOG_USEC': '2000000'})
    try:
        ready = notify_socket.wait_for('READY=1', timeout=5)
        assert 'STATUS=healthy: ' in ready
        notify_socket.wait_for('WATCHDOG=1', timeout=2)
        notify_socket.wait_for('WATCHDOG=1', timeout=2)
        health_server.status = 500
        notify_socket.drain(0.5)  # whatever a poll in progress still sends
        paused = notify_socket.drain(0.6)
        assert paused and not any('WATCHDOG=1' in m.split('\n') for m in paused)
        assert all(m.startswith('STATUS=unhealthy (') for m in paused)
        health_server.status = 200
        notify_socket.wait_for('WATCHDOG=1', timeout=2)
        proc.send_signal(signal.SIGTERM)
        done = finish(proc)
    finally:
        kill_group(proc)
    assert done.code == -signal.SIGTERM
    assert 'health check failed, pausing watchdog pings: HTTP 500' in done.err
    assert 'recovered after' in done.err


def test_helper_hands_a_passed_socket_to_the_sample_app(notify_socket):
    """Socket activation through the helper: the app serves on fd 3, the helper reports READY."""
    listener = listening_socket()
    port = listener.getsockname()[1]
    url = f'http://127.0.0.1:{port}/health'
    argv = [sys.executable, '-c', SOCKET_ACTIVATE, str(listener.fileno()), sys.executable, SCRIPT,
            '--url', url, '--interval', '0.2', '--start-interval', '0.1', '--',
            sys.executable, SAMPLE_APP]
    env = dict(os.environ, NOTIFY_SOCKET=notify_socket.env_value, APP_PORT='1', APP_NAME='activated')
    proc = subprocess.Popen(argv, env=env, pass_fds=(listener.fileno(),), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        notify_socket.wait_for('READY=1', timeout=10)
        notify_socket.wait_for('WATCHDOG=1', timeout=2)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f'http://127.0.0.1:{port}/status', timeout=5) as response:
            status = json.loads(response.read())
        assert status['service'] == 'activated'
        assert status['listen']['socket_activated'] is True
        proc.send_signal(signal.SIGTERM)
        code, out, err = finish(proc)
    finally:
        kill_group(proc)
        listener.close()
    assert code == 0, err  # the app drained and exited 0; so did the helper
    assert 'socket-activated: yes' in out
