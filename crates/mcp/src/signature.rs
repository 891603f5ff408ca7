//! How to call a host tool from inside `execute_code`, written as a signature in each language and derived from
//! the tool's JSON Schema (`properties`, `required`, `type`, `enum`, `items`).
//!
//! The forms follow the guests exactly: JavaScript's `tools` global nests dotted names as namespaces
//! (`tools.github.search_issues({...})`), each function taking one arguments object; Python's
//! `from wasmagent import tools` resolves dotted names as attributes and takes keyword arguments only.

use serde_json::{Map, Value};

/// Nested schemas deeper than this are shown as `any` / `Any`, so a recursive or huge schema stays readable.
const MAX_DEPTH: usize = 4;
/// Schema nodes (types, union members, properties, enum values) one signature renders at most. A `type` list or a
/// union renders its subtree once per member, so without a budget five levels of 100 members (a 3 KB schema) would
/// be 100⁵ renderings; past the budget the signature falls back to a generic arguments object.
const MAX_NODES: usize = 512;
/// Bytes of property names and literal values one signature shows at most, with the same fallback.
const MAX_TEXT_BYTES: usize = 8 * 1024;

/// What is left of one signature's rendering budget. Running out is final: every later type renders as `any`, and
/// the caller replaces the whole signature by the generic one.
struct Budget {
    nodes: usize,
    text: usize,
    exhausted: bool,
}

impl Budget {
    fn new() -> Self {
        Budget { nodes: MAX_NODES, text: MAX_TEXT_BYTES, exhausted: false }
    }

    /// Takes one node showing `text` bytes of names or literals; false once the budget cannot pay for it.
    fn take(&mut self, text: usize) -> bool {
        if self.exhausted || self.nodes == 0 || text > self.text {
            self.exhausted = true;
            return false;
        }
        self.nodes -= 1;
        self.text -= text;
        true
    }
}

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
            let mut budget = Budget::new();
            let object = ts_object(properties, &required, 0, &mut budget);
            if budget.exhausted { format!("args{optional}: object") } else { format!("args{optional}: {object}") }
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
            // Past the budget, the dict form below documents the call without rendering the schema.
            py_keyword_params(properties, &required(schema)).unwrap_or_else(|| "args: dict | None = None, /".to_owned())
        }
        // Keys that are not Python identifiers cannot be keyword arguments; a dict works for every tool.
        _ if attribute_path => "args: dict | None = None, /".to_owned(),
        _ => "args: dict | None = None".to_owned(),
    };
    if attribute_path { format!("{callee}({params})") } else { format!("{callee}{params})") }
}

/// `*, q: str, limit: int | None = None`, required parameters first; `None` when the rendering budget runs out.
fn py_keyword_params(properties: &Map<String, Value>, required: &[&str]) -> Option<String> {
    if properties.is_empty() {
        return Some(String::new());
    }
    let mut budget = Budget::new();
    let mut params = vec!["*".to_owned()];
    let (first, rest): (Vec<_>, Vec<_>) = properties.iter().partition(|(key, _)| required.contains(&key.as_str()));
    for (key, value) in first {
        if !budget.take(key.len()) {
            return None;
        }
        params.push(format!("{key}: {}", py_type(value, 0, &mut budget)));
    }
    for (key, value) in rest {
        if !budget.take(key.len()) {
            return None;
        }
        let ty = py_type(value, 0, &mut budget);
        let ty = if ty == "Any" || ty.split(" | ").any(|t| t == "None") { ty } else { format!("{ty} | None") };
        params.push(format!("{key}: {ty} = None"));
    }
    (!budget.exhausted).then(|| params.join(", "))
}

