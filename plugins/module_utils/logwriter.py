# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Lossless per-service log writer.

systemd connects a service's stdout and stderr to FIFOs held open by socket
units (``ListenFIFO=``). This writer receives those FIFOs through socket
activation (``LISTEN_FDS``/``LISTEN_FDNAMES``), appends complete lines to
``<log_dir>/<service>.log`` and ``<log_dir>/<service>-error.log`` and reopens
its files on SIGHUP. logrotate rotates by rename (no copytruncate): lines
written between the rename and the reopen land in the just-rotated file, which
``delaycompress`` leaves alone until the next rotation, so no line is lost.

The same file is the unit-tested library and, installed on hosts by the
logrotate role, the program run by ``prodready-logwriter@.service``.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import os
import select
import signal
import sys

SD_LISTEN_FDS_START = 3
READ_SIZE = 65536
# A line longer than this is written in pieces rather than buffered forever.
MAX_PARTIAL = 1024 * 1024


class LogWriterError(Exception):
    pass


def listen_fds(environ=None, pid=None):
    """Return ``{name: fd}`` for the file descriptors systemd passed us."""
    environ = os.environ if environ is None else environ
    pid = os.getpid() if pid is None else pid
    if environ.get('LISTEN_PID') not in (None, str(pid)):
        raise LogWriterError('LISTEN_PID=%s is not this process (%d)' % (environ.get('LISTEN_PID'), pid))
    try:
        count = int(environ.get('LISTEN_FDS', '0'))
    except ValueError:
        raise LogWriterError('LISTEN_FDS=%r is not a number' % environ.get('LISTEN_FDS'))
    names = environ.get('LISTEN_FDNAMES', '').split(':') if environ.get('LISTEN_FDNAMES') else []
    if len(names) != count:
        names = ['fd%d' % i for i in range(count)]
    return dict((names[i], SD_LISTEN_FDS_START + i) for i in range(count))


def stream_targets(fds, service, log_dir):
    """Map each passed FIFO to its log file by the FIFO's name suffix."""
    targets = {}
    for name, fd in fds.items():
        if name.endswith('stderr'):
            path = os.path.join(log_dir, '%s-error.log' % service)
        elif name.endswith('stdout'):
            path = os.path.join(log_dir, '%s.log' % service)
        else:
            raise LogWriterError('unexpected file descriptor name %r: expected a name ending in stdout or stderr' % name)
        targets[fd] = path
    if not targets:
        raise LogWriterError('no file descriptors passed: start this through its socket units')
    return targets


class Stream(object):
    """One log file fed from a FIFO: writes whole lines, reopens on request."""

    def __init__(self, path, mode=0o640):
        self.path = path
        self.mode = mode
        self.partial = b''
        self.out = None
        self.open()

    def open(self):
        self.out = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, 'O_CLOEXEC', 0), self.mode)

    def reopen(self):
        old, self.out = self.out, None
        self.open()
        os.close(old)

    def _write_all(self, data):
        view = memoryview(data)
        while view:
            written = os.write(self.out, view)
            view = view[written:]

    def feed(self, data):
        """Write every complete line of ``partial + data``; keep the rest."""
        buf = self.partial + data
        cut = buf.rfind(b'\n') + 1
        if cut == 0 and len(buf) >= MAX_PARTIAL:
            cut = len(buf)
        if cut:
            self._write_all(buf[:cut])
        self.partial = buf[cut:]

    def flush_partial(self):
        if self.partial:
            self._write_all(self.partial + b'\n')
            self.partial = b''

    def close(self):
        self.flush_partial()
        if self.out is not None:
            os.close(self.out)
            self.out = None


class LogWriter(object):
    def __init__(self, targets):
        self.streams = dict((fd, Stream(path)) for fd, path in targets.items())
        self.reopen_requested = False
        self.stop_requested = False

    def reopen(self):
        for stream in self.streams.values():
            stream.reopen()
        self.reopen_requested = False

    def pump(self, timeout=1.0, extra_fds=()):
        """Wait for data once and write it; return the fds that were readable."""
        try:
            readable = select.select(list(self.streams) + list(extra_fds), [], [], timeout)[0]
        except (OSError, select.error) as exc:  # pragma: no cover - select.error is OSError on py3
            if getattr(exc, 'errno', None) == errno.EINTR:
                return []
            raise
        if self.reopen_requested:
            self.reopen()
        for fd in readable:
            stream = self.streams.get(fd)
            if stream is None:
                continue
            try:
                data = os.read(fd, READ_SIZE)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EINTR):
                    continue
                raise
            if data:
                stream.feed(data)
        return readable

    def drain(self):
        """Write whatever is still buffered in the FIFOs without blocking."""
        for fd, stream in self.streams.items():
            while select.select([fd], [], [], 0)[0]:
                data = os.read(fd, READ_SIZE)
                if not data:
                    break
                stream.feed(data)

    def close(self):
        for stream in self.streams.values():
            stream.close()


def run(service, log_dir, environ=None):
    targets = stream_targets(listen_fds(environ), service, log_dir)
    writer = LogWriter(targets)
    wake_r, wake_w = os.pipe()
    for fd in (wake_r, wake_w):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wake_w)

    def on_hup(signum, frame):
        writer.reopen_requested = True

    def on_term(signum, frame):
        writer.stop_requested = True

    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    while not writer.stop_requested:
        if wake_r in writer.pump(extra_fds=(wake_r,)):
            try:
                os.read(wake_r, 512)
            except OSError:
                pass
            if writer.reopen_requested:
                writer.reopen()
    writer.drain()
    writer.close()
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.stderr.write('usage: logwriter.py SERVICE LOG_DIR\n')
        return 2
    try:
        return run(argv[0], argv[1])
    except (LogWriterError, OSError) as exc:
        sys.stderr.write('prodready-logwriter: %s\n' % exc)
        return 1


if __name__ == '__main__':
    raise SystemExit(main())
