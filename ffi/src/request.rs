//! The JSON requests of the C ABI, checked field by field: an unknown
//! field is an error (a typo must not silently mean "default").

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use snap::{CreateOptions, Policy, SourceSpec, parse_duration};

use crate::{Failure, invalid};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OpenOptions {
    #[serde(default)]
    pub create: bool,
    pub password: Option<String>,
    pub cache_dir: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum Sources {
    One(PathBuf),
    Named(BTreeMap<String, PathBuf>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub sources: Sources,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

impl CreateRequest {
    pub fn to_options(&self) -> Result<CreateOptions, Failure> {
        for k in self.labels.keys() {
            if k.is_empty() || k.contains('=') || k.contains(':') {
                return Err(invalid(format!(
                    "labels: {k:?}: a label name must be non-empty, without `=` or `:`"
                )));
            }
        }
        let mut opts = CreateOptions {
            tags: self.tags.clone(),
            labels: self.labels.clone(),
            ..CreateOptions::default()
        };
        match &self.sources {
            Sources::One(p) => {
                opts.source = p.clone();
                opts.exclude = self.exclude.clone();
            }
            Sources::Named(map) => {
                if map.is_empty() {
                    return Err(invalid("sources: the map names no source"));
                }
                let mut key = String::from("sources:");
                for (name, path) in map {
                    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0'])
                    {
                        return Err(invalid(format!(
                            "sources: {name:?}: a source name must be a plain file name (no `/`, not `.` or `..`)"
                        )));
                    }
                    opts.sources.push(SourceSpec {
                        name: name.clone(),
                        path: path.clone(),
                        exclude: self.exclude.clone(),
                    });
                    key.push_str(&format!("{name}={};", path.display()));
                }
                // Groups the snapshots of this set of sources (its parent
                // and its migration sessions), as a config file's path does.
                opts.source = PathBuf::from(key);
            }
        }
        Ok(opts)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    pub snapshot: String,
    pub target: Option<PathBuf>,
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GcRequest {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub keep_within: Option<String>,
    #[serde(default)]
    pub keep_tags: Vec<String>,
    #[serde(default)]
    pub dry_run: bool,
}

impl GcRequest {
    pub fn policy(&self) -> Result<Policy, Failure> {
        Ok(Policy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within: self
                .keep_within
                .as_deref()
                .map(parse_duration)
                .transpose()?,
            keep_tags: self.keep_tags.clone(),
        })
    }
}
