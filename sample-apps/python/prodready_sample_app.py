# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""prodready sample app: a small HTTP service, Python standard library only.

It stands in for a user's service (an uvicorn API, say) in the hardening role,
the deploy/rollback health gates and ``make demo``, and shows what a service
needs to run well under systemd:

* ``/health`` (liveness), ``/ready`` (readiness), ``/status`` (diagnostics),
  ``/`` (hello) and ``/db`` (a TCP reachability check of ``DATABASE_URL``);
* configuration from the environment (``EnvironmentFile=`` friendly) and,
  on SIGHUP, from ``APP_CONFIG_FILE`` (``KEY=VALUE`` lines, overriding the
  environment);
* systemd socket activation: a listening socket passed as fd 3
  (``LISTEN_FDS``/``LISTEN_PID``) is served instead of binding, so the socket,
  and the connections queued on it, survive restarts;
* ``sd_notify`` over ``$NOTIFY_SOCKET``: ``READY=1`` once ready,
  ``STATUS=``, ``WATCHDOG=1`` every ``WATCHDOG_USEC/2`` while the accept loop
  is alive (a stopped or wedged process stops pinging), ``RELOADING=1`` and
  ``READY=1`` around a SIGHUP reload, ``STOPPING=1`` on shutdown;
* graceful shutdown on SIGTERM/SIGINT: ``/ready`` answers 503 and new work
  gets 503 while in-flight requests finish (at most ``APP_DRAIN_TIMEOUT``
  seconds), then exit 0. A socket-activated instance instead stops accepting at
  once: new connections wait in the socket for the next instance, and the
  connections it accepted before are served normally (no 503).

Access log lines go to stdout, errors to stderr, one flushed line each.
``sample-apps/README.md`` lists the endpoints and environment variables.
Run: ``python3 prodready_sample_app.py`` (Python 3.9+).
"""

import errno
import json
import os
import platform
import select
import signal
import socket
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

SD_LISTEN_FDS_START = 3
# The accept loop wakes at least this often; each wake-up is a heartbeat.
LOOP_POLL = 0.2
MIB = 1024 * 1024
DEFAULT_DB_PORTS = {
    'postgres': 5432, 'postgresql': 5432, 'pgsql': 5432,
    'mysql': 3306, 'mariadb': 3306,
    'redis': 6379, 'rediss': 6379,
    'mongodb': 27017, 'amqp': 5672, 'amqps': 5671,
}
# Endpoints that keep answering during the drain (probes and diagnostics).
PROBE_PATHS = ('/health', '/ready', '/status')
OUTPUT_LOCK = threading.Lock()
APP_TAG = 'prodready-sample-app'


def write_probe(path):
    """Try to write a small file at ``path`` as this process (sandbox tests).

    Returns ``written`` and, when the write fails, the errno name (``EROFS``
    for a read-only path, ``ENOENT`` for a hidden one...). A written file is
    left in place so a test can look for it.
    """
    if not path.startswith('/'):
        return {'path': path, 'written': False, 'error': 'EINVAL', 'detail': 'path must be absolute'}
    try:
        with open(path, 'w', encoding='utf-8') as handle:
            handle.write('written by %d\n' % os.getpid())
    except OSError as err:
        return {'path': path, 'written': False, 'error': errno.errorcode.get(err.errno, str(err.errno)),
                'detail': err.strerror}
    return {'path': path, 'written': True, 'error': None}


class ConfigError(Exception):
    pass


def iso_time(epoch=None):
    """UTC ISO 8601 with milliseconds, like JavaScript's ``Date.toISOString()``."""
    epoch = time.time() if epoch is None else epoch
    return time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(epoch)) + f'.{int(epoch % 1 * 1000):03d}Z'


def write_line(stream, line):
    with OUTPUT_LOCK:
        try:
            stream.write(line + '\n')
            stream.flush()
        except (OSError, ValueError):
            pass


def log_info(message):
    write_line(sys.stdout, f'{iso_time()} {APP_TAG}[{os.getpid()}]: {message}')


def log_error(message):
    write_line(sys.stderr, f'{iso_time()} {APP_TAG}[{os.getpid()}]: {message}')


def parse_env_file(text):
    """Parse ``KEY=VALUE`` lines the way systemd's ``EnvironmentFile=`` does (simplified)."""
    values = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in '#;':
            continue
        if line.startswith('export '):
            line = line[len('export '):].lstrip()
        key, sep, value = line.partition('=')
        key = key.strip()
        if not sep or not key:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in '"\'':
            value = value[1:-1]
        values[key] = value
    return values


