/*
 * The app-upgrade scenario through the C ABI, as an app would run it:
 * snapshot, migrate, roll back a failed migration, keep a successful one.
 * Built and run by ffi/tests/c_abi.rs:
 *
 *   upgrade REPO DATA
 *
 * DATA holds prefs.json, media/a.bin and app.db (a SQLite database). The
 * "migration" here changes files the way a migration does (rewrites the
 * database's pages, edits prefs, adds and deletes files) without linking
 * SQLite; the Rust test checks the database with SQLite afterwards.
 * Exits 0 when every check passed; otherwise prints what failed.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "snap.h"

static int failures = 0;

static void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    failures++;
}

#define EXPECT_RC(call, want)                                                   \
    do {                                                                        \
        int32_t rc_ = (call);                                                   \
        if (rc_ != (want)) {                                                    \
            const char *e_ = snap_last_error();                                 \
            fail("%s returned %d, wanted %d (%s)", #call, rc_, (want),          \
                 e_ ? e_ : "no message");                                       \
        }                                                                       \
    } while (0)

/* What the event callback saw. */
struct events {
    int phases;
    int progress;
    int other;
    SnapRepo *cancel_repo; /* cancel on the first event when set */
};

static void on_event(char *json, void *user_data) {
    struct events *ev = user_data;
    if (strstr(json, "\"event\":\"phase\"")) ev->phases++;
    else if (strstr(json, "\"event\":\"progress\"")) ev->progress++;
    else ev->other++;
    if (ev->cancel_repo) snap_cancel(ev->cancel_repo);
    snap_free(json); /* events belong to the callback */
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc(n > 0 ? n : 1);
    *len = fread(buf, 1, n, f);
    fclose(f);
    return buf;
}

static void write_file(const char *path, const char *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len) fail("cannot write %s: %s", path, strerror(errno));
    if (f) fclose(f);
}

/* The value of "key":"..." in a JSON text, copied into out. */
static int json_string(const char *json, const char *key, char *out, size_t cap) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *p = json ? strstr(json, pat) : NULL;
    if (!p) return 0;
    p += strlen(pat);
    const char *end = strchr(p, '"');
    if (!end || (size_t)(end - p) >= cap) return 0;
    memcpy(out, p, end - p);
    out[end - p] = 0;
    return 1;
}

struct saved {
    const char *name;
    char path[4096];
    char *data;
    size_t len;
    struct stat st;
};

static void save(struct saved *s, const char *dir) {
    snprintf(s->path, sizeof s->path, "%s/%s", dir, s->name);
    s->data = read_file(s->path, &s->len);
    if (!s->data || lstat(s->path, &s->st) != 0) fail("cannot read %s", s->path);
}

/* The file is back byte for byte, with its mode and nanosecond mtime. */
static void same_as_saved(const struct saved *s) {
    size_t len;
    char *now = read_file(s->path, &len);
    struct stat st;
    if (!now || lstat(s->path, &st) != 0) {
        fail("%s is missing after the rollback", s->path);
        return;
    }
    if (len != s->len || memcmp(now, s->data, len) != 0) fail("%s differs after the rollback", s->path);
    if (st.st_mode != s->st.st_mode) fail("%s: mode %o, was %o", s->path, st.st_mode, s->st.st_mode);
    if (st.st_mtim.tv_sec != s->st.st_mtim.tv_sec || st.st_mtim.tv_nsec != s->st.st_mtim.tv_nsec)
        fail("%s: mtime changed by the rollback", s->path);
    free(now);
}

/* A migration: rewrites pages in the middle of the database, edits prefs,
 * adds a file, deletes one, changes a mode. */