fn required(schema: &Value) -> Vec<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn ts_object(properties: &Map<String, Value>, required: &[&str], depth: usize, budget: &mut Budget) -> String {
    if properties.is_empty() {
        return "{}".to_owned();
    }
    let mut fields = Vec::new();
    for (key, value) in properties {
        if !budget.take(key.len()) {
            return "object".to_owned();
        }
        let key_text = if is_js_identifier(key) { key.clone() } else { Value::from(key.as_str()).to_string() };
        let optional = if required.contains(&key.as_str()) { "" } else { "?" };
        fields.push(format!("{key_text}{optional}: {}", ts_type(value, depth + 1, budget)));
    }
    format!("{{ {} }}", fields.join(", "))
}

fn ts_type(schema: &Value, depth: usize, budget: &mut Budget) -> String {
    if depth > MAX_DEPTH || !budget.take(0) {
        return "any".to_owned();
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return literals(values, " | ", budget, Value::to_string).unwrap_or_else(|| "any".to_owned());
    }
    if let Some(value) = schema.get("const") {
        return literals(std::slice::from_ref(value), " | ", budget, Value::to_string)
            .unwrap_or_else(|| "any".to_owned());
    }
    match schema.get("type") {
        Some(Value::String(name)) => ts_named(name, schema, depth, budget),
        Some(Value::Array(names)) => {
            let names = names.iter().filter_map(Value::as_str);
            alternatives(names, budget, |name, budget| ts_named(name, schema, depth, budget), "any")
        }
        _ => match union(schema) {
            Some(options) => alternatives(options.iter(), budget, |s, budget| ts_type(s, depth + 1, budget), "any"),
            None => "any".to_owned(),
        },
    }
}

fn ts_named(name: &str, schema: &Value, depth: usize, budget: &mut Budget) -> String {
    match name {
        "string" => "string".to_owned(),
        "integer" | "number" => "number".to_owned(),
        "boolean" => "boolean".to_owned(),
        "null" => "null".to_owned(),
        "array" => {
            let item = schema.get("items").map_or_else(|| "any".to_owned(), |items| ts_type(items, depth + 1, budget));
            if item.contains(' ') { format!("({item})[]") } else { format!("{item}[]") }
        }
        "object" => match schema.get("properties").and_then(Value::as_object) {
            Some(properties) if depth < MAX_DEPTH => ts_object(properties, &required(schema), depth, budget),
            _ => "object".to_owned(),
        },
        _ => "any".to_owned(),
    }
}

fn py_type(schema: &Value, depth: usize, budget: &mut Budget) -> String {
    if depth > MAX_DEPTH || !budget.take(0) {
        return "Any".to_owned();
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return literals(values, ", ", budget, py_literal)
            .map_or_else(|| "Any".to_owned(), |l| format!("Literal[{l}]"));
    }
    if let Some(value) = schema.get("const") {
        let literal = literals(std::slice::from_ref(value), ", ", budget, py_literal);
        return literal.map_or_else(|| "Any".to_owned(), |l| format!("Literal[{l}]"));
    }
    match schema.get("type") {
        Some(Value::String(name)) => py_named(name, schema, depth, budget),
        Some(Value::Array(names)) => {
            let names = names.iter().filter_map(Value::as_str);
            alternatives(names, budget, |name, budget| py_named(name, schema, depth, budget), "Any")
        }
        _ => match union(schema) {
            Some(options) => alternatives(options.iter(), budget, |s, budget| py_type(s, depth + 1, budget), "Any"),
            None => "Any".to_owned(),
        },
    }
}

fn py_named(name: &str, schema: &Value, depth: usize, budget: &mut Budget) -> String {
    match name {
        "string" => "str".to_owned(),
        "integer" => "int".to_owned(),
        "number" => "float".to_owned(),
        "boolean" => "bool".to_owned(),
        "null" => "None".to_owned(),
        "array" => {
            let item = schema.get("items").map_or_else(|| "Any".to_owned(), |items| py_type(items, depth + 1, budget));
            format!("list[{item}]")
        }
        "object" => "dict".to_owned(),
        _ => "Any".to_owned(),
    }
}

