//! The frame header: an ordered list of key/value strings.

use compact_str::CompactString;
use smallvec::SmallVec;
use std::collections::HashMap;
use std::fmt;

/// Where one pair lives in [`Header::text`]: the key is `text[key..key_end]`, the
/// value `text[value..end]`.
#[derive(Clone, Copy)]
struct Span {
    key: usize,
    key_end: usize,
    value: usize,
    end: usize,
}

/// Pairs kept without a heap allocation; more spill to the heap.
const INLINE_PAIRS: usize = 4;

/// Header of a frame: `key:value` pairs in the order they were added.
///
/// `CL` (the body length) is never stored here: the encoder writes it and the
/// decoder consumes it. Keys are unique; setting an existing key replaces its value
/// in place, which is also how duplicate keys on the wire resolve (the last wins).
///
/// Keys and values live back to back in one small-string buffer, indexed by a small
/// inline list: a typical header (`info:hello`, `TP:Check;ID:alice;Port:63330`)
/// costs no heap allocation, so decoding a small frame allocates nothing.
#[derive(Clone, Default)]
pub struct Header {
    /// Every key and value (no separators); a replaced value stays behind as
    /// garbage until there is more garbage than text in use.
    text: CompactString,
    spans: SmallVec<[Span; INLINE_PAIRS]>,
    /// Bytes of `text` no span refers to.
    garbage: usize,
}

impl Header {
    /// An empty header.
    pub fn new() -> Self {
        Header::default()
    }

    /// An empty header with room for `n` pairs.
    pub fn with_capacity(n: usize) -> Self {
        Header {
            text: CompactString::default(),
            spans: SmallVec::with_capacity(n),
            garbage: 0,
        }
    }

    /// Builder form of [`Header::set`].
    pub fn with(mut self, key: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        self.set(key, value);
        self
    }

    /// Sets `key` to `value`, replacing an existing value in place.
    pub fn set(&mut self, key: impl AsRef<str>, value: impl AsRef<str>) {
        let (key, value) = (key.as_ref(), value.as_ref());
        match self.position(key) {
            Some(i) => self.replace(i, value),
            None => self.set_new(key, value),
        }
    }

    /// [`Header::set`] with an index of key positions kept by the caller, so that
    /// a header of thousands of pairs (a hostile peer's 64 KiB header) is built in
    /// linear time rather than quadratic. `index` must cover every key set so far.
    pub(crate) fn set_indexed(
        &mut self,
        index: &mut HashMap<String, usize>,
        key: &str,
        value: &str,
    ) {
        match index.get(key) {
            Some(&i) => self.replace(i, value),
            None => {
                index.insert(key.to_string(), self.spans.len());
                self.set_new(key, value);
            }
        }
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.spans
            .iter()
            .position(|s| &self.text[s.key..s.key_end] == key)
    }

    /// Gives pair `i` a new value: appended, the old one left as garbage, and the
    /// buffer compacted once garbage outweighs the text in use (amortised O(1)).
    fn replace(&mut self, i: usize, value: &str) {
        let start = self.text.len();
        self.text.push_str(value);
        let s = &mut self.spans[i];
        self.garbage += s.end - s.value;
        s.value = start;
        s.end = start + value.len();
        if self.garbage > self.text.len() / 2 {
            self.compact(None);
        }
    }

    /// Rewrites the buffer without garbage (and without pair `skip`).
    fn compact(&mut self, skip: Option<usize>) {
        let mut h = Header::with_capacity(self.spans.len());
        for (n, (k, v)) in self.iter().enumerate() {
            if Some(n) != skip {
                h.set_new(k, v);
            }
        }
        *self = h;
    }

    /// Appends a pair whose key is known to be absent.
    fn set_new(&mut self, key: &str, value: &str) {
        let start = self.text.len();
        self.text.push_str(key);
        self.text.push_str(value);
        self.spans.push(Span {
            key: start,
            key_end: start + key.len(),
            value: start + key.len(),
            end: self.text.len(),
        });
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.spans
            .iter()
            .find(|s| &self.text[s.key..s.key_end] == key)
            .map(|s| &self.text[s.value..s.end])
    }

    /// True if `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let pos = self.position(key)?;
        let s = self.spans[pos];
        let value = self.text[s.value..s.end].to_string();
        self.compact(Some(pos));
        Some(value)
    }

    /// The pairs in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.spans
            .iter()
            .map(|s| (&self.text[s.key..s.key_end], &self.text[s.value..s.end]))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// True when this is a `TP:Check` liveness probe.
    pub fn is_check(&self) -> bool {
        self.get("TP") == Some("Check")
    }
}

impl PartialEq for Header {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Header {}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Header {
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

    /// The packed storage behaves like a list of owned pairs, inline or spilled,
    /// with multi-byte text, replacements and removals anywhere.
    #[test]
    fn packed_storage_matches_a_plain_list() {
        let mut h = Header::new();
        let mut model: Vec<(String, String)> = Vec::new();
        let keys = ["a", "ключ", "TP", "b", "", "longer-key-name", "c", "d"];
        for step in 0..200usize {
            let k = keys[step * 7 % keys.len()];
            let v = "ü".repeat(step % 5) + &"v".repeat(step % 40);
            match step % 5 {
                0..=2 => {
                    h.set(k, &v);
                    match model.iter_mut().find(|(mk, _)| mk == k) {
                        Some(slot) => slot.1 = v.clone(),
                        None => model.push((k.to_string(), v.clone())),
                    }
                }
                3 => {
                    let want = model
                        .iter()
                        .position(|(mk, _)| mk == k)
                        .map(|i| model.remove(i).1);
                    assert_eq!(h.remove(k), want);
                }
                _ => {
                    let want = model.iter().find(|(mk, _)| mk == k).map(|p| p.1.as_str());
                    assert_eq!(h.get(k), want);
                    assert_eq!(h.contains(k), want.is_some());
                }
            }
            let got: Vec<(&str, &str)> = h.iter().collect();
            let exp: Vec<(&str, &str)> = model
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect();
            assert_eq!(got, exp, "step {step}");
            assert_eq!(h.len(), model.len());
            let same: Header = model.iter().map(|(a, b)| (a, b)).collect();
            assert_eq!(h, same);
        }
    }

    /// Replacing one value again and again keeps the buffer bounded.
    #[test]
    fn repeated_replacement_stays_compact() {
        let mut h = Header::new().with("k", "v").with("other", "x");
        for i in 0..10_000 {
            h.set("k", i.to_string());
        }
        assert_eq!(h.get("k"), Some("9999"));
        assert_eq!(h.get("other"), Some("x"));
        assert!(h.text.len() < 64, "buffer grew to {}", h.text.len());
        let mut ix = HashMap::new();
        let mut g = Header::new();
        for i in 0..5000 {
            g.set_indexed(&mut ix, &format!("k{}", i % 100), &i.to_string());
        }
        assert_eq!(g.len(), 100);
        assert_eq!(g.get("k7"), Some("4907"));
    }

    #[test]
    fn order_matters_for_equality() {
        let a = Header::new().with("x", "1").with("y", "2");
        let b = Header::new().with("y", "2").with("x", "1");
        assert_ne!(a, b);
        assert_eq!(a.clone(), a);
    }
}
