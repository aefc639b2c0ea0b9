# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Watchdog helper: systemd ``WatchdogSec=`` for apps that cannot speak sd_notify.

uvicorn, most Node apps and many others never send ``READY=1`` or
``WATCHDOG=1``, so systemd can neither wait for them to be ready nor notice
that they hang. This helper speaks sd_notify for them, based on their health
URL::

    python3 watchdog.py --url http://127.0.0.1:8000/health --interval 5 -- /usr/bin/node app.js

Design: the helper is the unit's main process and the app is its child::

    [Service]
    Type=notify
    NotifyAccess=main
    ExecStart=/usr/bin/python3 /usr/local/lib/prodready/watchdog.py \\
        --url http://127.0.0.1:8000/health --interval 5 -- /usr/bin/node app.js
    ExecReload=/bin/kill -HUP $MAINPID
    WatchdogSec=30
    KillMode=mixed
    Restart=on-failure

* It starts the app, sends ``READY=1`` the first time the health URL answers
  2xx (so ``systemctl start``/``restart`` return only once the app serves, and
  deploy health gates start from a ready app), then polls every ``--interval``
  seconds and sends ``WATCHDOG=1`` after each successful poll only. When polls
  fail (error, non-2xx, timeout: a hung event loop), the pings stop and after
  ``WatchdogSec=`` systemd sends the watchdog signal (SIGABRT) and restarts the
  unit: app included, since it lives in the unit's cgroup. ``WatchdogSec=``
  is the failure tolerance: 30 s with ``--interval 5`` allows about 5 failed
  polls in a row.
* SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGABRT are forwarded
  to the app (SIGTERM and SIGINT also send ``STOPPING=1``), so the app drains
  gracefully on stop, reloads on ``systemctl reload`` and dumps core on a
  watchdog timeout. Each forwarded signal is followed by SIGCONT, as systemd
  does, so a stopped (hung) app acts on it at once. ``KillMode=mixed`` makes systemd signal only the helper
  first, so the app gets each signal exactly once (with the default
  ``control-group`` it would get SIGTERM twice, and many apps treat a second
  SIGTERM as "exit now").
