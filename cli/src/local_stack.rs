//! The whole stack on this machine: provisioning, then the five service
//! binaries as background processes with pid files and logs under the local
//! folder, each waited for until its `/readyz` answers. The supervisor and
//! the gateway get the same node token, made once into `.local/node-token`.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use stratavore_provision::postgres_install::PgInstall;
use stratavore_provision::postgres_server::PgCluster;
use stratavore_provision::stack::{ProvisionRequest, Provisioned, local_postgres_root, provision};
use stratavore_store::pool::LOCAL_POSTGRES_PORT;

stratavore_runtime::service_config!(
    /// The settings `up` shares with the services (database, broker).
    CliConfig,
    port = 7480
);

/// The services `up` starts, in order, with their health ports (DESIGN.md
/// section 7). The relay goes last: it publishes what the others write.
pub const SERVICES: &[(&str, u16)] = &[
    ("session-orchestrator", 7481),
    ("runner-supervisor", 7482),
    ("agent-registry", 7483),
    ("api-gateway", 7480),
    ("outbox-relay", 7484),
];

/// The service whose transcripts the gateway reads, and the gateway: both
/// get the node token, each under its own key.
const NODE_TOKEN_ENV: &[(&str, &str)] = &[
    ("runner-supervisor", "STRATAVORE__NODE__TOKEN"),
    ("api-gateway", "STRATAVORE__API__NODE_TOKEN"),
];

/// The service that starts agents: its `PATH` leads with the installed
/// agent CLIs, so the profiles that name `claude`, `codex` or `opencode`
/// run the pinned versions rather than whatever the machine has.
const AGENT_LAUNCHER: &str = "runner-supervisor";

/// The service that embeds sessions' text: it reads the model provisioning
/// unpacked (unless the environment already names a folder).
const MODEL_READER: (&str, &str) = ("api-gateway", "STRATAVORE__SEARCH__MODEL_DIR");

/// How long `up` waits for a service to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long `down` lets a service finish in-flight work before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(35);

/// The local folder and the settings.
pub struct LocalStack {
    local_dir: PathBuf,
    config: CliConfig,
}

impl LocalStack {
    /// Read the config the services will read too.
    pub fn load(local_dir: PathBuf, config_file: Option<&Path>) -> anyhow::Result<Self> {
        let config = CliConfig::load(config_file)?;
        let local_dir = std::path::absolute(&local_dir).context("resolving the local folder")?;
        Ok(Self { local_dir, config })
    }

    fn run_dir(&self) -> PathBuf {
        self.local_dir.join("run")
    }

    fn pid_file(&self, service: &str) -> PathBuf {
        self.run_dir().join(format!("{service}.pid"))
    }

    fn broker_marker(&self) -> PathBuf {
        self.run_dir().join("rabbitmq.started-by-up")
    }

    /// The node token to give the supervisor and the gateway: None when
    /// either key is already in the environment (the operator chose, and
    /// the services inherit it), else the one in `.local/node-token`,
    /// made on first use.
    fn node_token(&self) -> anyhow::Result<Option<String>> {
        if NODE_TOKEN_ENV
            .iter()
            .any(|(_, key)| std::env::var_os(key).is_some())
        {
            return Ok(None);
        }
        load_or_create_token(&self.local_dir.join("node-token")).map(Some)
    }

    /// Provision and report what was found.
    pub async fn provision(&self) -> anyhow::Result<Provisioned> {
        let c = &self.config.0;
        let request = ProvisionRequest {
            local_dir: self.local_dir.clone(),
            database_url: c.database.url.clone(),
            role_password: c.database.role_password.clone(),
            broker_url: c.broker.url.clone(),
            prefix: c.broker.prefix.clone(),
            delivery_limit: c.broker.delivery_limit,
        };
        let done = provision(&request).await?;
        std::fs::create_dir_all(self.run_dir())?;
        if done.started_broker {
            std::fs::write(self.broker_marker(), "started by stratavore up\n")?;
        }
        println!(
            "provisioned: Postgres {} ({}), RabbitMQ {} (prefix {}), agent CLIs in {}",
            redact(&done.database_url),
            if done.local_postgres {
                "embedded, with pgvector"
            } else {
                "given"
            },
            stratavore_bus::connection::redact_url(&c.broker.url),
            c.broker.prefix,
            done.agent_bin_dir.display()
        );
        Ok(done)
    }

