//! Network namespaces on a bridge, and links cut with nftables, for the
//! partitions variant.
//!
//! Layout (`T` is a tag made of this process's pid and a counter, so two
//! campaigns never share a name):
//!
//! ```text
//!   T-hub: bridge br0 ─┬─ veth ── T-m1  eth0 10.213.Y.11   (a master)
//!                      ├─ veth ── T-a0  eth0 10.213.Y.21   (an agent)
//!                      ├─ veth ── T-cli eth0 10.213.Y.30   (berth run clients)
//!                      └─ veth ── root namespace: To 10.213.Y.254 (the observer)
//! ```
//!
//! The bridge lives in a namespace of its own; the only thing made in the
//! host's namespace is the observer's veth `To` (the harness asks the
//! masters over it, and it is never cut), with an address on a /24 that
//! no route of the host uses. Each node's namespace holds one nftables
//! table, `inet berth_campaign`, whose set `blocked` lists the addresses
//! it drops in both directions: cutting a link puts each end's address in
//! the other's set. [`Net`] deletes everything it made when it is dropped,
//! also on a panic; [`clean_stale`] removes what a killed campaign left.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

/// The nftables table each node's namespace holds.
const TABLE: &str = "inet berth_campaign";
/// Names of everything this module makes start with this.
const PREFIX: &str = "bc";

/// Why the partitions variant cannot run here, if it cannot.
pub(crate) fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("the partitions variant needs root (network namespaces, nftables)".into());
    }
    for (tool, arg) in [("ip", "-V"), ("nft", "--version")] {
        let ok = Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Some(format!(
                "the partitions variant needs `{tool}` (Debian: apt-get install iproute2 nftables)"
            ));
        }
    }
    None
}

/// A node of the network: a namespace with one address.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// The campaign's short name ("m1", "a0", "cli").
    pub(crate) name: String,
    /// The namespace.
    pub(crate) ns: String,
    /// Its address on the bridge.
    pub(crate) ip: String,
}

/// Namespaces, a bridge and the cut links between them.
#[derive(Debug)]
pub(crate) struct Net {
    tag: String,
    hub: String,
    observer_link: String,
    nodes: Vec<Node>,
    /// Per node name, the addresses it drops.
    blocked: BTreeMap<String, BTreeSet<String>>,
    /// Namespaces made so far (deleted on drop).
    made: Vec<String>,
}

impl Net {
    /// Makes the namespaces for `nodes` (name and last octet of its
    /// address), the bridge and the observer's link.
    ///
    /// # Errors
    /// When a command fails; what was made is removed again.
    pub(crate) fn create(nodes: &[(&str, u8)]) -> anyhow::Result<Self> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        clean_stale();
        let tag = format!(
            "{PREFIX}{}x{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let subnet = free_subnet()?;
        let mut net = Self {
            hub: format!("{tag}-hub"),
            observer_link: format!("{tag}o"),
            tag,
            nodes: Vec::new(),
            blocked: BTreeMap::new(),
            made: Vec::new(),
        };
        // From here on, a failure drops `net`, which removes what exists.
        net.add_ns(&net.hub.clone())?;
        let hub = net.hub.clone();
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for (i, (name, octet)) in nodes.iter().enumerate() {
            let ns = format!("{}-{name}", net.tag);
            net.add_ns(&ns)?;
            let port = format!("p{i}");
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"])?;
            let addr = format!("{subnet}.{octet}");
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            nft(
                &ns,
                &format!(
                    "add table {TABLE}\n\
                     add set {TABLE} blocked {{ type ipv4_addr; }}\n\
                     add chain {TABLE} input {{ type filter hook input priority 0; }}\n\
                     add chain {TABLE} output {{ type filter hook output priority 0; }}\n\
                     add rule {TABLE} input ip saddr @blocked drop\n\
                     add rule {TABLE} output ip daddr @blocked drop\n"
                ),
            )?;
            net.blocked.insert((*name).to_string(), BTreeSet::new());
            net.nodes.push(Node {
                name: (*name).to_string(),
                ns,
                ip: addr,
            });
        }
        let link = net.observer_link.clone();
        ip(&[
            "link", "add", &link, "type", "veth", "peer", "name", "obs", "netns", &hub,
        ])?;
        ip(&["-n", &hub, "link", "set", "obs", "master", "br0", "up"])?;
        ip(&["addr", "add", &format!("{subnet}.254/24"), "dev", &link])?;
        ip(&["link", "set", &link, "up"])?;
        Ok(net)
    }

