//! Buckets seen to exist in the last few seconds, so that a stream of writes into one bucket
//! does not pay a metadata round trip each for the early existence check.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a bucket seen to exist is taken to exist by writes without asking again.
const KNOWN_FOR: Duration = Duration::from_secs(5);

/// Buckets (paths) seen to exist recently. Only writes trust it, because their metadata commit
/// checks the bucket again inside its transaction (a write into a bucket deleted meanwhile fails
/// there with `NoSuchBucket` and its data is reclaimed): the cache only saves the early
/// round trip that rejects a missing bucket before any byte moves. Never holds a negative answer.
#[derive(Debug, Default)]
pub struct Known(Mutex<HashMap<String, Instant>>);

impl Known {
    pub fn fresh(&self, path: &str) -> bool {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(path).is_some_and(|t| t.elapsed() < KNOWN_FOR)
    }

    pub fn saw(&self, path: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= 10_000 {
            map.retain(|_, t| t.elapsed() < KNOWN_FOR);
        }
        map.insert(path.to_string(), Instant::now());
    }

    pub fn forget(&self, path: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(path);
    }
}
