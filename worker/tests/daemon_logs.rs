//! `rbees-workerd --log-format json`: one JSON object per log line, with the
//! job id on the lines of a job's span.

mod daemon_support;

use daemon_support::*;
use serde_json::{json, Value};

#[test]
fn json_logs_carry_the_job_span() {
    let mut w = spawn(&["--log-format", "json"], &[]);
    w.wait_ready(None);
    let events = w.execute_events(&json!({
        "job_id": "log-job-7", "prompt": "Hello", "max_tokens": 3, "temperature": 0
    }));
    assert_eq!(last(&events).name, "end");
    let _ = w.child.kill();
    let _ = w.child.wait();
    let lines: Vec<Value> = w
        .log_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let job_lines: Vec<&Value> = lines
        .iter()
        .filter(|l| l["span"]["job_id"] == "log-job-7")
        .collect();
    let messages: Vec<&str> = job_lines
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str())
        .collect();
    assert!(messages.contains(&"job started"), "{messages:?}");
    assert!(messages.contains(&"job ended"), "{messages:?}");
}
