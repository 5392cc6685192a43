//! The web page served by rbees-workerd, in real headless Chromium
//! (`scripts/web_ui_check.py`: Selenium with Debian's `chromium` and
//! `chromium-driver`, which scripts/test.sh installs when missing). It
//! chats with SmolLM2 through the page, sees tokens stream in, stops a
//! generation and reads the status view; screenshots go to
//! `target/web-ui/`. Where Chromium, its driver or Selenium cannot be
//! found, the browser test says so and is skipped; the HTTP side of the
//! page is checked here either way.

mod daemon_support;

use std::path::PathBuf;
use std::process::Command;

use daemon_support::*;
use serde_json::Value;

const TOKEN: &str = "web-t0ken";

fn smollm2() -> PathBuf {
    let model = repo_root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        model.exists(),
        "{} is missing: run scripts/fetch-model.sh",
        model.display()
    );
    model
}

fn find(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().find_map(|c| {
        let out = Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .output()
            .ok()?;
        let path = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (!path.is_empty()).then(|| PathBuf::from(path))
    })
}

#[test]
fn the_page_is_served_and_its_data_needs_the_token() {
    let mut w = spawn(&[], &[("RBEES_API_TOKEN", TOKEN)]);
    w.wait_ready(Some(TOKEN));
    let c = client();
    let page = c
        .get(w.url("/"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().unwrap();
    assert!(html.contains("/ui/app.js") && html.contains("token-dialog"));
    // Self-contained: nothing loaded from another host.
    for asset in ["/ui/app.js", "/ui/style.css"] {
        let r = c.get(w.url(asset)).send().unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        let body = r.text().unwrap();
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{asset}"
        );
    }
    assert!(!html.contains("http://") && !html.contains("https://"));
    // Health for anything but a browser, and the data behind the token.
    let health: Value = c.get(w.url("/")).send().unwrap().json().unwrap();
    assert_eq!(health["state"], "ready");
    assert_eq!(c.get(w.url("/v1/models")).send().unwrap().status(), 401);
    assert_eq!(c.get(w.url("/metrics")).send().unwrap().status(), 401);

    let mut off = spawn(&["--no-web"], &[]);
    off.wait_ready(None);
    let r = c
        .get(off.url("/"))
        .header("accept", "text/html")
        .send()
        .unwrap();
    let v: Value = r.json().expect("health, not the page, with --no-web");
    assert_eq!(v["state"], "ready");
    assert_eq!(c.get(off.url("/ui/app.js")).send().unwrap().status(), 404);
}

#[test]
fn chat_stop_and_status_in_headless_chromium() {
    let python = std::env::var("RBEES_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_selenium = Command::new(&python)
        .args(["-c", "import selenium"])
        .status()
        .is_ok_and(|s| s.success());
    let chromium = find(&["chromium", "chromium-browser", "google-chrome"]);
    let driver = find(&["chromedriver"]).or_else(|| {
        let debian = PathBuf::from("/usr/lib/chromium/chromedriver");
        debian.exists().then_some(debian)
    });
    let (Some(chromium), Some(driver), true) = (chromium, driver, has_selenium) else {
        eprintln!(
            "SKIPPED chat_stop_and_status_in_headless_chromium: needs chromium, chromedriver \
             (Debian: apt-get install chromium chromium-driver) and Python's selenium in \
             {python}; scripts/test.sh installs them where it can"
        );
        return;
    };
    let mut w = spawn_model(
        &smollm2(),
        &["--ctx-size", "1024", "--debug-token-delay-ms", "40"],
        &[("RBEES_API_TOKEN", TOKEN)],
    );
    w.wait_ready(Some(TOKEN));
    let shots = repo_root().join("target/web-ui");
    let out = Command::new(&python)
        .arg(repo_root().join("scripts/web_ui_check.py"))
        .arg(&w.base)
        .arg(TOKEN)
        .arg(&chromium)
        .arg(&driver)
        .arg(&shots)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}\nworker log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        w.log_text()
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("the script's JSON");
    assert_eq!(seen["stop_enabled_while_streaming"], true, "{seen}");
    // Greedy SmolLM2 on the cpu backend answers in one sentence and ends it.
    assert_eq!(seen["final"], "The capital of France is Paris.", "{seen}");
    assert_eq!(seen["stop"], "stop", "{seen}");
    assert_eq!(
        seen["status"]["slots"], "0 / 4",
        "the stopped job freed its slot: {seen}"
    );
    assert_eq!(seen["stopped"], "stopped", "{seen}");
    let status = &seen["status"];
    assert_eq!(status["backend"], "cpu", "{seen}");
    assert_eq!(status["device"], "cpu");
    assert_eq!(status["context"], "1024");
    assert_eq!(status["state"], "ready");
    // The stopped generation was cancelled on the worker (the page dropped
    // its stream) and the first completed.
    let m = client()
        .get(w.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(
        metric_value(&m, "rbees_requests_total{outcome=\"completed\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric_value(&m, "rbees_requests_total{outcome=\"cancelled\"}"),
        Some(1.0),
        "{m}"
    );
    for shot in ["web-chat.png", "web-status.png"] {
        assert!(
            shots.join(shot).metadata().unwrap().len() > 10_000,
            "{shot}"
        );
    }
}
