//! The S3 operation of each request, for the request metrics (`mobula_requests_total{api="s3"}`).
//!
//! s3s resolves every request to one operation before it asks the access check; [`RecordOp`] is
//! that check: it writes the operation's name into the [`OpSlot`] the listener put in the
//! request's extensions, then applies s3s's own default rule unchanged (a request must carry a
//! valid signature). Names come from s3s's closed list, so the label space is bounded.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

use s3s::access::{S3Access, S3AccessContext};
use s3s::{s3_error, S3Result};

/// Where a request's operation name is written, once resolved.
#[derive(Debug, Clone, Default)]
pub struct OpSlot(Arc<OnceLock<&'static str>>);

impl OpSlot {
    /// The operation, or `Unresolved` for a request s3s refused before naming one.
    pub fn name(&self) -> &'static str {
        self.0.get().copied().unwrap_or("Unresolved")
    }
}

/// The access check that records the operation.
#[derive(Debug)]
pub struct RecordOp;

fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut set = NAMES
        .get_or_init(Default::default)
        .lock()
        .expect("not poisoned");
    if let Some(s) = set.get(name) {
        return s;
    }
    let s: &'static str = Box::leak(name.to_string().into_boxed_str());
    set.insert(s);
    s
}

#[async_trait::async_trait]
impl S3Access for RecordOp {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let name = intern(cx.s3_op().name());
        if let Some(slot) = cx.extensions_mut().get::<OpSlot>() {
            let _ = slot.0.set(name);
        }
        match cx.credentials() {
            Some(_) => Ok(()),
            None => Err(s3_error!(AccessDenied, "Signature is required")),
        }
    }
}
