//! `snap.toml`: where an app keeps its data, and how to keep snapshots of it.
//!
//! ```toml
//! repository = "/var/backups/myapp"     # optional; relative to this file
//!
//! [labels]                              # added to every snapshot
//! app = "myapp"
//!
//! [sources.databases]                   # one table per named source
//! path = "~/.local/share/myapp/db"
//! exclude = ["*.tmp"]
//!
//! [sources.documents]
//! path = "~/Documents/myapp"
//! exclude = ["cache/", "**/thumbnails"]
//!
//! [retention]                           # the default policy of `snap gc`
//! keep_last = 10
//! keep_within = "2w"
//! keep_tags = ["release"]
//! ```
//!
//! Found at `--config`, else `<repository>/snap.toml`, else
//! `$XDG_CONFIG_HOME/snap/snap.toml`. Errors name the file, the line and
//! the key.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use snap::exclude::Excludes;
use snap::{Error, Policy, Result, SourceSpec, parse_duration};

pub const FILE_NAME: &str = "snap.toml";

#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserConfig {
    /// The file this was read from.
    pub path: PathBuf,
    pub repository: Option<PathBuf>,
    pub labels: BTreeMap<String, String>,
    /// In name order.
    pub sources: Vec<SourceSpec>,
    pub retention: Option<Policy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    repository: Option<Spanned<String>>,
    #[serde(default)]
    labels: BTreeMap<Spanned<String>, String>,
    #[serde(default)]
    sources: BTreeMap<Spanned<String>, RawSource>,
    retention: Option<RawRetention>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    path: Spanned<String>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    keep_last: Option<u32>,
    keep_hourly: Option<u32>,
    keep_daily: Option<u32>,
    keep_weekly: Option<u32>,
    keep_monthly: Option<u32>,
    keep_yearly: Option<u32>,
    keep_within: Option<Spanned<String>>,
    #[serde(default)]
    keep_tags: Vec<String>,
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// A TOML error as a config error naming its line and, when the message
/// names one (`unknown field `x``, `missing field `path``), its key.
fn toml_error(text: &str, path: &Path, e: &toml::de::Error) -> Error {
    let line = e.span().map_or(1, |s| line_of(text, s.start));
    let msg = e.message().trim().to_string();
    let key = if msg.starts_with("unknown field") || msg.starts_with("missing field") {
        msg.split('`').nth(1).unwrap_or_default().to_string()
    } else {
        String::new()
    };
    Error::Config {
        path: path.to_path_buf(),
        line,
        key,
        reason: msg,
    }
}

/// A path the config names: `~/` is the home directory, and a relative
/// path is relative to the config file's directory `base`.
fn resolve_path(base: &Path, p: &str) -> PathBuf {
    let expanded = match p.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(rest))
            .unwrap_or_else(|| PathBuf::from(p)),
        None => PathBuf::from(p),
    };
    if expanded.is_absolute() {
        expanded
    } else {
        base.join(expanded)
    }
}

