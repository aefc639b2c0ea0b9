# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures that run a sample app as a real process on a loopback port.

Each test module says which app through an ``app_launch`` fixture: a dict with
``command`` (the app's argv), ``base_env`` (variables the app always gets) and
``ready`` (``ready(port)`` is true once the app serves on ``port``).
"""

import os
import select
import signal
import subprocess
import sys
import time

import pytest
from process_harness import SOCKET_ACTIVATE, NotifySocket, free_port, get, kill_group

# Never inherited from the environment pytest runs in (nor any other APP_*).
SCRUBBED = ('NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID', 'LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES',
            'DATABASE_URL', 'APP_DATABASE_URL', 'APP_CONFIG_FILE', 'NODE_OPTIONS')


class AppProcess:
    """The app ``command``, run with ``env`` and behind ``wrapper``; socket-activated on ``sock`` if given."""

    def __init__(self, command, base_env, ready, env=None, sock=None, wrapper=()):
        env = dict(env or {})
        if sock is not None:
            self.port = sock.getsockname()[1]
        else:
            self.port = int(env['APP_PORT']) if env.get('APP_PORT', '').isdigit() else free_port()
        full_env = {k: v for k, v in os.environ.items() if k not in SCRUBBED and not k.startswith('APP_')}
        full_env['APP_PORT'] = str(self.port)
        full_env.update(base_env)
        full_env.update(env)
        argv = list(wrapper) + list(command)
        pass_fds = ()
        if sock is not None:
            argv = [sys.executable, '-c', SOCKET_ACTIVATE, str(sock.fileno())] + argv
            pass_fds = (sock.fileno(),)
        # A session of its own, so teardown can kill any grandchild still holding the pipes.
        self.proc = subprocess.Popen(argv, env=full_env, pass_fds=pass_fds, start_new_session=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.ready = ready
        self.out = self.err = ''
        self.early_out = b''

    def get(self, path, timeout=5.0, method='GET'):
        return get(self.port, path, timeout, method)

    def wait_listening(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f'app exited with {self.proc.returncode}: {self.proc.stderr.read().decode()}')
            if self.ready(self.port):
                return
            time.sleep(0.02)
        raise AssertionError('app did not start listening')

    def wait_output(self, text, timeout=10.0):
        """Read stdout until ``text`` shows up (kept for ``out``)."""
        deadline = time.monotonic() + timeout
        while text.encode() not in self.early_out:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise AssertionError(f'no {text!r} on stdout within {timeout}s')
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise AssertionError(f'stdout closed before {text!r}')
            self.early_out += chunk

    def signal(self, signum):
        self.proc.send_signal(signum)

    def wait(self, timeout=10.0):
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f'app did not exit within {timeout}s') from None
        self.out, self.err = (self.early_out + out).decode(), err.decode()
        return self.proc.returncode

    def stop(self, timeout=10.0):
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self):
        kill_group(self.proc)


@pytest.fixture
def start_app(app_launch):
    started = []

    def start(env=None, sock=None, listening=True, wrapper=()):
        app = AppProcess(env=env, sock=sock, wrapper=wrapper, **app_launch)
        started.append(app)
        if listening:
            app.wait_listening()
        return app

    yield start
    for app in started:
        app.kill()


@pytest.fixture
def notify_socket():
    sock = NotifySocket()
    yield sock
    sock.close()
