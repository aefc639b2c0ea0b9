# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tests of the Python sample app, run as a real process on loopback ports.

The harness (``start_app``, ``notify_socket``) is in this folder's conftest.py.
"""

import importlib.util
import json
import re
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from common_endpoints import check_debug_write_probe
from process_harness import ISO_UTC, connectable, get, in_background, listening_socket, longest_gap, wait_until

APP = Path(__file__).resolve().parents[3] / 'sample-apps' / 'python' / 'prodready_sample_app.py'


def load_app_module():
    spec = importlib.util.spec_from_file_location('prodready_sample_app', str(APP))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


app_module = load_app_module()


def answers_health(port):
    try:
        get(port, '/health', timeout=1.0)
    except OSError:
        return False
    return True


@pytest.fixture
def app_launch():
    """How ``start_app`` runs this app: it is listening once /health answers at all."""
    return {'command': [sys.executable, str(APP)], 'base_env': {'PYTHONUNBUFFERED': '1'}, 'ready': answers_health}


# --- pure functions (module imported, no process) --------------------------------------

def test_parse_env_file():
    text = '# comment\n; also\nexport APP_VERSION="1.2.3"\nAPP_NAME = api \nBROKEN\n=x\nQ=\'a b\'\n'
    assert app_module.parse_env_file(text) == {'APP_VERSION': '1.2.3', 'APP_NAME': 'api', 'Q': 'a b'}


def test_config_defaults_and_validation():
    config = app_module.Config({})
    assert (config.host, config.port, config.version, config.drain_timeout) == ('127.0.0.1', 8000, '0.0.0', 10.0)
    assert not config.no_listen and not config.debug and config.database_url == ''
    assert app_module.Config({'APP_NO_LISTEN': 'true', 'DATABASE_URL': 'redis://r'}).no_listen
    for env in ({'APP_PORT': 'http'}, {'APP_PORT': '70000'}, {'APP_HEALTH_STATUS': '99'}, {'APP_STARTUP_DELAY': '-1'}):
        with pytest.raises(app_module.ConfigError):
            app_module.Config(env)


def test_config_file_overrides_the_environment(tmp_path):
    path = tmp_path / 'app.env'
    path.write_text('APP_VERSION=2.0.0\n')
    config = app_module.load_config({'APP_VERSION': '1.0.0', 'APP_NAME': 'x', 'APP_CONFIG_FILE': str(path)})
    assert (config.version, config.name) == ('2.0.0', 'x')
    with pytest.raises(app_module.ConfigError, match='cannot read APP_CONFIG_FILE'):
        app_module.load_config({'APP_CONFIG_FILE': str(tmp_path / 'missing')})


def test_db_target_never_contains_credentials():
    assert app_module.db_target('postgresql://u:secret@db.internal/app') == (
        'tcp', ('db.internal', 5432), 'postgresql://db.internal:5432')
    assert app_module.db_target('postgresql+asyncpg://u:pw@10.0.0.5:6432/app')[1] == ('10.0.0.5', 6432)
    assert app_module.db_target('redis://:pw@127.0.0.1/0')[1] == ('127.0.0.1', 6379)
    assert app_module.db_target('postgresql:///app?host=/run/postgresql') == (
        'unix', '/run/postgresql/.s.PGSQL.5432', 'postgresql:/run/postgresql/.s.PGSQL.5432')
    assert app_module.db_target('sqlite:////var/lib/app/db.sqlite3')[:2] == ('file', '//var/lib/app/db.sqlite3')
    for bad in ('ftp://x/', 'mysql:///nohost'):
        with pytest.raises(ValueError):
            app_module.db_target(bad)


def test_notify_address_and_watchdog_interval():
    assert app_module.notify_address('@sd') == '\0sd'
    assert app_module.notify_address('/run/systemd/notify') == '/run/systemd/notify'
    assert app_module.notify_address('') is None
    assert app_module.watchdog_interval({'WATCHDOG_USEC': '30000000'}, 5) == 15.0
    assert app_module.watchdog_interval({'WATCHDOG_USEC': '30000000', 'WATCHDOG_PID': '5'}, 5) == 15.0
    assert app_module.watchdog_interval({'WATCHDOG_USEC': '30000000', 'WATCHDOG_PID': '6'}, 5) is None
    assert app_module.watchdog_interval({}, 5) is None


# --- endpoints ---------------------------------------------------------------------------

def test_endpoints_and_json_shapes(start_app):
    app = start_app({'APP_NAME': 'crypto-api', 'APP_VERSION': '1.4.2'})
    status, body, headers = app.get('/')
    assert status == 200 and body['message'] == 'Hello from crypto-api' and body['version'] == '1.4.2'
    assert headers['Content-Type'] == 'application/json'
    assert app.get('/health')[:2] == (200, {'status': 'healthy', 'service': 'crypto-api', 'version': '1.4.2'})
    status, body = app.get('/ready')[:2]
    assert status == 200 and body['status'] == 'ready'
    assert {check['status'] for check in body['checks'].values()} <= {'pass', 'not_configured'}
    status, body = app.get('/status')[:2]
    assert status == 200
    for key in ('status', 'service', 'version', 'uptime', 'timestamp', 'started_at', 'checks', 'resources',
                'runtime', 'requests', 'listen', 'watchdog', 'pid'):
        assert key in body, key
    assert body['status'] == 'healthy' and body['service'] == 'crypto-api' and body['version'] == '1.4.2'
    assert ISO_UTC.match(body['timestamp']) and ISO_UTC.match(body['started_at'])
    assert isinstance(body['uptime'], float) and body['uptime'] >= 0
    assert set(body['checks']) >= {'startup', 'shutdown', 'liveness', 'database'}
    assert body['checks']['database'] == {'status': 'not_configured'}
    assert body['resources']['memory_rss_bytes'] > 0
    assert body['runtime']['language'] == 'python'
    assert body['listen'] == {'address': f'127.0.0.1:{app.port}', 'socket_activated': False}
    assert app.get('/db')[:2] == (200, {'status': 'not_configured'})
    assert app.get('/nope')[:2] == (404, {'error': 'not found', 'path': '/nope'})
    assert app.get('/debug/slow?s=0')[0] == 404  # debug endpoints need APP_DEBUG=1
    status, body, headers = app.get('/', method='POST')
    assert status == 405 and headers['Allow'] == 'GET, HEAD'
    status, body, headers = app.get('/health', method='HEAD')
    assert status == 200 and body is None and int(headers['Content-Length']) > 0
    assert app.stop() == 0
    assert '"GET /health HTTP/1.1" 200 ' in app.out  # access log on stdout
    assert 'GET /health' not in app.err


def test_startup_delay_readiness_and_ready_notification(start_app, notify_socket):
    started = time.monotonic()
    app = start_app({'APP_STARTUP_DELAY': '0.6', 'NOTIFY_SOCKET': notify_socket.env_value})
    assert app.get('/health')[0] == 200  # alive while starting
    status, body = app.get('/ready')[:2]
    assert status == 503 and body['status'] == 'starting'
    assert body['checks']['startup']['status'] == 'fail' and body['checks']['startup']['remaining_s'] > 0
    assert app.get('/status')[1]['status'] == 'starting'
    ready = notify_socket.wait_for('READY=1', timeout=5)
    assert time.monotonic() - started >= 0.55
    assert any(line.startswith('STATUS=ready: ') for line in ready.split('\n'))
    assert app.get('/ready')[0] == 200
    assert app.stop() == 0


def test_health_status_knob(start_app):
    app = start_app({'APP_HEALTH_STATUS': '500'})
    status, body = app.get('/health')[:2]
    assert status == 500 and body['status'] == 'unhealthy'
    status, body = app.get('/ready')[:2]
    assert status == 503 and body['status'] == 'not_ready' and body['checks']['liveness']['status'] == 'fail'
    status, body = app.get('/status')[:2]
    assert status == 200 and body['status'] == 'unhealthy'
    assert app.get('/')[0] == 200


def test_health_hang_knob(start_app):
    app = start_app({'APP_HEALTH_HANG': '3'}, listening=False)
    wait_until(lambda: connectable(app.port))
    started = time.monotonic()
    with pytest.raises(socket.timeout):
        app.get('/health', timeout=0.5)
    assert time.monotonic() - started < 2
    assert app.get('/')[0] == 200  # the rest of the app still answers


def test_no_listen_knob(start_app, notify_socket):
    app = start_app({'APP_NO_LISTEN': '1', 'NOTIFY_SOCKET': notify_socket.env_value}, listening=False)
    status = notify_socket.wait_for('STATUS=not listening (APP_NO_LISTEN=1)', timeout=5)
    assert status
    time.sleep(0.3)
    assert app.proc.poll() is None  # alive ...
    assert not connectable(app.port)  # ... but never serving
    assert not any('READY=1' in m.split('\n') for m in notify_socket.messages)
    assert app.stop(timeout=5) == 0


def test_configuration_error_exits_2(start_app):
    app = start_app({'APP_PORT': 'eighty'}, listening=False)
    assert app.wait() == 2
    assert 'APP_PORT' in app.err


def test_port_in_use_exits_1(start_app):
    holder = listening_socket()
    try:
        app = start_app({'APP_PORT': str(holder.getsockname()[1])}, listening=False)
        assert app.wait() == 1
        assert 'cannot serve' in app.err
    finally:
        holder.close()


def test_database_check_over_tcp(start_app):
    database = listening_socket()
    try:
        url = f'postgresql://app:s3cret@127.0.0.1:{database.getsockname()[1]}/app'
        app = start_app({'DATABASE_URL': url})
        status, body = app.get('/db')[:2]
        assert status == 200 and body['status'] == 'pass' and 's3cret' not in json.dumps(body)
        assert body['target'] == f'postgresql://127.0.0.1:{database.getsockname()[1]}'
        assert app.get('/ready')[0] == 200
    finally:
        database.close()
    status, body = app.get('/db')[:2]
    assert status == 503 and body['status'] == 'fail'
    status, body = app.get('/ready')[:2]
    assert status == 503 and body['status'] == 'not_ready'
    assert app.get('/status')[1]['status'] == 'degraded'


def test_memory_balloon(start_app):
    app = start_app({'APP_MEMORY_BALLOON_MB': '20', 'APP_DEBUG': '1'})
    resources = app.get('/status')[1]['resources']
    assert resources['balloon_mb'] == 20 and resources['memory_rss_bytes'] > 20 * 1024 * 1024
    assert app.get('/debug/balloon?mb=10')[:2] == (200, {'status': 'ok', 'balloon_mb': 30})
    assert app.get('/debug/balloon?mb=-1')[0] == 400
    assert app.get('/debug/balloon?mb=lots')[0] == 400


def test_debug_write_probe(start_app, tmp_path):
    check_debug_write_probe(start_app, tmp_path)


def test_debug_exit(start_app):
    app = start_app({'APP_DEBUG': '1'})
    assert app.get('/debug/exit?code=3')[0] == 200
    assert app.wait(timeout=5) == 3


# --- socket activation -------------------------------------------------------------------

def test_socket_activation_serves_the_passed_socket(start_app):
    sock = listening_socket()
    try:
        app = start_app({'APP_PORT': '1'}, sock=sock)  # APP_PORT is ignored
        status, body = app.get('/status')[:2]
        assert status == 200 and body['listen']['socket_activated'] is True
        assert body['listen']['address'] == f'127.0.0.1:{app.port}'
        assert app.stop() == 0
        assert 'socket-activated: yes' in app.out
    finally:
        sock.close()


def test_socket_activation_ignores_another_processes_fds(start_app):
    app = start_app({'LISTEN_FDS': '1', 'LISTEN_PID': '1'})
    assert app.get('/status')[1]['listen']['socket_activated'] is False


def test_socket_activation_zero_downtime_handover(start_app):
    """A request arriving while the old instance drains waits in the socket for the new one."""
    sock = listening_socket()
    try:
        old = start_app({'APP_DEBUG': '1'}, sock=sock)
        slow = in_background(old.get, '/debug/slow?s=0.8', timeout=10)
        wait_until(lambda: old.get('/status')[1]['requests']['in_flight'] >= 2)
        old.signal(signal.SIGTERM)
        time.sleep(0.2)  # the old instance has stopped accepting
        queued = in_background(get, old.port, '/status', timeout=15)
        assert old.wait(timeout=5) == 0
        slow['thread'].join(5)
        assert slow['result'][0] == 200  # the in-flight request finished
        assert queued['thread'].is_alive()  # nobody has answered the queued one yet
        new = start_app({'APP_DEBUG': '1'}, sock=sock, listening=False)
        queued['thread'].join(10)
        assert 'error' not in queued, queued.get('error')
        status, body = queued['result'][:2]
        assert status == 200 and body['pid'] == new.proc.pid
        assert new.stop() == 0
    finally:
        sock.close()


# --- sd_notify ---------------------------------------------------------------------------

def test_sd_notify_ready_watchdog_reload_stopping(start_app, notify_socket, tmp_path):
    config = tmp_path / 'app.env'
    config.write_text('APP_VERSION=1.0.0\n')
    app = start_app({'NOTIFY_SOCKET': notify_socket.env_value, 'WATCHDOG_USEC': '200000',
                     'APP_CONFIG_FILE': str(config)})
    ready = notify_socket.wait_for('READY=1', timeout=5)
    assert 'STATUS=ready: prodready-sample-python 1.0.0 on 127.0.0.1:' in ready
    notify_socket.wait_for('WATCHDOG=1', timeout=2)
    assert len([m for m in notify_socket.drain(0.5) if m == 'WATCHDOG=1']) >= 3  # every 0.1 s
    assert app.get('/status')[1]['watchdog'] == {'enabled': True, 'interval_s': 0.1}
    config.write_text('APP_VERSION=2.0.0\n')
    app.signal(signal.SIGHUP)
    reloading = notify_socket.wait_for('RELOADING=1', timeout=5)
    assert re.search(r'^MONOTONIC_USEC=\d+$', reloading, re.MULTILINE)
    assert 'STATUS=ready: prodready-sample-python 2.0.0' in notify_socket.wait_for('READY=1', timeout=5)
    assert app.get('/status')[1]['version'] == '2.0.0'
    config.write_text('APP_DRAIN_TIMEOUT=soon\n')  # a broken reload keeps the running configuration
    app.signal(signal.SIGHUP)
    notify_socket.wait_for('READY=1', timeout=5)
    assert app.get('/health')[1]['version'] == '2.0.0'
    app.signal(signal.SIGTERM)
    notify_socket.wait_for('STOPPING=1', timeout=5)
    assert app.wait() == 0
    assert 'reload failed, keeping the running configuration' in app.err


def test_watchdog_pings_stop_while_the_accept_loop_is_stuck(start_app, notify_socket):
    app = start_app({'NOTIFY_SOCKET': notify_socket.env_value, 'WATCHDOG_USEC': '200000', 'APP_DEBUG': '1'})
    notify_socket.wait_for('WATCHDOG=1', timeout=5)
    start = time.monotonic()
    assert app.get('/debug/freeze?s=1.3')[0] == 200
    timed = notify_socket.drain_timed(2.0)
    # Pings every 0.1 s, none from 0.6 s into the stall (stale heartbeat) until it ends ...
    assert longest_gap(timed, 'WATCHDOG=1', start) >= 0.5
    # ... and again once the loop runs.
    assert any(message == 'WATCHDOG=1' and when - start > 1.3 for when, message in timed)
    assert app.stop() == 0


def test_no_watchdog_pings_for_another_main_pid(start_app, notify_socket):
    app = start_app({'NOTIFY_SOCKET': notify_socket.env_value, 'WATCHDOG_USEC': '100000', 'WATCHDOG_PID': '1'})
    notify_socket.wait_for('READY=1', timeout=5)
    assert 'WATCHDOG=1' not in notify_socket.drain(0.3)
    assert app.stop() == 0


# --- graceful shutdown ---------------------------------------------------------------------

def test_graceful_shutdown_drains_in_flight_requests(start_app, notify_socket):
    # The slow request outlasts the draining checks even on a busy machine; the
    # drain timeout (60 s here) is far above it, so a quick exit proves the drain ended early.
    app = start_app({'APP_DEBUG': '1', 'NOTIFY_SOCKET': notify_socket.env_value, 'APP_DRAIN_TIMEOUT': '60'})
    slow = in_background(app.get, '/debug/slow?s=3', timeout=10)
    wait_until(lambda: app.get('/status')[1]['requests']['in_flight'] >= 2)
    started = time.monotonic()
    app.signal(signal.SIGTERM)
    notify_socket.wait_for('STOPPING=1', timeout=5)
    status, body, headers = app.get('/ready')
    assert status == 503 and body['status'] == 'draining' and headers['Connection'] == 'close'
    status, body = app.get('/')[:2]
    assert status == 503 and body['status'] == 'draining'  # no new work
    assert app.get('/health')[0] == 200  # still alive
    assert app.get('/status')[1]['status'] == 'draining'
    assert app.wait(timeout=10) == 0
    assert time.monotonic() - started < 30
    slow['thread'].join(5)
    assert 'error' not in slow, slow.get('error')
    assert slow['result'][:2] == (200, {'slept_s': 3, 'status': 'ok'})
    assert 'SIGTERM: draining 1 in-flight request(s)' in app.out and 'stopped' in app.out


def test_sigint_without_requests_exits_at_once(start_app):
    app = start_app()
    started = time.monotonic()
    app.signal(signal.SIGINT)
    assert app.wait(timeout=5) == 0
    assert time.monotonic() - started < 2


def test_drain_timeout_bounds_the_shutdown(start_app):
    app = start_app({'APP_DEBUG': '1', 'APP_DRAIN_TIMEOUT': '0.5'})
    slow = in_background(app.get, '/debug/slow?s=20', timeout=10)
    wait_until(lambda: app.get('/status')[1]['requests']['in_flight'] >= 2)
    started = time.monotonic()
    app.signal(signal.SIGTERM)
    assert app.wait(timeout=5) == 0
    assert time.monotonic() - started < 3
    assert 'drain timeout: exiting with 1 request(s) still in flight' in app.err
    slow['thread'].join(5)
    assert 'error' in slow  # that request was cut off


def test_socket_activated_drain_serves_what_it_accepted(start_app):
    """With a passed socket, a connection accepted before SIGTERM whose request comes later gets a 200.

    Without the fix the instance exited at once (no request in flight) and dropped it, or answered 503.
    """
    sock = listening_socket()
    try:
        app = start_app({'APP_DRAIN_TIMEOUT': '30'}, sock=sock)
        early = socket.create_connection(('127.0.0.1', app.port), timeout=10)
        wait_until(lambda: app.get('/status')[1]['requests']['total'] >= 1)
        time.sleep(0.5)  # the accept loop (polling every 0.2 s) has taken the connection
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
