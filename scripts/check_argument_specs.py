"""Check that each role's meta/argument_specs.yml matches defaults/main.yml.

Every public variable in defaults/ must be documented in the `main` entry
point with the same default value, and every option with a default there must
exist in defaults/. Internal variables (`__<role>_*`) live in vars/ and are not
checked. Usage: check_argument_specs.py ROLE_DIR [ROLE_DIR ...]
"""
import sys
from pathlib import Path

import yaml


def check(role_dir):
    role = Path(role_dir)
    # defaults/main.yml, or every *.yml in a defaults/main/ directory (Ansible merges them).
    defaults_files = sorted((role / 'defaults' / 'main').glob('*.yml')) or [
        f for f in [role / 'defaults' / 'main.yml'] if f.exists()]
    spec_file = role / 'meta' / 'argument_specs.yml'
    if not defaults_files and not spec_file.exists():
        return []
    problems = []
    if not spec_file.exists():
        return ['%s: defaults exist but meta/argument_specs.yml does not' % role.name]
    defaults = {}
    for defaults_file in defaults_files:
        for name, value in (yaml.safe_load(defaults_file.read_text()) or {}).items():
            if name in defaults:
                problems.append('%s: %s is set in more than one defaults file' % (role.name, name))
            defaults[name] = value
    spec = (yaml.safe_load(spec_file.read_text()) or {}).get('argument_specs', {}).get('main', {}).get('options', {})
    for name, value in defaults.items():
        if not name.startswith(role.name + '_'):
            problems.append('%s: defaults variable %s lacks the role prefix %s_' % (role.name, name, role.name))
        if name not in spec:
            problems.append('%s: %s is in defaults but not in meta/argument_specs.yml' % (role.name, name))
        elif spec[name].get('default') != value:
            problems.append('%s: %s defaults to %r but argument_specs says %r' % (role.name, name, value, spec[name].get('default')))
        elif not spec[name].get('description'):
            problems.append('%s: %s has no description in argument_specs' % (role.name, name))
    for name, option in spec.items():
        if name not in defaults and 'default' in option:
            problems.append('%s: argument_specs gives %s a default but defaults lack it' % (role.name, name))
    return problems


def main(argv):
    problems = [p for role in argv for p in check(role)]
    for problem in problems:
        print(problem)
    print('argument_specs: %d role(s) checked, %d problem(s)' % (len(argv), len(problems)))
    return 1 if problems else 0


if __name__ == '__main__':
    raise SystemExit(main(sys.argv[1:]))
