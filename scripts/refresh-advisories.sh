#!/usr/bin/env bash
# Refresh the RustSec advisory snapshot in .ci/advisory-db/ (what `.ci/deny` checks dependencies against).
#
#   scripts/refresh-advisories.sh              clone https://github.com/rustsec/advisory-db (needs GitHub)
#   scripts/refresh-advisories.sh <git dir>    read a local clone or bare mirror of it instead, for machines that
#                                              cannot reach GitHub (.ci/advisory-db/README.md says how to get one)
#
# Takes the database's `main`, replaces crates/ and the licence files, records the commit and its date in the README,
# then prints what changed. Review the new advisories with `.ci/deny` and commit .ci/advisory-db/ with deny.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

snapshot=.ci/advisory-db
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ $# -ge 1 ]; then
  git_dir=$(git -C "$1" rev-parse --absolute-git-dir)
else
  git clone --quiet --depth 1 --branch main https://github.com/rustsec/advisory-db "$work/clone"
  git_dir=$work/clone/.git
fi

commit=$(git --git-dir="$git_dir" rev-parse --verify 'main^{commit}')
date=$(git --git-dir="$git_dir" show -s --format=%cI "$commit")

rm -rf "$snapshot/crates" "$snapshot/LICENSES" "$snapshot/LICENSE.txt"
git --git-dir="$git_dir" archive "$commit" crates LICENSE.txt LICENSES | tar -x -C "$snapshot"
sed -i -e "s/^- commit: .*/- commit: $commit/" -e "s/^- date: .*/- date: $date/" "$snapshot/README.md"

echo "advisory snapshot: $commit ($date), $(find "$snapshot/crates" -name '*.md' | wc -l) advisories"
git status --short -- "$snapshot"
