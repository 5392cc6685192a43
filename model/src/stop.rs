//! Stop strings matched across token boundaries.
//!
//! Text that could be the start of a stop string is held back until the
//! next tokens show whether it is; the matched stop string is never emitted.

/// Result of feeding text to a [`StopMatcher`].
#[derive(Debug, PartialEq, Eq)]
pub enum StopScan {
    /// Text that is safe to show now (may be empty).
    Emit(String),
    /// A stop string matched: show `emit`, then stop.
    Stopped { emit: String, matched: String },
}

#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

impl StopMatcher {
    /// Empty stop strings are ignored.
    pub fn new(stops: &[String]) -> Self {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> StopScan {
        self.pending.push_str(text);
        // Only held-back text can start a match: everything emitted was
        // checked not to be a prefix of any stop string.
        let first_match = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|(at, _)| *at);
        if let Some((at, stop)) = first_match {
            let matched = stop.clone();
            let emit = self.pending[..at].to_string();
            self.pending.clear();
            return StopScan::Stopped { emit, matched };
        }
        let keep = self.longest_suffix_starting_a_stop();
        let emit_to = self.pending.len() - keep;
        let emit = self.pending[..emit_to].to_string();
        self.pending.drain(..emit_to);
        StopScan::Emit(emit)
    }

    /// Whatever is still held back, at the end of generation.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    fn longest_suffix_starting_a_stop(&self) -> usize {
        self.pending
            .char_indices()
            .map(|(i, _)| &self.pending[i..])
            .find(|suffix| self.stops.iter().any(|s| s.starts_with(suffix)))
            .map_or(0, str::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, Option<String>) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = String::new();
        for p in pieces {
            match m.push(p) {
                StopScan::Emit(t) => out.push_str(&t),
                StopScan::Stopped { emit, matched } => {
                    out.push_str(&emit);
                    return (out, Some(matched));
                }
            }
        }
        out.push_str(&m.flush());
        (out, None)
    }

    #[test]
    fn matches_across_pieces_and_hides_the_stop_string() {
        assert_eq!(
            run(&["</answer>"], &["42 is it", "</ans", "wer> more"]),
            ("42 is it".to_string(), Some("</answer>".to_string()))
        );
    }

    #[test]
    fn releases_a_false_start() {
        assert_eq!(
            run(&["\n\n"], &["a\n", "b\n"]),
            ("a\nb\n".to_string(), None)
        );
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        assert_eq!(
            run(&["xyz", "b"], &["abxyz"]),
            ("a".to_string(), Some("b".to_string()))
        );
    }

    #[test]
    fn holds_back_only_a_possible_prefix() {
        let mut m = StopMatcher::new(&["END".to_string()]);
        assert_eq!(m.push("the E"), StopScan::Emit("the ".to_string()));
        assert_eq!(m.push("x"), StopScan::Emit("Ex".to_string()));
    }

    #[test]
    fn multibyte_text_is_split_on_char_boundaries() {
        assert_eq!(run(&["日本"], &["こんにちは日", "本語"]).0, "こんにちは");
    }
}
