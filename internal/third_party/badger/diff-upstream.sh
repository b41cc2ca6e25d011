#!/usr/bin/env bash
# Prints the difference between this copy and pristine Badger v4.9.6 (from
# the Go module proxy), with the import-path rewrite undone first, so that
# what remains is our patches: the form in which to offer them upstream.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here" && go mod download -json github.com/dgraph-io/badger/v4@v4.9.6 | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r "$here" "$tmp/b"
find "$tmp/b" -name '*.go' -exec sed -i 's#"github.com/modelcache/modelcache/internal/third_party/badger#"github.com/dgraph-io/badger/v4#g' {} +
cd "$tmp"
diff -ru -x '*_test.go' -x README.md -x PATCHES.md -x diff-upstream.sh -x 'badger' -x integration -x docs -x contrib -x images \
	-x '.*' -x '*.md' -x '*.sh' -x Makefile -x go.mod -x go.sum "$src" b | sed "s#$src#a#" || true
