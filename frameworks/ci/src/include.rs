//! `include:`: the files a pipeline file includes, read from the
//! [`Repository`] and deep-merged into it as GitLab does.
//!
//! The forms: `include: 'ci/a.yml'`, a list of paths, `- local: path`, and
//! globs (`ci/*.yml`: `*` stays within a directory, `**` crosses them).
//! Paths are relative to the repository's root (a leading `/` is allowed;
//! `..` is refused), may use the predefined, global and secret variables,
//! and must end in `.yml` or `.yaml`. An entry's `rules` (`if`, `exists`,
//! `changes`, `when: always|never`) are evaluated against the [`Context`]
//! with those variables. An included file's own `include` is read in turn.
//!
//! The merge: the included files are merged in the order they are listed
//! (a later one winning), then the including file on top; mappings merge
//! key by key, anything else is replaced. So jobs and templates of
//! included files are there for `extends` and `!reference`, and their
//! `variables`, `stages`, `default` and `workflow` apply.
//!
//! Limits (GitLab's): at most [`MAX_INCLUDES`] files in all (a file
//! included twice counts twice), nested at most [`MAX_INCLUDE_DEPTH`] deep;
//! a file that includes itself, directly or not, is an error. The main
//! file and the included ones together must fit in
//! [`ParseOptions::max_bytes`] and [`ParseOptions::max_nodes`].
//! `include:remote`, `project`, `template` and `component` need a network
//! or another repository and are refused, saying how to vendor the file.

use std::collections::{BTreeMap, HashMap};

use crate::config::{
    self, Config, Ctx, ParseOptions, Rule, count, parse_rules, parse_variables, scalar, unknown_key,
};
use crate::diag::{Diagnostic, Pos, cut};
use crate::model::When;
use crate::plan::{Context, Env, Repository};
use crate::vars::expand;
use crate::yaml::{Kind, Node};

/// The most files a pipeline may include, nested ones and repeats counted
/// (as GitLab).
pub const MAX_INCLUDES: usize = 150;

/// The deepest nesting of `include` (as GitLab).
pub const MAX_INCLUDE_DEPTH: usize = 100;

/// The keys of an `include` entry.
const ENTRY_KEYS: &[&str] = &[
    "local",
    "remote",
    "project",
    "file",
    "ref",
    "template",
    "component",
    "rules",
    "inputs",
    "cache",
    "integrity",
];

impl Config {
    /// Parses and validates the pipeline file `text`, found at `path` in
    /// `repo` (e.g. `.gitlab-ci.yml`), merging in the files it includes
    /// (read from `repo`; `include` rules evaluated against `ctx`). Like
    /// [`Config::parse`] otherwise; a diagnostic about an included file
    /// names it ([`Diagnostic::file`]).
    pub fn parse_in(
        text: &str,
        path: &str,
        options: &ParseOptions,
        repo: &dyn Repository,
        ctx: &Context,
    ) -> Result<(Config, Vec<Diagnostic>), Vec<Diagnostic>> {
        let mut cx = Ctx { diags: Vec::new() };
        let env = Env::new(ctx, repo);
        let main = path.trim_start_matches('/').trim_start_matches("./");
        let mut loader = Loader {
            env: &env,
            repo,
            options,
            vars: BTreeMap::new(),
            files: vec![main.to_string()],
            bytes: text.len(),
            nodes: 0,
            rules: false,
            failed: false,
        };
        let config = config::document_root(text, options, 0, &mut cx).and_then(|root| {
            if root.get("include").is_none() {
                return config::build(root, options, &mut cx);
            }
            loader.nodes = count(&root);
            // The variables `include` sees: the main file's globals (an
            // invalid one is reported when the config is built).
            let globals = root
                .get("variables")
                .map(|v| parse_variables(&mut Ctx { diags: Vec::new() }, v))
                .unwrap_or_default();
            loader.vars = env.include_variables(&globals);
            let mut chain = vec![main.to_string()];
            let root = loader.expand(&mut cx, root, &mut chain);
            if loader.failed {
                return None;
            }
            let mut config = config::build(root, options, &mut cx)?;
            config.included = loader.files[1..].to_vec();
            config.include_rules = loader.rules;
            Some(config)
        });
        let mut diags = cx.diags;
        for d in &mut diags {
            if d.pos.file > 0 {
                d.file = loader.files.get(usize::from(d.pos.file)).cloned();
            }
        }
        config::finish(config, diags)
    }
}