    fn add_ns(&mut self, ns: &str) -> anyhow::Result<()> {
        ip(&["netns", "add", ns])?;
        self.made.push(ns.to_string());
        ip(&["-n", ns, "link", "set", "lo", "up"])
    }

    /// The node called `name`.
    ///
    /// # Panics
    /// For a name the campaign did not create (a bug in the campaign).
    pub(crate) fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Cuts every link between a node of `a` and a node of `b`, both ways.
    ///
    /// # Errors
    /// When nft fails.
    pub(crate) fn cut(&mut self, a: &[String], b: &[String]) -> anyhow::Result<()> {
        self.change(a, b, true)
    }

    /// Restores the links [`Net::cut`] cut between `a` and `b`.
    ///
    /// # Errors
    /// When nft fails.
    pub(crate) fn heal(&mut self, a: &[String], b: &[String]) -> anyhow::Result<()> {
        self.change(a, b, false)
    }

    /// Restores every link.
    ///
    /// # Errors
    /// When nft fails.
    pub(crate) fn heal_all(&mut self) -> anyhow::Result<()> {
        let names: Vec<String> = self.blocked.keys().cloned().collect();
        for set in self.blocked.values_mut() {
            set.clear();
        }
        for name in names {
            self.apply(&name)?;
        }
        Ok(())
    }

    fn change(&mut self, a: &[String], b: &[String], block: bool) -> anyhow::Result<()> {
        let mut touched = BTreeSet::new();
        for x in a {
            for y in b {
                if x == y {
                    continue;
                }
                for (from, to) in [(x, y), (y, x)] {
                    let addr = self.node(to).ip.clone();
                    let set = self
                        .blocked
                        .get_mut(from)
                        .with_context(|| format!("no node {from}"))?;
                    if block {
                        set.insert(addr);
                    } else {
                        set.remove(&addr);
                    }
                    touched.insert(from.clone());
                }
            }
        }
        for name in touched {
            self.apply(&name)?;
        }
        Ok(())
    }

    /// Writes a node's blocked set, replacing what its namespace had.
    fn apply(&self, name: &str) -> anyhow::Result<()> {
        let node = self.node(name);
        let set = &self.blocked[name];
        let mut script = format!("flush set {TABLE} blocked\n");
        if !set.is_empty() {
            let list: Vec<&str> = set.iter().map(String::as_str).collect();
            script.push_str(&format!(
                "add element {TABLE} blocked {{ {} }}\n",
                list.join(", ")
            ));
        }
        nft(&node.ns, &script)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth ends (and so their peers,
        // the observer's link included) and its nftables table. Processes
        // in it must be gone first: the cluster stops them before.
        if let Err(e) = ip(&["link", "del", &self.observer_link]) {
            eprintln!("campaign: removing link {}: {e:#}", self.observer_link);
        }
        for ns in self.made.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("campaign: removing namespace {ns}: {e:#}");
            }
        }
    }
}

