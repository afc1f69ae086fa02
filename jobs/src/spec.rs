//! A job as the user describes it (SPEC §4 `POST /:account/jobs`): its phases, each a bash
//! command with optional init, assets, reducer count, memory, disk and image; and the path
//! rules every part of the job system applies to object paths it is handed.

use serde::{Deserialize, Serialize};

use crate::schedule::{PhaseKind, PhaseShape};

/// Most reducers in a phase.
pub const MAX_REDUCERS: u32 = 128;
/// Most phases in a job.
pub const MAX_PHASES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    #[serde(default)]
    pub name: String,
    pub phases: Vec<Phase>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    #[serde(rename = "type", default = "map")]
    pub kind: PhaseKind,
    pub exec: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
    #[serde(default)]
    pub assets: Vec<String>,
    /// Reducers (reduce phases; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// MiB (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// GiB of scratch (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

fn map() -> PhaseKind {
    PhaseKind::Map
}

impl Phase {
    pub fn memory_mib(&self) -> u64 {
        self.memory.unwrap_or(1024)
    }
    pub fn disk_mib(&self) -> u64 {
        self.disk.unwrap_or(8) * 1024
    }
    pub fn image(&self) -> &str {
        self.image.as_deref().unwrap_or("host")
    }
}

/// Why a posted job is refused (`InvalidJob` on the wire).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("job: {0}")]
    Json(#[from] serde_json::Error),
    #[error("name is longer than 512 bytes")]
    NameTooLong,
    #[error("a job has 1 to {MAX_PHASES} phases")]
    PhaseCount,
    #[error("phase {phase}: {what}")]
    Phase { phase: usize, what: String },
}

impl From<SpecError> for mobula_http::ApiError {
    fn from(e: SpecError) -> Self {
        mobula_http::ApiError::new(mobula_http::Code::InvalidJob, e.to_string())
    }
}

impl JobSpec {
    /// Parse and check a job as posted by `account`; the error says what is wrong.
    pub fn parse(body: &[u8], account: &str) -> Result<JobSpec, SpecError> {
        let spec: JobSpec = serde_json::from_slice(body)?;
        spec.check(account)?;
        Ok(spec)
    }

    pub fn check(&self, account: &str) -> Result<(), SpecError> {
        if self.name.len() > 512 {
            return Err(SpecError::NameTooLong);
        }
        if self.phases.is_empty() || self.phases.len() > MAX_PHASES {
            return Err(SpecError::PhaseCount);
        }
        for (i, p) in self.phases.iter().enumerate() {
            let bad = |what: String| Err(SpecError::Phase { phase: i, what });
            if p.exec.trim().is_empty() {
                return bad("exec is empty".into());
            }
            // A command line is handed to the shell as a C string: a NUL cannot be in it.
            if p.exec.contains('\0') {
                return bad("exec contains a NUL byte".into());
            }
            if p.init.as_ref().is_some_and(|i| i.contains('\0')) {
                return bad("init contains a NUL byte".into());
            }
            match (p.kind, p.count) {
                (PhaseKind::Map, Some(_)) => return bad("count is for reduce phases".into()),
                (PhaseKind::Reduce, Some(c)) if c == 0 || c > MAX_REDUCERS => {
                    return bad(format!("count must be 1 to {MAX_REDUCERS}"))
                }
                _ => {}
            }
            if p.memory.is_some_and(|m| !(16..=65536).contains(&m)) {
                return bad("memory must be 16 to 65536 MiB".into());
            }
            if p.disk.is_some_and(|d| !(1..=1024).contains(&d)) {
                return bad("disk must be 1 to 1024 GiB".into());
            }
            if let Some(img) = &p.image {
                if !mobula_metadata::api::plain_name(img, 128) {
                    return bad(format!("image {img:?} is not an image name"));
                }
            }
            for a in &p.assets {
                if !readable_by(a, account) {
                    return bad(format!("asset {a:?} is not a path of this account"));
                }
            }
        }
        Ok(())
    }

    pub fn shapes(&self) -> Vec<PhaseShape> {
        self.phases
            .iter()
            .map(|p| PhaseShape {
                kind: p.kind,
                count: p.count.unwrap_or(1),
            })
            .collect()
    }
}

