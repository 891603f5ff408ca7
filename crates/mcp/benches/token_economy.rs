//! Token economy, measured: `cargo bench -p wasmagent-mcp --bench token_economy`.
//!
//! Counts, with real tokenizers (tiktoken's o200k_base and cl100k_base), the tokens an MCP client receives for one
//! typical task with 10, 30 and 100 host tools: "find the open bugs labelled `bug`, count them by assignee, post the
//! summary to Slack". Both modes run the real server in-process over an in-memory pipe with an rmcp client:
//! - direct (`expose_tools: true`): tools/list (only the N host tools; `execute_code` and `search_docs` are left
//!   out so direct mode is not charged for them), then `github.search_issues` and `slack.post_message`, each call's
//!   name and arguments as the model writes them and its result as the client receives it;
//! - code mode (`expose_tools: false`): the server's instructions and tools/list (`execute_code`, `search_docs`),
//!   two `search_docs` calls with their results, then one `execute_code` doing the whole task, with its result
//!   (text content and the structured run report).
//!
//! Every message is counted as its compact JSON, as it travels. The tools are synthetic but shaped like real ones
//! (see [`synthetic_tools`]), generated deterministically, so the figures are the same on every run.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark harness")]

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tiktoken_rs::CoreBPE;
use wasmagent::{CapabilityManifest, Sandbox, Tool, ToolRegistry, default_cache_dir};
use wasmagent_mcp::{CodeModeServer, McpOptions};

const TOOL_COUNTS: [usize; 3] = [10, 30, 100];
const QUERY: &str = "repo:acme/api is:issue is:open label:bug";
const CHANNEL: &str = "#eng-triage";
const CODE_MODE_SEARCHES: [&str; 2] = ["search github issues", "post slack message"];

/// The whole task in one `execute_code` call, as a model would write it.
const TASK_JS: &str = r##"const res = tools.github.search_issues({ q: "repo:acme/api is:issue is:open label:bug", per_page: 100 });
const counts = {};
for (const issue of res.items) {
  const who = issue.assignee ?? "unassigned";
  counts[who] = (counts[who] ?? 0) + 1;
}
const lines = Object.entries(counts)
  .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
  .map(([who, n]) => `• ${who}: ${n}`);
const text = `Open bugs labelled bug in acme/api: ${res.items.length}\n${lines.join("\n")}`;
const ack = tools.slack.post_message({ channel: "#eng-triage", text });
({ posted: ack.ok, open_bugs: res.items.length, by_assignee: counts })"##;

