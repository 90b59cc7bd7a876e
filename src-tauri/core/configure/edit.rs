//! The Serena entries of one MCP client config file, found with their byte spans, and the edits
//! that wrap them in `serena-tray launch` or unwrap them again. Every edit is a splice of the
//! original text: the entry's `command` value is replaced and tokens are inserted at the front of
//! (or removed from the front of) its `args`, so every other byte of the file (other servers,
//! `env`, key order, indentation, comments) stays as it was. JSON and JSON with comments are
//! read with `jsonc-parser`'s AST, TOML with `toml_edit`'s spans; the splices are the same.

use std::ops::Range;

/// Where a file keeps its servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// JSON: a top-level `mcpServers` object (Claude Desktop, Cursor, Windsurf, `.mcp.json`).
    McpServers,
    /// JSON: `mcpServers`, and `projects.<path>.mcpServers` (Claude Code's `~/.claude.json`).
    ClaudeJson,
    /// JSON with comments: a top-level `servers` object (VS Code).
    Servers,
    /// TOML: `[mcp_servers.<name>]` tables (Codex).
    CodexToml,
}

/// A stdio server entry whose command and arguments are all plain strings.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The server's name, and where it sits (`mcpServers`, `projects./p.mcpServers`, ...).
    pub name: String,
    pub location: String,
    /// `command` then `args`.
    pub argv: Vec<String>,
    command: Range<usize>,
    /// The `args` array (its span and its elements'), if there is one.
    args: Option<(Range<usize>, Vec<Range<usize>>)>,
    /// Where an `args` property goes when there is none, and the text before it.
    args_insert_at: usize,
    args_insert_sep: String,
    toml: bool,
}

/// A file that does not parse: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ParseFailure {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// The stdio entries of `text` (entries with a `url`, or non-string arguments, are not
/// listed: nothing of them is touched).
pub fn entries(text: &str, layout: Layout) -> Result<Vec<Entry>, ParseFailure> {
    match layout {
        Layout::CodexToml => toml_entries(text),
        _ => json_entries(text, layout),
    }
}

