//! Exclude patterns: which paths of a source a snapshot leaves out.
//!
//! The same patterns are recorded in the snapshot, so an in-place restore
//! knows which paths were never backed up and leaves them alone.
//!
//! Syntax (gitignore-like, matched against paths relative to the source):
//! - a pattern without `/` matches a name at any depth (`*.tmp`, `cache`);
//! - a pattern with `/` matches the whole relative path (`logs/*.log`,
//!   `**/thumbnails`); a leading `/` is allowed and means the same;
//! - a trailing `/` matches directories only (`cache/`);
//! - `*` never crosses `/`; `**` does.

use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

#[derive(Debug, Clone)]
pub struct Excludes {
    patterns: Vec<String>,
    by_name: GlobSet,
    by_name_dirs: GlobSet,
    by_path: GlobSet,
    by_path_dirs: GlobSet,
}

impl Excludes {
    /// Compile `patterns`; the error names the bad pattern and the cause.
    pub fn new(patterns: &[String]) -> Result<Excludes, String> {
        let mut sets: [GlobSetBuilder; 4] = std::array::from_fn(|_| GlobSetBuilder::new());
        for p in patterns {
            let dir_only = p.ends_with('/');
            let body = p.trim_end_matches('/');
            let anchored = body.contains('/');
            let body = body.trim_start_matches('/');
            if body.is_empty() {
                return Err(format!("exclude pattern {p:?} matches nothing"));
            }
            let glob = GlobBuilder::new(body)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| format!("exclude pattern {p:?}: {}", e.kind()))?;
            let which = usize::from(anchored) * 2 + usize::from(dir_only);
            sets[which].add(glob);
        }
        let [a, b, c, d] = sets;
        let build = |s: GlobSetBuilder| s.build().map_err(|e| e.to_string());
        Ok(Excludes {
            patterns: patterns.to_vec(),
            by_name: build(a)?,
            by_name_dirs: build(b)?,
            by_path: build(c)?,
            by_path_dirs: build(d)?,
        })
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `rel` (relative to the source root) is excluded.
    pub fn excludes(&self, rel: &Path, is_dir: bool) -> bool {
        let Some(name) = rel.file_name() else {
            return false;
        };
        let name = Path::new(name);
        self.by_name.is_match(name)
            || self.by_path.is_match(rel)
            || (is_dir && (self.by_name_dirs.is_match(name) || self.by_path_dirs.is_match(rel)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(p: &[&str]) -> Excludes {
        Excludes::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn patterns_match_as_documented() {
        let e = ex(&["*.tmp", "cache/", "logs/*.log", "**/thumbs", "/top.txt"]);
        let t = |p: &str, d: bool| e.excludes(Path::new(p), d);
        assert!(t("a.tmp", false));
        assert!(t("deep/er/a.tmp", false));
        assert!(!t("a.tmpx", false));
        assert!(t("cache", true));
        assert!(t("x/cache", true));
        assert!(!t("cache", false), "cache/ matches directories only");
        assert!(t("logs/app.log", false));
        assert!(!t("logs/old/app.log", false), "* does not cross /");
        assert!(!t("x/logs/app.log", false), "a pattern with / is anchored");
        assert!(t("thumbs", true));
        assert!(t("a/b/thumbs", true));
        assert!(t("top.txt", false));
        assert!(!t("sub/top.txt", false));
    }

    #[test]
    fn bad_patterns_are_named() {
        let err = Excludes::new(&["a[".to_string()]).unwrap_err();
        assert!(err.contains("\"a[\""), "{err}");
        assert!(Excludes::new(&["/".to_string()]).is_err());
    }
}
