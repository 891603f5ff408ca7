//! How to call a host tool from inside `execute_code`, written as a signature in each language and derived from
//! the tool's JSON Schema (`properties`, `required`, `type`, `enum`, `items`).
//!
//! The forms follow the guests exactly: JavaScript's `tools` global nests dotted names as namespaces
//! (`tools.github.search_issues({...})`), each function taking one arguments object; Python's
//! `from wasmagent import tools` resolves dotted names as attributes and takes keyword arguments only.

use serde_json::{Map, Value};

/// Nested schemas deeper than this are shown as `any` / `Any`, so a recursive or huge schema stays readable.
const MAX_DEPTH: usize = 4;

/// `tools.NAME(args: { q: string, limit?: number }): any`.
pub(crate) fn javascript(name: &str, schema: &Value) -> String {
    // Registered names are identifiers between dots; any other part is still reachable as an index.
    let callee = name.split('.').fold("tools".to_owned(), |callee, part| {
        if is_js_identifier(part) { format!("{callee}.{part}") } else { format!("{callee}[{}]", Value::from(part)) }
    });
    let args = match schema.get("properties").and_then(Value::as_object) {
        None => "args?: object".to_owned(),
        Some(properties) => {
            let required = required(schema);
            let optional = if properties.keys().any(|k| required.contains(&k.as_str())) { "" } else { "?" };
            format!("args{optional}: {}", ts_object(properties, &required, 0))
        }
    };
    format!("{callee}({args}): any")
}

/// `tools.NAME(*, q: str, limit: int | None = None)`.
pub(crate) fn python(name: &str, schema: &Value) -> String {
    let attribute_path = name.split('.').all(|part| is_python_identifier(part) && !part.starts_with("__"));
    let callee = if attribute_path { format!("tools.{name}") } else { format!("tools.call({}, ", Value::from(name)) };
    let params = match schema.get("properties").and_then(Value::as_object) {
        Some(properties) if properties.keys().all(|k| is_python_identifier(k)) && attribute_path => {
            if properties.is_empty() {
                String::new()
            } else {
                let required = required(schema);
                let mut params = vec!["*".to_owned()];
                let (first, rest): (Vec<_>, Vec<_>) =
                    properties.iter().partition(|(key, _)| required.contains(&key.as_str()));
                params.extend(first.iter().map(|(key, value)| format!("{key}: {}", py_type(value, 0))));
                params.extend(rest.iter().map(|(key, value)| {
                    let ty = py_type(value, 0);
                    let ty =
                        if ty == "Any" || ty.split(" | ").any(|t| t == "None") { ty } else { format!("{ty} | None") };
                    format!("{key}: {ty} = None")
                }));
                params.join(", ")
            }
        }
        // Keys that are not Python identifiers cannot be keyword arguments; a dict works for every tool.
        _ if attribute_path => "args: dict | None = None, /".to_owned(),
        _ => "args: dict | None = None".to_owned(),
    };
    if attribute_path { format!("{callee}({params})") } else { format!("{callee}{params})") }
}

fn required(schema: &Value) -> Vec<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn ts_object(properties: &Map<String, Value>, required: &[&str], depth: usize) -> String {
    if properties.is_empty() {
        return "{}".to_owned();
    }
    let fields: Vec<String> = properties
        .iter()
        .map(|(key, value)| {
            let key_text = if is_js_identifier(key) { key.clone() } else { Value::from(key.as_str()).to_string() };
            let optional = if required.contains(&key.as_str()) { "" } else { "?" };
            format!("{key_text}{optional}: {}", ts_type(value, depth + 1))
        })
        .collect();
    format!("{{ {} }}", fields.join(", "))
}

fn ts_type(schema: &Value, depth: usize) -> String {
    if depth > MAX_DEPTH {
        return "any".to_owned();
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values.iter().map(Value::to_string).collect::<Vec<_>>().join(" | ");
    }
    if let Some(value) = schema.get("const") {
        return value.to_string();
    }
    match schema.get("type") {
        Some(Value::String(name)) => ts_named(name, schema, depth),
        Some(Value::Array(names)) => names
            .iter()
            .filter_map(Value::as_str)
            .map(|name| ts_named(name, schema, depth))
            .collect::<Vec<_>>()
            .join(" | "),
        _ => match union(schema) {
            Some(options) => options.iter().map(|s| ts_type(s, depth + 1)).collect::<Vec<_>>().join(" | "),
            None => "any".to_owned(),
        },
    }
}

fn ts_named(name: &str, schema: &Value, depth: usize) -> String {
    match name {
        "string" => "string".to_owned(),
        "integer" | "number" => "number".to_owned(),
        "boolean" => "boolean".to_owned(),
        "null" => "null".to_owned(),
        "array" => {
            let item = schema.get("items").map_or_else(|| "any".to_owned(), |items| ts_type(items, depth + 1));
            if item.contains(' ') { format!("({item})[]") } else { format!("{item}[]") }
        }
        "object" => match schema.get("properties").and_then(Value::as_object) {
            Some(properties) if depth < MAX_DEPTH => ts_object(properties, &required(schema), depth),
            _ => "object".to_owned(),
        },
        _ => "any".to_owned(),
    }
}

