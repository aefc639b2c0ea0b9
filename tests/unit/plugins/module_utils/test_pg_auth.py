# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

import base64
import hashlib
import hmac

import pytest

from ansible_collections.prodready.vps.plugins.module_utils import pg_auth


def _b64d(text):
    return base64.b64decode(text)


def test_scram_verifier_authenticates_the_rfc7677_exchange():
    """RFC 7677 section 3: user 'user', password 'pencil'. A server holding only our verifier must accept the
    RFC's client proof and produce the RFC's server signature."""
    salt = _b64d('W22ZaJ0SNY7soEsUEjb6gQ==')
    verifier = pg_auth.scram_verifier('pencil', salt, 4096)
    assert verifier.startswith('SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$')
    stored_key, server_key = (_b64d(part) for part in verifier.split('$')[2].split(':'))
    nonce = 'rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0'
    auth_message = ('n=user,r=rOprNGfwEbeRWgbNEkqO,r=%s,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=%s'
                    % (nonce, nonce)).encode()
    client_proof = _b64d('dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=')
    client_signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
    client_key = bytes(a ^ b for a, b in zip(client_proof, client_signature))
    assert hashlib.sha256(client_key).digest() == stored_key
    server_signature = hmac.new(server_key, auth_message, hashlib.sha256).digest()
    assert base64.b64encode(server_signature).decode() == '6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4='


def test_random_salt_differs_but_both_match():
    first = pg_auth.scram_verifier('s3cret')
    second = pg_auth.scram_verifier('s3cret')
    assert first != second
    assert pg_auth.verifier_matches('app', 's3cret', first)
    assert pg_auth.verifier_matches('app', 's3cret', second)
    assert not pg_auth.verifier_matches('app', 's3cret!', first)
    assert pg_auth.is_scram(first) and not pg_auth.is_md5(first)


def test_md5_verifier_is_postgres_format():
    # md5('secret' + 'app')
    assert pg_auth.md5_verifier('app', 'secret') == 'md5' + hashlib.md5(b'secretapp').hexdigest()
    assert pg_auth.verifier_matches('app', 'secret', pg_auth.md5_verifier('app', 'secret'))
    assert not pg_auth.verifier_matches('other', 'secret', pg_auth.md5_verifier('app', 'secret'))


def test_non_ascii_passwords_are_normalised():
    salt = b'0123456789abcdef'
    # U+2168 ROMAN NUMERAL NINE becomes 'IX' under NFKC, as SASLprep maps it.
    assert pg_auth.scram_verifier('\u2168', salt) == pg_auth.scram_verifier('IX', salt)


def test_userlist_round_trip_with_quotes_and_comments():
    text = '; comment\n"app" "SCRAM-SHA-256$4096:a$b:c"\n\n# other\n"we""ird" "md5abc"  ; trailing\n'
    entries = pg_auth.parse_userlist(text)
    assert entries == [('app', 'SCRAM-SHA-256$4096:a$b:c'), ('we"ird', 'md5abc')]
    assert pg_auth.parse_userlist(pg_auth.render_userlist(entries, '# header')) == entries


@pytest.mark.parametrize('line', ['app secret', '"app"', '"app" "x" junk'])
def test_userlist_garbage_is_refused_with_line_number(line):
    with pytest.raises(pg_auth.AuthError, match='line 2'):
        pg_auth.parse_userlist('"ok" "x"\n' + line + '\n')


def test_plan_keeps_matching_verifiers_and_replaces_stale_ones():
    users = [{'name': 'app', 'password': 'one'}, {'name': 'stats', 'password': 'two', 'type': 'md5'}]
    entries, report = pg_auth.plan_userlist([], users)
    assert report == {'app': 'added', 'stats': 'added'}
    assert pg_auth.is_scram(entries[0][1]) and entries[1][1] == pg_auth.md5_verifier('stats', 'two')
    again, report = pg_auth.plan_userlist(entries + [('gone', 'md5x')], users)
    assert again == entries
    assert report == {'app': 'kept', 'stats': 'kept', 'gone': 'removed'}
    users[0]['password'] = 'changed'
    third, report = pg_auth.plan_userlist(entries, users)
    assert report['app'] == 'changed' and pg_auth.verifier_matches('app', 'changed', third[0][1])


def test_plan_switches_type_and_accepts_given_verifiers():
    entries, _report = pg_auth.plan_userlist([], [{'name': 'app', 'password': 'pw', 'type': 'md5'}])
    switched, report = pg_auth.plan_userlist(entries, [{'name': 'app', 'password': 'pw'}])
    assert report == {'app': 'changed'} and pg_auth.is_scram(switched[0][1])
    given = pg_auth.scram_verifier('x')
    out, report = pg_auth.plan_userlist([], [{'name': 'app', 'password': given}])
    assert out == [('app', given)]


def test_plan_non_exclusive_keeps_other_users():
    out, report = pg_auth.plan_userlist([('legacy', 'md5' + '0' * 32)], [{'name': 'app', 'password': 'p'}],
                                        exclusive=False)
    assert [entry[0] for entry in out] == ['app', 'legacy'] and report['legacy'] == 'kept'


@pytest.mark.parametrize('users, message', [
    ([{'name': 'app', 'password': ''}], 'user app has no password'),
    ([{'name': 'bad name', 'password': 'x'}], "user name 'bad name' is not usable"),
    ([{'name': 'a', 'password': 'x'}, {'name': 'a', 'password': 'y'}], 'listed twice'),
    ([{'name': 'a', 'password': 'x', 'type': 'plain'}], 'type must be'),
    ([{'name': 'a', 'password': 'md5' + 'f' * 32}], 'not of type scram-sha-256'),
])
def test_plan_refuses_bad_users_without_echoing_passwords(users, message):
    with pytest.raises(pg_auth.AuthError, match=message) as info:
        pg_auth.plan_userlist([], users)
    assert "'x'" not in str(info.value) and "'y'" not in str(info.value)
