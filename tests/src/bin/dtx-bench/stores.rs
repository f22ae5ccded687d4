//! Fresh stores for every coordinator of every scenario: a new SQLite file,
//! or a new database on a PostgreSQL server in a container of the bench's
//! own (the `dtx-postgres:15` test image, fsync on).
//!
//! The bench starts its own server rather than using the test suite's
//! shared one, so that tests run by others at the same time do not share
//! its database, and removes it when the run ends.
//!
//! Coordinators reach the server at the container's own address on the
//! Docker bridge when the host can route to it (Docker on Linux), not
//! through the published port on 127.0.0.1: that port is served by
//! `docker-proxy`, a userland process that copies every byte, and in a
//! first run it used more CPU than dtx itself, on a 2-core machine. The
//! published port is the fallback, with a note in the report.

use std::path::{Path, PathBuf};

use dtx_tests::postgres::PostgresServer;
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

use crate::procstat;
use crate::scenario::Store;

/// Where fresh stores come from.
pub struct Stores {
    /// SQLite files live here, one per coordinator, deleted after use.
    dir: PathBuf,
    /// The PostgreSQL server, when a scenario needs it. Dropping it removes
    /// the container.
    postgres: Option<PostgresServer>,
    /// The server's full container ID, to read its CPU time from its cgroup.
    postgres_id: Option<String>,
    /// `postgres://postgres:postgres@HOST:PORT`: how coordinators reach it.
    postgres_base: String,
    created: u32,
}

impl Stores {
    /// SQLite only; files under `dir` (created if missing).
    pub fn new(dir: &Path) -> std::io::Result<Stores> {
        std::fs::create_dir_all(dir)?;
        Ok(Stores {
            dir: dir.to_owned(),
            postgres: None,
            postgres_id: None,
            postgres_base: String::new(),
            created: 0,
        })
    }

    /// Starts the PostgreSQL server and returns how coordinators reach it
    /// (for the report). The error says what to install or build when
    /// Docker or the image is missing.
    pub async fn start_postgres(&mut self) -> Result<String, String> {
        let server = PostgresServer::start()
            .await
            .map_err(|e| format!("{e:?}"))?;
        self.postgres_id = container_id(server.container_name());
        let published = format!("postgres://postgres:postgres@127.0.0.1:{}", server.port());
        let direct = match bridge_address(server.container_name()) {
            Some(ip) => {
                let base = format!("postgres://postgres:postgres@{ip}:5432");
                let probe = PgConnection::connect(&format!("{base}/postgres"));
                match tokio::time::timeout(std::time::Duration::from_secs(3), probe).await {
                    Ok(Ok(connection)) => {
                        connection.close().await.ok();
                        Some(base)
                    }
                    _ => None,
                }
            }
            None => None,
        };
        self.postgres = Some(server);
        Ok(match direct {
            Some(base) => {
                self.postgres_base = base;
                format!(
                    "PostgreSQL reached at {} on the Docker bridge (no docker-proxy)",
                    self.postgres_base.rsplit('@').next().unwrap_or("")
                )
            }
            None => {
                self.postgres_base = published;
                "PostgreSQL reached through its published port on 127.0.0.1: the \
                 container's bridge address did not answer, so docker-proxy's CPU \
                 time is part of these figures (counted in `others s`)"
                    .to_owned()
            }
        })
    }

    /// CPU seconds used so far by the PostgreSQL server (all its
    /// processes), when the server runs and its cgroup can be read.
    pub fn postgres_cpu_seconds(&self) -> Option<f64> {
        procstat::container_cpu_seconds(self.postgres_id.as_deref()?)
    }

    /// A new, empty store of kind `store` for the coordinator `label` (a
    /// file or database name part); returns its URL.
    pub async fn fresh(&mut self, store: Store, label: &str) -> Result<FreshStore, String> {
        self.created += 1;
        let name = format!("bench_{}_{label}", self.created);
        match store {
            Store::Sqlite => {
                let path = self.dir.join(format!("{name}.db"));
                let files = sqlite_files(&path);
                remove(&files);
                Ok(FreshStore {
                    url: format!("sqlite:{}", path.display()),
                    files,
                })
            }
            Store::Postgres => {
                if self.postgres.is_none() {
                    return Err("PostgreSQL was not started (no server)".to_owned());
                }
                let mut admin = PgConnection::connect(&format!("{}/postgres", self.postgres_base))
                    .await
                    .map_err(|e| format!("connect to PostgreSQL: {e}"))?;
                admin
                    .execute(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                    .await
                    .map_err(|e| format!("create database {name}: {e}"))?;
                admin.close().await.ok();
                Ok(FreshStore {
                    url: format!("{}/{name}", self.postgres_base),
                    files: Vec::new(),
                })
            }
        }
    }
}

/// A store handed to one coordinator. Dropping it deletes a SQLite store's
/// files (a PostgreSQL database goes with the container).
#[derive(Debug)]
pub struct FreshStore {
    /// What `--db` / `DTMRS_DB` is given.
    pub url: String,
    files: Vec<PathBuf>,
}

impl Drop for FreshStore {
    fn drop(&mut self) {
        remove(&self.files);
    }
}

/// The full ID of the container `name`, from `docker inspect`; `None`
/// (and no database CPU figures) if that fails.
fn container_id(name: &str) -> Option<String> {
    let output = std::process::Command::new("docker")
        .args(["inspect", "--format", "{{.Id}}", name])
        .output()
        .ok()?;
    let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !id.is_empty()).then_some(id)
}

/// The container's address on Docker's default bridge, if it has one.
fn bridge_address(name: &str) -> Option<String> {
    let output = std::process::Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{.NetworkSettings.IPAddress}}",
            name,
        ])
        .output()
        .ok()?;
    let ip = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !ip.is_empty()).then_some(ip)
}

/// The database file and the files SQLite's WAL mode keeps beside it.
fn sqlite_files(path: &Path) -> Vec<PathBuf> {
    let base = path.display().to_string();
    vec![
        path.to_owned(),
        PathBuf::from(format!("{base}-wal")),
        PathBuf::from(format!("{base}-shm")),
    ]
}

fn remove(files: &[PathBuf]) {
    for file in files {
        // Missing is fine: that is the state wanted.
        let _ = std::fs::remove_file(file);
    }
}
