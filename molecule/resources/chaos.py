"""Chaos helper for Molecule tests, run inside the container as root.

  chaos.py UNIT kill|stop [--child] [--timeout S]
      Sends SIGKILL or SIGSTOP to the unit's main process (or, with --child,
      to its first child: the app under the watchdog helper) and waits until
      the unit is active again with a new main PID.
  chaos.py UNIT balloon --url URL [--timeout S]
      GETs URL (a memory balloon above MemoryMax) and waits as above.

Prints JSON: seconds from the fault to active again, old/new PIDs, the
unit's result and restart count.
"""
import argparse
import json
import os
import signal
import subprocess
import time
import urllib.request


def show(unit, *props):
    out = subprocess.run(['systemctl', 'show', unit, '--no-pager'] + ['-p' + p for p in props],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split('=', 1) for line in out.splitlines() if '=' in line)


def children(pid):
    try:
        with open('/proc/%d/task/%d/children' % (pid, pid), encoding='ascii') as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('unit')
    parser.add_argument('fault', choices=['kill', 'stop', 'balloon'])
    parser.add_argument('--child', action='store_true')
    parser.add_argument('--url')
    parser.add_argument('--timeout', type=float, default=60)
    args = parser.parse_args()
    before = show(args.unit, 'MainPID', 'NRestarts')
    main_pid = int(before['MainPID'])
    if main_pid <= 0:
        raise SystemExit('%s has no main process' % args.unit)
    target = main_pid
    if args.child:
        kids = children(main_pid)
        if not kids:
            raise SystemExit('%s: main process %d has no child' % (args.unit, main_pid))
        target = kids[0]
    start = time.monotonic()
    if args.fault == 'kill':
        os.kill(target, signal.SIGKILL)
    elif args.fault == 'stop':
        os.kill(target, signal.SIGSTOP)
    else:
        try:
            urllib.request.urlopen(args.url, timeout=30).read()
        except Exception as err:  # the process dies while answering
            print(json.dumps({'balloon_error': str(err)}), flush=True)
    now = {}
    while time.monotonic() - start < args.timeout:
        now = show(args.unit, 'MainPID', 'ActiveState', 'SubState', 'NRestarts', 'Result')
        if now['ActiveState'] == 'active' and now['MainPID'] not in ('0', str(main_pid)):
            break
        time.sleep(0.1)
    else:
        print(json.dumps({'timeout': True, 'state': now}))
        raise SystemExit(1)
    print(json.dumps({'seconds': round(time.monotonic() - start, 2), 'old_pid': main_pid, 'target_pid': target,
                      'new_pid': int(now['MainPID']), 'restarts_before': int(before['NRestarts']),
                      'restarts': int(now['NRestarts'])}))


if __name__ == '__main__':
    main()