/// What a client received in one session, as JSON texts: the tool listing, then each message of the task.
struct Transcript {
    listing: Vec<(&'static str, String)>,
    task: Vec<(String, String)>,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let tokenizers =
        [("o200k_base", tiktoken_rs::o200k_base().unwrap()), ("cl100k_base", tiktoken_rs::cl100k_base().unwrap())];
    let mut rows = Vec::new();
    for n in TOOL_COUNTS {
        let posted = Arc::new(Mutex::new(Vec::new()));
        let registry = synthetic_tools(n, posted.clone());
        assert_eq!(registry.iter().count(), n);
        let sandbox =
            Arc::new(Sandbox::builder().tools(registry.clone()).cache_dir(default_cache_dir()).build().unwrap());
        let direct = runtime.block_on(direct_mode(&sandbox, &registry));
        let code = runtime.block_on(code_mode(&sandbox, &registry));
        let posted = posted.lock().unwrap();
        assert_eq!(posted.len(), 2, "each mode posts once");
        assert_eq!(posted[0], posted[1], "both modes post the same summary");
        rows.push((n, direct, code));
    }

    for (name, bpe) in &tokenizers {
        println!("\nTokens an MCP client receives for the task, tokenizer {name}:\n");
        println!(
            "| tools | direct: tools/list | direct: task calls | direct total | code mode: tools/list | code mode: task \
             | code-mode total | code mode as % of direct |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (n, direct, code) in &rows {
            let (dl, dt) = (count(bpe, &direct.listing), count(bpe, &direct.task));
            let (cl, ct) = (count(bpe, &code.listing), count(bpe, &code.task));
            let percent = 100.0 * (cl + ct) as f64 / (dl + dt) as f64;
            println!("| {n} | {dl} | {dt} | {} | {cl} | {ct} | {} | {percent:.1}% |", dl + dt, cl + ct);
        }
    }

    let (name, bpe) = &tokenizers[0];
    let (n, direct, code) = &rows[1];
    println!("\nWhere the tokens go at {n} tools ({name}):\n");
    for (mode, transcript) in [("direct", direct), ("code mode", code)] {
        for (label, text) in &transcript.listing {
            println!("- {mode}: {label}: {} tokens", tokens(bpe, text));
        }
        for (label, text) in &transcript.task {
            println!("- {mode}: {label}: {} tokens", tokens(bpe, text));
        }
    }
    println!("\nIf the client passed only the text content of each result to the model ({name}):\n");
    for (n, direct, code) in &rows {
        let (d, c) = (text_only(bpe, direct), text_only(bpe, code));
        println!("- {n} tools: direct {d}, code mode {c} ({:.1}%)", 100.0 * c as f64 / d as f64);
    }
}

fn tokens(bpe: &CoreBPE, text: &str) -> usize {
    bpe.encode_ordinary(text).len()
}

fn count<L: AsRef<str>>(bpe: &CoreBPE, items: &[(L, String)]) -> usize {
    items.iter().map(|(_, text)| tokens(bpe, text)).sum()
}

/// The transcript's total with each result reduced to its text content (no structured content, no envelope).
fn text_only(bpe: &CoreBPE, transcript: &Transcript) -> usize {
    let results = transcript.task.iter().map(|(label, text)| {
        if !label.ends_with("result") {
            return tokens(bpe, text);
        }
        let result: Value = serde_json::from_str(text).unwrap();
        result["content"].as_array().unwrap().iter().map(|c| tokens(bpe, c["text"].as_str().unwrap_or(""))).sum()
    });
    count(bpe, &transcript.listing) + results.sum::<usize>()
}

fn manifest(sandbox: &Sandbox) -> wasmagent::EffectiveManifest {
    let manifest = CapabilityManifest { extra_capabilities: vec!["tool:*".to_owned()], ..Default::default() };
    sandbox.resolve(&manifest, Path::new("/")).unwrap()
}

/// A connected client and the task serving it.
async fn connect(
    sandbox: &Arc<Sandbox>,
    registry: &ToolRegistry,
    expose_tools: bool,
) -> (rmcp::service::RunningService<rmcp::RoleClient, ()>, tokio::task::JoinHandle<()>) {
    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    let server = CodeModeServer::new(sandbox.clone(), manifest(sandbox), registry, McpOptions { expose_tools });
    let serving = tokio::spawn(async move { wasmagent_mcp::serve(server, server_io).await.unwrap() });
    (().serve(client_io).await.unwrap(), serving)
}

/// Calls `name` and returns the call as the model writes it, the result as JSON, and the result.
async fn call(
    client: &rmcp::service::RunningService<rmcp::RoleClient, ()>,
    name: &'static str,
    arguments: Value,
) -> (String, String, CallToolResult) {
    let Value::Object(arguments) = arguments else { panic!("arguments are an object") };
    let mut params = CallToolRequestParams::new(name);
    params.arguments = Some(arguments);
    let request = serde_json::to_string(&params).unwrap();
    let result = client.call_tool(params).await.unwrap();
    assert_ne!(result.is_error, Some(true), "{name} failed: {result:?}");
    (request, serde_json::to_string(&result).unwrap(), result)
}

fn result_text(result: &CallToolResult) -> String {
    result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect()
}

async fn direct_mode(sandbox: &Arc<Sandbox>, registry: &ToolRegistry) -> Transcript {
    let (client, serving) = connect(sandbox, registry, true).await;
    let tools = client.list_all_tools().await.unwrap();
    let host_tools: Vec<_> =
        tools.into_iter().filter(|t| t.name != "execute_code" && t.name != "search_docs").collect();
    assert_eq!(host_tools.len(), registry.iter().count());
    let listing =
        vec![("tools/list (host tools only)", serde_json::to_string(&json!({ "tools": host_tools })).unwrap())];

    let mut task = Vec::new();
    let (request, response, result) =
        call(&client, "github.search_issues", json!({ "q": QUERY, "per_page": 100 })).await;
    task.push(("github.search_issues call".to_owned(), request));
    task.push(("github.search_issues result".to_owned(), response));
    // The model reads the issues from the text content and writes the summary itself.
    let found: Value = serde_json::from_str(&result_text(&result)).unwrap();
    let summary = summarise(found["items"].as_array().unwrap());
    let (request, response, _) =
        call(&client, "slack.post_message", json!({ "channel": CHANNEL, "text": summary })).await;
    task.push(("slack.post_message call".to_owned(), request));
    task.push(("slack.post_message result".to_owned(), response));

    client.cancel().await.unwrap();
    serving.await.unwrap();
    Transcript { listing, task }
}

async fn code_mode(sandbox: &Arc<Sandbox>, registry: &ToolRegistry) -> Transcript {
    let (client, serving) = connect(sandbox, registry, false).await;
    let instructions = client.peer_info().and_then(|info| info.instructions.clone()).unwrap_or_default();
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 2, "code mode lists execute_code and search_docs");
    let listing = vec![
        ("server instructions (initialize)", instructions),
        ("tools/list (execute_code, search_docs)", serde_json::to_string(&json!({ "tools": tools })).unwrap()),
    ];

