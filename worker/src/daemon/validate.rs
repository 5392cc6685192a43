//! Request-body validation that reports every bad field at once.

use serde::Serialize;
use serde_json::{Map, Value};

use rbees_model::SamplingParams;

/// One rejected field, as listed in a 400 answer.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        FieldError {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// Longest accepted `job_id`.
pub const MAX_JOB_ID_LEN: usize = 256;
/// Most stop strings per request.
pub const MAX_STOPS: usize = 16;

/// A field-by-field reader over a JSON object that collects every error.
pub struct Fields {
    map: Map<String, Value>,
    errors: Vec<FieldError>,
    known: Vec<&'static str>,
}

impl Fields {
    /// Parses `body` as a JSON object; anything else is one error on `body`.
    pub fn parse(body: &[u8]) -> Result<Self, Vec<FieldError>> {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(Fields {
                map,
                errors: Vec::new(),
                known: Vec::new(),
            }),
            Ok(_) => Err(vec![FieldError::new("body", "must be a JSON object")]),
            Err(e) => Err(vec![FieldError::new(
                "body",
                format!("not valid JSON: {e}"),
            )]),
        }
    }

    fn get(&mut self, key: &'static str) -> Option<&Value> {
        self.known.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    /// A string; `None` (with an error if `required`) when absent or wrong.
    pub fn string(&mut self, key: &'static str, required: bool) -> Option<String> {
        match self.get(key).cloned() {
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                self.error(key, "must be a string");
                None
            }
            None => {
                if required {
                    self.error(key, "is required");
                }
                None
            }
        }
    }

    pub fn boolean(&mut self, key: &'static str, default: bool) -> bool {
        match self.get(key).cloned() {
            Some(Value::Bool(b)) => b,
            Some(_) => {
                self.error(key, "must be true or false");
                default
            }
            None => default,
        }
    }

    /// An integer in `min..=max`.
    pub fn uint(&mut self, key: &'static str, default: u64, min: u64, max: u64) -> u64 {
        match self.get(key).cloned() {
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => n,
                Some(n) => {
                    self.error(key, format!("must be in [{min}, {max}], got {n}"));
                    default
                }
                None => {
                    let msg = if max == u64::MAX {
                        format!("must be an integer >= {min}")
                    } else {
                        format!("must be an integer in [{min}, {max}]")
                    };
                    self.error(key, msg);
                    default
                }
            },
            None => default,
        }
    }

    /// A finite number accepted by `ok`; `range` describes it in the message.
    pub fn number(
        &mut self,
        key: &'static str,
        default: f64,
        range: &str,
        ok: impl Fn(f64) -> bool,
    ) -> f64 {
        match self.get(key).cloned() {
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && ok(x) => x,
                Some(x) => {
                    self.error(key, format!("must be in {range}, got {x}"));
                    default
                }
                None => {
                    self.error(key, format!("must be a number in {range}"));
                    default
                }
            },
            None => default,
        }
    }

    /// `stop`: a string or a list of strings, each non-empty.
    pub fn stop(&mut self, key: &'static str) -> Vec<String> {
        let list = match self.get(key).cloned() {
            None => return Vec::new(),
            Some(Value::String(s)) => vec![Value::String(s)],
            Some(Value::Array(items)) => items,
            Some(_) => {
                self.error(key, "must be a string or a list of strings");
                return Vec::new();
            }
        };
        if list.len() > MAX_STOPS {
            self.error(key, format!("at most {MAX_STOPS} stop strings"));
            return Vec::new();
        }
        let mut out = Vec::new();
        for item in list {
            match item {
                Value::String(s) if !s.is_empty() => out.push(s),
                Value::String(_) => {
                    self.error(key, "stop strings must not be empty");
                    return Vec::new();
                }
                _ => {
                    self.error(key, "must be a string or a list of strings");
                    return Vec::new();
                }
            }
        }
        out
    }

    /// Rejects keys that no reader asked for, then returns every error.
    pub fn finish(mut self) -> Result<(), Vec<FieldError>> {
        let unknown: Vec<String> = self
            .map
            .keys()
            .filter(|k| !self.known.contains(&k.as_str()))
            .cloned()
            .collect();
        for key in unknown {
            // An empty key would make an error with no field name to show.
            let field = if key.is_empty() { "\"\"" } else { key.as_str() };
            self.error(field, "unknown field");
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }

    /// The raw value of `key` (`None` if absent or null), marking it known.
    pub fn raw(&mut self, key: &'static str) -> Option<Value> {
        self.get(key).cloned()
    }

    /// Marks `key` as known without reading it.
    pub fn allow(&mut self, key: &'static str) {
        self.known.push(key);
    }
}

