//! Diagnostics: errors and warnings with the line and column they refer to.

use std::fmt;

/// A position in the YAML text: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// Which file of the parse: 0 the main file, `n` the `n`-th file read
    /// for an `include` ([`Diagnostic::file`] names it). First, so that
    /// sorting groups diagnostics by file.
    pub(crate) file: u16,
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub column: u32,
}

impl Pos {
    /// Line `line`, column `column` of the main file.
    pub fn new(line: u32, column: u32) -> Self {
        Self {
            file: 0,
            line,
            column,
        }
    }
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The file is still usable; something in it is ignored or unusual.
    Warning,
    /// The file cannot be used.
    Error,
}

/// One finding about a pipeline file.
///
/// `Display` prints `LINE:COLUMN: error: message` for the main file; prefix
/// its name for the `FILE:LINE:COLUMN: ...` form compilers use (or call
/// [`Diagnostic::located`]). A diagnostic about a file read for an
/// `include` names that file itself: `ci/jobs.yml:3:5: error: ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Where in the file.
    pub pos: Pos,
    /// A plain sentence.
    pub message: String,
    /// The included file this is about (its path in the repository);
    /// `None` for the main file.
    pub file: Option<String>,
}

impl Diagnostic {
    /// An error at `pos`.
    pub fn error(pos: Pos, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            pos,
            message: message.into(),
            file: None,
        }
    }

    /// A warning at `pos`.
    pub fn warning(pos: Pos, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            pos,
            message: message.into(),
            file: None,
        }
    }

    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `FILE:LINE:COLUMN: error: message`, `main` being the main file's
    /// name (an included file's diagnostic names its own file).
    pub fn located(&self, main: &str) -> String {
        match &self.file {
            Some(_) => self.to_string(),
            None => format!("{main}:{self}"),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        if let Some(file) = &self.file {
            write!(f, "{file}:")?;
        }
        write!(
            f,
            "{}:{}: {kind}: {}",
            self.pos.line, self.pos.column, self.message
        )
    }
}

/// The edit distance between two strings, a swap of two neighbours
/// counting as one edit (optimal string alignment), for "did you mean".
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

/// The closest candidate within a small edit distance, if any.
pub(crate) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// At most [`CUT`] characters of user input, for a message (with `…` when
/// cut).
pub(crate) fn cut(s: &str) -> String {
    cut_to(s, CUT)
}

/// How much of a bad value a message quotes.
pub(crate) const CUT: usize = 80;

/// `s` cut to `max` characters, with `…` when cut.
pub(crate) fn cut_to(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_form() {
        let d = Diagnostic::error(Pos::new(3, 5), "bad thing");
        assert_eq!(d.to_string(), "3:5: error: bad thing");
        assert_eq!(d.located("ci.yml"), "ci.yml:3:5: error: bad thing");
        let w = Diagnostic::warning(Pos::new(1, 1), "odd");
        assert_eq!(w.to_string(), "1:1: warning: odd");
        let mut i = Diagnostic::error(Pos::new(2, 4), "bad include");
        i.file = Some("ci/jobs.yml".into());
        assert_eq!(i.to_string(), "ci/jobs.yml:2:4: error: bad include");
        assert_eq!(i.located("ci.yml"), "ci/jobs.yml:2:4: error: bad include");
    }

    #[test]
    fn suggestions() {
        assert_eq!(edit_distance("script", "scirpt"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(suggest("scirpt", &["script", "stage"]), Some("script"));
        assert_eq!(
            suggest("artifact", &["artifacts", "cache"]),
            Some("artifacts")
        );
        assert_eq!(suggest("zzzzzz", &["script", "stage"]), None);
    }
}
