//! What a viewer gets of a job's stored log when the log is longer than
//! the runner's `max_log_bytes`.
//!
//! The runner always stores the whole log (masked as it arrives, see
//! [`super::mask`]). Viewers (the API's log endpoint, `berth ci logs`,
//! the failed jobs' logs `berth ci run` prints) get its first
//! `max_log_bytes` bytes and then one line that says where it was cut and
//! where the whole log is, e.g.
//!
//! ```text
//! [berth] log cut at 4194304 bytes; the full log (9137024 bytes) is at GET /ci/v1/pipelines/7/jobs/build/log?full=true
//! ```
//!
//! The cut is made in the stored, already masked bytes, so it can never
//! show part of a secret: a secret that straddles the limit was replaced by
//! `[MASKED]` before the log was stored.
//!
//! Readers page through a log by offset. Offsets count what the viewer was
//! given: the first `limit` bytes, then the marker (with a newline before
//! it when the cut is in the middle of a line). A read from the limit gets
//! the marker alone; a read from past it gets nothing, so a follower shows
//! the marker once.

use std::io::{self, Read as _, SeekFrom};
use std::path::Path;

/// The default `max_log_bytes`: 4 MiB, as GitLab's runner's `output_limit`.
pub const DEFAULT_MAX_LOG_BYTES: u64 = 4 * 1024 * 1024;

/// A part of a stored log, as a viewer reading from some offset sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogPart {
    /// The log's bytes from the offset up to its end or the limit.
    pub data: Vec<u8>,
    /// The size of the whole stored log.
    pub total: u64,
    /// The limit the log was cut at, when it is longer and the marker
    /// comes after `data`.
    pub cut_at: Option<u64>,
    /// The last byte before the cut is not a newline, so the marker needs
    /// one before it.
    pub newline_before_marker: bool,
}

impl LogPart {
    /// The bytes to show: `data`, then, if the log was cut, the line
    /// `marker(limit, total)` makes (see [`marker_line`]).
    pub fn into_bytes(self, marker: impl FnOnce(u64, u64) -> String) -> Vec<u8> {
        let mut out = self.data;
        if let Some(limit) = self.cut_at {
            if self.newline_before_marker {
                out.push(b'\n');
            }
            out.extend_from_slice(marker(limit, self.total).as_bytes());
        }
        out
    }
}

/// The marker line (ending with a newline): where the log was cut, how
/// long the whole log is (`so far` while the job runs) and, in `where_`,
/// where it is (e.g. `is at GET /ci/v1/...?full=true`).
pub fn marker_line(limit: u64, total: u64, finished: bool, where_: &str) -> String {
    format!(
        "[berth] log cut at {limit} bytes; the full log ({total} bytes{}) {where_}\n",
        if finished { "" } else { " so far" }
    )
}

/// Reads what a viewer gets of the log at `path` from `offset`, when at
/// most `limit` bytes of the log are shown. A missing file is an empty log.
/// Reads only the bytes it returns (and one before the cut), never the
/// whole file.
pub fn read_part(path: &Path, offset: u64, limit: u64) -> io::Result<LogPart> {
    read_part_at_most(path, offset, limit, u64::MAX)
}

/// [`read_part`], but at most `max` bytes of the log from `offset` (for
/// readers that page through a log in chunks, such as a stream). The part
/// says the log was cut only when it reaches the cut; the next read, from
/// the end of this part, goes on.
pub fn read_part_at_most(path: &Path, offset: u64, limit: u64, max: u64) -> io::Result<LogPart> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(LogPart::default()),
        Err(e) => return Err(e),
    };
    let total = file.metadata()?.len();
    read_part_of(&mut file, total, offset, limit, max)
}

