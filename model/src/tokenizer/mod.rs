//! Tokenizer built from GGUF metadata, producing the same token ids as llama.cpp.
//!
//! Two vocabulary types are supported:
//! - `tokenizer.ggml.model = "llama"`: SentencePiece-style merging by piece
//!   score with `<0xXX>` byte fallback (`spm.rs`);
//! - `tokenizer.ggml.model = "gpt2"`: byte-level BPE with ranked merges and a
//!   pre-tokenizer chosen by `tokenizer.ggml.pre` (`bpe.rs`, `pretokenize.rs`).
//!
//! Text is first cut at special-token texts (`special.rs`); each remaining raw
//! fragment is tokenized on its own.

mod bpe;
mod byte_unicode;
mod error;
mod metadata;
mod piece;
mod pretokenize;
mod roles;
mod special;
mod spm;
mod stream;
mod unicode;
mod vocab;

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::error::ModelError;
use crate::gguf::GgufFile;
use crate::metadata::Metadata;

pub use error::TokenizerError;
pub use stream::StreamDecoder;

use bpe::BpeModel;
use pretokenize::PreTokenizer;
use roles::Roles;
use special::Fragment;
use spm::SpmModel;
use vocab::{attr, Vocab};

/// Vocabulary type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerKind {
    /// SentencePiece-style (`tokenizer.ggml.model = "llama"`).
    Llama,
    /// Byte-level BPE (`tokenizer.ggml.model = "gpt2"`).
    Gpt2,
}

#[derive(Debug, Clone)]
enum Model {
    Spm(SpmModel),
    Bpe(BpeModel),
}

#[derive(Debug)]
struct Inner {
    kind: TokenizerKind,
    vocab: Vocab,
    model: Model,
    roles: Roles,
    eog: BTreeSet<u32>,
    special_cache: Vec<u32>,
    pieces: Vec<Box<[u8]>>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
}

/// A tokenizer; cheap to clone (shared, immutable state).
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: Arc<Inner>,
}

/// The metadata key of a model's chat template (Jinja).
pub const CHAT_TEMPLATE_KEY: &str = "tokenizer.chat_template";

/// The file's chat template ([`CHAT_TEMPLATE_KEY`]), if it has one; a value
/// that is not a string is an error naming the file.
pub fn chat_template(gguf: &GgufFile) -> Result<Option<String>, ModelError> {
    match gguf.metadata().get_str(CHAT_TEMPLATE_KEY) {
        Ok(template) => Ok(template.map(str::to_string)),
        Err(error) => Err(ModelError::FileMetadata {
            path: gguf.path().to_path_buf(),
            error,
        }),
    }
}

