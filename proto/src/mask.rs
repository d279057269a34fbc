//! Masking secret values in job output before anything is stored or shown.
//!
//! A job's log arrives in chunks of arbitrary size, so a secret can be
//! split between two chunks. [`Masker`] keeps back the last few bytes of
//! each chunk (one less than the longest secret) until the next chunk or
//! [`Masker::finish`] shows whether they start a secret; everything it
//! returns is final and masked.
//!
//! The rules for the values a task asks to mask (`TaskInfo.masked_values`,
//! [`validate_task_masks`]) are checked alike by the master at accept and
//! by the agent before launch; the agent's loggers and the CI framework
//! mask with [`Masker`].

use berth_scheduler_core::quoted;

/// What a masked value is replaced with (GitLab's spelling).
pub const MASK: &str = "[MASKED]";

/// Shortest value that may be masked: shorter ones would mask ordinary
/// words all over the log (GitLab requires 8 characters too).
pub const MIN_SECRET_LEN: usize = 8;

/// A streaming masker for one log.
#[derive(Clone)]
pub struct Masker {
    /// Longest first, so that a secret containing another is masked whole.
    secrets: Vec<Vec<u8>>,
    /// Bytes held back: they may be the start of a secret.
    held: Vec<u8>,
    longest: usize,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secrets themselves.
        f.debug_struct("Masker")
            .field("secrets", &self.secrets.len())
            .field("held", &self.held.len())
            .finish()
    }
}

/// A value that cannot be masked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    /// Too short to mask safely.
    #[error(
        "variable {} is masked but its value has {len} characters; masked values need at least {MIN_SECRET_LEN}", quoted(.name)
    )]
    TooShort {
        /// The variable.
        name: String,
        /// Its length.
        len: usize,
    },
    /// Longer than a task may have masked.
    #[error(
        "variable {} is masked but its value has {len} bytes; masked values may have at most {MAX_MASKED_VALUE_BYTES}", quoted(.name)
    )]
    TooLong {
        /// The variable.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// Spans lines: a log line never contains it whole.
    #[error("variable {} is masked but its value spans several lines, which cannot be masked", quoted(.name))]
    Multiline {
        /// The variable.
        name: String,
    },
}

