//! `serena-tray configure` on configs written the way each MCP client documents them (each with a
//! second, non-Serena server; VS Code's with comments and trailing commas): the dry run shows a
//! diff and changes nothing, `--apply` changes only the Serena entry's command and arguments,
//! a second run changes nothing, `--undo` gives back the original bytes; a file that does not
//! parse is reported with its line and left alone. And a config rewritten by it is read by
//! Claude Code's own CLI, which connects to the wrapped Serena.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A client's config as its documentation shows it: where it goes (under the home, or under the
/// project), its text, and the lines of it that wrapping must change (and no other).
struct Fixture {
    under_home: bool,
    path: &'static str,
    text: &'static str,
    changed: &'static [&'static str],
}

const FIXTURES: &[Fixture] = &[
    Fixture {
        under_home: true,
        path: ".claude.json",
        text: r#"{
  "numStartups": 12,
  "mcpServers": {
    "serena": {
      "type": "stdio",
      "command": "uvx",
      "args": ["--from", "git+https://github.com/oraios/serena", "serena", "start-mcp-server", "--context", "claude-code"],
      "env": {}
    },
    "github": {
      "type": "stdio",
      "command": "npx",
      "args": ["-y", "@modelcontextprotocol/server-github"]
    }
  },
  "projects": {
    "/work/webapp": {
      "allowedTools": [],
      "mcpServers": {
        "serena": {
          "command": "serena",
          "args": [
            "start-mcp-server",
            "--project",
            "/work/webapp"
          ]
        }
      }
    }
  }
}
"#,
        changed: &[
            r#"      "command": "uvx","#,
            r#"      "args": ["--from", "git+https://github.com/oraios/serena", "serena", "start-mcp-server", "--context", "claude-code"],"#,
            r#"          "command": "serena","#,
        ],
    },
    Fixture {
        under_home: false,
        path: ".mcp.json",
        text: r#"{
  "mcpServers": {
    "serena": {
      "command": "serena",
      "args": ["start-mcp-server", "--context", "claude-code", "--project", "."]
    },
    "fetch": {
      "command": "uvx",
      "args": ["mcp-server-fetch"]
    }
  }
}
"#,
        changed: &[
            r#"      "command": "serena","#,
            r#"      "args": ["start-mcp-server", "--context", "claude-code", "--project", "."]"#,
        ],
    },
    Fixture {
        under_home: true,
        path: ".config/Claude/claude_desktop_config.json",
        text: r#"{
  "mcpServers": {
    "filesystem": {
      "command": "npx",
      "args": ["-y", "@modelcontextprotocol/server-filesystem", "/home/me/Desktop"]
    },
    "serena": {
      "command": "/home/me/.local/bin/python3",
      "args": ["-m", "serena", "start-mcp-server"]
    }
  },
  "globalShortcut": ""
}
"#,
        changed: &[
            r#"      "command": "/home/me/.local/bin/python3","#,
            r#"      "args": ["-m", "serena", "start-mcp-server"]"#,
        ],
    },
    Fixture {
        under_home: true,
        path: ".cursor/mcp.json",
        text: r#"{"mcpServers": {"serena": {"command": "serena-mcp-server"}, "linear": {"url": "https://mcp.linear.app/sse"}}}
"#,
        changed: &[
            r#"{"mcpServers": {"serena": {"command": "serena-mcp-server"}, "linear": {"url": "https://mcp.linear.app/sse"}}}"#,
        ],
    },
    Fixture {
        under_home: false,
        path: ".cursor/mcp.json",
        text: r#"{
  "mcpServers": {
    "serena": {
      "command": "uv",
      "args": ["run", "--directory", "/opt/serena", "serena", "start-mcp-server", "--context", "ide"],
      "env": {"SERENA_LOG_LEVEL": "info"}
    },
    "postgres": {
      "command": "npx",
      "args": ["-y", "@modelcontextprotocol/server-postgres", "postgresql://localhost/db"]
    }
  }
}
"#,
        changed: &[
            r#"      "command": "uv","#,
            r#"      "args": ["run", "--directory", "/opt/serena", "serena", "start-mcp-server", "--context", "ide"],"#,
        ],
    },
    Fixture {
        under_home: false,
        path: ".vscode/mcp.json",
        text: r#"{
  // Servers for this workspace (see https://code.visualstudio.com/docs/copilot/chat/mcp-servers)
  "inputs": [],
  "servers": {
    /* Semantic code tools */
    "serena": {
      "type": "stdio",
      "command": "serena", // from pipx
      "args": [
        "start-mcp-server",
        "--context",
        "ide",
        "--project",
        "${workspaceFolder}", // this workspace
      ],
    },
    "memory": {
      "command": "npx",
      "args": ["-y", "@modelcontextprotocol/server-memory"],
    },
  },
}
"#,
        changed: &[r#"      "command": "serena", // from pipx"#],
    },
    Fixture {
        under_home: true,
        path: ".config/Code/User/mcp.json",
        text: r#"{
	"servers": {
		"serena": {
			"type": "stdio",
			"command": "uvx",
			"args": ["--from", "git+https://github.com/oraios/serena", "serena", "start-mcp-server", "--context", "ide"]
		}
	}
}
"#,
        changed: &[
            "\t\t\t\"command\": \"uvx\",",
            "\t\t\t\"args\": [\"--from\", \"git+https://github.com/oraios/serena\", \"serena\", \"start-mcp-server\", \"--context\", \"ide\"]",
        ],
    },
    Fixture {
        under_home: true,
        path: ".codex/config.toml",
        text: r#"model = "gpt-5-codex"

# Semantic code tools
[mcp_servers.serena]
command = "uvx"
args = ["--from", "git+https://github.com/oraios/serena", "serena", "start-mcp-server", "--context", "codex"]
startup_timeout_sec = 30

[mcp_servers.context7]
command = "npx"
args = ["-y", "@upstash/context7-mcp"]
env = { "CONTEXT7_API_KEY" = "secret" }
"#,
        changed: &[
            r#"command = "uvx""#,
            r#"args = ["--from", "git+https://github.com/oraios/serena", "serena", "start-mcp-server", "--context", "codex"]"#,
        ],
    },
    Fixture {
        under_home: true,
        path: ".codeium/windsurf/mcp_config.json",
        text: r#"{
    "mcpServers": {
        "serena": {
            "command": "serena",
            "args": ["start-mcp-server", "--context", "ide"],
            "disabled": false
        },
        "brave-search": {
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-brave-search"],
            "env": {"BRAVE_API_KEY": "key"}
        }
    }
}
"#,
        changed: &[
            r#"            "command": "serena","#,
            r#"            "args": ["start-mcp-server", "--context", "ide"],"#,
        ],
    },
];