/// A validated `POST /execute` body.
#[derive(Debug, Clone)]
pub struct ExecuteRequest {
    pub job_id: String,
    pub prompt: String,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
}

/// Default `max_tokens` of `/execute`.
pub const DEFAULT_MAX_TOKENS: u64 = 128;

/// A fresh seed when the request gives none.
pub fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Reads the sampling fields shared by `/execute` and the OpenAI endpoints.
pub fn sampling(f: &mut Fields, penalty_key: &'static str) -> SamplingParams {
    let d = SamplingParams::default();
    let temperature = f.number("temperature", d.temperature as f64, "[0, 100]", |x| {
        (0.0..=100.0).contains(&x)
    }) as f32;
    let top_p = f.number("top_p", d.top_p as f64, "(0, 1]", |x| x > 0.0 && x <= 1.0) as f32;
    let top_k = f.uint("top_k", d.top_k as u64, 0, 1_000_000) as usize;
    let min_p = f.number("min_p", d.min_p as f64, "[0, 1]", |x| {
        (0.0..=1.0).contains(&x)
    }) as f32;
    let repeat_penalty = f.number(penalty_key, d.repeat_penalty as f64, "(0, 100]", |x| {
        x > 0.0 && x <= 100.0
    }) as f32;
    let seed = match f.uint("seed", 0, 0, u64::MAX) {
        0 if !matches!(f.map.get("seed"), Some(v) if !v.is_null()) => fresh_seed(),
        s => s,
    };
    SamplingParams {
        temperature,
        top_k,
        top_p,
        min_p,
        repeat_penalty,
        repeat_last_n: d.repeat_last_n,
        seed,
    }
}

/// Reads a non-empty `job_id` of at most [`MAX_JOB_ID_LEN`] bytes.
pub fn job_id(f: &mut Fields) -> Option<String> {
    let id = f.string("job_id", true)?;
    check_job_id(f, id)
}

fn check_job_id(f: &mut Fields, id: String) -> Option<String> {
    if id.is_empty() || id.len() > MAX_JOB_ID_LEN || id.chars().any(char::is_control) {
        f.error(
            "job_id",
            format!("must be 1 to {MAX_JOB_ID_LEN} bytes without control characters"),
        );
        return None;
    }
    Some(id)
}

/// A job id for a request that gave none: `job-` and 16 hex digits.
pub fn fresh_job_id() -> String {
    format!("job-{:016x}", fresh_seed())
}

/// Which route a generation body came to: `/execute` (rbees' contract) or
/// `/v1/inference` (llama-orch's queens, whose bodies carry a few more
/// fields that say nothing to a worker serving one model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Execute,
    Inference,
}

