//! The data: 16 databases of binary-safe string keys mapped to string values.
//!
//! No expiry: keys live until they are deleted or flushed.

use std::fmt;

/// Number of databases, as Redis's default `databases 16`.
pub(crate) const DB_COUNT: usize = 16;

/// A database number, always below [`DB_COUNT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub(crate) struct DbIndex(u8);

impl DbIndex {
    /// Database 0, where every connection starts.
    pub(crate) const ZERO: DbIndex = DbIndex(0);

    /// The database `index`, or `None` if it is not below [`DB_COUNT`].
    #[must_use]
    pub(crate) fn new(index: u64) -> Option<DbIndex> {
        u8::try_from(index)
            .ok()
            .filter(|&i| usize::from(i) < DB_COUNT)
            .map(DbIndex)
    }

    /// The database number.
    #[must_use]
    pub(crate) fn get(self) -> u32 {
        u32::from(self.0)
    }

    /// All databases, in order.
    pub(crate) fn all() -> impl Iterator<Item = DbIndex> {
        (0..DB_COUNT).filter_map(|i| DbIndex::new(i as u64))
    }
}

impl fmt::Display for DbIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One database: key to value. A structurally shared map (`imbl`'s HAMT): a clone is O(1)
/// and shares every node until one side changes it, so a snapshot copies the keyspace without
/// walking it under the server's lock.
///
/// Values are shared ([`Value`]): copying a node of the map (a write while a snapshot holds
/// the old one) copies pointers, not value bytes, and a value stored from a request keeps
/// the request's buffer.
pub(crate) type Db = imbl::HashMap<Vec<u8>, Value>;

/// A stored value: shared by the keyspace and its snapshots, changed in place (`APPEND`) only
/// when no snapshot holds it, else copied first.
pub(crate) type Value = std::sync::Arc<Vec<u8>>;

/// Sixteen databases of string keys and values.
///
/// # Examples
///
/// ```ignore
/// use crate::keyspace::{DbIndex, Keyspace};
///
/// let mut ks = Keyspace::new();
/// let db1 = DbIndex::new(1).unwrap();
/// ks.set(db1, b"k".to_vec(), b"v".to_vec());
/// assert_eq!(ks.get(db1, b"k"), Some(&b"v"[..]));
/// assert_eq!(ks.get(DbIndex::ZERO, b"k"), None);
/// assert_eq!((ks.db_len(db1), ks.len()), (1, 1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keyspace {
    dbs: [Db; DB_COUNT],
}

impl Default for Keyspace {
    fn default() -> Self {
        Keyspace {
            dbs: std::array::from_fn(|_| Db::new()),
        }
    }
}

impl Keyspace {
    /// An empty keyspace.
    #[must_use]
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The database `db`.
    #[must_use]
    #[allow(clippy::indexing_slicing)] // DbIndex is below DB_COUNT by construction.
    pub(crate) fn db(&self, db: DbIndex) -> &Db {
        &self.dbs[usize::from(db.0)]
    }

    #[allow(clippy::indexing_slicing)] // DbIndex is below DB_COUNT by construction.
    fn db_mut(&mut self, db: DbIndex) -> &mut Db {
        &mut self.dbs[usize::from(db.0)]
    }

    /// The value of `key` in `db`.
    #[must_use]
    pub(crate) fn get(&self, db: DbIndex, key: &[u8]) -> Option<&[u8]> {
        self.db(db).get(key).map(|v| v.as_slice())
    }

    /// The value of `key` in `db`, to change in place (copied first if a snapshot shares it).
    pub(crate) fn get_mut(&mut self, db: DbIndex, key: &[u8]) -> Option<&mut Vec<u8>> {
        self.db_mut(db).get_mut(key).map(std::sync::Arc::make_mut)
    }

    /// Whether `key` exists in `db`.
    #[must_use]
    pub(crate) fn contains(&self, db: DbIndex, key: &[u8]) -> bool {
        self.db(db).contains_key(key)
    }