/// A home and a project holding the configs, and a `serena-tray` on PATH (this build's).
struct Setup {
    home: Home,
    project: PathBuf,
    shim: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let home = Home::new();
        let project = home.path().join("project");
        std::fs::create_dir_all(&project).expect("project");
        let bin = home.path().join("bin");
        std::fs::create_dir_all(&bin).expect("bin");
        let shim = bin.join("serena-tray");
        std::os::unix::fs::symlink(tray_exe(), &shim).expect("symlink");
        Setup {
            home,
            project,
            shim,
        }
    }

    fn path(&self, f: &Fixture) -> PathBuf {
        if f.under_home {
            self.home.path().join(f.path)
        } else {
            self.project.join(f.path)
        }
    }

    fn write(&self, f: &Fixture) -> PathBuf {
        let p = self.path(f);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, f.text).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        p
    }

    fn configure(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(tray_exe());
        self.home.env(&mut cmd);
        let path = std::env::join_paths(
            std::iter::once(self.shim.parent().expect("bin").to_owned()).chain(
                std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
            ),
        )
        .expect("PATH");
        cmd.env("PATH", path)
            .env_remove("CODEX_HOME")
            .current_dir(&self.project)
            .arg("configure")
            .args(args)
            .output()
            .expect("serena-tray configure")
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn backups(path: &Path) -> Vec<PathBuf> {
    let name = path
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let mut found: Vec<PathBuf> = std::fs::read_dir(path.parent().expect("dir"))
        .expect("read_dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy()
                    .starts_with(&format!("{name}.serena-tray-backup-"))
            })
        })
        .collect();
    found.sort();
    found
}

/// The lines of `old` that are not in `new` (as a line diff sees it).
fn removed_lines(old: &str, new: &str) -> Vec<String> {
    similar::TextDiff::from_lines(old, new)
        .iter_all_changes()
        .filter(|c| c.tag() == similar::ChangeTag::Delete)
        .map(|c| c.value().trim_end_matches('\n').to_owned())
        .collect()
}

