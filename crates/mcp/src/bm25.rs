//! Okapi BM25 ranking over a small, fixed set of documents (the host tools' names, descriptions and parameter
//! names). The catalog is built once per server, so the index is plain maps rebuilt from scratch.

use std::collections::{BTreeSet, HashMap};

/// Term-frequency saturation.
const K1: f64 = 1.2;
/// How much a document's length normalises its term frequencies.
const B: f64 = 0.75;

/// An index of documents, each a bag of terms.
pub(crate) struct Bm25 {
    /// Term counts per document.
    documents: Vec<HashMap<String, usize>>,
    /// Terms per document.
    lengths: Vec<usize>,
    average_length: f64,
    /// Documents containing each term.
    document_frequency: HashMap<String, usize>,
}

impl Bm25 {
    /// Indexes `documents`; a document's position is its id in [`Bm25::search`]'s results.
    pub(crate) fn new<'a>(documents: impl IntoIterator<Item = &'a str>) -> Self {
        let mut index = Bm25 {
            documents: Vec::new(),
            lengths: Vec::new(),
            average_length: 0.0,
            document_frequency: HashMap::new(),
        };
        for text in documents {
            let terms = tokenize(text);
            let mut counts = HashMap::new();
            for term in &terms {
                *counts.entry(term.clone()).or_insert(0) += 1;
            }
            for term in counts.keys() {
                *index.document_frequency.entry(term.clone()).or_insert(0) += 1;
            }
            index.lengths.push(terms.len());
            index.documents.push(counts);
        }
        let total: usize = index.lengths.iter().sum();
        index.average_length =
            if index.documents.is_empty() { 0.0 } else { total as f64 / index.documents.len() as f64 };
        index
    }

    /// The ids of the documents matching at least one term of `query`, best first (ties by id), at most `limit`.
    pub(crate) fn search(&self, query: &str, limit: usize) -> Vec<(usize, f64)> {
        let terms: BTreeSet<String> = tokenize(query).into_iter().collect();
        let n = self.documents.len() as f64;
        let mut scored: Vec<(usize, f64)> = self
            .documents
            .iter()
            .enumerate()
            .filter_map(|(id, counts)| {
                let length_norm = 1.0 - B + B * self.lengths[id] as f64 / self.average_length.max(1.0);
                let score: f64 = terms
                    .iter()
                    .filter_map(|term| {
                        let tf = *counts.get(term)? as f64;
                        let df = *self.document_frequency.get(term)? as f64;
                        let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
                        Some(idf * tf * (K1 + 1.0) / (tf + K1 * length_norm))
                    })
                    .sum();
                (score > 0.0).then_some((id, score))
            })
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.truncate(limit);
        scored
    }
}

/// Lower-case terms split on anything but letters and digits, so `search_issues`, `github.search` and
/// `Search issues` share the term `search`.
pub(crate) fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()).map(str::to_lowercase).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(index: &Bm25, query: &str) -> Vec<usize> {
        index.search(query, 10).into_iter().map(|(id, _)| id).collect()
    }

    #[test]
    fn terms_are_split_on_punctuation_and_lower_cased() {
        assert_eq!(tokenize("github.search_issues(Query)"), ["github", "search", "issues", "query"]);
        assert!(tokenize(" ._- ").is_empty());
    }

    #[test]
    fn rare_terms_outrank_common_ones_and_non_matches_are_left_out() {
        let index = Bm25::new([
            "github search issues search issues by query",
            "github create issue opens an issue",
            "weather forecast for a city",
        ]);
        assert_eq!(ids(&index, "weather"), [2]);
        assert_eq!(ids(&index, "search github"), [0, 1], "both match github; only 0 matches the rarer search");
        assert!(ids(&index, "nothing matches").is_empty());
        assert!(ids(&index, "").is_empty());
    }

    #[test]
    fn term_frequency_counts_and_shorter_documents_win_ties() {
        let index =
            Bm25::new(["pay invoice", "pay invoice invoice", "pay invoice and many other unrelated words here"]);
        assert_eq!(ids(&index, "invoice"), [1, 0, 2]);
    }

    #[test]
    fn the_limit_caps_results_and_an_empty_index_finds_nothing() {
        let index = Bm25::new(["a tool", "a tool", "a tool"]);
        assert_eq!(index.search("tool", 2).len(), 2);
        assert_eq!(ids(&index, "tool"), [0, 1, 2], "equal scores keep document order");
        assert!(Bm25::new([]).search("tool", 5).is_empty());
    }
}
