#!/bin/sh
# Installs the peer (pytorch-adapt and the packages it imports, pinned in requirements.txt)
# into benchmarks/peer/.peer-packages (git-ignored), with --no-deps, so that it runs on the
# project's torch: run_peer.py appends that folder to sys.path *after* the venv's
# site-packages, so torch, torchvision and numpy always come from the venv.
#
#   sh benchmarks/peer/install.sh            (PYTHON: the interpreter whose pip installs;
#                                             default: the project's .venv/bin/python)
#
# Idempotent: does nothing when the folder holds exactly these pins. Installs into a
# temporary folder first and renames it into place, so an interrupted install leaves no
# half-filled folder behind. Needs a package index (pip's usual configuration).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
dest="$here/.peer-packages"
stamp="$dest/requirements.installed.txt"

if [ -f "$stamp" ] && cmp -s "$stamp" "$here/requirements.txt"; then
    echo "install.sh: $dest already holds the pinned peer"
    exit 0
fi
tmp="$dest.tmp.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
"$python" -m pip install --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --target "$tmp" -r "$here/requirements.txt"
cp "$here/requirements.txt" "$tmp/requirements.installed.txt"
rm -rf "$dest"
mv "$tmp" "$dest"
echo "install.sh: installed the pinned peer into $dest"
