//! Special token roles (BOS, EOS, EOT, FIM ...), the end-of-generation set,
//! and the attribute fix-ups llama.cpp applies to a vocabulary at load time.

use std::collections::BTreeSet;

use super::metadata::{self, Metadata};
use super::vocab::{attr, Vocab};
use super::{TokenizerError, TokenizerKind};

/// Token ids with a role. `None`: the model has no such token.
#[derive(Debug, Clone, Default)]
pub(crate) struct Roles {
    pub(crate) bos: Option<u32>,
    pub(crate) eos: Option<u32>,
    pub(crate) eot: Option<u32>,
    pub(crate) eom: Option<u32>,
    pub(crate) unk: Option<u32>,
    pub(crate) sep: Option<u32>,
    pub(crate) pad: Option<u32>,
    pub(crate) mask: Option<u32>,
    pub(crate) fim_pre: Option<u32>,
    pub(crate) fim_suf: Option<u32>,
    pub(crate) fim_mid: Option<u32>,
    pub(crate) fim_pad: Option<u32>,
    pub(crate) fim_rep: Option<u32>,
    pub(crate) fim_sep: Option<u32>,
}

#[derive(Clone, Copy)]
enum Role {
    Bos,
    Eos,
    Eot,
    Eom,
    Unk,
    Sep,
    Pad,
    Mask,
    FimPre,
    FimSuf,
    FimMid,
    FimPad,
    FimRep,
    FimSep,
}

impl Roles {
    fn slot(&mut self, role: Role) -> &mut Option<u32> {
        match role {
            Role::Bos => &mut self.bos,
            Role::Eos => &mut self.eos,
            Role::Eot => &mut self.eot,
            Role::Eom => &mut self.eom,
            Role::Unk => &mut self.unk,
            Role::Sep => &mut self.sep,
            Role::Pad => &mut self.pad,
            Role::Mask => &mut self.mask,
            Role::FimPre => &mut self.fim_pre,
            Role::FimSuf => &mut self.fim_suf,
            Role::FimMid => &mut self.fim_mid,
            Role::FimPad => &mut self.fim_pad,
            Role::FimRep => &mut self.fim_rep,
            Role::FimSep => &mut self.fim_sep,
        }
    }
}

/// Metadata keys for role ids, in llama.cpp's order (later keys override earlier ones).
const ROLE_KEYS: &[(&str, Role)] = &[
    ("tokenizer.ggml.bos_token_id", Role::Bos),
    ("tokenizer.ggml.eos_token_id", Role::Eos),
    ("tokenizer.ggml.eot_token_id", Role::Eot),
    ("tokenizer.ggml.eom_token_id", Role::Eom),
    ("tokenizer.ggml.unknown_token_id", Role::Unk),
    ("tokenizer.ggml.seperator_token_id", Role::Sep),
    ("tokenizer.ggml.padding_token_id", Role::Pad),
    ("tokenizer.ggml.mask_token_id", Role::Mask),
    ("tokenizer.ggml.fim_pre_token_id", Role::FimPre),
    ("tokenizer.ggml.fim_suf_token_id", Role::FimSuf),
    ("tokenizer.ggml.fim_mid_token_id", Role::FimMid),
    ("tokenizer.ggml.fim_pad_token_id", Role::FimPad),
    ("tokenizer.ggml.fim_rep_token_id", Role::FimRep),
    ("tokenizer.ggml.fim_sep_token_id", Role::FimSep),
    // deprecated spellings
    ("tokenizer.ggml.prefix_token_id", Role::FimPre),
    ("tokenizer.ggml.suffix_token_id", Role::FimSuf),
    ("tokenizer.ggml.middle_token_id", Role::FimMid),
];

/// Roles llama.cpp guesses from token texts when no metadata key names them.
const DETECTED_ROLES: &[(Role, &[&str])] = &[
    (
        Role::Eot,
        &[
            "<|eot_id|>",
            "<|im_end|>",
            "<|end|>",
            "<end_of_turn>",
            "<|endoftext|>",
            "<|end_of_text|>",
            "<EOT>",
            "_<EOT>",
            "[EOT]",
            "<｜end▁of▁sentence｜>",
            "<end_of_utterance>",
        ],
    ),
    (Role::Eom, &["<|eom_id|>"]),
    (
        Role::FimPre,
        &[
            "<|fim_prefix|>",
            "<fim-prefix>",
            "<fim_prefix>",
            "<｜fim▁begin｜>",
            "<PRE>",
            "▁<PRE>",
            "<|code_prefix|>",
            "<|prefix|>",
        ],
    ),
    (
        Role::FimSuf,
        &[
            "<|fim_suffix|>",
            "<fim-suffix>",
            "<fim_suffix>",
            "<｜fim▁hole｜>",
            "<SUF>",
            "▁<SUF>",
            "<|code_suffix|>",
            "<|suffix|>",
        ],
    ),
    (
        Role::FimMid,
        &[
            "<|fim_middle|>",
            "<fim-middle>",
            "<fim_middle>",
            "<｜fim▁end｜>",
            "<MID>",
            "▁<MID>",
            "<|code_middle|>",
            "<|middle|>",
        ],
    ),
    (
        Role::FimPad,
        &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    ),
    (
        Role::FimRep,
        &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ],
    ),
    (Role::FimSep, &["<|file_sep|>"]),
];

/// Token texts that end generation (llama.cpp's list).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Tokens llama.cpp always renders (gpt-oss): forced to user-defined.
const ALWAYS_RENDERED: &[&str] = &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

