//! Timelines in the archive: which lines of WAL a recovery from one base backup can follow
//! (the backup's own timeline, and each later one whose `.history` file descends from it),
//! and which of them is still being archived.

use chrono::{DateTime, FixedOffset};

use super::{BaseBackup, Lsn, Segment};

/// One line of descent recovery can follow from a base backup: its timelines, oldest
/// first, each with the first segment number it owns (where the one before branched off).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line(Vec<(u32, u64)>);

impl Line {
    /// The base backup's own timeline, followed to its end.
    pub fn own(base: &BaseBackup) -> Line {
        Line(vec![(base.timeline, 0)])
    }

    /// The line ending in timeline `newest`, whose `.history` file is `text` (each line:
    /// a parent timeline, the LSN where its child branched off, a reason). `None` when
    /// recovery from `base` cannot follow it: the backup's timeline is not among its
    /// ancestors, or the line branched off it before the backup started.
    pub fn from_history(text: &str, newest: u32, base: &BaseBackup) -> Option<Line> {
        let entries: Vec<(u32, Lsn)> = text
            .lines()
            .filter_map(|line| {
                let mut f = line.split_whitespace();
                let tli = f.next()?.parse::<u32>().ok()?;
                Some((tli, Lsn::parse(f.next()?)?))
            })
            .collect();
        // Ancestors come oldest first with growing numbers; anything else is no history
        // PostgreSQL wrote.
        let ordered = entries
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
        if !ordered || entries.last().is_some_and(|(t, _)| *t >= newest) {
            return None;
        }
        let (_, branch) = entries.iter().find(|(t, _)| *t == base.timeline)?;
        if Lsn::parse(&base.start_lsn).is_none_or(|start| *branch < start) {
            return None;
        }
        let mut out = Vec::new();
        let mut begin = 0;
        for (tli, switch) in &entries {
            if *tli >= base.timeline {
                out.push((*tli, begin));
            }
            begin = switch.0 / base.segment_size;
        }
        out.push((newest, begin));
        Some(Line(out))
    }

    /// The timeline recovery ends on.
    pub fn timeline(&self) -> u32 {
        self.0.last().map_or(0, |(t, _)| *t)
    }

    /// The segment `no` of this line: on the newest timeline that owns it.
    pub fn segment(&self, no: u64) -> Segment {
        let tli = self
            .0
            .iter()
            .rev()
            .find(|(_, begin)| *begin <= no)
            .map_or(self.0[0].0, |(t, _)| *t);
        Segment { tli, no }
    }
}

/// A parent timeline archived past the point where a child branched off it, after the
/// child began (its `.history` file archived at `child_began`): two servers archive under
/// one cluster name (a restored copy started with archiving on, or an old primary still
/// running after a failover). A parent archived past the branch only before the child
/// began is an abandoned line (a recovery to an earlier instant that carried on), no
/// divergence. `segments`: every archived segment with its archive time.
pub fn divergence(
    child: u32,
    history: &str,
    child_began: DateTime<FixedOffset>,
    segments: &[(Segment, DateTime<FixedOffset>)],
    segment_size: u64,
) -> Option<String> {
    let (parent, branch) = history.lines().rev().find_map(|line| {
        let mut f = line.split_whitespace();
        Some((f.next()?.parse::<u32>().ok()?, Lsn::parse(f.next()?)?))
    })?;
    let branch_no = branch.0 / segment_size;
    let (last, when) = segments
        .iter()
        // The segment holding the branch point counts: archived whole (not as the child's
        // `.partial`), the parent wrote past the branch in it.
        .filter(|(s, t)| s.tli == parent && s.no >= branch_no && *t > child_began)
        .max_by_key(|(s, _)| s.no)?;
    Some(format!(
        "timeline {parent} goes on after timeline {child} branched off it at {}: {} was \
         archived at {}, after timeline {child} began at {}; two servers archive under this \
         cluster's name",
        lsn_text(branch),
        last.name(segment_size),
        when.to_rfc3339(),
        child_began.to_rfc3339()
    ))
}

