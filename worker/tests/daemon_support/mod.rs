//! Starts the real `rbees-workerd` binary on a free loopback port with the
//! tiny model, and talks to it over HTTP (blocking client, SSE parsed by hand).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn tiny_model() -> PathBuf {
    repo_root().join("testdata/models/tiny-llama2-f32.gguf")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// A running worker; killed when dropped, even when the test fails.
pub struct Worker {
    pub child: Child,
    pub port: u16,
    pub base: String,
    pub log: PathBuf,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Spawns the worker with `extra` flags and `env`, from the temp dir (so no
/// checkout config is read). Its stderr goes to a log file.
pub fn spawn(extra: &[&str], env: &[(&str, &str)]) -> Worker {
    spawn_model(&tiny_model(), extra, env)
}

/// As [`spawn`] with another model file.
pub fn spawn_model(model: &Path, extra: &[&str], env: &[(&str, &str)]) -> Worker {
    let port = free_port();
    let mut args: Vec<String> = [
        "--worker-id",
        "w-test",
        "--port",
        &port.to_string(),
        "--model",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(model.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    spawn_argv(port, &args, env)
}

/// Spawns the worker with exactly `args` (which must make it listen on
/// `port`) and `env` on top of this process's environment minus
/// `RBEES_API_TOKEN`, from the temp dir (so no checkout config is read).
/// Its stderr goes to a log file.
pub fn spawn_argv(port: u16, args: &[String], env: &[(&str, &str)]) -> Worker {
    let log = std::env::temp_dir().join(format!(
        "rbees-workerd-test-{}-{port}.log",
        std::process::id()
    ));
    let stderr = std::fs::File::create(&log).expect("log file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbees-workerd"));
    cmd.args(args)
        .env_remove("RBEES_API_TOKEN")
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(stderr);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn rbees-workerd");
    Worker {
        child,
        port,
        base: format!("http://127.0.0.1:{port}"),
        log,
    }
}

impl Worker {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit (at most `limit`).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Polls `/v1/ready` until the model is loaded; panics with the log if
    /// the worker dies or takes more than 60 s.
    pub fn wait_ready(&mut self, token: Option<&str>) {
        let c = client();
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("worker exited ({status}):\n{}", self.log_text());
            }
            let mut req = c.get(self.url("/v1/ready"));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Ok(r) = req.send() {
                if let Ok(v) = r.json::<Value>() {
                    if v["ready"] == true {
                        return;
                    }
                    assert_ne!(v["state"], "error", "load failed: {v}");
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("worker not ready after 60 s:\n{}", self.log_text());
    }

    pub fn post(&self, path: &str, body: &Value) -> reqwest::blocking::Response {
        client()
            .post(self.url(path))
            .json(body)
            .send()
            .expect("POST")
    }

    pub fn get_json(&self, path: &str) -> Value {
        client()
            .get(self.url(path))
            .send()
            .expect("GET")
            .json()
            .expect("JSON")
    }
}

/// One server-sent event with the time it was read.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub name: String,
    pub data: Value,
    pub at: Instant,
}

/// Reads server-sent events one at a time from a streaming response.
pub struct SseReader<R: Read> {
    lines: BufReader<R>,
    /// Whether the stream ended with `data: [DONE]`.
    pub done: bool,
}

impl<R: Read> SseReader<R> {
    pub fn new(r: R) -> Self {
        SseReader {
            lines: BufReader::new(r),
            done: false,
        }
    }

    /// The next event, or `None` at the end of the stream or at its
    /// `data: [DONE]` terminator (which sets [`SseReader::done`]).
    pub fn next_event(&mut self) -> Option<SseEvent> {
        let mut name = String::new();
        let mut data = String::new();
        loop {
            let mut line = String::new();
            if self.lines.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if data.is_empty() {
                    continue; // a keep-alive comment's end
                }
                if data == "[DONE]" {
                    assert!(
                        name.is_empty(),
                        "[DONE] is an unnamed event, got event: {name}"
                    );
                    self.done = true;
                    return None;
                }
                let data: Value =
                    serde_json::from_str(&data).unwrap_or_else(|e| panic!("bad data {data}: {e}"));
                return Some(SseEvent {
                    name: if name.is_empty() {
                        "message".into()
                    } else {
                        name
                    },
                    data,
                    at: Instant::now(),
                });
            } else if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
    }

    /// Every event up to the end of the stream (`[DONE]` not included).
    pub fn collect(self) -> Vec<SseEvent> {
        self.collect_with_done().0
    }

    /// Every event, and whether the stream ended with `data: [DONE]`.
    pub fn collect_with_done(mut self) -> (Vec<SseEvent>, bool) {
        let mut out = Vec::new();
        while let Some(e) = self.next_event() {
            out.push(e);
        }
        (out, self.done)
    }
}

/// The concatenated `t` of the token events.
pub fn text_of(events: &[SseEvent]) -> String {
    events
        .iter()
        .filter(|e| e.name == "token")
        .map(|e| e.data["t"].as_str().expect("t is a string"))
        .collect()
}

pub fn last(events: &[SseEvent]) -> &SseEvent {
    events.last().expect("at least one event")
}

/// The id of every generated token, in order: one per index `i` (the final
/// flush that repeats the last index is not counted twice).
pub fn token_ids(events: &[SseEvent]) -> Vec<u64> {
    let mut ids = Vec::new();
    for e in events.iter().filter(|e| e.name == "token") {
        let i = e.data["i"].as_u64().expect("i is an integer") as usize;
        if i == ids.len() {
            ids.push(e.data["id"].as_u64().expect("id is an integer"));
        }
    }
    ids
}

/// The value of one Prometheus sample (`name` with its labels, exactly as
/// printed, e.g. `rbees_requests_total{outcome="completed"}`).
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

impl Worker {
    /// The `/metrics` text.
    pub fn metrics_text(&self) -> String {
        client()
            .get(self.url("/metrics"))
            .send()
            .expect("GET /metrics")
            .text()
            .expect("metrics text")
    }

    /// `POST /execute` that must be accepted; all its events (the stream
    /// must end with `data: [DONE]`).
    pub fn execute_events(&self, body: &Value) -> Vec<SseEvent> {
        let r = self.post("/execute", body);
        assert_eq!(r.status(), 200, "{body}: {:?}", r.text());
        let (events, done) = SseReader::new(r).collect_with_done();
        assert!(done, "{body}: no [DONE] after {events:?}");
        events
    }
}

/// One request a [`fake_manager`] received.
#[derive(Debug)]
pub struct Received {
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
}

/// A fake pool manager on a free loopback port: answers every request with
/// `status` and `{"message": "ok"}` (llama-orch's hive answers a JSON
/// message), and reports each request.
pub fn fake_manager(status: u16) -> (u16, std::sync::mpsc::Receiver<Received>) {
    use std::io::Write;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut length = 0usize;
            let mut authorization = None;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
                let (name, value) = h.split_once(':').unwrap_or((&h, ""));
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "authorization" => authorization = Some(value.trim().to_string()),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let answer = r#"{"message":"ok"}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let received = Received {
                path: request_line.split(' ').nth(1).unwrap_or("").to_string(),
                authorization,
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            };
            if tx.send(received).is_err() {
                break;
            }
        }
    });
    (port, rx)
}
