# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tests for the streaming manifest reader of backup_archive.py and for what verification and restore build on it.

Manifest entries are read in the order of the archive's members, one at a
time: the reader itself (any JSON layout, errors naming the file, bounded
memory), the in-order checks of deep verification (order, duplicates, hard
links) and the memory of verify and restore against the number of entries.
"""

import gzip
import hashlib
import io
import json
import os
import random
import tarfile
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
        name = 'srv/{}/{}-{}'.format(index // 10, ''.join(rng.choice('aü€𝄞"\\/ \t') for dummy in range(rng.randrange(1, 30))), index)
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
        assert [next(first) for dummy in range(10)] == entries[:10]
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


# --- verification and restore read the manifest in archive order


def craft(dest, members, public, manifest_entries=None, compression='gzip'):
    """An encrypted archive of ``members`` ((TarInfo, data) pairs) and its manifest (entries in archive order,
    or ``manifest_entries``)."""
    raw = io.BytesIO()
    entries = []
    with tarfile.open(fileobj=raw, mode='w', format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
            kind = {tarfile.REGTYPE: 'file', tarfile.DIRTYPE: 'dir', tarfile.SYMTYPE: 'symlink',
                    tarfile.LNKTYPE: 'hardlink'}[info.type]
            entry = {'name': info.name.strip('/'), 'type': kind}
            if kind == 'file':
                entry.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
            elif info.linkname:
                entry['linkname'] = info.linkname
            entries.append(entry)
    ciphertext = age.encrypt_bytes(gzip.compress(raw.getvalue(), 1), public)
    path = os.path.join(str(dest), NAME)
    with open(path, 'wb') as handle:
        handle.write(ciphertext)
    manifest = {'format': ba.MANIFEST_FORMAT, 'version': 1, 'compression': compression,
                'entries': entries if manifest_entries is None else manifest_entries,
                'archive': {'size': len(ciphertext), 'sha256': hashlib.sha256(ciphertext).hexdigest()}}
    with open(path + ba.MANIFEST_SUFFIX, 'w') as handle:
        json.dump(manifest, handle)
    return path, entries


def member(name, kind=tarfile.REGTYPE, data=b'data', linkname=''):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.linkname = linkname
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = 1795132800
    return info, data if kind == tarfile.REGTYPE else None


def refused_everywhere(path, tmp_path, secret, error, match, **kwargs):
    """verify, restore and its dry run all refuse, and nothing is written."""
    target = tmp_path / 'target'
    target.mkdir(exist_ok=True)
    if not kwargs:
        with pytest.raises(error, match=match):
            ba.verify(path, identity=secret)
    for dry_run in (True, False):
        with pytest.raises(error, match=match):
            ba.restore(path, str(target), identity=secret, dry_run=dry_run, **kwargs)
        assert os.listdir(target) == []


def test_archive_and_manifest_in_the_same_order(tmp_path, keys):
    secret, public = keys
    members = [member('a', tarfile.DIRTYPE), member('a/f1'), member('a/f2', data=b'two')]
    path, entries = craft(tmp_path, members, public)
    assert ba.verify(path, identity=secret)['entries'] == 3
    swapped = [entries[0], entries[2], entries[1]]
    craft(tmp_path, members, public, manifest_entries=swapped)
    refused_everywhere(path, tmp_path, secret, ba.BackupIntegrityError,
                       f'backup {NAME}: entry a/f1 is not in the manifest where the archive has it: '
                       'manifest entry 2 is a/f2')
    craft(tmp_path, members, public, manifest_entries=entries[:2])
    refused_everywhere(path, tmp_path, secret, ba.BackupIntegrityError,
                       'entry a/f2 is not in the manifest \\(it lists 2 entries, the archive has more\\)')
    craft(tmp_path, members, public, manifest_entries=entries + [{'name': 'x', 'type': 'dir'}, {'name': 'y', 'type': 'dir'}])
    refused_everywhere(path, tmp_path, secret, ba.BackupIntegrityError,
                       '2 manifest entries are missing from the archive: x, y')
    craft(tmp_path, members, public, manifest_entries=entries[:1] + ['junk'] + entries[1:])
    refused_everywhere(path, tmp_path, secret, ba.BackupIntegrityError, "malformed manifest entry 'junk'")


def test_duplicate_entry_in_archive_and_manifest(tmp_path, keys):
    secret, public = keys
    for members in ([member('f'), member('g'), member('f')],
                    [member('d', tarfile.DIRTYPE), member('d', tarfile.DIRTYPE)],
                    [member('l', tarfile.SYMTYPE, linkname='x'), member('l', tarfile.DIRTYPE)]):
        path, _entries = craft(tmp_path, members, public)  # the manifest lists the name twice as well
        name = members[0][0].name
        refused_everywhere(path, tmp_path, secret, ba.BackupIntegrityError, f'backup {NAME}: entry {name} appears twice')


def test_hard_links(tmp_path, keys):
    secret, public = keys
    path, _entries = craft(tmp_path, [member('d', tarfile.DIRTYPE), member('d/f', data=b'content'),
                                      member('d/h', tarfile.LNKTYPE, linkname='d/f')], public)
    assert ba.verify(path, identity=secret)['entries'] == 3
    target = tmp_path / 'out'
    stats = ba.restore(path, str(target), identity=secret)
    assert (stats['files'], stats['links'], stats['members']) == (1, 1, ['d', 'd/f', 'd/h'])
    assert os.path.samefile(target / 'd' / 'f', target / 'd' / 'h')
    # the target is not restored (only): refused by the real run and by its dry run
    refused_everywhere(path, tmp_path, secret, ba.RestoreRefusedError,
                       'refusing hard link d/h: target d/f was not restored', only=['d/h'])
    # the target is not a regular file of the archive, or comes after the link
    for members in ([member('d', tarfile.DIRTYPE), member('h', tarfile.LNKTYPE, linkname='d')],
                    [member('h', tarfile.LNKTYPE, linkname='f'), member('f')],
                    [member('s', tarfile.SYMTYPE, linkname='f'), member('f'), member('h', tarfile.LNKTYPE, linkname='s')],
                    [member('h', tarfile.LNKTYPE, linkname='h')]):
        path, _entries = craft(tmp_path, members, public)
        refused_everywhere(path, tmp_path, secret, ba.RestoreRefusedError,
                           'refusing hard link h -> .*: the target is not a file of this archive')


def test_name_set():
    names = ba._NameSet(3)  # pylint: disable=protected-access
    for index in range(1000):  # grows past its capacity
        assert names.add(f'n{index}', regular=index % 2)
    assert len(names) == 1000
    assert not names.add('n10', regular=True) and not names.is_regular('n10') and names.is_regular('n11')
    assert not names.is_regular('other') and names.add('other', regular=False)


def test_restore_lists_the_first_names_and_counts_them_all(tmp_path, keys, monkeypatch):
    secret, public = keys
    monkeypatch.setattr(ba, 'MEMBERS_LISTED', 3)
    members = [member('d', tarfile.DIRTYPE)] + [member(f'd/f{index}', data=b'%d' % index) for index in range(5)] + \
        [member('d/e', tarfile.DIRTYPE), member('d/e/s', tarfile.SYMTYPE, linkname='../f1')]
    path, _entries = craft(tmp_path, members, public)
    target = tmp_path / 'out'
    dry = ba.restore(path, str(target), identity=secret, dry_run=True)
    real = ba.restore(path, str(target), identity=secret)
    for stats in (dry, real):
        assert stats['members'] == ['d', 'd/f0', 'd/f1'] and stats['members_total'] == 8
        assert (stats['files'], stats['dirs'], stats['links']) == (5, 2, 1)
    assert (target / 'd' / 'e' / 's').read_bytes() == b'1' and os.readlink(target / 'd' / 'e' / 's') == '../f1'
    again = ba.restore(path, str(target), identity=secret, overwrite=True)
    assert again['overwritten'] == ['d/f0', 'd/f1', 'd/f2'] and again['overwritten_total'] == 6
    with pytest.raises(ba.RestoreRefusedError, match='refusing to overwrite 6 existing path'):
        ba.restore(path, str(target), identity=secret)


def test_restore_sets_directory_modes_children_first(tmp_path, keys):
    """Directory modes and times are applied after the renames, deepest last in archive order first."""
    secret, public = keys
    top = member('top', tarfile.DIRTYPE)
    top[0].mode = 0o500  # not writable: set after its content is in place
    sub = member('top/sub', tarfile.DIRTYPE)
    sub[0].mode = 0o700
    sub[0].mtime = 1700000000
    path, _entries = craft(tmp_path, [top, sub, member('top/sub/f')], public)
    target = tmp_path / 'out'
    try:
        ba.restore(path, str(target), identity=secret)
        assert os.stat(target / 'top').st_mode & 0o7777 == 0o500
        assert os.stat(target / 'top' / 'sub').st_mtime == 1700000000
        assert os.stat(target / 'top').st_mtime == 1795132800
        assert (target / 'top' / 'sub' / 'f').read_bytes() == b'data'
    finally:
        os.chmod(target / 'top', 0o700)


# --- memory against the number of entries


def many_entries_backup(dest, public, count, kind=tarfile.DIRTYPE):
    members = [member('d%03d' % (index // 1000), tarfile.DIRTYPE) if index % 1000 == 0 else
               member('d%03d/entry-%07d' % (index // 1000, index), kind, data=b'%d' % index) for index in range(count)]
    return craft(dest, members, public)[0]


def traced_peak(function):
    tracemalloc.start()
    try:
        result = function()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_verify_memory_does_not_grow_with_the_number_of_entries(tmp_path, keys, monkeypatch):
    """20,000 entries: the whole manifest was held (7 MB of Python objects here); now 12 bytes per entry.

    Read-ahead chunks of 64 KiB instead of 1 MiB, so that the buffers
    (a few MiB otherwise, whatever the number of entries) do not hide the rest.
    """
    secret, public = keys
    monkeypatch.setattr(ba, 'READ_SIZE', 64 * 1024)
    path = many_entries_backup(tmp_path, public, 20000)
    result, peak = traced_peak(lambda: ba.verify(path, identity=secret))
    print(f'tracemalloc peak verifying 20,000 entries: {peak} bytes')
    assert result['entries'] == 20000
    assert peak < 3 * 1024 * 1024, peak


def test_restore_memory_does_not_grow_with_the_number_of_entries(tmp_path, keys, monkeypatch):
    """3,000 entries (few: creating files is slow): the manifest, and a record and a name per entry, were held."""
    secret, public = keys
    monkeypatch.setattr(ba, 'READ_SIZE', 64 * 1024)
    path = many_entries_backup(tmp_path, public, 3000, kind=tarfile.REGTYPE)
    target = str(tmp_path / 'out')
    dry, dry_peak = traced_peak(lambda: ba.restore(path, target, identity=secret, dry_run=True))
    real, peak = traced_peak(lambda: ba.restore(path, target, identity=secret))
    print(f'tracemalloc peaks restoring 3,000 entries: {dry_peak} (dry run), {peak} bytes')
    assert peak < 1536 * 1024 and dry_peak < 1536 * 1024, (dry_peak, peak)
    assert dry['members_total'] == real['members_total'] == 3000 and real['files'] == 2997
    assert len(real['members']) == ba.MEMBERS_LISTED and real['members'] == dry['members']