    let mut task = Vec::new();
    for (query, wanted) in CODE_MODE_SEARCHES.iter().zip(["github.search_issues", "slack.post_message"]) {
        let (request, response, result) = call(&client, "search_docs", json!({ "query": query })).await;
        assert!(result_text(&result).contains(wanted), "search_docs {query:?} does not find {wanted}");
        task.push((format!("search_docs {query:?} call"), request));
        task.push((format!("search_docs {query:?} result"), response));
    }
    let (request, response, result) =
        call(&client, "execute_code", json!({ "language": "javascript", "code": TASK_JS })).await;
    let value = &result.structured_content.as_ref().unwrap()["value"];
    assert_eq!(value["posted"], true, "{value}");
    task.push(("execute_code call".to_owned(), request));
    task.push(("execute_code result".to_owned(), response));

    client.cancel().await.unwrap();
    serving.await.unwrap();
    Transcript { listing, task }
}

/// The Slack message: open bugs counted by assignee, most first (the same text `TASK_JS` builds).
fn summarise(issues: &[Value]) -> String {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for issue in issues {
        *counts.entry(issue["assignee"].as_str().unwrap_or("unassigned").to_owned()).or_default() += 1;
    }
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let lines: Vec<String> = counts.iter().map(|(who, n)| format!("• {who}: {n}")).collect();
    format!("Open bugs labelled bug in acme/api: {}\n{}", issues.len(), lines.join("\n"))
}

/// A service the synthetic tools belong to: its namespace, product name, the parameter that scopes every call, and
/// its resources with the fields a create or update takes.
struct Service {
    namespace: &'static str,
    product: &'static str,
    scope: Param,
    resources: [Resource; 3],
}

struct Resource {
    name: &'static str,
    plural: &'static str,
    id: Param,
    fields: [Param; 3],
}

