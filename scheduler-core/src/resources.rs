//! Fixed-point resources: [`Scalar`], [`PortRanges`] and [`Resources`].
//!
//! Quantities are stored as integer milli-units, never as `f64`, so sums do
//! not drift and NaN cannot exist in state. `f64` appears only at the edges
//! ([`Scalar::from_f64`], the text form) and for ordering
//! ([`Resources::dominant_share`]).
//!
//! The text form follows Mesos: `cpus:4;mem:8192;disk:10000;gpus:1;ports:[31000-32000]`.

use std::fmt;
use std::ops::{Add, AddAssign};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use crate::error::ResourceError;
use crate::error::quoted;

/// A non-negative fixed-point quantity in milli-units (`1.0 == 1000`).
///
/// At most [`Scalar::MAX_UNITS`] whole units; anything larger is rejected as
/// absurd input rather than stored.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(try_from = "u64", into = "u64")]
pub struct Scalar(u64);

impl Scalar {
    /// Zero.
    pub const ZERO: Scalar = Scalar(0);
    /// Largest accepted quantity in whole units (1e12).
    pub const MAX_UNITS: u64 = 1_000_000_000_000;
    /// Largest accepted quantity in milli-units.
    pub const MAX_MILLI: u64 = Self::MAX_UNITS * 1000;
    /// The largest scalar, [`Scalar::MAX_UNITS`] whole units.
    pub const MAX: Scalar = Scalar(Self::MAX_MILLI);

    /// A scalar of `milli` milli-units; rejects more than
    /// [`Scalar::MAX_UNITS`] whole units.
    pub fn from_milli(milli: u64) -> Result<Scalar, ResourceError> {
        if milli > Self::MAX_MILLI {
            return Err(ResourceError::TooLarge {
                name: "scalar",
                value: milli as f64 / 1000.0,
            });
        }
        Ok(Scalar(milli))
    }

    /// A scalar of `units` whole units (saturating at the maximum). Handy for
    /// constants and tests.
    pub const fn from_units(units: u64) -> Scalar {
        if units > Self::MAX_UNITS {
            Self::MAX
        } else {
            Scalar(units * 1000)
        }
    }

    /// A scalar of `milli` milli-units, saturating at the maximum. Handy for
    /// constants.
    pub const fn from_milli_saturating(milli: u64) -> Scalar {
        if milli > Self::MAX_MILLI {
            Self::MAX
        } else {
            Scalar(milli)
        }
    }

    /// Converts a user-supplied `f64` quantity named `name`, rounding to the
    /// nearest milli-unit. Rejects NaN, infinities, negatives, subnormals and
    /// values above [`Scalar::MAX_UNITS`]. `-0.0` is accepted as zero.
    pub fn from_f64(name: &'static str, v: f64) -> Result<Scalar, ResourceError> {
        if !v.is_finite() {
            return Err(ResourceError::NotFinite { name, value: v });
        }
        if v.is_subnormal() {
            return Err(ResourceError::Subnormal { name });
        }
        if v < 0.0 {
            return Err(ResourceError::Negative { name, value: v });
        }
        if v > Self::MAX_UNITS as f64 {
            return Err(ResourceError::TooLarge { name, value: v });
        }
        // v is finite, within [0, 1e12], so v * 1000 is within [0, 1e15] and
        // exactly convertible after rounding.
        let milli = (v * 1000.0).round() as u64;
        Ok(Scalar(milli.min(Self::MAX_MILLI)))
    }

    /// The quantity in milli-units.
    pub const fn milli(&self) -> u64 {
        self.0
    }