impl Tokenizer {
    /// The tokenizer of a model file, checked against the model: its
    /// vocabulary must have one token per row of `token_embd.weight`.
    /// Errors name the file.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, ModelError> {
        let path = || gguf.path().to_path_buf();
        let tokenizer = Self::from_gguf_metadata(gguf.metadata()).map_err(|error| {
            ModelError::FileTokenizer {
                path: path(),
                error,
            }
        })?;
        let (_, embedding_shape) = gguf.tensor_meta("token_embd.weight")?;
        if embedding_shape.first() != Some(&tokenizer.vocab_size()) {
            return Err(ModelError::VocabMismatch {
                path: path(),
                tokens: tokenizer.vocab_size(),
                embedding_shape: embedding_shape.to_vec(),
            });
        }
        Ok(tokenizer)
    }

    /// Build from the `tokenizer.ggml.*` keys of a GGUF file.
    pub fn from_gguf_metadata(md: &Metadata) -> Result<Self, TokenizerError> {
        let model_name = metadata::req_str(md, metadata::KEY_MODEL)?;
        let pre_name = metadata::opt_str(md, metadata::KEY_PRE)?;
        let kind = match model_name {
            "llama" => TokenizerKind::Llama,
            "gpt2" => TokenizerKind::Gpt2,
            other => return Err(TokenizerError::UnknownModel(other.to_string())),
        };
        // Validate the pre-tokenizer before the (slow) vocabulary work.
        let pre = match kind {
            TokenizerKind::Gpt2 => Some(PreTokenizer::from_name(pre_name)?),
            TokenizerKind::Llama => None,
        };
        let merges = match kind {
            TokenizerKind::Gpt2 => Some(
                metadata::opt_str_array(md, metadata::KEY_MERGES)?
                    .ok_or_else(|| TokenizerError::MissingKey(metadata::KEY_MERGES.to_string()))?,
            ),
            TokenizerKind::Llama => None,
        };

        // llama.cpp defaults: SPM adds BOS and a leading space; BPE adds neither.
        let (default_add_bos, default_space_prefix) = match kind {
            TokenizerKind::Llama => (true, true),
            TokenizerKind::Gpt2 => (false, false),
        };
        let add_space_prefix =
            metadata::opt_bool(md, metadata::KEY_ADD_SPACE_PREFIX)?.unwrap_or(default_space_prefix);
        let add_bos = metadata::opt_bool(md, metadata::KEY_ADD_BOS)?.unwrap_or(default_add_bos);
        let add_eos = metadata::opt_bool(md, metadata::KEY_ADD_EOS)?.unwrap_or(false);

        let mut vocab = Vocab::from_metadata(md)?;
        let resolved = roles::resolve(md, &mut vocab, kind)?;
        let model = match (pre, merges) {
            (Some(pre), Some(merges)) => Model::Bpe(BpeModel::new(pre, &merges, &vocab)),
            _ => Model::Spm(SpmModel::new(&vocab)),
        };
        let pieces = piece::build_pieces(&vocab, kind);

        Ok(Tokenizer {
            inner: Arc::new(Inner {
                kind,
                vocab,
                model,
                roles: resolved.roles,
                eog: resolved.eog,
                special_cache: resolved.special_cache,
                pieces,
                add_bos,
                add_eos,
                add_space_prefix,
            }),
        })
    }

    /// llama.cpp's `llama_tokenize(text, add_special, parse_special)`.
    ///
    /// `add_special` adds BOS/EOS as the model asks; `parse_special` turns
    /// control-token texts (e.g. `<|im_start|>`) into those tokens.
    pub fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let inner = &*self.inner;
        let fragments = special::partition(text, &inner.special_cache, &inner.vocab, parse_special);
        let mut out = Vec::with_capacity(text.len() / 3 + 2);

        if add_special && inner.add_bos {
            out.push(
                inner
                    .roles
                    .bos
                    .ok_or(TokenizerError::MissingSpecialToken("BOS"))?,
            );
        }
        match &inner.model {
            Model::Spm(spm) => {
                // A leading space goes before the first raw fragment and
                // before every raw fragment that follows a special token.
                let mut prev_special = true;
                let mut buf = String::new();
                for frag in &fragments {
                    match frag {
                        Fragment::Text(r) => {
                            buf.clear();
                            if inner.add_space_prefix && prev_special {
                                buf.push('\u{2581}');
                            }
                            for c in text[r.clone()].chars() {
                                buf.push(if c == ' ' { '\u{2581}' } else { c });
                            }
                            spm.tokenize(&inner.vocab, &buf, &mut out)?;
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(*id);
                            prev_special = true;
                        }
                    }
                }
            }
            Model::Bpe(bpe) => {
                for frag in &fragments {
                    match frag {
                        Fragment::Text(r) => bpe.tokenize(&inner.vocab, &text[r.clone()], &mut out),
                        Fragment::Token(id) => out.push(*id),
                    }
                }
            }
        }
        if add_special && inner.add_eos {
            out.push(
                inner
                    .roles
                    .eos
                    .ok_or(TokenizerError::MissingSpecialToken("EOS"))?,
            );
        }
        Ok(out)
    }

    fn check_id(&self, id: u32) -> Result<(), TokenizerError> {
        if (id as usize) < self.inner.vocab.len() {
            Ok(())
        } else {
            Err(TokenizerError::TokenIdOutOfRange {
                id,
                vocab_size: self.inner.vocab.len(),
            })
        }
    }

    /// Borrowed form of [`token_bytes`](Self::token_bytes).
    pub(crate) fn piece_bytes(&self, id: u32, special: bool) -> Result<&[u8], TokenizerError> {
        self.check_id(id)?;
        let inner = &*self.inner;
        if !special && inner.vocab.has_attr(id, attr::CONTROL | attr::UNKNOWN) {
            return Ok(&[]);
        }
        Ok(&inner.pieces[id as usize])
    }

    /// Raw bytes a token contributes to output text: byte tokens give their
    /// byte, SPM `▁` becomes a space, the GPT-2 byte mapping is undone.
    /// Control and unknown tokens give nothing unless `special` (then their
    /// text); user-defined tokens always give their text.
    pub fn token_bytes(&self, id: u32, special: bool) -> Result<Vec<u8>, TokenizerError> {
        self.piece_bytes(id, special).map(<[u8]>::to_vec)
    }

    /// The token's text as stored in the vocabulary.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.inner.vocab.texts.get(id as usize).map(String::as_str)
    }

    /// Lossless decode of a whole sequence: the tokens' bytes concatenated,
    /// invalid UTF-8 replaced by U+FFFD; special tokens rendered iff `special`.
    ///
    /// Unlike llama.cpp's `llama_detokenize` this keeps the leading space SPM
    /// adds and does not "clean up" spaces before punctuation.
    pub fn decode(&self, ids: &[u32], special: bool) -> Result<String, TokenizerError> {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.piece_bytes(id, special)?);
        }
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.inner.vocab.len()
    }

    /// Beginning-of-sequence token.
    pub fn bos_id(&self) -> Option<u32> {
        self.inner.roles.bos
    }

    /// End-of-sequence token.
    pub fn eos_id(&self) -> Option<u32> {
        self.inner.roles.eos
    }

    /// Whether `id` ends generation, as llama.cpp decides it: EOS, EOT, EOM,
    /// FIM pad/repo/separator tokens, and tokens with texts such as
    /// `<|im_end|>`, `<|endoftext|>`, `</s>`, `<|eot_id|>`.
    pub fn is_eog(&self, id: u32) -> bool {
        self.inner.eog.contains(&id)
    }

    /// All end-of-generation ids, ascending.
    pub fn eog_ids(&self) -> Vec<u32> {
        self.inner.eog.iter().copied().collect()
    }

    /// Whether `encode(.., add_special = true, ..)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.inner.add_bos
    }

    /// Whether `encode(.., add_special = true, ..)` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.inner.add_eos
    }

    /// Vocabulary type.
    pub fn kind(&self) -> TokenizerKind {
        self.inner.kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync_clone<T: Send + Sync + Clone>() {}

    #[test]
    fn tokenizer_is_send_sync_clone() {
        assert_send_sync_clone::<Tokenizer>();
    }

    use crate::synth::vocab::vocab_metadata;
    use crate::synth::{write_gguf, MetaValue, TensorSpec};
    use rbees_core::WeightDType;

    const VOCAB: usize = 512;

    /// A model file with a `VOCAB`-token vocabulary, `extra` metadata and a
    /// token embedding of `rows` rows.
    fn file(extra: Vec<(String, MetaValue)>, rows: usize) -> GgufFile {
        let mut md = vocab_metadata(VOCAB);
        md.extend(extra);
        let embd = TensorSpec {
            name: "token_embd.weight".into(),
            shape: vec![rows, 4],
            dtype: WeightDType::F32,
        };
        let mut bytes = Vec::new();
        write_gguf(&mut bytes, &md, &[embd], |_, spec, out| {
            let size = spec.data_bytes().unwrap();
            out.extend(std::iter::repeat_n(0u8, size));
            Ok(size)
        })
        .unwrap();
        GgufFile::from_bytes("test.gguf", bytes).unwrap()
    }

    #[test]
    fn from_gguf_checks_the_vocabulary_against_the_embedding() {
        assert_eq!(
            Tokenizer::from_gguf(&file(vec![], VOCAB))
                .unwrap()
                .vocab_size(),
            VOCAB
        );
        let err = Tokenizer::from_gguf(&file(vec![], VOCAB + 1)).unwrap_err();
        assert!(
            matches!(&err, ModelError::VocabMismatch { tokens: VOCAB, .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("test.gguf") && text.contains("token_embd.weight"),
            "{text}"
        );
    }

    #[test]
    fn chat_template_is_read_when_a_string() {
        assert_eq!(chat_template(&file(vec![], VOCAB)).unwrap(), None);
        let template = MetaValue::String("{{ x }}".into());
        let with = file(vec![(CHAT_TEMPLATE_KEY.into(), template)], VOCAB);
        assert_eq!(chat_template(&with).unwrap().as_deref(), Some("{{ x }}"));
        let wrong = file(vec![(CHAT_TEMPLATE_KEY.into(), MetaValue::U32(3))], VOCAB);
        let text = chat_template(&wrong).unwrap_err().to_string();
        assert!(
            text.contains("test.gguf") && text.contains(CHAT_TEMPLATE_KEY) && text.contains("U32"),
            "{text}"
        );
    }
}