type Param = (&'static str, &'static str, &'static str);

const fn p(name: &'static str, kind: &'static str, description: &'static str) -> Param {
    (name, kind, description)
}

const SERVICES: [Service; 10] = [
    Service {
        namespace: "github",
        product: "GitHub",
        scope: p("repo", "string", "Repository in owner/name form, e.g. \"acme/api\"."),
        resources: [
            Resource {
                name: "issue",
                plural: "issues",
                id: p("issue_number", "integer", "The issue's number within the repository."),
                fields: [
                    p("title", "string", "Title of the issue."),
                    p("body", "string", "Issue body in GitHub-flavoured Markdown."),
                    p("labels", "array", "Label names to apply; labels that do not exist are created."),
                ],
            },
            Resource {
                name: "pull_request",
                plural: "pull_requests",
                id: p("pull_number", "integer", "The pull request's number within the repository."),
                fields: [
                    p("title", "string", "Title of the pull request."),
                    p("head", "string", "Branch containing the changes, e.g. \"feature/login\"."),
                    p("draft", "boolean", "Open the pull request as a draft."),
                ],
            },
            Resource {
                name: "release",
                plural: "releases",
                id: p("tag", "string", "Git tag the release points at, e.g. \"v1.4.0\"."),
                fields: [
                    p("name", "string", "Title of the release."),
                    p("notes", "string", "Release notes in Markdown."),
                    p("prerelease", "boolean", "Mark the release as a pre-release."),
                ],
            },
        ],
    },
    Service {
        namespace: "slack",
        product: "Slack",
        scope: p("channel", "string", "Channel name such as \"#eng\" or a channel ID such as \"C024BE91L\"."),
        resources: [
            Resource {
                name: "message",
                plural: "messages",
                id: p("ts", "string", "Timestamp of the message, which Slack uses as its ID."),
                fields: [
                    p("text", "string", "Message text; Slack mrkdwn formatting is supported."),
                    p("thread_ts", "string", "Timestamp of the parent message, to reply in its thread."),
                    p("unfurl_links", "boolean", "Show previews of links in the message."),
                ],
            },
            Resource {
                name: "bookmark",
                plural: "bookmarks",
                id: p("bookmark_id", "string", "ID of the bookmark."),
                fields: [
                    p("title", "string", "Title shown in the channel header."),
                    p("link", "string", "URL the bookmark opens."),
                    p("emoji", "string", "Emoji shown before the title, e.g. \":books:\"."),
                ],
            },
            Resource {
                name: "reminder",
                plural: "reminders",
                id: p("reminder_id", "string", "ID of the reminder."),
                fields: [
                    p("text", "string", "What to be reminded of."),
                    p("time", "string", "When, as an ISO 8601 timestamp or natural language like \"in 2 hours\"."),
                    p("user", "string", "User ID to remind; defaults to the caller."),
                ],
            },
        ],
    },
    Service {
        namespace: "jira",
        product: "Jira",
        scope: p("project_key", "string", "Key of the Jira project, e.g. \"OPS\"."),
        resources: [
            Resource {
                name: "ticket",
                plural: "tickets",
                id: p("ticket_key", "string", "Ticket key such as \"OPS-1423\"."),
                fields: [
                    p("summary", "string", "One-line summary of the ticket."),
                    p("issue_type", "string", "Bug, Task, Story or Epic."),
                    p("priority", "string", "Highest, High, Medium, Low or Lowest."),
                ],
            },
            Resource {
                name: "sprint",
                plural: "sprints",
                id: p("sprint_id", "integer", "Numeric ID of the sprint."),
                fields: [
                    p("name", "string", "Name of the sprint."),
                    p("start_date", "string", "Start date, YYYY-MM-DD."),
                    p("goal", "string", "The sprint goal shown on the board."),
                ],
            },
            Resource {
                name: "component",
                plural: "components",
                id: p("component_id", "string", "ID of the component."),
                fields: [
                    p("name", "string", "Name of the component."),
                    p("lead", "string", "Account ID of the component lead."),
                    p("description", "string", "What the component covers."),
                ],
            },
        ],
    },
    Service {
        namespace: "calendar",
        product: "Google Calendar",
        scope: p("calendar_id", "string", "Calendar ID; \"primary\" is the user's main calendar."),
        resources: [
            Resource {
                name: "event",
                plural: "events",
                id: p("event_id", "string", "ID of the event."),
                fields: [
                    p("summary", "string", "Title of the event."),
                    p("start", "string", "Start time, RFC 3339 with a time zone offset."),
                    p("attendees", "array", "Email addresses of the people to invite."),
                ],
            },
            Resource {
                name: "acl_rule",
                plural: "acl_rules",
                id: p("rule_id", "string", "ID of the access rule."),
                fields: [
                    p("role", "string", "reader, writer or owner."),
                    p("scope_value", "string", "Email address or domain the rule applies to."),
                    p("send_notifications", "boolean", "Email the grantee about the change."),
                ],
            },
            Resource {
                name: "working_location",
                plural: "working_locations",
                id: p("location_id", "string", "ID of the working-location entry."),
                fields: [
                    p("date", "string", "Day, YYYY-MM-DD."),
                    p("kind", "string", "homeOffice, officeLocation or customLocation."),
                    p("label", "string", "Free-text label such as \"Berlin office\"."),
                ],
            },
        ],
    },
    Service {
        namespace: "drive",
        product: "Google Drive",
        scope: p("drive_id", "string", "ID of the shared drive, or \"my-drive\"."),
        resources: [
            Resource {
                name: "file",
                plural: "files",
                id: p("file_id", "string", "ID of the file."),
                fields: [
                    p("name", "string", "File name including its extension."),
                    p("parent_id", "string", "ID of the folder to put the file in."),
                    p("mime_type", "string", "MIME type, e.g. \"application/pdf\"."),
                ],
            },
            Resource {
                name: "folder",
                plural: "folders",
                id: p("folder_id", "string", "ID of the folder."),
                fields: [
                    p("name", "string", "Folder name."),
                    p("parent_id", "string", "ID of the parent folder."),
                    p("color", "string", "Folder colour as a hex RGB string."),
                ],
            },
            Resource {
                name: "permission",
                plural: "permissions",
                id: p("permission_id", "string", "ID of the permission."),
                fields: [
                    p("email", "string", "Email address of the user or group."),
                    p("role", "string", "reader, commenter, writer or organizer."),
                    p("notify", "boolean", "Send a notification email."),
                ],
            },
        ],
    },
    Service {
        namespace: "crm",
        product: "Salesforce",
        scope: p("account_id", "string", "ID of the account the record belongs to."),
        resources: [
            Resource {
                name: "contact",
                plural: "contacts",
                id: p("contact_id", "string", "18-character Salesforce ID of the contact."),
                fields: [
                    p("last_name", "string", "Contact's last name."),
                    p("email", "string", "Contact's email address."),
                    p("title", "string", "Job title."),
                ],
            },
            Resource {
                name: "opportunity",
                plural: "opportunities",
                id: p("opportunity_id", "string", "18-character Salesforce ID of the opportunity."),
                fields: [
                    p("name", "string", "Name of the opportunity."),
                    p("amount", "number", "Expected revenue in the account's currency."),
                    p("stage", "string", "Sales stage, e.g. \"Prospecting\" or \"Closed Won\"."),
                ],
            },
            Resource {
                name: "note",
                plural: "notes",
                id: p("note_id", "string", "ID of the note."),
                fields: [
                    p("title", "string", "Title of the note."),
                    p("body", "string", "Text of the note."),
                    p("is_private", "boolean", "Only the owner can see the note."),
                ],
            },
        ],
    },
    Service {
        namespace: "db",
        product: "the analytics Postgres database",
        scope: p("schema", "string", "Database schema, e.g. \"public\"."),
        resources: [
            Resource {
                name: "table",
                plural: "tables",
                id: p("table", "string", "Table name without the schema."),
                fields: [
                    p("columns", "array", "Column definitions as \"name type\" strings."),
                    p("primary_key", "array", "Names of the primary-key columns."),
                    p("comment", "string", "Comment stored on the table."),
                ],
            },
            Resource {
                name: "view",
                plural: "views",
                id: p("view", "string", "View name without the schema."),
                fields: [
                    p("definition", "string", "The SELECT statement defining the view."),
                    p("materialized", "boolean", "Create a materialized view."),
                    p("comment", "string", "Comment stored on the view."),
                ],
            },
            Resource {
                name: "saved_query",
                plural: "saved_queries",
                id: p("query_id", "integer", "ID of the saved query."),
                fields: [
                    p("sql", "string", "The SQL text; read-only statements only."),
                    p("title", "string", "Title shown in the query library."),
                    p("tags", "array", "Tags for finding the query later."),
                ],
            },
        ],
    },
    Service {
        namespace: "email",
        product: "Gmail",
        scope: p("mailbox", "string", "Mailbox address, or \"me\" for the authenticated user."),
        resources: [
            Resource {
                name: "draft",
                plural: "drafts",
                id: p("draft_id", "string", "ID of the draft."),
                fields: [
                    p("to", "array", "Recipient email addresses."),
                    p("subject", "string", "Subject line."),
                    p("body", "string", "Plain-text body."),
                ],
            },
            Resource {
                name: "label",
                plural: "labels",
                id: p("label_id", "string", "ID of the label."),
                fields: [
                    p("name", "string", "Label name; use / for nesting."),
                    p("color", "string", "Background colour as a hex RGB string."),
                    p("show_in_list", "boolean", "Show the label in the label list."),
                ],
            },
            Resource {
                name: "filter",
                plural: "filters",
                id: p("filter_id", "string", "ID of the filter."),
                fields: [
                    p("criteria", "string", "Gmail search expression the filter matches."),
                    p("add_label", "string", "Label to apply to matching mail."),
                    p("archive", "boolean", "Skip the inbox for matching mail."),
                ],
            },
        ],
    },
    Service {
        namespace: "stripe",
        product: "Stripe",
        scope: p("customer_id", "string", "Stripe customer ID, e.g. \"cus_NffrFeUfNV2Hib\"."),
        resources: [
            Resource {
                name: "invoice",
                plural: "invoices",
                id: p("invoice_id", "string", "Stripe invoice ID, e.g. \"in_1MtHbELkdIwHu7ix\"."),
                fields: [
                    p("currency", "string", "Three-letter ISO currency code, lowercase."),
                    p("days_until_due", "integer", "Days until the invoice is due."),
                    p("description", "string", "Memo shown on the invoice."),
                ],
            },
            Resource {
                name: "subscription",
                plural: "subscriptions",
                id: p("subscription_id", "string", "Stripe subscription ID, e.g. \"sub_1MowQVLkdIwHu7ix\"."),
                fields: [
                    p("price_id", "string", "ID of the price to subscribe to."),
                    p("quantity", "integer", "Number of seats."),
                    p("trial_days", "integer", "Length of the free trial in days."),
                ],
            },
            Resource {
                name: "refund",
                plural: "refunds",
                id: p("refund_id", "string", "Stripe refund ID, e.g. \"re_1Nispe2eZvKYlo2Cd31jOCgZ\"."),
                fields: [
                    p("charge_id", "string", "ID of the charge to refund."),
                    p("amount", "integer", "Amount in the smallest currency unit; the full charge when omitted."),
                    p("reason", "string", "duplicate, fraudulent or requested_by_customer."),
                ],
            },
        ],
    },
    Service {
        namespace: "pagerduty",
        product: "PagerDuty",
        scope: p("service_id", "string", "ID of the PagerDuty service, e.g. \"PIJ90N7\"."),
        resources: [
            Resource {
                name: "incident",
                plural: "incidents",
                id: p("incident_id", "string", "ID of the incident."),
                fields: [
                    p("title", "string", "Short description of the problem."),
                    p("urgency", "string", "high or low."),
                    p("assignee_ids", "array", "IDs of the users to assign."),
                ],
            },
            Resource {
                name: "maintenance_window",
                plural: "maintenance_windows",
                id: p("window_id", "string", "ID of the maintenance window."),
                fields: [
                    p("start_time", "string", "Start, ISO 8601."),
                    p("end_time", "string", "End, ISO 8601."),
                    p("description", "string", "Why alerts are suppressed."),
                ],
            },
            Resource {
                name: "override",
                plural: "overrides",
                id: p("override_id", "string", "ID of the schedule override."),
                fields: [
                    p("user_id", "string", "User who takes the shift."),
                    p("start", "string", "Start of the override, ISO 8601."),
                    p("end", "string", "End of the override, ISO 8601."),
                ],
            },
        ],
    },
];

const VERBS: [&str; 6] = ["search", "list", "get", "create", "update", "delete"];

/// `n` host tools: `github.search_issues` and `slack.post_message` (with canned answers; posted messages go to
/// `posted`), then tools taken in turn from each service (search, list, get, create, update, delete for each of its
/// resources), with descriptions and 2–5 typed, described parameters of the length real MCP servers publish.
fn synthetic_tools(n: usize, posted: Arc<Mutex<Vec<String>>>) -> ToolRegistry {
    let mut registry = ToolRegistry::new();
    registry
        .register(Tool::new(
            "github.search_issues",
            "Search issues and pull requests across GitHub repositories with GitHub's search syntax, e.g. \
             `repo:owner/name is:issue is:open label:bug`. Returns the total count and, for each match, its number, \
             title, state, labels, assignee, URL, comment count, creation date and the start of its body.",
            schema(
                &[
                    p("q", "string", "Search query with qualifiers such as repo:, is:, label:, assignee: and author:."),
                    p("sort", "string", "Sort by comments, reactions, created or updated; best match when omitted."),
                    p("order", "string", "asc or desc (default desc); ignored without sort."),
                    p("per_page", "integer", "Results per page, at most 100 (default 30)."),
                    p("page", "integer", "Page number of the results to fetch (default 1)."),
                ],
                1,
            ),
            |_| Ok(canned_issues()),
        ))
        .unwrap();
    registry
        .register(Tool::new(
            "slack.post_message",
            "Post a message to a Slack channel, or as a reply in a thread, as the bot user. Supports Slack mrkdwn \
             formatting. Returns the channel ID and the message timestamp (ts), which identifies the message for \
             replies and edits.",
            schema(
                &[
                    p("channel", "string", "Channel name such as \"#eng\" or a channel ID such as \"C024BE91L\"."),
                    p("text", "string", "Message text; Slack mrkdwn formatting is supported."),
                    p("thread_ts", "string", "Timestamp of the parent message, to reply in its thread."),
                    p("unfurl_links", "boolean", "Show previews of links in the message."),
                ],
                2,
            ),
            move |args| {
                posted.lock().unwrap().push(args["text"].as_str().unwrap_or_default().to_owned());
                Ok(json!({ "ok": true, "channel": "C024BE91L", "ts": "1718031254.000200" }))
            },
        ))
        .unwrap();
    let mut queues: Vec<_> = SERVICES
        .iter()
        .map(|service| {
            VERBS
                .iter()
                .flat_map(move |verb| {
                    service.resources.iter().map(move |resource| generated_tool(service, resource, verb))
                })
                .filter(|tool| tool.name() != "github.search_issues")
        })
        .collect();
    'fill: loop {
        for queue in &mut queues {
            if registry.iter().count() == n {
                break 'fill;
            }
            registry.register(queue.next().expect("enough synthetic tools")).unwrap();
        }
    }
    registry
}