#[test]
fn every_clients_serena_entry_is_wrapped_alone_once_and_unwrapped_byte_for_byte() {
    let s = Setup::new();
    let paths: Vec<PathBuf> = FIXTURES.iter().map(|f| s.write(f)).collect();
    let shim = s.shim.display().to_string();

    // The dry run: a diff per file, nothing written.
    let dry = s.configure(&[]);
    assert!(dry.status.success(), "{dry:?}");
    let said = stdout(&dry);
    for (f, p) in FIXTURES.iter().zip(&paths) {
        assert!(
            said.contains(&format!("--- {}", p.display())),
            "{}:\n{said}",
            f.path
        );
        assert_eq!(
            std::fs::read_to_string(p).expect("read"),
            f.text,
            "{}",
            f.path
        );
        assert!(backups(p).is_empty(), "{}", f.path);
    }
    assert!(
        said.contains(&format!("+      \"command\": \"{shim}\"")),
        "{said}"
    );
    assert!(said.contains("Nothing was changed"), "{said}");

    // --apply: exactly the Serena entries' lines change, into a `launch` of the old command.
    let applied = s.configure(&["--apply", "--web-dashboard-global=false"]);
    assert!(applied.status.success(), "{applied:?}");
    let mut wrapped = Vec::new();
    for (f, p) in FIXTURES.iter().zip(&paths) {
        let new = std::fs::read_to_string(p).expect("read");
        assert_eq!(removed_lines(f.text, &new), f.changed, "{}:\n{new}", f.path);
        assert!(new.contains(&shim), "{}:\n{new}", f.path);
        assert!(
            new.contains("\"--web-dashboard-global=false\""),
            "{}:\n{new}",
            f.path
        );
        let mode = std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{}: the file keeps its permissions", f.path);
        let b = backups(p);
        assert_eq!(b.len(), 1, "{}", f.path);
        assert_eq!(
            std::fs::read_to_string(&b[0]).expect("backup"),
            f.text,
            "{}",
            f.path
        );
        wrapped.push(new);
    }
    // The non-Serena servers are untouched, the comments still there.
    let vscode = &wrapped[5];
    assert!(vscode.contains("// from pipx") && vscode.contains("/* Semantic code tools */"));
    assert!(
        vscode.contains("\"${workspaceFolder}\", // this workspace"),
        "{vscode}"
    );
    assert!(
        wrapped[7].contains("[mcp_servers.context7]\ncommand = \"npx\""),
        "{}",
        wrapped[7]
    );

    // Again: nothing to do, nothing written.
    let again = s.configure(&["--apply"]);
    assert!(again.status.success(), "{again:?}");
    assert!(
        stdout(&again).contains("Nothing to change"),
        "{}",
        stdout(&again)
    );
    for ((f, p), w) in FIXTURES.iter().zip(&paths).zip(&wrapped) {
        assert_eq!(&std::fs::read_to_string(p).expect("read"), w, "{}", f.path);
    }

    // `--json` says what is where.
    let listed = s.configure(&["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    let files = v.as_array().expect("array");
    assert_eq!(files.len(), FIXTURES.len(), "{v}");
    let claude = files
        .iter()
        .find(|f| f["client"] == "claude-code" && f["scope"] == "user")
        .expect("claude-code user");
    let statuses: Vec<&str> = claude["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["status"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses, ["launched", "launched"], "{claude}");

    // --undo: the original bytes.
    let undone = s.configure(&["--undo"]);
    assert!(undone.status.success(), "{undone:?}");
    for (f, p) in FIXTURES.iter().zip(&paths) {
        assert_eq!(
            std::fs::read_to_string(p).expect("read"),
            f.text,
            "{}",
            f.path
        );
    }
}

#[test]
fn a_file_that_does_not_parse_is_reported_with_its_line_and_left_alone() {
    let s = Setup::new();
    let broken_json = Fixture {
        under_home: true,
        path: ".cursor/mcp.json",
        text: "{\n  \"mcpServers\": {\n    \"serena\": {\"command\": \"serena\", \"args\": [\"start-mcp-server\"\n  }\n}\n",
        changed: &[],
    };
    let broken_toml = Fixture {
        under_home: true,
        path: ".codex/config.toml",
        text: "model = \"o3\"\n\n[mcp_servers.serena\ncommand = \"serena\"\n",
        changed: &[],
    };
    let good = &FIXTURES[1];
    let json_path = s.write(&broken_json);
    let toml_path = s.write(&broken_toml);
    let good_path = s.write(good);
    let out = s.configure(&["--apply"]);
    assert!(
        !out.status.success(),
        "a file left alone is a failure: {out:?}"
    );
    let said = stdout(&out);
    let line_of = |p: &Path| {
        let at = said
            .find(
                &p.display()
                    .to_string()
                    .replace(&*s.home.path().display().to_string(), "~"),
            )
            .unwrap_or_else(|| panic!("{} not in\n{said}", p.display()));
        said[at..].lines().nth(1).unwrap_or_default().to_owned()
    };
    let json_says = line_of(&json_path);
    assert!(
        json_says.contains("left alone: does not parse: line 4"),
        "{json_says}"
    );
    let toml_says = line_of(&toml_path);
    assert!(
        toml_says.contains("left alone: does not parse: line 3"),
        "{toml_says}"
    );
    assert_eq!(
        std::fs::read_to_string(&json_path).expect("read"),
        broken_json.text
    );
    assert_eq!(
        std::fs::read_to_string(&toml_path).expect("read"),
        broken_toml.text
    );
    assert!(backups(&json_path).is_empty() && backups(&toml_path).is_empty());
    // The good file next to them is done all the same.
    assert_ne!(
        std::fs::read_to_string(&good_path).expect("read"),
        good.text
    );

    // Unknown clients are refused; a client with no config is skipped quietly.
    let bad = s.configure(&["--client", "emacs"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("unknown client \"emacs\""),
        "{bad:?}"
    );
    let none = s.configure(&["--client", "windsurf"]);
    assert!(none.status.success(), "{none:?}");
    assert_eq!(stdout(&none), "No MCP client config found.\n");
}

/// Claude Code's CLI (the npm package the test command installs under `.test-env/`).
fn claude() -> PathBuf {
    let p = venv()
        .parent()
        .expect(".test-env")
        .join("claude-code/node_modules/.bin/claude");
    assert!(
        p.exists(),
        "{} is missing: `bash .ci/setup --test` installs Claude Code's CLI",
        p.display()
    );
    p
}

#[test]
fn claude_codes_own_cli_connects_to_the_serena_configure_wrapped() {
    let s = Setup::new();
    let serena = venv().join("bin/serena");
    let config = format!(
        r#"{{
  "mcpServers": {{
    "serena": {{
      "command": "{}",
      "args": ["start-mcp-server", "--context", "claude-code"]
    }}
  }}
}}
"#,
        serena.display()
    );
    let path = s.home.path().join(".claude.json");
    std::fs::write(&path, &config).expect("write");
    let out = s.configure(&[
        "--client",
        "claude-code",
        "--apply",
        "--web-dashboard-global=false",
    ]);
    assert!(out.status.success(), "{out:?}");
    let wrapped = std::fs::read_to_string(&path).expect("read");
    assert!(wrapped.contains("\"launch\""), "{wrapped}");

    let mut cmd = Command::new(claude());
    s.home.env(&mut cmd);
    let listed = cmd
        .args(["mcp", "list"])
        .current_dir(&s.project)
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .output()
        .expect("claude mcp list");
    let said = stdout(&listed);
    let line = said
        .lines()
        .find(|l| l.starts_with("serena:"))
        .unwrap_or_else(|| panic!("no serena in `claude mcp list`: {listed:?}"));
    assert!(
        line.contains(&format!("{} launch", s.shim.display())),
        "{line}"
    );
    assert!(line.contains("Connected"), "{line}");
}

#[test]
fn undo_after_other_edits_unwraps_the_entry_and_keeps_them_and_a_linked_config_is_written_through()
{
    let s = Setup::new();
    // A dotfile manager's link: the Claude Desktop config -> ~/dotfiles/claude.json.
    let f = &FIXTURES[2];
    let real = s.home.path().join("dotfiles/claude.json");
    std::fs::create_dir_all(real.parent().expect("dir")).expect("mkdir");
    std::fs::write(&real, f.text).expect("write");
    let link = s.path(f);
    std::fs::create_dir_all(link.parent().expect("dir")).expect("mkdir");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");

    let applied = s.configure(&["--apply"]);
    assert!(applied.status.success(), "{applied:?}");
    assert!(
        std::fs::symlink_metadata(&link).expect("link").is_symlink(),
        "still a link"
    );
    let wrapped = std::fs::read_to_string(&real).expect("the link's target");
    assert_ne!(wrapped, f.text);

    // The user edits the file afterwards: undo unwraps the entry and keeps the edit.
    let edited = wrapped.replace(
        "\"globalShortcut\": \"\"",
        "\"globalShortcut\": \"Ctrl+Space\"",
    );
    assert_ne!(edited, wrapped);
    std::fs::write(&real, &edited).expect("edit");
    let undone = s.configure(&["--undo"]);
    assert!(undone.status.success(), "{undone:?}");
    let back = std::fs::read_to_string(&real).expect("read");
    assert_eq!(
        back,
        f.text.replace(
            "\"globalShortcut\": \"\"",
            "\"globalShortcut\": \"Ctrl+Space\""
        )
    );
}
