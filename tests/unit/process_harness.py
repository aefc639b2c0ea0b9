# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Helpers for tests that run real processes on loopback ports and talk sd_notify.

Shared by the sample-app tests and the watchdog helper's tests. Plain module, no
fixtures: pytest's default (prepend) import mode puts ``tests/unit`` (the
folder of the rootmost ``conftest.py``) on ``sys.path``, so ``import
process_harness`` works from any test below it.
"""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid

ISO_UTC = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$')
# Exec argv[2:] with the socket argv[1] moved to fd 3 and LISTEN_FDS/LISTEN_PID
# set for the exec'd process itself, as systemd does.
SOCKET_ACTIVATE = (
    'import os, sys\n'
    'fd = int(sys.argv[1])\n'
    'if fd != 3:\n'
    '    os.dup2(fd, 3)\n'
    '    os.close(fd)\n'
    'os.environ["LISTEN_FDS"] = "1"\n'
    'os.environ["LISTEN_PID"] = str(os.getpid())\n'
    'os.execv(sys.argv[2], sys.argv[2:])\n'
)


# --- sockets and HTTP -------------------------------------------------------------------

def free_port():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def listening_socket():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    sock.listen(64)
    return sock


def connectable(port):
    try:
        socket.create_connection(('127.0.0.1', port), timeout=0.5).close()
        return True
    except OSError:
        return False


def get(port, path, timeout=5.0, method='GET'):
    """(status, parsed JSON or None, headers) of one request; no proxies involved."""
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=timeout)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        body = response.read()
        payload = json.loads(body) if body else None
        return response.status, payload, dict(response.getheaders())
    finally:
        conn.close()


# --- processes and waiting --------------------------------------------------------------

def kill_group(proc):
    """SIGKILL the session of ``proc`` (started with ``start_new_session``), then reap ``proc``."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group of this test's own process
    except OSError:
        pass
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def wait_until(predicate, timeout=5.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError('condition not met in time')


def in_background(func, *args, **kwargs):
    """Run ``func`` in a thread; the returned dict gets 'result' or 'error'."""
    box = {}

    def target():
        try:
            box['result'] = func(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 (reported to the test through the box)
            box['error'] = exc

    box['thread'] = threading.Thread(target=target, daemon=True)
    box['thread'].start()
    return box


# --- sd_notify --------------------------------------------------------------------------

class NotifySocket:
    """Stand-in for systemd's notification socket; ``env_value`` is what NOTIFY_SOCKET gets."""

    def __init__(self, abstract=False):
        self.dir = None
        if abstract:
            name = f'prodready-test-{uuid.uuid4().hex}'
            self.address, self.env_value = '\0' + name, '@' + name
        else:
            self.dir = tempfile.mkdtemp(prefix='pr-notify-')  # short: AF_UNIX paths are limited to 107 bytes
            self.address = self.env_value = os.path.join(self.dir, 'notify')
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.address)
        self.messages = []

    def receive(self, timeout):
        self.sock.settimeout(max(0.001, timeout))
        try:
            message = self.sock.recv(4096).decode()
        except socket.timeout:  # noqa: UP041 (Python 3.8 compatible tests)
            return None
        self.messages.append(message)
        return message

    def wait_for(self, field, timeout=10.0):
        """The first message, from now on, with a line equal to ``field``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.receive(deadline - time.monotonic())
            if message is not None and field in message.split('\n'):
                return message
        raise AssertionError(f'no {field!r} within {timeout}s; got {self.messages!r}')

    def drain(self, seconds):
        """Every message received during ``seconds``."""
        return [message for dummy, message in self.drain_timed(seconds)]

    def drain_timed(self, seconds):
        """(monotonic time, message) of every message received during ``seconds``."""
        got = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = self.receive(deadline - time.monotonic())
            if message is not None:
                got.append((time.monotonic(), message))
        return got

    def close(self):
        self.sock.close()
        if self.dir:
            os.unlink(self.address)
            os.rmdir(self.dir)


def longest_gap(timed, message, start):
    """Longest time without ``message`` in ``timed`` (from ``drain_timed``), counted from ``start``."""
    times = [start] + [when for when, got in timed if got == message]
    return max(times[i + 1] - times[i] for i in range(len(times) - 1)) if len(times) > 1 else None