/// Is `p` a well-formed absolute object path (SPEC §2)?
pub fn valid_path(p: &str) -> bool {
    p.len() <= 1024
        && p.starts_with('/')
        && p[1..]
            .split('/')
            .all(|c| !c.is_empty() && c.len() <= 255 && c != "." && c != ".." && !c.contains('\0'))
        && p[1..].split('/').count() >= 3
}

/// Is `p` an object of one of `account`'s buckets (`/a/buckets/b/objects/k`)? Only keys that are
/// also well-formed paths qualify: inside a task the object is the file
/// `/manta/a/buckets/b/objects/k`, so a key with an empty, `.` or `..` segment cannot be a job's
/// input or output (the whole path is checked by [`valid_path`] first).
fn own_bucket_object(p: &str, account: &str) -> bool {
    matches!(
        mobula_metadata::api::bucket_object(p),
        Some((bucket, _)) if bucket.split('/').nth(1) == Some(account)
    )
}

/// May a job of `account` read `p`: its own (any area but uploads, its buckets' objects
/// included), or anyone's `public`?
pub fn readable_by(p: &str, account: &str) -> bool {
    if !valid_path(p) {
        return false;
    }
    let mut c = p[1..].split('/');
    let (owner, area) = (c.next().unwrap_or(""), c.next().unwrap_or(""));
    area == "public"
        || (owner == account && matches!(area, "stor" | "jobs"))
        || own_bucket_object(p, account)
}

/// May a job of `account` write `p` (its own `stor`, `public`, `jobs`, or an object of one of
/// its buckets)?
pub fn writable_by(p: &str, account: &str) -> bool {
    if !valid_path(p) {
        return false;
    }
    let mut c = p[1..].split('/');
    let (owner, area) = (c.next().unwrap_or(""), c.next().unwrap_or(""));
    owner == account && matches!(area, "stor" | "public" | "jobs") || own_bucket_object(p, account)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_checked() {
        let ok = br#"{"name":"wc","phases":[{"exec":"wc -w"},{"type":"reduce","exec":"cat","count":2}]}"#;
        let s = JobSpec::parse(ok, "a").unwrap();
        assert_eq!(s.phases[0].kind, PhaseKind::Map);
        assert_eq!(s.shapes()[1].count, 2);
        for bad in [
            &br#"{"phases":[]}"#[..],
            br#"{"phases":[{"exec":" "}]}"#,
            br#"{"phases":[{"exec":"wc\u0000 -l"}]}"#,
            br#"{"phases":[{"exec":"wc","init":"true\u0000"}]}"#,
            br#"{"phases":[{"exec":"x","count":2}]}"#,
            br#"{"phases":[{"type":"reduce","exec":"x","count":129}]}"#,
            br#"{"phases":[{"exec":"x","memory":1}]}"#,
            br#"{"phases":[{"exec":"x","image":"../etc"}]}"#,
            br#"{"phases":[{"exec":"x","assets":["/b/stor/x"]}]}"#,
            br#"{"phases":[{"type":"shuffle","exec":"x"}]}"#,
            br#"not json"#,
        ] {
            assert!(
                JobSpec::parse(bad, "a").is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn path_rules() {
        assert!(readable_by("/a/stor/x", "a"));
        assert!(readable_by("/b/public/x", "a"));
        assert!(!readable_by("/b/stor/x", "a"));
        assert!(!readable_by("/a/stor/../x", "a"));
        assert!(!readable_by("/a/uploads/x", "a"));
        assert!(!readable_by("/a/stor", "a"));
        assert!(writable_by("/a/jobs/j/stor/x", "a"));
        assert!(readable_by("/a/buckets/b/objects/k/l", "a"));
        assert!(writable_by("/a/buckets/b/objects/k", "a"));
        assert!(!readable_by("/b/buckets/b/objects/k", "a"));
        assert!(!writable_by("/b/buckets/b/objects/k", "a"));
        assert!(!readable_by("/a/buckets/b/objects/x/../y", "a"));
        assert!(!readable_by("/a/buckets/b/objects/x//y", "a"));
        assert!(!readable_by("/a/buckets/b", "a"));
        assert!(!writable_by("/a/buckets/b/other/k", "a"));
        assert!(!writable_by("/b/public/x", "a"));
        assert!(!writable_by("/a/stor//x", "a"));
    }
}