* The helper exits with the app's exit status, so ``Restart=`` and the unit's
  result reflect the app. An app killed by SIGHUP, SIGINT, SIGTERM or SIGPIPE
  (systemd's clean exit signals) makes the helper kill itself with the same
  signal; other signals give exit status 128 + N, as a shell does.
* ``NOTIFY_SOCKET``/``WATCHDOG_*`` are not passed to the app (only the main
  process may notify). Sockets passed by socket activation are handed on to
  the app, with ``LISTEN_PID`` set to the app's PID.

Why not the alternatives: a separate sidecar unit polling the app would, on a
failed watchdog, restart the sidecar and not the app, and it cannot send
``READY=1`` for the app's unit (systemd only accepts notifications from the
unit's own processes), so the app unit could not be ``Type=notify``. An
``ExecStartPost=`` poller must finish before the unit is active, so it can gate
start-up but not keep pinging. The wrapper costs one small extra process.

The same file is the unit-tested library and the program installed on hosts.
Standard library only; Python 3.8+.
"""

from __future__ import (absolute_import, division, print_function)  # noqa: UP010, I001 (Ansible boilerplate)
__metaclass__ = type  # noqa: UP001

import argparse
import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

SD_LISTEN_FDS_START = 3
# Forwarded from the helper to the app.
FORWARDED_SIGNALS = ('SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGABRT')
# Signals after which systemd counts a main process exit as clean (besides status 0).
CLEAN_EXIT_SIGNALS = ('SIGHUP', 'SIGINT', 'SIGTERM', 'SIGPIPE')
# Not for the app: only the unit's main process may notify systemd.
NOTIFY_VARIABLES = ('NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID')
LISTEN_VARIABLES = ('LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES')
PROG = 'prodready-watchdog'


def log(priority, message, stream=None):
    """One stderr line with a journald priority prefix (``<3>`` error ... ``<6>`` info)."""
    stream = sys.stderr if stream is None else stream
    try:
        stream.write(f'<{priority}>{PROG}: {message}\n')
        stream.flush()
    except (OSError, ValueError):
        pass


# --- sd_notify -------------------------------------------------------------

def notify_address(value):
    """``$NOTIFY_SOCKET`` as an AF_UNIX address; ``@name`` is the abstract ``\\0name``."""
    if not value:
        return None
    if value[0] == '@':
        return '\0' + value[1:]
    if value[0] == '/':
        return value
    return None  # vsock: and other transports are not supported


def format_message(fields):
    """``['READY=1', 'STATUS=x']`` or ``{'READY': 1}`` as the datagram payload."""
    if isinstance(fields, dict):
        fields = [f'{key}={fields[key]}' for key in sorted(fields)]
    lines = []
    for field in fields:
        if '=' not in field or '\n' in field:
            raise ValueError(f'invalid sd_notify field {field!r}')
        lines.append(field)
    return '\n'.join(lines).encode('utf-8')


class Notifier:
    """``sd_notify(3)``: one datagram per call; a no-op without ``$NOTIFY_SOCKET``."""

    def __init__(self, environ=None):
        environ = os.environ if environ is None else environ
        self.address = notify_address(environ.get('NOTIFY_SOCKET', ''))
        self.errors = 0

    @property
    def enabled(self):
        return self.address is not None

    def __call__(self, *fields):
        if self.address is None:
            return False
        payload = format_message(fields)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.connect(self.address)
            sock.sendall(payload)
            return True
        except OSError as exc:
            self.errors += 1
            if self.errors <= 3:
                log(3, f"sd_notify to {self.address.replace(chr(0), '@')} failed: {exc}")
            return False
        finally:
            sock.close()


# --- health probe ------------------------------------------------------------

class HttpProbe:
    """GET the health URL: ``(True, detail)`` for a 2xx answer, else ``(False, detail)``.

    Uses http.client directly, so no proxy environment variable can reroute a
    loopback health check.
    """

    def __init__(self, url, timeout=5.0, insecure=False):
        parts = urlsplit(url)
        if parts.scheme not in ('http', 'https') or not parts.hostname:
            raise ValueError(f'health URL must be http:// or https:// with a host, got {url!r}')
        self.url = url
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port
        self.path = (parts.path or '/') + ('?' + parts.query if parts.query else '')
        self.host_header = parts.netloc.rpartition('@')[2]
        self.timeout = timeout
        self.context = None
        if self.scheme == 'https':
            self.context = ssl.create_default_context()
            if insecure:
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE

    def connection(self):
        if self.scheme == 'https':
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.context)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def __call__(self):
        started = time.monotonic()
        conn = self.connection()
        try:
            conn.request('GET', self.path, headers={'Host': self.host_header, 'User-Agent': PROG,
                                                    'Connection': 'close'})
            response = conn.getresponse()
            response.read(65536)
            status = response.status
        except socket.timeout:  # noqa: UP041 (not TimeoutError before Python 3.10)
            return False, f'no answer within {self.timeout:.1f}s'
        except (OSError, http.client.HTTPException) as exc:
            return False, f'{exc.__class__.__name__}: {exc}'
        finally:
            conn.close()
        detail = f'HTTP {status} in {(time.monotonic() - started) * 1000:.0f}ms'
        return 200 <= status < 300, detail


# --- decisions ---------------------------------------------------------------

class HealthGate:
    """What to tell systemd after each poll; no I/O, no clock.

    ``observe(ok, detail)`` returns ``(notifications, log_line)``: a list of
    sd_notify field lists, and ``(priority, message)`` or None. ``READY=1`` is
    sent once, on the first success; ``WATCHDOG=1`` after every success and
    never after a failure, so failing polls let ``WatchdogSec=`` expire.
    """

    def __init__(self, url='the health URL'):
        self.url = url
        self.ready = False
        self.stopping = False
        self.failures = 0
        self.polls = 0
        self.pings = 0

    def observe(self, ok, detail):
        self.polls += 1
        detail = ' '.join(str(detail).split())  # one line: sd_notify fields end at a newline
        notifications = []
        line = None
        if self.stopping:
            return notifications, line
        if ok:
            if not self.ready:
                self.ready = True
                notifications.append(['READY=1', f'STATUS=healthy: {self.url} answered {detail}'])
                line = (6, f'ready: {self.url} answered {detail}')
            elif self.failures:
                notifications.append([f'STATUS=healthy again after {self.failures} failed check(s): {detail}'])
                line = (5, f'recovered after {self.failures} failed check(s): {detail}')
            self.failures = 0
            self.pings += 1
            notifications.append(['WATCHDOG=1'])
        else:
            self.failures += 1
            if self.ready:
                status = f'STATUS=unhealthy ({self.failures} failed check(s) in a row, watchdog pings paused): {detail}'
                notifications.append([status])
                if self.failures == 1:
                    line = (4, f'health check failed, pausing watchdog pings: {detail}')
            else:
                notifications.append([f'STATUS=starting: waiting for {self.url} ({detail})'])
        return notifications, line

    def stop(self):
        """Stop reporting (shutdown): systemd ignores the watchdog while stopping."""
        self.stopping = True


class Poller:
    """Runs the probe on a fixed schedule and feeds the gate's decisions to the notifier.

    Polls every ``start_interval`` until the first success, then every
    ``interval`` (measured from the start of one poll to the start of the
    next; a probe slower than the interval delays the next one). ``clock`` and
    ``stop.wait`` are injectable so the schedule is testable without sleeping.
    """

    def __init__(self, probe, gate, notifier, interval, start_interval=None, clock=None, logger=None):
        self.probe = probe
        self.gate = gate
        self.notifier = notifier
        self.interval = float(interval)
        self.start_interval = min(self.interval, float(start_interval if start_interval is not None else 1.0))
        self.clock = clock or time.monotonic
        self.logger = logger or log

    def poll_once(self):
        try:
            ok, detail = self.probe()
        except Exception as exc:  # noqa: BLE001 (a probe bug must not end the loop: it counts as a failure)
            ok, detail = False, f'probe error {exc.__class__.__name__}: {exc}'
        notifications, line = self.gate.observe(ok, detail)
        for fields in notifications:
            self.notifier(*fields)
        if line is not None:
            self.logger(*line)
        return ok

    def run(self, stop):
        due = self.clock()
        while True:
            if stop.wait(max(0.0, due - self.clock())):
                return
            started = self.clock()
            self.poll_once()
            due = started + (self.interval if self.gate.ready else self.start_interval)


# --- the child -------------------------------------------------------------------

def child_environment(environ, pid):
    """The app's environment and the socket-activation fds to hand on to it."""
    env = dict(environ)
    for key in NOTIFY_VARIABLES:
        env.pop(key, None)
    fds = ()
    if env.get('LISTEN_PID') == str(pid):
        try:
            count = int(env.get('LISTEN_FDS', '0'))
        except ValueError:
            count = 0
        if count > 0:
            fds = tuple(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))
            env.pop('LISTEN_PID')  # set by the shim to the app's own PID
            return env, fds
    for key in LISTEN_VARIABLES:
        env.pop(key, None)
    return env, fds


