# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tests for the streaming manifest reader of backup_archive.py and for what verification and restore build on it.

The reader reads the entries one at a time: any JSON layout, errors naming
the file, bounded memory.
"""

import json
import os
import random
import tracemalloc

import pytest
from ansible_collections.prodready.vps.plugins.module_utils import age
from ansible_collections.prodready.vps.plugins.module_utils import backup_archive as ba

NAME = '2026-01-01T000000Z.tar.gz.age'


@pytest.fixture(scope='module')
def keys():
    return age.generate_identity()


def manifest_dict(entries, **extra):
    manifest = {'format': ba.MANIFEST_FORMAT, 'version': 1, 'name': NAME, 'compression': 'gzip',
                'archive': {'size': 1, 'sha256': 'cd' * 32}, 'entries': entries, 'warnings': ['w \u2603'],
                'sources': [{'path': '/srv/ü', 'exclude': []}], 'duration': 1.25, 'plaintext_size': 12345678901234}
    manifest.update(extra)
    return manifest


def write_manifest(directory, text):
    archive = os.path.join(str(directory), NAME)
    with open(archive + ba.MANIFEST_SUFFIX, 'wb') as handle:
        handle.write(text if isinstance(text, bytes) else text.encode('utf-8'))
    return archive


def sample_entries(count, seed=1):
    rng = random.Random(seed)
    result = []
    for index in range(count):
        name = 'srv/{}/{}-{}'.format(index // 10, ''.join(rng.choice('aü€𝄞"\\/ \t') for _ in range(rng.randrange(1, 30))), index)
        kind = rng.choice(['file', 'dir', 'symlink'])
        entry = {'name': name, 'type': kind, 'mode': '0644'}
        if kind == 'file':
            entry.update(size=rng.randrange(0, 10 ** rng.randrange(1, 15)), sha256='%064x' % rng.getrandbits(256))
        elif kind == 'symlink':
            entry['linkname'] = '../' + name[-5:]
        result.append(entry)
    return result


def read_all(archive, compact=False):
    with ba.ManifestReader(archive, compact=compact) as reader:
        return reader.header, reader.count, list(reader.entries())


# --- the reader


@pytest.mark.parametrize('layout', ['ours', 'compact', 'odd', 'crlf-tabs'])
@pytest.mark.parametrize('read_size', [1, 7, 4096])
def test_reader_reads_any_json_layout(tmp_path, monkeypatch, layout, read_size):
    """Whatever the whitespace and wherever a read ends (inside a name, a UTF-8 character, a number)."""
    monkeypatch.setattr(ba, 'MANIFEST_READ_SIZE', read_size)
    entries = sample_entries(60)
    manifest = manifest_dict(entries)
    if layout == 'ours':
        text = ''.join(ba._manifest_chunks(manifest))  # pylint: disable=protected-access
    elif layout == 'compact':
        text = json.dumps(manifest, separators=(',', ':'), ensure_ascii=False)
    elif layout == 'odd':
        text = ' \n' + json.dumps(manifest, indent='\t \r', separators=(' \n,\t', ' : ')) + '\r\n \t'
    else:
        text = json.dumps(manifest, indent=3).replace('\n', '\r\n').replace('   ', '\t')
    archive = write_manifest(tmp_path, text)
    header, count, got = read_all(archive)
    expected_header = dict(manifest)
    del expected_header['entries']
    assert header == expected_header and count == len(entries) and got == entries
    assert ba.load_manifest(archive) == json.loads(text)
    _header, _count, compact = read_all(archive, compact=True)
    assert [(e.get('name'), e.get('type'), e.get('size'), e.get('linkname')) for e in compact] == \
        [(e['name'], e['type'], e.get('size'), e.get('linkname')) for e in entries]


def test_reader_iterations_are_independent(tmp_path):
    entries = sample_entries(50)
    archive = write_manifest(tmp_path, json.dumps(manifest_dict(entries)))
    with ba.ManifestReader(archive, compact=False) as reader:
        first, second = reader.entries(), reader.entries()
        assert [next(first) for _ in range(10)] == entries[:10]
        assert list(second) == entries
        assert list(first) == entries[10:]
        assert list(reader.entries()) == entries


def test_reader_empty_and_repeated_entries(tmp_path):
    archive = write_manifest(tmp_path, json.dumps(manifest_dict([])))
    assert read_all(archive)[1:] == (0, [])
    # json.loads keeps the last of two equal keys: so does the reader
    text = json.dumps(manifest_dict([{'name': 'old', 'type': 'dir'}]))[:-1] + ', "entries": [{"name": "new", "type": "dir"}]}'
    archive = write_manifest(tmp_path, text)
    assert read_all(archive)[2] == json.loads(text)['entries'] == [{'name': 'new', 'type': 'dir'}]


def test_reader_truncated_file(tmp_path):
    text = ''.join(ba._manifest_chunks(manifest_dict(sample_entries(30))))  # pylint: disable=protected-access
    data = text.encode('utf-8')
    for cut in sorted({1, 2, len(data) // 3, len(data) // 2, len(data) - 3, len(data) - 2} | set(range(0, len(data), 97))):
        archive = write_manifest(tmp_path, data[:cut])
        with pytest.raises(ba.BackupIntegrityError, match=f'backup {NAME}: manifest {NAME}.manifest.json is unreadable'):
            read_all(archive)
        with pytest.raises(ba.BackupIntegrityError, match='is unreadable'):
            ba.load_manifest(archive)
        with pytest.raises(ba.BackupIntegrityError, match='is unreadable'):
            ba.verify(archive)


@pytest.mark.parametrize('text, message', [
    ('', 'unreadable: expecting a value at byte 0'),
    ('{"format": "prodready.vps/backup-manifest", "entries": [1, 2 3]}', r"unreadable: expecting ',' or '\]' at byte 61, found '3'"),
    ('{"format": "prodready.vps/backup-manifest", "entries": [{"name": "a" "type": "dir"}]}',
     "unreadable: Expecting ',' delimiter at byte 69"),
    ('{"entries": []} []', 'unreadable: extra data at byte 16'),
    ('{"entries": [], format: 1}', 'unreadable: expecting a property name in double quotes at byte 16'),
    ('{"entries": []', "unreadable: expecting ',' or '}' at byte 14, found the end of the file"),
    ('{"name": "\u00fc\u20ac", "entries": [], "x": tru}', 'unreadable: Expecting value at byte 38'),
    (b'{"name": "\xff"}', 'unreadable: not UTF-8 text \\(byte 10\\)'),
    ('[]', 'is not a backup manifest'),
    ('"text"', 'is not a backup manifest'),
    ('[] []', 'unreadable: extra data at byte 3'),
    ('{"entries": []}', 'is not a backup manifest'),
    (json.dumps(manifest_dict({'a': 1})), 'lacks the archive checksum or entry list'),
    (json.dumps(manifest_dict('abc')), 'lacks the archive checksum or entry list'),
    (json.dumps(manifest_dict([], archive={'size': '1', 'sha256': 'x'})), 'lacks the archive checksum or entry list'),
    (json.dumps({k: v for k, v in manifest_dict([]).items() if k != 'entries'}), 'lacks the archive checksum or entry list'),
])
def test_reader_malformed_manifests(tmp_path, text, message):
    archive = write_manifest(tmp_path, text)
    with pytest.raises(ba.BackupIntegrityError, match=f'backup {NAME}: (manifest )?{NAME}.manifest.json .*{message}'):
        read_all(archive)


def test_reader_missing_manifest(tmp_path):
    with pytest.raises(ba.BackupIntegrityError, match=f'manifest {NAME}.manifest.json is missing'):
        ba.ManifestReader(os.path.join(str(tmp_path), NAME))


def test_reader_refuses_an_overlong_entry_after_reading_about_that_much(tmp_path, monkeypatch):
    """A damaged entry is an error once MANIFEST_ENTRY_MAX characters are read, not after reading the whole file."""
    monkeypatch.setattr(ba, 'MANIFEST_ENTRY_MAX', 100000)
    for bad in ('{"name": "' + 'x' * 300000 + '", "type": "dir"}',   # valid but too long
                '{"name": "' + 'x' * 300000):                         # an unterminated string
        text = json.dumps(manifest_dict([{'name': 'a', 'type': 'dir'}]))
        text = text.replace('"entries": [', '"entries": [' + bad + ', ', 1) + ' ' * 2000000
        archive = write_manifest(tmp_path, text)
        tracemalloc.start()
        try:
            with pytest.raises(ba.BackupIntegrityError, match='unreadable: a value longer than 100000 characters at byte'):
                read_all(archive)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1500000, peak


def test_reader_reports_a_damaged_value_without_reading_the_rest(tmp_path):
    """Malformed, not merely cut by the end of a read: an error at once, with the rest of the file unread."""
    entries = [{'name': 'srv/file-%07d' % index, 'type': 'dir'} for index in range(20000)]
    text = json.dumps(manifest_dict(entries, commands=[{'name': 'db', 'argv': ['pg_dump']}]), indent=1, sort_keys=True)
    for damaged in (text.replace('"argv": [', '"argv": [,', 1), text.replace('"argv"', '"argv', 1),
                    text.replace('"srv/file-0000002"', '"srv/file-0000002\\x"', 1)):
        archive = write_manifest(tmp_path, damaged)
        tracemalloc.start()
        try:
            with pytest.raises(ba.BackupIntegrityError, match='is unreadable: (Expecting|Invalid).* at byte'):
                read_all(archive)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 512 * 1024, peak


def test_reader_memory_does_not_grow_with_the_number_of_entries(tmp_path):
    """50,000 entries (5 MB of JSON): the reader holds one entry and a read buffer, whatever the count."""
    count = 50000
    path = write_manifest(tmp_path, b'')
    with open(path + ba.MANIFEST_SUFFIX, 'w') as handle:
        head, tail = json.dumps(manifest_dict('X')).split('"X"')
        handle.write(head + '[\n')
        for index in range(count):
            handle.write('  {"name": "srv/d%03d/file-%07d", "sha256": "%064x", "size": %d, "type": "file"}%s\n'
                         % (index // 1000, index, index, index, ',' if index < count - 1 else ''))
        handle.write(']' + tail)
    tracemalloc.start()
    try:
        with ba.ManifestReader(path) as reader:
            assert reader.count == count
            seen = 0
            for entry in reader.entries():
                seen += 1
            assert seen == count and entry.get('name') == 'srv/d049/file-0049999'
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024, peak
