//! The job record users see: `live/status` and the archived `job.json` (SPEC §4).

use mobula_metadata::api::JobRow;
use serde_json::{json, Value};

use crate::schedule::Stats;

fn time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The status JSON of a stored job.
pub fn status(row: &JobRow) -> Value {
    let stats: Stats = serde_json::from_str(&row.stats).unwrap_or_default();
    let phases: Value = serde_json::from_str::<Value>(&row.spec)
        .ok()
        .and_then(|s| s.get("phases").cloned())
        .unwrap_or(Value::Array(Vec::new()));
    json!({
        "id": row.id,
        "name": row.name,
        "state": row.state,
        "cancelled": row.cancel_requested,
        "inputDone": row.end_requested || row.cancel_requested,
        "timeCreated": time(row.created),
        "timeDone": row.done.map(time),
        "phases": phases,
        "stats": {
            "errors": stats.errors,
            "outputs": stats.outputs,
            "retries": stats.retries,
            "tasks": stats.tasks,
            "tasksDone": stats.tasks_done,
        },
        "phaseStats": stats.phases.iter().map(|p| json!({"tasks": p.tasks, "tasksDone": p.done})).collect::<Vec<_>>(),
    })
}

/// An error record as `live/err` shows it.
pub fn err_record(rec: &crate::schedule::ErrRecord) -> Value {
    json!({
        "phase": rec.phase.to_string(),
        "what": match &rec.input {
            Some(i) => format!("phase {} map: {i}", rec.phase),
            None => format!("phase {} reduce", rec.phase),
        },
        "code": rec.code,
        "message": rec.message,
        "stderr": rec.stderr,
        "input": rec.input,
        "p0input": rec.p0input,
    })
}