    /// The quantity as `f64` (for display and ordering only).
    pub fn to_f64(&self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// Whether this is zero.
    pub const fn is_zero(&self) -> bool {
        self.0 == 0
    }

    /// `self + other`, or `None` past the maximum.
    pub fn checked_add(&self, other: Scalar) -> Option<Scalar> {
        let sum = self.0.checked_add(other.0)?;
        (sum <= Self::MAX_MILLI).then_some(Scalar(sum))
    }

    /// `self + other`, saturating at the maximum.
    pub fn saturating_add(&self, other: Scalar) -> Scalar {
        Scalar(self.0.saturating_add(other.0).min(Self::MAX_MILLI))
    }

    /// `self - other`, or `None` if `other > self`.
    pub fn checked_sub(&self, other: Scalar) -> Option<Scalar> {
        self.0.checked_sub(other.0).map(Scalar)
    }

    /// `self - other`, saturating at zero.
    pub fn saturating_sub(&self, other: Scalar) -> Scalar {
        Scalar(self.0.saturating_sub(other.0))
    }
}

impl TryFrom<u64> for Scalar {
    type Error = ResourceError;
    fn try_from(milli: u64) -> Result<Scalar, ResourceError> {
        Scalar::from_milli(milli)
    }
}

impl From<Scalar> for u64 {
    fn from(s: Scalar) -> u64 {
        s.0
    }
}

impl fmt::Display for Scalar {
    /// Shortest exact decimal: `4`, `0.5`, `0.125`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 1000;
        let frac = self.0 % 1000;
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let digits = format!("{frac:03}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

/// A set of ports as sorted, non-overlapping, coalesced inclusive ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<(u64, u64)>", into = "Vec<(u16, u16)>")]
pub struct PortRanges(Vec<(u16, u16)>);

impl PortRanges {
    /// No ports.
    pub fn new() -> PortRanges {
        PortRanges(Vec::new())
    }

    /// Builds a set from inclusive `(begin, end)` ranges in any order;
    /// overlapping and adjacent ranges are merged. Rejects `begin > end` and
    /// ports above 65535.
    pub fn from_ranges(ranges: &[(u64, u64)]) -> Result<PortRanges, ResourceError> {
        let mut v = Vec::with_capacity(ranges.len());
        for &(begin, end) in ranges {
            if begin > end {
                return Err(ResourceError::InvalidPortRange { begin, end });
            }
            let b =
                u16::try_from(begin).map_err(|_| ResourceError::PortOutOfRange { value: begin })?;
            let e = u16::try_from(end).map_err(|_| ResourceError::PortOutOfRange { value: end })?;
            v.push((b, e));
        }
        Ok(Self::normalize(v))
    }

    /// A set holding the single range `begin..=end` (empty if `begin > end`).
    pub fn range(begin: u16, end: u16) -> PortRanges {
        if begin > end {
            PortRanges::new()
        } else {
            PortRanges(vec![(begin, end)])
        }
    }

    fn normalize(mut v: Vec<(u16, u16)>) -> PortRanges {
        v.sort_unstable();
        let mut out: Vec<(u16, u16)> = Vec::with_capacity(v.len());
        for (b, e) in v {
            match out.last_mut() {
                Some(last) if u32::from(b) <= u32::from(last.1) + 1 => {
                    last.1 = last.1.max(e);
                }
                _ => out.push((b, e)),
            }
        }
        PortRanges(out)
    }

    /// The ranges, sorted and coalesced.
    pub fn ranges(&self) -> &[(u16, u16)] {
        &self.0
    }

    /// Number of ports in the set.
    pub fn count(&self) -> u64 {
        self.0
            .iter()
            .map(|&(b, e)| u64::from(e) - u64::from(b) + 1)
            .sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `port` is in the set.
    pub fn contains_port(&self, port: u16) -> bool {
        let i = self.0.partition_point(|&(_, e)| e < port);
        self.0.get(i).is_some_and(|&(b, _)| b <= port)
    }

    /// Whether every port of `other` is in `self`.
    pub fn contains(&self, other: &PortRanges) -> bool {
        // Both are coalesced, so each range of `other` must fit inside a
        // single range of `self`.
        let mut i = 0;
        for &(b, e) in &other.0 {
            while i < self.0.len() && self.0[i].1 < b {
                i += 1;
            }
            match self.0.get(i) {
                Some(&(sb, se)) if sb <= b && e <= se => {}
                _ => return false,
            }
        }
        true
    }

    /// All ports in either set.
    pub fn union(&self, other: &PortRanges) -> PortRanges {
        if other.is_empty() {
            return self.clone();
        }
        if self.is_empty() {
            return other.clone();
        }
        let mut v = Vec::with_capacity(self.0.len() + other.0.len());
        v.extend_from_slice(&self.0);
        v.extend_from_slice(&other.0);
        Self::normalize(v)
    }

    /// Ports in both sets.
    pub fn intersection(&self, other: &PortRanges) -> PortRanges {
        let (mut i, mut j) = (0, 0);
        let mut out = Vec::new();
        while i < self.0.len() && j < other.0.len() {
            let (ab, ae) = self.0[i];
            let (bb, be) = other.0[j];
            let b = ab.max(bb);
            let e = ae.min(be);
            if b <= e {
                out.push((b, e));
            }
            if ae < be {
                i += 1;
            } else {
                j += 1;
            }
        }
        PortRanges(out)
    }

    /// Ports in `self` but not in `other` (whether or not `other` is contained).
    pub fn difference(&self, other: &PortRanges) -> PortRanges {
        let mut out = Vec::with_capacity(self.0.len());
        let mut j = 0;
        for &(b, e) in &self.0 {
            let mut cur = u32::from(b);
            let end = u32::from(e);
            while j < other.0.len() && u32::from(other.0[j].1) < cur {
                j += 1;
            }
            let mut k = j;
            while cur <= end {
                match other.0.get(k) {
                    Some(&(ob, oe)) if u32::from(ob) <= end => {
                        let (ob, oe) = (u32::from(ob), u32::from(oe));
                        if ob > cur {
                            out.push((cur, ob - 1));
                        }
                        cur = cur.max(oe + 1);
                        k += 1;
                    }
                    _ => {
                        out.push((cur, end));
                        break;
                    }
                }
            }
        }
        // Values came from u16 ranges, so they fit.
        PortRanges(out.into_iter().map(|(b, e)| (b as u16, e as u16)).collect())
    }

    /// `self` without `other`, or `None` if `other` is not contained in `self`.
    pub fn checked_sub(&self, other: &PortRanges) -> Option<PortRanges> {
        if !self.contains(other) {
            return None;
        }
        Some(self.difference(other))
    }

    /// The lowest `n` ports, or `None` if there are fewer than `n`.
    pub fn take_first(&self, n: u64) -> Option<PortRanges> {
        if self.count() < n {
            return None;
        }
        let mut left = n;
        let mut out = Vec::new();
        for &(b, e) in &self.0 {
            if left == 0 {
                break;
            }
            let len = u64::from(e) - u64::from(b) + 1;
            if len <= left {
                out.push((b, e));
                left -= len;
            } else {
                // left < len <= 65536, so b + left - 1 fits in u16.
                let last = (u64::from(b) + left - 1) as u16;
                out.push((b, last));
                left = 0;
            }
        }
        Some(PortRanges(out))
    }
}

impl TryFrom<Vec<(u64, u64)>> for PortRanges {
    type Error = ResourceError;
    fn try_from(v: Vec<(u64, u64)>) -> Result<PortRanges, ResourceError> {
        PortRanges::from_ranges(&v)
    }
}

impl From<PortRanges> for Vec<(u16, u16)> {
    fn from(p: PortRanges) -> Self {
        p.0
    }
}

impl fmt::Display for PortRanges {
    /// `[31000-32000,33000-33010]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, (b, e)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{b}-{e}")?;
        }
        f.write_str("]")
    }
}

/// The scalar dimensions of [`Resources`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScalarKind {
    /// CPU shares.
    Cpus,
    /// Memory in MiB.
    Mem,
    /// Disk in MiB.
    Disk,
    /// GPUs.
    Gpus,
}

impl ScalarKind {
    /// All scalar kinds, in text-form order.
    pub const ALL: [ScalarKind; 4] = [
        ScalarKind::Cpus,
        ScalarKind::Mem,
        ScalarKind::Disk,
        ScalarKind::Gpus,
    ];

