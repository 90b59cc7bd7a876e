//! Recognising a Serena MCP server from its command line, and reading the options that matter
//! (`--project`, `--context`, `--mode`, `--transport`, `--port`). Pure string work, no I/O.
//!
//! Forms recognised (argv as the OS reports it):
//! - `serena start-mcp-server ...`, `serena-agent start-mcp-server ...` (a console script; on
//!   Unix argv is `python /path/bin/serena start-mcp-server ...`, on Windows `serena.exe ...`);
//! - `python -m serena start-mcp-server ...` and `python -m serena.cli start-mcp-server ...`;
//! - the old `serena-mcp-server ...` script.
//!
//! Deliberately not recognised as a server: wrappers such as `uvx ... serena start-mcp-server`
//! or `serena-tray launch -- serena start-mcp-server`; the Python process they start is the
//! server. `serena-tray launch` is recognised as what it is ([`launcher_args`]): the parent
//! of an instance it started, whose own parent is the real MCP client.

use super::model::Transport;

/// Serena's default `--context`.
pub const DEFAULT_CONTEXT: &str = "desktop-app";
/// Serena's default `--port` for HTTP transports.
pub const DEFAULT_MCP_PORT: u16 = 8000;

/// What a Serena command line says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SerenaArgs {
    pub project: Option<String>,
    pub context: Option<String>,
    pub modes: Vec<String>,
    pub transport: Transport,
    /// The MCP port (HTTP transports only).
    pub mcp_port: Option<u16>,
}

fn basename(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

/// `serena`, `serena-agent`, `serena-mcp-server` with an optional `.exe`, `.py` or `-script.py`.
fn entry_name(token: &str) -> Option<&str> {
    let base = basename(token);
    let stem = base
        .strip_suffix("-script.py")
        .or_else(|| base.strip_suffix(".exe"))
        .or_else(|| base.strip_suffix(".py"))
        .unwrap_or(base);
    matches!(stem, "serena" | "serena-agent" | "serena-mcp-server").then_some(stem)
}

fn is_python(token: &str) -> bool {
    let base = basename(token).to_ascii_lowercase();
    let base = base.strip_suffix(".exe").unwrap_or(&base);
    let rest = match base.strip_prefix("python") {
        Some(r) => r,
        None => return false,
    };
    let rest = rest.strip_suffix('w').unwrap_or(rest);
    rest.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// Python interpreter options that take a separate argument.
const PY_OPTS_WITH_ARG: [&str; 3] = ["-X", "-W", "-Q"];

/// If argv is a Serena MCP server, the arguments after the subcommand.
pub fn serena_server_args(argv: &[String]) -> Option<&[String]> {
    let first = argv.first()?;
    let mut i = 0;
    let mut module = false;
    if is_python(first) {
        i = 1;
        while let Some(tok) = argv.get(i) {
            if tok == "-m" {
                let m = argv.get(i + 1)?;
                if m != "serena" && m != "serena.cli" {
                    return None;
                }
                module = true;
                i += 2;
                break;
            }
            if PY_OPTS_WITH_ARG.contains(&tok.as_str()) {
                i += 2;
            } else if tok.starts_with('-') {
                i += 1;
            } else {
                break;
            }
        }
    }
    let entry = if module {
        "serena"
    } else {
        let e = entry_name(argv.get(i)?)?;
        i += 1;
        e
    };
    let rest = argv.get(i..)?;
    if entry == "serena-mcp-server" {
        return Some(rest);
    }
    // `serena` has no global options: the subcommand comes first.
    match rest.split_first() {
        Some((sub, args)) if sub == "start-mcp-server" => Some(args),
        _ => None,
    }
}

/// What a `serena-tray launch` command line says about the instance it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LauncherArgs {
    /// `--idle-shutdown-minutes N` (0: never), if given.
    pub idle_shutdown: Option<std::time::Duration>,
}

/// If argv is `serena-tray [GLOBAL OPTIONS] launch [OPTIONS] -- CMD...`, its options.
pub fn launcher_args(argv: &[String]) -> Option<LauncherArgs> {
    let first = argv.first()?;
    let base = basename(first);
    if base.strip_suffix(".exe").unwrap_or(base) != "serena-tray" {
        return None;
    }
    // Only what comes before `--` is serena-tray's own; the verb is the first such token that
    // is not an option or an option's value (all of serena-tray's valued options take one).
    let own: Vec<&String> = argv[1..].iter().take_while(|a| *a != "--").collect();
    let mut i = 0;
    let mut verb_at = None;
    while let Some(tok) = own.get(i) {
        if tok.starts_with("--") {
            i += if tok.contains('=') || !takes_value(tok) {
                1
            } else {
                2
            };
        } else {
            verb_at = Some(i);
            break;
        }
    }
    if own.get(verb_at?).map(|v| v.as_str()) != Some("launch") {
        return None;
    }
    let mut out = LauncherArgs::default();
    let mut it = own.iter();
    while let Some(tok) = it.next() {
        let value = match tok.split_once('=') {
            Some(("--idle-shutdown-minutes", v)) => Some(v.to_string()),
            None if tok.as_str() == "--idle-shutdown-minutes" => it.next().map(|v| v.to_string()),
            _ => None,
        };
        if let Some(idle) = value
            .and_then(|v| v.parse().ok())
            .and_then(crate::core::settings::minutes)
        {
            out.idle_shutdown = Some(idle);
        }
    }
    Some(out)
}

/// serena-tray's options that take a separate value (the boolean ones take `=BOOL` only).
fn takes_value(option: &str) -> bool {
    matches!(
        option,
        "--serena-home"
            | "--zombie-grace"
            | "--port"
            | "--web-dashboard-global-port"
            | "--tray-protocol-port"
            | "--port-file"
            | "--idle-shutdown-minutes"
    )
}

/// Parses `start-mcp-server` options (both `--opt value` and `--opt=value`).
pub fn parse_server_args(args: &[String]) -> SerenaArgs {
    let mut out = SerenaArgs::default();
    let mut port = None;
    let mut it = args.iter().peekable();
    while let Some(tok) = it.next() {
        let (name, inline) = match tok.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (tok.as_str(), None),
        };
        let takes_value = matches!(
            name,
            "--project" | "--project-file" | "--context" | "--mode" | "--transport" | "--port"
        );
        if !takes_value {
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => match it.next() {
                Some(v) => v.clone(),
                None => break,
            },
        };
        match name {
            "--project" | "--project-file" => out.project = Some(value),
            "--context" => out.context = Some(value),
            "--mode" => out.modes.push(value),
            "--transport" => out.transport = Transport::parse(&value).unwrap_or_default(),
            "--port" => port = value.parse().ok(),
            _ => {}
        }
    }
    if out.transport != Transport::Stdio {
        out.mcp_port = Some(port.unwrap_or(DEFAULT_MCP_PORT));
    }
    out
}