    /// Provision, start every service that is not running, wait until each
    /// is ready, and say where they are.
    pub async fn up(&self) -> anyhow::Result<()> {
        let provisioned = self.provision().await?;
        let bin_dir = std::env::current_exe()?
            .parent()
            .map(Path::to_path_buf)
            .context("locating the service binaries")?;
        let logs = self.local_dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let node_token = self.node_token()?;
        for (service, _) in SERVICES {
            if let Some(pid) = self.running_pid(service) {
                println!("{service}: already running (pid {pid})");
                continue;
            }
            let binary = bin_dir.join(service);
            if !binary.exists() {
                bail!(
                    "{} is missing: build the workspace first (cargo build --bins)",
                    binary.display()
                );
            }
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(logs.join(format!("{service}.log")))?;
            let mut command = std::process::Command::new(&binary);
            command
                .env("STRATAVORE__DATABASE__URL", &provisioned.database_url)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            // A process group of its own, so a Ctrl-C in this terminal after
            // `up` returns does not reach the services; `down` stops them.
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
            if let Some(file) = &self.config_file_env() {
                command.env("STRATAVORE_CONFIG", file);
            }
            if *service == MODEL_READER.0 && std::env::var_os(MODEL_READER.1).is_none() {
                command.env(MODEL_READER.1, &provisioned.embedding_model_dir);
            }
            if *service == AGENT_LAUNCHER {
                command.env("PATH", path_with_agents(&provisioned.agent_bin_dir)?);
            }
            if let Some(token) = &node_token
                && let Some((_, key)) = NODE_TOKEN_ENV.iter().find(|(s, _)| s == service)
            {
                command.env(key, token);
            }
            let child = command
                .spawn()
                .with_context(|| format!("starting {service}"))?;
            std::fs::write(self.pid_file(service), child.id().to_string())?;
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        for (service, port) in SERVICES {
            wait_ready(&client, service, *port).await?;
        }
        println!();
        println!("Stratavore is up:");
        println!("  REST API             http://127.0.0.1:7480/api/v1/projects");
        for (service, port) in SERVICES {
            println!("  {service:<20} http://127.0.0.1:{port}/readyz  /metrics");
        }
        println!("  logs                {}", logs.display());
        println!("stop everything with: make down");
        Ok(())
    }

    fn config_file_env(&self) -> Option<String> {
        std::env::var("STRATAVORE_CONFIG").ok()
    }

    /// The pid of a running service started by `up`, if any.
    fn running_pid(&self, service: &str) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.pid_file(service))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        is_alive(pid).then_some(pid)
    }

    /// Stop the services (SIGTERM, then SIGKILL after the grace period), the
    /// embedded Postgres, and RabbitMQ when `up` started it.
    pub async fn down(&self) -> anyhow::Result<()> {
        for (service, _) in SERVICES.iter().rev() {
            if let Some(pid) = self.running_pid(service) {
                stop_process(pid).await;
                println!("{service}: stopped");
            }
            let _ = std::fs::remove_file(self.pid_file(service));
        }
        let root = local_postgres_root(&self.local_dir);
        if self.config.0.database.url.is_none() && root.join("data").join("PG_VERSION").exists() {
            tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                let install = PgInstall::ensure(&root)?;
                PgCluster::in_dir(&install, &root, LOCAL_POSTGRES_PORT)?.stop()?;
                Ok(())
            })
            .await??;
            println!("embedded Postgres: stopped");
        }
        if self.broker_marker().exists() {
            let status = std::process::Command::new("rabbitmqctl")
                .arg("stop")
                .status();
            match status {
                Ok(s) if s.success() => println!("RabbitMQ (started by up): stopped"),
                _ => eprintln!("RabbitMQ (started by up): rabbitmqctl stop failed"),
            }
            let _ = std::fs::remove_file(self.broker_marker());
        }
        Ok(())
    }

    /// Print each service's state.
    pub async fn status(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        for (service, port) in SERVICES {
            let pid = self.running_pid(service);
            let ready = match client
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => "ready",
                Ok(_) => "not ready",
                Err(_) => "not answering",
            };
            match pid {
                Some(pid) => println!("{service:<20} running (pid {pid}), {ready}"),
                None => println!("{service:<20} not started by up, {ready}"),
            }
        }
        Ok(())
    }
}

