# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Backup and restore throughput: our backup runner vs ``tar | zstd -3 | age`` vs restic.

    sudo /usr/bin/python3 bench/backup_throughput.py [--size-gib 1] [--rounds 1] [--workdir /var/tmp] [--json FILE]

One run, one dataset (bench/backup_dataset.py, generated into a fresh
directory under --workdir, default /var/tmp: /tmp is often a small tmpfs),
three tools, each backing up the dataset and restoring it into an empty
directory:

``ours``
    The way a host runs it: Debian's /usr/bin/python3 with python3-zstandard
    and python3-cryptography from apt, the runner and its module_utils copied
    side by side into one directory as the backup role installs them,
    ``python3 -I backup_runner.py --config JOB.json run`` (zstd level 3, one
    X25519 recipient; lock, manifest, fsync, rename, state and metrics
    included), then ``... --identity KEY verify`` (deep verification) and
    ``backup_archive.restore()`` (what the ``backup_restore`` module calls:
    verify while extracting into a staging directory, then rename).
``native``
    ``tar -cf - -C DATA . | zstd -3 | age -r RECIPIENT > FILE`` and
    ``age -d -i KEY FILE | zstd -d | tar -xf - -C TARGET``.
``restic``
    ``restic init`` + ``restic backup DATA`` (a first backup into a new local
    repository, password from the environment) and ``restic restore latest``.

Every process runs under ``/usr/bin/time -v``. MB/s is dataset bytes
(10^6) per wall-clock second of the whole step. Peak RSS (MiB) is
"Maximum resident set size": for a pipeline the sum over its members (they
run at the same time, so this bounds what the pipeline holds) and the
largest single member; restic's first backup is the larger of ``init`` and
``backup``. Each restore is checked against the input with the tree digest
of bench/backup_dataset.py (every path, type, mode, size, symlink target and
file SHA-256); a mismatch fails the run. Restored trees are kept until the
end of the run (see the comment in main). Before every step (untimed):
``sync``, ``drop_caches`` and a read of the step's input (the dataset, or
the archive or repository; see settle()), so that no step inherits
another's dirty pages or memory state and every tool reads its input from
the page cache: this measures CPU cost more than the disk.