/// [`read_part_at_most`] of an open log that was `total` bytes long when
/// its size was read. The log may be shorter by the time its bytes are
/// read: a resumed collection cuts it back to its stored position (see
/// [`super::collect`]) before it grows again. Then the part is what is
/// there (a short read, never an error), it does not reach the cut, and a
/// follower reading again from its end gets the rest as the log grows
/// back.
fn read_part_of(
    file: &mut (impl io::Read + io::Seek),
    total: u64,
    offset: u64,
    limit: u64,
    max: u64,
) -> io::Result<LogPart> {
    let cut = total > limit;
    if cut && offset > limit {
        // The marker was shown already.
        return Ok(LogPart {
            total,
            ..LogPart::default()
        });
    }
    let end = total.min(limit);
    let from = offset.min(end);
    let stop = end.min(from.saturating_add(max));
    let reaches_cut = cut && stop == end;
    // One byte more before the range, when there is one, to see whether the
    // cut is at the end of a line.
    let start = if reaches_cut {
        from.min(end.saturating_sub(1))
    } else {
        from
    };
    file.seek(SeekFrom::Start(start))?;
    let mut data = Vec::with_capacity(
        usize::try_from(stop - start)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "log part too large"))?,
    );
    // At most the bytes asked for; fewer when the log was cut back since
    // its size was read.
    io::Read::take(&mut *file, stop - start).read_to_end(&mut data)?;
    let short = (data.len() as u64) < stop - start;
    let reaches_cut = reaches_cut && !short;
    let newline_before_marker = reaches_cut && data.last().is_some_and(|b| *b != b'\n');
    if start < from && !data.is_empty() {
        data.remove(0);
    }
    Ok(LogPart {
        data,
        total,
        cut_at: reaches_cut.then_some(limit),
        newline_before_marker,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::mask::Masker;

    fn log_file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        f
    }

    fn shown(path: &Path, offset: u64, limit: u64) -> String {
        let part = read_part(path, offset, limit).unwrap();
        String::from_utf8(part.into_bytes(|l, t| marker_line(l, t, true, "is at HERE"))).unwrap()
    }

    #[test]
    fn a_log_cut_back_while_it_is_read_gives_a_short_part_not_an_error() {
        // The size was read as 22 bytes; by the time the bytes are read a
        // resumed collection has cut the log back to 8.
        let mut file = std::io::Cursor::new(b"0123456\n".to_vec());
        let part = read_part_of(&mut file, 22, 0, 100, u64::MAX).unwrap();
        assert_eq!(part.data, b"0123456\n");
        assert_eq!(part.cut_at, None);
        // Past the new end: nothing, and the follower reads again later.
        let part = read_part_of(&mut file, 22, 12, 100, u64::MAX).unwrap();
        assert!(part.data.is_empty());
        // A cut that is no longer reached is not marked.
        let part = read_part_of(&mut file, 22, 4, 15, u64::MAX).unwrap();
        assert_eq!(part.data, b"456\n");
        assert_eq!(part.cut_at, None, "the bytes before the cut are not there");
        assert!(!part.newline_before_marker);
    }

    #[test]
    fn a_short_log_is_shown_whole_from_any_offset() {
        let f = log_file(b"line one\nline two\n");
        assert_eq!(shown(f.path(), 0, 100), "line one\nline two\n");
        assert_eq!(shown(f.path(), 9, 100), "line two\n");
        assert_eq!(shown(f.path(), 500, 100), "");
        assert_eq!(
            shown(f.path(), 0, 18),
            "line one\nline two\n",
            "exactly the limit"
        );
        let missing = f.path().with_extension("missing");
        assert_eq!(read_part(&missing, 0, 10).unwrap(), LogPart::default());
    }

    #[test]
    fn a_long_log_stops_at_the_limit_with_one_marker_line() {
        let f = log_file(b"0123456789\nabcdefghij\n");
        let marker = "[berth] log cut at 15 bytes; the full log (22 bytes) is at HERE\n";
        assert_eq!(
            shown(f.path(), 0, 15),
            format!("0123456789\nabcd\n{marker}")
        );
        assert_eq!(shown(f.path(), 12, 15), format!("bcd\n{marker}"));
        // Paging: from the limit the marker alone, past it nothing.
        assert_eq!(shown(f.path(), 15, 15), format!("\n{marker}"));
        assert_eq!(shown(f.path(), 16, 15), "");
        // A cut at the end of a line needs no extra newline.
        let at_line_end = shown(f.path(), 0, 11);
        assert_eq!(
            at_line_end,
            "0123456789\n[berth] log cut at 11 bytes; the full log (22 bytes) is at HERE\n"
        );
        assert_eq!(
            shown(f.path(), 11, 11),
            "[berth] log cut at 11 bytes; the full log (22 bytes) is at HERE\n"
        );
    }

    #[test]
    fn reading_in_small_parts_gives_the_same_bytes_as_one_read() {
        let f = log_file(b"0123456789\nabcdefghij\n");
        for limit in [5, 11, 15, 22, 100] {
            let whole = shown(f.path(), 0, limit);
            for max in [1, 3, 7] {
                let mut paged = String::new();
                loop {
                    let part = read_part_at_most(f.path(), paged.len() as u64, limit, max).unwrap();
                    let bytes = part.into_bytes(|l, t| marker_line(l, t, true, "is at HERE"));
                    if bytes.is_empty() {
                        break;
                    }
                    assert!(bytes.len() as u64 <= max || bytes.ends_with(b"HERE\n"));
                    paged.push_str(std::str::from_utf8(&bytes).unwrap());
                }
                assert_eq!(paged, whole, "limit {limit}, max {max}");
            }
        }
    }

    #[test]
    fn the_marker_says_so_far_while_the_job_runs() {
        assert_eq!(
            marker_line(4, 10, false, "is at GET /x?full=true"),
            "[berth] log cut at 4 bytes; the full log (10 bytes so far) is at GET /x?full=true\n"
        );
    }

    /// The log is cut after masking: a secret straddling the limit shows as
    /// part of `[MASKED]`, never as its own first bytes.
    #[test]
    fn a_secret_straddling_the_limit_is_not_revealed() {
        let secret = "zq-very-secret-value";
        let mut masker = Masker::new([secret]);
        let mut stored = Vec::new();
        // The secret arrives split across chunks, around byte 10.
        for chunk in ["aaaaaaaazq-ve", "ry-secr", "et-value and more\n"] {
            stored.extend(masker.push(chunk.as_bytes()));
        }
        stored.extend(masker.finish());
        let f = log_file(&stored);
        let view = shown(f.path(), 0, 12);
        assert!(
            view.starts_with("aaaaaaaa[MAS\n[berth] log cut at 12"),
            "{view}"
        );
        assert!(!view.contains("zq"), "{view}");
    }
}
