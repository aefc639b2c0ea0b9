#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright (c) 2026, prodready.vps contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: backup_key
short_description: Create or keep an age X25519 identity file and return its public key
version_added: 0.1.0
description:
  - Makes sure O(path) holds an age identity (secret key), in the format written by C(age-keygen), and returns
    its public key (C(age1...)) to use as a backup recipient.
  - An existing file is never replaced; its first identity is read and its public key returned. Only a missing
    file is created, with a new random key.
  - The file is written with mode C(0600) under a temporary name and linked into place, so it never exists half
    written and a file created concurrently is not overwritten. An existing file with a looser mode is set
    to C(0600).
  - Meant to run on the controller (C(delegate_to=localhost), C(run_once=true), C(become=false)), so the secret key
    never reaches the managed hosts; the C(prodready.vps.backup) role does this with O(path) in its
    C(backup_key_dir).
author:
  - prodready.vps contributors (@prodready)
requirements:
  - cryptography (the Python package)
attributes:
  check_mode:
    description:
      - A missing key is reported as C(changed) and not created; RV(recipient) is then V(null).
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in diff mode) when in diff mode.
    support: none
options:
  path:
    description:
      - The identity file. Its directory must exist (in check mode, a missing directory is reported like a missing
        file).
    type: path
    required: true
notes:
  - Back the identity file up somewhere safe (a password manager, a vault); without it no backup encrypted to
    its public key can be restored.
seealso:
  - module: prodready.vps.backup
  - name: age file encryption format
    description: The specification of the key and file formats.
    link: https://c2sp.org/age
'''

EXAMPLES = r'''
- name: Create the backup key on the controller (kept when it exists)
  prodready.vps.backup_key:
    path: "{{ playbook_dir }}/.prodready-keys/backup.agekey"
  delegate_to: localhost
  run_once: true
  become: false
  register: backup_key

- name: Encrypt backups to it
  ansible.builtin.set_fact:
    backup_recipients: ["{{ backup_key.recipient }}"]
'''

RETURN = r'''
recipient:
  description: The public key (C(age1...)) of the identity; V(null) in check mode when the key does not exist yet.
  returned: always
  type: str
  sample: age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
fingerprint:
  description: The recipient's fingerprint as recorded in backup manifests (first 16 hex digits of its SHA-256).
  returned: when recipient is known
  type: str
  sample: 3c8b2a9d0e1f4a5b
created:
  description: Whether the key was created by this run (or would be, in check mode).
  returned: always
  type: bool
  sample: true
path:
  description: The identity file.
  returned: always
  type: str
  sample: /home/ops/site/.prodready-keys/backup.agekey
'''

import datetime
import os
import stat
import tempfile

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.prodready.vps.plugins.module_utils import age


def read_recipient(path):
    with open(path) as handle:
        identities = age.parse_identities(handle.read())
    return age.identity_to_recipient(identities[0])


def write_new(path):
    """Create ``path`` with a new identity (mode 0600, never overwriting); return the recipient or None if it appeared."""
    secret, public = age.generate_identity()
    created = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')
    text = f'# created: {created}\n# public key: {public}\n{secret}\n'
    fd, tmp = tempfile.mkstemp(prefix='.backup-key-', dir=os.path.dirname(path) or '.')
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, 'w') as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return None
    finally:
        os.unlink(tmp)
    return public


def main():
    module = AnsibleModule(
        argument_spec=dict(path=dict(type='path', required=True)),
        supports_check_mode=True,
    )
    path = module.params['path']
    if not age.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib('cryptography'), exception=age.CRYPTOGRAPHY_IMPORT_ERROR)
    result = dict(changed=False, created=False, path=path, recipient=None)
    directory = os.path.dirname(path) or '.'
    if not os.path.isdir(directory) and not module.check_mode:
        module.fail_json(msg='the directory %s of the key file does not exist' % directory, **result)

    if not os.path.lexists(path):
        result.update(changed=True, created=True)
        if module.check_mode:
            module.exit_json(**result)
        try:
            public = write_new(path)
        except OSError as exc:
            module.fail_json(msg='cannot write the key file %s: %s' % (path, to_native(exc)), **result)
        if public is not None:
            result['recipient'] = public
            result['fingerprint'] = age.recipient_fingerprint(public)
            module.exit_json(**result)
        result.update(changed=False, created=False)  # created concurrently: read it below

    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            module.fail_json(msg='%s exists and is not a regular file' % path, **result)
        result['recipient'] = read_recipient(path)
    except (OSError, UnicodeDecodeError) as exc:
        module.fail_json(msg='cannot read the key file %s: %s' % (path, to_native(exc)), **result)
    except age.AgeKeyError as exc:
        # The message never contains the key material.
        module.fail_json(msg='%s does not hold an age identity (AGE-SECRET-KEY-1...): %s; it was left as it is'
                         % (path, to_native(exc)), **result)
    result['fingerprint'] = age.recipient_fingerprint(result['recipient'])
    if stat.S_IMODE(st.st_mode) & 0o077:
        result['changed'] = True
        if not module.check_mode:
            try:
                os.chmod(path, 0o600)
            except OSError as exc:
                module.fail_json(msg='cannot set the mode of %s to 0600: %s' % (path, to_native(exc)), **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
