# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Health gate: is a freshly started release healthy?

Used by the ``release`` module after it switched and restarted a service, and
again on the old release after an automatic rollback. Plain Python, standard
library only; the clock, the sleep and the probes are injectable, so the
decision logic is unit-tested without a network and without sleeping.

Checks (a list; every check runs in every round, a round passes when all of
them pass):

* ``{"type": "http", "url": "http://127.0.0.1:8000/health", "status": 200,
  "json": {"status": "healthy", "checks.database.status": "pass"},
  "method": "GET", "headers": {}, "validate_certs": true, "timeout": 5}``:
  the answer's status must be ``status`` (an int or a list of ints) and every
  dotted ``json`` path of the JSON body must hold the given value. No proxy
  from the environment is used and no redirect is followed.
* ``{"type": "tcp", "host": "127.0.0.1", "port": 8000, "timeout": 5}``: a TCP
  connection is accepted. Behind systemd socket activation the kernel accepts
  for the service even when the app never answers; use an HTTP check there.
* ``{"type": "command", "command": "/usr/local/bin/smoke-test --quick",
  "rc": 0, "timeout": 5}``: the command (a string split like a shell would, or
  an argv list; no shell) exits with ``rc``.

The gate::

    settle  wait this long after the restart before the first round
    rounds  every ``interval`` seconds (a round that overruns is followed at
            once by the next), until ``timeout`` seconds after the settle delay
    passed  as soon as the last ``consecutive`` rounds passed and at least
            ``required_percent`` % of all rounds so far passed
    failed  when passing is no longer possible before the deadline (even if
            every remaining round passed; rounds are assumed to take as long
            as they took so far, at least ``interval``), or at the deadline

So a release that answers wrongly fails early (once enough rounds failed
that the percentage can no longer be reached), and a release that answers
passes after ``consecutive`` rounds. The result keeps the last responses of
every check as evidence.

