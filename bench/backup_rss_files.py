# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Peak RSS of a backup, a deep verification and a restore against the number of files.

    python3 bench/backup_rss_files.py [--files 5000,50000,200000] [--workdir /var/tmp/prodready-rss]

Each count gets a tree of 100-byte files (500 per directory; created once and
kept in the work directory) and each step runs in a fresh Python process of
its own (backup_archive.create, verify with the identity, restore into an
empty directory), so ru_maxrss is that step's peak alone. Prints a Markdown
table for docs/benchmarks.md. bench/backup_throughput.py measures the bytes
side (1 and 5 GiB); this one the per-file side.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO, '.collections')

STEP = r'''
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[1])
from ansible_collections.prodready.vps.plugins.module_utils import backup_archive as ba
step, src, dest, target, key = sys.argv[2:7]
started = time.monotonic()
if step == 'backup':
    with open(key) as handle:
        public = json.load(handle)['public']
    result = ba.create(dest, [src], recipients=[public])
    entries = result['entries']
else:
    with open(key) as handle:
        secret = json.load(handle)['secret']
    archive = [os.path.join(dest, n) for n in sorted(os.listdir(dest)) if n.endswith('.age')][-1]
    if step == 'verify':
        entries = ba.verify(archive, identity=secret)['entries']
    else:
        ba.restore(archive, target, identity=secret)
        entries = sum(len(d) + len(f) for _r, d, f in os.walk(target))
print(json.dumps({'entries': entries, 'seconds': time.monotonic() - started,
                  'rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))
'''


def make_tree(root, count):
    marker = os.path.join(root, '.complete')
    if os.path.exists(marker):
        return
    shutil.rmtree(root, ignore_errors=True)
    for index in range(count):
        directory = os.path.join(root, 'directory-%04d' % (index // 500))
        if index % 500 == 0:
            os.makedirs(directory)
        with open(os.path.join(directory, 'file-number-%07d.txt' % index), 'w') as handle:
            handle.write('x' * 100)
    open(marker, 'w').close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--files', default='5000,50000,200000')
    parser.add_argument('--workdir', default='/var/tmp/prodready-rss')
    args = parser.parse_args()
    sys.path.insert(0, COLLECTIONS)
    from ansible_collections.prodready.vps.plugins.module_utils import age  # pylint: disable=import-outside-toplevel
    os.makedirs(args.workdir, exist_ok=True)
    key = os.path.join(args.workdir, 'key.json')
    secret, public = age.generate_identity()
    with open(key, 'w') as handle:
        json.dump({'secret': secret, 'public': public}, handle)
    os.chmod(key, 0o600)
    rows = ['| files | backup peak RSS MiB | verify (deep) peak RSS MiB | restore peak RSS MiB | backup s |',
            '|---:|---:|---:|---:|---:|']
    for count in [int(c) for c in args.files.split(',')]:
        src = os.path.join(args.workdir, 'src-%d' % count)
        dest = os.path.join(args.workdir, 'dest')
        target = os.path.join(args.workdir, 'restore')
        make_tree(src, count)
        for path in (dest, target):
            shutil.rmtree(path, ignore_errors=True)
            os.makedirs(path)
        out = {}
        for step in ('backup', 'verify', 'restore'):
            done = subprocess.run([sys.executable, '-c', STEP, COLLECTIONS, step, src, dest, target, key],
                                  check=True, stdout=subprocess.PIPE, universal_newlines=True)
            out[step] = json.loads(done.stdout)
        rows.append('| {:,} | {:.1f} | {:.1f} | {:.1f} | {:.1f} |'.format(
            count, out['backup']['rss_mib'], out['verify']['rss_mib'], out['restore']['rss_mib'],
            out['backup']['seconds']))
        print(rows[-1], file=sys.stderr)
    os.unlink(key)
    print('\n'.join(rows))


if __name__ == '__main__':
    main()
