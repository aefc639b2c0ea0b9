"""Offline stand-in for get-pip.py, used by ansible-test's --venv bootstrap.

ansible-test downloads get-pip.py from a host that is not reachable from
sandboxed CI. This does the same job from what is reachable: pip bundled with
Python (ensurepip), then `pip install` of the pinned versions it asks for from
the configured package index. Installed into ~/.ansible/test/cache by
scripts/gate-sanity.sh.
"""
import ensurepip
import os
import subprocess
import sys

OWN_FLAGS = {'--no-setuptools', '--no-wheel'}

# ensurepip switches pip's configuration off for this process (index, CA
# certificates); the real install must see the machine's configuration.
environ = dict(os.environ)
ensurepip.bootstrap(upgrade=True)
args = [arg for arg in sys.argv[1:] if arg not in OWN_FLAGS]
sys.exit(subprocess.call([sys.executable, '-m', 'pip', 'install'] + args, env=environ))