/// `a | b | c`: each option rendered once (repeats shown once), or `fallback` when there are none or the budget
/// runs out on the way.
fn alternatives<T>(
    options: impl Iterator<Item = T>,
    budget: &mut Budget,
    mut render: impl FnMut(T, &mut Budget) -> String,
    fallback: &str,
) -> String {
    let mut parts: Vec<String> = Vec::new();
    for option in options {
        let part = render(option, budget);
        if budget.exhausted {
            return fallback.to_owned();
        }
        if !parts.contains(&part) {
            parts.push(part);
        }
    }
    if parts.is_empty() { fallback.to_owned() } else { parts.join(" | ") }
}

/// Literal values written by `write` and joined by `separator`, each paid for from the budget; `None` when it runs
/// out.
fn literals(
    values: &[Value],
    separator: &str,
    budget: &mut Budget,
    write: impl Fn(&Value) -> String,
) -> Option<String> {
    let mut parts = Vec::with_capacity(values.len().min(MAX_NODES));
    for value in values {
        let text = write(value);
        if !budget.take(text.len()) {
            return None;
        }
        parts.push(text);
    }
    Some(parts.join(separator))
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

    /// Five levels whose `type` lists repeat `array` 100 times over the same `items`: about 4 KB of JSON, 100⁴
    /// renderings (the depth cap stops the fifth) without a budget. `any_of` wraps each level in an `anyOf`.
    fn fan_out_bomb(any_of: bool) -> Value {
        let mut schema = json!({"type": "string"});
        for _ in 0..5 {
            schema = json!({"type": vec!["array"; 100], "items": schema});
            if any_of {
                schema = json!({"anyOf": [schema, {"type": "null"}]});
            }
        }
        json!({"type": "object", "properties": {"q": schema}, "required": ["q"]})
    }

    #[test]
    fn repeated_subtrees_cannot_multiply_the_rendering() {
        for any_of in [false, true] {
            let schema = fan_out_bomb(any_of);
            assert!(schema.to_string().len() < 8 * 1024, "the schema itself is small");
            let (sender, receiver) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = sender.send((javascript("bomb", &schema), python("bomb", &schema)));
            });
            let (js, py) = receiver
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("rendering a 4 KB schema must not take 100⁴ steps");
            if any_of {
                // The depth cap counts the unions' levels too, so JavaScript stays within the budget (repeats shown
                // once); Python's parameters start a level higher and reach 100² nodes.
                assert_eq!(js, "tools.bomb(args: { q: (any[] | null)[] | null }): any");
            } else {
                assert_eq!(js, "tools.bomb(args: object): any");
            }
            assert_eq!(py, "tools.bomb(args: dict | None = None, /)", "anyOf: {any_of}");
        }
    }

    #[test]
    fn budget_covers_literals_and_repeats_are_shown_once() {
        let many: Vec<String> = (0..2000).map(|i| format!("value-{i}")).collect();
        let schema = json!({"properties": {"x": {"enum": many}}});
        assert_eq!(javascript("e", &schema), "tools.e(args?: object): any");
        assert_eq!(python("e", &schema), "tools.e(args: dict | None = None, /)");
        let repeated = json!({"properties": {"x": {"type": ["string", "string", "null", "string"]}}});
        assert_eq!(javascript("r", &repeated), "tools.r(args?: { x?: string | null }): any");
        assert_eq!(python("r", &repeated), "tools.r(*, x: str | None = None)");
        assert_eq!(javascript("t", &json!({"properties": {"x": {"type": []}}})), "tools.t(args?: { x?: any }): any");
    }

    #[test]
    fn ordinary_large_schemas_stay_within_the_budget() {
        let properties: Map<String, Value> =
            (0..60).map(|i| (format!("field_{i}"), json!({"enum": ["a", "b", "c"], "description": "x"}))).collect();
        let schema = json!({"type": "object", "properties": properties});
        let js = javascript("wide", &schema);
        assert!(js.contains(r#"field_59?: "a" | "b" | "c""#), "{js}");
        assert!(python("wide", &schema).contains(r#"field_59: Literal["a", "b", "c"] | None = None"#));
    }
}
