//! The profiles a fresh install has. Every key can be overridden in config
//! (`[profiles.codex] stall_timeout_ms = 60000`) without restating the rest.

use std::collections::BTreeMap;
use stratavore_agent_protocols::ParserKind;

use crate::{ProfileSection, StallPolicy};

/// What every agent needs of the node's environment to run at all.
pub(crate) const BASE_ENV: &[&str] = &[
    "HOME", "PATH", "LANG", "LC_ALL", "USER", "LOGNAME", "TMPDIR", "TERM",
];

/// Proxies, which an agent needs wherever the node needs them.
const PROXY_ENV: &[&str] = &[
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "no_proxy",
];

/// Half an hour without a turn, an item or assistant text: long enough for a
/// tool that runs a whole test suite, short enough that an agent waiting
/// forever on a network it cannot reach does not hold a slot all day.
const DEFAULT_STALL_MS: u64 = 30 * 60 * 1000;

fn words(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn env(extra: &[&str]) -> Vec<String> {
    BASE_ENV
        .iter()
        .chain(PROXY_ENV)
        .chain(extra)
        .map(|s| (*s).to_owned())
        .collect()
}

/// Claude Code's command line (`claude -p`), which the demo agent speaks too.
fn claude_like(executable: &str) -> ProfileSection {
    let stream = ["--output-format", "stream-json", "--verbose"];
    let mut new_args = words(&["-p", "{prompt}"]);
    new_args.extend(words(&stream));
    let mut resume_args = new_args.clone();
    new_args.extend(words(&["--session-id", "{session}"]));
    resume_args.extend(words(&["--resume", "{session}"]));
    ProfileSection {
        executable: executable.to_owned(),
        parser: ParserKind::ClaudeStreamJson,
        new_args,
        resume_args,
        model_args: words(&["--model", "{model}"]),
        permission_args: words(&["--permission-mode", "{permission}"]),
        tools_args: words(&["--allowedTools", "{tools}"]),
        env_passthrough: env(&[
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_AUTH_TOKEN",
            "ANTHROPIC_BASE_URL",
            "CLAUDE_CODE_OAUTH_TOKEN",
            "CLAUDE_CONFIG_DIR",
        ]),
        models: words(&["sonnet", "opus", "haiku"]),
        default_model: None,
        // bypassPermissions is left out on purpose: an operator who wants an
        // agent unconstrained adds it here knowingly.
        permissions: words(&["default", "acceptEdits", "plan"]),
        // Headless, a session that may not edit or run anything does no work.
        default_permission: Some("acceptEdits".to_owned()),
        tools: words(&[
            "Read",
            "Edit",
            "MultiEdit",
            "Write",
            "Glob",
            "Grep",
            "LS",
            "Bash",
            "NotebookEdit",
            "TodoWrite",
            "WebFetch",
            "WebSearch",
            "Task",
        ]),
        default_tools: words(&[
            "Read",
            "Edit",
            "MultiEdit",
            "Write",
            "Glob",
            "Grep",
            "LS",
            "Bash",
        ]),
        stall_timeout_ms: DEFAULT_STALL_MS,
        stall_policy: StallPolicy::Stop,
    }
}

fn codex() -> ProfileSection {
    // Outside a git repository `codex exec` refuses to start without
    // --skip-git-repo-check; a project folder need not be one.
    let exec = ["exec", "--json", "--skip-git-repo-check"];
    let mut new_args = words(&exec);
    new_args.push("{prompt}".to_owned());
    let mut resume_args = words(&exec);
    resume_args.extend(words(&["resume", "{session}", "{prompt}"]));
    ProfileSection {
        executable: "codex".to_owned(),
        parser: ParserKind::CodexJson,
        new_args,
        resume_args,
        model_args: words(&["--model", "{model}"]),
        permission_args: words(&["--sandbox", "{permission}"]),
        tools_args: Vec::new(),
        env_passthrough: env(&["OPENAI_API_KEY", "OPENAI_BASE_URL", "CODEX_HOME"]),
        models: words(&["gpt-5-codex", "gpt-5", "gpt-5-mini"]),
        default_model: None,
        permissions: words(&["read-only", "workspace-write"]),
        default_permission: Some("workspace-write".to_owned()),
        tools: Vec::new(),
        default_tools: Vec::new(),
        stall_timeout_ms: DEFAULT_STALL_MS,
        stall_policy: StallPolicy::Stop,
    }
}

fn opencode() -> ProfileSection {
    let run = ["run", "--format", "json"];
    let mut new_args = words(&run);
    new_args.push("{prompt}".to_owned());
    let mut resume_args = words(&run);
    resume_args.extend(words(&["--session", "{session}", "{prompt}"]));
    ProfileSection {
        executable: "opencode".to_owned(),
        parser: ParserKind::OpencodeJson,
        new_args,
        resume_args,
        model_args: words(&["--model", "{model}"]),
        permission_args: Vec::new(),
        tools_args: Vec::new(),
        env_passthrough: env(&["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENCODE_CONFIG"]),
        models: words(&[
            "anthropic/claude-sonnet-4-5",
            "anthropic/claude-opus-4-1",
            "openai/gpt-5",
        ]),
        default_model: None,
        permissions: Vec::new(),
        default_permission: None,
        tools: Vec::new(),
        default_tools: Vec::new(),
        stall_timeout_ms: DEFAULT_STALL_MS,
        stall_policy: StallPolicy::Stop,
    }
}

/// The built-in profiles: `claude-code`, `codex`, `opencode`, `generic`
/// (any command, no parser: set its executable and arguments in config) and
/// `demo` (the simulated agent, for trying Stratavore without credentials).
#[must_use]
pub fn builtin_profiles() -> BTreeMap<String, ProfileSection> {
    let generic = ProfileSection {
        executable: "stratavore-generic-agent".to_owned(),
        ..ProfileSection::default()
    };
    let demo = ProfileSection {
        stall_timeout_ms: 0,
        ..claude_like("stratavore-sim-agent")
    };
    BTreeMap::from([
        ("claude-code".to_owned(), claude_like("claude")),
        ("codex".to_owned(), codex()),
        ("opencode".to_owned(), opencode()),
        ("generic".to_owned(), generic),
        ("demo".to_owned(), demo),
    ])
}
