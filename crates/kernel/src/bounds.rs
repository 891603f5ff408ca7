//! Bounds on what a run report holds, so that nothing a guest (or an upstream server) controls can make the host
//! hold more than a documented amount for one run (SECURITY.md, "Bounds of one run").
//!
//! Recording code (egress, tool and filesystem sessions) bounds its records as they are made with [`RecordList`]
//! and [`cut`]; [`RunReport::enforce_bounds`] applies the same bounds once more to the assembled report, so a
//! report from any source (a kernel, a remote server) leaves the host bounded.

use crate::report::{RunReport, Unlisted};
pub use wasmagent_manifest::defaults::{REPORT_ERROR_BYTES, REPORT_LISTED_RECORDS, REPORT_TEXT_BYTES};

/// Most bytes the cut marker (`…[cut: N bytes in all]`) adds.
pub const CUT_MARKER_BYTES: usize = 48;

/// `text`, cut to at most `max` bytes (on a character boundary) and marked with its original length when it was
/// longer. The result is at most `max` + [`CUT_MARKER_BYTES`] bytes.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[cut: {} bytes in all]", &text[..end], text.len())
}

/// [`cut`] in place, for text over `max` + [`CUT_MARKER_BYTES`] bytes: text already cut at `max` (or barely over
/// it) is left as it is, so cutting twice never hides the original length.
pub fn cut_in_place(text: &mut String, max: usize) {
    if text.len() > max.saturating_add(CUT_MARKER_BYTES) {
        *text = cut(text, max);
    }
}

/// Like [`cut`], for bytes that may not be UTF-8 (read lossily).
pub fn cut_bytes(bytes: &[u8], max: usize) -> String {
    let shown = &bytes[..bytes.len().min(max)];
    let text = String::from_utf8_lossy(shown);
    if bytes.len() <= max { text.into_owned() } else { format!("{text}…[cut: {} bytes in all]", bytes.len()) }
}

/// A list of report records that keeps the first [`REPORT_LISTED_RECORDS`] and counts the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordList<T> {
    items: Vec<T>,
    unlisted: u64,
    limit: usize,
}

impl<T> Default for RecordList<T> {
    fn default() -> Self {
        RecordList { items: Vec::new(), unlisted: 0, limit: REPORT_LISTED_RECORDS }
    }
}

impl<T> RecordList<T> {
    /// An empty list holding at most `limit` records.
    pub fn with_limit(limit: usize) -> Self {
        RecordList { items: Vec::new(), unlisted: 0, limit }
    }

    /// Adds `item` if the list has room, else counts it. Returns whether it was kept.
    pub fn push(&mut self, item: T) -> bool {
        if self.items.len() < self.limit {
            self.items.push(item);
            true
        } else {
            self.unlisted += 1;
            false
        }
    }

    /// Whether the list has no room left (the next push is only counted).
    pub fn is_full(&self) -> bool {
        self.items.len() >= self.limit
    }

    /// Counts one record without keeping it.
    pub fn count_unlisted(&mut self) {
        self.unlisted += 1;
    }

    /// The records kept.
    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// Records counted but not kept.
    pub fn unlisted(&self) -> u64 {
        self.unlisted
    }

    /// The records kept and the number counted but not kept.
    pub fn into_parts(self) -> (Vec<T>, u64) {
        (self.items, self.unlisted)
    }
}

impl RunReport {
    /// Applies the report bounds: at most [`REPORT_LISTED_RECORDS`] entries per record list (the rest counted in
    /// `unlisted`), record text cut at [`REPORT_TEXT_BYTES`] and `error.message` at [`REPORT_ERROR_BYTES`].
    /// `stdout`, `stderr` and `value` are bounded by the kernels at `max_output_bytes`, artifact contents at
    /// `max_artifact_bytes`.
    pub fn enforce_bounds(&mut self) {
        let Unlisted { denials, tool_calls, http_requests, artifacts } = &mut self.unlisted;
        *denials += truncate(&mut self.denials);
        *tool_calls += truncate(&mut self.tool_calls);
        *http_requests += truncate(&mut self.http_requests);
        *artifacts += truncate(&mut self.artifacts);
        for artifact in &mut self.artifacts {
            cut_in_place(&mut artifact.mime, REPORT_TEXT_BYTES);
            if let Some(title) = &mut artifact.title {
                cut_in_place(title, REPORT_TEXT_BYTES);
            }
        }
        for denial in &mut self.denials {
            cut_in_place(&mut denial.capability, REPORT_TEXT_BYTES);
            cut_in_place(&mut denial.target, REPORT_TEXT_BYTES);
            cut_in_place(&mut denial.reason, REPORT_TEXT_BYTES);
        }
        for call in &mut self.tool_calls {
            cut_in_place(&mut call.name, REPORT_TEXT_BYTES);
            cut_in_place(&mut call.args_digest, REPORT_TEXT_BYTES);
            cut_in_place(&mut call.outcome, REPORT_TEXT_BYTES);
            if let Some(error) = &mut call.error {
                cut_in_place(error, REPORT_TEXT_BYTES);
            }
        }
        for exchange in &mut self.http_requests {
            cut_in_place(&mut exchange.method, REPORT_TEXT_BYTES);
            cut_in_place(&mut exchange.url, REPORT_TEXT_BYTES);
            cut_in_place(&mut exchange.outcome, REPORT_TEXT_BYTES);
            if let Some(error) = &mut exchange.error {
                cut_in_place(error, REPORT_TEXT_BYTES);
            }
        }
        if let Some(error) = &mut self.error {
            cut_in_place(&mut error.message, REPORT_ERROR_BYTES);
        }
    }
}

fn truncate<T>(list: &mut Vec<T>) -> u64 {
    let extra = list.len().saturating_sub(REPORT_LISTED_RECORDS);
    list.truncate(REPORT_LISTED_RECORDS);
    extra as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_short_text_and_marks_long_text_on_a_char_boundary() {
        assert_eq!(cut("short", 10), "short");
        let long = "é".repeat(10); // 20 bytes
        let text = cut(&long, 5);
        assert_eq!(text, "éé…[cut: 20 bytes in all]");
        assert_eq!(cut_bytes(&[b'a'; 8], 4), "aaaa…[cut: 8 bytes in all]");
        let mut once = cut(&"x".repeat(1 << 20), 100);
        let expected = once.clone();
        cut_in_place(&mut once, 100);
        assert_eq!(once, expected, "a text cut once keeps its marker and original length");
        assert!(cut(&"x".repeat(usize::MAX >> 40), 0).len() <= CUT_MARKER_BYTES);
    }

    #[test]
    fn record_lists_keep_the_first_entries_and_count_the_rest() {
        let mut list = RecordList::with_limit(2);
        assert!(list.push(1) && list.push(2));
        assert!(!list.push(3));
        list.count_unlisted();
        assert_eq!(list.into_parts(), (vec![1, 2], 2));
    }
}
