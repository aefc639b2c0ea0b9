# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Throughput (MB/s, 1 MB = 10^6 bytes) of plugins/module_utils/age.py vs the age binary.

    python3 bench/age_throughput.py [--size-mib 256] [--runs 3]

Rows: raw encrypt / decrypt of a file to /dev/null and, when tar and zstd are
installed, the backup pipeline ``tar | zstd -3 | <age>`` with our encryptor
reading stdin in place of ``age -r``. Best of --runs; the age column is
empty when the binary isn't installed.
"""

import argparse
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AGE_PY = Path(__file__).resolve().parents[1] / "plugins" / "module_utils" / "age.py"
# Pipeline stage: stdin -> age file on stdout, importing no more than a real caller would.
ENCRYPT_STDIN = (
    "import importlib.util, sys; spec = importlib.util.spec_from_file_location('age', sys.argv[1]); "
    "age = importlib.util.module_from_spec(spec); spec.loader.exec_module(age); "
    "age.encrypt_stream(sys.stdin.buffer, sys.stdout.buffer, sys.argv[2])"
)


def load_age():
    """Import plugins/module_utils/age.py from this checkout."""
    spec = importlib.util.spec_from_file_location("prodready_age", AGE_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_data(path, size):
    """Random-ish: half random bytes, half repetitive log-like text (zstd compresses ~2:1)."""
    line = b"2026-01-01T00:00:00Z app[123]: GET /api/items?page=%d 200 12ms\n"
    text = b"".join(line.replace(b"%d", str(i).encode()) for i in range(20000))
    with open(path, "wb") as out:
        left = size
        while left > 0:
            block = (os.urandom(512 * 1024) + text[:512 * 1024])[:left]
            out.write(block)
            left -= len(block)


def best_of(runs, *funcs):
    """Best time of each function, runs interleaved so that load changes hit both alike."""
    best = [float("inf")] * len(funcs)
    for dummy in range(runs):
        for i, func in enumerate(funcs):
            start = time.perf_counter()
            func()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def shell(cmd):
    """A callable running a shell pipeline."""
    return lambda: subprocess.run(cmd, shell=True, check=True)


def main():  # pylint: disable=too-many-locals
    """Generate the data, time each row and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    age = load_age()

    age_bin = shutil.which("age")
    size = args.size_mib * 1024 * 1024
    secret, public = age.generate_identity()
    with tempfile.TemporaryDirectory(prefix="age-bench-") as tmp:
        src, enc, key = (os.path.join(tmp, n) for n in ("data.bin", "data.age", "key.txt"))
        make_data(src, size)
        with open(key, "w", encoding="ascii") as f:
            f.write(secret + "\n")
        with open(src, "rb") as fin, open(enc, "wb") as fout:
            age.encrypt_stream(fin, fout, public)

        def ours_encrypt():
            with open(src, "rb") as fin, open(os.devnull, "wb") as fout:
                age.encrypt_stream(fin, fout, public)

        def ours_decrypt():
            with open(enc, "rb") as fin, open(os.devnull, "wb") as fout:
                age.decrypt_stream(fin, fout, secret)

        q = shlex.quote
        rows = [("encrypt", ours_encrypt, age_bin and shell(f"{q(age_bin)} -r {public} -o /dev/null {q(src)}")),
                ("decrypt", ours_decrypt, age_bin and shell(f"{q(age_bin)} -d -i {q(key)} -o /dev/null {q(enc)}"))]
        if shutil.which("tar") and shutil.which("zstd"):
            tar_zstd = f"tar -cf - -C {q(tmp)} data.bin | zstd -3 -q -c"
            ours = f"{tar_zstd} | {q(sys.executable)} -c {q(ENCRYPT_STDIN)} {q(str(AGE_PY))} {public} > /dev/null"
            rows.append(("tar|zstd -3|encrypt", shell(ours), age_bin and shell(f"{tar_zstd} | {q(age_bin)} -r {public} > /dev/null")))

        print(f"{args.size_mib} MiB, best of {args.runs}, MB/s")
        print(f"{'operation':<22}{'python':>10}{'age':>10}{'ratio':>8}")
        for name, ours_func, age_func in rows:
            times = best_of(args.runs, ours_func, age_func) if age_func else best_of(args.runs, ours_func)
            ours_rate = size / 1e6 / times[0]
            age_rate = size / 1e6 / times[1] if age_func else None
            age_col = f"{age_rate:10.0f}{ours_rate / age_rate:8.2f}" if age_rate else f"{'-':>10}{'-':>8}"
            print(f"{name:<22}{ours_rate:10.0f}{age_col}")


if __name__ == "__main__":
    main()
