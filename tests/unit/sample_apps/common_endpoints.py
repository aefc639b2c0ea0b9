# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Checks that hold for both sample apps (called from each app's test module)."""


def check_debug_write_probe(start_app, tmp_path):
    """The sandbox tests ask the app itself to write: the result names the errno."""
    app = start_app({'APP_DEBUG': '1'})
    target = tmp_path / 'probe.txt'
    status, body = app.get(f'/debug/write?path={target}')[:2]
    assert status == 200 and body['written'] is True and body['error'] is None
    assert target.read_text().startswith('written by ')
    body = app.get(f'/debug/write?path={tmp_path}/missing/probe.txt')[1]
    assert body['written'] is False and body['error'] == 'ENOENT'
    assert app.get('/debug/write?path=relative.txt')[1]['error'] == 'EINVAL'
