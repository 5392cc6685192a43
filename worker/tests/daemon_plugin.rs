//! `rbees-workerd --plugin PATH`: the daemon serves a model on the example
//! plugin and streams the same greedy tokens as on the ndarray reference.

mod daemon_support;

use daemon_support::*;
use serde_json::json;

#[test]
fn the_daemon_serves_a_model_on_a_plugin() {
    let plugin = rbees_plugin_testkit::build().example();
    let mut on_plugin = spawn(&["--plugin", plugin.to_str().unwrap()], &[]);
    let mut on_ndarray = spawn(&[], &[]);
    on_plugin.wait_ready(None);
    on_ndarray.wait_ready(None);
    let h = on_plugin.get_json("/health");
    assert_eq!(h["backend"], "example", "{h}");
    assert_eq!(h["device"], "cpu", "{h}");
    let job =
        json!({"job_id": "p1", "prompt": "Once upon a time", "max_tokens": 12, "temperature": 0});
    let got = token_ids(&on_plugin.execute_events(&job));
    let want = token_ids(&on_ndarray.execute_events(&job));
    assert_eq!(got.len(), 12);
    assert_eq!(got, want);
}
