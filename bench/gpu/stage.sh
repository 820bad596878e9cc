#!/usr/bin/env bash
# Copy one commit of this repository into DEST for a GPU machine without git (the device call
# carries a folder, not a checkout): the commit's files (git archive), and DEST/BENCH_COMMIT, from
# which the bench records that commit in every row (commit_state "archive": exactly that commit).
#
#   bash bench/gpu/stage.sh DEST [COMMIT]     # COMMIT defaults to HEAD; uncommitted changes are not copied
set -euo pipefail
dest=${1:?usage: stage.sh DEST [COMMIT]}
commit=$(git rev-parse "${2:-HEAD}")
mkdir -p "$dest"
git archive --format=tar "$commit" | tar -x -C "$dest"
echo "$commit" >"$dest/BENCH_COMMIT"
echo "staged $commit into $dest"