/// Result of role resolution.
pub(crate) struct Resolved {
    pub(crate) roles: Roles,
    /// Sorted end-of-generation ids.
    pub(crate) eog: BTreeSet<u32>,
    /// Ids matched in raw text before tokenizing (control, user-defined,
    /// unknown), longest text first.
    pub(crate) special_cache: Vec<u32>,
}

/// Resolve roles and apply llama.cpp's load-time attribute fix-ups to `vocab`.
pub(crate) fn resolve(
    md: &Metadata,
    vocab: &mut Vocab,
    kind: TokenizerKind,
) -> Result<Resolved, TokenizerError> {
    let n = vocab.len();
    let mut roles = match kind {
        TokenizerKind::Llama => Roles {
            bos: Some(1),
            eos: Some(2),
            unk: Some(0),
            ..Roles::default()
        },
        TokenizerKind::Gpt2 => Roles {
            bos: Some(11),
            eos: Some(11),
            ..Roles::default()
        },
    };

    // Metadata ids. Defaults outside the vocabulary are dropped; metadata ids
    // outside it are ignored (llama.cpp warns and keeps the default).
    for &(key, role) in ROLE_KEYS {
        let slot = roles.slot(role);
        if slot.is_some_and(|id| id as usize >= n) {
            *slot = None;
        }
        if let Some(id) = metadata::opt_id(md, key)? {
            if (id as usize) < n {
                *slot = Some(id);
            }
        }
    }

    // llama.cpp walks its text -> id map here, so a text that occurs twice
    // is seen once, with its last id. The walk order only matters when two
    // tokens compete for one guessed role; id order is the deterministic choice.
    let indexed = vocab.indexed_ids();

    // Guess EOT / EOM / FIM tokens by text; the guessed token becomes a control token.
    for &id in &indexed {
        let text = vocab.texts[id as usize].as_str();
        for &(role, names) in DETECTED_ROLES {
            let slot = roles.slot(role);
            if slot.is_none() && names.contains(&text) {
                *slot = Some(id);
                vocab.attrs[id as usize] |= attr::CONTROL;
            }
        }
    }

    // Control tokens whose text says "unused" are unused.
    for &id in &indexed {
        let a = &mut vocab.attrs[id as usize];
        if *a & attr::CONTROL != 0 && vocab.texts[id as usize].contains("unused") {
            *a |= attr::UNUSED;
        }
    }

    let mut eog = BTreeSet::new();
    eog.extend(roles.fim_pad);
    eog.extend(roles.fim_rep);
    eog.extend(roles.fim_sep);
    for &id in &indexed {
        let text = vocab.texts[id as usize].as_str();
        if EOG_TEXTS.contains(&text) {
            eog.insert(id);
            vocab.attrs[id as usize] |= attr::CONTROL;
        }
        if ALWAYS_RENDERED.contains(&text) {
            vocab.attrs[id as usize] = attr::USER_DEFINED;
        }
    }
    eog.extend(roles.eos);
    eog.extend(roles.eot);
    eog.extend(roles.eom);

    // gpt-oss / solar-open: "<|end|>" does not end generation when
    // "<|return|>"+"<|call|>" or "<|calls|>"+"<|flush|>" do.
    {
        let (mut has_return, mut has_call, mut has_flush) = (false, false, false);
        let mut end_id = None;
        for &id in &eog {
            match vocab.texts[id as usize].as_str() {
                "<|return|>" => has_return = true,
                "<|call|>" | "<|calls|>" => has_call = true,
                "<|flush|>" => has_flush = true,
                "<|end|>" => end_id = Some(id),
                _ => {}
            }
        }
        if let Some(end) = end_id {
            if has_call && (has_return || has_flush) {
                eog.remove(&end);
                vocab.attrs[end as usize] = attr::USER_DEFINED;
            }
        }
    }

    // gemma4 / plamo: "</s>" is a normal token there.
    {
        let mut has_marker = false;
        let mut s_id = None;
        for &id in &eog {
            match vocab.texts[id as usize].as_str() {
                "<|tool_response>" | "<|plamo:eos|>" => has_marker = true,
                "</s>" => s_id = Some(id),
                _ => {}
            }
        }
        if let (true, Some(s)) = (has_marker, s_id) {
            eog.remove(&s);
            vocab.attrs[s as usize] = attr::NORMAL;
        }
    }

    let mut special_cache: Vec<u32> = (0..n as u32)
        .filter(|&id| vocab.has_attr(id, attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN))
        .collect();
    special_cache.sort_by(|&a, &b| {
        vocab.texts[b as usize]
            .len()
            .cmp(&vocab.texts[a as usize].len())
            .then(a.cmp(&b))
    });

    // Per-model strip attributes llama.cpp sets by model name (Phi-3).
    let name = metadata::opt_str(md, metadata::KEY_GENERAL_NAME)?
        .unwrap_or_default()
        .to_ascii_lowercase();
    if name.contains("phi-3") || name.contains("phi3") {
        for &id in &special_cache {
            vocab.attrs[id as usize] |= attr::RSTRIP;
        }
        if let Some(id) = vocab.id("</s>") {
            vocab.attrs[id as usize] |= attr::RSTRIP;
        }
        for t in ["<unk>", "<s>", "<|endoftext|>"] {
            if let Some(id) = vocab.id(t) {
                vocab.attrs[id as usize] &= !attr::RSTRIP;
            }
        }
    }

    Ok(Resolved {
        roles,
        eog,
        special_cache,
    })
}