/// Where an entry's files come from.
struct Entry {
    /// The path or glob as written (variables not yet expanded).
    local: String,
    /// Where it is written.
    pos: Pos,
    rules: Option<Vec<Rule>>,
}

struct Loader<'a> {
    env: &'a Env<'a>,
    repo: &'a dyn Repository,
    options: &'a ParseOptions,
    /// The variables of paths and `rules:if`.
    vars: BTreeMap<String, String>,
    /// The files read, by index in the parse ([`Pos`]): the main file
    /// first.
    files: Vec<String>,
    /// The bytes and nodes read so far.
    bytes: usize,
    nodes: usize,
    /// Whether an entry had rules.
    rules: bool,
    /// Whether an include failed (the rest is not checked: its errors
    /// would only echo the missing files).
    failed: bool,
}

impl Loader<'_> {
    fn error(&mut self, cx: &mut Ctx, pos: Pos, message: impl Into<String>) {
        cx.error(pos, message);
        self.failed = true;
    }

    /// `root` with the files its `include` names merged in (recursively);
    /// `chain`: the files including it, itself last.
    fn expand(&mut self, cx: &mut Ctx, root: Node, chain: &mut Vec<String>) -> Node {
        let Kind::Map(entries) = root.kind else {
            return root;
        };
        let (includes, own): (Vec<_>, Vec<_>) =
            entries.into_iter().partition(|(k, _)| k.name == "include");
        let own = Node {
            kind: Kind::Map(own),
            ..root
        };
        let mut merged: Option<Node> = None;
        for (key, value) in includes {
            for entry in self.entries(cx, key.pos, &value) {
                for (path, pos) in self.paths(cx, &entry) {
                    let Some(node) = self.load(cx, &path, pos, chain) else {
                        continue;
                    };
                    merged = Some(match merged {
                        None => node,
                        Some(m) => merge(m, node),
                    });
                }
            }
        }
        match merged {
            Some(m) => merge(m, own),
            None => own,
        }
    }

    /// The entries of an `include` value (its key at `key`); refused ones
    /// are reported.
    fn entries(&mut self, cx: &mut Ctx, key: Pos, node: &Node) -> Vec<Entry> {
        let items: Vec<&Node> = match &node.kind {
            Kind::Seq(items) => items.iter().collect(),
            _ if node.is_null() => {
                self.error(
                    cx,
                    key,
                    "`include` is empty: name a file, a list of files or `local: path`",
                );
                return Vec::new();
            }
            _ => vec![node],
        };
        items
            .into_iter()
            .filter_map(|item| self.entry(cx, item))
            .collect()
    }

    fn entry(&mut self, cx: &mut Ctx, item: &Node) -> Option<Entry> {
        if let Some(text) = item.as_str() {
            if text.starts_with("http://") || text.starts_with("https://") {
                let why = refusal("remote", text, None);
                self.error(cx, item.pos, why);
                return None;
            }
            return Some(Entry {
                local: text.to_string(),
                pos: item.pos,
                rules: None,
            });
        }
        let Some(map) = item.as_map() else {
            self.error(
                cx,
                item.pos,
                format!(
                    "an entry of `include` must be a path or a mapping such as `local: path`, not {}",
                    item.describe()
                ),
            );
            return None;
        };
        let mut errors = 0;
        for (k, v) in map {
            if !ENTRY_KEYS.contains(&k.name.as_str()) {
                unknown_key(cx, k, ENTRY_KEYS, "an entry of `include`");
                errors += 1;
            } else if k.name == "inputs" {
                cx.error(
                    k.pos,
                    "`include:inputs` is not supported: berth does not read `spec:inputs`; write the values into the included file",
                );
                errors += 1;
            } else if let Some(kind) = ["remote", "project", "template", "component"]
                .into_iter()
                .find(|n| *n == k.name)
            {
                let what = v.as_str().unwrap_or_default();
                let file = item.get("file").and_then(Node::as_str);
                cx.error(k.pos, refusal(kind, what, file));
                errors += 1;
            }
        }
        if errors > 0 {
            self.failed = true;
            return None;
        }
        let Some(local) = item.get("local") else {
            self.error(
                cx,
                item.pos,
                "an entry of `include` needs `local: path` (or `remote`, `project`, `template`, `component`, which berth refuses)",
            );
            return None;
        };
        let local = scalar(cx, local, "`include:local`").map(|s| (s, local.pos));
        let rules = match item.get("rules") {
            Some(r) => {
                self.rules = true;
                Some(self.rules(cx, r)?)
            }
            None => None,
        };
        let Some((local, pos)) = local else {
            self.failed = true;
            return None;
        };
        Some(Entry { local, pos, rules })
    }

    /// An entry's `rules`: `if`, `exists`, `changes`, `when: always|never`.
    fn rules(&mut self, cx: &mut Ctx, node: &Node) -> Option<Vec<Rule>> {
        let errors = cx.diags.len();
        // `when` is checked here; the rest is parsed as `workflow:rules`.
        let mut whens = Vec::new();
        let mut filtered = node.clone();
        if let Kind::Seq(items) = &mut filtered.kind {
            for item in items {
                let mut when = None;
                if let Kind::Map(entries) = &mut item.kind {
                    entries.retain(|(k, v)| match k.name.as_str() {
                        "if" | "exists" | "changes" => true,
                        "when" => {
                            when = Some(v.clone());
                            false
                        }
                        _ => {
                            unknown_key(
                                cx,
                                k,
                                &["if", "exists", "changes", "when"],
                                "a rule of `include`",
                            );
                            false
                        }
                    });
                }
                whens.push(when.and_then(|w| match w.as_str() {
                    Some("always") => Some(When::Always),
                    Some("never") => Some(When::Never),
                    _ => {
                        cx.error(
                            w.pos,
                            "`when` in a rule of `include` must be `always` or `never`",
                        );
                        None
                    }
                }));
            }
        }
        let mut rules = parse_rules(cx, &filtered, true)?;
        for (rule, when) in rules.iter_mut().zip(whens) {
            rule.when = when;
        }
        if cx.diags[errors..].iter().any(Diagnostic::is_error) {
            self.failed = true;
            return None;
        }
        Some(rules)
    }

    /// The files of an entry whose rules include it: its path, or the
    /// files its glob matches (sorted).
    fn paths(&mut self, cx: &mut Ctx, entry: &Entry) -> Vec<(String, Pos)> {
        if let Some(rules) = &entry.rules {
            let chosen = rules.iter().find(|r| self.env.rule_matches(r, &self.vars));
            if chosen.is_none_or(|r| r.when == Some(When::Never)) {
                return Vec::new();
            }
        }
        let written = expand(&entry.local, &|n| self.vars.get(n).cloned());
        let path = match normalize(&written) {
            Ok(p) => p,
            Err(why) => {
                self.error(cx, entry.pos, why);
                return Vec::new();
            }
        };
        if !path.contains('*') {
            return vec![(path, entry.pos)];
        }
        let room = (MAX_INCLUDES + 1).saturating_sub(self.files.len());
        let mut found = Vec::new();
        for f in self.env.repo_files() {
            if wildcard_match(&path, &f) {
                if found.len() == room {
                    self.error(
                        cx,
                        entry.pos,
                        format!(
                            "`include` of `{}` matches more files than can be included (at most {MAX_INCLUDES} in all)",
                            cut(&path)
                        ),
                    );
                    return Vec::new();
                }
                found.push(f);
            }
        }
        if found.is_empty() {
            self.error(
                cx,
                entry.pos,
                format!(
                    "`include` of `{}` matches no file in the repository",
                    cut(&path)
                ),
            );
        }
        found.sort();
        found.into_iter().map(|f| (f, entry.pos)).collect()
    }

    /// Reads, parses and expands the included file `path` (named at `pos`).
    fn load(
        &mut self,
        cx: &mut Ctx,
        path: &str,
        pos: Pos,
        chain: &mut Vec<String>,
    ) -> Option<Node> {
        if chain.iter().any(|c| c == path) {
            let mut shown = chain.clone();
            shown.push(path.to_string());
            self.error(
                cx,
                pos,
                format!("`include` forms a loop: {}", shown.join(" -> ")),
            );
            return None;
        }
        if chain.len() > MAX_INCLUDE_DEPTH {
            self.error(
                cx,
                pos,
                format!("`include` nests more than {MAX_INCLUDE_DEPTH} files deep"),
            );
            return None;
        }
        if self.files.len() > MAX_INCLUDES {
            self.error(
                cx,
                pos,
                format!(
                    "more than {MAX_INCLUDES} files are included (nested ones and repeats count)"
                ),
            );
            return None;
        }
        let Some(bytes) = self.repo.read(path) else {
            self.error(
                cx,
                pos,
                format!("the included file `{path}` does not exist in the repository"),
            );
            return None;
        };
        self.bytes = self.bytes.saturating_add(bytes.len());
        if self.bytes > self.options.max_bytes {
            self.error(
                cx,
                pos,
                format!(
                    "the included file `{path}` ({} bytes) brings the pipeline's files to {} bytes, more than the limit of {} bytes",
                    bytes.len(),
                    self.bytes,
                    self.options.max_bytes
                ),
            );
            return None;
        }
        let Ok(text) = String::from_utf8(bytes) else {
            self.error(
                cx,
                pos,
                format!("the included file `{path}` is not UTF-8 text"),
            );
            return None;
        };
        let Ok(index) = u16::try_from(self.files.len()) else {
            self.error(cx, pos, "too many included files");
            return None;
        };
        self.files.push(path.to_string());
        let options = ParseOptions {
            max_bytes: usize::MAX,
            ..*self.options
        };
        let Some(node) = config::document_root(&text, &options, index, cx) else {
            self.failed = true;
            return None;
        };
        self.nodes = self.nodes.saturating_add(count(&node));
        if self.nodes > self.options.max_nodes {
            self.error(
                cx,
                pos,
                format!(
                    "with `{path}` the pipeline's files have more than {} YAML nodes",
                    self.options.max_nodes
                ),
            );
            return None;
        }
        chain.push(path.to_string());
        let node = self.expand(cx, node, chain);
        chain.pop();
        Some(node)
    }
}