def _number(env, key, default, kind, minimum=None, maximum=None):
    raw = env.get(key, '')
    if raw.strip() == '':
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f'{key}={raw!r} is not a valid {kind.__name__}') from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ConfigError(f'{key}={raw!r} is out of range [{minimum}, {maximum}]')
    return value


def _flag(env, key):
    return env.get(key, '').strip().lower() in ('1', 'true', 'yes', 'on')


class Config:
    """Settings from the environment (plus ``APP_CONFIG_FILE``, which wins)."""

    def __init__(self, env):
        self.host = env.get('APP_HOST', '').strip() or '127.0.0.1'
        self.port = _number(env, 'APP_PORT', 8000, int, 0, 65535)
        self.name = env.get('APP_NAME', '').strip() or 'prodready-sample-python'
        self.version = env.get('APP_VERSION', '').strip() or '0.0.0'
        self.startup_delay = _number(env, 'APP_STARTUP_DELAY', 0.0, float, 0.0)
        self.health_status = _number(env, 'APP_HEALTH_STATUS', 200, int, 200, 599)
        self.health_hang = _number(env, 'APP_HEALTH_HANG', 0.0, float, 0.0)
        self.no_listen = _flag(env, 'APP_NO_LISTEN')
        self.debug = _flag(env, 'APP_DEBUG')
        self.balloon_mb = _number(env, 'APP_MEMORY_BALLOON_MB', 0, int, 0)
        self.drain_timeout = _number(env, 'APP_DRAIN_TIMEOUT', 10.0, float, 0.0)
        self.database_url = (env.get('APP_DATABASE_URL', '') or env.get('DATABASE_URL', '')).strip()
        self.db_timeout = _number(env, 'APP_DB_TIMEOUT', 1.0, float, 0.01)
        self.config_file = env.get('APP_CONFIG_FILE', '').strip()


def load_config(environ):
    env = dict(environ)
    path = env.get('APP_CONFIG_FILE', '').strip()
    if path:
        try:
            with open(path, encoding='utf-8') as handle:
                env.update(parse_env_file(handle.read()))
        except OSError as exc:
            raise ConfigError(f'cannot read APP_CONFIG_FILE {path}: {exc.strerror}') from None
    return Config(env)


def notify_address(value):
    """``$NOTIFY_SOCKET`` as a connectable AF_UNIX address (``@`` = abstract namespace)."""
    if not value:
        return None
    if value[0] == '@':
        return '\0' + value[1:]
    if value[0] == '/':
        return value
    return None  # vsock and other transports are not supported here


class Notifier:
    """Minimal ``sd_notify(3)``: one datagram per call, silently off outside systemd."""

    def __init__(self, environ):
        self.address = notify_address(environ.get('NOTIFY_SOCKET', ''))

    def __call__(self, *fields):
        if not self.address:
            return False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.connect(self.address)
            sock.sendall('\n'.join(fields).encode('utf-8'))
            return True
        except OSError as exc:
            log_error(f'sd_notify failed: {exc}')
            return False
        finally:
            sock.close()


def watchdog_interval(environ, pid):
    """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None."""
    try:
        usec = int(environ.get('WATCHDOG_USEC', '0'))
    except ValueError:
        return None
    owner = environ.get('WATCHDOG_PID', '')
    if usec <= 0 or (owner and owner != str(pid)):
        return None
    return usec / 2e6


def passed_socket(environ, pid):
    """The first socket systemd passed (``LISTEN_FDS``), or None."""
    if environ.get('LISTEN_PID', '') != str(pid):
        return None
    try:
        count = int(environ.get('LISTEN_FDS', '0'))
    except ValueError:
        return None
    if count < 1:
        return None
    if count > 1:
        log_error(f'LISTEN_FDS={count}: serving the first socket (fd {SD_LISTEN_FDS_START}) only')
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    sock.setblocking(True)
    return sock


def monotonic_usec():
    return int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1000000)