fn lsn_text(l: Lsn) -> String {
    format!("{:X}/{:X}", l.0 >> 32, l.0 & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(tli: u32, start: &str) -> BaseBackup {
        BaseBackup {
            cluster: "main".into(),
            data_directory: "/d".into(),
            server_version: 150000,
            timeline: tli,
            segment_size: 16 << 20,
            start_lsn: start.into(),
            stop_lsn: start.into(),
            start_wal: String::new(),
            stop_wal: String::new(),
            stop_time: String::new(),
            backup_label: String::new(),
            tablespace_map: None,
        }
    }

    #[test]
    fn lines_follow_histories_that_descend_from_the_backup() {
        let b = base(1, "0/2000028");
        let h3 = "1\t0/5000000\tno recovery target specified\n2\t0/7000000\tafter\n";
        let line = Line::from_history(h3, 3, &b).unwrap();
        assert_eq!(line, Line(vec![(1, 0), (2, 5), (3, 7)]));
        assert_eq!(line.timeline(), 3);
        assert_eq!(line.segment(4), Segment { tli: 1, no: 4 });
        assert_eq!(line.segment(5), Segment { tli: 2, no: 5 });
        assert_eq!(line.segment(9), Segment { tli: 3, no: 9 });
        // A backup on timeline 2 does not need timeline 1's segments.
        let b2 = base(2, "0/6000028");
        assert_eq!(
            Line::from_history(h3, 3, &b2),
            Some(Line(vec![(2, 5), (3, 7)]))
        );
        // A line that branched off before the backup started cannot be followed.
        assert_eq!(Line::from_history(h3, 3, &base(1, "0/6000000")), None);
        // Nor one that never passes through the backup's timeline.
        assert_eq!(Line::from_history(h3, 3, &base(4, "0/1")), None);
        // Nor a history PostgreSQL would not have written.
        assert_eq!(
            Line::from_history("2\t0/5000000\tx\n1\t0/7000000\t\n", 3, &b),
            None
        );
        assert_eq!(Line::from_history("1\t0/5000000\tx\n", 1, &b), None);
        assert_eq!(Line::own(&b).segment(100), Segment { tli: 1, no: 100 });
    }

    #[test]
    fn a_parent_archived_past_its_branch_after_the_child_began_is_divergence() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap();
        let size = 16 << 20;
        let h2 = "1\t0/5000A00\treason\n";
        let began = t("2026-12-05T10:00:00Z");
        let seg = |tli, no, at: &str| (Segment { tli, no }, t(at));
        // Timeline 1 archived its segment 5 (holding the branch point), and later ones
        // before timeline 2 began (a recovery to an earlier instant that carried on).
        let mut segs = vec![
            seg(1, 5, "2026-12-05T09:59:30Z"),
            seg(1, 6, "2026-12-05T09:59:00Z"),
            seg(2, 9, "2026-12-05T10:05:00Z"),
        ];
        assert_eq!(divergence(2, h2, began, &segs, size), None);
        // Segment 5 archived whole after timeline 2 began: the parent wrote past the
        // branch point (the first diverged segment, hostile pass).
        segs[0].1 = t("2026-12-05T10:00:01Z");
        let d = divergence(2, h2, began, &segs, size).unwrap();
        assert!(d.contains("000000010000000000000005 was archived"), "{d}");
        segs[0].1 = t("2026-12-05T09:59:30Z");
        // Segment 4, before the branch, is no sign whenever it is archived.
        segs.push(seg(1, 4, "2026-12-05T11:00:00Z"));
        assert_eq!(divergence(2, h2, began, &segs, size), None);
        segs.push(seg(1, 0x40, "2026-12-05T10:06:00Z"));
        segs.push(seg(1, 0x3F, "2026-12-05T10:05:00Z"));
        let d = divergence(2, h2, began, &segs, size).unwrap();
        assert!(
            d.contains("timeline 1 goes on after timeline 2 branched off it at 0/5000A00")
                && d.contains("000000010000000000000040 was archived at 2026-12-05T10:06:00"),
            "{d}"
        );
        assert_eq!(divergence(2, "garbage", began, &segs, size), None);
    }
}
