# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PostgreSQL password verifiers and PgBouncer's auth_file (userlist.txt).

Plain Python, no Ansible import: used by the ``pgbouncer_userlist`` module and
unit-tested on its own.

A SCRAM-SHA-256 verifier has the form PostgreSQL stores in ``pg_authid``::

    SCRAM-SHA-256$<iterations>:<salt b64>$<StoredKey b64>:<ServerKey b64>

PgBouncer can log in to PostgreSQL with a verifier (instead of a plaintext
password) only when the verifier in its auth_file is *identical* to the one
in ``pg_authid``; the role therefore writes the same string to both, and this
module keeps an existing verifier as long as it still matches the password
(a new random salt on every run would change both files every time).
"""

from __future__ import absolute_import, division, print_function

import base64
import hashlib
import hmac
import os
import re
import unicodedata

__metaclass__ = type

SCRAM_PREFIX = 'SCRAM-SHA-256$'
DEFAULT_ITERATIONS = 4096
SALT_BYTES = 16
_SCRAM_RE = re.compile(r'^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$')
_MD5_RE = re.compile(r'^md5[0-9a-f]{32}$')
# Names PgBouncer and PostgreSQL accept without surprises in a userlist line and in SQL identifiers we quote.
_NAME_RE = re.compile(r'^[A-Za-z_][A-Za-z0-9_.@-]{0,62}$')


class AuthError(ValueError):
    """Bad input: the message names the user and the problem, never the password."""


def _b64(data):
    return base64.b64encode(data).decode('ascii')


def _normalize(password):
    """Approximate SASLprep as PostgreSQL does: ASCII stays as it is, other text is NFKC-normalised."""
    if isinstance(password, bytes):
        return password
    if all(ord(ch) < 128 for ch in password):
        return password.encode('ascii')
    return unicodedata.normalize('NFKC', password).encode('utf-8')


def is_scram(secret):
    return bool(_SCRAM_RE.match(secret or ''))


def is_md5(secret):
    return bool(_MD5_RE.match(secret or ''))


def is_verifier(secret):
    return is_scram(secret) or is_md5(secret)


def scram_verifier(password, salt=None, iterations=DEFAULT_ITERATIONS):
    """Return a SCRAM-SHA-256 verifier for ``password`` (a random 16-byte salt unless given)."""
    if not isinstance(iterations, int) or iterations < 1:
        raise AuthError('iterations must be a positive whole number, got %r' % (iterations,))
    if salt is None:
        salt = os.urandom(SALT_BYTES)
    salted = hashlib.pbkdf2_hmac('sha256', _normalize(password), salt, iterations)
    client_key = hmac.new(salted, b'Client Key', hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b'Server Key', hashlib.sha256).digest()
    return '%s%d:%s$%s:%s' % (SCRAM_PREFIX, iterations, _b64(salt), _b64(stored_key), _b64(server_key))


def md5_verifier(user, password):
    """PostgreSQL's md5 verifier: 'md5' + md5(password + user)."""
    return 'md5' + hashlib.md5(_normalize(password) + user.encode('utf-8')).hexdigest()  # nosec - PostgreSQL's format


def verifier_matches(user, password, verifier):
    """True when ``verifier`` (SCRAM or md5) was made from ``password`` (for ``user``)."""
    match = _SCRAM_RE.match(verifier or '')
    if match:
        iterations = int(match.group(1))
        try:
            salt = base64.b64decode(match.group(2), validate=True)
        except ValueError:
            return False
        return hmac.compare_digest(scram_verifier(password, salt, iterations), verifier)
    if is_md5(verifier):
        return hmac.compare_digest(md5_verifier(user, password), verifier)
    return False


def check_name(name):
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise AuthError('user name %r is not usable: use letters, digits, _ . @ - (first a letter or _), '
                        'at most 63 characters' % (name,))
    return name


def _unquote(field, lineno):
    if len(field) < 2 or field[0] != '"' or field[-1] != '"':
        raise AuthError('userlist line %d: fields must be in double quotes' % lineno)
    return field[1:-1].replace('""', '"')


def parse_userlist(text):
    """Parse PgBouncer's auth_file: ``"user" "secret"`` lines, ``;``/``#`` comments. Returns [(user, secret)]."""
    entries = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in ';#':
            continue
        fields = re.findall(r'"(?:[^"]|"")*"', line)
        rest = re.sub(r'"(?:[^"]|"")*"', '', line).strip()
        if len(fields) < 2 or (rest and rest[0] not in ';#'):
            raise AuthError('userlist line %d is not of the form "user" "secret"' % lineno)
        entries.append((_unquote(fields[0], lineno), _unquote(fields[1], lineno)))
    return entries


def _quote(value):
    return '"%s"' % value.replace('"', '""')


def render_userlist(entries, header=''):
    lines = [header.rstrip('\n')] if header else []
    lines.extend('%s %s' % (_quote(user), _quote(secret)) for user, secret in entries)
    return '\n'.join(lines) + '\n'


def plan_userlist(existing, users, default_type='scram-sha-256', iterations=DEFAULT_ITERATIONS,
                  exclusive=True, salt_source=None):
    """Decide the new auth_file entries.

    ``existing``: [(user, secret)] from the current file. ``users``: dicts with
    ``name``, ``password`` (plaintext or an existing verifier) and optional
    ``type`` (scram-sha-256 | md5). A current secret is kept when it matches
    the password and has the wanted type, so a second run changes nothing.
    Returns (entries, report) where report maps user -> added|changed|kept|removed.
    """
    current = dict(existing)
    entries = []
    report = {}
    seen = set()
    for user in users:
        name = check_name(user.get('name'))
        if name in seen:
            raise AuthError('user %s is listed twice' % name)
        seen.add(name)
        password = user.get('password')
        if password is None or password == '':
            raise AuthError('user %s has no password (give the password or a SCRAM/md5 verifier)' % name)
        if not isinstance(password, str):
            raise AuthError('the password of user %s must be a string' % name)
        kind = user.get('type') or default_type
        if kind not in ('scram-sha-256', 'md5'):
            raise AuthError('user %s: type must be scram-sha-256 or md5, got %r' % (name, kind))
        old = current.get(name)
        if is_verifier(password):
            if (kind == 'scram-sha-256') != is_scram(password):
                raise AuthError('user %s: the given verifier is not of type %s' % (name, kind))
            secret = password
        elif old is not None and (is_scram(old) if kind == 'scram-sha-256' else is_md5(old)) \
                and verifier_matches(name, password, old):
            secret = old
        elif kind == 'md5':
            secret = md5_verifier(name, password)
        else:
            salt = salt_source(name) if salt_source else None
            secret = scram_verifier(password, salt, iterations)
        entries.append((name, secret))
        report[name] = 'added' if old is None else ('kept' if old == secret else 'changed')
    if not exclusive:
        for name, secret in existing:
            if name not in seen:
                entries.append((name, secret))
                report[name] = 'kept'
    else:
        for name, _secret in existing:
            if name not in seen:
                report[name] = 'removed'
    return entries, report