/// Removes namespaces and links of campaigns whose process is gone (one
/// killed with SIGKILL cannot clean up). Only names of this module's exact
/// shape (`bc<pid>x<n>-…`, `bc<pid>x<n>o`) are touched.
pub(crate) fn clean_stale() {
    let dead = |name: &str| {
        owner_pid(name).is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    };
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if name.contains('-') && dead(name) {
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
    if let Ok(out) = Command::new("ip").args(["-o", "link", "show"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "7: bc123x0o@if3: <...>"
            let Some(name) = line
                .split(": ")
                .nth(1)
                .map(|n| n.split('@').next().unwrap_or(n))
            else {
                continue;
            };
            if name.ends_with('o') && dead(name) {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
}

/// The pid in a name this module made, if the name has its shape.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, rest) = rest.split_once('x')?;
    let seq_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    if pid.is_empty() || seq_end == 0 || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let tail = &rest[seq_end..];
    let shaped = tail == "o"
        || tail
            .strip_prefix('-')
            .is_some_and(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric()));
    if !shaped {
        return None;
    }
    pid.parse().ok()
}

/// A /24 of 10.213.0.0/16 that no address or route of the host's
/// namespace touches, as "10.213.Y".
fn free_subnet() -> anyhow::Result<String> {
    let mut used = String::new();
    for args in [
        &["-4", "-o", "addr", "show"][..],
        &["-4", "route", "show", "table", "all"][..],
    ] {
        let out = Command::new("ip")
            .args(args)
            .output()
            .context("cannot run ip")?;
        used.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    let start = std::process::id() % 250;
    for k in 0..250 {
        let y = (start + k) % 250 + 1;
        let prefix = format!("10.213.{y}.");
        let whole = format!("10.213.{y}.0/");
        if !used.contains(&prefix) && !used.contains(&whole) && !used.contains("10.213.0.0/16") {
            return Ok(format!("10.213.{y}"));
        }
    }
    bail!("no free /24 in 10.213.0.0/16 on this host")
}

/// Runs `ip` with `args`; its stderr is the error.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run ip")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs an nft script in namespace `ns`.
fn nft(ns: &str, script: &str) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nft")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft in {ns} failed: {} (script: {})",
            String::from_utf8_lossy(&out.stderr).trim(),
            berth_proto::quoted(script)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether namespaces can be made here: under CI they must, elsewhere
    /// the test is skipped with a notice.
    fn can_run() -> bool {
        let Some(why) = unavailable() else {
            return true;
        };
        assert!(std::env::var_os("CI").is_none(), "CI is set but {why}");
        eprintln!("skipping: {why}");
        false
    }

    fn blocked_in(ns: &str) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "nft",
                "list",
                "set",
                "inet",
                "berth_campaign",
                "blocked",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn what_a_killed_campaign_left_is_removed_and_nothing_else() {
        if !can_run() {
            return;
        }
        // No process has pid 4294967 (above Linux's largest pid_max); this
        // process is alive.
        let dead = "bc4294967x0-t";
        let alive = format!("bc{}x999-t", std::process::id());
        for ns in [dead, &alive] {
            ip(&["netns", "add", ns]).unwrap();
        }
        clean_stale();
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        let list = String::from_utf8_lossy(&list.stdout).into_owned();
        let _ = ip(&["netns", "del", &alive]);
        let _ = ip(&["netns", "del", dead]);
        assert!(!list.contains(dead), "{list}");
        assert!(list.contains(&alive), "{list}");
    }

    #[test]
    fn cuts_are_rules_on_both_ends_and_everything_goes_when_dropped() {
        if !can_run() {
            return;
        }
        let mut net = Net::create(&[("x", 11), ("y", 12), ("z", 13)]).unwrap();
        let (x, y, z) = (
            net.node("x").clone(),
            net.node("y").clone(),
            net.node("z").clone(),
        );
        let link = net.observer_link.clone();
        net.cut(&["x".into()], &["y".into(), "z".into()]).unwrap();
        assert!(blocked_in(&x.ns).contains(&y.ip) && blocked_in(&x.ns).contains(&z.ip));
        assert!(blocked_in(&y.ns).contains(&x.ip) && !blocked_in(&y.ns).contains(&z.ip));
        net.heal(&["x".into()], &["y".into()]).unwrap();
        assert!(!blocked_in(&x.ns).contains(&y.ip) && blocked_in(&x.ns).contains(&z.ip));
        assert!(!blocked_in(&y.ns).contains(&x.ip));
        net.heal_all().unwrap();
        assert!(!blocked_in(&z.ns).contains(&x.ip));
        let made = net.made.clone();
        drop(net);
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        let list = String::from_utf8_lossy(&list.stdout);
        for ns in made {
            assert!(!list.contains(&ns), "{ns} left behind");
        }
        let links = Command::new("ip")
            .args(["-o", "link", "show"])
            .output()
            .unwrap();
        assert!(!String::from_utf8_lossy(&links.stdout).contains(&link));
    }

    #[test]
    fn only_names_of_our_shape_carry_an_owner() {
        assert_eq!(owner_pid("bc123x0-m1"), Some(123));
        assert_eq!(owner_pid("bc123x12-hub"), Some(123));
        assert_eq!(owner_pid("bc123x0o"), Some(123));
        for other in [
            "bc123x0",
            "bcx0-m1",
            "bc12ax0-m1",
            "br0",
            "docker0",
            "bc123x-m1",
            "bc1x0-",
        ] {
            assert_eq!(owner_pid(other), None, "{other}");
        }
    }
}