/// Validates a `POST /execute` (or `/v1/inference`) body; `context` bounds
/// `max_tokens`. A missing `job_id` gets a fresh one.
pub fn execute(
    body: &[u8],
    context: usize,
    route: Route,
) -> Result<ExecuteRequest, Vec<FieldError>> {
    let mut f = Fields::parse(body)?;
    let job_id = match f.string("job_id", false) {
        Some(id) => check_job_id(&mut f, id),
        None => Some(fresh_job_id()),
    };
    let prompt = f.string("prompt", true);
    let max_tokens = f.uint(
        "max_tokens",
        DEFAULT_MAX_TOKENS.min(context as u64),
        1,
        context as u64,
    );
    let sampling = sampling(&mut f, "repetition_penalty");
    let stop = f.stop("stop");
    let ignore_eos = f.boolean("ignore_eos", false);
    if !f.boolean("stream", true) {
        f.error("stream", "this endpoint always streams: true or absent");
    }
    if route == Route::Inference {
        // llama-orch's `Operation::Infer` and old queen bodies.
        match f.raw("operation") {
            None => {}
            Some(serde_json::Value::String(op)) if op == "infer" => {}
            Some(_) => f.error("operation", "must be \"infer\""),
        }
        for key in ["model", "hive_id", "worker_id", "device"] {
            f.allow(key);
        }
    }
    f.finish()?;
    match (job_id, prompt) {
        (Some(job_id), Some(prompt)) => Ok(ExecuteRequest {
            job_id,
            prompt,
            max_tokens: max_tokens as usize,
            sampling,
            stop,
            ignore_eos,
        }),
        // Unreachable: a missing field was recorded as an error above.
        _ => Err(vec![FieldError::new("body", "incomplete request")]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_bad_field() {
        let body = br#"{"job_id":"","prompt":3,"max_tokens":0,"temperature":-1,"top_p":2,
            "top_k":1.5,"min_p":"x","repetition_penalty":0,"seed":-4,"stop":[1],"bogus":true}"#;
        let errors = execute(body, 256, Route::Execute).unwrap_err();
        let mut fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                "bogus",
                "job_id",
                "max_tokens",
                "min_p",
                "prompt",
                "repetition_penalty",
                "seed",
                "stop",
                "temperature",
                "top_k",
                "top_p"
            ]
        );
    }

    #[test]
    fn defaults_and_single_stop_string() {
        let r = execute(
            br#"{"job_id":"a","prompt":"hi","stop":"x","seed":5}"#,
            256,
            Route::Execute,
        )
        .unwrap();
        assert_eq!(r.max_tokens, 128);
        assert_eq!(r.sampling.temperature, 0.8);
        assert_eq!(r.sampling.top_k, 40);
        assert_eq!(r.sampling.seed, 5);
        assert_eq!(r.stop, ["x"]);
        assert!(!r.ignore_eos);
    }

    #[test]
    fn an_empty_unknown_key_is_named() {
        // Found by the execute_request fuzz target: `{"": 1}` gave an error
        // whose field name was empty.
        let errors =
            execute(br#"{"job_id":"a","prompt":"b","":1}"#, 64, Route::Execute).unwrap_err();
        assert_eq!(errors, vec![FieldError::new("\"\"", "unknown field")]);
    }

    #[test]
    fn missing_required_fields() {
        let errors = execute(b"{}", 256, Route::Execute).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["prompt"]);
        assert_eq!(
            execute(b"[1]", 256, Route::Execute).unwrap_err()[0].field,
            "body"
        );
    }

    #[test]
    fn a_missing_job_id_gets_a_fresh_one() {
        let a = execute(br#"{"prompt":"hi","stream":true}"#, 64, Route::Execute).unwrap();
        let b = execute(br#"{"prompt":"hi"}"#, 64, Route::Execute).unwrap();
        assert!(
            a.job_id.starts_with("job-") && a.job_id.len() == 20,
            "{}",
            a.job_id
        );
        assert_ne!(a.job_id, b.job_id);
        let errors = execute(br#"{"prompt":"hi","stream":false}"#, 64, Route::Execute).unwrap_err();
        assert_eq!(errors[0].field, "stream");
    }

    #[test]
    fn llama_orch_bodies_are_taken_on_the_inference_route_only() {
        // The current queen's scheduler, `Operation::Infer`, and the old queen.
        let bodies: [&[u8]; 3] = [
            br#"{"prompt":"hi","max_tokens":20,"temperature":0.7,"top_p":0.9,"top_k":40}"#,
            br#"{"operation":"infer","hive_id":"h","model":"m","prompt":"hi","max_tokens":5,"temperature":0.7,"stream":true,"device":0,"worker_id":"w"}"#,
            br#"{"model":null,"prompt":"hi","max_tokens":100,"temperature":0.7}"#,
        ];
        for body in bodies {
            let r = execute(body, 256, Route::Inference).unwrap();
            assert_eq!(r.prompt, "hi");
        }
        let errors = execute(bodies[1], 64, Route::Execute).unwrap_err();
        let mut fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        fields.sort();
        assert_eq!(
            fields,
            ["device", "hive_id", "model", "operation", "worker_id"]
        );
        let errors = execute(
            br#"{"operation":"spawn","prompt":"x"}"#,
            64,
            Route::Inference,
        )
        .unwrap_err();
        assert_eq!(errors[0].field, "operation");
    }
}
