# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Steady HTTP load that counts every failed request (test and bench helper).

Open loop: a request starts every 1/RATE seconds whatever the answers take
(each in its own thread, on a new connection, like independent clients), so
a stall shows up as failures or latency instead of a slower request rate.
A request fails on a connection error, a timeout or a status other than 200.
Runs until SIGTERM/SIGINT or --duration, then writes a JSON summary to --out
(or stdout)::

    python3 http-load.py --url http://127.0.0.1:8201/ --rate 50 --timeout 10 --out /var/tmp/load.json

Summary: requests, ok, failed, errors (by kind), failures (the first 20, with
their time), versions (answers by the ``version`` field of the JSON body, in
the order first seen), timeline (the versions in the order requests started,
repeats collapsed), latency (p50, p99, max seconds), started, ended. With
--log FILE every request is also written as a JSON line (start, latency,
status, version, error).
Standard library only.
"""

import argparse
import http.client
import json
import os
import signal
import sys
import threading
import time
from urllib.parse import urlsplit


def one_request(url, timeout):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        conn.request('GET', parts.path or '/', headers={'Connection': 'close'})
        response = conn.getresponse()
        body = response.read()
        version = None
        try:
            version = json.loads(body).get('version')
        except (ValueError, AttributeError):
            pass
        return response.status, version, None
    except Exception as exc:  # pylint: disable=broad-except  # every failure is counted, none is fatal
        return None, None, '%s: %s' % (type(exc).__name__, exc)
    finally:
        conn.close()


class Load(object):
    def __init__(self, url, rate, timeout):
        self.url = url
        self.interval = 1.0 / rate
        self.timeout = timeout
        self.lock = threading.Lock()
        self.results = []
        self.threads = []
        self.stop = threading.Event()

    def worker(self, started):
        status, version, error = one_request(self.url, self.timeout)
        with self.lock:
            self.results.append((started, time.time() - started, status, version, error))

    def run(self, duration):
        start = time.monotonic()
        self.started = time.time()
        n = 0
        while not self.stop.is_set():
            due = start + n * self.interval
            now = time.monotonic()
            if duration and now - start >= duration:
                break
            if due > now:
                if self.stop.wait(due - now):
                    break
            thread = threading.Thread(target=self.worker, args=(time.time(),), daemon=True)
            thread.start()
            self.threads.append(thread)
            n += 1
        for thread in self.threads:
            thread.join(self.timeout + 5)
        self.ended = time.time()

    def summary(self):
        with self.lock:
            results = sorted(self.results)
        latencies = sorted(r[1] for r in results)
        errors, failures, versions, timeline = {}, [], [], []
        for started, latency, status, version, error in results:
            if version is not None and version not in versions:
                versions.append(version)
            if version is not None and (not timeline or timeline[-1] != version):
                timeline.append(version)
            if status == 200:
                continue
            kind = error.split(':', 1)[0] if error else 'HTTP %s' % status
            errors[kind] = errors.get(kind, 0) + 1
            if len(failures) < 20:
                failures.append({'at': round(started, 3), 'latency': round(latency, 3), 'status': status,
                                 'error': error})

        def pct(p):
            return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 4) if latencies else None

        failed = sum(errors.values())
        return {'url': self.url, 'rate': round(1 / self.interval, 3), 'requests': len(results),
                'ok': len(results) - failed, 'failed': failed, 'errors': errors, 'failures': failures,
                'versions': versions, 'timeline': timeline, 'latency': {'p50': pct(0.5), 'p99': pct(0.99), 'max': pct(1.0)},
                'started': round(self.started, 3), 'ended': round(self.ended, 3)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--url', required=True)
    parser.add_argument('--rate', type=float, default=50.0, help='requests per second')
    parser.add_argument('--timeout', type=float, default=10.0, help='seconds per request')
    parser.add_argument('--duration', type=float, default=0, help='seconds (0: until SIGTERM)')
    parser.add_argument('--out', help='summary file (default stdout)')
    parser.add_argument('--log', help='also write every request as a JSON line: start, latency, status, version, error')
    args = parser.parse_args(argv)
    load = Load(args.url, args.rate, args.timeout)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: load.stop.set())
    load.run(args.duration)
    if args.log:
        with load.lock:
            rows = sorted(load.results)
        with open(args.log, 'w') as handle:
            for started, latency, status, version, error in rows:
                handle.write(json.dumps({'start': round(started, 4), 'latency': round(latency, 4), 'status': status,
                                         'version': version, 'error': error}) + '\n')
    text = json.dumps(load.summary(), indent=2, sort_keys=True) + '\n'
    if args.out:
        with open(args.out + '.tmp', 'w') as handle:
            handle.write(text)
        os.rename(args.out + '.tmp', args.out)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
