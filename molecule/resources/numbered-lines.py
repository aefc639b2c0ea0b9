"""Test writer: prints numbered lines at a fixed rate (stdout), every 100th also to stderr."""
import argparse
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument('--rate', type=int, default=5000, help='lines per second')
parser.add_argument('--count', type=int, default=1000, help='lines in total')
args = parser.parse_args()

start = time.monotonic()
out, err = sys.stdout, sys.stderr
batch = max(1, args.rate // 100)
for n in range(args.count):
    out.write('out %d %s\n' % (n, 'x' * 40))
    if n % 100 == 0:
        err.write('err %d\n' % n)
        err.flush()
    if n % batch == batch - 1:
        out.flush()
        ahead = (n + 1) / args.rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
out.flush()