/// Why an include of `kind` is refused, and what to do instead.
fn refusal(kind: &str, what: &str, file: Option<&str>) -> String {
    let what = cut(what);
    let how = "commit it in this repository and include it with `local: path`";
    match kind {
        "remote" => format!(
            "`include:remote` (`{what}`) is not supported: berth fetches nothing over the network; download the file, {how}"
        ),
        "project" => format!(
            "`include:project` (`{what}`{}) is not supported: berth reads no other repository; copy the file, {how}",
            file.map(|f| format!(", file `{}`", cut(f)))
                .unwrap_or_default()
        ),
        "template" => format!(
            "`include:template` (`{what}`) is not supported: GitLab's templates are not bundled with berth; copy the template from GitLab's sources (lib/gitlab/ci/templates), {how}"
        ),
        _ => format!(
            "`include:component` (`{what}`) is not supported: berth has no CI/CD catalog; copy the component's template, {how}"
        ),
    }
}

/// A local path made relative to the repository's root: `/` and `./`
/// dropped; `..`, an empty path or one not ending in `.yml`/`.yaml`
/// refused.
fn normalize(written: &str) -> Result<String, String> {
    let mut parts = Vec::new();
    for part in written.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(format!(
                    "the included path `{}` leaves the repository (`..`)",
                    cut(written)
                ));
            }
            p => parts.push(p),
        }
    }
    let path = parts.join("/");
    if path.is_empty() {
        return Err(format!(
            "the included path `{}` names no file",
            cut(written)
        ));
    }
    if !path.ends_with(".yml") && !path.ends_with(".yaml") {
        return Err(format!(
            "the included file `{}` must end in `.yml` or `.yaml`",
            cut(written)
        ));
    }
    Ok(path)
}