/// The token in `path`, or a new random one (32 bytes from the kernel, as
/// hex) written there readable by this user only. Created exclusively, so
/// two `up`s at once agree on one token.
fn load_or_create_token(path: &Path) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let read = |path: &Path| -> anyhow::Result<Option<String>> {
        match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().to_owned())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    };
    if let Some(token) = read(path)? {
        return Ok(token);
    }
    let mut random = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .context("reading random bytes for the node token")?;
    let token: String = random.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => {
            file.write_all(token.as_bytes())
                .and_then(|()| file.write_all(b"\n"))
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(token)
        }
        // Another `up` made it first (or left it empty): use what is there.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read(path)?.with_context(|| format!("{} exists but holds no token", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// Our `PATH` with the agent CLIs' folder first.
fn path_with_agents(agent_bin_dir: &Path) -> anyhow::Result<std::ffi::OsString> {
    let inherited = std::env::var_os("PATH").unwrap_or_default();
    let dirs =
        std::iter::once(agent_bin_dir.to_path_buf()).chain(std::env::split_paths(&inherited));
    std::env::join_paths(dirs).context("adding the agent CLIs' folder to PATH")
}

fn redact(url: &str) -> String {
    stratavore_bus::connection::redact_url(url)
}

fn is_alive(pid: i32) -> bool {
    rustix::process::Pid::from_raw(pid)
        .is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
}

async fn stop_process(pid: i32) {
    let Some(p) = rustix::process::Pid::from_raw(pid) else {
        return;
    };
    let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while is_alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if is_alive(pid) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

async fn wait_ready(client: &reqwest::Client, service: &str, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let url = format!("http://127.0.0.1:{port}/readyz");
    loop {
        let last = match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            bail!(
                "{service} was not ready within {READY_TIMEOUT:?} ({url}: {last}); see its log under .local/logs"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_token_is_made_once_readable_by_its_owner_only_and_then_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("stv-token-{}", std::process::id()));
        let path = dir.join("node-token");
        let _ = std::fs::remove_dir_all(&dir);
        let made = load_or_create_token(&path).unwrap();
        assert_eq!(made.len(), 64);
        assert!(made.bytes().all(|b| b.is_ascii_hexdigit()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_token(&path).unwrap(), made);
        std::fs::remove_dir_all(&dir).unwrap();
        let other = load_or_create_token(&path).unwrap();
        assert_ne!(other, made, "a new folder gets a new token");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_agent_clis_folder_leads_the_supervisors_path() {
        let path = path_with_agents(Path::new("/x/.local/agents/node_modules/.bin")).unwrap();
        let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
        assert_eq!(
            dirs.first().map(PathBuf::as_path),
            Some(Path::new("/x/.local/agents/node_modules/.bin"))
        );
        let inherited = std::env::var_os("PATH").unwrap_or_default();
        assert_eq!(dirs.len(), 1 + std::env::split_paths(&inherited).count());
    }
}
