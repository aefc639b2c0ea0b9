# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tests of the Node sample app (skipped without ``node``), run as a real process on loopback ports.

The last test runs it the way the hardening role does: under the watchdog
helper, which turns its /health answers into READY=1 and WATCHDOG=1. The
harness (``start_app``, ``notify_socket``) is in this folder's conftest.py.
"""

import json
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from common_endpoints import check_debug_write_probe
from process_harness import ISO_UTC, connectable, free_port, get, in_background, listening_socket, longest_gap, wait_until

ROOT = Path(__file__).resolve().parents[3]
APP = ROOT / 'sample-apps' / 'node' / 'app.js'
WATCHDOG = ROOT / 'plugins' / 'module_utils' / 'watchdog.py'
NODE = shutil.which('node')

pytestmark = pytest.mark.skipif(NODE is None, reason='node is not installed')


@pytest.fixture
def app_launch():
    """How ``start_app`` runs this app: it is listening once its port takes connections."""
    return {'command': [NODE, str(APP)], 'base_env': {}, 'ready': connectable}


def in_flight(app):
    return app.get('/status')[1]['requests']['in_flight']


# --- endpoints ---------------------------------------------------------------------------

def test_endpoints_and_json_shapes(start_app):
    app = start_app({'APP_NAME': 'crypto-api-node', 'APP_VERSION': '3.1.0'})
    status, body, headers = app.get('/')
    assert status == 200 and body['message'] == 'Hello from crypto-api-node' and body['runtime'] == 'node'
    assert headers['Content-Type'] == 'application/json'
    assert app.get('/health')[:2] == (200, {'status': 'healthy', 'service': 'crypto-api-node', 'version': '3.1.0'})
    wait_until(lambda: app.get('/ready')[0] == 200)
    status, body = app.get('/ready')[:2]
    assert body['status'] == 'ready'
    status, body = app.get('/status')[:2]
    assert status == 200
    for key in ('status', 'service', 'version', 'uptime', 'timestamp', 'started_at', 'checks', 'resources',
                'runtime', 'requests', 'listen', 'watchdog', 'pid'):
        assert key in body, key
    assert body['status'] == 'healthy' and body['version'] == '3.1.0'
    assert ISO_UTC.match(body['timestamp']) and ISO_UTC.match(body['started_at'])
    assert set(body['checks']) >= {'startup', 'shutdown', 'liveness', 'database', 'event_loop'}
    assert body['checks']['database'] == {'status': 'not_configured'}
    assert body['runtime']['language'] == 'node' and body['resources']['memory_rss_bytes'] > 0
    assert body['listen'] == {'address': f'127.0.0.1:{app.port}', 'socket_activated': False}
    assert app.get('/db')[:2] == (200, {'status': 'not_configured'})
    assert app.get('/nope')[:2] == (404, {'error': 'not found', 'path': '/nope'})
    assert app.get('/debug/slow?s=0')[0] == 404  # debug endpoints need APP_DEBUG=1
    status, body, headers = app.get('/', method='POST')
    assert status == 405 and headers['Allow'] == 'GET, HEAD'
    status, body, headers = app.get('/health', method='HEAD')
    assert status == 200 and body is None
    assert app.stop() == 0
    assert '"GET /health HTTP/1.1" 200 ' in app.out  # access log on stdout
    assert 'GET /health' not in app.err


def test_startup_delay(start_app):
    app = start_app({'APP_STARTUP_DELAY': '0.6'})
    assert app.get('/health')[0] == 200
    status, body = app.get('/ready')[:2]
    assert status == 503 and body['status'] == 'starting'
    assert app.get('/status')[1]['status'] == 'starting'
    wait_until(lambda: app.get('/ready')[0] == 200, timeout=5)
    assert app.stop() == 0


def test_health_status_knob(start_app):
    app = start_app({'APP_HEALTH_STATUS': '503'})
    status, body = app.get('/health')[:2]
    assert status == 503 and body['status'] == 'unhealthy'
    wait_until(lambda: app.get('/status')[1]['ready'])
    status, body = app.get('/ready')[:2]
    assert status == 503 and body['status'] == 'not_ready'
    assert app.get('/status')[1]['status'] == 'unhealthy'


def test_health_hang_knob(start_app):
    app = start_app({'APP_HEALTH_HANG': '3'})
    with pytest.raises(socket.timeout):
        app.get('/health', timeout=0.5)
    assert app.get('/')[0] == 200


def test_no_listen_knob(start_app):
    app = start_app({'APP_NO_LISTEN': '1'}, listening=False)
    app.wait_output('APP_NO_LISTEN=1: not opening any port')
    time.sleep(0.2)
    assert app.proc.poll() is None and not connectable(app.port)
    assert app.stop(timeout=5) == 0


def test_configuration_error_exits_2(start_app):
    app = start_app({'APP_HEALTH_STATUS': 'bad'}, listening=False)
    assert app.wait() == 2
    assert 'APP_HEALTH_STATUS' in app.err


def test_database_check_over_tcp(start_app):
    database = listening_socket()
    try:
        url = f'postgresql://app:s3cret@127.0.0.1:{database.getsockname()[1]}/app'
        app = start_app({'DATABASE_URL': url})
        status, body = app.get('/db')[:2]
        assert status == 200 and body['status'] == 'pass' and 's3cret' not in json.dumps(body)
    finally:
        database.close()
    status, body = app.get('/db')[:2]
    assert status == 503 and body['status'] == 'fail'
    wait_until(lambda: app.get('/status')[1]['ready'])
    assert app.get('/ready')[0] == 503
    assert app.get('/status')[1]['status'] == 'degraded'


def test_memory_balloon(start_app):
    app = start_app({'APP_MEMORY_BALLOON_MB': '20', 'APP_DEBUG': '1'})
    resources = app.get('/status')[1]['resources']
    assert resources['balloon_mb'] == 20 and resources['memory_rss_bytes'] > 20 * 1024 * 1024
    assert app.get('/debug/balloon?mb=10')[:2] == (200, {'status': 'ok', 'balloon_mb': 30})
    assert app.get('/debug/balloon?mb=x')[0] == 400


def test_debug_write_probe(start_app, tmp_path):
    check_debug_write_probe(start_app, tmp_path)


def test_sighup_reloads_the_config_file(start_app, tmp_path):
    config = tmp_path / 'app.env'
    config.write_text('APP_VERSION=1.0.0\n')
    app = start_app({'APP_CONFIG_FILE': str(config)})
    assert app.get('/health')[1]['version'] == '1.0.0'
    config.write_text('# new release\nexport APP_VERSION="1.1.0"\n')
    app.signal(signal.SIGHUP)
    wait_until(lambda: app.get('/health')[1]['version'] == '1.1.0')
    config.write_text('APP_PORT=none\n')
    app.signal(signal.SIGHUP)
    time.sleep(0.2)
    assert app.get('/health')[1]['version'] == '1.1.0'
    assert app.stop() == 0
    assert 'reload failed, keeping the running configuration' in app.err


# --- socket activation -------------------------------------------------------------------

def test_socket_activation_zero_downtime_handover(start_app):
    """Served on the passed fd 3; a request arriving during the drain waits for the next instance."""
    sock = listening_socket()
    try:
        old = start_app({'APP_DEBUG': '1', 'APP_PORT': '1'}, sock=sock)
        assert old.get('/status')[1]['listen']['socket_activated'] is True
        slow = in_background(old.get, '/debug/slow?s=0.8', timeout=10)
        wait_until(lambda: in_flight(old) >= 2)
        old.signal(signal.SIGTERM)
        time.sleep(0.2)
        queued = in_background(get, old.port, '/status', timeout=15)
        assert old.wait(timeout=5) == 0
        slow['thread'].join(5)
        assert slow['result'][0] == 200
        assert queued['thread'].is_alive()
        new = start_app({'APP_DEBUG': '1'}, sock=sock, listening=False)
        queued['thread'].join(10)
        assert 'error' not in queued, queued.get('error')
        status, body = queued['result'][:2]
        assert status == 200 and body['pid'] == new.proc.pid and body['listen']['socket_activated'] is True
        assert new.stop() == 0
        assert 'socket-activated: yes' in new.out
    finally:
        sock.close()


# --- graceful shutdown ---------------------------------------------------------------------

def test_graceful_shutdown_drains_in_flight_requests(start_app):
    app = start_app({'APP_DEBUG': '1'})
    slow = in_background(app.get, '/debug/slow?s=0.8', timeout=10)
    wait_until(lambda: in_flight(app) >= 2)
    started = time.monotonic()
    app.signal(signal.SIGTERM)
    wait_until(lambda: app.get('/ready')[0] == 503, timeout=2)
    status, body, headers = app.get('/ready')
    assert status == 503 and body['status'] == 'draining' and headers['Connection'] == 'close'
    assert app.get('/')[0] == 503
    assert app.get('/health')[0] == 200
    assert app.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    slow['thread'].join(5)
    assert 'error' not in slow, slow.get('error')
    assert slow['result'][:2] == (200, {'status': 'ok', 'slept_s': 0.8})
    assert 'SIGTERM: draining 1 in-flight request(s)' in app.out and 'stopped' in app.out


def test_drain_timeout_bounds_the_shutdown(start_app):
    app = start_app({'APP_DEBUG': '1', 'APP_DRAIN_TIMEOUT': '0.5'})
    slow = in_background(app.get, '/debug/slow?s=20', timeout=10)
    wait_until(lambda: in_flight(app) >= 2)
    started = time.monotonic()
    app.signal(signal.SIGTERM)
    assert app.wait(timeout=5) == 0
    assert time.monotonic() - started < 3
    assert 'drain timeout' in app.err
    slow['thread'].join(5)
    assert 'error' in slow


# --- under the watchdog helper --------------------------------------------------------------

def test_under_the_watchdog_helper(start_app, notify_socket):
    """READY=1 once /health answers, WATCHDOG=1 while it does, none while the event loop hangs."""
    port = free_port()
    wrapper = [sys.executable, str(WATCHDOG), '--url', f'http://127.0.0.1:{port}/health',
               '--interval', '0.1', '--start-interval', '0.05', '--timeout', '0.3', '--']
    app = start_app({'APP_PORT': str(port), 'APP_DEBUG': '1', 'NOTIFY_SOCKET': notify_socket.env_value},
                    listening=False, wrapper=wrapper)
    notify_socket.wait_for('READY=1', timeout=10)
    notify_socket.wait_for('WATCHDOG=1', timeout=2)
    assert app.get('/status')[1]['watchdog']['enabled'] is False  # the app itself never notifies
    start = time.monotonic()
    assert app.get('/debug/freeze?s=1')[0] == 200
    timed = notify_socket.drain_timed(1.7)
    assert longest_gap(timed, 'WATCHDOG=1', start) >= 0.7  # pings every 0.1 s, none while /health hangs
    assert any(message.startswith('STATUS=unhealthy (') for dummy, message in timed)
    assert any(message == 'WATCHDOG=1' and when - start > 1 for when, message in timed)  # and again after
    app.signal(signal.SIGTERM)
    notify_socket.wait_for('STOPPING=1', timeout=5)
    assert app.wait(timeout=10) == 0  # the app drained and exited 0, and so did the helper
    assert 'health check failed, pausing watchdog pings' in app.err


def test_socket_activated_drain_serves_what_it_accepted(start_app):
    """With a passed socket, a connection accepted before SIGTERM whose request comes later gets a 200, not a 503."""
    sock = listening_socket()
    try:
        app = start_app({'APP_DRAIN_TIMEOUT': '30'}, sock=sock)
        early = socket.create_connection(('127.0.0.1', app.port), timeout=10)
        time.sleep(0.5)  # Node's event loop has accepted it
        app.signal(signal.SIGTERM)
        time.sleep(0.5)  # draining, no longer accepting
        early.sendall(b'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
        answer = b''
        while True:
            chunk = early.recv(65536)
            if not chunk:
                break
            answer += chunk
        early.close()
        assert answer.startswith(b'HTTP/1.1 200 '), answer[:200]
        assert app.wait(timeout=20) == 0
    finally:
        sock.close()