static void migrate(const char *data, const char *tag) {
    char path[4096];
    snprintf(path, sizeof path, "%s/app.db", data);
    FILE *f = fopen(path, "r+b");
    if (!f) { fail("cannot open %s", path); return; }
    char page[4096];
    memset(page, tag[0], sizeof page);
    fseek(f, 4096, SEEK_SET); /* page 2: leave the header alone */
    fwrite(page, 1, sizeof page, f);
    fclose(f);
    snprintf(path, sizeof path, "%s/prefs.json", data);
    char prefs[128];
    int n = snprintf(prefs, sizeof prefs, "{\"schema\": 2, \"by\": \"%s\"}\n", tag);
    write_file(path, prefs, n);
    snprintf(path, sizeof path, "%s/new-%s.txt", data, tag);
    write_file(path, tag, strlen(tag));
    snprintf(path, sizeof path, "%s/media/a.bin", data);
    if (unlink(path) != 0) fail("cannot delete %s", path);
    snprintf(path, sizeof path, "%s/prefs.json", data);
    chmod(path, 0600);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: upgrade REPO DATA\n");
        return 2;
    }
    const char *repo_path = argv[1], *data = argv[2];
    char req[8192], path[4096], id[128];
    char *result = NULL;

    if (!snap_version() || !*snap_version()) fail("snap_version is empty");

    /* Errors: a NULL path, a bad option, a bad id. */
    if (snap_open(NULL, NULL) != NULL) fail("snap_open(NULL) succeeded");
    if (!snap_last_error() || !strstr(snap_last_error(), "NULL")) fail("no message for snap_open(NULL)");
    if (snap_open(repo_path, "{\"create\": true, \"colour\": 1}") != NULL) fail("an unknown option was accepted");
    if (!snap_last_error() || !strstr(snap_last_error(), "colour")) fail("the message does not name the unknown option");

    SnapRepo *repo = snap_open(repo_path, "{\"create\": true}");
    if (!repo) {
        fprintf(stderr, "FAIL: snap_open: %s\n", snap_last_error());
        return 1;
    }

    /* A plain snapshot, with events. */
    struct events ev = {0};
    snprintf(req, sizeof req, "{\"sources\": \"%s\", \"tags\": [\"first\"]}", data);
    EXPECT_RC(snap_create(repo, req, on_event, &ev, &result), 0);
    if (!result || !strstr(result, "\"id\":\"")) fail("create returned no id: %s", result ? result : "NULL");
    if (ev.phases < 1) fail("no phase event arrived");
    if (ev.progress < 1) fail("no progress event arrived");
    snap_free(result);

    /* A bad snapshot id: 1 and a message naming it. */
    EXPECT_RC(snap_restore(repo, "{\"snapshot\": \"ffffffffdeadbeef\", \"dry_run\": true}", NULL, NULL, &result), 1);
    if (!snap_last_error() || !strstr(snap_last_error(), "ffffffffdeadbeef")) fail("the bad id is not in the message: %s", snap_last_error());
    if (result != NULL) fail("a failed call returned a result");
    EXPECT_RC(snap_restore(repo, "not json", NULL, NULL, NULL), 1);
    EXPECT_RC(snap_create(NULL, req, NULL, NULL, NULL), 1);
    EXPECT_RC(snap_migration_end(repo, NULL, 1, NULL), 1);

    /* Cancel: asked for at the first event, nothing is committed. */
    char *before = NULL, *after = NULL;
    EXPECT_RC(snap_list(repo, &before), 0);
    struct events cancel_ev = {0};
    cancel_ev.cancel_repo = repo;
    EXPECT_RC(snap_create(repo, req, on_event, &cancel_ev, &result), 130);
    EXPECT_RC(snap_list(repo, &after), 0);
    if (!before || !after || strcmp(before, after) != 0) fail("a cancelled create changed the snapshot list");
    snap_free(before);
    snap_free(after);

    /* A failed migration is rolled back exactly. */
    struct saved files[3];
    const char *names[3] = {"app.db", "prefs.json", "media/a.bin"};
    for (int i = 0; i < 3; i++) {
        memset(&files[i], 0, sizeof files[i]);
        files[i].name = names[i];
        save(&files[i], data);
    }
    snprintf(req, sizeof req, "{\"sources\": \"%s\", \"labels\": {\"app_version\": \"1.0\"}}", data);
    EXPECT_RC(snap_migration_begin(repo, req, &result), 0);
    if (!json_string(result, "snapshot", id, sizeof id)) fail("migration_begin returned no snapshot: %s", result);
    snap_free(result);
    /* A second session before the first ended is refused. */
    EXPECT_RC(snap_migration_begin(repo, req, NULL), 1);
    if (!snap_last_error() || !strstr(snap_last_error(), "did not finish")) fail("no reason for refusing a second session");
    migrate(data, "broken");
    EXPECT_RC(snap_migration_end(repo, id, 0, &result), 7);
    if (!result || !strstr(result, "\"outcome\":\"rolled_back\"")) fail("rollback result: %s", result ? result : "NULL");
    snap_free(result);
    for (int i = 0; i < 3; i++) same_as_saved(&files[i]);
    snprintf(path, sizeof path, "%s/new-broken.txt", data);
    if (access(path, F_OK) == 0) fail("%s survived the rollback", path);

    /* A successful migration keeps its changes. */
    EXPECT_RC(snap_migration_begin(repo, req, &result), 0);
    if (!json_string(result, "snapshot", id, sizeof id)) fail("migration_begin returned no snapshot");
    snap_free(result);
    migrate(data, "good");
    EXPECT_RC(snap_migration_end(repo, id, 1, &result), 0);
    if (!result || !strstr(result, "\"outcome\":\"migrated\"")) fail("migrated result: %s", result ? result : "NULL");
    snap_free(result);
    snprintf(path, sizeof path, "%s/new-good.txt", data);
    if (access(path, F_OK) != 0) fail("%s is gone after a successful migration", path);

    /* gc with a policy keeps pinned and tagged snapshots it is told to. */
    EXPECT_RC(snap_gc(repo, "{\"keep_last\": 10}", &result), 0);
    if (!result || !strstr(result, "snapshots_kept")) fail("gc result: %s", result ? result : "NULL");
    snap_free(result);
    EXPECT_RC(snap_gc(repo, "{\"keep_within\": \"soon\"}", NULL), 1);

    snap_close(repo);
    snap_free(NULL);
    snap_close(NULL);
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
