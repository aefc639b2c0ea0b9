#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: backup_verify
short_description: Verify backups written by prodready.vps.backup against their manifests
version_added: 0.1.0
description:
  - Verifies one backup (O(archive)) or every backup in O(dest) (optionally only those named with O(prefix)),
    newest first.
  - V(shallow) verification checks that the manifest is present and readable and that the archive's size and
    SHA-256 match it. It needs no key.
  - V(deep) verification additionally decrypts, decompresses and reads the whole archive in one streaming pass
    and checks every entry's type, size and SHA-256 against the manifest, with no entry missing or extra, and
    that every entry is safe to restore (no absolute paths, no C(..), no links escaping the target, no devices).
    It needs O(identity) or O(passphrase). Nothing is written to disk except the marker (O(mark)).
  - When a backup does not match, every other backup is still verified, then the task fails with a message
    naming each failing archive (and the entry, when one entry does not match).
  - Reports C(changed) only when it wrote a verification marker.
author:
  - prodready.vps contributors (@prodready)
requirements:
  - cryptography (the Python package, on the managed host) for O(mode=deep)
  - zstandard (the Python package, C(python3-zstandard)) for deep verification of zstd-compressed backups
attributes:
  check_mode:
    description:
      - Verification only reads, so it runs in check mode too; no marker is written (C(changed) then tells
        whether one would have been).
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in diff mode) when in diff mode.
    support: none
