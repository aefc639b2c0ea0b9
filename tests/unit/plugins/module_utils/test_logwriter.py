# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the lossless log writer (no systemd: fds are passed by hand)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.prodready.vps.plugins.module_utils import logwriter


def test_listen_fds_maps_names_to_fds():
    env = {'LISTEN_FDS': '2', 'LISTEN_FDNAMES': 'api-stdout:api-stderr', 'LISTEN_PID': '42'}
    assert logwriter.listen_fds(env, pid=42) == {'api-stdout': 3, 'api-stderr': 4}


def test_listen_fds_rejects_other_pid_and_garbage():
    with pytest.raises(logwriter.LogWriterError, match='not this process'):
        logwriter.listen_fds({'LISTEN_FDS': '1', 'LISTEN_PID': '1'}, pid=2)
    with pytest.raises(logwriter.LogWriterError, match='not a number'):
        logwriter.listen_fds({'LISTEN_FDS': 'x'}, pid=2)


def test_listen_fds_without_names_gets_placeholders():
    assert logwriter.listen_fds({'LISTEN_FDS': '1'}, pid=1) == {'fd0': 3}


def test_stream_targets_by_suffix(tmp_path):
    targets = logwriter.stream_targets({'api-stdout': 3, 'api-stderr': 4}, 'api', str(tmp_path))
    assert targets == {3: str(tmp_path / 'api.log'), 4: str(tmp_path / 'api-error.log')}
    with pytest.raises(logwriter.LogWriterError, match='unexpected file descriptor name'):
        logwriter.stream_targets({'fd0': 3}, 'api', str(tmp_path))
    with pytest.raises(logwriter.LogWriterError, match='no file descriptors'):
        logwriter.stream_targets({}, 'api', str(tmp_path))


def test_stream_writes_whole_lines_only(tmp_path):
    path = tmp_path / 'a.log'
    stream = logwriter.Stream(str(path))
    stream.feed(b'one\ntw')
    assert path.read_bytes() == b'one\n'
    stream.feed(b'o\nthree')
    assert path.read_bytes() == b'one\ntwo\n'
    stream.close()
    assert path.read_bytes() == b'one\ntwo\nthree\n'


def test_stream_splits_overlong_partial_line(tmp_path, monkeypatch):
    monkeypatch.setattr(logwriter, 'MAX_PARTIAL', 10)
    path = tmp_path / 'a.log'
    stream = logwriter.Stream(str(path))
    stream.feed(b'x' * 25)
    assert path.read_bytes() == b'x' * 25
    stream.close()


def test_reopen_after_rename_keeps_every_line(tmp_path):
    read_fd, write_fd = os.pipe()
    path = tmp_path / 'svc.log'
    writer = logwriter.LogWriter({read_fd: str(path)})
    os.write(write_fd, b'1\n2\n')
    writer.pump(timeout=1)
    os.rename(str(path), str(tmp_path / 'svc.log-1'))
    os.write(write_fd, b'3\n')
    writer.pump(timeout=1)          # still the old file: nothing lost
    writer.reopen_requested = True
    os.write(write_fd, b'4\n')
    writer.pump(timeout=1)
    writer.close()
    assert (tmp_path / 'svc.log-1').read_bytes() == b'1\n2\n3\n'
    assert path.read_bytes() == b'4\n'
    assert oct(path.stat().st_mode & 0o777) == oct(0o640 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_main_usage_error(capsys):
    assert logwriter.main([]) == 2
    assert 'usage' in capsys.readouterr().err


def test_process_loses_no_line_across_rotations(tmp_path):
    """The real program: fds passed like systemd does, rename + SIGHUP rotations under load."""
    read_fd, write_fd = os.pipe()
    err_r, err_w = os.pipe()

    def child_fds():
        # Move both out of the way first: either may already be fd 3 or 4.
        high_out, high_err = os.dup2(read_fd, 100), os.dup2(err_r, 101)
        os.dup2(high_out, 3)
        os.dup2(high_err, 4)

    env = dict(os.environ, LISTEN_FDS='2', LISTEN_FDNAMES='svc-stdout:svc-stderr')
    proc = subprocess.Popen([sys.executable, logwriter.__file__, 'svc', str(tmp_path)],
                            preexec_fn=child_fds, pass_fds=(3, 4), env=env)
    os.close(read_fd)
    os.close(err_r)
    total, rotations = 200000, 20
    per_rotation = total // rotations
    try:
        for rotation in range(rotations):
            chunk = ''.join('line %d\n' % n for n in range(rotation * per_rotation, (rotation + 1) * per_rotation))
            os.write(err_w, b'err %d\n' % rotation)
            view = memoryview(chunk.encode())
            while view:
                view = view[os.write(write_fd, view[:65536]):]
            target = tmp_path / 'svc.log'
            if target.exists():
                target.rename(tmp_path / ('svc.log.%03d' % rotation))
            proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 20
        while time.time() < deadline:
            text = b''.join(p.read_bytes() for p in tmp_path.glob('svc.log*'))
            if text.count(b'\n') >= total:
                break
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        os.close(write_fd)
        os.close(err_w)
    numbers = sorted(int(line.split()[1]) for p in tmp_path.glob('svc.log*') for line in p.read_text().splitlines())
    assert numbers == list(range(total))
    assert len(list(tmp_path.glob('svc.log.*'))) >= rotations - 1
    assert (tmp_path / 'svc-error.log').read_text().splitlines() == ['err %d' % r for r in range(rotations)]
