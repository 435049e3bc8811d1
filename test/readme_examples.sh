#!/usr/bin/env bash
# readme_examples.sh README EXAMPLES_DIR: every code block of README that is preceded by a line
# "<!-- example: examples/NAME.cc -->" (blank lines allowed in between) must equal that file
# byte for byte; every ```cpp block must carry such a mark; every examples/*.cc must be shown.
# Prints a unified diff for each mismatch. Exit 0 when all match, 1 otherwise.
set -euo pipefail
readme=${1:?README path}
examples=${2:?examples folder}
root=$(cd "$(dirname "$readme")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# One file per marked block: $tmp/N.code, with its path in $tmp/N.path. Unmarked cpp blocks
# are listed in $tmp/unmarked.
awk -v tmp="$tmp" '
  match($0, /^<!-- example: [^ ]+ -->[ \t]*$/) {
    path = $0; sub(/^<!-- example: /, "", path); sub(/ -->[ \t]*$/, "", path); next
  }
  !inblock && /^```/ {
    inblock = 1; n++
    if (path != "") { code = tmp "/" n ".code"; printf "" > code; print path > (tmp "/" n ".path") }
    else { code = ""; if ($0 ~ /^```(cpp|c\+\+|cc)[ \t]*$/) print NR > (tmp "/unmarked") }
    path = ""; next
  }
  inblock && /^```[ \t]*$/ { inblock = 0; if (code != "") close(code); next }
  inblock { if (code != "") print > code; next }
  NF { path = "" }   # a mark applies only to the next block
' "$readme"

rc=0 shown=()
for pathfile in "$tmp"/*.path; do
  [[ -e $pathfile ]] || break
  rel=$(cat "$pathfile")
  shown+=("$rel")
  if [[ ! -f $root/$rel ]]; then
    echo "README shows $rel, which does not exist"; rc=1; continue
  fi
  if ! diff -u --label "$rel" --label "README.md block for $rel" "$root/$rel" "${pathfile%.path}.code"; then
    echo "README's block for $rel differs from the file (diff above)"; rc=1
  fi
done
if [[ -s $tmp/unmarked ]]; then
  echo "README.md has C++ blocks without an <!-- example: ... --> mark, at lines: $(tr '\n' ' ' <"$tmp/unmarked")"
  rc=1
fi
for f in "$examples"/*.cc; do
  rel=examples/$(basename "$f")
  printf '%s\n' "${shown[@]+"${shown[@]}"}" | grep -qxF "$rel" || { echo "$rel is not shown in README.md"; rc=1; }
done
[[ $rc -ne 0 ]] || echo "readme_examples: ${#shown[@]} README blocks match their files"
exit "$rc"
