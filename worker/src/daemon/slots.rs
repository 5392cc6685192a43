//! Which tokens each KV cache slot holds, and which free slot a new prompt
//! should take: the one whose cached tokens share the longest prefix with
//! it (its keys and values are reused, as llama.cpp's `cache_prompt`), else
//! the one unused the longest (so other slots keep their prefixes longer).

/// One slot: the tokens whose keys and values are at positions `0..len`.
#[derive(Debug, Default)]
struct Slot {
    tokens: Vec<u32>,
    busy: bool,
    /// Value of the use counter when last taken (least recently used goes first).
    last_used: u64,
}

/// A taken slot and how many leading prompt tokens it already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub slot: usize,
    pub cached: usize,
}

#[derive(Debug)]
pub struct Slots {
    slots: Vec<Slot>,
    uses: u64,
}

impl Slots {
    pub fn new(n: usize) -> Self {
        Slots {
            slots: (0..n).map(|_| Slot::default()).collect(),
            uses: 0,
        }
    }

    pub fn total(&self) -> usize {
        self.slots.len()
    }

    pub fn busy(&self) -> usize {
        self.slots.iter().filter(|s| s.busy).count()
    }

    /// Takes the best free slot for `prompt`, or `None` if all are busy.
    /// At most `prompt.len() - 1` tokens count as cached: the last prompt
    /// token always runs, since its logits give the first new token.
    pub fn take(&mut self, prompt: &[u32]) -> Option<Taken> {
        let common = |s: &Slot| {
            s.tokens
                .iter()
                .zip(prompt)
                .take_while(|(a, b)| a == b)
                .count()
        };
        let (slot, cached) = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.busy)
            // Longest shared prefix; among equals, the least recently used.
            .map(|(i, s)| (i, common(s), s.last_used))
            .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))
            .map(|(i, c, _)| (i, c))?;
        let cached = cached.min(prompt.len().saturating_sub(1));
        self.uses += 1;
        let s = &mut self.slots[slot];
        s.busy = true;
        s.last_used = self.uses;
        s.tokens.truncate(cached);
        Some(Taken { slot, cached })
    }

    /// Records that `ids` now sit at positions `pos0..` of `slot` (anything
    /// after them is stale).
    pub fn wrote(&mut self, slot: usize, pos0: usize, ids: &[u32]) {
        if let Some(s) = self.slots.get_mut(slot) {
            s.tokens.truncate(pos0);
            s.tokens.extend_from_slice(ids);
        }
    }

    /// Frees `slot`, keeping its tokens for a later prompt to reuse.
    pub fn release(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot) {
            s.busy = false;
        }
    }

    /// Frees `slot` and forgets its tokens (after a failed step, when what
    /// the cache holds is unknown).
    pub fn discard(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot) {
            s.busy = false;
            s.tokens.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_takes_the_slot_with_the_longest_shared_prefix() {
        let mut slots = Slots::new(3);
        let a = slots.take(&[1, 2, 3]).unwrap();
        slots.wrote(a.slot, 0, &[1, 2, 3, 4]);
        slots.release(a.slot);
        let b = slots.take(&[9, 9]).unwrap();
        assert_ne!(b.slot, a.slot, "a fresh prompt takes an unused slot first");
        slots.wrote(b.slot, 0, &[9, 9]);
        slots.release(b.slot);
        // Shares [1, 2, 3] with slot a.
        let c = slots.take(&[1, 2, 3, 7, 8]).unwrap();
        assert_eq!(
            c,
            Taken {
                slot: a.slot,
                cached: 3
            }
        );
        assert_eq!(slots.busy(), 1);
    }

    #[test]
    fn the_last_prompt_token_always_runs() {
        let mut slots = Slots::new(1);
        let a = slots.take(&[5, 6]).unwrap();
        slots.wrote(a.slot, 0, &[5, 6, 7]);
        slots.release(a.slot);
        assert_eq!(slots.take(&[5, 6]).unwrap().cached, 1);
    }

    #[test]
    fn busy_slots_are_not_taken_and_discarded_ones_hold_nothing() {
        let mut slots = Slots::new(2);
        let a = slots.take(&[1, 2]).unwrap();
        let b = slots.take(&[1, 2]).unwrap();
        assert_ne!(a.slot, b.slot);
        assert!(slots.take(&[1]).is_none());
        slots.wrote(a.slot, 0, &[1, 2, 3]);
        slots.discard(a.slot);
        assert_eq!(slots.take(&[1, 2, 3, 4]).unwrap().cached, 0);
    }

    #[test]
    fn among_equal_prefixes_the_least_recently_used_goes_first() {
        let mut slots = Slots::new(2);
        let a = slots.take(&[1]).unwrap();
        let b = slots.take(&[2]).unwrap();
        slots.release(b.slot);
        slots.release(a.slot);
        // Neither shares a prefix with [3]: a was taken before b.
        assert_eq!(slots.take(&[3]).unwrap().slot, a.slot);
    }
}