impl UserConfig {
    /// Read and check a config file.
    pub fn load(path: &Path) -> Result<UserConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parse `text` as the contents of `path` (relative paths in it are
    /// relative to the file's directory).
    pub fn parse(text: &str, path: &Path) -> Result<UserConfig> {
        let bad = |span: Range<usize>, key: &str, reason: String| Error::Config {
            path: path.to_path_buf(),
            line: line_of(text, span.start),
            key: key.to_string(),
            reason,
        };
        let raw: Raw = toml::from_str(text).map_err(|e| toml_error(text, path, &e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &str| resolve_path(base, p);
        let mut cfg = UserConfig {
            path: path.to_path_buf(),
            ..UserConfig::default()
        };
        if let Some(r) = raw.repository {
            if r.get_ref().is_empty() {
                return Err(bad(r.span(), "repository", "is empty".into()));
            }
            cfg.repository = Some(resolve(r.get_ref()));
        }
        for (k, v) in raw.labels {
            let key = k.get_ref();
            if key.is_empty() || key.contains('=') || key.contains(':') {
                return Err(bad(
                    k.span(),
                    &format!("labels.{key}"),
                    "a label name must be non-empty, without `=` or `:`".into(),
                ));
            }
            cfg.labels.insert(key.clone(), v);
        }
        for (name, src) in raw.sources {
            let n = name.get_ref();
            if n.is_empty() || n == "." || n == ".." || n.contains('/') || n.contains('\0') {
                return Err(bad(
                    name.span(),
                    &format!("sources.{n}"),
                    "a source name must be a plain file name (no `/`, not `.` or `..`)".into(),
                ));
            }
            let p = src.path.get_ref();
            if p.is_empty() {
                return Err(bad(
                    src.path.span(),
                    &format!("sources.{n}.path"),
                    "is empty".into(),
                ));
            }
            let mut exclude = Vec::new();
            for pat in &src.exclude {
                Excludes::new(std::slice::from_ref(pat.get_ref()))
                    .map_err(|why| bad(pat.span(), &format!("sources.{n}.exclude"), why))?;
                exclude.push(pat.get_ref().clone());
            }
            cfg.sources.push(SourceSpec {
                name: n.clone(),
                path: resolve(p),
                exclude,
            });
        }
        if let Some(r) = raw.retention {
            let keep_within = match r.keep_within {
                Some(w) => Some(
                    parse_duration(w.get_ref())
                        .map_err(|e| bad(w.span(), "retention.keep_within", e.to_string()))?,
                ),
                None => None,
            };
            cfg.retention = Some(Policy {
                keep_last: r.keep_last,
                keep_hourly: r.keep_hourly,
                keep_daily: r.keep_daily,
                keep_weekly: r.keep_weekly,
                keep_monthly: r.keep_monthly,
                keep_yearly: r.keep_yearly,
                keep_within,
                keep_tags: r.keep_tags,
            });
        }
        Ok(cfg)
    }

    /// The source named `name`.
    pub fn source(&self, name: &str) -> Option<&SourceSpec> {
        self.sources.iter().find(|s| s.name == name)
    }
}

/// What a `create` or `guard` snapshots, resolved against the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The snapshot's source key: the directory itself for one directory,
    /// else the config file (with the names when only some are picked).
    pub key: PathBuf,
    /// Several named sources (one snapshot of all), or empty for one
    /// directory, whose path and excludes are `key` and `exclude`.
    pub sources: Vec<SourceSpec>,
    pub exclude: Vec<String>,
}

/// Resolve `picks` (configured source names or directories; none means
/// every configured source), adding `extra_exclude` to each.
pub fn select(
    cfg: Option<&UserConfig>,
    picks: &[PathBuf],
    extra_exclude: &[String],
) -> Result<Selection> {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let mut specs: Vec<SourceSpec> = Vec::new();
    let mut all_configured = false;
    if picks.is_empty() {
        let cfg = cfg.filter(|c| !c.sources.is_empty()).ok_or_else(|| {
            Error::usage(
                "no directory given and no sources configured: name one (`snap create DIR`, `snap guard --source DIR -- MIGRATION`), or name sources in snap.toml (see README, \"Config file\")",
            )
        })?;
        specs = cfg.sources.clone();
        all_configured = true;
    } else {
        for p in picks {
            let named = p
                .to_str()
                .and_then(|n| cfg.and_then(|c| c.source(n)))
                .cloned();
            let spec = match named {
                Some(s) => s,
                None => {
                    // A directory; a configured source at the same place
                    // lends its excludes.
                    let here = canon(p);
                    let like = cfg.and_then(|c| c.sources.iter().find(|s| canon(&s.path) == here));
                    SourceSpec {
                        name: like.map_or_else(
                            || {
                                here.file_name()
                                    .map_or("root".into(), |n| n.to_string_lossy().into_owned())
                            },
                            |s| s.name.clone(),
                        ),
                        path: p.clone(),
                        exclude: like.map_or_else(Vec::new, |s| s.exclude.clone()),
                    }
                }
            };
            if specs.iter().any(|s| s.name == spec.name) {
                return Err(Error::usage(format!(
                    "two sources would be named {:?} in one snapshot",
                    spec.name
                )));
            }
            specs.push(spec);
        }
    }
    for s in &mut specs {
        s.exclude.extend(extra_exclude.iter().cloned());
    }
    if specs.len() == 1 && !all_configured {
        let s = specs.pop().expect("one source");
        return Ok(Selection {
            key: s.path,
            sources: Vec::new(),
            exclude: s.exclude,
        });
    }
    let base = cfg.map_or_else(|| canon(&specs[0].path), |c| canon(&c.path));
    let key = if all_configured {
        base
    } else {
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        PathBuf::from(format!("{}#{}", base.display(), names.join(",")))
    };
    Ok(Selection {
        key,
        sources: specs,
        exclude: Vec::new(),
    })
}

/// The user's config directory's snap.toml (`$XDG_CONFIG_HOME/snap`).
pub fn user_config_file() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "snap").map(|d| d.config_dir().join(FILE_NAME))
}

