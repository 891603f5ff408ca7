//! `search_docs`: the host tools as searchable documentation, each hit with its call signature in both languages.

use crate::bm25::Bm25;
use crate::signature;
use serde::Serialize;
use serde_json::Value;
use wasmagent::{EffectiveManifest, ToolRegistry};

/// One documented host tool.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ToolDoc {
    name: String,
    description: String,
    /// Whether the server's manifest grants the tool (`tool:NAME` in `extra_capabilities`); a call to an ungranted
    /// tool is refused and reported as a denial.
    granted: bool,
    javascript: String,
    python: String,
    input_schema: Value,
}

/// A hit: the tool and its BM25 score.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Hit<'a> {
    #[serde(flatten)]
    tool: &'a ToolDoc,
    score: f64,
}

/// Every host tool, indexed by its name, description and parameter names and descriptions.
pub(crate) struct Catalog {
    tools: Vec<ToolDoc>,
    index: Bm25,
}

impl Catalog {
    /// The catalog of `registry`, with grants as `manifest` decides them.
    pub(crate) fn new(registry: &ToolRegistry, manifest: &EffectiveManifest) -> Self {
        let granted = registry.granted_names(manifest);
        let tools: Vec<ToolDoc> = registry
            .iter()
            .map(|tool| ToolDoc {
                name: tool.name().to_owned(),
                description: tool.description().to_owned(),
                granted: granted.iter().any(|g| g == tool.name()),
                javascript: signature::javascript(tool.name(), tool.input_schema()),
                python: signature::python(tool.name(), tool.input_schema()),
                input_schema: tool.input_schema().clone(),
            })
            .collect();
        let texts: Vec<String> = tools.iter().map(searchable_text).collect();
        let index = Bm25::new(texts.iter().map(String::as_str));
        Catalog { tools, index }
    }

    /// How many tools there are.
    pub(crate) fn len(&self) -> usize {
        self.tools.len()
    }

    /// The best `limit` matches for `query`.
    pub(crate) fn search(&self, query: &str, limit: usize) -> Vec<Hit<'_>> {
        self.index.search(query, limit).into_iter().map(|(id, score)| Hit { tool: &self.tools[id], score }).collect()
    }
}

/// The text a tool is found by: its name, description, and each parameter's name and description.
fn searchable_text(tool: &ToolDoc) -> String {
    let mut text = format!("{} {}", tool.name, tool.description);
    if let Some(properties) = tool.input_schema.get("properties").and_then(Value::as_object) {
        for (name, schema) in properties {
            text.push(' ');
            text.push_str(name);
            if let Some(description) = schema.get("description").and_then(Value::as_str) {
                text.push(' ');
                text.push_str(description);
            }
        }
    }
    text
}

/// The text answer for a search: one block per hit.
pub(crate) fn hits_text(query: &str, hits: &[Hit<'_>], total: usize) -> String {
    if total == 0 {
        return "No host tools are available on this server: execute_code runs plain JavaScript and Python.".to_owned();
    }
    if hits.is_empty() {
        return format!("No tool matches {query:?} ({total} tools available); try other words.");
    }
    let mut text = String::new();
    for hit in hits {
        let tool = hit.tool;
        let grant = if tool.granted { "" } else { " (not granted by this server's manifest: calls are refused)" };
        text.push_str(&format!(
            "{}{grant}\n  {}\n  JavaScript: {}\n  Python (from wasmagent import tools): {}\n",
            tool.name, tool.description, tool.javascript, tool.python
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wasmagent::{CapabilityManifest, ManifestCeilings, Tool};

    fn manifest(grants: &[&str]) -> EffectiveManifest {
        CapabilityManifest { extra_capabilities: grants.iter().map(|g| g.to_string()).collect(), ..Default::default() }
            .resolve(std::path::Path::new("/"), &ManifestCeilings::default())
            .unwrap()
    }

    fn catalog(grants: &[&str]) -> Catalog {
        let mut registry = ToolRegistry::new();
        let schema = json!({"properties": {"q": {"type": "string", "description": "search words"}}, "required": ["q"]});
        registry.register(Tool::new("github.search_issues", "Find issues.", schema, |_| Ok(Value::Null))).unwrap();
        registry
            .register(Tool::new("weather", "Today's forecast for a city.", json!({}), |_| Ok(Value::Null)))
            .unwrap();
        Catalog::new(&registry, &manifest(grants))
    }

    #[test]
    fn tools_are_found_by_parameter_descriptions_with_signatures_and_grants() {
        let catalog = catalog(&["tool:github.*"]);
        let hits = catalog.search("words", 5);
        assert_eq!(hits.len(), 1);
        let hit = serde_json::to_value(&hits[0]).unwrap();
        assert_eq!(hit["name"], "github.search_issues");
        assert_eq!(hit["granted"], true);
        assert_eq!(hit["javascript"], "tools.github.search_issues(args: { q: string }): any");
        assert_eq!(hit["python"], "tools.github.search_issues(*, q: str)");
        assert_eq!(hit["input_schema"]["required"], json!(["q"]));
        assert!(hit["score"].as_f64().unwrap() > 0.0);
        let text = hits_text("forecast", &catalog.search("forecast", 5), catalog.len());
        assert!(text.starts_with("weather (not granted"), "{text}");
    }

    #[test]
    fn an_empty_catalog_says_there_are_no_tools() {
        let catalog = Catalog::new(&ToolRegistry::new(), &manifest(&[]));
        assert!(catalog.search("anything", 5).is_empty());
        assert!(hits_text("anything", &[], catalog.len()).starts_with("No host tools are available"));
    }
}
