//! Golden files, for the tests of persisted formats (the master's log
//! entries and snapshots, the agent's checkpoint): named byte strings
//! checked in as hex, one `name hex` line each, `#` starting a comment
//! line. A test compares what this berth writes with them and decodes
//! them. A golden file is written when it is missing and the test runs
//! with `BERTH_WRITE_GOLDEN=1`; with it set, values the file does not hold
//! yet (a new command) are appended. Lines are never rewritten: bytes of
//! an existing version that change mean the format changed.
//!
//! Test support: these functions panic, with a message that says what to
//! do, instead of returning errors.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Reads the golden file at `path`. When `BERTH_WRITE_GOLDEN` is set and
/// the file is missing, writes it from `current` (each line of `header`
/// as a comment first); when it lacks some names of `current`, appends
/// those. Either way it then panics, to have the file reviewed and
/// committed.
///
/// # Panics
/// When the file is missing (and not written), unreadable, not of the
/// format above, or does not hold exactly the names of `current`.
#[must_use]
pub fn load(path: &Path, header: &str, current: &[(&str, Vec<u8>)]) -> BTreeMap<String, Vec<u8>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("BERTH_WRITE_GOLDEN").is_some(),
                "golden file {} is missing: run the test with BERTH_WRITE_GOLDEN=1 to write it \
                 from this version, then review and commit it",
                path.display()
            );
            let mut text = String::new();
            for line in header.lines() {
                let _ = writeln!(text, "# {line}");
            }
            for (name, bytes) in current {
                let _ = writeln!(text, "{name} {}", hex(bytes));
            }
            if let Err(e) = std::fs::write(path, text) {
                panic!("writing golden file {}: {e}", path.display());
            }
            panic!("wrote golden file {}: review and commit it", path.display());
        }
        Err(e) => panic!("golden file {}: {e}", path.display()),
    };
    let mut golden = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let Some((name, hex)) = line.split_once(' ') else {
            panic!("{}: not a `name hex` line: {line:.60}", path.display());
        };
        let dup = golden.insert(name.to_owned(), unhex(hex.trim()));
        assert!(dup.is_none(), "{}: {name} twice", path.display());
    }
    let missing: Vec<&(&str, Vec<u8>)> = current
        .iter()
        .filter(|(name, _)| !golden.contains_key(*name))
        .collect();
    if !missing.is_empty() && std::env::var_os("BERTH_WRITE_GOLDEN").is_some() {
        let mut text = text;
        for (name, bytes) in &missing {
            let _ = writeln!(text, "{name} {}", hex(bytes));
        }
        if let Err(e) = std::fs::write(path, text) {
            panic!("appending to golden file {}: {e}", path.display());
        }
        panic!(
            "appended {} values to golden file {}: review and commit it",
            missing.len(),
            path.display()
        );
    }
    let mut names: Vec<&str> = current.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    let held: Vec<&str> = golden.keys().map(String::as_str).collect();
    assert_eq!(
        held,
        names,
        "the names golden file {} holds (left) and the values the test has (right): run it \
         with BERTH_WRITE_GOLDEN=1 to append the new ones; a value the test no longer has \
         must be put back",
        path.display()
    );
    golden
}

/// Panics unless this version writes the golden bytes.
///
/// # Panics
/// When `written` and `golden` differ: the message shows both and says
/// what to do.
pub fn assert_same(path: &Path, name: &str, written: &[u8], golden: &[u8]) {
    assert!(
        written == golden,
        "{name}: this berth writes other bytes than golden file {} holds:\n  golden  {}\n  \
         written {}\nThe persisted format changed. Golden files are never rewritten: keep the \
         old bytes readable and give the new format a version (the docs of the module that \
         owns the format say how).",
        path.display(),
        hex(golden),
        hex(written),
    );
}

/// Lower-case hex of `bytes`.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The bytes of hex text.
///
/// # Panics
/// When `s` is not hex.
#[must_use]
pub fn unhex(s: &str) -> Vec<u8> {
    assert!(
        s.len().is_multiple_of(2) && s.is_ascii(),
        "not hex: {}",
        crate::quoted(s)
    );
    (0..s.len())
        .step_by(2)
        .map(|i| match u8::from_str_radix(&s[i..i + 2], 16) {
            Ok(b) => b,
            Err(e) => panic!("not hex at {i}: {e}"),
        })
        .collect()
}
