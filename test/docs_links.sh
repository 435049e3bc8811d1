#!/usr/bin/env bash
# docs_links.sh SOURCE_DIR: every relative markdown link [text](path[#anchor]) in README.md and
# docs/*.md under SOURCE_DIR (outside code blocks and code spans) names a file or folder that
# exists, and an #anchor into a markdown file names one of its headings (GitHub's slugs:
# lower case, punctuation dropped, spaces to hyphens). Links with a scheme (https:, mailto:)
# are not followed. Exit 0 when all resolve, 1 otherwise, naming each broken link.
set -euo pipefail
export LC_ALL=C
root=$(cd "${1:?source folder}" && pwd)

# The text of a markdown file without its fenced code blocks and code spans.
prose() { awk '/^```/ { fence = !fence; next } !fence { gsub(/`[^`]*`/, ""); print }' "$1"; }
# The anchors of a markdown file's headings.
anchors() {
  awk '/^```/ { fence = !fence; next } !fence && /^#+ / { sub(/^#+ +/, ""); print }' "$1" |
    tr 'A-Z' 'a-z' | sed -e 's/[^a-z0-9 _-]//g' -e 's/ /-/g'
}

docs=("$root/README.md")
for f in "$root"/docs/*.md; do [[ -e $f ]] && docs+=("$f"); done
rc=0 n=0
for doc in "${docs[@]}"; do
  name=${doc#"$root"/}
  dir=$(dirname "$doc")
  while IFS= read -r link; do
    target=${link#*](} target=${target%)}
    target=${target%% *}  # [text](path "title")
    case $target in *:*) continue ;; esac
    n=$((n + 1))
    path=${target%%#*} anchor=
    [[ $target == *#* ]] && anchor=${target#*#}
    file=$doc
    [[ -n $path ]] && file=$dir/$path
    if [[ ! -e $file ]]; then
      echo "$name: link to $target: no such file"; rc=1; continue
    fi
    if [[ -n $anchor && $file == *.md ]] && ! anchors "$file" | grep -qxF "$anchor"; then
      echo "$name: link to $target: no heading with that anchor in ${file#"$root"/}"; rc=1
    fi
  done < <(prose "$doc" | grep -o '\[[^]]*\]([^)]*)' || true)
done
[[ $rc -ne 0 ]] || echo "docs_links: $n links in ${#docs[@]} documents resolve"
exit "$rc"