Startup: with ``starting`` (a function, e.g. "systemd still says
``activating``": a ``Type=notify`` service has not sent ``READY=1``), failed
rounds while it returns true are not counted; the deadline still holds, so a
service that never becomes ready fails at the timeout. A slow start on a busy
machine therefore does not fail the gate, while a service that is up and
answers 500, or stops answering, fails early.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import http.client
import json
import math
import shlex
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

CHECK_TYPES = ('http', 'tcp', 'command')
BODY_LIMIT = 65536
EXCERPT = 300
HISTORY_ROUNDS = 5
DEFAULTS = {
    'interval': 5.0,
    'timeout': 120.0,
    'required_percent': 80.0,
    'consecutive': 3,
    'settle': 5.0,
    'probe_timeout': 5.0,
}


class GateError(ValueError):
    """A check or a gate setting is invalid (raised before anything runs)."""


# --- checks ----------------------------------------------------------------------------

def _number(value, what, minimum=None, integer=False):
    try:
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        raise GateError('%s must be a number, got %r' % (what, value))
    if isinstance(value, bool) or (integer and float(value) != number):
        raise GateError('%s must be %s, got %r' % (what, 'an integer' if integer else 'a number', value))
    if minimum is not None and number < minimum:
        raise GateError('%s must be at least %s, got %r' % (what, minimum, value))
    return number


def normalize_check(check, index=0, probe_timeout=DEFAULTS['probe_timeout']):
    """Return a check dict with its defaults, or raise GateError naming the problem."""
    if not isinstance(check, dict):
        raise GateError('health check %d must be a dictionary, got %r' % (index, check))
    kind = check.get('type')
    if kind is None:
        kind = 'http' if check.get('url') else ('command' if check.get('command') else ('tcp' if check.get('port') else None))
    if kind not in CHECK_TYPES:
        raise GateError('health check %d: type must be one of %s (got %r)' % (index, ', '.join(CHECK_TYPES), kind))
    out = {'type': kind,
           'timeout': _number(check.get('timeout') or probe_timeout, 'health check %d: timeout' % index, 0.001)}
    if kind == 'http':
        url = check.get('url')
        if not isinstance(url, str) or not url.lower().startswith(('http://', 'https://')):
            raise GateError('health check %d: url must start with http:// or https:// (got %r)' % (index, url))
        status = check.get('status')
        if status is None or status == []:
            status = [200]
        elif not isinstance(status, list):
            status = [status]
        out['status'] = [_number(s, 'health check %d: status' % index, 100, integer=True) for s in status]
        expected = check.get('json') or {}
        if not isinstance(expected, dict):
            raise GateError('health check %d: json must be a dictionary of dotted paths and values' % index)
        out.update(url=url, json=expected, method=(check.get('method') or 'GET').upper(),
                   headers=dict(check.get('headers') or {}),
                   validate_certs=check.get('validate_certs') is not False)
        out['name'] = check.get('name') or '%s %s' % (out['method'], url)
    elif kind == 'tcp':
        out['host'] = check.get('host') or '127.0.0.1'
        out['port'] = _number(check.get('port'), 'health check %d: port' % index, 1, integer=True)
        if out['port'] > 65535:
            raise GateError('health check %d: port must be at most 65535, got %r' % (index, check.get('port')))
        out['name'] = check.get('name') or 'tcp %s:%d' % (out['host'], out['port'])
    else:
        command = check.get('command')
        if isinstance(command, str):
            try:
                argv = shlex.split(command)
            except ValueError as exc:
                raise GateError('health check %d: command %r cannot be split: %s' % (index, command, exc))
        elif isinstance(command, list):
            argv = [str(a) for a in command]
        else:
            argv = []
        if not argv:
            raise GateError('health check %d: command must be a non-empty string or list' % index)
        out['argv'] = argv
        out['rc'] = _number(check.get('rc', 0), 'health check %d: rc' % index, integer=True)
        out['name'] = check.get('name') or 'command %s' % ' '.join(shlex.quote(a) for a in argv)
    return out


def json_path(document, path):
    """(found, value) of a dotted path; list items by index (``items.0.name``)."""
    value = document
    for part in path.split('.'):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return False, None
    return True, value


def value_matches(actual, expected):
    if actual == expected and type(actual) is type(expected):
        return True
    if isinstance(expected, str) and not isinstance(actual, str):
        return json.dumps(actual) == expected or str(actual) == expected
    if isinstance(expected, (int, float)) and not isinstance(expected, bool) and isinstance(actual, (int, float)) \
            and not isinstance(actual, bool):
        return actual == expected
    return False


def excerpt(data):
    text = data.decode('utf-8', 'replace') if isinstance(data, bytes) else str(data)
    text = text.strip()
    return text if len(text) <= EXCERPT else text[:EXCERPT] + '...'


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def http_probe(check):
    """One HTTP request: a result dict, never raises for network or HTTP errors."""
    handlers = [urllib.request.ProxyHandler({}), _NoRedirect()]
    if not check['validate_certs']:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(check['url'], method=check['method'],
                                     headers=dict({'User-Agent': 'prodready-health-gate'}, **check['headers']))
    result = {'status': None, 'body': ''}
    try:
        with opener.open(request, timeout=check['timeout']) as response:
            result['status'] = response.status
            body = response.read(BODY_LIMIT)
    except urllib.error.HTTPError as exc:
        result['status'] = exc.code
        try:
            body = exc.read(BODY_LIMIT)
        except (OSError, http.client.HTTPException):
            body = b''
        finally:
            exc.close()
    except urllib.error.URLError as exc:
        reason = exc.reason
        result.update(ok=False, error='timed out after %gs' % check['timeout'] if isinstance(reason, socket.timeout)
                      else str(reason))
        return result
    except socket.timeout:
        result.update(ok=False, error='timed out after %gs' % check['timeout'])
        return result
    except (OSError, ValueError, http.client.HTTPException) as exc:
        result.update(ok=False, error='%s: %s' % (type(exc).__name__, exc))
        return result
    result['body'] = excerpt(body)
    problems = []
    if result['status'] not in check['status']:
        problems.append('status %s, expected %s' % (result['status'], ' or '.join(str(s) for s in check['status'])))
    if check['json']:
        try:
            document = json.loads(body.decode('utf-8'))
        except ValueError:
            problems.append('body is not JSON')
        else:
            for path, expected in sorted(check['json'].items()):
                found, actual = json_path(document, path)
                if not found:
                    problems.append('%s missing' % path)
                elif not value_matches(actual, expected):
                    problems.append('%s is %s, expected %s' % (path, json.dumps(actual), json.dumps(expected)))
    result['ok'] = not problems
    if problems:
        result['error'] = '; '.join(problems)
    return result


def tcp_probe(check):
    try:
        socket.create_connection((check['host'], check['port']), timeout=check['timeout']).close()
    except socket.timeout:
        return {'ok': False, 'error': 'connect timed out after %gs' % check['timeout']}
    except OSError as exc:
        return {'ok': False, 'error': exc.strerror or str(exc)}
    return {'ok': True}


def command_probe(check):
    try:
        proc = subprocess.run(check['argv'], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=check['timeout'], check=False)
    except subprocess.TimeoutExpired:
        return {'ok': False, 'rc': None, 'error': 'timed out after %gs' % check['timeout']}
    except OSError as exc:
        return {'ok': False, 'rc': None, 'error': '%s: %s' % (check['argv'][0], exc.strerror or exc)}
    result = {'ok': proc.returncode == check['rc'], 'rc': proc.returncode, 'output': excerpt(proc.stdout[-4096:])}
    if not result['ok']:
        result['error'] = 'exit status %d, expected %d' % (proc.returncode, check['rc'])
    return result


PROBES = {'http': http_probe, 'tcp': tcp_probe, 'command': command_probe}


# --- the gate --------------------------------------------------------------------------

class Gate(object):
    """Run rounds of checks and decide; see the module docstring for the rules.

    ``clock`` (monotonic seconds), ``sleep`` and ``wall`` (epoch seconds, for the
    report) are injectable, and so are the ``probes`` (a dict type -> function
    taking the normalized check and returning a dict with ``ok``).
    """

    def __init__(self, checks, interval=DEFAULTS['interval'], timeout=DEFAULTS['timeout'],
                 required_percent=DEFAULTS['required_percent'], consecutive=DEFAULTS['consecutive'],
                 settle=DEFAULTS['settle'], probe_timeout=DEFAULTS['probe_timeout'],
                 clock=time.monotonic, sleep=time.sleep, wall=time.time, probes=None, starting=None):
        if not isinstance(checks, list) or not checks:
            raise GateError('the health gate needs at least one check')
        self.checks = [normalize_check(c, i, probe_timeout) for i, c in enumerate(checks)]
        self.interval = _number(interval, 'health interval', 0)
        self.timeout = _number(timeout, 'health timeout', 0)
        self.required_percent = _number(required_percent, 'health required_percent', 0)
        if self.required_percent > 100:
            raise GateError('health required_percent must be at most 100, got %r' % (required_percent,))
        self.consecutive = _number(consecutive, 'health consecutive', 1, integer=True)
        self.settle = _number(settle, 'health settle', 0)
        self.clock = clock
        self.sleep = sleep
        self.wall = wall
        self.probes = dict(PROBES, **(probes or {}))
        self.starting = starting

    def still_starting(self):
        if self.starting is None:
            return False
        try:
            return bool(self.starting())
        except Exception:  # pylint: disable=broad-except  # an unknown state is not a startup
            return False

    def settings(self):
        return {'interval': self.interval, 'timeout': self.timeout, 'required_percent': self.required_percent,
                'consecutive': self.consecutive, 'settle': self.settle,
                'checks': [c['name'] for c in self.checks]}

    def probe(self, check, started):
        t0 = self.clock()
        try:
            result = dict(self.probes[check['type']](check))
        except Exception as exc:  # pylint: disable=broad-except  # a broken probe is a failed check, not a crash
            result = {'ok': False, 'error': '%s: %s' % (type(exc).__name__, exc)}
        result['ok'] = bool(result.get('ok'))
        result['check'] = check['name']
        result['at'] = round(t0 - started, 3)
        result['seconds'] = round(self.clock() - t0, 3)
        return result

    def remaining_rounds(self, next_start, deadline, period=None):
        """Rounds that can still start before the deadline.

        Each round takes ``period`` (the mean duration of the rounds so far) or
        ``interval``, whichever is longer: rounds of checks that hang until their
        timeout are counted as such.
        """
        if next_start >= deadline:
            return 0
        period = max(self.interval, period or 0)
        if period <= 0:
            return 1 << 30
        return int(math.ceil((deadline - next_start) / period))

    def run(self):
        started = self.clock()
        started_wall = self.wall()
        if self.settle > 0:
            self.sleep(self.settle)
        begin = self.clock()
        deadline = begin + self.timeout
        rounds = successes = streak = startup_rounds = 0
        busy = 0.0  # seconds spent in counted rounds
        history = []
        last = {}
        last_failure = {}
        first_success = None
        next_start = begin
        verdict = reason = None
        while verdict is None:
            now = self.clock()
            if now < next_start:
                self.sleep(next_start - now)
            in_startup = self.still_starting()
            round_start = self.clock()
            round_results = [self.probe(check, started) for check in self.checks]
            round_seconds = self.clock() - round_start
            ok = all(r['ok'] for r in round_results)
            for result in round_results:
                last[result['check']] = result
                if not result['ok']:
                    last_failure[result['check']] = result
            failed = ['%s: %s' % (r['check'], r.get('error', 'failed')) for r in round_results if not r['ok']]
            if in_startup and not ok:
                # The service has not reported ready yet (systemd: activating): not counted, the deadline holds.
                startup_rounds += 1
                history.append({'round': None, 'ok': False, 'startup': True, 'at': round_results[0]['at'],
                                'failed': failed})
                del history[:-HISTORY_ROUNDS]
                next_start = max(next_start + self.interval, self.clock())
                if next_start >= deadline:
                    verdict = 'failed'
                    reason = ('still starting after %gs: the service never reported ready and %d round(s) of checks '
                              'failed meanwhile' % (self.timeout, startup_rounds))
                continue
            rounds += 1
            busy += round_seconds
            if ok:
                successes += 1
                streak += 1
                if first_success is None:
                    first_success = self.clock() - started
            else:
                streak = 0
            history.append({'round': rounds, 'ok': ok, 'at': round_results[0]['at'], 'failed': failed})
            del history[:-HISTORY_ROUNDS]
            percent = 100.0 * successes / rounds
            if streak >= self.consecutive and percent >= self.required_percent:
                verdict = 'passed'
                reason = '%d consecutive round(s) passed, %d of %d (%.0f%%)' % (streak, successes, rounds, percent)
                break
            next_start = max(next_start + self.interval, self.clock())
            remaining = self.remaining_rounds(next_start, deadline, busy / rounds)
            best = 100.0 * (successes + remaining) / (rounds + remaining)
            if remaining == 0:
                verdict = 'failed'
                reason = 'timeout: %d of %d round(s) passed (%.0f%%, %s%% and %d consecutive required) in %gs' % (
                    successes, rounds, percent, _fmt(self.required_percent), self.consecutive, self.timeout)
            elif best < self.required_percent or streak + remaining < self.consecutive:
                verdict = 'failed'
                reason = ('cannot pass any more: %d of %d round(s) passed; even if the %d round(s) left before the '
                          '%gs timeout pass, %.0f%% < %s%% or fewer than %d consecutive' % (
                              successes, rounds, remaining, self.timeout, best, _fmt(self.required_percent),
                              self.consecutive))
        ended = self.clock()
        return {
            'verdict': verdict,
            'passed': verdict == 'passed',
            'reason': reason,
            'rounds': rounds,
            'successes': successes,
            'percent': round(100.0 * successes / rounds, 1) if rounds else 0.0,
            'startup_rounds': startup_rounds,
            'consecutive': streak,
            'seconds': round(ended - started, 3),
            'first_success_after': None if first_success is None else round(first_success, 3),
            'started_at': round(started_wall, 3),
            'ended_at': round(started_wall + (ended - started), 3),
            'settings': self.settings(),
            'last': [last[c['name']] for c in self.checks if c['name'] in last],
            'last_failures': [last_failure[c['name']] for c in self.checks if c['name'] in last_failure],
            'history': history,
        }


def _fmt(number):
    return ('%g' % number)


def summary_lines(result, limit=6):
    """A few human lines about a gate result (for failure messages)."""
    lines = ['%s: %s' % (result['verdict'], result['reason'])]
    for item in (result.get('last_failures') or result.get('last') or [])[:limit]:
        detail = item.get('error') or 'ok'
        if item.get('status') is not None:
            detail = 'HTTP %s%s' % (item['status'], '' if item['ok'] else ' (%s)' % detail)
            if item.get('body'):
                detail += ' %s' % item['body'][:120]
        lines.append('  %s -> %s' % (item['check'], detail))
    return lines
