//! A read-only reader of BoltDB files (bbolt: the key/value store podman 4 keeps its state in),
//! for one lookup: a value under a path of buckets. The file is hostile input: every offset is
//! checked, a lookup descends at most [`MAX_DEPTH`] pages, and any inconsistency gives None.
//!
//! The format (bbolt `page.go`, `node.go`): the file is pages of `page_size` bytes; pages 0 and 1
//! are meta pages (the one with the valid magic and the higher transaction id wins) naming the
//! root bucket's page. Each page starts with a 16-byte header (`id u64`, `flags u16`, `count u16`,
//! `overflow u32`; a page with overflow continues in the next pages). A branch page (flag 0x01)
//! holds `count` elements `pos u32, ksize u32, pgid u64` (keys sorted; the child for a key is the
//! last element whose key is ≤ it); a leaf page (0x02) holds `flags u32, pos u32, ksize u32,
//! vsize u32`, `pos` counting from the element itself, the value right after the key. A leaf
//! element with flag 0x01 is a sub-bucket: its value starts with `root u64, sequence u64`, and a
//! root of 0 means the bucket's single leaf page follows inline in the value.

/// The magic number of a meta page.
const MAGIC: u32 = 0xED0C_DAED;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const META: u16 = 0x04;
/// A leaf element that is a sub-bucket.
const BUCKET: u32 = 0x01;
const PAGE_HEADER: usize = 16;
const ELEMENT: usize = 16;
/// Deepest B+tree descent per bucket (a real tree of millions of keys is < 10 deep).
pub const MAX_DEPTH: usize = 32;

/// A page (or an inline bucket's page) inside a buffer.
#[derive(Clone, Copy)]
struct Node<'a> {
    buf: &'a [u8],
    off: usize,
}

/// An open BoltDB file (its bytes).
pub struct Db<'a> {
    data: &'a [u8],
    page_size: usize,
    root: u64,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn usize_at(b: &[u8], at: usize) -> Option<usize> {
    usize::try_from(u32_at(b, at)?).ok()
}

/// A meta page at `off`: (page size, root bucket page, transaction id).
fn meta(data: &[u8], off: usize) -> Option<(usize, u64, u64)> {
    if u16_at(data, off + 8)? & META == 0 || u32_at(data, off + PAGE_HEADER)? != MAGIC {
        return None;
    }
    let m = off + PAGE_HEADER;
    let page_size = usize_at(data, m + 8)?;
    if !(512..=1 << 20).contains(&page_size) {
        return None;
    }
    Some((page_size, u64_at(data, m + 16)?, u64_at(data, m + 48)?))
}

impl<'a> Db<'a> {
    /// None when `data` is not a BoltDB file this reader understands.
    pub fn open(data: &'a [u8]) -> Option<Self> {
        let first = meta(data, 0);
        // bbolt's default page size when the first meta page is unreadable.
        let second = meta(data, first.map_or(4096, |m| m.0));
        let (page_size, root, _) = match (first, second) {
            (Some(a), Some(b)) => {
                if b.2 > a.2 {
                    b
                } else {
                    a
                }
            }
            (a, b) => a.or(b)?,
        };
        Some(Self {
            data,
            page_size,
            root,
        })
    }

    /// The value of `key` in the bucket at `buckets` (from the root), if it is a plain value.
    pub fn get(&self, buckets: &[&[u8]], key: &[u8]) -> Option<&'a [u8]> {
        let mut node = self.page(self.root)?;
        for name in buckets {
            let (flags, value) = self.find(node, name)?;
            if flags & BUCKET == 0 {
                return None;
            }
            node = self.bucket(value)?;
        }
        let (flags, value) = self.find(node, key)?;
        (flags & BUCKET == 0).then_some(value)
    }

    fn page(&self, pgid: u64) -> Option<Node<'a>> {
        let off = usize::try_from(pgid).ok()?.checked_mul(self.page_size)?;
        (off < self.data.len()).then_some(Node {
            buf: self.data,
            off,
        })
    }

    /// A sub-bucket's root: a page of the file, or the page inline in its value.
    fn bucket(&self, value: &'a [u8]) -> Option<Node<'a>> {
        match u64_at(value, 0)? {
            0 => Some(Node {
                buf: value.get(16..)?,
                off: 0,
            }),
            root => self.page(root),
        }
    }

    /// The element for `key` in the tree at `node`: (its flags, its value).
    fn find(&self, mut node: Node<'a>, key: &[u8]) -> Option<(u32, &'a [u8])> {
        for _ in 0..MAX_DEPTH {
            let Node { buf, off } = node;
            let flags = u16_at(buf, off + 8)?;
            let count = usize::from(u16_at(buf, off + 10)?);
            let base = off.checked_add(PAGE_HEADER)?;
            if flags & BRANCH != 0 {
                let mut child = None;
                for i in 0..count {
                    let e = base.checked_add(i.checked_mul(ELEMENT)?)?;
                    let start = e.checked_add(usize_at(buf, e)?)?;
                    let k = buf.get(start..start.checked_add(usize_at(buf, e + 4)?)?)?;
                    if k > key {
                        break;
                    }
                    child = Some(u64_at(buf, e + 8)?);
                }
                node = self.page(child?)?;
            } else if flags & LEAF != 0 {
                return leaf_find(buf, base, count, key);
            } else {
                return None;
            }
        }
        None
    }
}

