//! `artifacts:reports:junit`: JUnit XML files, summed into a
//! [`TestSummary`].
//!
//! Each `<testcase>` counts once: failed with a `<failure>`, errored with
//! an `<error>`, skipped with `<skipped>`, passed otherwise; the
//! `<testsuite>` totals are not trusted (tools disagree on them). Read
//! with a streaming parser: no recursion, no entity expansion, bounded by
//! [`MAX_JUNIT_BYTES`]; a broken file is an error with its position, never
//! a panic.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use super::{FailedTest, TestSummary};
use crate::diag::cut_to as cut;

/// The largest JUnit file read.
pub const MAX_JUNIT_BYTES: usize = 10 * 1024 * 1024;

/// How many failed tests a summary keeps (the counts stay exact).
pub const MAX_FAILED_KEPT: usize = 50;

/// How much of a failure's message is kept.
pub const MAX_MESSAGE_CHARS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Passed,
    Skipped,
    Failed,
    Errored,
}

/// The test case being read.
#[derive(Debug)]
struct Case {
    name: String,
    outcome: Outcome,
    message: String,
    /// Inside its `<failure>`/`<error>` without a `message` attribute: its
    /// text is the message.
    collecting: bool,
}

/// Parses one JUnit XML file.
///
/// # Errors
/// The file is too large, is not XML, or is not JUnit (no `<testsuites>`
/// or `<testsuite>` root): a readable reason with the byte position.
pub fn parse_junit(bytes: &[u8]) -> Result<TestSummary, String> {
    if bytes.len() > MAX_JUNIT_BYTES {
        return Err(format!(
            "{} bytes, over the limit of {MAX_JUNIT_BYTES}",
            bytes.len()
        ));
    }
    let mut reader = Reader::from_reader(bytes);
    reader.config_mut().check_end_names = true;
    let mut summary = TestSummary::default();
    let mut case: Option<Case> = None;
    let mut depth = 0usize;
    let mut root_seen = false;
    loop {
        let at = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| format!("not valid XML at byte {at}: {}", cut(&e.to_string(), 200)))?;
        match event {
            Event::Start(e) => {
                check_root(&e, depth, &mut root_seen)?;
                depth += 1;
                start(&e, &mut case, false)?;
            }
            Event::Empty(e) => {
                check_root(&e, depth, &mut root_seen)?;
                start(&e, &mut case, true)?;
                if e.local_name().as_ref() == b"testcase"
                    && let Some(c) = case.take()
                {
                    finish(&mut summary, c);
                }
            }
            Event::End(e) => {
                depth = depth.saturating_sub(1);
                match e.local_name().as_ref() {
                    b"testcase" => {
                        if let Some(c) = case.take() {
                            finish(&mut summary, c);
                        }
                    }
                    b"failure" | b"error" => {
                        if let Some(c) = case.as_mut() {
                            c.collecting = false;
                        }
                    }
                    _ => {}
                }
            }
            Event::Text(t) => {
                if let Some(c) = case.as_mut().filter(|c| c.collecting) {
                    let text = t.unescape().map_or_else(
                        |_| String::from_utf8_lossy(&t).into_owned(),
                        |s| s.into_owned(),
                    );
                    push_message(&mut c.message, &text);
                }
            }
            Event::CData(t) => {
                if let Some(c) = case.as_mut().filter(|c| c.collecting) {
                    push_message(&mut c.message, &String::from_utf8_lossy(&t));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !root_seen {
        return Err("not a JUnit report: no <testsuites> or <testsuite> element".into());
    }
    if depth > 0 || case.is_some() {
        return Err("the file ends inside an element (cut short?)".into());
    }
    Ok(summary)
}

fn check_root(e: &BytesStart<'_>, depth: usize, root_seen: &mut bool) -> Result<(), String> {
    if depth > 0 {
        return Ok(());
    }
    match e.local_name().as_ref() {
        b"testsuites" | b"testsuite" if !*root_seen => {
            *root_seen = true;
            Ok(())
        }
        other => Err(format!(
            "not a JUnit report: the root element is <{}>",
            cut(&String::from_utf8_lossy(other), 40)
        )),
    }
}

/// An element opens (or is empty, `empty`).
fn start(e: &BytesStart<'_>, case: &mut Option<Case>, empty: bool) -> Result<(), String> {
    match e.local_name().as_ref() {
        b"testcase" => {
            let name = attr(e, b"name")?.unwrap_or_default();
            let class = attr(e, b"classname")?.unwrap_or_default();
            let name = if class.is_empty() {
                name
            } else {
                format!("{class}.{name}")
            };
            *case = Some(Case {
                name: cut(&name, MAX_MESSAGE_CHARS),
                outcome: Outcome::Passed,
                message: String::new(),
                collecting: false,
            });
        }
        kind @ (b"failure" | b"error" | b"skipped") => {
            let Some(c) = case.as_mut() else {
                return Ok(());
            };
            let outcome = match kind {
                b"failure" => Outcome::Failed,
                b"error" => Outcome::Errored,
                _ => Outcome::Skipped,
            };
            // A failure outweighs a skip; the first failure's message
            // counts.
            if outcome == Outcome::Skipped && c.outcome != Outcome::Passed {
                return Ok(());
            }
            if matches!(c.outcome, Outcome::Failed | Outcome::Errored) {
                return Ok(());
            }
            c.outcome = outcome;
            if outcome != Outcome::Skipped {
                match attr(e, b"message")? {
                    Some(m) if !m.trim().is_empty() => push_message(&mut c.message, &m),
                    _ => c.collecting = !empty,
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn attr(e: &BytesStart<'_>, name: &[u8]) -> Result<Option<String>, String> {
    for a in e.attributes() {
        let a = a.map_err(|err| format!("a bad attribute: {}", cut(&err.to_string(), 200)))?;
        if a.key.local_name().as_ref() == name {
            let value = a.unescape_value().map_or_else(
                |_| String::from_utf8_lossy(&a.value).into_owned(),
                |v| v.into_owned(),
            );
            return Ok(Some(value));
        }
    }
    Ok(None)
}

/// Appends to a message, within its bound (whitespace runs made one
/// space: messages are shown on one line).
fn push_message(message: &mut String, text: &str) {
    for word in text.split_whitespace() {
        if message.chars().count() > MAX_MESSAGE_CHARS {
            return;
        }
        if !message.is_empty() {
            message.push(' ');
        }
        message.push_str(word);
    }
}

fn finish(summary: &mut TestSummary, case: Case) {
    summary.total += 1;
    match case.outcome {
        Outcome::Passed => summary.passed += 1,
        Outcome::Skipped => summary.skipped += 1,
        Outcome::Failed | Outcome::Errored => {
            let errored = case.outcome == Outcome::Errored;
            if errored {
                summary.errored += 1;
            } else {
                summary.failed += 1;
            }
            if summary.failures.len() < MAX_FAILED_KEPT {
                summary.failures.push(FailedTest {
                    name: case.name,
                    message: cut(&case.message, MAX_MESSAGE_CHARS),
                    errored,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites>
  <testsuite name="unit" tests="99">
    <testcase classname="math" name="adds"/>
    <testcase classname="math" name="subtracts"></testcase>
    <testcase classname="math" name="divides">
      <failure message="expected 2 &amp; got 3" type="AssertionError">trace</failure>
    </testcase>
    <testcase name="io">
      <error><![CDATA[boom
  at line 3]]></error>
    </testcase>
    <testcase classname="net" name="later"><skipped/></testcase>
  </testsuite>
</testsuites>
"#;

    #[test]
    fn counts_each_test_case() {
        let s = parse_junit(REPORT.as_bytes()).expect("parses");
        assert_eq!(
            (s.total, s.passed, s.failed, s.errored, s.skipped),
            (5, 2, 1, 1, 1)
        );
        assert_eq!(s.failures.len(), 2);
        assert_eq!(s.failures[0].name, "math.divides");
        assert_eq!(s.failures[0].message, "expected 2 & got 3");
        assert!(!s.failures[0].errored);
        assert_eq!(s.failures[1].name, "io");
        assert_eq!(s.failures[1].message, "boom at line 3");
        assert!(s.failures[1].errored);
        assert_eq!(s.counts_line(), "2 passed, 1 failed, 1 errored, 1 skipped");
    }

    #[test]
    fn a_bare_testsuite_root_works() {
        let s = parse_junit(br#"<testsuite><testcase name="a"/></testsuite>"#).expect("parses");
        assert_eq!((s.total, s.passed), (1, 1));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            &b"<testsuites><testcase name='a'></testsuite>"[..],
            b"<testsuites><testcase name='a'>",
            b"not xml at all",
            b"<html><body/></html>",
            b"",
            b"<testsuites><testcase name='a' name=></testcase></testsuites>",
            b"\xff\xfe<\x00t",
        ] {
            let e = parse_junit(bad).expect_err("refused");
            assert!(!e.is_empty());
        }
    }

    #[test]
    fn huge_input_is_refused_and_kept_failures_are_capped() {
        let huge = vec![b' '; MAX_JUNIT_BYTES + 1];
        assert!(parse_junit(&huge).unwrap_err().contains("over the limit"));

        let mut xml = String::from("<testsuites>");
        for i in 0..MAX_FAILED_KEPT + 10 {
            xml.push_str(&format!(
                "<testcase name=\"t{i}\"><failure message=\"{}\"/></testcase>",
                "m".repeat(1000)
            ));
        }
        xml.push_str("</testsuites>");
        let s = parse_junit(xml.as_bytes()).expect("parses");
        assert_eq!(s.failed, (MAX_FAILED_KEPT + 10) as u64);
        assert_eq!(s.failures.len(), MAX_FAILED_KEPT);
        assert_eq!(s.failures_not_kept(), 10);
        assert!(s.failures[0].message.chars().count() <= MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn summaries_add_up() {
        let a = parse_junit(REPORT.as_bytes()).expect("parses");
        let sum = crate::reports::pipeline_tests([&a, &a]).expect("some");
        assert_eq!((sum.total, sum.failed), (10, 2));
        assert_eq!(sum.failures.len(), 4);
        assert!(crate::reports::pipeline_tests([]).is_none());
    }
}
