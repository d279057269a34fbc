//! Backend choice, with no IO: which version gets a new request, and which
//! instance of it.
//!
//! Across versions the choice is smooth weighted round-robin (as nginx's
//! upstream module does it): each pick adds every eligible version's weight
//! to its running credit, takes the version with the most credit and takes
//! the total weight off it. Over any window of `sum(weights)` picks each
//! version gets exactly its share, interleaved rather than in bursts, and the
//! sequence depends only on the weights and the seed (which rotates the
//! order ties are broken in). Within a version the instance with the fewest
//! outstanding requests wins; ties go round-robin.

/// One version as the picker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionSlot {
    /// The version name.
    pub name: String,
    /// Its weight; 0 means no new traffic (except on a preview port).
    pub weight: u32,
    /// Indices of its backends in the service's backend list.
    pub backends: Vec<usize>,
    /// Running credit of the smooth weighted round-robin.
    current: i64,
    /// Where the next tie-break scan among its backends starts.
    cursor: usize,
}

/// The balancing state of one service (its current table entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picker {
    versions: Vec<VersionSlot>,
    /// Versions are scanned starting here when credits tie.
    tie_offset: usize,
}

/// What a pick may choose from.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Versions by weight (a service port).
    Weighted,
    /// One version only, whatever its weight (a preview port).
    Only(&'a str),
}

impl Picker {
    /// A picker over `versions` (name, weight, backend indices), seeded.
    pub fn new(versions: Vec<(String, u32, Vec<usize>)>, seed: u64) -> Picker {
        let n = versions.len().max(1);
        let tie_offset = usize::try_from(seed % n as u64).unwrap_or(0);
        Picker {
            versions: versions
                .into_iter()
                .enumerate()
                .map(|(i, (name, weight, backends))| VersionSlot {
                    name,
                    weight,
                    cursor: usize::try_from(
                        seed.rotate_left(i as u32 * 7) % backends.len().max(1) as u64,
                    )
                    .unwrap_or(0),
                    backends,
                    current: 0,
                })
                .collect(),
            tie_offset,
        }
    }

    /// The versions, in the order given.
    pub fn versions(&self) -> &[VersionSlot] {
        &self.versions
    }

    /// Chooses a backend index for a new request or connection.
    ///
    /// `allowed(i)` says whether backend `i` may be chosen (a retry excludes
    /// the ones already tried); `outstanding(i)` is its count of requests in
    /// flight. With `prefer` (the version of a backend that just failed), a
    /// backend of that version is chosen if one is allowed; otherwise any
    /// version with weight > 0. Returns `None` when nothing is eligible.
    pub fn pick(
        &mut self,
        scope: Scope<'_>,
        prefer: Option<&str>,
        allowed: &dyn Fn(usize) -> bool,
        outstanding: &dyn Fn(usize) -> u64,
    ) -> Option<usize> {
        let version = match scope {
            Scope::Only(name) => self.versions.iter().position(|v| v.name == name)?,
            Scope::Weighted => {
                let preferred = prefer.and_then(|name| {
                    self.versions.iter().position(|v| {
                        v.name == name && v.weight > 0 && v.backends.iter().any(|&b| allowed(b))
                    })
                });
                match preferred {
                    Some(v) => v,
                    None => self.weighted_version(allowed)?,
                }
            }
        };
        let slot = &mut self.versions[version];
        least_outstanding(&slot.backends, allowed, outstanding, &mut slot.cursor)
    }

    /// The smooth weighted round-robin step over versions that have weight
    /// and an allowed backend.
    fn weighted_version(&mut self, allowed: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.versions.len();
        let eligible: Vec<usize> = (0..n)
            .map(|k| (k + self.tie_offset) % n)
            .filter(|&i| {
                let v = &self.versions[i];
                v.weight > 0 && v.backends.iter().any(|&b| allowed(b))
            })
            .collect();
        let mut total = 0i64;
        let mut best: Option<(usize, i64)> = None;
        for &i in &eligible {
            let v = &mut self.versions[i];
            v.current += i64::from(v.weight);
            total += i64::from(v.weight);
            if best.is_none_or(|(_, credit)| v.current > credit) {
                best = Some((i, v.current));
            }
        }
        let (chosen, _) = best?;
        self.versions[chosen].current -= total;
        Some(chosen)
    }
}

/// The allowed backend with the fewest outstanding requests; among equals,
/// the first at or after `cursor` in `backends` order, and `cursor` moves
/// past it.
pub fn least_outstanding(
    backends: &[usize],
    allowed: &dyn Fn(usize) -> bool,
    outstanding: &dyn Fn(usize) -> u64,
    cursor: &mut usize,
) -> Option<usize> {
    let n = backends.len();
    if n == 0 {
        return None;
    }
    let mut best: Option<(usize, u64)> = None;
    for k in 0..n {
        let pos = (*cursor + k) % n;
        let backend = backends[pos];
        if !allowed(backend) {
            continue;
        }
        let load = outstanding(backend);
        if best.is_none_or(|(_, l)| load < l) {
            best = Some((pos, load));
        }
    }
    let (pos, _) = best?;
    *cursor = (pos + 1) % n;
    Some(backends[pos])
}

#[cfg(test)]
mod tests;
