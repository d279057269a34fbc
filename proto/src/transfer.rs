//! Validation of a task's file transfers: the URIs its command fetches
//! (`CommandInfo.uris`) and the archives it uploads (`TaskInfo.outputs`).
//!
//! The master checks these when a task is accepted and the agent checks them
//! again when it is told to run it; both use these functions, so both give
//! the same error for the same input. The rules are documented on the
//! fields of `FetchUri` and `OutputUpload` in `common.proto`.

use std::path::{Component, Path, PathBuf};

use berth_scheduler_core::quoted;
use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::{CommandInfo, FetchUri, OutputUpload, TaskInfo};

/// Most URIs one command fetches.
pub const MAX_URIS: usize = 64;
/// Most outputs one task uploads.
pub const MAX_OUTPUTS: usize = 16;
/// Most globs in one output's `paths` (and, separately, in its `exclude`).
pub const MAX_GLOBS: usize = 256;
/// Longest URL, in bytes.
pub const MAX_URL_LEN: usize = 4096;
/// Longest relative path or glob, in bytes.
pub const MAX_PATH_LEN: usize = 1024;
/// Longest output name, in bytes.
pub const MAX_OUTPUT_NAME_LEN: usize = 255;

/// Where a transfer goes to or comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A plain-HTTP URL (`http://host[:port]/path[?query]`).
    Http(http::Uri),
    /// An absolute path on the agent host (`file:///path`).
    File(PathBuf),
}

/// Parses a transfer URL: `http://` with a host, or `file://` followed by an
/// absolute path.
///
/// # Errors
/// A message saying what is wrong: empty, too long, control characters, an
/// unsupported scheme, no host, not absolute, not parsable.
pub fn parse_url(url: &str) -> Result<Location, String> {
    if url.is_empty() {
        return Err("url is empty".into());
    }
    if url.len() > MAX_URL_LEN {
        return Err(format!(
            "url is {} bytes long; at most {MAX_URL_LEN} are allowed",
            url.len()
        ));
    }
    let shown = quoted(url);
    if url.chars().any(char::is_control) {
        return Err(format!("url {shown} contains control characters"));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "url {shown} has no scheme: expected http:// or file://"
        ));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "http" => {
            let uri: http::Uri = url
                .parse()
                .map_err(|e| format!("url {shown} does not parse: {e}"))?;
            if uri.host().is_none_or(str::is_empty) {
                return Err(format!("url {shown} has no host"));
            }
            Ok(Location::Http(uri))
        }
        "file" => {
            if !rest.starts_with('/') {
                return Err(format!(
                    "url {shown}: a file:// url needs an absolute path (file:///path), \
                     without a host"
                ));
            }
            let path = Path::new(rest);
            if path.components().any(|c| c == Component::ParentDir) {
                return Err(format!("url {shown}: the path must not contain \"..\""));
            }
            Ok(Location::File(path.to_path_buf()))
        }
        other => Err(format!(
            "url {shown} has the unsupported scheme {}: expected http:// or file://",
            quoted(other)
        )),
    }
}

/// Checks a path relative to the sandbox: not empty, not absolute, no `..`,
/// no NUL or other control characters, at most [`MAX_PATH_LEN`] bytes.
///
/// # Errors
/// A message naming the path and the rule it breaks.
pub fn check_relative_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("path is empty".into());
    }
    if path.len() > MAX_PATH_LEN {
        return Err(format!(
            "path is {} bytes long; at most {MAX_PATH_LEN} are allowed",
            path.len()
        ));
    }
    let shown = quoted(path);
    if path.chars().any(char::is_control) {
        return Err(format!("path {shown} contains control characters"));
    }
    if path.starts_with('/') {
        return Err(format!(
            "path {shown} is absolute; it must be relative to the sandbox"
        ));
    }
    if Path::new(path)
        .components()
        .any(|c| c == Component::ParentDir)
    {
        return Err(format!("path {shown} must not contain \"..\""));
    }
    Ok(())
}

/// Where in the sandbox a URI is fetched to, relative to the sandbox: its
/// `output_path`, else the last segment of the URL's path, else (when
/// extracting) the sandbox itself (an empty path).
///
/// # Errors
/// As [`parse_url`] and [`check_relative_path`]; also a URL whose path has
/// no file name when there is no `output_path` and nothing is extracted.
pub fn fetch_target(uri: &FetchUri) -> Result<PathBuf, String> {
    let location = parse_url(&uri.url)?;
    if !uri.output_path.is_empty() {
        check_relative_path(&uri.output_path)?;
        return Ok(PathBuf::from(&uri.output_path));
    }
    if uri.extract {
        return Ok(PathBuf::new());
    }
    let path = match &location {
        Location::Http(u) => u.path().to_owned(),
        Location::File(p) => p.to_string_lossy().into_owned(),
    };
    let name = path.rsplit('/').next().unwrap_or_default();
    if name.is_empty() || name == "." {
        return Err(format!(
            "url {} names no file; set output_path",
            quoted(&uri.url)
        ));
    }
    check_relative_path(name)?;
    Ok(PathBuf::from(name))
}