def db_target(url):
    """(kind, address, label) to check for a database URL; never includes credentials."""
    parts = urlsplit(url)
    scheme = parts.scheme.split('+')[0].lower()
    if scheme == 'sqlite':
        path = unquote(parts.path)
        return 'file', path, f'sqlite:{path}'
    if scheme not in DEFAULT_DB_PORTS:
        raise ValueError(f'unsupported scheme {parts.scheme!r}')
    port = parts.port or DEFAULT_DB_PORTS[scheme]
    host = parts.hostname or parse_qs(parts.query).get('host', [''])[0]
    if scheme in ('postgres', 'postgresql', 'pgsql') and (not host or host.startswith('/')):
        path = os.path.join(host or '/var/run/postgresql', f'.s.PGSQL.{port}')
        return 'unix', path, f'{scheme}:{path}'
    if not host:
        raise ValueError('no host in the URL')
    return 'tcp', (host, port), f'{scheme}://{host}:{port}'


def check_database(url, timeout):
    if not url:
        return {'status': 'not_configured'}
    try:
        kind, address, label = db_target(url)
    except ValueError as exc:
        return {'status': 'fail', 'error': f'invalid database URL: {exc}'}
    start = time.monotonic()
    result = {'target': label}
    try:
        if kind == 'file':
            if not os.path.isfile(address):
                raise OSError('no such file')
        elif kind == 'unix':
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(address)
            finally:
                sock.close()
        else:
            socket.create_connection(address, timeout=timeout).close()
    except OSError as exc:
        result.update(status='fail', error=str(exc) or exc.__class__.__name__)
    else:
        result['status'] = 'pass'
    result['response_time_ms'] = round((time.monotonic() - start) * 1000, 1)
    return result


def format_address(address):
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f'[{host}]:{port}' if ':' in host else f'{host}:{port}'
    return str(address)  # an AF_UNIX path


def memory_rss_bytes():
    try:
        with open('/proc/self/statm') as handle:
            return int(handle.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError, IndexError):
        return None


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    app = None

    def service_actions(self):
        self.app.loop_tick()

    def process_request(self, request, client_address):
        # Accepted, its first request not read yet: the drain waits for it (socket activation).
        self.app.connection_accepted(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        try:
            super().shutdown_request(request)
        finally:
            self.app.connection_served(request)


class Server6(Server):
    address_family = socket.AF_INET6


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'prodready-sample-app/1'
    timeout = 60  # idle keep-alive connections
    started = None
    dispatching = False

    def address_string(self):
        if isinstance(self.client_address, tuple) and self.client_address:
            return str(self.client_address[0])
        return 'unix'

    def log_request(self, code='-', size='-'):
        if not self.dispatching:  # errors answered by http.server itself
            self.access_log(code, size)

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        log_error(f'{self.address_string()} {format % args}')

    def access_log(self, code, size):
        duration = '-'
        if self.started is not None:
            duration = f'{(time.monotonic() - self.started) * 1000:.1f}ms'
        write_line(sys.stdout, f'{self.address_string()} - - [{iso_time()}] "{self.requestline}" {code} {size} {duration}')

    def do_GET(self):
        self.dispatch(head=False)

    def do_HEAD(self):
        self.dispatch(head=True)

    def not_allowed(self):
        self.close_connection = True  # the request body, if any, is not read
        self.dispatch(head=False, allowed=False)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = not_allowed

    def dispatch(self, head, allowed=True):
        app = self.server.app
        self.started = time.monotonic()
        self.dispatching = True
        app.request_started()
        app.connection_served(self.request)
        code, size = 500, 0
        try:
            if allowed:
                url = urlsplit(self.path)
                code, payload, headers = app.route(url.path, parse_qs(url.query))
            else:
                code, payload, headers = 405, {'error': 'method not allowed'}, {'Allow': 'GET, HEAD', 'Connection': 'close'}
            if app.draining:
                self.close_connection = True
                headers['Connection'] = 'close'
            size = self.send_json(code, payload, headers, head)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            log_error(f'{self.address_string()} client went away during {self.requestline}')
        except Exception:  # noqa: BLE001 (answer 500 and log, like any web framework)
            log_error(f'error handling {self.requestline}:\n{traceback.format_exc().rstrip()}')
            code, self.close_connection = 500, True
            try:
                size = self.send_json(500, {'error': 'internal server error'}, {'Connection': 'close'}, head)
            except OSError:
                pass
        finally:
            app.request_finished()
            self.dispatching = False
            self.access_log(code, size)

    def send_json(self, code, payload, headers, head):
        body = b'' if code in (204, 304) else (json.dumps(payload, sort_keys=True) + '\n').encode('utf-8')
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.send_header('Cache-Control', 'no-store')
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)
        return len(body)