/// Recognise and parse in one step.
pub fn parse(argv: &[String]) -> Option<SerenaArgs> {
    serena_server_args(argv).map(parse_server_args)
}

/// The project name Serena would show for a `--project` value given without a dashboard: the last
/// path component for a path, the value itself for a registered name.
pub fn project_name_from_arg(value: &str) -> String {
    let trimmed = value.trim_end_matches(['/', '\\']);
    let base = basename(trimmed);
    if base.is_empty() {
        value.to_string()
    } else {
        base.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_launch_wrapper_is_recognised_with_its_idle_option() {
        let argv = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        for (line, want) in [
            ("/usr/bin/serena-tray launch -- serena start-mcp-server", Some(None)),
            (
                "serena-tray --serena-home /h launch --idle-shutdown-minutes 30 -- serena start-mcp-server",
                Some(Some(30)),
            ),
            (
                "C:\\bin\\serena-tray.exe --port 26000 launch --idle-shutdown-minutes=5 --web-dashboard-global=false -- x",
                Some(Some(5)),
            ),
            // The server's own options are not the launcher's.
            ("serena-tray launch -- serena start-mcp-server --idle-shutdown-minutes 9", Some(None)),
            ("serena-tray daemon", None),
            ("serena-tray --serena-home launch daemon", None),
            ("serena-trayx launch -- serena", None),
            ("python -m serena start-mcp-server", None),
        ] {
            assert_eq!(
                launcher_args(&argv(line)).map(|l| l.idle_shutdown.map(|d| d.as_secs() / 60)),
                want,
                "{line}"
            );
        }
    }

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn recognises_every_form() {
        for cmd in [
            "/home/u/.venv/bin/python3 /home/u/.venv/bin/serena start-mcp-server",
            "/usr/bin/python3.12 -u /opt/bin/serena-agent start-mcp-server --project /p",
            "python -m serena start-mcp-server",
            "python3 -X utf8 -m serena.cli start-mcp-server --context ide",
            "/x/bin/serena-mcp-server --project p",
            "C:\\venv\\Scripts\\serena.exe start-mcp-server",
            "C:\\Python312\\pythonw.exe C:\\venv\\Scripts\\serena-script.py start-mcp-server",
        ] {
            assert!(serena_server_args(&v(cmd)).is_some(), "{cmd}");
        }
    }

    #[test]
    fn ignores_look_alikes() {
        for cmd in [
            "uvx --from git+https://x/serena serena start-mcp-server",
            "serena-tray launch -- serena start-mcp-server",
            "grep serena start-mcp-server",
            "python3 -m http.server 8000",
            "python3 /x/bin/serena project create .",
            "serena project index start-mcp-server",
            "python3 -m pip install serena",
            "/bin/sh -c serena start-mcp-server",
            "vim serena.py",
        ] {
            assert!(serena_server_args(&v(cmd)).is_none(), "{cmd}");
        }
        assert!(serena_server_args(&[]).is_none());
    }

    #[test]
    fn parses_options() {
        let a = parse(&v(
            "python3 /b/serena start-mcp-server --project=/w/demo --context ide --mode a --mode=b --transport streamable-http --port 9123",
        ))
        .unwrap_or_default();
        assert_eq!(a.project.as_deref(), Some("/w/demo"));
        assert_eq!(a.context.as_deref(), Some("ide"));
        assert_eq!(a.modes, vec!["a", "b"]);
        assert_eq!(a.transport, Transport::StreamableHttp);
        assert_eq!(a.mcp_port, Some(9123));

        let b = parse(&v("python3 /b/serena start-mcp-server --transport sse")).unwrap_or_default();
        assert_eq!(b.mcp_port, Some(DEFAULT_MCP_PORT));
        let c = parse(&v("python3 /b/serena start-mcp-server --port 9")).unwrap_or_default();
        assert_eq!((c.transport, c.mcp_port), (Transport::Stdio, None));
        // A trailing option without its value is not a crash.
        let d = parse(&v("python3 /b/serena start-mcp-server --project")).unwrap_or_default();
        assert_eq!(d.project, None);
    }

    #[test]
    fn project_names() {
        assert_eq!(project_name_from_arg("/w/demo/"), "demo");
        assert_eq!(project_name_from_arg("C:\\w\\demo"), "demo");
        assert_eq!(project_name_from_arg("demo"), "demo");
    }
}
