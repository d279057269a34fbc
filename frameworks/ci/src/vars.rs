//! Variable expansion (`$VAR`, `${VAR}`, `$$`), ref slugs and human
//! durations.

use std::time::Duration;

/// Expands `$NAME` and `${NAME}` with `lookup`; `$$` is a literal `$`; an
/// undefined variable expands to nothing, as in GitLab. A `$` not followed by
/// a name stays as it is.
pub fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) if is_name(&inner[..end]) => {
                    out.push_str(&lookup(&inner[..end]).unwrap_or_default());
                    rest = &inner[end + 1..];
                }
                _ => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            let len = name_len(after);
            if len == 0 {
                out.push('$');
            } else {
                out.push_str(&lookup(&after[..len]).unwrap_or_default());
            }
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    out
}

/// The length of the variable name at the start of `s`.
pub(crate) fn name_len(s: &str) -> usize {
    s.bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count()
}

/// Whether `s` is a valid variable name.
pub fn is_name(s: &str) -> bool {
    !s.is_empty() && name_len(s) == s.len()
}

/// `CI_COMMIT_REF_SLUG`: lowercased, every character but `a-z0-9` replaced by
/// `-`, at most 63 bytes, no leading or trailing `-`.
pub fn ref_slug(name: &str) -> String {
    let replaced: String = name
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    replaced.trim_matches('-').to_string()
}

/// Parses a GitLab human duration: `3600` (seconds), `1h 30m`, `90 minutes`,
/// `1 hour 30 minutes`, `2 days`, `1w`, `30s`, `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim().to_ascii_lowercase();
    if s.is_empty() {
        return Err("an empty duration".to_string());
    }
    let mut total: u64 = 0;
    let mut rest = s.as_str();
    let mut any = false;
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(r) = rest.strip_prefix("and ") {
            rest = r;
            continue;
        }
        if rest.is_empty() {
            break;
        }
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "`{text}` is not a duration (use e.g. `1h 30m`, `90 minutes` or `3600`)"
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}` has a number too large"))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs = match unit {
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "wk" | "wks" | "week" | "weeks" => 7 * 86_400,
            "mo" | "mos" | "month" | "months" => 30 * 86_400,
            "y" | "yr" | "yrs" | "year" | "years" => 365 * 86_400,
            other => {
                return Err(format!("`{text}` has an unknown time unit `{other}`"));
            }
        };
        total = n
            .checked_mul(secs)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("`{text}` is too long a duration"))?;
        any = true;
    }
    if !any {
        return Err(format!("`{text}` is not a duration"));
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn look(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "B_2" => Some("beta".into()),
            _ => None,
        }
    }

    #[test]
    fn expansion_forms() {
        assert_eq!(expand("x-$A-${B_2}-$C-$$A-$", &look), "x-alpha-beta--$A-$");
        assert_eq!(expand("${A}b $Ab", &look), "alphab ");
        assert_eq!(expand("${not closed", &look), "${not closed");
    }

    #[test]
    fn slugs() {
        assert_eq!(ref_slug("Feature/Add_THING"), "feature-add-thing");
        assert_eq!(ref_slug("-v1.2-"), "v1-2");
        assert_eq!(ref_slug(&"a".repeat(100)).len(), 63);
        assert_eq!(ref_slug("ümlaut"), "mlaut");
    }

    #[test]
    fn durations() {
        let d = |s| parse_duration(s).unwrap().as_secs();
        assert_eq!(d("3600"), 3600);
        assert_eq!(d("1h 30m"), 5400);
        assert_eq!(d("1h30m"), 5400);
        assert_eq!(d("90 minutes"), 5400);
        assert_eq!(d("1 hour and 30 minutes"), 5400);
        assert_eq!(d("2 days"), 172_800);
        assert_eq!(d("1 week"), 604_800);
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3 fortnights").is_err());
        assert!(parse_duration("").is_err());
    }

    proptest! {
        #[test]
        fn slug_invariants(name in "\\PC{0,100}") {
            let slug = ref_slug(&name);
            prop_assert!(slug.len() <= 63);
            prop_assert!(!slug.starts_with('-') && !slug.ends_with('-'));
            prop_assert!(slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        }

        #[test]
        fn expansion_without_dollar_is_identity(s in "[^$]{0,50}") {
            prop_assert_eq!(expand(&s, &look), s);
        }
    }
}
