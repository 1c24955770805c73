//! A PostgreSQL address allocator for the identifier benchmarks: the peer that the single-claim
//! figure of `benches/ids.rs` is compared with, started by the bench itself.
//!
//! The server is Debian's PostgreSQL (`initdb` from `$PATH` or `/usr/lib/postgresql/*/bin`),
//! initialised in a temporary directory and listening only on a Unix socket there, with its
//! defaults for durability (`fsync = on`, `synchronous_commit = on`). The allocator is the usual
//! way to hand out addresses from a shared pool in SQL, the way NetBox does it: one transaction
//! per claim that locks the pool's row (`SELECT … FOR UPDATE`), finds the lowest free address,
//! inserts the allocation and commits. It runs from the bench process over the socket, so the
//! figure is PostgreSQL's own cost, with no web framework in front of it (NetBox adds one).
//!
//! When PostgreSQL is not installed, [`Postgres::start`] says so and the bench prints the row as
//! skipped; when it is installed and fails, that is an error.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A PostgreSQL server in a temporary directory, stopped on drop.
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    as_user: Option<String>,
    // Keeps the directory alive as long as the server.
    _dir: tempfile::TempDir,
}

/// Where Debian's server binaries are: `initdb` on `$PATH`, else the newest
/// `/usr/lib/postgresql/<major>/bin`.
fn find_bindir() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if initdb.is_file() {
                // Follow the link to the real directory, where `pg_ctl` and `postgres` are too.
                let real = std::fs::canonicalize(&initdb).unwrap_or(initdb);
                return real.parent().map(Path::to_path_buf);
            }
        }
    }
    let mut majors: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    majors.sort();
    majors.pop()
}

fn is_root() -> bool {
    // The effective uid without unsafe code: /proc/self/status has "Uid: real effective …".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        .unwrap_or(false)
}

fn uid_gid_of(user: &str) -> Result<(u32, u32), String> {
    let out = Command::new("id").args(["-u", user]).output().map_err(|e| format!("id -u {user}: {e}"))?;
    let gid = Command::new("id").args(["-g", user]).output().map_err(|e| format!("id -g {user}: {e}"))?;
    let parse = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).trim().parse::<u32>().ok();
    match (out.status.success(), parse(&out), parse(&gid)) {
        (true, Some(u), Some(g)) => Ok((u, g)),
        _ => Err(format!("PostgreSQL refuses to run as root and there is no `{user}` user to run it as")),
    }
}

