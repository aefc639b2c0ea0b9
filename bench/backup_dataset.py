# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Deterministic mixed dataset for the backup benchmark (bench/backup_throughput.py).

    python3 bench/backup_dataset.py DIR [--size-gib 1] [--seed 7]
    python3 bench/backup_dataset.py --digest DIR

For ``--size-gib 1`` it writes exactly 1 GiB of file content into DIR (which
must not exist or be empty), in the proportions of issue 7:

* ``logs/``: ~600 MB of text-like log lines (timestamps, hosts, request ids,
  paths, status codes, latencies; zstd -3 compresses them about 5:1) in 20
  files, plus a ``current.log`` symlink;
* ``blobs/``: ~300 MB of random bytes (incompressible) in 4 large files;
* ``small/``: 5,000 small files (config-like text, JSON and some random
  bytes; a few bytes to 256 KiB, log-normal sizes) in 50 directories, plus
  an empty directory.

``--size-gib N`` (N may be fractional) scales every part: N times the bytes,
the log files, the small files and their directories; the 4 blobs grow. The
same size and seed always give the same tree, byte for byte (names, content,
modes and the mtimes of files and links), with Python's ``random`` (Mersenne Twister) as the only
source. Only the standard library is used, Python 3.9+.

``--digest DIR`` prints the tree digest that the benchmark compares after
each restore: SHA-256 over the sorted relative paths with their type, mode
(files and links) and size and SHA-256 of every file or the target of every
symlink; plus the file count and bytes.