    /// The resource name in the text form (`"cpus"`, `"mem"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            ScalarKind::Cpus => "cpus",
            ScalarKind::Mem => "mem",
            ScalarKind::Disk => "disk",
            ScalarKind::Gpus => "gpus",
        }
    }
}

/// A bundle of resources: four scalars and a set of ports. `mem` and `disk`
/// are in MiB.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    /// CPU shares.
    pub cpus: Scalar,
    /// Memory, MiB.
    pub mem: Scalar,
    /// Disk, MiB.
    pub disk: Scalar,
    /// GPUs.
    pub gpus: Scalar,
    /// Ports.
    #[serde(default)]
    pub ports: PortRanges,
}

impl Resources {
    /// No resources.
    pub fn empty() -> Resources {
        Resources::default()
    }

    /// Whether every scalar is zero and there are no ports.
    pub fn is_empty(&self) -> bool {
        self.scalars_empty() && self.ports.is_empty()
    }

    /// Whether every scalar is zero (ports are not considered).
    pub fn scalars_empty(&self) -> bool {
        ScalarKind::ALL.iter().all(|k| self.scalar(*k).is_zero())
    }

    /// Resources from user-supplied quantities (no ports), each checked by
    /// [`Scalar::from_f64`].
    pub fn from_f64(cpus: f64, mem: f64, disk: f64, gpus: f64) -> Result<Resources, ResourceError> {
        Ok(Resources {
            cpus: Scalar::from_f64("cpus", cpus)?,
            mem: Scalar::from_f64("mem", mem)?,
            disk: Scalar::from_f64("disk", disk)?,
            gpus: Scalar::from_f64("gpus", gpus)?,
            ports: PortRanges::new(),
        })
    }

