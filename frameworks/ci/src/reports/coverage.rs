//! `coverage:`: the percentage a job prints in its log, found with the
//! job's regular expression, written as GitLab writes it (`/…/`).
//!
//! As GitLab does: each line of the log is searched; the last line that
//! matches counts; in its match, the first capture group that took part
//! (the whole match if the expression has none) holds the number, and the
//! number is the first `\d+(\.\d+)?` in it. A pipeline's coverage is the
//! average of its jobs' that have one.

use regex::{Regex, RegexBuilder};

use crate::diag::cut_to as cut;

/// The compiled regex of a `coverage:` value.
#[derive(Debug, Clone)]
pub struct CoverageRegex(Regex);

/// The largest compiled expression (bytes), against hostile patterns.
const MAX_REGEX_SIZE: usize = 1 << 20;

/// Compiles a `coverage:` value: `/regex/`, with an optional `i` flag
/// after the closing slash.
///
/// # Errors
/// A readable reason quoting the value (cut short): not between slashes,
/// or not a valid regular expression (the message says where).
pub fn parse_coverage_regex(value: &str) -> Result<CoverageRegex, String> {
    let shown = cut(value, 80);
    let body = value.strip_prefix('/').and_then(|rest| {
        let end = rest.rfind('/')?;
        Some((&rest[..end], &rest[end + 1..]))
    });
    let Some((pattern, flags)) = body else {
        return Err(format!(
            "`coverage` must be a regular expression between slashes, like /TOTAL.*\\s+(\\d+%)$/; got {shown:?}"
        ));
    };
    if !flags.chars().all(|c| c == 'i') {
        return Err(format!(
            "`coverage` {shown:?}: unknown flags {:?} after the closing slash (only `i` is supported)",
            cut(flags, 20)
        ));
    }
    RegexBuilder::new(pattern)
        .case_insensitive(!flags.is_empty())
        .size_limit(MAX_REGEX_SIZE)
        .build()
        .map(CoverageRegex)
        .map_err(|e| {
            format!(
                "`coverage` {shown:?} is not a valid regular expression: {}",
                cut(&e.to_string(), 400)
            )
        })
}

/// The coverage percentage in `log` (see the [module docs](self)).
pub fn coverage_of(regex: &CoverageRegex, log: &str) -> Option<f64> {
    let mut found = None;
    for line in log.lines() {
        // The last match of the last matching line.
        let Some(caps) = regex.0.captures_iter(line).last() else {
            continue;
        };
        let text = caps
            .iter()
            .skip(1)
            .flatten()
            .next()
            .or_else(|| caps.get(0))
            .map(|m| m.as_str());
        if let Some(text) = text {
            found = first_number(text).or(found);
        }
    }
    found
}

/// The first `\d+(\.\d+)?` of `text`.
fn first_number(text: &str) -> Option<f64> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let rest = &text[start..];
    let int_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let mut end = int_end;
    if let Some(frac) = rest[int_end..].strip_prefix('.') {
        let digits = frac
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(frac.len());
        if digits > 0 {
            end = int_end + 1 + digits;
        }
    }
    rest[..end].parse().ok()
}

/// The average of the jobs' coverages, as GitLab computes a pipeline's;
/// None when no job has one.
pub fn pipeline_coverage(jobs: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (sum, n) = jobs
        .into_iter()
        .fold((0.0, 0u32), |(s, n), c| (s + c, n + 1));
    (n > 0).then(|| sum / f64::from(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cov(regex: &str, log: &str) -> Option<f64> {
        coverage_of(&parse_coverage_regex(regex).expect("valid"), log)
    }

    #[test]
    fn the_last_matching_line_counts() {
        let log = "TOTAL 10 2 50%\nsomething\nTOTAL   120   20    83%\nbye\n";
        assert_eq!(cov(r"/TOTAL.*\s+(\d+%)$/", log), Some(83.0));
        assert_eq!(cov(r"/TOTAL.*\s+(\d+%)$/", "nothing here\n"), None);
    }

    #[test]
    fn group_or_whole_match_then_the_first_number() {
        // No group: the first number of the whole match.
        assert_eq!(
            cov(r"/Coverage: \d+\.\d+/", "Coverage: 71.25 (3 files)"),
            Some(71.25)
        );
        // The first group that took part.
        assert_eq!(
            cov(r"/lines: (\d+)% \((\d+)\)/", "lines: 64% (12)"),
            Some(64.0)
        );
        assert_eq!(cov(r"/(x)?cov (\d+)/", "cov 9"), Some(9.0));
        assert_eq!(cov(r"/total/i", "TOTAL"), None);
        assert_eq!(cov(r"/total \d+/i", "TOTAL 12"), Some(12.0));
        assert_eq!(first_number("v1.5.x"), Some(1.5));
        assert_eq!(first_number("7."), Some(7.0));
    }

    #[test]
    fn bad_expressions_are_refused_readably() {
        let e = parse_coverage_regex("TOTAL (\\d+%)").unwrap_err();
        assert!(e.contains("between slashes"), "{e}");
        let e = parse_coverage_regex("/TOTAL (\\d+%/").unwrap_err();
        assert!(e.contains("not a valid regular expression"), "{e}");
        let e = parse_coverage_regex("/a/gx").unwrap_err();
        assert!(e.contains("flags"), "{e}");
    }

    #[test]
    fn pipeline_coverage_is_the_average() {
        assert_eq!(pipeline_coverage([80.0, 90.0]), Some(85.0));
        assert_eq!(pipeline_coverage([]), None);
    }
}
