//! A private PostgreSQL server for one test: `initdb` in a temporary directory, listening on a
//! unix socket in it only (no TCP at all), as the `postgres` user when the tests run as root
//! (PostgreSQL refuses root). Stopped (immediate shutdown) and removed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The port number names the socket file (`.s.PGSQL.5432`); nothing listens on TCP.
const PORT: u16 = 5432;

pub struct Postgres {
    dir: PathBuf,
    server: Option<Child>,
    bin: PathBuf,
    as_postgres: bool,
}

/// Where Debian puts the server's programs: the newest `/usr/lib/postgresql/N/bin`.
pub fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (the test command installs Debian's postgresql)")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .expect("a PostgreSQL server under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Postgres {
    /// Starts a fresh server and waits until it accepts connections.
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let as_postgres = is_root();
        let base = std::env::temp_dir().join(format!(
            "mdd-pg-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&base).expect("temp dir");
        if as_postgres {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&base)
                .status()
                .expect("chown");
            assert!(status.success(), "chown postgres {}", base.display());
        }
        let mut pg = Postgres {
            dir: base,
            server: None,
            bin,
            as_postgres,
        };
        let data = pg.dir.join("data");
        let output = pg
            .command("initdb")
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--locale=C",
                "-D",
            ])
            .arg(&data)
            .output()
            .expect("initdb runs");
        assert!(
            output.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let server = pg
            .command("postgres")
            .arg("-D")
            .arg(&data)
            .args(["-c", "listen_addresses="])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", pg.dir.display()))
            .args(["-p", &PORT.to_string()])
            .args(["-c", "fsync=on", "-c", "max_connections=200"])
            // For profiling a benchmark: `MDD_PG_STATEMENTS=1` records every statement's time
            // (`CREATE EXTENSION pg_stat_statements`, then read the view).
            .args(if std::env::var_os("MDD_PG_STATEMENTS").is_some() {
                &["-c", "shared_preload_libraries=pg_stat_statements"][..]
            } else {
                &[]
            })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres starts");
        pg.server = Some(server);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = pg
                .command("pg_isready")
                .arg("-h")
                .arg(&pg.dir)
                .args(["-p", &PORT.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not come up in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        pg
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            // setpriv execs the program itself (runuser would fork and stand between), so
            // the child's pid is the postmaster's.
            let mut command = Command::new("setpriv");
            command
                .args([
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--init-groups",
                    "--",
                ])
                .arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    /// The socket directory (also the instance's whole directory).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// A URL for the `postgres` database over the unix socket.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// A URL for `database` (made by [`Postgres::create_database`]).
    pub fn database_url(&self, database: &str) -> String {
        format!(
            "postgres:///{database}?host={}&port={PORT}&user=postgres",
            self.dir.display()
        )
    }

    /// Makes a new, empty database: each test (or each server set) gets its own.
    pub fn create_database(&self, name: &str) -> String {
        let output = self
            .command("createdb")
            .arg("-h")
            .arg(&self.dir)
            .args(["-p", &PORT.to_string(), "-U", "postgres", name])
            .output()
            .expect("createdb runs");
        assert!(
            output.status.success(),
            "createdb {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        self.database_url(name)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            // SIGQUIT: immediate shutdown of the postmaster and all its children.
            let _ = Command::new("kill")
                .args(["-QUIT", &server.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = server.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
