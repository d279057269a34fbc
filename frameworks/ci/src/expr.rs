//! The `rules:if` / `workflow:rules:if` / `only:variables` expression
//! language, as GitLab defines it.
//!
//! ```text
//! expr    := and ( "||" and )*
//! and     := cmp ( "&&" cmp )*
//! cmp     := primary ( ("==" | "!=" | "=~" | "!~") primary )?
//! primary := $VAR | ${VAR} | "string" | 'string' | null | /regex/flags | "(" expr ")"
//! ```
//!
//! A bare operand is true when it is a non-empty string (so `$VAR` means
//! "defined and not empty"). The right side of `=~`/`!~` is a regex literal
//! or a variable whose value is a pattern (`/.../flags`, or the raw text).

use regex::Regex;

/// The longest expression accepted (bounds recursion when evaluating).
const MAX_CHARS: usize = 4096;

/// A parsed expression.
#[derive(Debug, Clone)]
pub struct Expr {
    node: ExprNode,
}

#[derive(Debug, Clone)]
enum ExprNode {
    Or(Box<ExprNode>, Box<ExprNode>),
    And(Box<ExprNode>, Box<ExprNode>),
    Cmp(Operand, Op, Operand),
    Bare(Operand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Match,
    NoMatch,
}

#[derive(Debug, Clone)]
enum Operand {
    Var(String),
    Str(String),
    Null,
    Regex(Regex),
}

/// An expression that does not parse: what is wrong and where (a 0-based
/// character offset into the expression).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    /// Character offset of the problem in the expression.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Var(String),
    Str(String),
    Null,
    Regex(String, String),
    Op(Op),
    And,
    Or,
    Open,
    Close,
}

fn err<T>(offset: usize, message: impl Into<String>) -> Result<T, ExprError> {
    Err(ExprError {
        offset,
        message: message.into(),
    })
}

fn lex(text: &str) -> Result<Vec<(usize, Tok)>, ExprError> {
    let chars: Vec<char> = text.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        let next2: String = chars[i..].iter().take(2).collect();
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                i += 1;
                continue;
            }
            '$' => {
                i += 1;
                let braced = chars.get(i) == Some(&'{');
                if braced {
                    i += 1;
                }
                let name_start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                if i == name_start {
                    return err(start, "`$` must be followed by a variable name");
                }
                let name: String = chars[name_start..i].iter().collect();
                if braced {
                    if chars.get(i) != Some(&'}') {
                        return err(i, "`${` is not closed with `}`");
                    }
                    i += 1;
                }
                toks.push((start, Tok::Var(name)));
            }
            '"' | '\'' => {
                i += 1;
                let mut s = String::new();
                loop {
                    match chars.get(i) {
                        None => return err(start, "the string is not closed"),
                        Some(&q) if q == c => break,
                        Some(&ch) => s.push(ch),
                    }
                    i += 1;
                }
                i += 1;
                toks.push((start, Tok::Str(s)));
            }
            '/' => {
                i += 1;
                let mut pattern = String::new();
                loop {
                    match chars.get(i) {
                        None => return err(start, "the regex is not closed with `/`"),
                        Some('\\') if chars.get(i + 1) == Some(&'/') => {
                            pattern.push('/');
                            i += 2;
                            continue;
                        }
                        Some('/') => break,
                        Some(&ch) => pattern.push(ch),
                    }
                    i += 1;
                }
                i += 1;
                let mut flags = String::new();
                while i < chars.len() && chars[i].is_ascii_alphabetic() {
                    flags.push(chars[i]);
                    i += 1;
                }
                toks.push((start, Tok::Regex(pattern, flags)));
            }
            '(' => {
                i += 1;
                toks.push((start, Tok::Open));
            }
            ')' => {
                i += 1;
                toks.push((start, Tok::Close));
            }
            _ if next2 == "==" => {
                i += 2;
                toks.push((start, Tok::Op(Op::Eq)));
            }
            _ if next2 == "!=" => {
                i += 2;
                toks.push((start, Tok::Op(Op::Ne)));
            }
            _ if next2 == "=~" => {
                i += 2;
                toks.push((start, Tok::Op(Op::Match)));
            }
            _ if next2 == "!~" => {
                i += 2;
                toks.push((start, Tok::Op(Op::NoMatch)));
            }
            _ if next2 == "&&" => {
                i += 2;
                toks.push((start, Tok::And));
            }
            _ if next2 == "||" => {
                i += 2;
                toks.push((start, Tok::Or));
            }
            _ if c.is_ascii_alphabetic() => {
                while i < chars.len() && chars[i].is_ascii_alphanumeric() {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                if word == "null" {
                    toks.push((start, Tok::Null));
                } else {
                    return err(
                        start,
                        format!(
                            "unexpected word `{word}` (variables start with `$`, strings are quoted)"
                        ),
                    );
                }
            }
            _ => return err(start, format!("unexpected character `{c}`")),
        }
    }
    Ok(toks)
}

