# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the disk guard (statvfs faked)."""

import os
from collections import namedtuple

import pytest

from ansible_collections.prodready.vps.plugins.module_utils import diskguard

StatVFS = namedtuple('StatVFS', 'f_blocks f_bfree f_bavail f_frsize f_files f_ffree')


def fake_statvfs(used_blocks, free_blocks, reserved_blocks=0, files=1000, free_files=900):
    def statvfs(path):
        blocks = used_blocks + free_blocks
        return StatVFS(blocks, free_blocks, free_blocks - reserved_blocks, 4096, files, free_files)
    return statvfs


def test_usage_counts_like_df():
    use = diskguard.usage('/', fake_statvfs(used_blocks=50, free_blocks=50, reserved_blocks=10))
    assert use['size_bytes'] == 100 * 4096
    assert use['avail_bytes'] == 40 * 4096
    assert use['used_ratio'] == pytest.approx(50 / 90)
    assert use['inodes_used_ratio'] == pytest.approx(0.1)


def test_usage_of_empty_filesystem_is_zero():
    use = diskguard.usage('/', fake_statvfs(0, 0, files=0, free_files=0))
    assert use['used_ratio'] == 0.0 and use['inodes_used_ratio'] == 0.0


def test_check_warns_at_threshold_for_disk_and_inodes(tmp_path):
    results, warnings = diskguard.check([str(tmp_path)], 85, fake_statvfs(90, 10, files=100, free_files=5))
    assert results[str(tmp_path)][1]['used_ratio'] == pytest.approx(0.9)
    assert len(warnings) == 2
    assert warnings[0].startswith('<4>diskguard: disk of %s' % tmp_path)
    assert 'inodes of' in warnings[1] and '95.0%' in warnings[1]


def test_check_quiet_below_threshold_and_notes_missing_paths(tmp_path):
    missing = str(tmp_path / 'nope')
    results, warnings = diskguard.check([str(tmp_path), missing], 85, fake_statvfs(10, 90))
    assert results[missing] == (missing, None)
    assert warnings == ['<5>diskguard: %s does not exist; not measured' % missing]


def test_render_exposition_format():
    results = {'/var/log': ('/', {'used_ratio': 0.5, 'inodes_used_ratio': 0.25, 'avail_bytes': 10,
                                  'size_bytes': 20, 'inodes_total': 4}),
               '/gone': ('/gone', None)}
    text = diskguard.render(results, 1700000000.5)
    assert 'prodready_filesystem_used_ratio{path="/var/log",mountpoint="/"} 0.5\n' in text
    assert 'prodready_filesystem_avail_bytes{path="/var/log",mountpoint="/"} 10\n' in text
    assert 'prodready_filesystem_path_missing{path="/gone"} 1\n' in text
    assert 'prodready_filesystem_path_missing{path="/var/log"} 0\n' in text
    assert text.endswith('prodready_diskguard_last_run_timestamp_seconds 1700000000\n')
    assert '/gone",mountpoint' not in text
    assert text.count('# TYPE') == 6


def test_label_values_are_escaped():
    assert diskguard._escape('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_main_writes_metrics_atomically(tmp_path, capsys):
    textfile_dir = tmp_path / 'textfile'
    assert diskguard.main(['--textfile-dir', str(textfile_dir), '--threshold', '100', str(tmp_path)]) == 0
    files = os.listdir(str(textfile_dir))
    assert files == ['prodready_diskguard.prom']
    text = (textfile_dir / 'prodready_diskguard.prom').read_text()
    assert 'prodready_filesystem_used_ratio{path="%s"' % tmp_path in text
    assert oct((textfile_dir / 'prodready_diskguard.prom').stat().st_mode & 0o777) == oct(0o644)


def test_main_rejects_bad_threshold(tmp_path):
    with pytest.raises(SystemExit):
        diskguard.main(['--textfile-dir', str(tmp_path), '--threshold', '0', str(tmp_path)])


def test_write_atomic_leaves_no_temp_file_on_error(tmp_path, monkeypatch):
    def boom(src, dst):
        raise OSError('disk full')
    monkeypatch.setattr(os, 'rename', boom)
    with pytest.raises(OSError):
        diskguard.write_atomic(str(tmp_path), 'x.prom', 'data')
    assert os.listdir(str(tmp_path)) == []
