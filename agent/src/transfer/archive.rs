//! Tar archives in and out of a sandbox, safely.
//!
//! [`extract`] unpacks a fetched tar or tar.gz into a directory of the
//! sandbox and refuses every entry that would put anything outside it:
//! absolute paths, `..`, symlinks whose target leaves the directory, hard
//! links to outside, and any write through a symlink already on disk (so a
//! symlink planted by an earlier entry cannot redirect a later one).
//! [`build`] packs the files of a sandbox that match an output's globs into
//! a tar.gz, storing symlinks as symlinks without following them.
//!
//! Both are blocking (the `tar` and `flate2` crates are synchronous); the
//! agent runs them with `spawn_blocking`.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use globset::GlobSet;
use tar::EntryType;

/// Files of the sandbox root the agent keeps for itself; never archived.
pub(crate) const AGENT_FILE_PREFIX: &str = ".berth-";

/// What [`extract`] unpacked.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extracted {
    /// Entries written (files, directories, links).
    pub(crate) entries: u64,
    /// Bytes of file content written.
    pub(crate) bytes: u64,
}

/// A path inside the archive (or a link target) reduced to its normal
/// components, or an error when it is absolute or has `..`.
fn clean_relative(path: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!("{} contains \"..\"", path.display()));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("{} is absolute", path.display()));
            }
        }
    }
    Ok(out)
}

/// Creates `root/rel` and its missing parents, refusing to go through a
/// symlink or a non-directory on the way.
pub(crate) fn create_dirs_inside(root: &Path, rel: &Path) -> Result<(), String> {
    let mut at = root.to_path_buf();
    for c in rel.components() {
        let Component::Normal(n) = c else {
            return Err(format!("{} is not a plain relative path", rel.display()));
        };
        at.push(n);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!("{} goes through a symlink", rel.display()));
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "{} is not a directory",
                    at.strip_prefix(root).unwrap_or(&at).display()
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&at).map_err(|e| format!("cannot create {}: {e}", at.display()))?;
            }
            Err(e) => return Err(format!("cannot inspect {}: {e}", at.display())),
        }
    }
    Ok(())
}

