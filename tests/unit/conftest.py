# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Make ``ansible_collections.prodready.vps`` importable from a plain checkout.

The repository root is the collection root. Unit tests import the code the way
Ansible does (``ansible_collections.prodready.vps.plugins...``), so a temporary
``ansible_collections/prodready/vps`` symlink to the checkout is put in front of
``sys.path``. ``ansible_collections`` stays a namespace package, so the test-time
collections shipped by the ``ansible`` package remain importable too.
"""

import atexit
import shutil
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _install_collection_path():
    base = Path(tempfile.mkdtemp(prefix="prodready-unit-"))
    # rmtree removes the link, never what it points to.
    atexit.register(shutil.rmtree, str(base), True)
    ns = base / "ansible_collections" / "prodready"
    ns.mkdir(parents=True)
    (ns / "vps").symlink_to(REPO_ROOT, target_is_directory=True)
    sys.path.insert(0, str(base))
    # A namespace package computed before our path was added would miss it.
    for name in [m for m in sys.modules if m == "ansible_collections" or m.startswith("ansible_collections.")]:
        del sys.modules[name]


_install_collection_path()