    /// Sets `key` to `value` in `db`, returning the old value.
    pub(crate) fn set(
        &mut self,
        db: DbIndex,
        key: Vec<u8>,
        value: impl Into<Value>,
    ) -> Option<Value> {
        self.db_mut(db).insert(key, value.into())
    }

    /// Removes `key` from `db`, returning its value.
    pub(crate) fn remove(&mut self, db: DbIndex, key: &[u8]) -> Option<Value> {
        self.db_mut(db).remove(key)
    }

    /// Number of keys in `db`.
    #[must_use]
    pub(crate) fn db_len(&self, db: DbIndex) -> usize {
        self.db(db).len()
    }

    /// Number of keys in all databases.
    #[must_use]
    pub(crate) fn len(&self) -> usize {
        self.dbs.iter().map(Db::len).sum()
    }

    /// Whether every database is empty.
    #[must_use]
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn is_empty(&self) -> bool {
        self.dbs.iter().all(Db::is_empty)
    }

    /// Empties `db`, returning how many keys it held.
    pub(crate) fn flush_db(&mut self, db: DbIndex) -> usize {
        let db = self.db_mut(db);
        let removed = db.len();
        *db = Db::new();
        removed
    }

    /// Empties every database, returning how many keys they held.
    pub(crate) fn flush_all(&mut self) -> usize {
        DbIndex::all().map(|db| self.flush_db(db)).sum()
    }

    /// The keys and values of `db`, in no particular order.
    pub(crate) fn iter(&self, db: DbIndex) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.db(db)
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// Bytes of keys and values held: a lower bound of the memory used, for `used-mem` and INFO.
    #[must_use]
    pub(crate) fn payload_bytes(&self) -> u64 {
        self.dbs
            .iter()
            .flat_map(Db::iter)
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_index_rejects_sixteen_and_above() {
        assert_eq!(DbIndex::new(15).map(DbIndex::get), Some(15));
        assert_eq!(DbIndex::new(16), None);
        assert_eq!(DbIndex::new(256), None);
        assert_eq!(DbIndex::new(u64::MAX), None);
        assert_eq!(DbIndex::all().count(), DB_COUNT);
    }

    #[test]
    fn databases_are_independent() {
        let mut ks = Keyspace::new();
        let (d0, d5) = (DbIndex::ZERO, DbIndex::new(5).unwrap());
        ks.set(d0, b"k".to_vec(), b"zero".to_vec());
        ks.set(d5, b"k".to_vec(), b"five".to_vec());
        assert_eq!(ks.get(d0, b"k"), Some(&b"zero"[..]));
        assert_eq!(ks.flush_db(d5), 1);
        assert_eq!(ks.get(d5, b"k"), None);
        assert_eq!(ks.len(), 1);
    }

    #[test]
    fn binary_keys_with_nul_and_crlf_are_distinct() {
        let mut ks = Keyspace::new();
        let db = DbIndex::ZERO;
        ks.set(db, b"a\0b".to_vec(), b"1".to_vec());
        ks.set(db, b"a".to_vec(), b"2".to_vec());
        ks.set(db, b"a\r\n".to_vec(), b"3".to_vec());
        assert_eq!(ks.db_len(db), 3);
        assert_eq!(ks.get(db, b"a\0b"), Some(&b"1"[..]));
        assert_eq!(ks.payload_bytes(), 3 + 1 + 1 + 1 + 3 + 1);
    }

    #[test]
    fn flush_all_reports_keys_removed_and_leaves_nothing() {
        let mut ks = Keyspace::new();
        for db in DbIndex::all() {
            ks.set(db, b"k".to_vec(), Vec::new());
        }
        assert_eq!(ks.flush_all(), DB_COUNT);
        assert!(ks.is_empty());
        assert_eq!(ks, Keyspace::new());
    }
}