/// GitLab's match of an `include:local` glob: `**` matches anything, `*`
/// anything but `/`, every other character itself. Linear in the path for
/// each position of the pattern (no backtracking blow-up).
pub(crate) fn wildcard_match(pattern: &str, path: &str) -> bool {
    enum Tok {
        Byte(u8),
        Star,
        Any,
    }
    let p = pattern.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < p.len() {
        if p[i] == b'*' {
            let double = p.get(i + 1) == Some(&b'*');
            while i < p.len() && p[i] == b'*' {
                i += 1;
            }
            toks.push(if double { Tok::Any } else { Tok::Star });
        } else {
            toks.push(Tok::Byte(p[i]));
            i += 1;
        }
    }
    let s = path.as_bytes();
    // ok[j]: the tokens so far match the first j bytes of the path.
    let mut ok = vec![false; s.len() + 1];
    ok[0] = true;
    for tok in &toks {
        let mut next = vec![false; s.len() + 1];
        match tok {
            Tok::Byte(b) => {
                for j in 0..s.len() {
                    next[j + 1] = ok[j] && s[j] == *b;
                }
            }
            Tok::Star | Tok::Any => {
                let crosses = matches!(tok, Tok::Any);
                let mut reach = false;
                for j in 0..=s.len() {
                    reach = ok[j] || (reach && j > 0 && (crosses || s[j - 1] != b'/'));
                    next[j] = reach;
                }
            }
        }
        ok = next;
    }
    ok[s.len()]
}