/// Builds a regex from a pattern and GitLab flags (`i`, `m`, `s`).
fn build_regex(pattern: &str, flags: &str) -> Result<Regex, String> {
    let mut b = regex::RegexBuilder::new(pattern);
    for f in flags.chars() {
        match f {
            'i' => b.case_insensitive(true),
            'm' => b.multi_line(true),
            's' => b.dot_matches_new_line(true),
            other => return Err(format!("unknown regex flag `{other}` (use i, m or s)")),
        };
    }
    b.size_limit(1 << 20)
        .build()
        .map_err(|e| format!("invalid regex: {e}"))
}

struct ExprParser {
    toks: Vec<(usize, Tok)>,
    at: usize,
    end: usize,
    depth: usize,
}

impl ExprParser {
    fn offset(&self) -> usize {
        self.toks.get(self.at).map_or(self.end, |t| t.0)
    }

    fn or(&mut self) -> Result<ExprNode, ExprError> {
        let mut left = self.and()?;
        while matches!(self.toks.get(self.at), Some((_, Tok::Or))) {
            self.at += 1;
            let right = self.and()?;
            left = ExprNode::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<ExprNode, ExprError> {
        let mut left = self.cmp()?;
        while matches!(self.toks.get(self.at), Some((_, Tok::And))) {
            self.at += 1;
            let right = self.cmp()?;
            left = ExprNode::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn cmp(&mut self) -> Result<ExprNode, ExprError> {
        if matches!(self.toks.get(self.at), Some((_, Tok::Open))) {
            let open = self.offset();
            self.depth += 1;
            if self.depth > 64 {
                return err(open, "the expression nests too deeply");
            }
            self.at += 1;
            let inner = self.or()?;
            if !matches!(self.toks.get(self.at), Some((_, Tok::Close))) {
                return err(self.offset(), "expected `)`");
            }
            self.at += 1;
            self.depth -= 1;
            return Ok(inner);
        }
        let left = self.operand()?;
        if let Some((at, Tok::Op(op))) = self.toks.get(self.at).cloned() {
            self.at += 1;
            let right = self.operand()?;
            if matches!(op, Op::Match | Op::NoMatch)
                && !matches!(right, Operand::Regex(_) | Operand::Var(_))
            {
                return err(
                    at,
                    "the right side of `=~`/`!~` must be a /regex/ or a variable",
                );
            }
            if matches!(op, Op::Eq | Op::Ne) && matches!(right, Operand::Regex(_)) {
                return err(at, "compare with a regex using `=~` or `!~`");
            }
            return Ok(ExprNode::Cmp(left, op, right));
        }
        Ok(ExprNode::Bare(left))
    }

    fn operand(&mut self) -> Result<Operand, ExprError> {
        let offset = self.offset();
        let Some((_, tok)) = self.toks.get(self.at).cloned() else {
            return err(offset, "the expression ends where a value was expected");
        };
        self.at += 1;
        Ok(match tok {
            Tok::Var(v) => Operand::Var(v),
            Tok::Str(s) => Operand::Str(s),
            Tok::Null => Operand::Null,
            Tok::Regex(p, f) => Operand::Regex(
                build_regex(&p, &f).map_err(|message| ExprError { offset, message })?,
            ),
            other => {
                return err(
                    offset,
                    format!("expected a value, found {}", describe(&other)),
                );
            }
        })
    }
}

fn describe(tok: &Tok) -> &'static str {
    match tok {
        Tok::Op(_) => "an operator",
        Tok::And => "`&&`",
        Tok::Or => "`||`",
        Tok::Open => "`(`",
        Tok::Close => "`)`",
        _ => "a value",
    }
}

impl Expr {
    /// Parses an expression.
    pub fn parse(text: &str) -> Result<Self, ExprError> {
        let end = text.chars().count();
        if end > MAX_CHARS {
            return err(
                MAX_CHARS,
                format!("the expression is longer than {MAX_CHARS} characters"),
            );
        }
        let toks = lex(text)?;
        if toks.is_empty() {
            return err(0, "the expression is empty");
        }
        let mut p = ExprParser {
            toks,
            at: 0,
            end,
            depth: 0,
        };
        let node = p.or()?;
        if p.at < p.toks.len() {
            let (offset, tok) = &p.toks[p.at];
            return err(*offset, format!("unexpected {} here", describe(tok)));
        }
        Ok(Self { node })
    }

    /// Evaluates with `lookup` giving variable values (None = undefined).
    pub fn eval(&self, lookup: &dyn Fn(&str) -> Option<String>) -> bool {
        eval(&self.node, lookup)
    }
}

#[derive(Debug)]
enum Value {
    Null,
    Str(String),
    Regex(Regex),
}

fn value(op: &Operand, lookup: &dyn Fn(&str) -> Option<String>) -> Value {
    match op {
        Operand::Var(v) => lookup(v).map_or(Value::Null, Value::Str),
        Operand::Str(s) => Value::Str(s.clone()),
        Operand::Null => Value::Null,
        Operand::Regex(r) => Value::Regex(r.clone()),
    }
}

/// A variable's value used as a pattern: `/p/flags` or the raw text.
fn pattern_of(text: &str) -> Option<Regex> {
    if let Some(body) = text.strip_prefix('/')
        && let Some(end) = body.rfind('/')
    {
        return build_regex(&body[..end], &body[end + 1..]).ok();
    }
    build_regex(text, "").ok()
}

fn eval(node: &ExprNode, lookup: &dyn Fn(&str) -> Option<String>) -> bool {
    match node {
        ExprNode::Or(a, b) => eval(a, lookup) || eval(b, lookup),
        ExprNode::And(a, b) => eval(a, lookup) && eval(b, lookup),
        ExprNode::Bare(op) => match value(op, lookup) {
            Value::Str(s) => !s.is_empty(),
            Value::Null => false,
            Value::Regex(_) => true,
        },
        ExprNode::Cmp(l, op, r) => {
            let left = value(l, lookup);
            let right = value(r, lookup);
            match op {
                Op::Eq | Op::Ne => {
                    let equal = match (&left, &right) {
                        (Value::Null, Value::Null) => true,
                        (Value::Str(a), Value::Str(b)) => a == b,
                        _ => false,
                    };
                    equal == (*op == Op::Eq)
                }
                Op::Match | Op::NoMatch => {
                    let regex = match right {
                        Value::Regex(r) => Some(r),
                        Value::Str(s) => pattern_of(&s),
                        Value::Null => None,
                    };
                    let matched = match (&left, regex) {
                        (Value::Str(s), Some(r)) => r.is_match(s),
                        _ => false,
                    };
                    matched == (*op == Op::Match)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "BRANCH" => Some("main".into()),
            "EMPTY" => Some(String::new()),
            "PATTERN" => Some("/^ma/".into()),
            "RAW" => Some("^mai".into()),
            "TAG" => Some("v1.2.3".into()),
            _ => None,
        }
    }

    fn t(s: &str) -> bool {
        Expr::parse(s).unwrap().eval(&vars)
    }

    #[test]
    fn comparisons() {
        assert!(t("$BRANCH == \"main\""));
        assert!(t("$BRANCH == 'main'"));
        assert!(t("${BRANCH} != 'dev'"));
        assert!(t("$NOPE == null"));
        assert!(!t("$EMPTY == null"));
        assert!(t("$EMPTY == \"\""));
        assert!(t("null == $NOPE"));
    }

    #[test]
    fn bare_variables_are_defined_and_non_empty() {
        assert!(t("$BRANCH"));
        assert!(!t("$EMPTY"));
        assert!(!t("$NOPE"));
    }

    #[test]
    fn regexes() {
        assert!(t("$TAG =~ /^v\\d+/"));
        assert!(t("$BRANCH =~ /^MAIN$/i"));
        assert!(!t("$BRANCH =~ /^MAIN$/"));
        assert!(t("$BRANCH !~ /^dev/"));
        assert!(t("$BRANCH =~ $PATTERN"));
        assert!(t("$BRANCH =~ $RAW"));
        assert!(!t("$NOPE =~ /x/"));
        assert!(t("$NOPE !~ /x/"));
        assert!(t("'a/b' =~ /a\\/b/"));
    }

    #[test]
    fn precedence_and_parentheses() {
        // && binds tighter: true || (false && false)
        assert!(t("$BRANCH || $NOPE && $NOPE"));
        assert!(!t("($BRANCH || $NOPE) && $NOPE"));
        assert!(t("($BRANCH == 'main' && $TAG) || $NOPE"));
    }

    #[test]
    fn errors_have_offsets() {
        let e = Expr::parse("$A == ").unwrap_err();
        assert_eq!(e.offset, 6);
        let e = Expr::parse("$A == main").unwrap_err();
        assert_eq!(e.offset, 6);
        assert!(e.message.contains("main"), "{e}");
        let e = Expr::parse("$A =~ 'x'").unwrap_err();
        assert_eq!(e.offset, 3);
        let e = Expr::parse("($A").unwrap_err();
        assert_eq!(e.offset, 3);
        let e = Expr::parse("$A =~ /(/").unwrap_err();
        assert_eq!(e.offset, 6);
        let e = Expr::parse("$A $B").unwrap_err();
        assert_eq!(e.offset, 3);
        assert!(Expr::parse("").is_err());
        assert!(Expr::parse("$A =~ /x/q").is_err());
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC{0,60}") {
            if let Ok(e) = Expr::parse(&s) {
                let _ = e.eval(&vars);
            }
        }

        #[test]
        fn parser_never_panics_on_operator_soup(s in "[$A-Z()=!~&|'\"/ nul]{0,40}") {
            if let Ok(e) = Expr::parse(&s) {
                let _ = e.eval(&vars);
            }
        }
    }
}