def _query_number(query, key, default, maximum):
    raw = query.get(key, [str(default)])[0]
    value = float(raw)  # ValueError: caller answers 400
    if not 0 <= value <= maximum:
        raise ValueError(f'{key} must be between 0 and {maximum}')
    return value


class App:
    def __init__(self, config, environ):
        self.config = config
        self.environ = environ
        self.pid = os.getpid()
        self.notify = Notifier(environ)
        self.started_wall = time.time()
        self.started = time.monotonic()
        self.ready_at = self.started + config.startup_delay
        self.ready = False
        self.draining = False
        self.drain_deadline = None
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.requests_total = 0
        self.fresh_connections = set()
        self.loop_beat = self.started
        self.freeze_until = 0.0
        self.balloons = []
        self.server = None
        self.server_thread = None
        self.socket_activated = False
        self.listen_address = None
        self.watchdog_every = watchdog_interval(environ, self.pid)

    # --- accounting -------------------------------------------------------
    def request_started(self):
        with self.lock:
            self.in_flight += 1
            self.requests_total += 1

    def request_finished(self):
        with self.lock:
            self.in_flight -= 1

    def connection_accepted(self, request):
        with self.lock:
            self.fresh_connections.add(id(request))

    def connection_served(self, request):
        with self.lock:
            self.fresh_connections.discard(id(request))

    def busy(self):
        """Requests in flight, or (with a passed socket) connections accepted whose request is not read yet."""
        with self.lock:
            return self.in_flight > 0 or (self.socket_activated and bool(self.fresh_connections))

    def loop_tick(self):
        """Called by the accept loop on every wake-up: the heartbeat the watchdog pings on."""
        self.loop_beat = time.monotonic()
        stall = self.freeze_until - self.loop_beat
        if stall > 0:  # /debug/freeze: simulate a wedged accept loop
            time.sleep(stall)
            self.loop_beat = time.monotonic()

    def loop_alive(self):
        stale_after = max(3 * LOOP_POLL, self.watchdog_every or 0)
        return self.server is not None and time.monotonic() - self.loop_beat <= stale_after

    # --- state --------------------------------------------------------------
    def liveness_ok(self):
        return 200 <= self.config.health_status < 300

    def checks(self):
        cfg = self.config
        now = time.monotonic()
        checks = {
            'startup': {'status': 'pass' if self.ready else 'fail',
                        'remaining_s': 0.0 if self.ready else round(max(0.0, self.ready_at - now), 3)},
            'shutdown': {'status': 'fail' if self.draining else 'pass', 'draining': self.draining},
            'liveness': {'status': 'pass' if self.liveness_ok() else 'fail', 'http_status': cfg.health_status},
            'accept_loop': {'status': 'pass' if self.loop_alive() else 'fail',
                            'last_beat_s': round(now - self.loop_beat, 3)},
            'database': check_database(cfg.database_url, cfg.db_timeout),
        }
        return checks

    def overall(self, checks):
        if self.draining:
            return 'draining'
        if not self.ready:
            return 'starting'
        if checks['liveness']['status'] != 'pass' or checks['accept_loop']['status'] != 'pass':
            return 'unhealthy'
        if checks['database']['status'] == 'fail':
            return 'degraded'
        return 'healthy'

    # --- endpoints ------------------------------------------------------------
    def route(self, path, query):
        cfg = self.config
        # With a passed socket the instance stopped accepting: what it accepted before is served normally.
        if self.draining and not self.socket_activated and path not in PROBE_PATHS:
            return 503, {'status': 'draining', 'error': 'shutting down', 'service': cfg.name}, {'Retry-After': '1'}
        if path == '/':
            return 200, {'message': f'Hello from {cfg.name}', 'service': cfg.name, 'version': cfg.version,
                         'runtime': 'python'}, {}
        if path == '/health':
            return self.health()
        if path == '/ready':
            return self.readiness()
        if path == '/status':
            return 200, self.status(), {}
        if path == '/db':
            result = check_database(cfg.database_url, cfg.db_timeout)
            return (503 if result['status'] == 'fail' else 200), result, {}
        if cfg.debug and path.startswith('/debug/'):
            try:
                return self.debug(path, query)
            except ValueError as exc:
                return 400, {'error': str(exc)}, {}
        return 404, {'error': 'not found', 'path': path}, {}

    def health(self):
        cfg = self.config
        if cfg.health_hang > 0:
            time.sleep(cfg.health_hang)
        body = {'status': 'healthy' if self.liveness_ok() else 'unhealthy', 'service': cfg.name, 'version': cfg.version}
        return cfg.health_status, body, {}

    def readiness(self):
        cfg = self.config
        if cfg.health_hang > 0:
            time.sleep(cfg.health_hang)
        checks = self.checks()
        if self.draining:
            state = 'draining'
        elif not self.ready:
            state = 'starting'
        elif any(check['status'] == 'fail' for check in checks.values()):
            state = 'not_ready'
        else:
            state = 'ready'
        body = {'status': state, 'service': cfg.name, 'version': cfg.version, 'checks': checks}
        return (200 if state == 'ready' else 503), body, {}

    def status(self):
        cfg = self.config
        checks = self.checks()
        usage = os.times()
        return {
            'status': self.overall(checks),
            'service': cfg.name,
            'version': cfg.version,
            'uptime': round(time.monotonic() - self.started, 3),
            'timestamp': iso_time(),
            'started_at': iso_time(self.started_wall),
            'ready': self.ready,
            'pid': self.pid,
            'hostname': socket.gethostname(),
            'runtime': {'language': 'python', 'version': platform.python_version()},
            'listen': {'address': self.listen_address, 'socket_activated': self.socket_activated},
            'requests': {'total': self.requests_total, 'in_flight': self.in_flight},
            'resources': {
                'memory_rss_bytes': memory_rss_bytes(),
                'cpu_user_seconds': round(usage.user, 3),
                'cpu_system_seconds': round(usage.system, 3),
                'threads': threading.active_count(),
                'balloon_mb': self.balloon_mb(),
            },
            'watchdog': {'enabled': self.watchdog_every is not None, 'interval_s': self.watchdog_every},
            'checks': checks,
        }

    def balloon_mb(self):
        return sum(len(chunk) for chunk in self.balloons) // MIB

    def inflate(self, mb):
        if mb > 0:
            self.balloons.append(bytearray(b'\x5a') * (mb * MIB))  # written, so really resident

    def debug(self, path, query):
        if path == '/debug/slow':
            seconds = _query_number(query, 's', 1, 600)
            time.sleep(seconds)
            return 200, {'status': 'ok', 'slept_s': seconds}, {}
        if path == '/debug/balloon':
            mb = int(_query_number(query, 'mb', 64, 1 << 20))
            try:
                self.inflate(mb)
            except MemoryError:
                return 507, {'error': 'MemoryError', 'balloon_mb': self.balloon_mb()}, {}
            return 200, {'status': 'ok', 'balloon_mb': self.balloon_mb()}, {}
        if path == '/debug/freeze':
            seconds = _query_number(query, 's', 5, 3600)
            self.freeze_until = time.monotonic() + seconds
            return 200, {'status': 'ok', 'frozen_s': seconds}, {}
        if path == '/debug/write':
            return (200, write_probe(query.get('path', [''])[0]), {})
        if path == '/debug/exit':
            code = int(_query_number(query, 'code', 1, 255))
            threading.Timer(0.1, os._exit, (code,)).start()
            return 200, {'status': 'ok', 'exit_code': code}, {'Connection': 'close'}
        return 404, {'error': 'not found', 'path': path}, {}

    # --- lifecycle ------------------------------------------------------------
    def status_line(self):
        if self.draining:
            return f'draining: {self.in_flight} request(s) in flight'
        if not self.ready:
            return f'starting: listening on {self.listen_address}, not ready yet'
        return f'ready: {self.config.name} {self.config.version} on {self.listen_address}'

    def open_server(self):
        sock = passed_socket(self.environ, self.pid)
        if sock is not None:
            for key in ('LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES'):
                os.environ.pop(key, None)
            address = sock.getsockname()
            server_class = Server6 if sock.family == socket.AF_INET6 else Server
            server = server_class(address if isinstance(address, tuple) else ('', 0), Handler, bind_and_activate=False)
            server.socket.close()
            server.socket = sock
            server.server_address = address
            self.socket_activated = True
        else:
            host = self.config.host
            server_class = Server6 if ':' in host else Server
            server = server_class((host, self.config.port), Handler)
        server.app = self
        self.listen_address = format_address(server.socket.getsockname())
        return server

    def start(self):
        cfg = self.config
        self.inflate(cfg.balloon_mb)
        if cfg.no_listen:
            log_info('APP_NO_LISTEN=1: not opening any port, idling until stopped')
            self.notify('STATUS=not listening (APP_NO_LISTEN=1)')
            return
        self.server = self.open_server()
        self.loop_beat = time.monotonic()
        self.server_thread = threading.Thread(target=self.server.serve_forever, args=(LOOP_POLL,),
                                              name='accept-loop', daemon=True)
        self.server_thread.start()
        log_info(f"{cfg.name} {cfg.version} listening on {self.listen_address} "
                 f"(socket-activated: {'yes' if self.socket_activated else 'no'}, startup delay {cfg.startup_delay:.1f}s)")
        self.notify(f'STATUS={self.status_line()}')
        if self.watchdog_every:
            threading.Thread(target=self.watchdog_loop, name='watchdog', daemon=True).start()

    def watchdog_loop(self):
        while not self.stopped.wait(self.watchdog_every):
            if self.loop_alive():
                self.notify('WATCHDOG=1')

    def become_ready(self):
        self.ready = True
        log_info('ready')
        self.notify('READY=1', f'STATUS={self.status_line()}')

    def reload(self):
        self.notify('RELOADING=1', f'MONOTONIC_USEC={monotonic_usec()}')
        old = self.config
        try:
            new = load_config(os.environ)
        except ConfigError as exc:
            log_error(f'reload failed, keeping the running configuration: {exc}')
        else:
            if (new.host, new.port, new.no_listen) != (old.host, old.port, old.no_listen):
                log_error('reload: APP_HOST/APP_PORT/APP_NO_LISTEN changes need a restart; ignored')
            self.config = new
            log_info(f'reloaded configuration (version {old.version} -> {new.version})')
        if self.ready and not self.draining:
            self.notify('READY=1', f'STATUS={self.status_line()}')

    def begin_drain(self, signame):
        if self.draining:
            return
        self.draining = True
        self.drain_deadline = time.monotonic() + self.config.drain_timeout
        log_info(f'{signame}: draining {self.in_flight} in-flight request(s), at most {self.config.drain_timeout:.1f}s')
        self.notify('STOPPING=1', f'STATUS={self.status_line()}')
        if self.socket_activated and self.server is not None:
            # Leave new connections queued in the socket for the next instance.
            self.stop_accepting(self.config.drain_timeout)

    def stop_accepting(self, timeout):
        stopper = threading.Thread(target=self.server.shutdown, name='stop-accepting', daemon=True)
        stopper.start()
        stopper.join(max(timeout, 0.1))

    def finish(self):
        if self.server is not None:
            if self.in_flight:
                log_error(f'drain timeout: exiting with {self.in_flight} request(s) still in flight')
            self.stop_accepting(1.0)
            self.server.server_close()
        self.stopped.set()
        log_info('stopped')

    def run(self):
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno())
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda signum, frame: None)  # the wake-up fd carries the signal number
        try:
            self.start()
            while True:
                now = time.monotonic()
                if not self.ready and not self.draining and self.server is not None and now >= self.ready_at:
                    self.become_ready()
                if self.draining and (not self.busy() or now >= self.drain_deadline):
                    break
                timeout = 1.0
                if self.draining:
                    timeout = 0.05
                elif not self.ready and self.server is not None:
                    timeout = max(0.0, min(timeout, self.ready_at - now))
                if select.select([wake_r], [], [], timeout)[0]:
                    try:
                        received = wake_r.recv(64)
                    except BlockingIOError:
                        received = b''
                    for signum in received:
                        if signum == signal.SIGHUP:
                            self.reload()
                        elif signum in (signal.SIGTERM, signal.SIGINT):
                            self.begin_drain(signal.Signals(signum).name)
            self.finish()
        finally:
            signal.set_wakeup_fd(-1)
            wake_r.close()
            wake_w.close()
        return 0


def main():
    try:
        config = load_config(os.environ)
    except ConfigError as exc:
        log_error(f'configuration error: {exc}')
        return 2
    try:
        return App(config, os.environ).run()
    except OSError as exc:
        log_error(f'cannot serve: {exc}')
        return 1


if __name__ == '__main__':
    raise SystemExit(main())