/// GitLab's deep merge (of `extends`, and of included files): mappings
/// merge key by key (recursively, `over` winning), all else (lists,
/// scalars) is replaced by `over`. Keys are looked up by hash: a file may
/// have thousands.
pub(crate) fn merge(base: Node, over: Node) -> Node {
    match (base.kind, over.kind) {
        (Kind::Map(mut b), Kind::Map(o)) => {
            let mut index: HashMap<String, usize> = b
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (k.name.clone(), i))
                .collect();
            for (k, v) in o {
                match index.get(&k.name) {
                    Some(&i) => {
                        let old = std::mem::replace(&mut b[i].1, placeholder());
                        b[i] = (k, merge(old, v));
                    }
                    None => {
                        index.insert(k.name.clone(), b.len());
                        b.push((k, v));
                    }
                }
            }
            Node {
                kind: Kind::Map(b),
                pos: over.pos,
                tag: None,
            }
        }
        (_, kind) => Node {
            kind,
            pos: over.pos,
            tag: over.tag,
        },
    }
}

fn placeholder() -> Node {
    Node {
        kind: Kind::Seq(Vec::new()),
        pos: Pos::default(),
        tag: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_as_gitlab() {
        assert!(wildcard_match("ci/*.yml", "ci/a.yml"));
        assert!(!wildcard_match("ci/*.yml", "ci/sub/a.yml"));
        assert!(wildcard_match("ci/**.yml", "ci/sub/a.yml"));
        assert!(wildcard_match("ci/**.yml", "ci/a.yml"));
        assert!(wildcard_match("ci/**/*.yml", "ci/sub/a.yml"));
        assert!(!wildcard_match("ci/**/*.yml", "ci/a.yml"));
        assert!(!wildcard_match("ci/*.yml", "ci/a.yaml"));
        assert!(wildcard_match("a.yml", "a.yml"));
        assert!(!wildcard_match("a.yml", "b.yml"));
        // No exponential backtracking.
        let long = "a".repeat(5000);
        assert!(!wildcard_match(&"*a".repeat(50), &format!("{long}b")));
    }

    #[test]
    fn paths_are_normalized() {
        assert_eq!(normalize("/ci/a.yml").unwrap(), "ci/a.yml");
        assert_eq!(normalize("./ci//a.yaml").unwrap(), "ci/a.yaml");
        assert!(normalize("../x.yml").unwrap_err().contains("leaves"));
        assert!(normalize("ci/a.txt").unwrap_err().contains(".yml"));
        assert!(normalize("/").unwrap_err().contains("names no file"));
    }
}