    /// Replaces the ports.
    pub fn with_ports(mut self, ports: PortRanges) -> Self {
        self.ports = ports;
        self
    }

    /// The scalar of one dimension.
    pub fn scalar(&self, kind: ScalarKind) -> Scalar {
        match kind {
            ScalarKind::Cpus => self.cpus,
            ScalarKind::Mem => self.mem,
            ScalarKind::Disk => self.disk,
            ScalarKind::Gpus => self.gpus,
        }
    }

    /// Mutable access to the scalar of one dimension.
    pub fn scalar_mut(&mut self, kind: ScalarKind) -> &mut Scalar {
        match kind {
            ScalarKind::Cpus => &mut self.cpus,
            ScalarKind::Mem => &mut self.mem,
            ScalarKind::Disk => &mut self.disk,
            ScalarKind::Gpus => &mut self.gpus,
        }
    }

    /// Whether `self` has at least `other` in every dimension and a superset
    /// of its ports.
    pub fn contains(&self, other: &Resources) -> bool {
        self.cpus >= other.cpus
            && self.mem >= other.mem
            && self.disk >= other.disk
            && self.gpus >= other.gpus
            && self.ports.contains(&other.ports)
    }

    /// Whether every scalar of `self` is at least the one of `other` (ports
    /// are not considered).
    pub fn contains_scalars(&self, other: &Resources) -> bool {
        ScalarKind::ALL
            .iter()
            .all(|k| self.scalar(*k) >= other.scalar(*k))
    }

    /// `self + other`; an error if any scalar would exceed the maximum.
    /// Ports are united.
    pub fn checked_add(&self, other: &Resources) -> Result<Resources, ResourceError> {
        let mut out = Resources {
            ports: self.ports.union(&other.ports),
            ..Resources::default()
        };
        for k in ScalarKind::ALL {
            *out.scalar_mut(k) = self
                .scalar(k)
                .checked_add(other.scalar(k))
                .ok_or(ResourceError::Overflow { name: k.name() })?;
        }
        Ok(out)
    }

