# The app-shaped data set of the side-by-side scripts, sourced by them:
# make_app_set DIR builds DIR when it is missing (the crates of cargo's
# registry source cache, two SQLite databases of 300,000 rows, one in WAL
# mode and one with a rollback journal, 20 incompressible 2 MB media files).
make_app_set() {
    local app=$1
    [ -d "$app" ] && return 0
    mkdir -p "$app/media"
    cp -r "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/ "$app/src"
    for mode in wal delete; do
        sqlite3 "$app/$mode.db" "PRAGMA journal_mode=$mode;
            CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, body TEXT, n INTEGER);
            WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 300000)
            INSERT INTO items SELECT i, 'item ' || i, hex(randomblob(40)), i * 7 FROM c;" >/dev/null
    done
    for i in $(seq 1 20); do head -c 2000000 /dev/urandom >"$app/media/m$i.bin"; done
}
