"""Keep one psql session open across an event: run a query, signal that it
answered, wait for a go-file, run a second query in the same session.

hold-session --go FILE --out FILE -- psql ARGS...
Writes OUT.started after the first answer and OUT (JSON) at the end with both
answers (backend PIDs and a marker) and psql's exit status.
"""
import argparse
import json
import os
import subprocess
import sys
import time

QUERY = "SELECT 'answer-{n}', pg_backend_pid(), current_setting('application_name');\n"


def read_answer(proc, n, deadline):
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            return None
        if line.startswith('answer-%d|' % n):
            return line.strip()
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--go', required=True)
    parser.add_argument('--out', required=True)
    # Waiting for the go-file may take long (the role runs in between, slowly on a busy
    # machine); each answer must come within --answer-timeout once its query is sent.
    parser.add_argument('--timeout', type=float, default=1800)
    parser.add_argument('--answer-timeout', type=float, default=60)
    parser.add_argument('command', nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ['--'] else args.command
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    deadline = time.time() + args.timeout
    # A transaction spanning the reload pins the server connection as well.
    proc.stdin.write('BEGIN;\n' + QUERY.format(n=1))
    proc.stdin.flush()
    first = read_answer(proc, 1, time.time() + args.answer_timeout)
    with open(args.out + '.started', 'w') as handle:
        handle.write(json.dumps({'first': first}))
    while not os.path.exists(args.go) and time.time() < deadline:
        time.sleep(0.2)
    proc.stdin.write(QUERY.format(n=2) + 'COMMIT;\n')
    proc.stdin.flush()
    second = read_answer(proc, 2, time.time() + args.answer_timeout)
    proc.stdin.close()
    code = proc.wait(timeout=30)
    result = {'first': first, 'second': second, 'psql_exit': code}
    tmp = args.out + '.tmp'
    with open(tmp, 'w') as handle:
        json.dump(result, handle)
    os.rename(tmp, args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
