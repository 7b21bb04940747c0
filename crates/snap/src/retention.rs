//! Retention policies: which snapshots a `gc` keeps.
//!
//! A snapshot is kept if any rule keeps it, or if it is pinned. Rules apply
//! per source path, to the safety snapshots restore takes (tagged
//! `pre-restore`) apart from the others. The calendar rules keep the newest snapshot of each of
//! the N most recent hours/days/ISO weeks/months/years that have one, in the
//! given time zone (the system's, from the CLI).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::snapshot::Snapshot;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    /// Keep snapshots this close to the newest of their source.
    pub keep_within: Option<SignedDuration>,
    pub keep_tags: Vec<String>,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

/// Parse `7d`, `2w`, `36h`, `1y6m`, `90m` (m = months when after y, else
/// minutes is ambiguous: snap reads `m` as months, `min` as minutes).
pub fn parse_duration(s: &str) -> Result<SignedDuration> {
    let bad = || {
        Error::usage(format!(
            "{s:?}: not a duration (examples: 7d, 2w, 36h, 6m, 1y)"
        ))
    };
    let mut total = SignedDuration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.chars().take_while(|c| c.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs: i64 = match unit {
            "s" => 1,
            "min" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            "m" => 30 * 86_400,
            "y" => 365 * 86_400,
            _ => return Err(bad()),
        };
        total = total
            .checked_add(SignedDuration::from_secs(
                n.checked_mul(secs).ok_or_else(bad)?,
            ))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

/// Maps a time to its calendar bucket (hour, day, week, month or year).
type BucketFn = fn(&jiff::ZonedDateTime) -> (i32, i32, i32, i32);

/// The ids of the snapshots `policy` keeps (pinned ones always).
pub fn kept(snapshots: &[Snapshot], policy: &Policy, tz: &TimeZone) -> HashSet<SnapshotId> {
    let mut keep = HashSet::new();
    // The rules count a source's snapshots as `latest` and `~N` do:
    // safety snapshots (taken by a restore) are a line of their own, so
    // that `--keep-last 1` right after a restore still keeps the newest
    // snapshot the user took, and the newest safety snapshot beside it.
    let mut by_source: BTreeMap<(PathBuf, bool), Vec<&Snapshot>> = BTreeMap::new();
    for s in snapshots {
        by_source
            .entry((s.source.clone(), crate::spec::is_safety(s)))
            .or_default()
            .push(s);
        if s.pinned || s.tags.iter().any(|t| policy.keep_tags.contains(t)) {
            keep.insert(s.id);
        }
    }
    for group in by_source.values_mut() {
        // Newest first.
        group.sort_by_key(|s| std::cmp::Reverse(s.time_ns));
        if let Some(n) = policy.keep_last {
            keep.extend(group.iter().take(n as usize).map(|s| s.id));
        }
        if let Some(d) = policy.keep_within {
            let newest = group[0].time_ns as i128;
            let limit = newest - d.as_nanos();
            keep.extend(
                group
                    .iter()
                    .filter(|s| s.time_ns as i128 >= limit)
                    .map(|s| s.id),
            );
        }
        let rules: [(Option<u32>, BucketFn); 5] = [
            (policy.keep_hourly, |z| {
                (
                    z.year() as i32,
                    z.month() as i32,
                    z.day() as i32,
                    z.hour() as i32,
                )
            }),
            (policy.keep_daily, |z| {
                (z.year() as i32, z.month() as i32, z.day() as i32, 0)
            }),
            (policy.keep_weekly, |z| {
                let w = z.date().iso_week_date();
                (w.year() as i32, w.week() as i32, 0, 0)
            }),
            (policy.keep_monthly, |z| {
                (z.year() as i32, z.month() as i32, 0, 0)
            }),
            (policy.keep_yearly, |z| (z.year() as i32, 0, 0, 0)),
        ];
        for (n, bucket_of) in rules {
            let Some(n) = n else { continue };
            let mut last_bucket = None;
            let mut taken = 0;
            for s in group.iter() {
                if taken >= n {
                    break;
                }
                let Ok(t) = Timestamp::from_nanosecond(s.time_ns as i128) else {
                    continue;
                };
                let b = bucket_of(&t.to_zoned_datetime(tz.clone()));
                if last_bucket != Some(b) {
                    keep.insert(s.id);
                    last_bucket = Some(b);
                    taken += 1;
                }
            }
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::TreeId;
    use crate::snapshot::{RootMeta, SnapshotStats};

    fn snap(i: u8, time: &str, tags: &[&str], pinned: bool) -> Snapshot {
        let ts: Timestamp = time.parse().unwrap();
        Snapshot {
            id: SnapshotId([i; 32]),
            time_ns: ts.as_nanosecond() as i64,
            host: "h".into(),
            source: "/data".into(),
            root: TreeId([0; 32]),
            parent: None,
            tags: tags.iter().map(|s| s.to_string()).collect(),
            labels: Default::default(),
            complete: true,
            pinned,
            unreadable: vec![],
            stats: SnapshotStats::default(),
            root_meta: RootMeta::default(),
            sources: vec![],
        }
    }

    fn ids(set: &HashSet<SnapshotId>) -> Vec<u8> {
        let mut v: Vec<u8> = set.iter().map(|s| s.0[0]).collect();
        v.sort();
        v
    }

    /// Times around calendar edges: a week boundary (Sun 2024-03-31 ->
    /// Mon 2024-04-01, also a month boundary), a year boundary, one day
    /// with three snapshots.
    fn history() -> Vec<Snapshot> {
        vec![
            snap(1, "2023-12-31T23:59:00Z", &[], false),
            snap(2, "2024-01-01T00:01:00Z", &[], false),
            snap(3, "2024-03-30T10:00:00Z", &[], false), // Saturday
            snap(4, "2024-03-31T22:00:00Z", &["release"], false), // Sunday
            snap(5, "2024-04-01T08:00:00Z", &[], false), // Monday, new week and month
            snap(6, "2024-04-01T09:30:00Z", &[], false),
            snap(7, "2024-04-01T09:45:00Z", &[], true),
            snap(8, "2024-04-02T12:00:00Z", &[], false),
        ]
    }

    #[test]
    fn safety_snapshots_are_counted_apart() {
        let mut h = history();
        h.push(snap(
            9,
            "2024-04-03T12:00:00Z",
            &[crate::spec::SAFETY_TAG],
            false,
        ));
        h.push(snap(
            10,
            "2024-04-03T12:05:00Z",
            &[crate::spec::SAFETY_TAG],
            false,
        ));
        let one = Policy {
            keep_last: Some(1),
            ..Default::default()
        };
        // The newest snapshot taken (8), the newest safety one (10), the pinned one (7).
        assert_eq!(ids(&kept(&h, &one, &TimeZone::UTC)), vec![7, 8, 10]);
        let two = Policy {
            keep_last: Some(2),
            ..Default::default()
        };
        assert_eq!(ids(&kept(&h, &two, &TimeZone::UTC)), vec![7, 8, 9, 10]);
    }

    #[test]
    fn retention_table() {
        let utc = TimeZone::UTC;
        let cases: Vec<(Policy, Vec<u8>)> = vec![
            (Policy::default(), vec![7]),
            (
                Policy {
                    keep_last: Some(2),
                    ..Default::default()
                },
                vec![7, 8],
            ),
            (
                Policy {
                    keep_last: Some(3),
                    ..Default::default()
                },
                vec![6, 7, 8],
            ),
            (
                Policy {
                    keep_hourly: Some(3),
                    ..Default::default()
                },
                vec![5, 7, 8],
            ),
            (
                Policy {
                    keep_daily: Some(3),
                    ..Default::default()
                },
                vec![4, 7, 8],
            ),
            (
                Policy {
                    keep_daily: Some(10),
                    ..Default::default()
                },
                vec![1, 2, 3, 4, 7, 8],
            ),
            // ISO weeks: Mon 04-01 starts a new week; 03-31 (Sun) ends the old one.
            (
                Policy {
                    keep_weekly: Some(2),
                    ..Default::default()
                },
                vec![4, 7, 8],
            ),
            (
                Policy {
                    keep_monthly: Some(2),
                    ..Default::default()
                },
                vec![4, 7, 8],
            ),
            (
                Policy {
                    keep_monthly: Some(4),
                    ..Default::default()
                },
                vec![1, 2, 4, 7, 8],
            ),
            (
                Policy {
                    keep_yearly: Some(5),
                    ..Default::default()
                },
                vec![1, 7, 8],
            ),
            (
                Policy {
                    keep_within: Some(parse_duration("36h").unwrap()),
                    ..Default::default()
                },
                vec![5, 6, 7, 8],
            ),
            (
                Policy {
                    keep_tags: vec!["release".into()],
                    ..Default::default()
                },
                vec![4, 7],
            ),
            (
                Policy {
                    keep_last: Some(1),
                    keep_monthly: Some(2),
                    ..Default::default()
                },
                vec![4, 7, 8],
            ),
        ];
        for (policy, want) in cases {
            assert_eq!(ids(&kept(&history(), &policy, &utc)), want, "{policy:?}");
        }
    }

    #[test]
    fn the_time_zone_moves_day_edges() {
        // 2023-12-31T23:59Z and 2024-01-01T00:01Z are one day apart in UTC but
        // the same day (Jan 1) in UTC+2.
        let tz = TimeZone::fixed(jiff::tz::offset(2));
        let h = history()[..2].to_vec();
        let p = Policy {
            keep_daily: Some(5),
            ..Default::default()
        };
        assert_eq!(ids(&kept(&h, &p, &tz)), vec![2]);
        assert_eq!(ids(&kept(&h, &p, &TimeZone::UTC)), vec![1, 2]);
    }

    #[test]
    fn policies_apply_per_source() {
        let mut a = snap(1, "2024-01-01T00:00:00Z", &[], false);
        a.source = "/other".into();
        let b = snap(2, "2024-01-02T00:00:00Z", &[], false);
        let c = snap(3, "2024-01-03T00:00:00Z", &[], false);
        let p = Policy {
            keep_last: Some(1),
            ..Default::default()
        };
        assert_eq!(ids(&kept(&[a, b, c], &p, &TimeZone::UTC)), vec![1, 3]);
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("7d").unwrap(),
            SignedDuration::from_hours(168)
        );
        assert_eq!(
            parse_duration("2w").unwrap(),
            SignedDuration::from_hours(336)
        );
        assert_eq!(
            parse_duration("1d12h").unwrap(),
            SignedDuration::from_hours(36)
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("7").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("3fortnights").is_err());
    }
}