fn generated_tool(service: &Service, resource: &Resource, verb: &str) -> Tool {
    let (product, res, plural) = (service.product, resource.name.replace('_', " "), resource.plural.replace('_', " "));
    let scope_words = service.scope.0.replace('_', " ");
    let limit = p("limit", "integer", "Maximum number of items to return, 1 to 100 (default 25).");
    let (name, description, params, required): (String, String, Vec<Param>, usize) = match verb {
        "search" => (
            format!("search_{}", resource.plural),
            format!(
                "Search {plural} in {product} with a full-text query. Returns up to `limit` matches ranked by \
                 relevance, each with its ID, a short highlighted snippet and a link to open it."
            ),
            vec![p("query", "string", "Words to search for; quoted phrases match exactly."), service.scope, limit],
            1,
        ),
        "list" => (
            format!("list_{}", resource.plural),
            format!(
                "List the {plural} in {product} for the given {scope_words}, most recently updated first. Results \
                 are paginated: pass the returned next_cursor to get the following page. Each item has its ID, \
                 name and timestamps; use get_{} for every field.",
                resource.name
            ),
            vec![
                service.scope,
                p("updated_since", "string", "Only items changed after this ISO 8601 timestamp."),
                limit,
                p("cursor", "string", "The next_cursor of a previous response, to fetch the following page."),
            ],
            1,
        ),
        "get" => (
            format!("get_{}", resource.name),
            format!(
                "Get one {res} from {product} by its ID, with all of its fields, including timestamps, author and \
                 URL. Fails with not_found when the {res} does not exist or the token cannot see it."
            ),
            vec![service.scope, resource.id, p("fields", "array", "Fields to return; every field when omitted.")],
            2,
        ),
        "create" => (
            format!("create_{}", resource.name),
            format!(
                "Create a new {res} in {product}. Requires write access to the {scope_words}. Returns the created \
                 {res} with its ID and URL."
            ),
            vec![service.scope, resource.fields[0], resource.fields[1], resource.fields[2]],
            2,
        ),
        "update" => (
            format!("update_{}", resource.name),
            format!(
                "Update an existing {res} in {product}. Only the fields given are changed; omitted fields keep \
                 their current values. Returns the updated {res}."
            ),
            vec![service.scope, resource.id, resource.fields[0], resource.fields[1], resource.fields[2]],
            2,
        ),
        _ => (
            format!("delete_{}", resource.name),
            format!(
                "Permanently delete a {res} from {product}. This cannot be undone, so `confirm` must be true. \
                 Returns the ID of the deleted {res}."
            ),
            vec![
                service.scope,
                resource.id,
                p("confirm", "boolean", "Must be true; guards against accidental deletion."),
            ],
            3,
        ),
    };
    Tool::new(format!("{}.{name}", service.namespace), description, schema(&params, required), |_| {
        Ok(json!({ "ok": true }))
    })
}