    /// `self - other`, or `None` unless `self` contains `other`.
    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        if !self.contains(other) {
            return None;
        }
        Some(self.saturating_sub(other))
    }

    /// `self - other` per dimension, clamped at zero; ports not in `self`
    /// are ignored.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        let mut out = Resources {
            ports: self.ports.difference(&other.ports),
            ..Resources::default()
        };
        for k in ScalarKind::ALL {
            *out.scalar_mut(k) = self.scalar(k).saturating_sub(other.scalar(k));
        }
        out
    }

    /// The per-dimension minimum and the common ports.
    pub fn intersection(&self, other: &Resources) -> Resources {
        let mut out = Resources {
            ports: self.ports.intersection(&other.ports),
            ..Resources::default()
        };
        for k in ScalarKind::ALL {
            *out.scalar_mut(k) = self.scalar(k).min(other.scalar(k));
        }
        out
    }

    /// The largest fraction `self / total` over cpus, mem, disk and gpus,
    /// skipping dimensions where `total` is zero. Only for ordering; never
    /// store the result.
    pub fn dominant_share(&self, total: &Resources) -> f64 {
        let mut share: f64 = 0.0;
        for k in ScalarKind::ALL {
            let t = total.scalar(k).milli();
            if t > 0 {
                share = share.max(self.scalar(k).milli() as f64 / t as f64);
            }
        }
        share
    }
}

impl Add for Resources {
    type Output = Resources;
    /// Saturating sum (for internal totals); ports are united.
    fn add(mut self, rhs: Resources) -> Resources {
        self += rhs;
        self
    }
}

impl Add<&Resources> for &Resources {
    type Output = Resources;
    /// Saturating sum (for internal totals); ports are united.
    fn add(self, rhs: &Resources) -> Resources {
        let mut out = self.clone();
        out += rhs;
        out
    }
}

impl AddAssign for Resources {
    fn add_assign(&mut self, rhs: Resources) {
        *self += &rhs;
    }
}

impl AddAssign<&Resources> for Resources {
    fn add_assign(&mut self, rhs: &Resources) {
        for k in ScalarKind::ALL {
            let v = self.scalar(k).saturating_add(rhs.scalar(k));
            *self.scalar_mut(k) = v;
        }
        if !rhs.ports.is_empty() {
            self.ports = self.ports.union(&rhs.ports);
        }
    }
}

impl fmt::Display for Resources {
    /// Mesos text form, zero dimensions omitted: `cpus:4;mem:8192;ports:[31000-32000]`.
    /// Empty resources print as the empty string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for k in ScalarKind::ALL {
            let v = self.scalar(k);
            if v.is_zero() {
                continue;
            }
            if !first {
                f.write_str(";")?;
            }
            first = false;
            write!(f, "{}:{v}", k.name())?;
        }
        if !self.ports.is_empty() {
            if !first {
                f.write_str(";")?;
            }
            write!(f, "ports:{}", self.ports)?;
        }
        Ok(())
    }
}

fn parse_ports(input: &str, value: &str) -> Result<PortRanges, ResourceError> {
    let parse_err = |reason: &str| ResourceError::Parse {
        input: input.to_owned(),
        reason: reason.to_owned(),
    };
    let inner = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .ok_or_else(|| parse_err("ports must be written as [begin-end,...]"))?;
    let mut ranges = Vec::new();
    if inner.trim().is_empty() {
        return Ok(PortRanges::new());
    }
    for part in inner.split(',') {
        let part = part.trim();
        let (b, e) = part
            .split_once('-')
            .ok_or_else(|| parse_err(&format!("port range {} must be begin-end", quoted(part))))?;
        let num = |s: &str| {
            s.trim().parse::<u64>().map_err(|_| {
                parse_err(&format!(
                    "port {} is not a non-negative integer",
                    quoted(s.trim())
                ))
            })
        };
        ranges.push((num(b)?, num(e)?));
    }
    PortRanges::from_ranges(&ranges)
}

impl FromStr for Resources {
    type Err = ResourceError;

