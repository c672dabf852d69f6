//! The frame header: an ordered list of key/value strings.

use std::collections::HashMap;
use std::fmt;

/// Header of a frame: `key:value` pairs in the order they were added.
///
/// `CL` (the body length) is never stored here: the encoder writes it and the
/// decoder consumes it. Keys are unique; setting an existing key replaces its value
/// in place, which is also how duplicate keys on the wire resolve (the last wins).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Header {
    pairs: Vec<(String, String)>,
}

impl Header {
    /// An empty header.
    pub fn new() -> Self {
        Header { pairs: Vec::new() }
    }

    /// An empty header with room for `n` pairs.
    pub fn with_capacity(n: usize) -> Self {
        Header {
            pairs: Vec::with_capacity(n),
        }
    }

    /// Builder form of [`Header::set`].
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.set(key, value);
        self
    }

    /// Sets `key` to `value`, replacing an existing value in place.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        if let Some(slot) = self.pairs.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else {
            self.pairs.push((key, value));
        }
    }

    /// [`Header::set`] with an index of key positions kept by the caller, so that
    /// a header of thousands of pairs (a hostile peer's 64 KiB header) is built in
    /// linear time rather than quadratic. `index` must cover every key set so far.
    pub(crate) fn set_indexed(
        &mut self,
        index: &mut HashMap<String, usize>,
        key: String,
        value: String,
    ) {
        match index.get(&key) {
            Some(&i) => self.pairs[i].1 = value,
            None => {
                index.insert(key.clone(), self.pairs.len());
                self.pairs.push((key, value));
            }
        }
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// True if `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let pos = self.pairs.iter().position(|(k, _)| k == key)?;
        Some(self.pairs.remove(pos).1)
    }

    /// The pairs in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// True when there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// True when this is a `TP:Check` liveness probe.
    pub fn is_check(&self) -> bool {
        self.get("TP") == Some("Check")
    }
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Header {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut h = Header::new();
        for (k, v) in iter {
            h.set(k, v);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_replaces_in_place() {
        let mut h = Header::new().with("a", "1").with("b", "2");
        h.set("a", "3");
        assert_eq!(h.iter().collect::<Vec<_>>(), vec![("a", "3"), ("b", "2")]);
        assert_eq!(h.remove("a").as_deref(), Some("3"));
        assert_eq!(h.len(), 1);
    }
}
