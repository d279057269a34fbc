//! The format of what the master writes into the Raft log: proposals
//! (normal entries) and the context of membership changes.
//!
//! Both are [postcard](https://docs.rs/postcard), which is not
//! self-describing: the bytes hold values in declaration order with no
//! field names and no lengths of structs, and an enum variant is its index.
//! A reader therefore decodes an entry only with exactly the types that
//! wrote it. Entries stay in logs (and are sent to followers that run
//! another version during a rolling upgrade) until a snapshot compacts
//! them, so every entry says which format it is in.
//!
//! # Layout
//!
//! A versioned entry is [`ENTRY_TAG`] (one zero byte), the version byte
//! ([`ENTRY_VERSION`] when written by this berth), [`ENTRY_GUARD`], then
//! the postcard value: a [`Proposal`] in a normal entry, a
//! [`MemberContext`] in the context of a configuration change. Nothing
//! follows the value.
//!
//! Bytes that do not start with [`ENTRY_TAG`] are *version 0*: what berth
//! wrote before entries had a version, the same postcard value with no
//! prefix. They cannot start with a zero byte: a postcard `u64` is a
//! varint whose first byte is 0 only for the value 0, and the first field
//! is never 0 (a proposal's `origin` is eight bytes of a version-4 UUID,
//! whose seventh byte holds the version nibble 4; a member's Raft id is 1
//! or more). A version this berth does not know (a newer berth wrote it) is
//! [`EntryError::Version`], which stops the master as a corrupt log does:
//! it must not skip an entry that every other member applies.
//!
//! The guard byte is for masters from before versions, which read every
//! entry as a version 0 proposal: to them a versioned entry is origin 0,
//! sequence number `version`, and a command whose variant index is the
//! guard, 127, which no command has. They stop on the entry ("corrupt")
//! instead of applying what the following bytes would happen to decode to.
//! (To them a versioned membership context is member 0, which they ignore.)
//!
//! # Changing the format
//!
//! What an entry holds is [`Proposal`], and through it
//! [`Command`](crate::registry::Command) and every type a command holds
//! (`FrameworkRecord`, `AgentRecord`, `TaskRecord`, `Quota`, `Resources`,
//! ids…), and [`MemberContext`]. Golden files
//! (`master/testdata/log-entries-v1.hex`, one entry per command) fail when
//! any of their bytes change; they tell you which case below you are in.
//!
//! - **A new command**: add a variant at the *end* of `Command`. Old
//!   entries keep their variant indexes, so no version bump. Give it a
//!   golden entry in `entry::tests` (`commands()`); running the tests with
//!   `BERTH_WRITE_GOLDEN=1` appends its line to the current version's
//!   file. An old berth cannot read the new entry (it stops on it), so a
//!   rolling upgrade must finish before anything proposes the new command.
//! - **A new field in a command, or in a record a command holds**: do not
//!   add it to the existing type. Copy the old shape into a `V<n>` type (as
//!   `registry::legacy::TaskRecordV0`), keep the old variant at its place
//!   renamed `…V<n>` holding the old shape (read, converted, never written:
//!   see `Command::LaunchTasksV0`), and add a new variant at the end with
//!   the new shape. Records that snapshots hold change the snapshot format
//!   too: bump `registry::SNAPSHOT_VERSION` and read the old one through
//!   `registry::legacy`.
//! - **Never** reorder, remove or reuse variants or fields, change a
//!   field's type (even `i32` → `u32` changes the bytes: postcard zigzags
//!   signed integers), or add or remove `#[serde(skip)]`, `default` or
//!   `flatten` attributes on logged types (postcard has no field names to
//!   default from). Renaming a field or a variant in Rust is safe: the
//!   bytes do not hold names.
//! - **A change of [`Proposal`] or [`MemberContext`] themselves**, or of
//!   the layout above: bump [`ENTRY_VERSION`], keep the decoder of the old
//!   version in [`decode_proposal`]/[`decode_member`], add golden files of
//!   the new version and keep the old ones: they must decode for ever.
//!
//! The lines of a golden file are never rewritten (a new command only
//! appends one): bytes that changed mean the format changed, and the fix
//! is one of the cases above, not new golden bytes.

use serde::{Deserialize, Serialize};

use crate::error::EntryError;
use crate::registry::Command;

/// The first byte of a versioned entry (see the module docs).
pub const ENTRY_TAG: u8 = 0;

/// The entry format this berth writes (version 0 is the unversioned
/// format before it, which it still reads).
pub const ENTRY_VERSION: u8 = 1;

/// The byte after the version (see the module docs): a command variant
/// index no berth has.
pub const ENTRY_GUARD: u8 = 0x7f;

/// A command as it travels through the Raft log: who proposed it, so the
/// proposer can recognise its own entry when it is applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// Random per core start: entries proposed by an earlier run of this
    /// master never match a proposal of this run. Never 0 (see the module
    /// docs).
    pub origin: u64,
    /// Sequence number within `origin`.
    pub seq: u64,
    /// The command.
    pub cmd: Command,
}

/// The context of a membership change: the master it is about and where
/// it listens (empty for a removal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberContext {
    /// Its Raft id (1 or more).
    pub id: u64,
    /// Its API address, `host:port`; empty when it is removed.
    pub address: String,
}

/// A proposal as log entry bytes, in the current version.
///
/// # Errors
/// When postcard cannot encode it.
pub fn encode_proposal(proposal: &Proposal) -> Result<Vec<u8>, postcard::Error> {
    encode(proposal)
}

/// Reads log entry bytes of any known version.
///
/// # Errors
/// [`EntryError`] when the bytes are not an entry this berth can read.
pub fn decode_proposal(data: &[u8]) -> Result<Proposal, EntryError> {
    decode(data)
}

/// A membership change's context bytes, in the current version.
///
/// # Errors
/// When postcard cannot encode it.
pub fn encode_member(member: &MemberContext) -> Result<Vec<u8>, postcard::Error> {
    encode(member)
}

/// Reads a membership change's context of any known version; `None` for
/// an empty context (Raft's own changes, such as leaving a joint
/// configuration, carry none).
///
/// # Errors
/// [`EntryError`] when the bytes are not a context this berth can read.
pub fn decode_member(context: &[u8]) -> Result<Option<MemberContext>, EntryError> {
    if context.is_empty() {
        return Ok(None);
    }
    decode(context).map(Some)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_extend(value, vec![ENTRY_TAG, ENTRY_VERSION, ENTRY_GUARD])
}

fn decode<'a, T: Deserialize<'a>>(data: &'a [u8]) -> Result<T, EntryError> {
    match data {
        [ENTRY_TAG, ENTRY_VERSION, ENTRY_GUARD, rest @ ..] => {
            let (value, left) = postcard::take_from_bytes(rest)?;
            if left.is_empty() {
                Ok(value)
            } else {
                Err(EntryError::Trailing(left.len()))
            }
        }
        [ENTRY_TAG, ENTRY_VERSION, ..] => Err(EntryError::Header),
        [ENTRY_TAG, version, ..] => Err(EntryError::Version(*version)),
        [ENTRY_TAG] => Err(EntryError::Header),
        // Version 0 was read with `from_bytes`, which ignores what follows
        // the value: so it still is.
        legacy => Ok(postcard::from_bytes(legacy)?),
    }
}

#[cfg(test)]
mod tests;