The directory should be on a real disk: ``/tmp`` is often a small tmpfs
(RAM), so the generator refuses a target without room for the dataset and
warns when it is on tmpfs. The benchmark uses ``/var/tmp``.
"""

import argparse
import hashlib
import os
import random
import stat
import sys

GIB = 1 << 30
LOG_SHARE = 600 / 1073.741824     # 600 MB of 1 GiB
RANDOM_SHARE = 300 / 1073.741824  # 300 MB of 1 GiB
LOG_FILES_PER_GIB = 20
BLOB_FILES = 4
SMALL_FILES_PER_GIB = 5000
SMALL_PER_DIR = 100
SMALL_MAX = 256 * 1024
LINES_PER_BLOCK = 4096
WRITE_SIZE = 1 << 20
BASE_TIME = 1795132800            # 2026-11-20T00:00:00Z: mtimes and log timestamps start here

HOSTS = ['web-1', 'web-2', 'web-3', 'web-4', 'worker-1', 'worker-2', 'db-1', 'lb-1']
SERVICES = ['app', 'api', 'nginx', 'worker', 'pgbouncer', 'cron', 'sshd', 'backup']
LEVELS = ['INFO'] * 200 + ['DEBUG'] * 40 + ['WARN'] * 12 + ['ERROR'] * 4
METHODS = ['GET'] * 6 + ['POST', 'PUT', 'DELETE', 'PATCH']
STATUSES = [200] * 20 + [201, 204, 301, 302, 304, 400, 401, 403, 404, 404, 409, 422, 429, 500, 502, 503]
WORDS = ('items users orders invoices sessions health metrics search cart checkout profile settings reports '
         'export import login logout token refresh upload download comments tags teams projects').split()
AGENTS = ['curl/7.88.1', 'Mozilla/5.0 (X11; Linux x86_64)', 'python-requests/2.28.1', 'Go-http-client/1.1',
          'Prometheus/2.42.0', 'kube-probe/1.27', 'okhttp/4.10.0', 'Wget/1.21.3']


def tree_digest(root):
    """Digest of the tree under ``root`` (see the module doc); returns ``(hexdigest, files, bytes)``."""
    total = hashlib.sha256()
    files = size = 0
    root = os.path.abspath(root)

    def walk(rel):
        nonlocal files, size
        path = os.path.join(root, rel) if rel else root
        for name in sorted(os.listdir(path)):
            child_rel = f'{rel}/{name}' if rel else name
            child = os.path.join(path, name)
            st = os.lstat(child)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                total.update(f'd {child_rel} {mode:o}\n'.encode('utf-8', 'surrogateescape'))
                walk(child_rel)
            elif stat.S_ISLNK(st.st_mode):
                total.update(f'l {child_rel} -> {os.readlink(child)}\n'.encode('utf-8', 'surrogateescape'))
            elif stat.S_ISREG(st.st_mode):
                sha = hashlib.sha256()
                with open(child, 'rb', buffering=0) as handle:
                    while True:
                        chunk = handle.read(WRITE_SIZE)
                        if not chunk:
                            break
                        sha.update(chunk)
                total.update(f'f {child_rel} {mode:o} {st.st_size} {sha.hexdigest()}\n'.encode('utf-8', 'surrogateescape'))
                files += 1
                size += st.st_size
            else:
                total.update(f'o {child_rel} {stat.S_IFMT(st.st_mode):o}\n'.encode('utf-8', 'surrogateescape'))

    walk('')
    return total.hexdigest(), files, size


def _message_pool(rng, count):
    """Request descriptions reused by the log lines (what varies in real logs: paths, ids, sizes)."""
    pool = []
    for dummy in range(count):
        words = rng.sample(WORDS, 2)
        path = f'/api/v{rng.randint(1, 3)}/{words[0]}/{rng.randint(1, 99999)}/{words[1]}'
        if rng.random() < 0.3:
            path += f'?page={rng.randint(1, 50)}&limit={rng.choice((10, 25, 50, 100))}'
        pool.append(f'method={rng.choice(METHODS)} path={path} status={rng.choice(STATUSES)} '
                    f'bytes={int(rng.lognormvariate(7, 1.5))} client=10.{rng.randint(0, 3)}.{rng.randint(0, 255)}.'
                    f'{rng.randint(1, 254)} ua="{rng.choice(AGENTS)}" user=u{rng.randint(1, 20000)}')
    return pool


def _write_log(path, rng, size, start):
    """Log lines up to exactly ``size`` bytes (the last line is cut); returns the last timestamp (ms)."""
    pool = _message_pool(rng, 4096)
    seconds = {}
    now_ms = start * 1000
    left = size
    with open(path, 'wb', buffering=0) as out:
        while left > 0:
            noise = rng.randbytes(LINES_PER_BLOCK * 8)
            ids = noise.hex()
            lines = []
            for i in range(LINES_PER_BLOCK):
                o = i * 8
                b0, b1, b2, b3 = noise[o + 4], noise[o + 5], noise[o + 6], noise[o + 7]
                now_ms += b0 & 63
                sec = now_ms // 1000
                prefix = seconds.get(sec)
                if prefix is None:
                    seconds.clear()
                    prefix = seconds[sec] = _iso(sec)
                lines.append(f'{prefix}.{now_ms % 1000:03d}Z {HOSTS[b1 & 7]} {SERVICES[b1 >> 5]}[{1000 + (b2 & 127)}]: '
                             f'{LEVELS[b3]} request_id={ids[o * 2:o * 2 + 8]} {pool[((b2 >> 7) << 11) | (b3 << 3) | (b0 >> 6)]} '
                             f'duration_ms={(b2 & 127) * (1 + (b3 & 3))}\n')
            block = ''.join(lines).encode('ascii')[:left]
            out.write(block)
            left -= len(block)
    return now_ms // 1000


def _iso(sec):
    days, rest = divmod(sec, 86400)
    # Civil date from days since 1970-01-01 (Howard Hinnant's algorithm): no datetime per line.
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (month <= 2)
    return f'{year:04d}-{month:02d}-{day:02d}T{rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}'


def _write_random(path, rng, size):
    with open(path, 'wb', buffering=0) as out:
        left = size
        while left > 0:
            block = rng.randbytes(min(WRITE_SIZE, left))
            out.write(block)
            left -= len(block)


def _json_line(rng):
    return (f'  "{rng.choice(WORDS)}_{rng.randint(1, 500)}": {{"id": {rng.randint(1, 10 ** 6)}, '
            f'"enabled": {rng.choice(("true", "false"))}, "name": "{rng.choice(WORDS)}-{rng.randint(1, 99)}", '
            f'"weight": {rng.random():.4f}}},\n')


def _config_line(rng):
    return f'{rng.choice(WORDS)}_{rng.choice(WORDS)} = {rng.choice(("yes", "no", rng.randint(0, 65535), rng.choice(HOSTS)))}\n'


def _small_content(rng, index, size):
    """Content of small file ``index``: 40 % config text, 30 % JSON, 30 % random bytes."""
    kind = index % 10
    if kind >= 7:
        return rng.randbytes(size)
    if kind >= 4:
        parts, make = ['{\n'], _json_line
    else:
        parts, make = [f'# generated for the backup benchmark, file {index}\n'], _config_line
    have = len(parts[0])
    while have < size:
        parts.append(make(rng))
        have += len(parts[-1])
    return ''.join(parts).encode('ascii')[:size]


def _small_sizes(rng, count, total):
    """``count`` log-normal sizes from 1 byte to SMALL_MAX adding up to ``total``."""
    weights = [rng.lognormvariate(0, 1.0) for dummy in range(count)]
    clipped = [False] * count
    for dummy in range(20):  # scale the unclipped files until the clipped ones stop changing
        room = total - SMALL_MAX * sum(clipped)
        scale = room / sum(w for w, c in zip(weights, clipped) if not c)
        changed = False
        for i, weight in enumerate(weights):
            if not clipped[i] and weight * scale > SMALL_MAX:
                clipped[i] = changed = True
        if not changed:
            break
    sizes = [SMALL_MAX if c else max(1, int(w * scale)) for w, c in zip(weights, clipped)]
    # Spread the rounding over the files, so the total is exact.
    missing = total - sum(sizes)
    i = 0
    while missing:
        j = i % count
        step = min(SMALL_MAX - sizes[j], missing, 1 + missing // count) if missing > 0 else max(1 - sizes[j], missing)
        sizes[j] += step
        missing -= step
        i += 1
        if i > 4 * count and missing:
            raise ValueError('the small files cannot hold {} bytes'.format(total))
    return sizes


def generate(root, size_gib=1.0, seed=7, log=None):
    """Write the dataset into ``root``; returns ``(files, bytes)``."""
    total = int(size_gib * GIB)
    log_total = int(total * LOG_SHARE)
    random_total = int(total * RANDOM_SHARE)
    small_total = total - log_total - random_total
    log_files = max(1, round(LOG_FILES_PER_GIB * size_gib))
    small_files = max(1, round(SMALL_FILES_PER_GIB * size_gib))
    if small_total < small_files:
        raise ValueError(f'--size-gib {size_gib} is too small')
    rng = random.Random(f'prodready-backup-bench-{seed}')
    files = 0
    for sub in ('logs', 'blobs', 'small', 'small/empty'):
        os.makedirs(os.path.join(root, sub), mode=0o755, exist_ok=True)

    start = BASE_TIME
    for i in range(log_files):
        size = log_total // log_files + (log_total % log_files if i == log_files - 1 else 0)
        path = os.path.join(root, 'logs', f'app-{i:03d}.log')
        start = _write_log(path, random.Random(rng.getrandbits(64)), size, start)
        os.chmod(path, 0o640)
        os.utime(path, (start, start))
        files += 1
        if log:
            log(f'logs {i + 1}/{log_files}')
    link = os.path.join(root, 'logs', 'current.log')
    os.symlink(f'app-{log_files - 1:03d}.log', link)
    os.utime(link, (start, start), follow_symlinks=False)

    for i in range(BLOB_FILES):
        size = random_total // BLOB_FILES + (random_total % BLOB_FILES if i == BLOB_FILES - 1 else 0)
        path = os.path.join(root, 'blobs', f'blob-{i}.bin')
        _write_random(path, random.Random(rng.getrandbits(64)), size)
        os.chmod(path, 0o600)
        os.utime(path, (BASE_TIME + i, BASE_TIME + i))
        files += 1
    if log:
        log(f'blobs {BLOB_FILES}/{BLOB_FILES}')

    small_rng = random.Random(rng.getrandbits(64))
    for i, size in enumerate(_small_sizes(small_rng, small_files, small_total)):
        directory = os.path.join(root, 'small', f'd{i // SMALL_PER_DIR:04d}')
        if i % SMALL_PER_DIR == 0:
            os.makedirs(directory, mode=0o755, exist_ok=True)
        ext = ('conf', 'conf', 'conf', 'conf', 'json', 'json', 'json', 'bin', 'bin', 'bin')[i % 10]
        path = os.path.join(directory, f'f{i:06d}.{ext}')
        with open(path, 'wb', buffering=0) as out:
            out.write(_small_content(small_rng, i, size))
        os.chmod(path, 0o600 if ext == 'bin' else 0o644)
        os.utime(path, (BASE_TIME + i, BASE_TIME + i))
        files += 1
        if i % 100 == 99:
            link = os.path.join(directory, 'latest')
            os.symlink(f'f{i:06d}.{ext}', link)
            os.utime(link, (BASE_TIME + i, BASE_TIME + i), follow_symlinks=False)
    if log:
        log(f'small files {small_files}')
    return files, total


def _check_target(root, size_gib):
    probe = root
    while not os.path.exists(probe):
        probe = os.path.dirname(probe) or '.'
    if os.path.isdir(root) and os.listdir(root):
        raise SystemExit(f'{root} is not empty')
    vfs = os.statvfs(probe)
    free = vfs.f_bavail * vfs.f_frsize
    need = int(size_gib * GIB * 1.05) + 64 * 1024 * 1024
    if free < need:
        raise SystemExit(f'{probe} has {free / GIB:.1f} GiB free, the dataset needs {need / GIB:.1f} GiB: '
                         'use a directory on a larger disk (for example under /var/tmp)')
    if _fs_type(probe) == 'tmpfs':
        print(f'warning: {probe} is on tmpfs: the dataset takes {size_gib:g} GiB of RAM', file=sys.stderr)


def _fs_type(path):
    """File system type of the mount holding ``path`` (from /proc/self/mounts), or None."""
    best, kind = '', None
    real = os.path.realpath(path)
    try:
        with open('/proc/self/mounts') as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount = fields[1].replace('\\040', ' ')
                if (real == mount or real.startswith(mount.rstrip('/') + '/')) and len(mount) >= len(best):
                    best, kind = mount, fields[2]
    except OSError:
        return None
    return kind


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('dir', help='target directory (created; must be empty)')
    parser.add_argument('--size-gib', type=float, default=1.0, help='dataset size in GiB (default 1)')
    parser.add_argument('--seed', type=int, default=7)
    parser.add_argument('--digest', action='store_true', help='print the tree digest of DIR instead of writing it')
    args = parser.parse_args()
    if args.digest:
        digest, files, size = tree_digest(args.dir)
        print(f'{digest} {files} files {size} bytes')
        return
    if args.size_gib <= 0:
        parser.error('--size-gib must be positive')
    root = os.path.abspath(args.dir)
    _check_target(root, args.size_gib)
    os.makedirs(root, mode=0o755, exist_ok=True)
    files, size = generate(root, args.size_gib, args.seed, log=lambda m: print(m, file=sys.stderr))
    print(f'{root}: {files} files, {size} bytes')


if __name__ == '__main__':
    main()
