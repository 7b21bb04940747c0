#!/usr/bin/env bash
# A real source tree from a package registry, in successive releases laid
# at one path (as an app's bundled files change with each upgrade): the
# sdists of Django VERSIONS (default five 5.2 releases) from PyPI, each
# unpacked into $BENCH_DIR/tree in turn (rsync --delete, mtimes kept), and
# backed up after each by snap, restic and borg (zstd,3). Prints per tool
# the seconds of each backup and the repository's size after the last one.
#   SNAP_BIN=target/release/snap BENCH_DIR=/tmp/snap-registry bash benches/registry_versions.sh
# Needs pip (to download), rsync, restic and borg on PATH.
set -euo pipefail
S=${SNAP_BIN:?set SNAP_BIN to a release snap}
B=${BENCH_DIR:-/tmp/snap-registry}
VERSIONS=${VERSIONS:-"5.2.15 5.2.16 5.2.17 5.2.18 5.2.19"}
mkdir -p "$B/dl" "$B/src"
for v in $VERSIONS; do
    if [ ! -d "$B/src/$v" ]; then
        pip download --quiet --no-deps --no-binary :all: -d "$B/dl" "django==$v"
        mkdir -p "$B/src/$v"
        tar -xzf "$B/dl/django-$v.tar.gz" -C "$B/src/$v" --strip-components 1
    fi
done
secs() { /usr/bin/time -f %e -o "$B/t" "$@" >/dev/null 2>&1; cat "$B/t"; }
for tool in snap restic borg; do
    rm -rf "$B/tree" "$B/repo-$tool"
    case $tool in
        snap) "$S" --repo "$B/repo-snap" -q init >/dev/null ;;
        restic) RESTIC_PASSWORD=bench restic -q -r "$B/repo-restic" init >/dev/null ;;
        borg) BORG_PASSPHRASE= borg init -e none "$B/repo-borg" >/dev/null 2>&1 ;;
    esac
    times=()
    for v in $VERSIONS; do
        rsync -a --delete "$B/src/$v/" "$B/tree/"
        case $tool in
            snap) t=$(secs "$S" --repo "$B/repo-snap" -q create "$B/tree") ;;
            restic) t=$(secs env RESTIC_PASSWORD=bench restic -q -r "$B/repo-restic" backup "$B/tree") ;;
            borg) t=$(secs env BORG_PASSPHRASE= BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes \
                borg create --compression zstd,3 "$B/repo-borg::$v" "$B/tree") ;;
        esac
        times+=("$t")
    done
    echo "$tool: backups ${times[*]} s; repository $(du -sb "$B/repo-$tool" | cut -f1) bytes"
done
echo "tree: $(du -sb "$B/tree" | cut -f1) bytes in $(find "$B/tree" -type f | wc -l) files"
