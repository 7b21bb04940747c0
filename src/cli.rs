//! Command-line arguments and the terminal progress display.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What every argument that names a snapshot takes (crates/snap/src/spec.rs).
pub const ID_HELP: &str = "A snapshot: its id or a unique prefix, `latest` (the newest that is not a safety snapshot), or `tag:NAME` (the newest with that tag); each may end in `~N`, the Nth snapshot of the same source before it";

#[derive(Parser)]
#[command(
    name = "snap",
    version,
    about = "Snapshots of application data directories, with exact rollback"
)]
pub struct Cli {
    /// Repository path [default: a repository in the user's data directory, created on first use]
    #[arg(
        long,
        global = true,
        env = "SNAP_REPO",
        hide_env_values = true,
        value_name = "PATH",
        help_heading = "Global options"
    )]
    pub repo: Option<PathBuf>,

    /// Config file [default: <repository>/snap.toml, else the user's config directory's snap/snap.toml]
    #[arg(
        long,
        global = true,
        env = "SNAP_CONFIG",
        hide_env_values = true,
        value_name = "FILE",
        help_heading = "Global options"
    )]
    pub config: Option<PathBuf>,

    /// Read an encrypted repository's password from FILE (its first line) [default: SNAP_PASSWORD, else a prompt on a terminal]
    #[arg(
        long,
        global = true,
        env = "SNAP_PASSWORD_FILE",
        hide_env_values = true,
        value_name = "FILE",
        help_heading = "Global options"
    )]
    pub password_file: Option<PathBuf>,

    /// Keep this machine's index of an encrypted or bucket repository in DIR (it holds file names in the clear; made 0700) [default: $XDG_CACHE_HOME/snap]
    #[arg(
        long,
        global = true,
        env = "SNAP_CACHE_DIR",
        value_name = "DIR",
        help_heading = "Global options"
    )]
    pub cache_dir: Option<PathBuf>,

    /// No progress display
    #[arg(long, short, global = true, help_heading = "Global options")]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a repository (a new or empty directory)
    Init {
        /// Where [default: --repo, SNAP_REPO, or the default repository]
        path: Option<PathBuf>,
        /// Target size of pack files, in MiB (1 to 1024)
        #[arg(long, value_name = "MIB", default_value_t = 16)]
        pack_size: u64,
        /// zstd level for chunks (1 to 19)
        #[arg(long, value_name = "LEVEL", default_value_t = 3)]
        zstd_level: i32,
        /// Encrypt every object with a key that a password opens (the default for s3:// repositories)
        #[arg(long, conflicts_with = "no_encrypt")]
        encrypt: bool,
        /// Do not encrypt (say so explicitly for an s3:// repository)
        #[arg(long)]
        no_encrypt: bool,
    },
    /// Snapshot a directory, or every source of snap.toml into one snapshot
    Create(CreateArgs),
    /// List snapshots, oldest first
    List {
        /// Print the snapshots as a JSON array
        #[arg(long)]
        json: bool,
    },
    /// List the entries of a snapshot, like `ls -l`
    Ls {
        #[arg(help = ID_HELP)]
        id: String,
        /// Path inside the snapshot
        path: Option<PathBuf>,
        /// List subdirectories too
        #[arg(long, short)]
        recursive: bool,
        /// Print the snapshot and its entries as JSON
        #[arg(long)]
        json: bool,
    },
    /// Restore a snapshot: into its source directory, or into --target
    Restore(RestoreArgs),
    /// Remove snapshots (run `snap gc` to reclaim their space)
    Forget {
        #[arg(required = true, help = ID_HELP)]
        ids: Vec<String>,
    },
    /// Keep a snapshot whatever the retention policy says
    Pin {
        #[arg(help = ID_HELP)]
        id: String,
    },
    /// Let the retention policy remove a snapshot again
    Unpin {
        #[arg(help = ID_HELP)]
        id: String,
    },
    /// Apply a retention policy (if given), then delete unused data
    Gc(GcArgs),
    /// Snapshot, run a migration, and roll back if it fails
    Guard(GuardArgs),
    /// Rebuild what can be rebuilt from the repository's own files
    #[command(subcommand)]
    Repair(RepairWhat),
    /// Manage the password of an encrypted repository
    #[command(subcommand)]
    Key(KeyWhat),
    /// What changed between two snapshots, or from a snapshot to its source now
    Diff(DiffArgs),
    /// Paths matching glob patterns, in every snapshot or those given
    Find(FindArgs),
    /// Sizes: of the repository (logical, unique, stored, ratios), or of one snapshot
    Stats {
        #[arg(help = ID_HELP)]
        id: Option<String>,
        /// Print the statistics as one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Write a file of a snapshot to stdout, or a directory as a tar stream
    Dump {
        #[arg(help = ID_HELP)]
        id: String,
        /// Path inside the snapshot (`.` or `/` for all of it)
        path: std::path::PathBuf,
    },
    /// Add or remove tags of a snapshot
    Tag(TagArgs),
    /// Copy snapshots to another repository (local or s3://, plain or encrypted), sending only what it lacks
    Copy(CopyArgs),
    /// A local web page to look at the repository: timeline, trees, diffs, statistics
    Ui(UiArgs),
    /// Print a completion script for a shell (bash, zsh, fish, elvish, powershell)
    Completions { shell: clap_complete::Shell },
    /// Print snap's man page (roff) to stdout, or the page of one command
    Man {
        /// A command, e.g. `restore`
        command: Option<String>,
        /// Write every page (snap.1 and snap-COMMAND.1) into DIR
        #[arg(long, value_name = "DIR", conflicts_with = "command")]
        dir: Option<PathBuf>,
    },
    /// Check the repository's consistency; --read-data also verifies every chunk
    Check {
        /// Read every pack and verify every chunk's BLAKE3 id
        #[arg(long)]
        read_data: bool,
        /// Print the report as one JSON object
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct DiffArgs {
    /// The snapshot to compare from (an id or prefix, `latest`, `tag:NAME`, each with `~N`)
    pub from: String,
    /// The snapshot to compare to [default: the source directories as they are now]
    pub to: Option<String>,
    /// Against the source: also read files whose size and mtime match
    #[arg(long)]
    pub verify: bool,
    /// For each modified SQLite database: what changed inside it (schema, user_version, journal mode, rows inserted, deleted and updated per table, matched by primary key). Not the default: it makes a private copy of both images of each modified database
    #[arg(long)]
    pub db: bool,
    /// With --db, list up to N changed rows per table and change (the changed columns' old and new values); implies --db
    #[arg(long, value_name = "N")]
    pub rows: Option<usize>,
    /// One JSON array of {path, change, kind, size_before, size_after, database?} (docs/schemas/diff.json)
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct FindArgs {
    /// Glob patterns, matched like excludes (a pattern without `/` matches a name at any depth)
    #[arg(required = true)]
    pub patterns: Vec<String>,
    /// Search only this snapshot (repeatable) [default: every snapshot]
    #[arg(long = "snapshot", short = 's', value_name = "ID")]
    pub snapshots: Vec<String>,
    /// One JSON array of {snapshot, path, kind, size, mtime}
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct TagArgs {
    #[arg(help = ID_HELP)]
    pub id: String,
    /// Add this tag (repeatable)
    #[arg(long, value_name = "TAG")]
    pub add: Vec<String>,
    /// Remove this tag (repeatable)
    #[arg(long, value_name = "TAG")]
    pub remove: Vec<String>,
}

#[derive(Args)]
pub struct UiArgs {
    /// Port to listen on [default: one the system chooses]
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Address to listen on; anything but loopback is warned about
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// Offer restores (each shows its plan first and takes a safety snapshot); read-only otherwise
    #[arg(long)]
    pub allow_restore: bool,
}

#[derive(Args)]
pub struct CopyArgs {
    /// Snapshots to copy
    #[arg(help = ID_HELP, required_unless_present = "all", conflicts_with = "all")]
    pub ids: Vec<String>,
    /// Copy every snapshot
    #[arg(long)]
    pub all: bool,
    /// The repository to copy to (a directory or s3://BUCKET/PREFIX; create it first with `snap init`)
    #[arg(long, value_name = "REPO", required = true)]
    pub to: PathBuf,
    /// Read the destination's password from FILE, when it is encrypted [default: SNAP_TO_PASSWORD, else a prompt on a terminal]
    #[arg(
        long,
        env = "SNAP_TO_PASSWORD_FILE",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub to_password_file: Option<PathBuf>,
    /// Print what was copied as one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Subcommand)]
pub enum KeyWhat {
    /// Change the password: the new one opens the repository, and every key object the old one opened is removed (the master key and the data do not change)
    Passwd {
        /// Read the new password from FILE [default: SNAP_NEW_PASSWORD, else a prompt]
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
    },
    /// Add a password: a new key object (the current password keeps working)
    Add {
        /// Read the new password from FILE [default: SNAP_NEW_PASSWORD, else a prompt]
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
    },
    /// The key objects: name, when made, cost, and whether your password opens it
    List {
        /// Print them as JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove a key object (not the last one, nor the only one your password opens)
    Remove {
        /// The key object's name, as `snap key list` shows it
        name: String,
    },
}

#[derive(Subcommand)]
pub enum RepairWhat {
    /// Rebuild index.db from the packs and snapshot files (when it is lost or damaged)
    Index {
        /// Print what was rebuilt as one JSON object
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct GcArgs {
    /// Keep the N newest snapshots (per source; restore's safety snapshots are counted apart)
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// ... days
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// ... ISO weeks
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// ... months
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// ... years
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep snapshots within DURATION of the newest (e.g. 7d, 2w, 36h, 6m, 1y)
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep snapshots with this tag (repeatable)
    #[arg(long = "keep-tag", value_name = "TAG")]
    pub keep_tags: Vec<String>,
    /// Repack a pack when more than PERCENT of its bytes are unused
    #[arg(long, value_name = "PERCENT", default_value_t = 30.0)]
    pub repack_threshold: f64,
    /// Repository in a bucket: delete condemned packs this long after a gc
    /// condemned them (longer than any create on another client runs)
    /// (at least 1h, unless --no-other-writers)
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub grace: String,
    /// Confirm that no other client writes the bucket now: allows a
    /// --grace under 1h (a create that started before this gc and commits
    /// after it would lose its snapshot)
    #[arg(long)]
    pub no_other_writers: bool,
    /// Report what would be removed; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the statistics as one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct CreateArgs {
    /// Directory to snapshot [default: every source in snap.toml]
    pub path: Option<PathBuf>,
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    #[command(flatten)]
    pub what: SnapshotArgs,
    /// Compare against this snapshot instead of the latest of the same path
    #[arg(long, value_name = "ID")]
    pub parent: Option<String>,
    /// Read every file, trusting no metadata from the parent snapshot
    #[arg(long)]
    pub force: bool,
    /// Print the result as one JSON object
    #[arg(long)]
    pub json: bool,
}

/// Options shared by `create` and `guard`.
#[derive(Args)]
pub struct SnapshotArgs {
    /// Attach a label (repeatable), e.g. app_version=2.3.0
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Leave out paths matching PATTERN (repeatable; see README, "Config file")
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// Read exclude patterns from FILE, one per line (`#` starts a comment)
    #[arg(long = "exclude-file", value_name = "FILE")]
    pub exclude_files: Vec<std::path::PathBuf>,
    /// Do not enter directories on other filesystems (stored empty)
    #[arg(long, short = 'x')]
    pub one_file_system: bool,
    /// Snapshot pseudo-filesystems too (proc, sysfs, ...), whose files are
    /// made up as they are read; without it they are refused as a source
    /// and skipped below one
    #[arg(long)]
    pub pseudo_filesystems: bool,
    /// Run PRAGMA quick_check on every SQLite database captured
    #[arg(long)]
    pub sqlite_check: bool,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains(':') => Ok((k.to_string(), v.to_string())),
        _ => Err(format!(
            "{s:?}: a label is KEY=VALUE with a non-empty KEY without `:`"
        )),
    }
}

#[derive(Args)]
pub struct GuardArgs {
    /// A source of snap.toml by name, or a directory (repeatable) [default: every source in snap.toml]
    #[arg(long = "source", value_name = "NAME|PATH")]
    pub sources: Vec<String>,
    /// A shell command that must succeed after the migration, or it is rolled back
    #[arg(long, value_name = "CMD")]
    pub check: Option<String>,
    /// After a success, keep only the newest N kept sessions (`migration-kept`) of these sources
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
    /// After a success, also snapshot the migrated state (tagged `migrated`)
    #[arg(long)]
    pub snapshot_after: bool,
    #[command(flatten)]
    pub what: SnapshotArgs,
    /// Print the outcome as JSON
    #[arg(long)]
    pub json: bool,
    /// The migration command and its arguments
    #[arg(last = true, required = true, value_name = "MIGRATION")]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Args)]
pub struct RestoreArgs {
    #[arg(help = ID_HELP)]
    pub id: String,
    /// Restore into DIR instead of the snapshot's source directory
    #[arg(long, value_name = "DIR")]
    pub target: Option<PathBuf>,
    /// Restore only this path of the snapshot
    #[arg(long, value_name = "SUBPATH")]
    pub path: Option<PathBuf>,
    /// Print the plan; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Compare file contents by hash, not by size and mtime
    #[arg(long)]
    pub verify: bool,
    /// Do not snapshot the current state before changing it
    #[arg(long)]
    pub no_safety_snapshot: bool,
    /// Go on even when the safety snapshot could not read everything it
    /// protects (what it could not read cannot be brought back)
    #[arg(long)]
    pub force: bool,
    /// Print the result (or the plan) as JSON
    #[arg(long)]
    pub json: bool,
    /// Do not ask before a --target restore deletes what the snapshot
    /// lacks (it asks only at a terminal)
    #[arg(long, short)]
    pub yes: bool,
}

/// Progress on stderr when it is a terminal.
pub struct TermProgress {
    bar: Option<ProgressBar>,
    /// The current phase's name and the entries it has visited.
    phase: std::sync::Mutex<(String, u64)>,
}

const SPINNER: &str = "{spinner} {msg} {binary_bytes} [{elapsed}]";
/// The bar takes what the terminal's width leaves (indicatif measures it
/// at each draw), so the line never wraps in an 80-column terminal.
const WITH_TOTAL: &str =
    "{spinner} {msg} {binary_bytes}/{binary_total_bytes} {percent}% ETA {eta} [{wide_bar}]";

impl TermProgress {
    pub fn new(quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.set_style(Self::style(SPINNER));
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        TermProgress {
            bar,
            phase: std::sync::Mutex::new((String::new(), 0)),
        }
    }

    fn style(template: &str) -> ProgressStyle {
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .progress_chars("=> ")
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

impl snap::progress::Progress for TermProgress {
    fn phase(&self, name: &str, total: Option<u64>) {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        *phase = (name.to_string(), 0);
        if let Some(b) = &self.bar {
            b.set_message(format!("{name}:"));
            b.set_position(0);
            match total.filter(|&t| t > 0) {
                // With a total: a bar, a percentage and an ETA.
                Some(t) => {
                    b.set_length(t);
                    b.set_style(Self::style(WITH_TOTAL));
                }
                None => {
                    b.unset_length();
                    b.set_style(Self::style(SPINNER));
                }
            }
        }
    }
    fn entries(&self, n: u64) {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        phase.1 += n;
        if let Some(b) = &self.bar {
            b.set_message(format!("{}: {},", phase.0, count(phase.1, "entry")));
        }
    }
    fn bytes(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
            // A total is an estimate (the parent snapshot's size): never
            // let the position run past it.
            if let Some(len) = b.length()
                && b.position() > len
            {
                b.set_length(b.position());
            }
        }
    }
    fn warn(&self, w: &snap::progress::Warning) {
        let message = &w.message;
        match &self.bar {
            Some(b) => b.suspend(|| eprintln!("warning: {message}")),
            None => eprintln!("warning: {message}"),
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// `1 file`, `2 files`, `1 entry`, `3 entries`.
pub fn count(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else if let Some(stem) = word.strip_suffix('y') {
        format!("{n} {stem}ies")
    } else {
        format!("{n} {word}s")
    }
}
