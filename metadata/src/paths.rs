//! Paths of the namespace and how an entry's path maps to its row (`parent`, `name`).
//!
//! Two shapes share the `entries` table:
//! - the hierarchical areas (`stor`, `public`, `jobs`, …): `/a/b/c` is row (`/a/b`, `c`);
//! - buckets (SPEC §8): bucket `b` of account `a` is the row (`/a/buckets`, `b`), and its object
//!   with key `k` — any 1..=1024 bytes of UTF-8, `/` included — is the row (`/a/buckets/b`, `k`),
//!   named `/a/buckets/b/objects/k`. A key is opaque: no directories are made for its slashes,
//!   and a bucket's objects are one flat, ordered range of the (parent, name) primary key.
//!
//! [`split_path`] and [`join_path`] are inverse for both shapes.

/// Longest bucket object key, in bytes (S3's limit).
pub const MAX_KEY: usize = 1024;

/// If `path` is a bucket object path `/a/buckets/b/objects/k`, its bucket path `/a/buckets/b`
/// and key `k` (non-empty).
pub fn bucket_object(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let mut it = rest.splitn(5, '/');
    let (account, area, bucket, objects, key) =
        (it.next()?, it.next()?, it.next()?, it.next()?, it.next()?);
    if account.is_empty() || area != "buckets" || bucket.is_empty() || objects != "objects" {
        return None;
    }
    if key.is_empty() {
        return None;
    }
    let bucket_len = 1 + account.len() + 1 + area.len() + 1 + bucket.len();
    Some((&path[..bucket_len], key))
}

/// Whether `path` is a bucket's own path, `/a/buckets/b`.
pub fn is_bucket(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    parts.len() == 3 && parts[1] == "buckets" && parts.iter().all(|p| !p.is_empty())
}

/// Whether `path` lies in an account's `buckets` area (`/a/buckets` or below).
pub fn in_buckets(path: &str) -> bool {
    let mut it = path.trim_start_matches('/').split('/');
    it.next().is_some() && it.next() == Some("buckets")
}

/// S3's bucket naming rules: 3–63 of `[a-z0-9.-]`, starting and ending with a letter or digit,
/// no `..`, not shaped like an IPv4 address.
pub fn valid_bucket_name(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (3..=63).contains(&b.len())
        && b.iter().all(|&c| edge(c) || c == b'.' || c == b'-')
        && edge(b[0])
        && edge(b[b.len() - 1])
        && !s.contains("..")
        && s.parse::<std::net::Ipv4Addr>().is_err()
}

/// A valid bucket object key: 1..=[`MAX_KEY`] bytes, no NUL.
pub fn valid_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= MAX_KEY && !k.contains('\0')
}

/// Split an entry's path into its row's (`parent`, `name`): `/a/b/c` into (`/a/b`, `c`), `/a`
/// into (`/`, `a`), `/a/buckets/b/objects/k/l` into (`/a/buckets/b`, `k/l`).
pub fn split_path(path: &str) -> (&str, &str) {
    if let Some(split) = bucket_object(path) {
        return split;
    }
    match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("/", path),
    }
}

/// Join a row's parent and name into the entry's path (inverse of [`split_path`]).
pub fn join_path(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else if is_bucket(parent) {
        format!("{parent}/objects/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// The least string greater than every string that starts with `s` (`None`: there is none,
/// every character of `s` is the largest). SQLite's BINARY collation orders text as UTF-8
/// bytes, which is code-point order, so this is an exclusive upper bound for a prefix range.
pub fn prefix_successor(s: &str) -> Option<String> {
    let mut chars: Vec<char> = s.chars().collect();
    while let Some(c) = chars.pop() {
        let mut n = c as u32 + 1;
        if (0xD800..0xE000).contains(&n) {
            n = 0xE000;
        }
        if let Some(next) = char::from_u32(n) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_join_are_inverse() {
        for p in [
            "/a",
            "/a/b",
            "/a/b/c",
            "/a/buckets",
            "/a/buckets/b",
            "/a/buckets/b/objects/k",
            "/a/buckets/b/objects/k/l//m/",
            "/a/buckets/b/objects/objects/x",
        ] {
            let (parent, name) = split_path(p);
            assert_eq!(join_path(parent, name), p, "{p}");
        }
        assert_eq!(split_path("/a"), ("/", "a"));
        assert_eq!(split_path("/a/b/c"), ("/a/b", "c"));
        assert_eq!(split_path("/a/buckets/b"), ("/a/buckets", "b"));
        assert_eq!(
            split_path("/a/buckets/b/objects/x/y/"),
            ("/a/buckets/b", "x/y/")
        );
        // Not bucket objects: stor paths that merely contain the words.
        assert_eq!(
            split_path("/a/stor/buckets/objects/x"),
            ("/a/stor/buckets/objects", "x")
        );
        assert_eq!(bucket_object("/a/buckets/b/objects/"), None);
        assert_eq!(bucket_object("/a/buckets/b/other/k"), None);
    }

    #[test]
    fn bucket_names() {
        for ok in ["abc", "my-bucket.logs", "a1b", &"x".repeat(63)] {
            assert!(valid_bucket_name(ok), "{ok}");
        }
        for bad in [
            "ab",
            &"x".repeat(64),
            "Abc",
            "a_b",
            "-ab",
            "ab-",
            "a..b",
            "192.168.1.1",
            "ab c",
        ] {
            assert!(!valid_bucket_name(bad), "{bad}");
        }
    }

    #[test]
    fn successors_bound_prefixes() {
        assert_eq!(prefix_successor("a/").as_deref(), Some("a0"));
        assert_eq!(prefix_successor("").as_deref(), None);
        assert_eq!(prefix_successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_successor("\u{D7FF}").as_deref(), Some("\u{E000}"));
        for s in ["a/", "é", "zz"] {
            let up = prefix_successor(s).unwrap();
            assert!(up.as_str() > s);
            assert!(format!("{s}\u{10FFFF}\u{10FFFF}").as_str() < up.as_str());
        }
    }
}