/// Checks that a variable's value can be masked.
pub fn check_maskable(name: &str, value: &str) -> Result<(), MaskError> {
    if value.chars().count() < MIN_SECRET_LEN {
        return Err(MaskError::TooShort {
            name: name.to_string(),
            len: value.chars().count(),
        });
    }
    if value.len() > MAX_MASKED_VALUE_BYTES {
        return Err(MaskError::TooLong {
            name: name.to_string(),
            len: value.len(),
        });
    }
    if value.contains('\n') || value.contains('\r') {
        return Err(MaskError::Multiline {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// Most values one task may have masked (`TaskInfo.masked_values`).
pub const MAX_TASK_MASKED_VALUES: usize = 64;
/// Longest value a task may have masked, in bytes.
pub const MAX_MASKED_VALUE_BYTES: usize = 4096;

/// Checks a task's `masked_values`; the master applies it when a task is
/// accepted and the agent again before it runs one.
///
/// # Errors
/// A sentence naming the first bad value by its position (never by the
/// value itself): too many, too short, too long, a line break or a NUL.
pub fn validate_task_masks(task: &crate::v1::TaskInfo) -> Result<(), String> {
    let values = &task.masked_values;
    if values.len() > MAX_TASK_MASKED_VALUES {
        return Err(format!(
            "masked_values: {} values, at most {MAX_TASK_MASKED_VALUES} are allowed",
            values.len()
        ));
    }
    for (i, v) in values.iter().enumerate() {
        let chars = v.chars().count();
        if chars < MIN_SECRET_LEN {
            return Err(format!(
                "masked_values[{i}] has {chars} characters; masked values need at least {MIN_SECRET_LEN}"
            ));
        }
        if v.len() > MAX_MASKED_VALUE_BYTES {
            return Err(format!(
                "masked_values[{i}] has {} bytes, at most {MAX_MASKED_VALUE_BYTES} are allowed",
                v.len()
            ));
        }
        if v.contains(['\n', '\r']) {
            return Err(format!(
                "masked_values[{i}] spans several lines, which cannot be masked"
            ));
        }
        if v.contains('\0') {
            return Err(format!("masked_values[{i}] contains NUL"));
        }
    }
    Ok(())
}

impl Masker {
    /// A masker for these values; empty values are ignored.
    pub fn new<I, S>(secrets: I) -> Masker
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut secrets: Vec<Vec<u8>> = secrets
            .into_iter()
            .map(|s| s.as_ref().as_bytes().to_vec())
            .filter(|s| !s.is_empty())
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        let longest = secrets.first().map_or(0, Vec::len);
        Masker {
            secrets,
            held: Vec::new(),
            longest,
        }
    }

    /// Masks a whole text at once.
    pub fn mask_str(&self, text: &str) -> String {
        let mut m = self.clone();
        m.held.clear();
        let mut out = m.push(text.as_bytes());
        out.extend(m.finish());
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Takes the next chunk; returns the masked bytes that are final.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.secrets.is_empty() {
            return chunk.to_vec();
        }
        self.held.extend_from_slice(chunk);
        self.scan(false)
    }

    /// How many of the bytes pushed so far are held back (not yet
    /// returned): the tail of the input that may start a secret. Bytes
    /// before it have all been returned, so a log read again from
    /// `consumed - held_len()` with a new masker continues exactly.
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Ends the log: returns what was held back, masked.
    pub fn finish(&mut self) -> Vec<u8> {
        self.scan(true)
    }

    /// Masks the held bytes; unless at the end, holds back a tail that may
    /// be the start of a secret.
    fn scan(&mut self, at_end: bool) -> Vec<u8> {
        let data = std::mem::take(&mut self.held);
        let mut out = Vec::with_capacity(data.len());
        let mut i = 0;
        while i < data.len() {
            if let Some(len) = self.secret_at(&data[i..]) {
                out.extend_from_slice(MASK.as_bytes());
                i += len;
                continue;
            }
            // Could a secret start here and continue in the next chunk?
            let rest = &data[i..];
            if !at_end && rest.len() < self.longest && self.is_prefix_of_secret(rest) {
                self.held = rest.to_vec();
                return out;
            }
            out.push(data[i]);
            i += 1;
        }
        out
    }

    /// The length of the (longest) secret `data` starts with.
    fn secret_at(&self, data: &[u8]) -> Option<usize> {
        self.secrets
            .iter()
            .find(|s| data.starts_with(s))
            .map(Vec::len)
    }

    /// Whether `rest` (shorter than the longest secret) is the start of a
    /// secret longer than it.
    fn is_prefix_of_secret(&self, rest: &[u8]) -> bool {
        self.secrets
            .iter()
            .any(|s| s.len() > rest.len() && s.starts_with(rest))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn task_masks_are_checked_without_showing_the_values() {
        let task = |values: Vec<String>| crate::v1::TaskInfo {
            masked_values: values,
            ..Default::default()
        };
        assert_eq!(validate_task_masks(&task(vec![])), Ok(()));
        assert_eq!(
            validate_task_masks(&task(vec!["12345678".into(), "ünïcödé".repeat(2)])),
            Ok(())
        );
        for (values, want) in [
            (
                vec!["12345678".into(), "1234567".into()],
                "masked_values[1] has 7 characters; masked values need at least 8",
            ),
            (
                vec!["x".repeat(4097)],
                "masked_values[0] has 4097 bytes, at most 4096 are allowed",
            ),
            (
                vec!["line-one\nline-two".into()],
                "masked_values[0] spans several lines, which cannot be masked",
            ),
            (
                vec!["carriage\rreturn".into()],
                "masked_values[0] spans several lines, which cannot be masked",
            ),
            (
                vec!["nul-\0-inside".into()],
                "masked_values[0] contains NUL",
            ),
            (
                vec!["12345678".into(); 65],
                "masked_values: 65 values, at most 64 are allowed",
            ),
        ] {
            assert_eq!(validate_task_masks(&task(values)).unwrap_err(), want);
        }
        assert!(matches!(
            check_maskable("BIG", &"y".repeat(4097)),
            Err(MaskError::TooLong { len: 4097, .. })
        ));
    }

    #[test]
    fn masks_whole_values() {
        let m = Masker::new(["hunter2-secret", "s3cr3t-token"]);
        assert_eq!(
            m.mask_str("login hunter2-secret ok; token=s3cr3t-token."),
            "login [MASKED] ok; token=[MASKED]."
        );
        assert_eq!(
            m.mask_str("hunter2-secre"),
            "hunter2-secre",
            "a prefix alone stays"
        );
    }

    #[test]
    fn masks_values_split_across_chunks() {
        let mut m = Masker::new(["correct-horse-battery"]);
        let mut out = Vec::new();
        for chunk in ["echo corr", "ect-hor", "se-batt", "ery done\n"] {
            out.extend(m.push(chunk.as_bytes()));
        }
        out.extend(m.finish());
        assert_eq!(String::from_utf8(out).unwrap(), "echo [MASKED] done\n");
    }

    #[test]
    fn a_held_prefix_that_is_not_a_secret_comes_out_at_the_end() {
        let mut m = Masker::new(["abcdefgh"]);
        let first = m.push(b"xx abcde");
        assert_eq!(first, b"xx ", "the possible start is held back");
        assert_eq!(m.finish(), b"abcde");
    }

    #[test]
    fn the_longest_overlapping_secret_wins() {
        let m = Masker::new(["password", "password-admin"]);
        assert_eq!(
            m.mask_str("x password-admin y password z"),
            "x [MASKED] y [MASKED] z"
        );
    }

    #[test]
    fn short_and_multiline_values_cannot_be_masked() {
        assert_eq!(
            check_maskable("TOKEN", "abc"),
            Err(MaskError::TooShort {
                name: "TOKEN".into(),
                len: 3
            })
        );
        let err = check_maskable("KEY", "line one\nline two").unwrap_err();
        assert!(err.to_string().contains("several lines"), "{err}");
        assert_eq!(check_maskable("TOKEN", "12345678"), Ok(()));
    }

    #[test]
    fn debug_output_does_not_show_secrets() {
        let m = Masker::new(["very-secret-value"]);
        assert!(!format!("{m:?}").contains("very-secret-value"));
    }

    proptest! {
        /// However the output is cut into chunks, no secret survives and
        /// the result is the same as masking the whole text at once.
        #[test]
        fn chunking_never_leaks_a_secret(
            parts in proptest::collection::vec("[a-d ]{0,12}", 0..12),
            cuts in proptest::collection::vec(1usize..9, 1..40),
        ) {
            let secret = "abcdabcd";
            // Put the secret between the random parts.
            let text = parts.join(secret);
            let whole = Masker::new([secret]).mask_str(&text);
            prop_assert!(!whole.contains(secret));
            let mut m = Masker::new([secret]);
            let mut out = Vec::new();
            let bytes = text.as_bytes();
            let mut at = 0;
            for cut in cuts.iter().cycle() {
                if at >= bytes.len() { break; }
                let end = (at + cut).min(bytes.len());
                out.extend(m.push(&bytes[at..end]));
                at = end;
            }
            out.extend(m.finish());
            let chunked = String::from_utf8(out).unwrap();
            prop_assert_eq!(chunked, whole);
        }

        /// Stopping after any chunk (dropping what is held back) and going
        /// on with a new masker from `consumed - held_len()` gives the same
        /// log as reading it in one go: nothing twice, nothing lost, every
        /// secret masked (how the runner resumes a log after a restart).
        #[test]
        fn resuming_from_the_held_offset_is_exact(
            parts in proptest::collection::vec("[a-d \n]{0,12}", 0..12),
            cuts in proptest::collection::vec(1usize..9, 1..40),
            stop_after in 0usize..40,
        ) {
            let secret = "abcdabcd";
            let text = parts.join(secret);
            let bytes = text.as_bytes();
            let whole = Masker::new([secret]).mask_str(&text);
            let mut out = Vec::new();
            let mut m = Masker::new([secret]);
            let mut at = 0;
            let mut resumed = false;
            for (n, cut) in cuts.iter().cycle().enumerate() {
                if at >= bytes.len() { break; }
                let end = (at + cut).min(bytes.len());
                out.extend(m.push(&bytes[at..end]));
                at = end;
                if n == stop_after && !resumed {
                    at -= m.held_len();
                    m = Masker::new([secret]);
                    resumed = true;
                }
            }
            out.extend(m.finish());
            prop_assert_eq!(String::from_utf8(out).unwrap(), whole);
        }
    }
}