/// Makes room for a file or link at `path`: an existing file or link is
/// removed (never written through); an existing directory is an error.
fn replace_slot(path: &Path, shown: &Path) -> Result<(), String> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(format!("{} is already a directory", shown.display())),
        Ok(_) => {
            fs::remove_file(path).map_err(|e| format!("cannot replace {}: {e}", shown.display()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot inspect {}: {e}", shown.display())),
    }
}

/// Whether a symlink at `entry` (relative to the extraction directory)
/// pointing to `target` stays inside that directory, judged on the paths
/// alone.
fn link_stays_inside(entry: &Path, target: &Path) -> bool {
    if target.has_root() {
        return false;
    }
    // Depth of the link's directory below the extraction directory.
    let mut depth = entry.components().count().saturating_sub(1);
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                if depth == 0 {
                    return false;
                }
                depth -= 1;
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Unpacks the tar archive `archive` (gzip-compressed or not, told by its
/// first bytes) into `root/dest`, writing at most `max_bytes` of file
/// content. `root` is the sandbox; `dest` a validated relative path in it
/// (empty for the sandbox itself).
///
/// Refused (the error names the entry): absolute paths, `..`, symlinks to
/// absolute paths or out of `dest`, hard links to outside `dest` or to
/// anything but a regular file, writes through symlinks, device files and
/// FIFOs. Permission bits are kept without setuid, setgid and sticky.
/// Entries already written stay on disk when a later one is refused.
/// Once `cancel` is set it stops before the next entry (the fetch was
/// killed or timed out), so nothing more is written into the sandbox.
pub(crate) fn extract(
    archive: &Path,
    root: &Path,
    dest: &Path,
    max_bytes: u64,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<Extracted, String> {
    let mut file = File::open(archive).map_err(|e| format!("cannot open the download: {e}"))?;
    let mut magic = [0u8; 2];
    let gzip = match file.read_exact(&mut magic) {
        Ok(()) => magic == [0x1f, 0x8b],
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => false,
        Err(e) => return Err(format!("cannot read the download: {e}")),
    };
    file.seek(SeekFrom::Start(0))
        .map_err(|e| format!("cannot read the download: {e}"))?;
    let reader: Box<dyn Read> = if gzip {
        Box::new(MultiGzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    create_dirs_inside(root, dest)?;
    let base = root.join(dest);
    let mut archive = tar::Archive::new(reader);
    let mut done = Extracted::default();
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?;
    for entry in entries {
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(format!(
                "extraction cancelled after {} entries",
                done.entries
            ));
        }
        let mut entry = entry.map_err(|e| format!("corrupt archive: {e}"))?;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            continue;
        }
        let raw = entry
            .path()
            .map_err(|e| format!("an entry has an unreadable path: {e}"))?
            .into_owned();
        let rel = clean_relative(&raw).map_err(|e| format!("entry {e}: refusing to extract"))?;
        let shown = raw.display();
        if rel.as_os_str().is_empty() {
            if kind.is_dir() {
                continue;
            }
            return Err(format!("entry {shown:?} has no file name"));
        }
        if let Some(parent) = rel.parent() {
            create_dirs_inside(&base, parent).map_err(|e| format!("entry {shown:?}: {e}"))?;
        }
        let path = base.join(&rel);
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                replace_slot(&path, &rel).map_err(|e| format!("entry {shown:?}: {e}"))?;
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| format!("entry {shown:?}: cannot create: {e}"))?;
                let left = max_bytes.saturating_sub(done.bytes);
                let copied = io::copy(&mut (&mut entry).take(left.saturating_add(1)), &mut out)
                    .map_err(|e| format!("entry {shown:?}: {e}"))?;
                if copied > left {
                    return Err(format!(
                        "the archive unpacks to more than the limit of {max_bytes} bytes"
                    ));
                }
                out.flush().map_err(|e| format!("entry {shown:?}: {e}"))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(|e| format!("entry {shown:?}: cannot set its mode: {e}"))?;
                done.bytes += copied;
            }
            EntryType::Directory => {
                create_dirs_inside(&base, &rel).map_err(|e| format!("entry {shown:?}: {e}"))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode | 0o700))
                    .map_err(|e| format!("entry {shown:?}: cannot set its mode: {e}"))?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| format!("entry {shown:?}: unreadable link target: {e}"))?
                    .ok_or_else(|| format!("entry {shown:?}: symlink without a target"))?
                    .into_owned();
                if !link_stays_inside(&rel, &target) {
                    return Err(format!(
                        "entry {shown:?}: symlink to {:?} points outside the target directory",
                        target.display()
                    ));
                }
                replace_slot(&path, &rel).map_err(|e| format!("entry {shown:?}: {e}"))?;
                std::os::unix::fs::symlink(&target, &path)
                    .map_err(|e| format!("entry {shown:?}: cannot create the symlink: {e}"))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| format!("entry {shown:?}: unreadable link target: {e}"))?
                    .ok_or_else(|| format!("entry {shown:?}: hard link without a target"))?
                    .into_owned();
                let target_rel = clean_relative(&target).map_err(|e| {
                    format!("entry {shown:?}: hard link target {e}: refusing to extract")
                })?;
                if let Some(parent) = target_rel.parent() {
                    // Only checks: every directory on the way must be real.
                    create_dirs_inside(&base, parent)
                        .map_err(|e| format!("entry {shown:?}: hard link target {e}"))?;
                }
                let source = base.join(&target_rel);
                match fs::symlink_metadata(&source) {
                    Ok(m) if m.is_file() => {}
                    _ => {
                        return Err(format!(
                            "entry {shown:?}: hard link target {:?} is not a file extracted before it",
                            target.display()
                        ));
                    }
                }
                replace_slot(&path, &rel).map_err(|e| format!("entry {shown:?}: {e}"))?;
                fs::hard_link(&source, &path)
                    .map_err(|e| format!("entry {shown:?}: cannot create the hard link: {e}"))?;
            }
            other => {
                return Err(format!(
                    "entry {shown:?}: {other:?} entries (devices, FIFOs, ...) are not supported"
                ));
            }
        }
        done.entries += 1;
    }
    Ok(done)
}