/// Checks the URIs of a command.
///
/// # Errors
/// A message like `uris[2]: url "ftp://x" has the unsupported scheme ...`.
pub fn validate_uris(uris: &[FetchUri]) -> Result<(), String> {
    if uris.len() > MAX_URIS {
        return Err(format!(
            "{} uris; at most {MAX_URIS} are allowed",
            uris.len()
        ));
    }
    for (i, uri) in uris.iter().enumerate() {
        fetch_target(uri).map_err(|e| format!("uris[{i}]: {e}"))?;
    }
    Ok(())
}

/// Compiles globs as output paths use them: `*` and `?` do not cross `/`,
/// `**` does; a trailing `/` is ignored. Each must pass
/// [`check_relative_path`].
///
/// # Errors
/// A message naming the glob (with `what`, e.g. "paths[3]") and the problem.
pub fn compile_globs(what: &str, globs: &[String]) -> Result<GlobSet, String> {
    if globs.len() > MAX_GLOBS {
        return Err(format!(
            "{what}: {} globs; at most {MAX_GLOBS} are allowed",
            globs.len()
        ));
    }
    let mut set = GlobSetBuilder::new();
    for (i, g) in globs.iter().enumerate() {
        let trimmed = g.trim_end_matches('/');
        let trimmed = trimmed.strip_prefix("./").unwrap_or(trimmed);
        check_relative_path(trimmed).map_err(|e| format!("{what}[{i}]: {e}"))?;
        set.add(
            glob(trimmed).map_err(|e| format!("{what}[{i}]: glob {}: {}", quoted(g), e.kind()))?,
        );
    }
    set.build()
        .map_err(|e| format!("{what}: cannot compile the globs: {e}"))
}

fn glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

/// Checks the outputs of a task.
///
/// # Errors
/// A message like `outputs[0]: paths is empty`.
pub fn validate_outputs(outputs: &[OutputUpload]) -> Result<(), String> {
    if outputs.len() > MAX_OUTPUTS {
        return Err(format!(
            "{} outputs; at most {MAX_OUTPUTS} are allowed",
            outputs.len()
        ));
    }
    for (i, o) in outputs.iter().enumerate() {
        let at = |e: String| format!("outputs[{i}]: {e}");
        parse_url(&o.url).map_err(at)?;
        if o.paths.is_empty() {
            return Err(at("paths is empty; name at least one glob".into()));
        }
        compile_globs("paths", &o.paths).map_err(at)?;
        compile_globs("exclude", &o.exclude).map_err(at)?;
        if crate::output_upload::When::try_from(o.when).is_err() {
            return Err(at(format!(
                "when {} is not WHEN_ON_SUCCESS (0), WHEN_ON_FAILURE (1) or WHEN_ALWAYS (2)",
                o.when
            )));
        }
        if o.name.len() > MAX_OUTPUT_NAME_LEN {
            return Err(at(format!(
                "name is {} bytes long; at most {MAX_OUTPUT_NAME_LEN} are allowed",
                o.name.len()
            )));
        }
        if o.name.chars().any(char::is_control) {
            return Err(at(format!(
                "name {} contains control characters",
                quoted(&o.name)
            )));
        }
    }
    Ok(())
}