fn json_entries(text: &str, layout: Layout) -> Result<Vec<Entry>, ParseFailure> {
    use jsonc_parser::ast::Value;
    let parsed = jsonc_parser::parse_to_ast(text, &Default::default(), &Default::default())
        .map_err(|e| ParseFailure {
            line: e.line_display(),
            column: e.column_display(),
            message: e.kind().to_string(),
        })?;
    let Some(Value::Object(root)) = parsed.value else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let top = if layout == Layout::Servers {
        "servers"
    } else {
        "mcpServers"
    };
    if let Some(o) = root.get_object(top) {
        out.extend(json_servers(text, o, top));
    }
    if layout == Layout::ClaudeJson {
        if let Some(projects) = root.get_object("projects") {
            for p in &projects.properties {
                if let Value::Object(project) = &p.value {
                    if let Some(o) = project.get_object("mcpServers") {
                        let location = format!("projects.{}.mcpServers", p.name.as_str());
                        out.extend(json_servers(text, o, &location));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The stdio servers of one JSON servers object (at `location`); an HTTP one (`url`), one
/// without a command or with arguments that are not all strings is left out.
fn json_servers(text: &str, object: &jsonc_parser::ast::Object, location: &str) -> Vec<Entry> {
    use jsonc_parser::ast::Value;
    use jsonc_parser::common::Ranged;
    let mut out = Vec::new();
    for prop in &object.properties {
        let Value::Object(entry) = &prop.value else {
            continue;
        };
        if entry.get("url").is_some() {
            continue;
        }
        let Some(command) = entry.get_string("command") else {
            continue;
        };
        let mut argv = vec![command.value.to_string()];
        let args = match entry.get("args").map(|p| &p.value) {
            None => None,
            Some(Value::Array(a)) => {
                let strings: Option<Vec<&str>> = a
                    .elements
                    .iter()
                    .map(|v| v.as_string_lit().map(|s| s.value.as_ref()))
                    .collect();
                let Some(strings) = strings else { continue };
                argv.extend(strings.into_iter().map(str::to_owned));
                Some((
                    a.range.start..a.range.end,
                    a.elements.iter().map(|v| v.start()..v.end()).collect(),
                ))
            }
            Some(_) => continue,
        };
        let (args_insert_at, between) = args_insertion(text, &entry.properties);
        out.push(Entry {
            name: prop.name.as_str().to_owned(),
            location: location.to_owned(),
            argv,
            command: command.range.start..command.range.end,
            args,
            args_insert_at,
            args_insert_sep: between.to_owned(),
            toml: false,
        });
    }
    out
}

/// Where an `args` property would go (after `command`) and the text between this property and
/// its neighbour (a comma and the indentation), so that an inserted `args` looks like the
/// others.
fn args_insertion<'t>(text: &'t str, props: &[jsonc_parser::ast::ObjectProp]) -> (usize, &'t str) {
    let at = props
        .iter()
        .position(|p| p.name.as_str() == "command")
        .unwrap_or(0);
    let command_end = props[at].range.end;
    let between = props
        .get(at + 1)
        .map(|next| &text[command_end..next.range.start])
        .or_else(|| {
            at.checked_sub(1)
                .map(|p| &text[props[p].range.end..props[at].range.start])
        })
        .filter(|s| s.trim() == "," && !s.is_empty())
        .unwrap_or(", ");
    (command_end, between)
}

fn toml_entries(text: &str) -> Result<Vec<Entry>, ParseFailure> {
    let doc = toml_edit::Document::parse(text).map_err(|e| {
        let at = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
        let before = &text[..at];
        ParseFailure {
            line: before.matches('\n').count() + 1,
            column: before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1,
            message: e.message().to_owned(),
        }
    })?;
    let mut out = Vec::new();
    let Some(servers) = doc
        .as_table()
        .get("mcp_servers")
        .and_then(|s| s.as_table_like())
    else {
        return Ok(out);
    };
    for (name, item) in servers.iter() {
        let Some(entry) = item.as_table_like() else {
            continue;
        };
        if entry.contains_key("url") {
            continue;
        }
        let Some(command) = entry.get("command").and_then(|c| c.as_value()) else {
            continue;
        };
        let (Some(cmd), Some(cmd_span)) = (command.as_str(), command.span()) else {
            continue;
        };
        let mut argv = vec![cmd.to_owned()];
        let args = match entry.get("args") {
            None => None,
            Some(a) => {
                let Some(array) = a.as_array() else { continue };
                let strings: Option<Vec<&str>> = array.iter().map(|v| v.as_str()).collect();
                let spans: Option<Vec<Range<usize>>> = array.iter().map(|v| v.span()).collect();
                let (Some(strings), Some(spans), Some(span)) = (strings, spans, array.span())
                else {
                    continue;
                };
                argv.extend(strings.into_iter().map(str::to_owned));
                Some((span, spans))
            }
        };
        let inline = item.is_inline_table() || item.as_value().is_some();
        out.push(Entry {
            name: name.to_owned(),
            location: "mcp_servers".to_owned(),
            argv,
            command: cmd_span.clone(),
            args,
            args_insert_at: cmd_span.end,
            args_insert_sep: if inline { ", " } else { "\n" }.to_owned(),
            toml: true,
        });
    }
    Ok(out)
}

/// A string as the file's syntax writes it.
fn quote(s: &str, toml: bool) -> String {
    if toml {
        toml_edit::Value::from(s).to_string().trim().to_owned()
    } else {
        serde_json::Value::from(s).to_string()
    }
}

fn splice(text: &str, mut edits: Vec<(Range<usize>, String)>) -> String {
    edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
    let mut out = text.to_owned();
    for (range, with) in edits {
        out.replace_range(range, &with);
    }
    out
}

/// The edits that make `entry` run `command prefix... <its command and arguments>`: the
/// command replaced, `prefix` and the old command inserted at the front of `args` (written
/// as its elements are separated), or an `args` made where there was none.
fn wrap_edits(
    text: &str,
    entry: &Entry,
    command: &str,
    prefix: &[String],
) -> Vec<(Range<usize>, String)> {
    let toml = entry.toml;
    let mut tokens: Vec<String> = prefix.iter().map(|t| quote(t, toml)).collect();
    tokens.push(quote(&entry.argv[0], toml));
    let mut edits = vec![(entry.command.clone(), quote(command, toml))];
    match &entry.args {
        Some((array, elements)) if !elements.is_empty() => {
            let first = &elements[0];
            let sep = match elements.get(1) {
                Some(second) => text[first.end..second.start].to_owned(),
                None => {
                    let lead = &text[array.start + 1..first.start];
                    if lead.contains('\n') {
                        format!(",{lead}")
                    } else {
                        ", ".to_owned()
                    }
                }
            };
            let sep = if sep.contains("//") || sep.contains("/*") || sep.contains('#') {
                ", ".to_owned()
            } else {
                sep
            };
            let inserted: String = tokens.iter().map(|t| format!("{t}{sep}")).collect();
            edits.push((first.start..first.start, inserted));
        }
        Some((array, _)) => {
            // Right after `[`, what was inside (its blank lines) kept after them.
            edits.push((array.start + 1..array.start + 1, tokens.join(", ")));
        }
        None => {
            let property = if toml {
                format!("{}args = [{}]", entry.args_insert_sep, tokens.join(", "))
            } else {
                format!("{}\"args\": [{}]", entry.args_insert_sep, tokens.join(", "))
            };
            edits.push((entry.args_insert_at..entry.args_insert_at, property));
        }
    }
    edits
}

/// `text` with each entry of `wraps` (entry, the new command, the prefix) wrapped.
pub fn wrap(text: &str, wraps: &[(&Entry, &str, &[String])]) -> String {
    let edits = wraps
        .iter()
        .flat_map(|(e, command, prefix)| wrap_edits(text, e, command, prefix))
        .collect();
    splice(text, edits)
}

/// The position of the wrapped command in a wrapped entry's `args` (after `launch ... --`).
pub fn wrapped_at(entry: &Entry) -> Option<usize> {
    let args = &entry.argv[1..];
    (args.first()? == "launch")
        .then(|| args.iter().position(|a| a == "--"))
        .flatten()
        .map(|dash| dash + 1)
        .filter(|at| *at < args.len())
}

/// The text with `entry` (a wrapped one) unwrapped: its command back, the inserted tokens gone.
/// Of the two ways back (only the tokens removed, or the whole `args` when wrapping made it),
/// the one that wrapping would turn into `text` again, so that a file nothing else changed in
/// comes back byte for byte.
pub fn unwrap_one(text: &str, layout: Layout, entry: &Entry) -> Option<String> {
    let at = wrapped_at(entry)?;
    let (array, elements) = entry.args.as_ref()?;
    let old_command = &entry.argv[1 + at];
    let command_edit = (entry.command.clone(), quote(old_command, entry.toml));
    let removed = if at + 1 < elements.len() {
        elements[0].start..elements[at + 1].start
    } else {
        elements[0].start..elements[at].end
    };
    let mut candidates = vec![splice(
        text,
        vec![command_edit.clone(), (removed, String::new())],
    )];
    if at + 1 == elements.len() && entry.args_insert_at <= array.start {
        // `args` held only what wrapping put there, right after `command`: perhaps wrapping
        // made it.
        let whole = entry.args_insert_at..array.end;
        let between = &text[whole.clone()];
        if !between[..between.find("args").unwrap_or(0)].contains(['/', '#']) {
            candidates.insert(0, splice(text, vec![command_edit, (whole, String::new())]));
        }
    }
    let prefix: Vec<String> = entry.argv[1..1 + at].to_vec();
    for c in &candidates {
        let Ok(back) = entries(c, layout) else {
            continue;
        };
        let found = back
            .iter()
            .find(|e| e.name == entry.name && e.location == entry.location);
        if found.is_some_and(|e| wrap(c, &[(e, &entry.argv[0], &prefix)]) == text) {
            return Some(c.clone());
        }
    }
    candidates.pop()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn wrap_all(text: &str, layout: Layout, prefix: &[String]) -> String {
        let found = entries(text, layout).expect("parses");
        let wraps: Vec<(&Entry, &str, &[String])> = found
            .iter()
            .map(|e| (e, "/usr/bin/serena-tray", prefix))
            .collect();
        wrap(text, &wraps)
    }

    fn unwrap_all(mut text: String, layout: Layout) -> String {
        loop {
            let found = entries(&text, layout).expect("parses");
            let Some(e) = found.iter().find(|e| wrapped_at(e).is_some()) else {
                return text;
            };
            text = unwrap_one(&text, layout, e).expect("unwraps");
        }
    }

    fn prefix() -> Vec<String> {
        ["launch", "--share", "--"].map(String::from).to_vec()
    }

    #[test]
    fn entries_with_a_url_or_non_string_arguments_are_not_touched() {
        let text = r#"{"mcpServers": {"a": {"url": "http://x", "command": "serena"},
            "b": {"command": "serena", "args": ["start-mcp-server", 3]},
            "c": {"command": "serena", "args": ["start-mcp-server"]}}}"#;
        let found = entries(text, Layout::McpServers).expect("parses");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "c");
        assert_eq!(found[0].argv, ["serena", "start-mcp-server"]);
    }

    #[test]
    fn a_wrapped_entry_reads_back_as_launch_of_the_old_command() {
        let text = "[mcp_servers.s]\ncommand = \"serena\"\nargs = ['start-mcp-server']\n";
        let wrapped = wrap_all(text, Layout::CodexToml, &prefix());
        let e = &entries(&wrapped, Layout::CodexToml).expect("parses")[0];
        assert_eq!(
            e.argv,
            [
                "/usr/bin/serena-tray",
                "launch",
                "--share",
                "--",
                "serena",
                "start-mcp-server"
            ]
        );
        assert_eq!(wrapped_at(e), Some(3));
        assert_eq!(unwrap_all(wrapped, Layout::CodexToml), text);
    }

    #[test]
    fn a_parse_error_names_its_line_and_column() {
        let e = entries(
            "{\n  \"mcpServers\": {\n    \"s\": [1,\n}",
            Layout::McpServers,
        )
        .expect_err("broken");
        assert_eq!(e.line, 4);
        let e = entries("a = 1\n[b\n", Layout::CodexToml).expect_err("broken");
        assert_eq!(e.line, 2);
    }

    /// A server entry in one of the shapes people write: args on one line, one per line, or
    /// none at all; `command` first or last. (An empty `args` wrapped looks like no `args`
    /// wrapped: `configure --undo` tells them apart by the backup.)
    fn json_entry() -> impl Strategy<Value = String> {
        let arg = "[a-z0-9./${}-]{1,12}";
        (
            prop::collection::vec(arg, 1..5),
            0..3usize,
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(args, shape, command_last, env)| {
                let quoted: Vec<String> = args
                    .iter()
                    .map(|a| serde_json::Value::from(a.as_str()).to_string())
                    .collect();
                let args = match shape {
                    0 => None,
                    1 => Some(format!("[{}]", quoted.join(", "))),
                    _ => Some(format!(
                        "[\n        {}\n      ]",
                        quoted.join(",\n        ")
                    )),
                };
                let mut props = vec![r#""command": "serena""#.to_owned()];
                if let Some(a) = args {
                    props.push(format!(r#""args": {a}"#));
                }
                if env {
                    props.push(r#""env": {"K": "v"}"#.to_owned());
                }
                if command_last {
                    props.rotate_left(1);
                }
                format!("{{\n      {}\n    }}", props.join(",\n      "))
            })
    }

    proptest! {
        #[test]
        fn unwrapping_gives_back_the_bytes_wrapping_started_from(
            a in json_entry(), b in json_entry(), trailing in any::<bool>()
        ) {
            let comma = if trailing { "," } else { "" };
            let text = format!(
                "{{\n  // servers\n  \"servers\": {{\n    \"one\": {a},\n    \"two\": {b}{comma}\n  }}\n}}\n"
            );
            let wrapped = wrap_all(&text, Layout::Servers, &prefix());
            let found = entries(&wrapped, Layout::Servers).expect("wrapped text parses");
            prop_assert_eq!(found.len(), 2);
            for e in &found {
                prop_assert_eq!(&e.argv[..4], &["/usr/bin/serena-tray", "launch", "--share", "--"]);
                prop_assert_eq!(&e.argv[4], "serena");
            }
            prop_assert_eq!(unwrap_all(wrapped, Layout::Servers), text);
        }
    }
}