def child_argv(command, fds):
    """Through ``/bin/sh`` when fds are passed: LISTEN_PID must be the PID of the app itself."""
    if not fds:
        return list(command)
    return ['/bin/sh', '-c', 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"', 'sh'] + list(command)


def exit_status(returncode):
    """The helper's exit code for a child's ``Popen.returncode`` (negative: killed by signal)."""
    if returncode >= 0:
        return returncode
    return 128 - returncode


class Supervisor:
    """Starts the app, forwards signals to it, waits for it and runs the poller meanwhile."""

    def __init__(self, command, poller=None, notifier=None, environ=None, forwarded=FORWARDED_SIGNALS):
        self.command = list(command)
        self.poller = poller
        self.notifier = notifier or (lambda *fields: False)
        self.environ = os.environ if environ is None else environ
        self.forwarded = [getattr(signal, name) for name in forwarded if hasattr(signal, name)]
        self.child = None
        self.pending = []
        self.stop = threading.Event()

    def forward(self, signum, frame):
        if signum in (signal.SIGTERM, signal.SIGINT):
            if self.poller is not None:
                self.poller.gate.stop()
            self.notifier('STOPPING=1', f'STATUS=stopping: forwarded {signal.Signals(signum).name} to the app')
        if self.child is None:
            self.pending.append(signum)
        elif self.child.returncode is None:
            try:
                os.kill(self.child.pid, signum)
                # As systemd does: wake a stopped (SIGSTOP, hung) app so the
                # signal is acted on now, not after the final SIGKILL.
                os.kill(self.child.pid, signal.SIGCONT)
            except OSError:
                pass

    def spawn(self):
        env, fds = child_environment(self.environ, os.getpid())
        return subprocess.Popen(child_argv(self.command, fds), env=env, pass_fds=fds, close_fds=True)

    def run(self):
        """Return the child's ``returncode`` (negative: the signal that killed it)."""
        previous = {}
        for signum in self.forwarded:
            previous[signum] = signal.signal(signum, self.forward)
        thread = None
        try:
            self.child = self.spawn()
            for signum in self.pending:
                self.forward(signum, None)
            if self.poller is not None:
                thread = threading.Thread(target=self.poller.run, args=(self.stop,), name='health-poller')
                thread.daemon = True
                thread.start()
            return self.child.wait()
        finally:
            self.stop.set()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if thread is not None:
                thread.join(1.0)


# --- command line -----------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='watchdog.py',
        description='Run an app under systemd Type=notify: READY=1 once its health URL answers 2xx, '
                    'WATCHDOG=1 after every successful poll.',
        usage='%(prog)s --url URL [options] -- COMMAND [ARG...]')
    parser.add_argument('--url', required=True, help='health URL, e.g. http://127.0.0.1:8000/health')
    parser.add_argument('--interval', type=float, default=None,
                        help='seconds between polls once ready (default: WATCHDOG_USEC/2, else 5)')
    parser.add_argument('--start-interval', type=float, default=1.0,
                        help='seconds between polls until the first success (default: 1)')
    parser.add_argument('--timeout', type=float, default=None,
                        help='seconds a poll may take (default: the interval, at most 10)')
    parser.add_argument('--insecure', action='store_true', help='do not verify the certificate of an https URL')
    parser.add_argument('command', nargs='*', help='the app and its arguments, after --')
    if '--' in argv:
        cut = argv.index('--')
        args = parser.parse_args(argv[:cut])
        args.command = args.command + argv[cut + 1:]
    else:
        args = parser.parse_args(argv)
    if not args.command:
        parser.error('no command given: put the app after --')
    for name in ('interval', 'start_interval', 'timeout'):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    return args