fn leaf_find<'a>(buf: &'a [u8], base: usize, count: usize, key: &[u8]) -> Option<(u32, &'a [u8])> {
    for i in 0..count {
        let e = base.checked_add(i.checked_mul(ELEMENT)?)?;
        let start = e.checked_add(usize_at(buf, e + 4)?)?;
        let key_end = start.checked_add(usize_at(buf, e + 8)?)?;
        if buf.get(start..key_end)? == key {
            let value_end = key_end.checked_add(usize_at(buf, e + 12)?)?;
            return Some((u32_at(buf, e)?, buf.get(key_end..value_end)?));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::podman;
    use super::*;

    const ID: &str = "a2029b539c9f174cb8f9d21b0fca3dc46d08447f7877fc7ec5c925489399990a";

    const PS: usize = 4096;

    fn header(page: &mut [u8], id: u64, flags: u16, count: u16) {
        page[0..8].copy_from_slice(&id.to_le_bytes());
        page[8..10].copy_from_slice(&flags.to_le_bytes());
        page[10..12].copy_from_slice(&count.to_le_bytes());
    }

    /// A leaf page's bytes (header and elements) holding `items` (flags, key, value), sorted.
    fn leaf(id: u64, items: &[(u32, &[u8], Vec<u8>)]) -> Vec<u8> {
        let mut page = vec![0u8; PAGE_HEADER + ELEMENT * items.len()];
        header(&mut page, id, LEAF, items.len() as u16);
        for (i, (flags, key, value)) in items.iter().enumerate() {
            let e = PAGE_HEADER + i * ELEMENT;
            let pos = (page.len() - e) as u32;
            page[e..e + 4].copy_from_slice(&flags.to_le_bytes());
            page[e + 4..e + 8].copy_from_slice(&pos.to_le_bytes());
            page[e + 8..e + 12].copy_from_slice(&(key.len() as u32).to_le_bytes());
            page[e + 12..e + 16].copy_from_slice(&(value.len() as u32).to_le_bytes());
            page.extend_from_slice(key);
            page.extend_from_slice(value);
        }
        page
    }

    /// A sub-bucket's value with its page inline.
    fn inline_bucket(items: &[(u32, &[u8], Vec<u8>)]) -> Vec<u8> {
        let mut v = vec![0u8; 16];
        v.extend(leaf(0, items));
        v
    }

    /// A sub-bucket's value pointing at page `root`.
    fn bucket_at(root: u64) -> Vec<u8> {
        let mut v = root.to_le_bytes().to_vec();
        v.extend([0u8; 8]);
        v
    }

    /// A file: meta pages 0 and 1 (the second newer, naming `root`), then `pages` from page 2
    /// (each padded to whole pages).
    fn file(root: u64, pages: &[Vec<u8>]) -> Vec<u8> {
        let mut data = vec![0u8; 2 * PS];
        for (p, txid) in [(0usize, 1u64), (1, 2)] {
            let page = &mut data[p * PS..(p + 1) * PS];
            header(page, p as u64, META, 0);
            let m = PAGE_HEADER;
            page[m..m + 4].copy_from_slice(&MAGIC.to_le_bytes());
            page[m + 4..m + 8].copy_from_slice(&2u32.to_le_bytes());
            page[m + 8..m + 12].copy_from_slice(&(PS as u32).to_le_bytes());
            let r = if p == 1 { root } else { 999 };
            page[m + 16..m + 24].copy_from_slice(&r.to_le_bytes());
            page[m + 48..m + 56].copy_from_slice(&txid.to_le_bytes());
        }
        for page in pages {
            let mut p = page.clone();
            p.resize(p.len().div_ceil(PS) * PS, 0);
            data.extend(p);
        }
        data
    }

    /// A branch page over children (first key, page id).
    fn branch(id: u64, children: &[(&[u8], u64)]) -> Vec<u8> {
        let mut page = vec![0u8; PAGE_HEADER + ELEMENT * children.len()];
        header(&mut page, id, BRANCH, children.len() as u16);
        for (i, (key, pgid)) in children.iter().enumerate() {
            let e = PAGE_HEADER + i * ELEMENT;
            let pos = (page.len() - e) as u32;
            page[e..e + 4].copy_from_slice(&pos.to_le_bytes());
            page[e + 4..e + 8].copy_from_slice(&(key.len() as u32).to_le_bytes());
            page[e + 8..e + 16].copy_from_slice(&pgid.to_le_bytes());
            page.extend_from_slice(key);
        }
        page
    }

    #[test]
    fn nested_buckets_inline_and_paged_through_a_branch() {
        // page 2: root leaf {"ctr": bucket at 3}; page 3: branch → 4 ("a…"), 5 ("i…");
        // page 5: leaf {"id2": inline bucket {"config": big value}}.
        let big = vec![b'x'; 3 * PS];
        let root = leaf(2, &[(BUCKET, b"ctr", bucket_at(3))]);
        let br = branch(3, &[(b"a", 4), (b"i", 5)]);
        let l4 = leaf(4, &[(0, b"b", b"B".to_vec())]);
        let id2 = inline_bucket(&[(0, b"config", big.clone()), (0, b"state", b"{}".to_vec())]);
        let l5 = leaf(5, &[(BUCKET, b"id2", id2)]);
        let data = file(2, &[root, br, l4, l5]);
        let db = Db::open(&data).expect("open");
        let config = db.get(&[b"ctr", b"id2"], b"config");
        assert!(config == Some(&big[..]), "{:?}", config.map(<[u8]>::len));
        assert_eq!(db.get(&[b"ctr", b"id2"], b"state"), Some(&b"{}"[..]));
        assert_eq!(db.get(&[b"ctr"], b"b"), Some(&b"B"[..]));
        assert_eq!(db.get(&[b"ctr"], b"id2"), None, "a bucket is not a value");
        assert_eq!(
            db.get(&[b"ctr", b"b"], b"x"),
            None,
            "a value is not a bucket"
        );
        assert_eq!(db.get(&[b"ctr", b"id3"], b"config"), None);
        assert_eq!(db.get(&[b"nope"], b"config"), None);
    }

    #[test]
    fn hostile_files_give_none_never_a_panic() {
        assert!(Db::open(b"").is_none());
        assert!(Db::open(&[0u8; 100]).is_none());
        let root = leaf(2, &[(BUCKET, b"ctr", bucket_at(2))]);
        let data = file(2, &[root]);
        // A bucket whose root is its parent's page: a loop, bounded by MAX_DEPTH.
        let db = Db::open(&data).expect("open");
        let deep: Vec<&[u8]> = vec![b"ctr"; 100];
        assert_eq!(db.get(&deep, b"config"), None);
        // Every truncation and every single corrupted byte.
        for n in 0..data.len().min(2 * PS + 200) {
            if let Some(db) = Db::open(&data[..n]) {
                let _ = db.get(&[b"ctr"], b"config");
            }
        }
        for at in (0..data.len()).step_by(7) {
            for b in [0u8, 0xff, 0x7f] {
                let mut bad = data.clone();
                bad[at] = b;
                if let Some(db) = Db::open(&bad) {
                    let _ = db.get(&[b"ctr", b"ctr"], b"config");
                }
            }
        }
    }

    #[test]
    fn podmans_layout_gives_the_labels() {
        // podman 4's state: bucket `ctr` → bucket `<id>` (inline) → `config` (JSON).
        let config = serde_json::json!({
            "spec": {"process": {"env": ["SECRET=hunter2"]}},
            "id": ID, "name": "web",
            "labels": {"com.docker.compose.project": "shop", "com.docker.compose.service": "web"}
        })
        .to_string()
        .into_bytes();
        let ctr = inline_bucket(&[(0, b"config", config)]);
        let root = leaf(2, &[(1, b"ctr", bucket_at(3))]);
        let ctrs = leaf(3, &[(1, ID.as_bytes(), ctr)]);
        let db = file(2, &[root, ctrs]);
        let got = podman::labels(&db, ID).expect("labels");
        assert_eq!(got["com.docker.compose.project"], "shop");
        assert_eq!(got["com.docker.compose.service"], "web");
        assert_eq!(podman::labels(&db, &ID.replace('a', "b")), None);
        assert_eq!(podman::labels(b"not a database", ID), None);
    }
}