impl Postgres {
    /// Initialises and starts a server. `Ok(None)`: PostgreSQL is not installed.
    pub fn start() -> Result<Option<Postgres>, String> {
        let Some(bin) = find_bindir() else { return Ok(None) };
        let dir = tempfile::Builder::new().prefix("choreo-bench-pg").tempdir().map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        let socket_dir = dir.path().join("sock");
        for d in [&data, &socket_dir] {
            std::fs::create_dir(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        // initdb and postgres refuse root: run them as the package's `postgres` user, which
        // must be able to reach the directories.
        let as_user = if is_root() {
            let (uid, gid) = uid_gid_of("postgres")?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("{}: {e}", dir.path().display()))?;
            for d in [&data, &socket_dir] {
                std::os::unix::fs::chown(d, Some(uid), Some(gid)).map_err(|e| format!("{}: {e}", d.display()))?;
            }
            Some("postgres".to_owned())
        } else {
            None
        };
        let pg = Postgres { bin, data, socket_dir, as_user, _dir: dir };
        pg.run(
            "initdb",
            &["-D", path_str(&pg.data)?, "-U", "bench", "--auth=trust", "--no-instructions", "-E", "UTF8"],
        )?;
        let options = format!("-k {} -c listen_addresses=''", path_str(&pg.socket_dir)?);
        let log = pg.data.join("server.log");
        pg.run("pg_ctl", &["-D", path_str(&pg.data)?, "-l", path_str(&log)?, "-o", &options, "-w", "start"])?;
        Ok(Some(pg))
    }

    /// The server's major version, from the directory its binaries are in.
    pub fn version(&self) -> String {
        std::fs::read_to_string(self.data.join("PG_VERSION")).map(|v| v.trim().to_owned()).unwrap_or_default()
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let exe = self.bin.join(program);
        let mut cmd = match &self.as_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out = cmd.args(args).current_dir("/").output().map_err(|e| format!("{}: {e}", exe.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// A client on the server's socket, as the superuser `bench`.
    pub fn connect(&self) -> Result<postgres::Client, String> {
        postgres::Config::new()
            .host_path(&self.socket_dir)
            .user("bench")
            .dbname("postgres")
            .connect(postgres::NoTls)
            .map_err(|e| format!("connect to PostgreSQL at {}: {e}", self.socket_dir.display()))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(data) = self.data.to_str() {
            let _ = self.run("pg_ctl", &["-D", data, "-m", "fast", "-w", "stop"]);
        }
    }
}

fn path_str(p: &Path) -> Result<&str, String> {
    p.to_str().ok_or_else(|| format!("{} is not UTF-8", p.display()))
}

/// The allocator: a table of pools (first and last address as integers) and one of allocations,
/// one row per claim, unique per pool and address and per pool and claim name.
pub struct Allocator {
    client: postgres::Client,
}

impl Allocator {
    pub fn new(mut client: postgres::Client) -> Result<Allocator, String> {
        client
            .batch_execute(
                "CREATE TABLE pool (name text PRIMARY KEY, first bigint NOT NULL, last bigint NOT NULL);
                 CREATE TABLE allocation (
                     pool text NOT NULL REFERENCES pool ON DELETE CASCADE,
                     address bigint NOT NULL,
                     claim text NOT NULL,
                     PRIMARY KEY (pool, address),
                     UNIQUE (pool, claim));",
            )
            .map_err(|e| e.to_string())?;
        Ok(Allocator { client })
    }

    /// Adds a pool of the addresses `first..=last` whose lowest `claimed` addresses are taken
    /// (claims `pre0`, `pre1`, …), in one statement.
    pub fn add_pool(&mut self, pool: &str, first: i64, last: i64, claimed: i64) -> Result<(), String> {
        self.client
            .execute("INSERT INTO pool VALUES ($1, $2, $3)", &[&pool, &first, &last])
            .map_err(|e| e.to_string())?;
        self.client
            .execute(
                "INSERT INTO allocation SELECT $1::text, $2::bigint + g, 'pre' || g FROM generate_series(0::bigint, $3::bigint - 1) AS g",
                &[&pool, &first, &claimed],
            )
            .map_err(|e| e.to_string())?;
        self.client.batch_execute("ANALYZE allocation").map_err(|e| e.to_string())
    }

    /// Claims the lowest free address of `pool` for `claim` in one committed transaction.
    pub fn claim(&mut self, pool: &str, claim: &str) -> Result<i64, String> {
        let mut tx = self.client.transaction().map_err(|e| e.to_string())?;
        let row = tx
            .query_one("SELECT first, last FROM pool WHERE name = $1 FOR UPDATE", &[&pool])
            .map_err(|e| e.to_string())?;
        let (first, last): (i64, i64) = (row.get(0), row.get(1));
        // The first address if it is free, else the address after the lowest allocation whose
        // successor is free.
        let free: Option<i64> = tx
            .query_one(
                "SELECT CASE
                    WHEN NOT EXISTS (SELECT 1 FROM allocation WHERE pool = $1 AND address = $2) THEN $2
                    ELSE (SELECT a.address + 1 FROM allocation a
                          WHERE a.pool = $1 AND NOT EXISTS
                              (SELECT 1 FROM allocation b WHERE b.pool = $1 AND b.address = a.address + 1)
                          ORDER BY a.address LIMIT 1)
                 END",
                &[&pool, &first],
            )
            .map_err(|e| e.to_string())?
            .get(0);
        let address = match free {
            Some(a) if a <= last => a,
            _ => return Err(format!("pool {pool} is full")),
        };
        tx.execute("INSERT INTO allocation VALUES ($1, $2, $3)", &[&pool, &address, &claim])
            .map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
        Ok(address)
    }
}