/// What [`build`] packed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Built {
    /// Regular files and symlinks in the archive.
    pub(crate) files: u64,
    /// Size of the archive in bytes.
    pub(crate) bytes: u64,
}

/// Writes a tar.gz of the files under `sandbox` that `include` matches and
/// `exclude` does not to `out` (outside the walked tree, or one of the
/// skipped `.berth-*` files). A glob matching a directory takes everything
/// under it; an excluded directory is not entered. Paths in the archive are
/// relative to the sandbox, with `/` separators; symlinks are stored as
/// symlinks (never followed); sockets and FIFOs are skipped; `.berth-*`
/// files of the sandbox root are never included.
pub(crate) fn build(
    sandbox: &Path,
    include: &GlobSet,
    exclude: &GlobSet,
    out: &Path,
) -> Result<Built, String> {
    let file = File::create(out).map_err(|e| format!("cannot create the archive: {e}"))?;
    let mut tar = tar::Builder::new(GzEncoder::new(file, Compression::default()));
    tar.follow_symlinks(false);
    let mut built = Built::default();
    // Depth-first, in name order, without recursion: (relative dir, whether
    // a glob matched it or a directory above it).
    let mut stack: Vec<(String, bool)> = vec![(String::new(), false)];
    while let Some((dir, dir_included)) = stack.pop() {
        let full_dir = if dir.is_empty() {
            sandbox.to_path_buf()
        } else {
            sandbox.join(&dir)
        };
        let mut names: Vec<(String, fs::FileType)> = Vec::new();
        let listing = fs::read_dir(&full_dir)
            .map_err(|e| format!("cannot list {}: {e}", full_dir.display()))?;
        for item in listing {
            let item = item.map_err(|e| format!("cannot list {}: {e}", full_dir.display()))?;
            let Ok(name) = item.file_name().into_string() else {
                tracing::warn!(dir = %full_dir.display(), "skipping a file whose name is not UTF-8");
                continue;
            };
            if dir.is_empty() && name.starts_with(AGENT_FILE_PREFIX) {
                continue;
            }
            let kind = item
                .file_type()
                .map_err(|e| format!("cannot inspect {name}: {e}"))?;
            names.push((name, kind));
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        let mut subdirs = Vec::new();
        for (name, kind) in names {
            let rel = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            if exclude.is_match(&rel) {
                continue;
            }
            let included = dir_included || include.is_match(&rel);
            let full = sandbox.join(&rel);
            if kind.is_dir() {
                if included {
                    tar.append_dir(&rel, &full)
                        .map_err(|e| format!("cannot add {rel}: {e}"))?;
                }
                subdirs.push((rel, included));
            } else if included && (kind.is_file() || kind.is_symlink()) {
                tar.append_path_with_name(&full, &rel)
                    .map_err(|e| format!("cannot add {rel}: {e}"))?;
                built.files += 1;
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    let gz = tar
        .into_inner()
        .map_err(|e| format!("cannot write the archive: {e}"))?;
    let mut file = gz
        .finish()
        .map_err(|e| format!("cannot write the archive: {e}"))?;
    file.flush()
        .map_err(|e| format!("cannot write the archive: {e}"))?;
    built.bytes = file
        .metadata()
        .map_err(|e| format!("cannot measure the archive: {e}"))?
        .len();
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::transfer::compile_globs;

    /// A raw tar header for `path` (bypassing the `tar` crate's own path
    /// checks, as a malicious archive would).
    fn raw_entry(path: &str, kind: EntryType, link: &str, data: &[u8]) -> Vec<u8> {
        let mut h = tar::Header::new_old();
        {
            let bytes = h.as_old_mut();
            bytes.name[..path.len()].copy_from_slice(path.as_bytes());
            bytes.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out
    }

    fn tar_of(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut out: Vec<u8> = entries.concat();
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir(dir.path().join("sandbox")).unwrap();
            Fixture { dir }
        }
        fn sandbox(&self) -> PathBuf {
            self.dir.path().join("sandbox")
        }
        fn extract(&self, bytes: &[u8], dest: &str) -> Result<Extracted, String> {
            let archive = self.dir.path().join("download");
            fs::write(&archive, bytes).unwrap();
            let go_on = std::sync::atomic::AtomicBool::new(false);
            extract(&archive, &self.sandbox(), Path::new(dest), 1 << 20, &go_on)
        }
    }

    #[test]
    fn a_cancelled_extraction_writes_nothing_more() {
        let f = Fixture::new();
        let mut tar = tar::Builder::new(Vec::new());
        for name in ["a", "b"] {
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, &b"x"[..]).unwrap();
        }
        let archive = f.dir.path().join("download");
        fs::write(&archive, tar.into_inner().unwrap()).unwrap();
        let cancelled = std::sync::atomic::AtomicBool::new(true);
        let err = extract(&archive, &f.sandbox(), Path::new(""), 1 << 20, &cancelled).unwrap_err();
        assert_eq!(err, "extraction cancelled after 0 entries");
        assert!(!f.sandbox().join("a").exists());
    }

    #[test]
    fn extracts_gzip_and_plain_tar_with_modes_and_links() {
        let f = Fixture::new();
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o4755);
        h.set_cksum();
        tar.append_data(&mut h, "src/run.sh", &b"hello"[..])
            .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Symlink);
        h.set_size(0);
        h.set_cksum();
        tar.append_link(&mut h, "src/alias", "run.sh").unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Link);
        h.set_size(0);
        h.set_cksum();
        tar.append_link(&mut h, "src/hard", "src/run.sh").unwrap();
        let plain = tar.into_inner().unwrap();

        let got = f.extract(&gzip(&plain), "").unwrap();
        assert_eq!(
            got,
            Extracted {
                entries: 3,
                bytes: 5
            }
        );
        let sb = f.sandbox();
        assert_eq!(fs::read_to_string(sb.join("src/run.sh")).unwrap(), "hello");
        let mode = fs::metadata(sb.join("src/run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755, "setuid dropped");
        assert_eq!(
            fs::read_link(sb.join("src/alias")).unwrap(),
            Path::new("run.sh")
        );
        assert_eq!(fs::read_to_string(sb.join("src/hard")).unwrap(), "hello");

        let got = f.extract(&plain, "sub/dir").unwrap();
        assert_eq!(got.bytes, 5);
        assert_eq!(
            fs::read_to_string(sb.join("sub/dir/src/run.sh")).unwrap(),
            "hello"
        );
    }

    #[test]
    fn refuses_entries_that_escape() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                raw_entry("../evil", EntryType::Regular, "", b"x"),
                "contains \"..\"",
            ),
            (
                raw_entry("a/../../evil", EntryType::Regular, "", b"x"),
                "contains \"..\"",
            ),
            (
                raw_entry("/tmp/evil", EntryType::Regular, "", b"x"),
                "is absolute",
            ),
            (
                raw_entry("link", EntryType::Symlink, "/etc", b""),
                "points outside",
            ),
            (
                raw_entry("a/link", EntryType::Symlink, "../../x", b""),
                "points outside",
            ),
            (
                raw_entry("hl", EntryType::Link, "../../etc/passwd", b""),
                "contains \"..\"",
            ),
            (
                raw_entry("hl", EntryType::Link, "/etc/passwd", b""),
                "is absolute",
            ),
            (raw_entry("fifo", EntryType::Fifo, "", b""), "not supported"),
        ];
        for (entry, want) in cases {
            let f = Fixture::new();
            let err = f.extract(&tar_of(&[entry]), "").unwrap_err();
            assert!(err.contains(want), "{err} (wanted {want})");
            assert!(!f.dir.path().join("evil").exists());
        }
    }

    #[test]
    fn refuses_writes_through_a_symlink() {
        // A symlink that is inside by itself, then an entry through it.
        let f = Fixture::new();
        let outside = f.dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        // `up` -> "." is inside; `up/../outside/x` has ".." and is refused, so
        // try the sneakier form: a link to a directory, then a file under it.
        let archive = tar_of(&[
            raw_entry("d", EntryType::Directory, "", b""),
            raw_entry("d/l", EntryType::Symlink, "..", b""),
            raw_entry("d/l/x", EntryType::Regular, "", b"x"),
        ]);
        let err = f.extract(&archive, "").unwrap_err();
        assert!(err.contains("goes through a symlink"), "{err}");
        assert!(!f.sandbox().join("x").exists());

        // A symlink planted outside the sandbox beforehand is not followed
        // either: the entry replaces the link instead of writing through it.
        let f = Fixture::new();
        let target = f.dir.path().join("victim");
        fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, f.sandbox().join("file")).unwrap();
        f.extract(
            &tar_of(&[raw_entry("file", EntryType::Regular, "", b"new")]),
            "",
        )
        .unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(fs::read_to_string(f.sandbox().join("file")).unwrap(), "new");
    }

    #[test]
    fn enforces_the_size_limit_and_rejects_garbage() {
        let f = Fixture::new();
        let big = vec![7u8; 2 << 20];
        let err = f
            .extract(
                &tar_of(&[raw_entry("big", EntryType::Regular, "", &big)]),
                "",
            )
            .unwrap_err();
        assert!(err.contains("more than the limit"), "{err}");
        let err = f.extract(&[b'x'; 1024], "");
        assert!(err.is_err(), "{err:?}");
    }

    #[test]
    fn link_targets_are_judged_from_the_link_directory() {
        assert!(link_stays_inside(Path::new("a/b/l"), Path::new("../x")));
        assert!(link_stays_inside(Path::new("a/b/l"), Path::new("../../x")));
        assert!(!link_stays_inside(
            Path::new("a/b/l"),
            Path::new("../../../x")
        ));
        assert!(!link_stays_inside(Path::new("l"), Path::new("..")));
        assert!(link_stays_inside(Path::new("l"), Path::new("./x/../y")));
        assert!(!link_stays_inside(Path::new("l"), Path::new("/x")));
    }

    fn entries_of(archive: &Path) -> Vec<(String, EntryType)> {
        let file = File::open(archive).unwrap();
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(file));
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path()
                        .unwrap()
                        .to_string_lossy()
                        .trim_end_matches('/')
                        .to_owned(),
                    e.header().entry_type(),
                )
            })
            .collect()
    }

    #[test]
    fn builds_archives_of_matching_files() {
        let f = Fixture::new();
        let sb = f.sandbox();
        for (p, data) in [
            ("stdout", "o"),
            (".berth-log-since", "x"),
            ("build/app", "bin"),
            ("build/tmp/junk.o", "o"),
            ("build/lib/a.so", "so"),
            ("report.txt", "r"),
            ("deep/x/y/z.txt", "z"),
            ("deep/x/y/z.log", "l"),
        ] {
            fs::create_dir_all(sb.join(p).parent().unwrap()).unwrap();
            fs::write(sb.join(p), data).unwrap();
        }
        std::os::unix::fs::symlink("/etc", sb.join("build/etc")).unwrap();
        let include = compile_globs(
            "paths",
            &[
                "build/".into(),
                "*.txt".into(),
                "deep/**/*.txt".into(),
                "missing/**".into(),
            ],
        )
        .unwrap();
        let exclude = compile_globs("exclude", &["build/tmp".into()]).unwrap();
        let out = f.dir.path().join("out.tar.gz");
        let built = build(&sb, &include, &exclude, &out).unwrap();
        let got = entries_of(&out);
        let mut names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "build",
                "build/app",
                "build/etc",
                "build/lib",
                "build/lib/a.so",
                "deep/x/y/z.txt",
                "report.txt"
            ]
        );
        assert_eq!(built.files, 5);
        assert_eq!(built.bytes, fs::metadata(&out).unwrap().len());
        assert!(got.contains(&("build/etc".into(), EntryType::Symlink)));

        // The symlink is stored, not followed out of the sandbox.
        assert!(!names.iter().any(|n| n.starts_with("build/etc/")));

        let nothing = compile_globs("paths", &["nope".into()]).unwrap();
        let built = build(&sb, &nothing, &exclude, &out).unwrap();
        assert_eq!(built.files, 0);
    }
}
