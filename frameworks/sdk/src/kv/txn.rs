//! [`Txn`]: a transaction's compares and operations, built in order, and
//! [`TxnResult`], what the master answers when it applied one.

use berth_proto as pb;
use prost::Message as _;

use super::LeaseRef;
use crate::SdkError;

/// A transaction: compares that must all hold, then operations applied
/// in order, all or nothing. The store's limits (128 compares, 128
/// operations, 3 MiB written, values of at most 1 MiB) are the master's to
/// check: it refuses a transaction past them with
/// [`ErrorKind::Invalid`](crate::ErrorKind::Invalid).
///
/// ```
/// use berth_sdk::kv::Txn;
///
/// // Move a key, unless someone changed it since it was read at version 3.
/// let txn = Txn::new()
///     .if_version("apps/web", 3)
///     .delete("apps/web")
///     .put("archive/web", "v3");
/// assert_eq!(txn.len(), (1, 2));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Txn {
    compares: Vec<pb::KvCompare>,
    ops: Vec<pb::KvOp>,
}

impl Txn {
    /// An empty transaction (the master refuses one without operations).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Compares: `key` does not exist.
    #[must_use]
    pub fn if_absent(self, key: impl Into<String>) -> Self {
        self.if_version(key, 0)
    }

    /// Compares: `key` is at `version` (0: it does not exist). The version
    /// of a key read with [`KvClient::get`](super::KvClient::get) or
    /// written ([`TxnResult::version_of`]).
    #[must_use]
    pub fn if_version(mut self, key: impl Into<String>, version: u64) -> Self {
        self.compares.push(pb::KvCompare {
            compare: Some(pb::kv_compare::Compare::Version(pb::KeyVersion {
                key: key.into(),
                version,
            })),
        });
        self
    }

    /// Compares: `lease` is still held by its holder at its epoch. This
    /// fences the transaction: an instance that lost its lease without
    /// knowing it yet cannot write.
    #[must_use]
    pub fn if_lease(mut self, lease: &LeaseRef) -> Self {
        self.compares.push(pb::KvCompare {
            compare: Some(pb::kv_compare::Compare::LeaseHeld(pb::LeaseRef {
                namespace: String::new(),
                name: lease.name.clone(),
                holder: lease.holder.clone(),
                epoch: lease.epoch,
            })),
        });
        self
    }

    /// Operation: sets `key` to `value`, creating it if needed.
    #[must_use]
    pub fn put(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.ops.push(pb::KvOp {
            op: Some(pb::kv_op::Op::Put(pb::KvPut {
                key: key.into(),
                value: value.into(),
            })),
        });
        self
    }

    /// Operation: deletes `key` (nothing if it does not exist).
    #[must_use]
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(pb::KvOp {
            op: Some(pb::kv_op::Op::Delete(key.into())),
        });
        self
    }

    /// Operation: deletes every key that starts with `prefix` (`""`: every
    /// key of the namespace).
    #[must_use]
    pub fn delete_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.ops.push(pb::KvOp {
            op: Some(pb::kv_op::Op::DeletePrefix(prefix.into())),
        });
        self
    }

    /// How many compares and operations it holds.
    #[must_use]
    pub fn len(&self) -> (usize, usize) {
        (self.compares.len(), self.ops.len())
    }

    /// Whether it holds no operation.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The request for `namespace`.
    ///
    /// # Errors
    /// [`SdkError::InvalidRequest`] when the request is larger than a gRPC
    /// message may be: the master could not even read it.
    pub(crate) fn into_request(self, namespace: &str) -> Result<pb::KvTxnRequest, SdkError> {
        let request = pb::KvTxnRequest {
            namespace: namespace.to_owned(),
            compares: self.compares,
            ops: self.ops,
        };
        let size = request.encoded_len();
        if size > berth_proto::MAX_MESSAGE_BYTES {
            return Err(SdkError::InvalidRequest(format!(
                "the transaction is {size} bytes on the wire; a request may be at most {} bytes \
                 (and a transaction may write at most 3 MiB)",
                berth_proto::MAX_MESSAGE_BYTES
            )));
        }
        Ok(request)
    }
}

/// What the master answers for an applied transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    /// The store's revision after the transaction.
    pub revision: u64,
    /// The keys put, with their new versions, in the order of the puts.
    pub written: Vec<(String, u64)>,
}

impl TxnResult {
    /// The version `key` was written at, if the transaction put it (the
    /// last put when it put it twice).
    #[must_use]
    pub fn version_of(&self, key: &str) -> Option<u64> {
        self.written
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
    }
}

impl From<pb::KvTxnResponse> for TxnResult {
    fn from(r: pb::KvTxnResponse) -> Self {
        Self {
            revision: r.revision,
            written: r.written.into_iter().map(|w| (w.key, w.version)).collect(),
        }
    }
}
