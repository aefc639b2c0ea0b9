# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Health gate decisions with a fake clock and fake probes (no network, no sleeping), then the real probes on loopback."""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from ansible_collections.prodready.vps.plugins.module_utils import health_gate as hg


class FakeClock(object):
    """Monotonic time that only moves when something sleeps or a probe takes time."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        assert seconds >= 0
        self.sleeps.append(round(seconds, 6))
        self.now += seconds

    def wall(self):
        return 1700000000.0 + self.now - 1000.0


class Script(object):
    """A fake probe answering by round number (or by time), taking ``cost`` seconds of fake time per call."""

    def __init__(self, clock, answers, cost=0.01):
        self.clock = clock
        self.answers = answers
        self.cost = cost
        self.calls = []

    def __call__(self, check):
        self.clock.now += self.cost
        self.calls.append(self.clock.now)
        answer = self.answers(len(self.calls), self.clock.now) if callable(self.answers) else \
            self.answers[min(len(self.calls), len(self.answers)) - 1]
        if isinstance(answer, dict):
            return answer
        return {'ok': bool(answer), 'status': 200 if answer else 500, 'error': None if answer else 'status 500'}


def make_gate(clock, answers, cost=0.01, **settings):
    probe = Script(clock, answers, cost)
    checks = settings.pop('checks', [{'url': 'http://127.0.0.1:9/health'}])
    defaults = dict(interval=5, timeout=120, required_percent=80, consecutive=3, settle=5)
    defaults.update(settings)
    gate = hg.Gate(checks, clock=clock, sleep=clock.sleep, wall=clock.wall,
                   probes={'http': probe, 'tcp': probe, 'command': probe}, **defaults)
    return gate, probe


def test_healthy_release_passes_after_consecutive_rounds_following_the_settle_delay():
    clock = FakeClock()
    gate, probe = make_gate(clock, [True])
    result = gate.run()
    assert result['verdict'] == 'passed' and result['passed']
    assert result['rounds'] == 3 and result['successes'] == 3 and result['percent'] == 100.0
    assert clock.sleeps[0] == 5  # the settle delay comes first
    # rounds start every interval after the settle delay (each probe takes 0.01 s of fake time)
    assert [round(t - 1000, 2) for t in probe.calls] == [5.01, 10.01, 15.01]
    assert result['first_success_after'] == pytest.approx(5.01)
    assert result['last'][0]['ok'] and result['last'][0]['check'] == 'GET http://127.0.0.1:9/health'


def test_always_failing_release_fails_early_when_the_percentage_cannot_be_reached():
    clock = FakeClock()
    gate, probe = make_gate(clock, [False])
    result = gate.run()
    assert result['verdict'] == 'failed'
    # 24 rounds start within 120 s (at 0, 5, ... 115 s); after 5 failed rounds even 19 passes give 19/24 < 80%
    assert result['rounds'] == 5 and result['successes'] == 0
    assert result['seconds'] < 120 / 3
    assert 'cannot pass any more' in result['reason']
    assert result['last_failures'][0]['error'] == 'status 500'


def test_startup_failures_are_tolerated_within_the_percentage():
    clock = FakeClock()
    gate, _probe = make_gate(clock, [False, True])  # the first round fails (still starting), then all pass
    result = gate.run()
    assert result['verdict'] == 'passed'
    # after 3 consecutive passes the share is 3/4 = 75% < 80%: one more round
    assert result['rounds'] == 5 and result['successes'] == 4


def test_required_percent_and_consecutive_are_both_needed():
    clock = FakeClock()
    # alternating answers never give 2 in a row
    gate, _probe = make_gate(clock, lambda n, t: n % 2 == 0, consecutive=2, required_percent=50, timeout=30, interval=1)
    result = gate.run()
    assert result['verdict'] == 'failed'
    assert result['successes'] >= 1 and result['consecutive'] <= 1


def test_flapping_release_passes_when_percent_allows_it():
    clock = FakeClock()
    answers = [True, False, True, True, True, True]
    gate, _probe = make_gate(clock, answers, consecutive=3, required_percent=60, interval=1, timeout=30, settle=0)
    result = gate.run()
    assert result['verdict'] == 'passed' and result['rounds'] == 5  # 4 of 5 = 80% >= 60%, 3 in a row


def test_hanging_probe_fails_by_the_deadline_and_rounds_start_right_after_an_overrun():
    clock = FakeClock()
    # every probe hangs for its 2 s timeout; rounds every 1 s cannot keep up
    gate, probe = make_gate(clock, [{'ok': False, 'error': 'timed out after 2s'}], cost=2.0,
                            interval=1, timeout=10, settle=1, consecutive=2)
    result = gate.run()
    assert result['verdict'] == 'failed'
    starts = [t - 2.0 for t in probe.calls]
    assert all(b - a == pytest.approx(2.0) for a, b in zip(starts, starts[1:]))  # back to back, no extra sleep
    assert result['seconds'] <= 1 + 10 + 2  # settle + timeout + at most one round
    assert result['last'][0]['error'] == 'timed out after 2s'


def test_timeout_is_counted_after_the_settle_delay():
    clock = FakeClock()
    gate, probe = make_gate(clock, lambda n, t: t - 1000 >= 40, settle=30, timeout=20, interval=2, consecutive=2,
                            required_percent=0)
    result = gate.run()
    assert result['verdict'] == 'passed'
    assert probe.calls[0] - 1000 >= 30


def test_all_checks_of_a_round_must_pass_and_each_keeps_its_last_failure():
    clock = FakeClock()
    calls = {'n': 0}

    def answers(n, t):
        calls['n'] += 1
        # check 1 always passes, check 2 never does
        return True if n % 2 == 1 else {'ok': False, 'error': 'exit status 3, expected 0'}

    checks = [{'type': 'tcp', 'port': 8000}, {'type': 'command', 'command': 'false'}]
    gate, _probe = make_gate(clock, answers, checks=checks, interval=1, timeout=5, settle=0, consecutive=1)
    result = gate.run()
    assert result['verdict'] == 'failed' and result['successes'] == 0
    assert [r['check'] for r in result['last']] == ['tcp 127.0.0.1:8000', 'command false']
    assert [r['check'] for r in result['last_failures']] == ['command false']
    assert result['history'][-1]['failed'] == ['command false: exit status 3, expected 0']
    assert len(result['history']) <= hg.HISTORY_ROUNDS


def test_a_probe_that_raises_is_a_failed_check_not_a_crash():
    clock = FakeClock()

    def broken(check):
        raise RuntimeError('boom')

    gate = hg.Gate([{'url': 'http://x/'}], interval=1, timeout=2, settle=0, consecutive=1, clock=clock,
                   sleep=clock.sleep, wall=clock.wall, probes={'http': broken})
    result = gate.run()
    assert result['verdict'] == 'failed' and 'RuntimeError: boom' in result['last'][0]['error']


def test_summary_lines_name_the_failure():
    clock = FakeClock()
    gate, _probe = make_gate(clock, [{'ok': False, 'status': 500, 'body': '{"status": "unhealthy"}', 'error': 'status 500, expected 200'}])
    lines = hg.summary_lines(gate.run())
    assert lines[0].startswith('failed: ') and 'HTTP 500' in lines[1] and 'unhealthy' in lines[1]


@pytest.mark.parametrize('check, message', [
    ({'type': 'http', 'url': 'ftp://x'}, 'url must start with http'),
    ({'type': 'tcp'}, 'port must be a number'),
    ({'type': 'tcp', 'port': 70000}, 'at most 65535'),
    ({'type': 'command', 'command': ''}, 'non-empty'),
    ({'type': 'command', 'command': 'echo "unterminated'}, 'cannot be split'),
    ({'type': 'smtp'}, 'type must be one of'),
    ({'url': 'http://x', 'status': 'abc'}, 'status must be a number'),
    ({'url': 'http://x', 'json': ['status']}, 'json must be a dictionary'),
    ('http://x', 'must be a dictionary'),
])
def test_bad_checks_are_refused_with_the_reason(check, message):
    with pytest.raises(hg.GateError, match=message):
        hg.Gate([check])


@pytest.mark.parametrize('settings, message', [
    ({'required_percent': 101}, 'at most 100'),
    ({'consecutive': 0}, 'at least 1'),
    ({'interval': -1}, 'at least 0'),
    ({'consecutive': 1.5}, 'an integer'),
])
def test_bad_gate_settings_are_refused(settings, message):
    with pytest.raises(hg.GateError, match=message):
        hg.Gate([{'url': 'http://x'}], **settings)


def test_no_checks_is_refused():
    with pytest.raises(hg.GateError, match='at least one check'):
        hg.Gate([])


def test_check_type_is_inferred_from_its_keys():
    assert hg.normalize_check({'url': 'http://a/'})['type'] == 'http'
    assert hg.normalize_check({'port': 80})['type'] == 'tcp'
    assert hg.normalize_check({'command': ['true']})['argv'] == ['true']
    assert hg.normalize_check({'url': 'http://a/', 'status': 204})['status'] == [204]


@pytest.mark.parametrize('actual, expected, ok', [
    ('healthy', 'healthy', True), (True, 'true', True), (3, '3', True), (3, 3, True), (3.0, 3, True),
    (True, 1, False), ('1', 1, False), (None, 'null', True), ({'a': 1}, {'a': 1}, True), ('x', 'y', False),
])
def test_json_values_compare_leniently_for_strings_only(actual, expected, ok):
    assert hg.value_matches(actual, expected) is ok


def test_json_path_walks_dicts_and_lists():
    doc = {'checks': {'db': {'status': 'pass'}}, 'items': [{'name': 'a'}]}
    assert hg.json_path(doc, 'checks.db.status') == (True, 'pass')
    assert hg.json_path(doc, 'items.0.name') == (True, 'a')
    assert hg.json_path(doc, 'items.3.name') == (False, None)
    assert hg.json_path(doc, 'nope') == (False, None)


# --- the real probes, on loopback only ---------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    routes = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        status, body, delay = self.routes.get(self.path, (404, {'error': 'not found'}, 0))
        if delay:
            threading.Event().wait(delay)
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(status)
        if status in (301, 302):
            self.send_header('Location', 'http://127.0.0.1:9/elsewhere')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope='module')
def server():
    httpd = HTTPServer(('127.0.0.1', 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Handler.routes = {
        '/health': (200, {'status': 'healthy', 'version': '1.2', 'checks': {'db': {'status': 'pass'}}}, 0),
        '/sick': (500, {'status': 'unhealthy'}, 0),
        '/slow': (200, {'status': 'healthy'}, 1.0),
        '/text': (200, b'ok', 0),
        '/moved': (301, {}, 0),
    }
    yield 'http://127.0.0.1:%d' % httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def probe(url, **check):
    return hg.http_probe(hg.normalize_check(dict(check, url=url)))


def test_http_probe_status_and_json_match(server):
    result = probe(server + '/health', json={'status': 'healthy', 'checks.db.status': 'pass', 'version': '1.2'})
    assert result['ok'] and result['status'] == 200 and '"healthy"' in result['body']
    wrong = probe(server + '/health', json={'version': '1.3', 'missing.key': 1})
    assert not wrong['ok'] and 'version is "1.2", expected "1.3"' in wrong['error'] and 'missing.key missing' in wrong['error']


def test_http_probe_reports_an_error_status_with_its_body(server):
    result = probe(server + '/sick')
    assert not result['ok'] and result['status'] == 500 and 'unhealthy' in result['body']
    assert result['error'] == 'status 500, expected 200'
    assert probe(server + '/sick', status=[500])['ok']


def test_http_probe_times_out_on_a_hanging_endpoint(server):
    result = probe(server + '/slow', timeout=0.2)
    assert not result['ok'] and 'timed out' in result['error']


def test_http_probe_does_not_follow_redirects_and_needs_json_when_asked(server):
    result = probe(server + '/moved')
    assert not result['ok'] and result['status'] == 301
    assert probe(server + '/text', json={'a': 1})['error'] == 'body is not JSON'


def test_http_probe_connection_refused():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    result = probe('http://127.0.0.1:%d/health' % port, timeout=1)
    assert not result['ok'] and result['status'] is None and 'refused' in result['error'].lower()


def test_tcp_probe():
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        assert hg.tcp_probe(hg.normalize_check({'type': 'tcp', 'port': port}))['ok']
    finally:
        listener.close()
    result = hg.tcp_probe(hg.normalize_check({'type': 'tcp', 'port': port, 'timeout': 1}))
    assert not result['ok'] and result['error']


def test_command_probe():
    assert hg.command_probe(hg.normalize_check({'command': 'true'}))['ok']
    failed = hg.command_probe(hg.normalize_check({'command': ['sh', '-c', 'echo broken; exit 3']}))
    assert not failed['ok'] and failed['rc'] == 3 and failed['output'] == 'broken'
    assert hg.command_probe(hg.normalize_check({'command': ['sh', '-c', 'exit 3'], 'rc': 3}))['ok']
    slow = hg.command_probe(hg.normalize_check({'command': 'sleep 5', 'timeout': 0.2}))
    assert not slow['ok'] and 'timed out' in slow['error']
    missing = hg.command_probe(hg.normalize_check({'command': '/nonexistent/probe'}))
    assert not missing['ok'] and '/nonexistent/probe' in missing['error']


def test_real_gate_against_loopback_server(server):
    result = hg.Gate([{'url': server + '/health'}], interval=0.05, timeout=2, settle=0, consecutive=2).run()
    assert result['verdict'] == 'passed' and result['rounds'] == 2
    result = hg.Gate([{'url': server + '/sick'}], interval=0.05, timeout=0.5, settle=0, consecutive=2).run()
    assert result['verdict'] == 'failed'


# --- startup: rounds while the service still starts are not counted ---------------------------------

def test_slow_start_is_not_counted_against_the_release():
    clock = FakeClock()
    ready_at = 1000 + 1 + 9.5  # settle 1 s, then READY=1 after 9.5 s (a busy machine)
    gate, probe = make_gate(clock, lambda n, t: t >= ready_at, interval=1, timeout=20, settle=1, consecutive=2)
    gate.starting = lambda: clock.now < ready_at
    result = gate.run()
    assert result['verdict'] == 'passed' and result['rounds'] == 2 and result['percent'] == 100.0
    assert result['startup_rounds'] == 10
    # without the startup signal the same start fails the gate
    clock = FakeClock()
    gate, probe = make_gate(clock, lambda n, t: t >= ready_at, interval=1, timeout=20, settle=1, consecutive=2)
    assert gate.run()['verdict'] == 'failed'


def test_never_ready_fails_at_the_deadline_with_the_reason():
    clock = FakeClock()
    gate, probe = make_gate(clock, [{'ok': False, 'error': 'timed out after 2s'}], cost=2.0, interval=1, timeout=12,
                            settle=1, consecutive=2)
    gate.starting = lambda: True
    result = gate.run()
    assert result['verdict'] == 'failed' and 'still starting after 12s' in result['reason']
    assert result['rounds'] == 0 and result['percent'] == 0.0 and result['startup_rounds'] == 6
    assert 12 <= clock.now - 1000 - 1 <= 12 + 2
    assert result['history'][-1]['startup'] is True


def test_a_ready_service_answering_500_fails_early_even_with_the_startup_signal():
    clock = FakeClock()
    states = {'calls': 0}

    def starting():
        states['calls'] += 1
        return False

    gate, _probe = make_gate(clock, [False], interval=1, timeout=20, settle=1, consecutive=2)
    gate.starting = starting
    result = gate.run()
    assert result['verdict'] == 'failed' and 'cannot pass any more' in result['reason'] and result['rounds'] == 5
    assert states['calls'] == result['rounds']


def test_a_broken_startup_signal_means_started():
    clock = FakeClock()

    def broken():
        raise OSError('systemctl is gone')

    gate, _probe = make_gate(clock, [True], interval=1, timeout=5, settle=0, consecutive=1)
    gate.starting = broken
    assert gate.run()['verdict'] == 'passed'


def test_hanging_rounds_are_expected_to_keep_hanging():
    """Checks timing out at 10 s every round: the rounds left are counted at 10 s, not at the 1 s interval."""
    clock = FakeClock()
    gate, _probe = make_gate(clock, [{'ok': False, 'error': 'timed out after 10s'}], cost=10.0, interval=1,
                             timeout=120, settle=0, consecutive=2)
    result = gate.run()
    # 12 rounds of 10 s fit in 120 s; after 3 failed ones even 9 passes give 9/12 < 80 %
    assert result['verdict'] == 'failed' and result['rounds'] == 3 and result['seconds'] == pytest.approx(30)