def effective_interval(requested, environ):
    """The poll interval, at most half of ``WATCHDOG_USEC`` so a healthy app never misses the deadline."""
    try:
        usec = int(environ.get('WATCHDOG_USEC', '0'))
    except ValueError:
        usec = 0
    limit = usec / 2e6 if usec > 0 else None
    if requested is None:
        return (limit if limit is not None else 5.0), None
    if limit is not None and requested > limit:
        return limit, (f'interval {requested:.1f}s is more than half of WatchdogSec ({usec / 1e6:.1f}s): '
                       f'polling every {limit:.1f}s')
    return requested, None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    interval, warning = effective_interval(args.interval, os.environ)
    if warning:
        log(4, warning)
    timeout = args.timeout if args.timeout is not None else min(interval, 10.0)
    try:
        probe = HttpProbe(args.url, timeout=timeout, insecure=args.insecure)
    except ValueError as exc:
        log(3, str(exc))
        return 2
    notifier = Notifier(os.environ)
    poller = Poller(probe, HealthGate(args.url), notifier, interval, args.start_interval)
    supervisor = Supervisor(args.command, poller=poller, notifier=notifier)
    try:
        returncode = supervisor.run()
    except OSError as exc:
        log(3, f'cannot start {args.command[0]}: {exc}')
        return 127 if isinstance(exc, FileNotFoundError) else 126
    if returncode < 0:
        name = signal.Signals(-returncode).name
        log(5 if name in CLEAN_EXIT_SIGNALS else 4, f'app killed by {name}')
        if name in CLEAN_EXIT_SIGNALS:
            signal.signal(-returncode, signal.SIG_DFL)
            os.kill(os.getpid(), -returncode)
    elif returncode:
        log(4, f'app exited with status {returncode}')
    return exit_status(returncode)


if __name__ == '__main__':
    raise SystemExit(main())
