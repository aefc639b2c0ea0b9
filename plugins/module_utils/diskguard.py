# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Disk guard: disk and inode use of the log and backup filesystems.

Writes node_exporter textfile metrics (atomically: temp file + rename) and logs
a warning, with a journald priority prefix, for every filesystem above the
threshold. Installed on hosts by the logrotate role and run by a timer; the
metric names are documented in docs/metrics.md and alerted on by the
monitoring role.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import argparse
import os
import sys
import tempfile
import time

METRICS_FILE = 'prodready_diskguard.prom'


def find_mountpoint(path):
    path = os.path.realpath(path)
    while not os.path.ismount(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def usage(path, statvfs=os.statvfs):
    """Return a dict with size, available and used ratios for ``path``'s filesystem."""
    st = statvfs(path)
    size = st.f_blocks * st.f_frsize
    avail = st.f_bavail * st.f_frsize
    # Like df: used against what non-root users can use (used + available).
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    usable = used + avail
    inodes_used = st.f_files - st.f_ffree
    return {
        'size_bytes': size,
        'avail_bytes': avail,
        'used_ratio': (float(used) / usable) if usable else 0.0,
        'inodes_total': st.f_files,
        'inodes_used_ratio': (float(inodes_used) / st.f_files) if st.f_files else 0.0,
    }


def _escape(value):
    return value.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')


def render(results, now):
    """Render Prometheus text exposition for ``results`` ({path: (mountpoint, usage or None)})."""
    lines = []
    metrics = (
        ('prodready_filesystem_used_ratio', 'Fraction of the filesystem in use (as df counts it).', 'used_ratio'),
        ('prodready_filesystem_inodes_used_ratio', 'Fraction of the inodes in use.', 'inodes_used_ratio'),
        ('prodready_filesystem_avail_bytes', 'Bytes available to unprivileged users.', 'avail_bytes'),
        ('prodready_filesystem_size_bytes', 'Size of the filesystem in bytes.', 'size_bytes'),
    )
    for name, help_text, key in metrics:
        lines.append('# HELP %s %s' % (name, help_text))
        lines.append('# TYPE %s gauge' % name)
        for path in sorted(results):
            mountpoint, use = results[path]
            if use is None:
                continue
            value = use[key]
            text = repr(round(value, 6)) if isinstance(value, float) else str(value)
            lines.append('%s{path="%s",mountpoint="%s"} %s' % (name, _escape(path), _escape(mountpoint), text))
    lines.append('# HELP prodready_filesystem_path_missing 1 when a watched path does not exist.')
    lines.append('# TYPE prodready_filesystem_path_missing gauge')
    for path in sorted(results):
        lines.append('prodready_filesystem_path_missing{path="%s"} %d' % (_escape(path), results[path][1] is None))
    lines.append('# HELP prodready_diskguard_last_run_timestamp_seconds When the disk guard last ran.')
    lines.append('# TYPE prodready_diskguard_last_run_timestamp_seconds gauge')
    lines.append('prodready_diskguard_last_run_timestamp_seconds %d' % int(now))
    return '\n'.join(lines) + '\n'


def write_atomic(directory, name, text, mode=0o644):
    """Write ``text`` to ``directory/name`` through a synced temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(prefix='.%s.' % name, dir=directory)
    try:
        with os.fdopen(fd, 'w') as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, os.path.join(directory, name))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check(paths, threshold, statvfs=os.statvfs):
    """Measure ``paths``; return (results, warnings)."""
    results = {}
    warnings = []
    for path in paths:
        if not os.path.exists(path):
            results[path] = (path, None)
            warnings.append('<5>diskguard: %s does not exist; not measured' % path)
            continue
        mountpoint = find_mountpoint(path)
        use = usage(path, statvfs)
        results[path] = (mountpoint, use)
        for label, key in (('disk', 'used_ratio'), ('inodes', 'inodes_used_ratio')):
            if use[key] * 100 >= threshold:
                warnings.append('<4>diskguard: %s of %s (mounted on %s) at %.1f%%, threshold %d%%'
                                % (label, path, mountpoint, use[key] * 100, threshold))
    return results, warnings


def main(argv=None):
    parser = argparse.ArgumentParser(description='Report disk and inode use as node_exporter textfile metrics.')
    parser.add_argument('--textfile-dir', required=True, help='node_exporter textfile collector directory')
    parser.add_argument('--threshold', type=int, default=85, help='warn at or above this percentage of use')
    parser.add_argument('paths', nargs='+', help='paths whose filesystems are watched')
    args = parser.parse_args(argv)
    if not 1 <= args.threshold <= 100:
        parser.error('--threshold must be between 1 and 100, got %d' % args.threshold)
    results, warnings = check(args.paths, args.threshold)
    if not os.path.isdir(args.textfile_dir):
        os.makedirs(args.textfile_dir, 0o755)
    write_atomic(args.textfile_dir, METRICS_FILE, render(results, time.time()))
    for line in warnings:
        sys.stderr.write(line + '\n')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