fn py_type(schema: &Value, depth: usize) -> String {
    if depth > MAX_DEPTH {
        return "Any".to_owned();
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return format!("Literal[{}]", values.iter().map(py_literal).collect::<Vec<_>>().join(", "));
    }
    if let Some(value) = schema.get("const") {
        return format!("Literal[{}]", py_literal(value));
    }
    match schema.get("type") {
        Some(Value::String(name)) => py_named(name, schema, depth),
        Some(Value::Array(names)) => names
            .iter()
            .filter_map(Value::as_str)
            .map(|name| py_named(name, schema, depth))
            .collect::<Vec<_>>()
            .join(" | "),
        _ => match union(schema) {
            Some(options) => options.iter().map(|s| py_type(s, depth + 1)).collect::<Vec<_>>().join(" | "),
            None => "Any".to_owned(),
        },
    }
}

fn py_named(name: &str, schema: &Value, depth: usize) -> String {
    match name {
        "string" => "str".to_owned(),
        "integer" => "int".to_owned(),
        "number" => "float".to_owned(),
        "boolean" => "bool".to_owned(),
        "null" => "None".to_owned(),
        "array" => format!("list[{}]", schema.get("items").map_or_else(|| "Any".to_owned(), |i| py_type(i, depth + 1))),
        "object" => "dict".to_owned(),
        _ => "Any".to_owned(),
    }
}

/// A JSON value written as a Python literal.
fn py_literal(value: &Value) -> String {
    match value {
        Value::Null => "None".to_owned(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        other => other.to_string(),
    }
}

fn union(schema: &Value) -> Option<&Vec<Value>> {
    schema.get("anyOf").or_else(|| schema.get("oneOf")).and_then(Value::as_array).filter(|o| !o.is_empty())
}

fn is_js_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

/// Python's keywords, which cannot be keyword-argument or attribute names.
const PYTHON_KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del",
    "elif", "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda", "nonlocal",
    "not", "or", "pass", "raise", "return", "try", "while", "with", "yield",
];

fn is_python_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !PYTHON_KEYWORDS.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn search_issues() -> Value {
        json!({
            "type": "object",
            "properties": {
                "q": {"type": "string"},
                "limit": {"type": "integer"},
                "state": {"enum": ["open", "closed"]},
                "labels": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["q"],
        })
    }

    #[test]
    fn javascript_takes_one_arguments_object_with_optional_fields_marked() {
        assert_eq!(
            javascript("search_issues", &search_issues()),
            r#"tools.search_issues(args: { labels?: string[], limit?: number, q: string, state?: "open" | "closed" }): any"#
        );
        assert_eq!(
            javascript("github.search_issues", &json!({"properties": {"q": {"type": "string"}}, "required": ["q"]})),
            "tools.github.search_issues(args: { q: string }): any",
            "dotted names are nested namespaces"
        );
        assert_eq!(javascript("ns.2fa", &json!({})), r#"tools.ns["2fa"](args?: object): any"#);
    }

    #[test]
    fn javascript_arguments_are_optional_when_nothing_is_required() {
        assert_eq!(javascript("now", &json!({"type": "object", "properties": {}})), "tools.now(args?: {}): any");
        assert_eq!(javascript("free", &json!({"type": "object"})), "tools.free(args?: object): any");
        assert_eq!(
            javascript("f", &json!({"properties": {"x": {"type": ["string", "null"]}, "my-key": {}}})),
            r#"tools.f(args?: { "my-key"?: any, x?: string | null }): any"#
        );
    }

    #[test]
    fn javascript_renders_nested_objects_and_unions() {
        let schema = json!({"properties": {
            "filter": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]},
            "value": {"anyOf": [{"type": "string"}, {"type": "number"}]},
            "pairs": {"type": "array", "items": {"type": ["string", "number"]}},
        }, "required": ["filter"]});
        assert_eq!(
            javascript("q", &schema),
            "tools.q(args: { filter: { id: number }, pairs?: (string | number)[], value?: string | number }): any"
        );
    }

    #[test]
    fn python_uses_keyword_arguments_required_first() {
        assert_eq!(
            python("github.search_issues", &search_issues()),
            r#"tools.github.search_issues(*, q: str, labels: list[str] | None = None, limit: int | None = None, state: Literal["open", "closed"] | None = None)"#
        );
        assert_eq!(python("now", &json!({"properties": {}})), "tools.now()");
        assert_eq!(
            python("maybe", &json!({"properties": {"x": {"type": ["integer", "null"]}, "y": {}}})),
            "tools.maybe(*, x: int | None = None, y: Any = None)"
        );
    }

    #[test]
    fn python_falls_back_to_a_dict_where_keywords_cannot_be_used() {
        assert_eq!(python("free", &json!({"type": "object"})), "tools.free(args: dict | None = None, /)");
        assert_eq!(
            python("mail", &json!({"properties": {"from": {"type": "string"}}})),
            "tools.mail(args: dict | None = None, /)",
            "`from` is a Python keyword"
        );
        assert_eq!(
            python("class.list", &json!({"properties": {}})),
            r#"tools.call("class.list", args: dict | None = None)"#
        );
    }

    #[test]
    fn deep_schemas_are_cut_off() {
        let mut schema = json!({"type": "string"});
        for _ in 0..10 {
            schema = json!({"type": "object", "properties": {"a": schema}, "required": ["a"]});
        }
        let rendered = javascript("deep", &schema);
        assert!(rendered.contains("object") || rendered.contains("any"), "{rendered}");
        assert!(rendered.len() < 200, "{rendered}");
        assert_eq!(python("deep", &schema), "tools.deep(*, a: dict)");
    }
}