Missing tools are installed with apt-get (age, zstd, restic, time,
python3-zstandard, python3-cryptography), so run it as root on Debian 12 or
13. The work directory (dataset, archives, restores) is removed at the end,
also after a failure, Ctrl-C or SIGTERM; --keep keeps it.
"""

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

BENCH = Path(__file__).resolve().parent
MODULE_UTILS = BENCH.parent / 'plugins' / 'module_utils'
sys.path.insert(0, str(BENCH))
import backup_dataset  # noqa: E402  # pylint: disable=wrong-import-position

HELPERS = ('backup_runner.py', 'backup_archive.py', 'age.py', 'retention.py', 'textfile.py')  # roles/backup/vars/main.yml
APT_BINARIES = {'age': '/usr/bin/age', 'zstd': '/usr/bin/zstd', 'restic': '/usr/bin/restic', 'time': '/usr/bin/time',
                'tar': '/bin/tar'}
APT_MODULES = {'python3-zstandard': 'zstandard', 'python3-cryptography': 'cryptography'}
TOOLS = ('ours', 'native', 'restic')
GIB = 1 << 30
MIB = 1 << 20
RESTORE = ('import sys; sys.path.insert(0, sys.argv[1]); import backup_archive; '
           'backup_archive.restore(sys.argv[2], sys.argv[3], identity=sys.argv[4])')
RESTIC_PASSWORD = 'backup-benchmark-only'


class Interrupted(BaseException):
    """SIGTERM or SIGHUP: unwind so that the work directory is removed."""


def log(message):
    print(f'[{time.strftime("%H:%M:%S")}] {message}', file=sys.stderr, flush=True)


def ensure_packages(python):
    """apt-get install whatever is missing; return the versions used."""
    missing = [pkg for pkg, path in APT_BINARIES.items() if not os.access(path, os.X_OK)]
    for pkg, module in APT_MODULES.items():
        if subprocess.run([python, '-c', f'import {module}'], capture_output=True, check=False).returncode:
            missing.append(pkg)
    if missing:
        if os.geteuid() != 0 or not shutil.which('apt-get'):
            raise SystemExit('missing {}: install them with apt-get as root, or run this as root'.format(' '.join(missing)))
        log('installing ' + ' '.join(missing))
        env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
        cmd = ['apt-get', 'install', '-y', '-q', '--no-install-recommends'] + missing
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=False).returncode:
            subprocess.run(['apt-get', 'update', '-q'], env=env, stdout=subprocess.DEVNULL, check=True)
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)
    versions = {}
    probe = 'import sys, zstandard, cryptography; print(sys.version.split()[0], zstandard.__version__, cryptography.__version__)'
    py, zstd_py, crypto = subprocess.run([python, '-c', probe], capture_output=True, text=True, check=True).stdout.split()
    versions['python'] = f'{python} {py}, zstandard {zstd_py}, cryptography {crypto}'
    for name, argv in (('age', ['age', '--version']), ('zstd', ['zstd', '-V']), ('restic', ['restic', 'version']),
                       ('tar', ['tar', '--version'])):
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip().splitlines()
        versions[name] = out[0] if out else '?'
    return versions


def free_bytes(path):
    vfs = os.statvfs(path)
    return vfs.f_bavail * vfs.f_frsize


def dir_bytes(path):
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def settle(inputs):
    """Start every step from the same memory state: dirty pages written, caches dropped, the step's input read back.

    Without this a step's speed depended on what ran before it: on this
    (virtual) machine a restore that grows the page cache into memory the
    guest has not touched yet spent 3 s of system time on 1 GiB, against 1 s
    after ``drop_caches`` (same archive, same code). Then only the step's
    input is read back (the dataset for a backup, the archive or repository
    for a verification or a restore), so every tool reads its input from the
    page cache and a restore does not also carry the dataset in it, as a
    host restoring a lost one would not.
    """
    subprocess.run(['sync'], check=False)
    try:
        with open('/proc/sys/vm/drop_caches', 'w') as handle:
            handle.write('3\n')
    except OSError:
        pass  # not root or not Linux: caches stay as they are
    buffer = bytearray(1024 * 1024)
    for path in inputs:
        for top, dummy, files in os.walk(path):
            for name in files:
                try:
                    with open(os.path.join(top, name), 'rb', buffering=0) as handle:
                        while handle.readinto(buffer):
                            pass
                except OSError:
                    pass


class Step:
    """One timed shell command; every process in it is wrapped in /usr/bin/time -v."""

    def __init__(self, workdir, name, inputs):
        self.workdir = workdir
        self.name = name
        self.inputs = inputs
        self.files = []

    def timed(self, argv):
        """``argv`` under /usr/bin/time -v, as a quoted shell word list."""
        path = os.path.join(self.workdir, f'time-{self.name}-{len(self.files)}.txt')
        self.files.append((argv[0].rsplit('/', 1)[-1], path))
        return ' '.join(shlex.quote(a) for a in ['/usr/bin/time', '-v', '-o', path] + argv)

    def run(self, script, env=None):
        """Run the shell ``script``; return wall seconds, [(program, max RSS bytes)] and CPU seconds (user + system)."""
        settle(self.inputs)
        start = time.perf_counter()
        done = subprocess.run(['/bin/bash', '-o', 'pipefail', '-c', script], env=env, check=False,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wall = time.perf_counter() - start
        if done.returncode:
            raise SystemExit(f'{self.name} failed (exit status {done.returncode}): {script}\n'
                             + done.stderr.decode('utf-8', 'replace')[-3000:])
        rss = []
        cpu = 0.0
        for program, path in self.files:
            with open(path) as handle:
                for line in handle:
                    if 'Maximum resident set size' in line:
                        rss.append((program, int(line.rsplit(':', 1)[1]) * 1024))
                    elif line.strip().startswith(('User time', 'System time')):
                        cpu += float(line.rsplit(':', 1)[1])
        return wall, rss, cpu


def measure(workdir, name, build, inputs, env=None):
    """Build a script with a fresh Step and run it (``inputs``: what it reads); return a result dict."""
    step = Step(workdir, name, inputs)
    wall, rss, cpu = step.run(build(step), env)
    return {'seconds': wall, 'cpu': cpu, 'rss_sum': sum(r for p, r in rss), 'rss_max': max(r for p, r in rss),
            'processes': [{'program': p, 'rss': r} for p, r in rss]}


def run_ours(ctx, rnd):
    out = os.path.join(ctx['work'], f'out-ours-{rnd}')
    os.mkdir(out, 0o700)
    lib = ctx['lib']
    config = os.path.join(ctx['work'], f'ours-{rnd}.json')
    with open(config, 'w') as handle:
        json.dump({'job': 'bench', 'dest': out, 'sources': [ctx['data']], 'recipients': [ctx['recipient']],
                   'compression': 'zstd', 'retention': {}, 'lock_timeout': 0,
                   'state_dir': os.path.join(ctx['work'], 'state'),
                   'textfile_dir': os.path.join(ctx['work'], 'textfile')}, handle)
    runner = [ctx['python'], '-I', os.path.join(lib, 'backup_runner.py'), '--config', config]
    result = {'backup': measure(ctx['work'], f'ours-backup-{rnd}', lambda s: s.timed(runner + ['run']), [ctx['data']])}
    archives = [n for n in os.listdir(out) if n.endswith('.age')]
    archive = os.path.join(out, archives[0])
    result['output_bytes'] = os.path.getsize(archive)
    result['verify'] = measure(ctx['work'], f'ours-verify-{rnd}',
                               lambda s: s.timed(runner + ['--identity', ctx['key'], 'verify']), [out])
    target = os.path.join(ctx['work'], f'restore-ours-{rnd}')
    result['restore'] = measure(ctx['work'], f'ours-restore-{rnd}', lambda s: s.timed(
        [ctx['python'], '-I', '-c', RESTORE, lib, archive, target, ctx['key']]), [out])
    result['restored'] = os.path.join(target, ctx['data'].lstrip('/'))
    result['cleanup'] = [out]
    return result


def run_native(ctx, rnd):
    out = os.path.join(ctx['work'], f'out-native-{rnd}')
    os.mkdir(out, 0o700)
    archive = os.path.join(out, 'data.tar.zst.age')
    target = os.path.join(ctx['work'], f'restore-native-{rnd}')
    os.mkdir(target)

    def backup(step):
        return '{} | {} | {} > {}'.format(step.timed(['tar', '-cf', '-', '-C', ctx['data'], '.']),
                                          step.timed(['zstd', '-3', '-q', '-c']),
                                          step.timed(['age', '-r', ctx['recipient']]), shlex.quote(archive))

    def restore(step):
        return '{} | {} | {}'.format(step.timed(['age', '-d', '-i', ctx['key'], archive]),
                                     step.timed(['zstd', '-d', '-q', '-c']),
                                     step.timed(['tar', '-xf', '-', '-C', target]))

    result = {'backup': measure(ctx['work'], f'native-backup-{rnd}', backup, [ctx['data']])}
    result['output_bytes'] = os.path.getsize(archive)
    result['restore'] = measure(ctx['work'], f'native-restore-{rnd}', restore, [out])
    result['restored'] = target
    result['cleanup'] = [out]
    return result


def run_restic(ctx, rnd):
    repo = os.path.join(ctx['work'], f'out-restic-{rnd}')
    target = os.path.join(ctx['work'], f'restore-restic-{rnd}')
    env = dict(os.environ, RESTIC_REPOSITORY=repo, RESTIC_PASSWORD=RESTIC_PASSWORD,
               RESTIC_CACHE_DIR=os.path.join(ctx['work'], f'restic-cache-{rnd}'), RESTIC_PROGRESS_FPS='0.1')

    def backup(step):
        return '{} && {}'.format(step.timed(['restic', 'init', '-q']), step.timed(['restic', 'backup', '-q', ctx['data']]))

    result = {'backup': measure(ctx['work'], f'restic-backup-{rnd}', backup, [ctx['data']], env)}
    # init and backup run one after the other: the peak is the larger one.
    result['backup']['rss_sum'] = result['backup']['rss_max']
    result['output_bytes'] = dir_bytes(repo)
    result['restore'] = measure(ctx['work'], f'restic-restore-{rnd}',
                                lambda s: s.timed(['restic', 'restore', 'latest', '-q', '--target', target]), [repo], env)
    result['restored'] = os.path.join(target, ctx['data'].lstrip('/'))
    result['cleanup'] = [repo, env['RESTIC_CACHE_DIR']]
    return result


RUNNERS = {'ours': run_ours, 'native': run_native, 'restic': run_restic}


def rate(size, seconds):
    return size / 1e6 / seconds


def report(results, size, rounds):
    """Markdown tables: per round and tool, then the ratios."""
    lines = ['| round | tool | backup MB/s | backup CPU s | backup peak RSS MiB (sum / largest) | restore MB/s | '
             'restore CPU s | restore peak RSS MiB (sum / largest) | restore / backup | output MB |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for rnd in range(rounds):
        for tool in TOOLS:
            res = results.get((rnd, tool))
            if res is None:
                continue
            b, r = res['backup'], res['restore']
            lines.append('| {} | {} | {:.0f} | {:.1f} | {:.1f} / {:.1f} | {:.0f} | {:.1f} | {:.1f} / {:.1f} | {:.2f} | {:.0f} |'.format(
                rnd + 1, tool, rate(size, b['seconds']), b['cpu'], b['rss_sum'] / MIB, b['rss_max'] / MIB,
                rate(size, r['seconds']), r['cpu'], r['rss_sum'] / MIB, r['rss_max'] / MIB, b['seconds'] / r['seconds'],
                res['output_bytes'] / 1e6))
            if 'verify' in res:
                v = res['verify']
                lines.append('| {} | ours deep verify | | | | {:.0f} | {:.1f} | {:.1f} / {:.1f} | | |'.format(
                    rnd + 1, rate(size, v['seconds']), v['cpu'], v['rss_sum'] / MIB, v['rss_max'] / MIB))
    if rounds > 1:
        for tool in TOOLS:
            runs = [results[(rnd, tool)] for rnd in range(rounds) if (rnd, tool) in results]
            if runs:
                lines.append('| median | {} | {:.0f} | {:.1f} | {:.1f} / {:.1f} | {:.0f} | {:.1f} | {:.1f} / {:.1f} | {:.2f} | |'.format(
                    tool, *(median(values) for values in (
                        [rate(size, r['backup']['seconds']) for r in runs], [r['backup']['cpu'] for r in runs],
                        [r['backup']['rss_sum'] / MIB for r in runs], [r['backup']['rss_max'] / MIB for r in runs],
                        [rate(size, r['restore']['seconds']) for r in runs], [r['restore']['cpu'] for r in runs],
                        [r['restore']['rss_sum'] / MIB for r in runs], [r['restore']['rss_max'] / MIB for r in runs],
                        [r['backup']['seconds'] / r['restore']['seconds'] for r in runs]))))
    lines.append('')
    for rnd in range(rounds):
        ours, native, restic = (results.get((rnd, t)) for t in TOOLS)
        parts = []
        if ours and native:
            parts.append('ours/native backup {:.2f}, restore {:.2f}'.format(
                native['backup']['seconds'] / ours['backup']['seconds'],
                native['restore']['seconds'] / ours['restore']['seconds']))
        if ours and restic:
            parts.append('ours/restic backup {:.2f}, restore {:.2f}'.format(
                restic['backup']['seconds'] / ours['backup']['seconds'],
                restic['restore']['seconds'] / ours['restore']['seconds']))
        if ours and native:
            parts.append('ours/native CPU seconds: backup {:.2f}, restore {:.2f}'.format(
                ours['backup']['cpu'] / native['backup']['cpu'], ours['restore']['cpu'] / native['restore']['cpu']))
        if parts:
            lines.append(f'round {rnd + 1}: ' + '; '.join(parts))
    if rounds > 1 and all((rnd, t) in results for rnd in range(rounds) for t in ('ours', 'native')):
        lines.append('median ratio ours/native: backup {:.2f}, restore {:.2f}'.format(
            median([results[(rnd, 'native')]['backup']['seconds'] / results[(rnd, 'ours')]['backup']['seconds']
                    for rnd in range(rounds)]),
            median([results[(rnd, 'native')]['restore']['seconds'] / results[(rnd, 'ours')]['restore']['seconds']
                    for rnd in range(rounds)])))
    return '\n'.join(lines)


def main():  # pylint: disable=too-many-locals,too-many-statements
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size-gib', type=float, default=1.0, help='dataset size in GiB (default 1)')
    parser.add_argument('--rounds', type=int, default=1, help='measure every tool this many times (default 1)')
    parser.add_argument('--tools', default=','.join(TOOLS), help='comma-separated subset of ' + ', '.join(TOOLS))
    parser.add_argument('--workdir', default='/var/tmp', help='parent of the work directory (default /var/tmp)')
    parser.add_argument('--python', default='/usr/bin/python3', help="the host's Python (default /usr/bin/python3)")
    parser.add_argument('--seed', type=int, default=7)
    parser.add_argument('--json', help='also write the results to this file')
    parser.add_argument('--keep', action='store_true', help='keep the work directory')
    args = parser.parse_args()
    tools = [t for t in args.tools.split(',') if t]
    if not tools or set(tools) - set(TOOLS):
        parser.error('--tools takes ' + ', '.join(TOOLS))
    versions = ensure_packages(args.python)
    size = int(args.size_gib * GIB)
    need = int(size * (1.8 + len(tools) * args.rounds)) + GIB  # dataset, the largest output, every restore (kept)
    if free_bytes(args.workdir) < need:
        raise SystemExit(f'{args.workdir} has {free_bytes(args.workdir) / GIB:.1f} GiB free, '
                         f'this run needs about {need / GIB:.1f} GiB')
    if backup_dataset._fs_type(args.workdir) == 'tmpfs':  # pylint: disable=protected-access
        log(f'warning: {args.workdir} is on tmpfs (RAM)')

    def interrupted(signum, frame):
        raise Interrupted(signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)
    work = tempfile.mkdtemp(prefix='backup-bench-', dir=args.workdir)
    results = {}
    try:
        ctx = {'work': work, 'python': args.python, 'data': os.path.join(work, 'data'), 'lib': os.path.join(work, 'lib')}
        os.mkdir(ctx['lib'])
        for helper in HELPERS:
            shutil.copy2(MODULE_UTILS / helper, ctx['lib'])
        ctx['key'] = os.path.join(work, 'key.txt')
        subprocess.run(['age-keygen', '-o', ctx['key']], check=True, capture_output=True)
        ctx['recipient'] = subprocess.run(['age-keygen', '-y', ctx['key']], check=True, capture_output=True,
                                          text=True).stdout.strip()
        log(f'generating {args.size_gib:g} GiB in {ctx["data"]}')
        started = time.perf_counter()
        files, size = backup_dataset.generate(ctx['data'], args.size_gib, args.seed)
        log(f'{files} files, {size} bytes in {time.perf_counter() - started:.0f} s; hashing')
        expected = backup_dataset.tree_digest(ctx['data'])
        load_before = os.getloadavg()
        for rnd in range(args.rounds):
            order = tools[rnd % len(tools):] + tools[:rnd % len(tools)]  # rotate: load changes hit every tool
            for tool in order:
                log(f'round {rnd + 1}: {tool}')
                res = RUNNERS[tool](ctx, rnd)
                got = backup_dataset.tree_digest(res['restored'])
                if got != expected:
                    raise SystemExit(f'{tool}: the restored tree differs from the input: {got} != {expected}')
                res['verified'] = True
                # Archives and repositories go now; restored trees stay until the end
                # of the run (with the work directory). Deleting thousands of files
                # just before a restore makes ext4 slow to create files for the next
                # half minute (its inode allocator skips "recently deleted" inodes,
                # one lookup each): measured on the same archive, 3.8-4.9 s instead
                # of 1.8-2.2 s, the whole difference in ext4_create. A host restoring
                # a lost one does not delete thousands of files first.
                for path in res.pop('cleanup'):
                    shutil.rmtree(path, ignore_errors=True)
                del res['restored']
                results[(rnd, tool)] = res
                log('{}: backup {:.1f} s, restore {:.1f} s, restore verified'.format(
                    tool, res['backup']['seconds'], res['restore']['seconds']))
        load_after = os.getloadavg()
    except Interrupted:
        log('interrupted')
        raise SystemExit(130)
    finally:
        if args.keep:
            log(f'kept {work}')
        else:
            shutil.rmtree(work, ignore_errors=True)
    header = ['{} GiB ({} bytes, {} files), {} round(s), {}, {} CPUs, load average {:.1f} before, {:.1f} after'.format(
        args.size_gib, size, files, args.rounds, platform.platform(), os.cpu_count(), load_before[0], load_after[0])]
    header += [f'{k}: {v}' for k, v in versions.items()]
    print('\n'.join(header) + '\n\n' + report(results, size, args.rounds))
    if args.json:
        with open(args.json, 'w') as handle:
            json.dump({'size_gib': args.size_gib, 'bytes': size, 'files': files, 'versions': versions,
                       'load': [load_before, load_after],
                       'results': [dict(r, round=k[0] + 1, tool=k[1]) for k, r in results.items()]}, handle, indent=1)


if __name__ == '__main__':
    main()
