//! `artifacts:reports:dotenv`: `KEY=value` files whose variables the jobs
//! that download the job's artifacts get.
//!
//! GitLab's rules, as documented, and berth's choices where GitLab refuses
//! the whole file: one `KEY=value` per line; the name is letters, digits
//! and `_`; the value is taken as written (not expanded, quotes kept,
//! whitespace around the name and the value trimmed); no multiline values.
//! A file is at most [`MAX_DOTENV_BYTES`] and a job passes at most
//! [`MAX_DOTENV_VARIABLES`] (GitLab's defaults). Where GitLab rejects the
//! whole report for one bad line, berth drops that line only, and says so
//! (which file, which line, why) in a notice shown with the job: nothing is
//! dropped silently. Empty lines are skipped; `#` comments (which GitLab
//! refuses) are skipped with a notice.

use std::collections::BTreeMap;

use crate::diag::cut_to as cut;

/// The largest dotenv file read (GitLab's default limit, 5 KiB).
pub const MAX_DOTENV_BYTES: usize = 5 * 1024;

/// The most variables one job passes on (GitLab's default, 20).
pub const MAX_DOTENV_VARIABLES: usize = 20;

/// Parses dotenv file `file` (named in notices) into `vars` (a later
/// definition of a name replaces an earlier one); returns the notices.
pub fn parse_dotenv(file: &str, bytes: &[u8], vars: &mut BTreeMap<String, String>) -> Vec<String> {
    let mut notices = Vec::new();
    if bytes.len() > MAX_DOTENV_BYTES {
        notices.push(format!(
            "dotenv report {file}: {} bytes, over the limit of {MAX_DOTENV_BYTES}; none of its variables is passed on",
            bytes.len()
        ));
        return notices;
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        notices.push(format!(
            "dotenv report {file}: not UTF-8 text; none of its variables is passed on"
        ));
        return notices;
    };
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let bad = |why: &str| {
            format!(
                "dotenv report {file} line {n}: {why}: {:?}; the line is skipped",
                cut(line, 60)
            )
        };
        if trimmed.starts_with('#') {
            notices.push(bad("comments are not allowed (GitLab refuses them)"));
            continue;
        }
        let Some((name, value)) = trimmed.split_once('=') else {
            notices.push(bad("not KEY=value"));
            continue;
        };
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            notices.push(bad(
                "the name must be letters, digits and `_` (variable names)",
            ));
            continue;
        }
        if !vars.contains_key(name) && vars.len() >= MAX_DOTENV_VARIABLES {
            notices.push(bad(&format!(
                "more than {MAX_DOTENV_VARIABLES} variables (GitLab's limit)"
            )));
            continue;
        }
        vars.insert(name.to_string(), value.trim().to_string());
    }
    notices
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (BTreeMap<String, String>, Vec<String>) {
        let mut vars = BTreeMap::new();
        let notices = parse_dotenv("build.env", text.as_bytes(), &mut vars);
        (vars, notices)
    }

    #[test]
    fn key_value_lines_taken_as_written() {
        let (vars, notices) =
            parse("VERSION=1.2.3\n\n  URL = http://x/?a=b \nQ=\"quoted $HOME\"\nEMPTY=\n");
        assert!(notices.is_empty(), "{notices:?}");
        assert_eq!(vars["VERSION"], "1.2.3");
        // Split at the first `=`; trimmed.
        assert_eq!(vars["URL"], "http://x/?a=b");
        // Not expanded, quotes kept.
        assert_eq!(vars["Q"], "\"quoted $HOME\"");
        assert_eq!(vars["EMPTY"], "");
    }

    #[test]
    fn bad_lines_are_named_and_dropped() {
        let (vars, notices) = parse("GOOD=1\n# comment\nno equals\nBAD-NAME=2\n=3\nLAST=4\n");
        assert_eq!(vars.len(), 2, "{vars:?}");
        assert_eq!(vars["LAST"], "4");
        assert_eq!(notices.len(), 4, "{notices:?}");
        assert!(notices[0].contains("line 2") && notices[0].contains("comments"));
        assert!(notices[1].contains("line 3") && notices[1].contains("not KEY=value"));
        assert!(notices[2].contains("line 4") && notices[2].contains("BAD-NAME"));
        assert!(notices[3].contains("line 5"));
    }

    #[test]
    fn limits_on_size_count_and_encoding() {
        let big = "A=".to_string() + &"x".repeat(MAX_DOTENV_BYTES);
        let (vars, notices) = parse(&big);
        assert!(vars.is_empty());
        assert!(notices[0].contains("over the limit"), "{notices:?}");

        let many: String = (0..MAX_DOTENV_VARIABLES + 2)
            .map(|i| format!("V{i}={i}\n"))
            .collect();
        let (vars, notices) = parse(&many);
        assert_eq!(vars.len(), MAX_DOTENV_VARIABLES);
        assert_eq!(notices.len(), 2, "{notices:?}");
        assert!(notices[0].contains(&format!("V{MAX_DOTENV_VARIABLES}")));

        let mut vars = BTreeMap::new();
        let notices = parse_dotenv("b.env", b"A=\xff\xfe", &mut vars);
        assert!(vars.is_empty() && notices[0].contains("not UTF-8"));
    }

    #[test]
    fn a_later_file_replaces_a_name() {
        let mut vars = BTreeMap::new();
        parse_dotenv("a.env", b"V=1\nW=1", &mut vars);
        parse_dotenv("b.env", b"V=2", &mut vars);
        assert_eq!(vars["V"], "2");
        assert_eq!(vars["W"], "1");
    }
}