options:
  archive:
    description:
      - The backup to verify, as a path (anything containing C(/)), as a file name in O(dest), or V(latest)
        for the newest backup in O(dest) (with O(prefix), the newest with that prefix).
      - When omitted, every backup in O(dest) is verified.
    type: str
    aliases: [path]
  dest:
    description:
      - Directory holding the backups. Required unless O(archive) is a path.
    type: path
  prefix:
    description:
      - Only consider backups whose name starts with this prefix (as given to M(prodready.vps.backup)); V('')
        selects backups without prefix. All backups when unset.
    type: str
  mode:
    description:
      - V(shallow) checks manifest and archive checksum, V(deep) also decrypts and checks every entry.
    type: str
    choices: [shallow, deep]
    default: shallow
  identity:
    description:
      - For O(mode=deep), the age secret key (C(AGE-SECRET-KEY-1...)), the text of an identity file as written
        by C(age-keygen) (several keys allowed, C(#) comments ignored), or the path of such a file on the
        managed host.
    type: str
  passphrase:
    description:
      - For O(mode=deep), the passphrase of a passphrase-encrypted backup.
    type: str
  mark:
    description:
      - After a successful deep verification, write C(NAME.verified) (JSON with the time) beside the archive.
        Retention in M(prodready.vps.backup) never deletes the newest marked backup.
      - Requires O(mode=deep).
    type: bool
    default: false
seealso:
  - module: prodready.vps.backup
  - module: prodready.vps.backup_restore
'''

EXAMPLES = r'''
- name: Check every backup's checksum (no key needed)
  prodready.vps.backup_verify:
    dest: /var/backups/prodready

- name: Deep-verify the newest backup with the key from the vault and mark it
  prodready.vps.backup_verify:
    dest: /var/backups/prodready
    archive: latest
    mode: deep
    identity: "{{ vault_backup_age_identity }}"
    mark: true

- name: Deep-verify one archive with an identity file on the host
  prodready.vps.backup_verify:
    path: /mnt/offsite/2026-11-22T020000Z.tar.zst.age
    mode: deep
    identity: /root/backup-identity.txt
'''

RETURN = r'''
backups:
  description: The backups that passed, newest first.
  returned: when verification ran, also when it failed
  type: list
  elements: dict
  contains:
    name:
      description: File name of the archive.
      type: str
    archive:
      description: Path of the archive.
      type: str
    mode:
      description: V(shallow) or V(deep).
      type: str
    size:
      description: Size of the archive in bytes.
      type: int
    entries:
      description: Number of entries in the manifest.
      type: int
    created:
      description: Creation time from the manifest.
      type: str
    marked:
      description: Whether the C(.verified) marker was written by this run.
      type: bool
  sample:
    - name: 2026-11-22T020000Z.tar.zst.age
      archive: /var/backups/prodready/2026-11-22T020000Z.tar.zst.age
      mode: deep
      size: 1048576
      entries: 57
      created: '2026-11-22T02:00:00Z'
      marked: true
verified:
  description: Number of backups that passed.
  returned: when verification ran, also when it failed
  type: int
  sample: 1
failures:
  description: The backups that failed, with the reason.
  returned: failure
  type: list
  elements: dict
  contains:
    name:
      description: File name of the archive.
      type: str
    archive:
      description: Path of the archive.
      type: str
    error:
      description: V(integrity) (does not match its manifest, or the manifest is missing), V(decrypt) (the keys
        do not fit), V(unsafe) (an entry could not be restored safely) or V(other).
      type: str
    msg:
      description: What does not match.
      type: str
  sample:
    - name: 2026-11-22T020000Z.tar.zst.age
      archive: /var/backups/prodready/2026-11-22T020000Z.tar.zst.age
      error: integrity
      msg: 'backup 2026-11-22T020000Z.tar.zst.age: archive checksum mismatch (manifest 9f86..., file 1b4f...)'
'''

import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.prodready.vps.plugins.module_utils import age
from ansible_collections.prodready.vps.plugins.module_utils import backup_archive as ba

HINTS = {
    'integrity': 'the archive or its manifest was changed or damaged after it was written; do not rely on it, '
                 'restore from another backup and check the disk',
    'decrypt': 'give the secret key matching one of the recipients it was encrypted to (or its passphrase)',
    'unsafe': 'the archive contains an entry that cannot be restored safely; do not extract it with other tools',
}


def classify(exc):
    if isinstance(exc, ba.BackupIntegrityError):
        return 'integrity'
    if isinstance(exc, ba.BackupDecryptError):
        return 'decrypt'
    if isinstance(exc, ba.RestoreRefusedError):
        return 'unsafe'
    return 'other'


def main():
    module = AnsibleModule(
        argument_spec=dict(
            archive=dict(type='str', aliases=['path']),
            dest=dict(type='path'),
            prefix=dict(type='str'),
            mode=dict(type='str', choices=['shallow', 'deep'], default='shallow'),
            identity=dict(type='str', no_log=True),
            passphrase=dict(type='str', no_log=True),
            mark=dict(type='bool', default=False),
        ),
        required_one_of=[('archive', 'dest')],
        required_if=[('mode', 'deep', ('identity', 'passphrase'), True)],
        supports_check_mode=True,
    )
    params = module.params
    passphrase = params['passphrase'] or None
    deep = params['mode'] == 'deep'
    if params['mark'] and not deep:
        module.fail_json(msg='mark needs mode=deep: only a deep verification may mark a backup as verified')
    if deep and not age.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib('cryptography', reason='for mode=deep'),
                         exception=age.CRYPTOGRAPHY_IMPORT_ERROR)

    identities = None
    try:
        if deep:
            identities = ba.parse_identities(params['identity'] or None, passphrase)
            if identities is None:
                raise ba.BackupConfigError('mode=deep needs identity (AGE-SECRET-KEY-1... or an identity file) '
                                           'or passphrase; both are empty')
        if params['archive']:
            archives = [ba.find_archive(params['archive'], params['dest'], params['prefix'])]
        else:
            dest = params['dest']
            if not os.path.isdir(dest):
                raise ba.BackupConfigError('backup directory %s does not exist' % dest)
            archives = [b['archive'] for b in ba.list_backups(dest, params['prefix'])]
            if not archives:
                what = ' with the prefix %r' % params['prefix'] if params['prefix'] else ''
                raise ba.BackupConfigError('there is no backup%s in %s to verify' % (what, dest))
    except (ba.BackupError, OSError) as exc:
        module.fail_json(msg=to_native(exc), backups=[], verified=0)

    write_marker = params['mark'] and not module.check_mode
    passed = []
    failures = []
    for archive in archives:
        try:
            if deep:
                info = ba.verify(archive, identity=identities or None, passphrase=passphrase, mark=write_marker)
            else:
                info = ba.verify(archive)
        except (ba.BackupError, OSError) as exc:
            failures.append(dict(name=os.path.basename(archive), archive=archive, error=classify(exc),
                                 msg=to_native(exc)))
            continue
        info['marked'] = write_marker
        passed.append(info)

    changed = bool(params['mark'] and passed)
    result = dict(changed=changed, backups=passed, verified=len(passed))
    if failures:
        lines = ['%s (%s)' % (f['msg'], HINTS[f['error']]) if f['error'] in HINTS else f['msg'] for f in failures]
        if len(archives) == 1:
            msg = lines[0]
        else:
            msg = '%d of %d backups failed %s verification: %s' % (
                len(failures), len(archives), params['mode'], '; '.join(lines))
        module.fail_json(msg=msg, failures=failures, **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