/// Checks the transfers of a task: its command's URIs and its outputs.
///
/// # Errors
/// As [`validate_uris`] and [`validate_outputs`].
pub fn validate_task_transfers(task: &TaskInfo) -> Result<(), String> {
    validate_uris(task.command.as_ref().map_or(&[], |c: &CommandInfo| &c.uris))?;
    validate_outputs(&task.outputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(url: &str, output_path: &str, extract: bool) -> FetchUri {
        FetchUri {
            url: url.into(),
            output_path: output_path.into(),
            extract,
            ..Default::default()
        }
    }

    fn output(url: &str, paths: &[&str]) -> OutputUpload {
        OutputUpload {
            url: url.into(),
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn urls() {
        match parse_url("http://127.0.0.1:8080/src.tar.gz?rev=1").unwrap() {
            Location::Http(u) => {
                assert_eq!(u.host(), Some("127.0.0.1"));
                assert_eq!(u.port_u16(), Some(8080));
                assert_eq!(u.path(), "/src.tar.gz");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_url("file:///tmp/a b").unwrap(),
            Location::File("/tmp/a b".into())
        );
        assert_eq!(parse_url("").unwrap_err(), "url is empty");
        assert!(
            parse_url("ftp://h/x")
                .unwrap_err()
                .contains("unsupported scheme \"ftp\"")
        );
        assert!(
            parse_url("https://h/x")
                .unwrap_err()
                .contains("unsupported scheme \"https\"")
        );
        assert!(parse_url("h/x").unwrap_err().contains("no scheme"));
        assert!(parse_url("http:///x").unwrap_err().contains("parse"));
        assert!(parse_url("http://h x/").unwrap_err().contains("parse"));
        assert!(parse_url("file://host/x").unwrap_err().contains("absolute"));
        assert!(parse_url("file:///a/../etc").unwrap_err().contains(".."));
        assert!(parse_url("http://h/\n").unwrap_err().contains("control"));
        let long = format!("http://h/{}", "a".repeat(MAX_URL_LEN));
        assert!(parse_url(&long).unwrap_err().contains("at most 4096"));
    }

    #[test]
    fn relative_paths() {
        for ok in ["a", "a/b/c.txt", "./a", "a/./b", ".hidden"] {
            assert!(check_relative_path(ok).is_ok(), "{ok}");
        }
        assert_eq!(check_relative_path("").unwrap_err(), "path is empty");
        assert!(
            check_relative_path("/etc/passwd")
                .unwrap_err()
                .contains("absolute")
        );
        for bad in ["..", "../x", "a/../../x", "a/.."] {
            assert!(
                check_relative_path(bad).unwrap_err().contains(".."),
                "{bad}"
            );
        }
        assert!(check_relative_path("a\0b").unwrap_err().contains("control"));
        assert!(
            check_relative_path(&"a".repeat(MAX_PATH_LEN + 1))
                .unwrap_err()
                .contains("at most 1024")
        );
    }

    #[test]
    fn fetch_targets() {
        let t = |u: FetchUri| fetch_target(&u);
        assert_eq!(
            t(uri("http://h/x/tool.sh", "", false)).unwrap(),
            PathBuf::from("tool.sh")
        );
        assert_eq!(
            t(uri("http://h/x/src.tgz", "", true)).unwrap(),
            PathBuf::new()
        );
        assert_eq!(
            t(uri("file:///opt/data.bin", "", false)).unwrap(),
            PathBuf::from("data.bin")
        );
        assert_eq!(
            t(uri("http://h/x", "bin/x", false)).unwrap(),
            PathBuf::from("bin/x")
        );
        assert!(
            t(uri("http://h/", "", false))
                .unwrap_err()
                .contains("names no file")
        );
        assert!(
            t(uri("http://h/x", "/etc/x", false))
                .unwrap_err()
                .contains("absolute")
        );
        assert!(
            t(uri("http://h/x", "a/../../x", true))
                .unwrap_err()
                .contains("..")
        );
    }

    #[test]
    fn uri_lists() {
        assert!(validate_uris(&[]).is_ok());
        let many = vec![uri("http://h/x", "", false); MAX_URIS + 1];
        assert_eq!(
            validate_uris(&many).unwrap_err(),
            "65 uris; at most 64 are allowed"
        );
        let err = validate_uris(&[uri("http://h/x", "", false), uri("gopher://h/", "", false)])
            .unwrap_err();
        assert!(err.starts_with("uris[1]: url \"gopher://h/\""), "{err}");
    }

    #[test]
    fn globs_match_like_gitlab_paths() {
        let set = compile_globs(
            "paths",
            &[
                "*.txt".into(),
                "build/".into(),
                "out/**/*.o".into(),
                "./x/{a,b}".into(),
            ],
        )
        .unwrap();
        assert!(set.is_match("a.txt"));
        assert!(!set.is_match("dir/a.txt"), "* does not cross /");
        assert!(set.is_match("build"));
        assert!(set.is_match("out/a.o"));
        assert!(set.is_match("out/x/y/z.o"));
        assert!(!set.is_match("out/x/y/z.c"));
        assert!(set.is_match("x/a") && set.is_match("x/b") && !set.is_match("x/c"));
        assert!(
            compile_globs("paths", &["a/[".into()])
                .unwrap_err()
                .contains("paths[0]: glob")
        );
        assert!(
            compile_globs("exclude", &["/abs".into()])
                .unwrap_err()
                .contains("exclude[0]")
        );
        let many = vec!["a".to_owned(); MAX_GLOBS + 1];
        assert!(
            compile_globs("paths", &many)
                .unwrap_err()
                .contains("at most 256")
        );
    }

    #[test]
    fn output_lists() {
        assert!(validate_outputs(&[output("http://h/put", &["**"])]).is_ok());
        assert!(validate_outputs(&[output("file:///tmp/a.tgz", &["a"])]).is_ok());
        assert_eq!(
            validate_outputs(&[output("http://h/put", &[])]).unwrap_err(),
            "outputs[0]: paths is empty; name at least one glob"
        );
        assert!(
            validate_outputs(&[output("ftp://h/put", &["a"])])
                .unwrap_err()
                .starts_with("outputs[0]: url")
        );
        let mut o = output("http://h/put", &["a"]);
        o.when = 7;
        assert!(validate_outputs(&[o]).unwrap_err().contains("when 7"));
        let mut o = output("http://h/put", &["a"]);
        o.exclude = vec!["../x".into()];
        assert!(validate_outputs(&[o]).unwrap_err().contains("exclude[0]"));
        let mut o = output("http://h/put", &["a"]);
        o.name = "n".repeat(MAX_OUTPUT_NAME_LEN + 1);
        assert!(
            validate_outputs(&[o])
                .unwrap_err()
                .contains("name is 256 bytes")
        );
        let many = vec![output("http://h/put", &["a"]); MAX_OUTPUTS + 1];
        assert_eq!(
            validate_outputs(&many).unwrap_err(),
            "17 outputs; at most 16 are allowed"
        );
    }
}
