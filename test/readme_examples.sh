#!/usr/bin/env bash
# readme_examples.sh SOURCE_DIR: in README.md and every docs/*.md under SOURCE_DIR, every code
# block preceded by a line "<!-- example: examples/NAME.cc -->" (blank lines allowed in between)
# must equal that file byte for byte; every ```cpp block must carry such a mark; every
# examples/*.cc must be shown in at least one of those files.
# Prints a unified diff for each mismatch. Exit 0 when all match, 1 otherwise.
set -euo pipefail
root=$(cd "${1:?source folder}" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

docs=("$root/README.md")
for f in "$root"/docs/*.md; do [[ -e $f ]] && docs+=("$f"); done

rc=0 shown=() i=0
for doc in "${docs[@]}"; do
  name=${doc#"$root"/}
  i=$((i + 1)) d="$tmp/$i"  # one scratch folder a document
  mkdir -p "$d"
  # One file per marked block: $d/N.code, with its path in $d/N.path. Unmarked cpp blocks are
  # listed in $d/unmarked.
  awk -v tmp="$d" '
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
  ' "$doc"
  for pathfile in "$d"/*.path; do
    [[ -e $pathfile ]] || break
    rel=$(cat "$pathfile")
    shown+=("$rel")
    if [[ ! -f $root/$rel ]]; then
      echo "$name shows $rel, which does not exist"; rc=1; continue
    fi
    if ! diff -u --label "$rel" --label "$name block for $rel" "$root/$rel" "${pathfile%.path}.code"; then
      echo "$name's block for $rel differs from the file (diff above)"; rc=1
    fi
  done
  if [[ -s $d/unmarked ]]; then
    echo "$name has C++ blocks without an <!-- example: ... --> mark, at lines: $(tr '\n' ' ' <"$d/unmarked")"
    rc=1
  fi
done
for f in "$root"/examples/*.cc; do
  rel=examples/$(basename "$f")
  printf '%s\n' "${shown[@]+"${shown[@]}"}" | grep -qxF "$rel" ||
    { echo "$rel is not shown in README.md or docs/*.md"; rc=1; }
done
[[ $rc -ne 0 ]] || echo "readme_examples: ${#shown[@]} blocks in ${#docs[@]} documents match their files"
exit "$rc"