    /// Parses the Mesos text form. Names are case-sensitive, whitespace
    /// around tokens is allowed, empty tokens are skipped; unknown and
    /// duplicate names are rejected.
    fn from_str(input: &str) -> Result<Resources, ResourceError> {
        let mut out = Resources::empty();
        let mut seen = [false; 5];
        for token in input.split(';') {
            let token = token.trim();
            if token.is_empty() {
                continue;
            }
            let (name, value) = token.split_once(':').ok_or_else(|| ResourceError::Parse {
                input: token.to_owned(),
                reason: "expected name:value".to_owned(),
            })?;
            let (name, value) = (name.trim(), value.trim());
            let kind = match name {
                "cpus" => Some(ScalarKind::Cpus),
                "mem" => Some(ScalarKind::Mem),
                "disk" => Some(ScalarKind::Disk),
                "gpus" => Some(ScalarKind::Gpus),
                "ports" => None,
                other => return Err(ResourceError::UnknownResource(other.to_owned())),
            };
            let slot = kind.map_or(4, |k| k as usize);
            if seen[slot] {
                return Err(ResourceError::DuplicateResource(name.to_owned()));
            }
            seen[slot] = true;
            match kind {
                Some(k) => {
                    let v: f64 = value.parse().map_err(|_| ResourceError::Parse {
                        input: token.to_owned(),
                        reason: format!("{} is not a number", quoted(value)),
                    })?;
                    *out.scalar_mut(k) = Scalar::from_f64(k.name(), v)?;
                }
                None => out.ports = parse_ports(token, value)?,
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Resources {
        s.parse().unwrap()
    }

    #[test]
    fn scalar_from_f64() {
        assert_eq!(Scalar::from_f64("cpus", 1.5).unwrap().milli(), 1500);
        assert_eq!(Scalar::from_f64("cpus", 0.0001).unwrap().milli(), 0);
        assert_eq!(Scalar::from_f64("cpus", 0.1235).unwrap().milli(), 124);
        assert_eq!(Scalar::from_f64("cpus", -0.0).unwrap(), Scalar::ZERO);
        assert_eq!(
            Scalar::from_f64("cpus", 1e12).unwrap().milli(),
            Scalar::MAX_MILLI
        );
    }

    #[test]
    fn scalar_errors() {
        let e = Scalar::from_f64("cpus", -1.0).unwrap_err();
        assert_eq!(
            e,
            ResourceError::Negative {
                name: "cpus",
                value: -1.0
            }
        );
        assert_eq!(
            e.to_string(),
            r#"resource "cpus" must not be negative (got -1)"#
        );
        let e = Scalar::from_f64("mem", f64::NAN).unwrap_err();
        assert!(matches!(e, ResourceError::NotFinite { name: "mem", .. }));
        assert_eq!(
            e.to_string(),
            r#"resource "mem" must be a finite number (got NaN)"#
        );
        let e = Scalar::from_f64("mem", f64::INFINITY).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"resource "mem" must be a finite number (got inf)"#
        );
        assert!(matches!(
            Scalar::from_f64("mem", f64::NEG_INFINITY),
            Err(ResourceError::NotFinite { .. })
        ));
        let e = Scalar::from_f64("disk", 1e-310).unwrap_err();
        assert_eq!(e, ResourceError::Subnormal { name: "disk" });
        assert_eq!(
            e.to_string(),
            r#"resource "disk" must not be a subnormal number"#
        );
        let e = Scalar::from_f64("mem", 1e300).unwrap_err();
        assert!(matches!(e, ResourceError::TooLarge { name: "mem", .. }));
        assert_eq!(
            e.to_string(),
            r#"resource "mem" is absurdly large (got 1e300, at most 1000000000000)"#
        );
        assert!(Scalar::from_f64("mem", 1e12 + 1.0).is_err());
        assert!(matches!(
            Scalar::from_milli(Scalar::MAX_MILLI + 1),
            Err(ResourceError::TooLarge { .. })
        ));
        assert!(Scalar::from_milli(Scalar::MAX_MILLI).is_ok());
    }

    #[test]
    fn scalar_display_and_arith() {
        let s = |m| Scalar::from_milli(m).unwrap();
        assert_eq!(s(4000).to_string(), "4");
        assert_eq!(s(500).to_string(), "0.5");
        assert_eq!(s(125).to_string(), "0.125");
        assert_eq!(s(1010).to_string(), "1.01");
        assert_eq!(s(0).to_string(), "0");
        assert_eq!(s(1).checked_add(s(2)), Some(s(3)));
        assert_eq!(Scalar::MAX.checked_add(s(1)), None);
        assert_eq!(Scalar::MAX.saturating_add(s(1)), Scalar::MAX);
        assert_eq!(s(1).checked_sub(s(2)), None);
        assert_eq!(s(1).saturating_sub(s(2)), Scalar::ZERO);
        assert_eq!(s(1500).to_f64(), 1.5);
        assert_eq!(serde_json::to_string(&s(1500)).unwrap(), "1500");
        assert!(serde_json::from_str::<Scalar>("1000000000000001").is_err());
    }

    #[test]
    fn port_ranges_basics() {
        let p = PortRanges::from_ranges(&[(10, 20), (15, 30), (31, 31), (40, 41)]).unwrap();
        assert_eq!(p.ranges(), &[(10, 31), (40, 41)]);
        assert_eq!(p.count(), 24);
        assert!(p.contains_port(10) && p.contains_port(31) && p.contains_port(41));
        assert!(!p.contains_port(32) && !p.contains_port(9) && !p.contains_port(42));
        let q = PortRanges::from_ranges(&[(12, 13), (40, 40)]).unwrap();
        assert!(p.contains(&q));
        assert!(!q.contains(&p));
        assert!(p.contains(&PortRanges::new()));
        let d = p.checked_sub(&q).unwrap();
        assert_eq!(d.ranges(), &[(10, 11), (14, 31), (41, 41)]);
        assert_eq!(d.union(&q), p);
        assert_eq!(q.checked_sub(&p), None);
        assert_eq!(p.take_first(3).unwrap().ranges(), &[(10, 12)]);
        assert_eq!(p.take_first(23).unwrap().ranges(), &[(10, 31), (40, 40)]);
        assert_eq!(p.take_first(25), None);
        assert_eq!(p.take_first(0), Some(PortRanges::new()));
        assert_eq!(p.intersection(&q), q);
        let full = PortRanges::from_ranges(&[(0, 65535)]).unwrap();
        assert_eq!(full.count(), 65536);
        assert_eq!(full.take_first(65536).unwrap(), full);
        assert_eq!(
            full.difference(&PortRanges::range(0, 0)).ranges(),
            &[(1, 65535)]
        );
        assert_eq!(
            full.difference(&PortRanges::range(65535, 65535)).ranges(),
            &[(0, 65534)]
        );
    }

    #[test]
    fn port_range_errors() {
        let e = PortRanges::from_ranges(&[(20, 10)]).unwrap_err();
        assert_eq!(e, ResourceError::InvalidPortRange { begin: 20, end: 10 });
        assert_eq!(
            e.to_string(),
            "invalid port range [20-10]: begin is greater than end"
        );
        let e = PortRanges::from_ranges(&[(1, 70000)]).unwrap_err();
        assert_eq!(e, ResourceError::PortOutOfRange { value: 70000 });
        assert_eq!(e.to_string(), "port 70000 is out of range (at most 65535)");
        assert!(serde_json::from_str::<PortRanges>("[[5,1]]").is_err());
        assert_eq!(
            serde_json::from_str::<PortRanges>("[[5,6],[1,4]]")
                .unwrap()
                .ranges(),
            &[(1, 6)]
        );
    }

    #[test]
    fn resources_arith() {
        let a = r("cpus:4;mem:1024;ports:[100-200]");
        let b = r("cpus:1.5;mem:24;ports:[150-160]");
        assert!(a.contains(&b));
        assert!(!b.contains(&a));
        let c = a.checked_sub(&b).unwrap();
        assert_eq!(c, r("cpus:2.5;mem:1000;ports:[100-149,161-200]"));
        assert_eq!(c.checked_add(&b).unwrap(), a);
        assert_eq!(b.checked_sub(&a), None);
        assert_eq!(b.saturating_sub(&a), Resources::empty());
        let max = Resources {
            cpus: Scalar::MAX,
            ..Resources::default()
        };
        assert_eq!(
            max.checked_add(&r("cpus:0.001")),
            Err(ResourceError::Overflow { name: "cpus" })
        );
        assert_eq!((max.clone() + r("cpus:1")).cpus, Scalar::MAX);
        let total = r("cpus:10;mem:1000");
        assert_eq!(r("cpus:1;mem:500").dominant_share(&total), 0.5);
        assert_eq!(r("gpus:1").dominant_share(&total), 0.0);
        assert_eq!(r("cpus:1").scalar(ScalarKind::Cpus), Scalar::from_units(1));
        assert!(Resources::empty().is_empty());
        assert_eq!(
            Resources::from_f64(1.0, 2.0, 3.0, 0.0).unwrap(),
            r("cpus:1;mem:2;disk:3")
        );
        assert!(matches!(
            Resources::from_f64(1.0, -2.0, 3.0, 0.0),
            Err(ResourceError::Negative { name: "mem", .. })
        ));
    }

    #[test]
    fn text_form() {
        let s = "cpus:4;mem:8192;disk:10000;gpus:1;ports:[31000-32000,33000-33010]";
        let res = r(s);
        assert_eq!(res.cpus.milli(), 4000);
        assert_eq!(res.ports.ranges(), &[(31000, 32000), (33000, 33010)]);
        assert_eq!(res.to_string(), s);
        assert_eq!(r(" cpus : 0.5 ; mem:32 ;").to_string(), "cpus:0.5;mem:32");
        assert_eq!(r("ports:[80-80]").to_string(), "ports:[80-80]");
        assert_eq!(r("").to_string(), "");
        assert_eq!(r("cpus:0"), Resources::empty());
    }

    #[test]
    fn text_errors() {
        let p = |s: &str| s.parse::<Resources>().unwrap_err();
        assert_eq!(p("foo:1"), ResourceError::UnknownResource("foo".into()));
        assert_eq!(
            p("foo:1").to_string(),
            r#"unknown resource "foo" (known: cpus, mem, disk, gpus, ports)"#
        );
        assert_eq!(p("CPUS:1"), ResourceError::UnknownResource("CPUS".into()));
        assert_eq!(
            p("cpus:1;cpus:2"),
            ResourceError::DuplicateResource("cpus".into())
        );
        assert_eq!(
            p("ports:[1-2];ports:[3-4]"),
            ResourceError::DuplicateResource("ports".into())
        );
        assert!(matches!(
            p("cpus:-1"),
            ResourceError::Negative { name: "cpus", .. }
        ));
        assert!(matches!(p("cpus:NaN"), ResourceError::NotFinite { .. }));
        assert!(matches!(p("cpus:inf"), ResourceError::NotFinite { .. }));
        assert!(matches!(
            p("mem:1e300"),
            ResourceError::TooLarge { name: "mem", .. }
        ));
        assert_eq!(p("cpus:1e-310"), ResourceError::Subnormal { name: "cpus" });
        assert!(matches!(p("cpus:abc"), ResourceError::Parse { .. }));
        assert!(matches!(p("cpus"), ResourceError::Parse { .. }));
        assert!(matches!(p("ports:80-90"), ResourceError::Parse { .. }));
        assert!(matches!(p("ports:[80]"), ResourceError::Parse { .. }));
        assert!(matches!(p("ports:[a-b]"), ResourceError::Parse { .. }));
        assert_eq!(
            p("ports:[90-80]"),
            ResourceError::InvalidPortRange { begin: 90, end: 80 }
        );
        assert_eq!(
            p("ports:[1-65536]"),
            ResourceError::PortOutOfRange { value: 65536 }
        );
    }

    #[test]
    fn serde_round_trip() {
        let res = r("cpus:4;mem:8192;ports:[1-2]");
        let json = serde_json::to_string(&res).unwrap();
        assert_eq!(serde_json::from_str::<Resources>(&json).unwrap(), res);
    }
}