/// A JSON schema with `params` as properties, the first `required` of them required.
fn schema(params: &[Param], required: usize) -> Value {
    let mut properties = JsonObject::new();
    for (name, kind, description) in params {
        let mut property = json!({ "type": kind, "description": description });
        if *kind == "array" {
            property["items"] = json!({ "type": "string" });
        }
        properties.insert((*name).to_owned(), property);
    }
    let required: Vec<&str> = params.iter().take(required).map(|(name, _, _)| *name).collect();
    json!({ "type": "object", "properties": properties, "required": required })
}

/// What `github.search_issues` answers: 20 open bugs, shaped like a trimmed GitHub search response.
fn canned_issues() -> Value {
    const TITLES: [&str; 20] = [
        "Login fails with 500 when the password contains a non-ASCII character",
        "Pagination cursor skips the last item on /v2/orders",
        "Webhook retries do not back off after a 429",
        "Race in session refresh logs users out on two tabs",
        "CSV export truncates fields longer than 32 KB",
        "Rate limiter counts OPTIONS preflight requests",
        "Timezone offset ignored in scheduled report emails",
        "Memory grows unbounded when a client never reads the SSE stream",
        "Search returns archived projects despite the filter",
        "Invoice PDF shows the wrong currency symbol for CHF",
        "OAuth callback rejects redirect URIs with a trailing slash",
        "Bulk delete reports success when some rows are locked",
        "gRPC health check reports SERVING during migrations",
        "Audit log misses role changes made through the API",
        "Upload progress bar stalls at 99% for files over 2 GB",
        "Retry-After header is in milliseconds instead of seconds",
        "Password reset link expires immediately for users in UTC+13",
        "Dark mode: modal text is unreadable on Safari 17",
        "Null pointer in the billing worker when a coupon is deleted",
        "Duplicate notifications after reconnecting the websocket",
    ];
    const ASSIGNEES: [Option<&str>; 6] =
        [Some("mchen"), Some("priya-r"), Some("dkowalski"), Some("mchen"), None, Some("sofia-l")];
    const AREAS: [&str; 5] = ["api", "auth", "billing", "frontend", "infra"];
    let items: Vec<Value> = TITLES
        .iter()
        .enumerate()
        .map(|(i, title)| {
            let number = 4812 - 17 * i;
            let mut labels = vec!["bug", AREAS[i % AREAS.len()]];
            if i % 4 == 0 {
                labels.push("p1");
            }
            json!({
                "number": number,
                "title": title,
                "state": "open",
                "labels": labels,
                "assignee": ASSIGNEES[(i * 7) % ASSIGNEES.len()],
                "url": format!("https://github.com/acme/api/issues/{number}"),
                "comments": (i * 5) % 9,
                "created_at": format!("2025-0{}-{:02}T{:02}:14:07Z", 1 + i % 6, 1 + (i * 3) % 28, 8 + i % 10),
                "body": format!(
                    "### Steps to reproduce\n1. {title}.\n2. Observed on production (eu-west-1) since the {} deploy.\n\n\
                     ### Expected\nThe request succeeds and the response matches the API reference.\n\n### Actual\n\
                     See the attached trace; the error rate is about {}% of affected requests…",
                    ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"][i % 5],
                    2 + i % 7
                ),
            })
        })
        .collect();
    json!({ "total_count": items.len(), "incomplete_results": false, "items": items })
}
