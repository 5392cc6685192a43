//! Parsing and validation of the OpenAI-compatible request bodies
//! (`/v1/completions`, `/v1/chat/completions`), kept apart from the HTTP
//! handlers so the fuzz targets run exactly the code the daemon runs.

use rbees_model::{GenerateParams, Tokenizer};
use serde_json::Value;

use super::validate::{self, FieldError, Fields};

/// Which endpoint a body was posted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Completion,
    Chat,
}

/// A validated OpenAI request: the prompt text and how to generate.
#[derive(Debug, Clone)]
pub struct OpenAiRequest {
    pub prompt: String,
    pub params: GenerateParams,
    pub stream: bool,
}

/// Validates a body posted to the `kind` endpoint; every bad field is listed.
/// `context` bounds `max_tokens`; `template` renders chat messages.
pub fn parse_request(
    body: &[u8],
    kind: Kind,
    context: usize,
    template: Option<&Result<ChatTemplate, String>>,
    tokenizer: &Tokenizer,
) -> Result<OpenAiRequest, Vec<FieldError>> {
    let mut f = Fields::parse(body)?;
    let prompt = match kind {
        Kind::Completion => completion_prompt(&mut f),
        Kind::Chat => chat_prompt(&mut f, template, tokenizer),
    };
    let c = common(&mut f, context);
    f.finish()?;
    let Some(prompt) = prompt else {
        return Err(vec![FieldError::new("body", "no prompt")]);
    };
    Ok(OpenAiRequest {
        prompt,
        params: c.params,
        stream: c.stream,
    })
}

/// The fields both endpoints share, validated.
struct Common {
    params: GenerateParams,
    stream: bool,
}

fn common(f: &mut Fields, context: usize) -> Common {
    // Accepted for compatibility; `model` is not checked against the loaded one.
    f.allow("model");
    f.allow("user");
    let max_tokens = f.uint(
        "max_tokens",
        validate::DEFAULT_MAX_TOKENS.min(context as u64),
        1,
        context as u64,
    ) as usize;
    let sampling = validate::sampling(f, "repetition_penalty");
    let stop = f.stop("stop");
    let stream = f.boolean("stream", false);
    let ignore_eos = f.boolean("ignore_eos", false);
    // Only one choice per request.
    let _ = f.uint("n", 1, 1, 1);
    Common {
        params: GenerateParams {
            max_tokens,
            sampling,
            stop,
            ignore_eos,
            keep_prompt_logits: false,
        },
        stream,
    }
}

fn completion_prompt(f: &mut Fields) -> Option<String> {
    f.allow("prompt");
    match f_get(f, "prompt") {
        Some(Value::String(s)) => Some(s),
        Some(Value::Array(items)) if items.len() == 1 && items[0].is_string() => {
            items[0].as_str().map(str::to_string)
        }
        Some(_) => {
            f.error("prompt", "must be a string (or a list of one string)");
            None
        }
        None => {
            f.error("prompt", "is required");
            None
        }
    }
}

fn f_get(f: &mut Fields, key: &'static str) -> Option<Value> {
    f.raw(key)
}

fn chat_prompt(
    f: &mut Fields,
    template: Option<&Result<ChatTemplate, String>>,
    tokenizer: &Tokenizer,
) -> Option<String> {
    f.allow("messages");
    let messages = match f_get(f, "messages") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(_) => {
            f.error("messages", "must be a non-empty list of {role, content}");
            return None;
        }
        None => {
            f.error("messages", "is required");
            return None;
        }
    };
    for m in &messages {
        let ok = m.as_object().is_some_and(|o| {
            o.get("role").is_some_and(Value::is_string)
                && o.get("content").is_some_and(Value::is_string)
        });
        if !ok {
            f.error(
                "messages",
                "each message must be {\"role\": string, \"content\": string}",
            );
            return None;
        }
    }
    let template = match template {
        None => {
            f.error(
                "messages",
                "the model has no chat template (tokenizer.chat_template); use /v1/completions",
            );
            return None;
        }
        Some(Err(e)) => {
            f.error(
                "messages",
                format!("the model's chat template does not compile: {e}"),
            );
            return None;
        }
        Some(Ok(t)) => t,
    };
    match template.render(&messages, tokenizer) {
        Ok(p) => Some(p),
        Err(e) => {
            f.error("messages", format!("chat template failed: {e}"));
            None
        }
    }
}

/// A Hugging Face style chat template, compiled once when the model loads.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
}

impl ChatTemplate {
    /// Compiles `source`; a syntax error is reported here, not per request.
    pub fn new(source: String) -> Result<Self, minijinja::Error> {
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, _> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        });
        env.add_template_owned("chat", source)?;
        Ok(ChatTemplate { env })
    }

    /// Renders `messages` as a prompt that ends where the assistant speaks.
    pub fn render(
        &self,
        messages: &[Value],
        tokenizer: &Tokenizer,
    ) -> Result<String, minijinja::Error> {
        let text = |id: Option<u32>| {
            id.and_then(|id| tokenizer.token_text(id))
                .unwrap_or("")
                .to_string()
        };
        let rendered = self.env.get_template("chat")?.render(minijinja::context! {
            messages => minijinja::value::Serde(messages),
            add_generation_prompt => true,
            bos_token => text(tokenizer.bos_id()),
            eos_token => text(tokenizer.eos_id()),
        })?;
        // The template usually writes BOS itself; tokenizing adds it again when
        // the model asks for one, so drop a leading BOS text here.
        let bos = text(tokenizer.bos_id());
        Ok(match rendered.strip_prefix(&bos) {
            Some(rest) if !bos.is_empty() && tokenizer.add_bos() => rest.to_string(),
            _ => rendered,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tiny_tokenizer() -> Tokenizer {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/models/tiny-llama2-f32.gguf");
        let gguf = rbees_model::GgufFile::open(path).unwrap();
        Tokenizer::from_gguf_metadata(gguf.metadata()).unwrap()
    }

    /// Llama-2-chat's template calls Python's `str.strip()`.
    const LLAMA2_TEMPLATE: &str = "{% for message in messages %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + message['content'].strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'].strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

    #[test]
    fn renders_templates_that_call_python_string_methods() {
        let messages = vec![
            json!({"role": "user", "content": "  Hi there \n"}),
            json!({"role": "assistant", "content": " Hello! "}),
            json!({"role": "user", "content": "Bye"}),
        ];
        let template = ChatTemplate::new(LLAMA2_TEMPLATE.to_string()).unwrap();
        let got = template.render(&messages, &tiny_tokenizer()).unwrap();
        // The leading BOS is left to the tokenizer (the model adds one).
        assert_eq!(
            got,
            "[INST] Hi there [/INST] Hello! </s><s>[INST] Bye [/INST]"
        );
    }

    #[test]
    fn raise_exception_in_a_template_is_an_error() {
        let template = "{{ raise_exception('roles must alternate') }}";
        let template = ChatTemplate::new(template.to_string()).unwrap();
        let e = template.render(&[], &tiny_tokenizer()).unwrap_err();
        assert!(e.to_string().contains("roles must alternate"), "{e}");
    }
}
