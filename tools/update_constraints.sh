#!/usr/bin/env bash
# Re-resolve constraints.txt: a fresh venv, the test extra installed with no constraints (so it takes the
# newest releases our pyproject bounds allow), the two no-deps packages of the LiteRT step, then pip freeze.
# Run the whole suite on the result (`pip install -c constraints.txt ".[test]"` in a fresh venv) before
# committing it, in a commit of its own that says what moved.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)/venv
python3 -m venv "$venv"
"$venv/bin/pip" install -q ".[test]"
"$venv/bin/pip" install -q --no-deps tf-keras==2.21.0 onnx2tf==1.29.24
{
  sed -n '/^#/p' constraints.txt
  # torch's CPU wheel carries a local label (+cpu); '==X' without it matches that wheel on every platform.
  "$venv/bin/pip" freeze --exclude-editable | grep -iv '^mlxport[= @]' | sed -E 's/^(torch==[^+]+)\+.*/\1/' \
    | sort -f
} > constraints.txt.new
mv constraints.txt.new constraints.txt
rm -rf "$(dirname "$venv")"
git --no-pager diff --stat constraints.txt