/// Find the config: `explicit` (must exist), else `<repo>/snap.toml`, else
/// the user's config directory. `None` when there is none.
pub fn find(explicit: Option<&Path>, repo: Option<&Path>) -> Result<Option<UserConfig>> {
    if let Some(p) = explicit {
        return UserConfig::load(p).map(Some);
    }
    let candidates = repo
        .map(|r| r.join(FILE_NAME))
        .into_iter()
        .chain(user_config_file());
    for c in candidates {
        if c.is_file() {
            return UserConfig::load(&c).map(Some);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<UserConfig> {
        UserConfig::parse(text, Path::new("/etc/app/snap.toml"))
    }

    fn err(text: &str) -> (usize, String, String) {
        match parse(text).unwrap_err() {
            Error::Config {
                line, key, reason, ..
            } => (line, key, reason),
            other => panic!("not a config error: {other}"),
        }
    }

    #[test]
    fn a_valid_file() {
        let cfg = parse(
            r#"
repository = "repo"

[labels]
app = "myapp"

[sources.db]
path = "/var/lib/app/db"
exclude = ["*.tmp", "cache/"]

[sources.docs]
path = "docs"

[retention]
keep_last = 5
keep_within = "2w"
keep_tags = ["release"]
"#,
        )
        .unwrap();
        assert_eq!(cfg.repository, Some(PathBuf::from("/etc/app/repo")));
        assert_eq!(cfg.labels["app"], "myapp");
        assert_eq!(cfg.sources.len(), 2);
        assert_eq!(cfg.sources[0].name, "db");
        assert_eq!(cfg.sources[0].path, PathBuf::from("/var/lib/app/db"));
        assert_eq!(cfg.sources[0].exclude, vec!["*.tmp", "cache/"]);
        assert_eq!(cfg.sources[1].path, PathBuf::from("/etc/app/docs"));
        let r = cfg.retention.unwrap();
        assert_eq!(r.keep_last, Some(5));
        assert_eq!(r.keep_within, Some(parse_duration("2w").unwrap()));
        assert_eq!(r.keep_tags, vec!["release"]);
        assert_eq!(parse("").unwrap().sources.len(), 0);
    }

    #[test]
    fn each_malformed_case_names_the_line_and_the_key() {
        let cases: &[(&str, usize, &str)] = &[
            // TOML syntax.
            ("[sources.db]\npath = \"/x\"\nexclude = [\"a\"\n", 3, ""),
            // Unknown keys, at each level.
            ("repo = \"/x\"\n", 1, "repo"),
            (
                "[sources.db]\npath = \"/x\"\nexclud = [\"a\"]\n",
                3,
                "exclud",
            ),
            ("[retention]\nkeep_lats = 3\n", 2, "keep_lats"),
            // Missing and mistyped values.
            ("[sources.db]\nexclude = []\n", 1, "path"),
            ("[sources.db]\npath = 7\n", 2, ""),
            ("[retention]\nkeep_last = -1\n", 2, ""),
            // Checked values.
            ("[sources.db]\npath = \"\"\n", 2, "sources.db.path"),
            ("[sources.\"a/b\"]\npath = \"/x\"\n", 1, "sources.a/b"),
            (
                "[sources.db]\npath = \"/x\"\nexclude = [\"ok\", \"a[\"]\n",
                3,
                "sources.db.exclude",
            ),
            (
                "[retention]\nkeep_within = \"soon\"\n",
                2,
                "retention.keep_within",
            ),
            ("[labels]\n\"a=b\" = \"c\"\n", 2, "labels.a=b"),
            ("repository = \"\"\n", 1, "repository"),
        ];
        for (text, line, key) in cases {
            let (l, k, reason) = err(text);
            assert_eq!(l, *line, "line for {text:?}: {reason}");
            if !key.is_empty() {
                assert_eq!(k, *key, "key for {text:?}: {reason}");
            }
            assert!(!reason.is_empty());
        }
    }
}
