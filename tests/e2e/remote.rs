//! The remote tier against real servers: Redis, nginx WebDAV and an S3 server (s3s-fs, which
//! checks SigV4 signatures), started by `.ci/run` (`.ci/remote-servers`) and found through
//! `MEMOSHELVE_TEST_*` variables. Without them a test skips with a message, except under CI
//! (`CI=true`), where it fails. The killed-server tests start servers of their own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::{counted, in_build_script, probe, statuses, warnings};

/// A test server's variable, or `None` (skip) outside CI.
pub(crate) fn server_var(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if std::env::var("CI").is_ok_and(|ci| !ci.is_empty() && ci != "false") => {
            panic!(
                "{name} is not set: under CI, .ci/run starts the remote test servers and sets it"
            )
        }
        _ => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "skipping: {name} is not set (source .ci/remote-servers to run the remote tests)"
            );
            None
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Redis,
    Http,
    S3,
}

/// One test's own space on a shared server: a Redis database, a folder of the WebDAV root, a
/// prefix of the S3 bucket.
struct Remote {
    kind: Kind,
    url: String,
    env: Vec<(String, String)>,
    /// Where the server keeps the objects on disk (HTTP, S3).
    files: Option<PathBuf>,
    /// The Redis database and connection URL.
    redis: Option<String>,
}

/// Redis databases handed out to tests (the shared server has 16; 0 is left alone).
static NEXT_DB: AtomicU32 = AtomicU32::new(1);

pub(crate) fn unique(test: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{test}-{}-{nanos}", std::process::id())
}

impl Remote {
    fn new(kind: Kind, test: &str) -> Option<Remote> {
        match kind {
            Kind::Redis => {
                let base = server_var("MEMOSHELVE_TEST_REDIS")?;
                let db = NEXT_DB.fetch_add(1, Ordering::Relaxed);
                assert!(db < 16, "more Redis tests than databases");
                let url = format!("{}/{db}", base.trim_end_matches('/'));
                let remote = Remote {
                    kind,
                    url: url.clone(),
                    env: Vec::new(),
                    files: None,
                    redis: Some(url),
                };
                let _: () = redis::cmd("FLUSHDB").query(&mut remote.connection()).unwrap();
                Some(remote)
            }
            Kind::Http => {
                let base = server_var("MEMOSHELVE_TEST_HTTP")?;
                let root = server_var("MEMOSHELVE_TEST_HTTP_ROOT")?;
                let folder = unique(test);
                Some(Remote {
                    kind,
                    url: format!("{}/{folder}", base.trim_end_matches('/')),
                    env: Vec::new(),
                    files: Some(Path::new(&root).join(folder)),
                    redis: None,
                })
            }
            Kind::S3 => {
                let endpoint = server_var("MEMOSHELVE_TEST_S3_ENDPOINT")?;
                let root = server_var("MEMOSHELVE_TEST_S3_ROOT")?;
                let bucket = server_var("MEMOSHELVE_TEST_S3_BUCKET")?;
                let access = server_var("MEMOSHELVE_TEST_S3_ACCESS_KEY")?;
                let secret = server_var("MEMOSHELVE_TEST_S3_SECRET_KEY")?;
                let prefix = unique(test);
                Some(Remote {
                    kind,
                    url: format!("s3://{bucket}/{prefix}"),
                    env: vec![
                        ("AWS_ENDPOINT_URL".into(), endpoint),
                        ("AWS_ACCESS_KEY_ID".into(), access),
                        ("AWS_SECRET_ACCESS_KEY".into(), secret),
                        ("AWS_REGION".into(), "us-east-1".into()),
                    ],
                    files: Some(Path::new(&root).join(bucket).join(prefix)),
                    redis: None,
                })
            }
        }
    }

    fn connection(&self) -> redis::Connection {
        redis::Client::open(self.redis.as_deref().unwrap()).unwrap().get_connection().unwrap()
    }

    /// Everything the remote holds: `ac/<hex>` and `cas/<hex>` names.
    fn objects(&self) -> Vec<String> {
        let mut names: Vec<String> = match self.kind {
            Kind::Redis => {
                let keys: Vec<String> =
                    redis::cmd("KEYS").arg("*").query(&mut self.connection()).unwrap();
                keys.iter()
                    .map(|key| key.strip_prefix("memoshelve:").unwrap_or(key).replace(':', "/"))
                    .collect()
            }
            Kind::Http | Kind::S3 => {
                let files = self.files.as_ref().unwrap();
                ["ac", "cas"]
                    .iter()
                    .flat_map(|dir| {
                        std::fs::read_dir(files.join(dir)).into_iter().flatten().flatten().map(
                            move |item| format!("{dir}/{}", item.file_name().to_string_lossy()),
                        )
                    })
                    .collect()
            }
        };
        names.sort();
        names
    }

    fn read(&self, path: &str) -> Vec<u8> {
        match self.kind {
            Kind::Redis => redis::cmd("GET")
                .arg(format!("memoshelve:{}", path.replace('/', ":")))
                .query::<Option<Vec<u8>>>(&mut self.connection())
                .unwrap()
                .unwrap_or_else(|| panic!("{path} is not on the remote")),
            Kind::Http | Kind::S3 => {
                std::fs::read(self.files.as_ref().unwrap().join(path)).unwrap()
            }
        }
    }

    /// Replaces an object behind the client's back, as an attacker with write access would.
    fn write(&self, path: &str, bytes: &[u8]) {
        match self.kind {
            Kind::Redis => {
                let _: () = redis::cmd("SET")
                    .arg(format!("memoshelve:{}", path.replace('/', ":")))
                    .arg(bytes)
                    .query(&mut self.connection())
                    .unwrap();
            }
            Kind::Http | Kind::S3 => {
                let file = self.files.as_ref().unwrap().join(path);
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(file, bytes).unwrap();
            }
        }
    }

    /// The payload of an entry (after its signature line), as the remote layout documents it:
    /// postcard of the format, the hex key and the record.
    fn entry(&self, key: &str) -> Payload {
        let body = self.read(&format!("ac/{key}"));
        let newline = body.iter().position(|&byte| byte == b'\n').unwrap();
        postcard::from_bytes(&body[newline + 1..]).unwrap()
    }

    /// Writes an entry: its signature line, then its payload.
    fn write_entry(&self, key: &str, signature: &str, payload: &Payload) {
        let mut body = format!("{signature}\n").into_bytes();
        body.extend_from_slice(&postcard::to_allocvec(payload).unwrap());
        self.write(&format!("ac/{key}"), &body);
    }
}

/// A remote entry's payload: format, hex key, record.
type Payload = (u32, String, memoshelve_build::EntryRecord);

/// A "machine": its own cache root, output directory and computation counter, all using one
/// remote.
struct Machine {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Machine {
    fn new(remote: &Remote) -> Machine {
        let mut env = remote.env.clone();
        env.push(("MEMOSHELVE_REMOTE".into(), remote.url.clone()));
        Machine { dir: tempfile::tempdir().unwrap(), env }
    }

    fn with(mut self, name: &str, value: &str) -> Machine {
        self.env.push((name.into(), value.into()));
        self
    }

    fn root(&self) -> String {
        self.dir.path().join("cache").to_str().unwrap().to_owned()
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn counter(&self) -> PathBuf {
        self.dir.path().join("counter")
    }

    fn command(&self, args: &[&str]) -> Command {
        let root = self.root();
        let mut all = vec![args[0], "--dir", root.as_str()];
        all.extend(&args[1..]);
        let mut command = probe(&all);
        command.envs(self.env.iter().map(|(name, value)| (name, value)));
        command.env("PROBE_COUNTER", self.counter());
        command
    }

    /// Runs the probe as a build script would (warnings are `cargo:warning=` lines).
    fn run(&self, args: &[&str]) -> Vec<String> {
        in_build_script(self.command(args), self.dir.path())
    }

    /// Values of 5000 bytes (blobs) for arguments `first..first+count`.
    fn values(&self, first: u64, count: u64) -> Vec<String> {
        self.run(&[
            "call",
            "--arg",
            &first.to_string(),
            "--count",
            &count.to_string(),
            "--size",
            "5000",
        ])
    }

    fn key(&self, arg: u64) -> String {
        let lines = self.run(&["key", "--arg", &arg.to_string(), "--size", "5000"]);
        lines.into_iter().find(|line| !line.starts_with("cargo:")).unwrap()
    }

    fn file_step(&self) -> Vec<String> {
        let out = self.out();
        self.run(&["outputs", "--arg", "3", "--out", out.to_str().unwrap()])
    }
}

fn remote_warnings(lines: &[String]) -> Vec<&String> {
    warnings(lines).into_iter().filter(|line| line.contains("remote")).collect()
}

/// The `<arg> <checksum>` part of probe lines.
fn checksums(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|line| !line.starts_with("cargo:"))
        .map(|line| line.splitn(3, ' ').take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

fn two_roots_share_one_remote(kind: Kind) {
    let Some(remote) = Remote::new(kind, "two-roots") else { return };
    let a = Machine::new(&remote);
    assert_eq!(statuses(&a.values(1, 3)), ["miss"; 3]);
    assert_eq!(statuses(&a.run(&["call", "--arg", "9"])), ["miss"], "a small, inline value");
    assert_eq!(statuses(&a.file_step()), ["miss"]);
    assert_eq!(counted(&a.counter()), 5);
    let objects = remote.objects();
    assert_eq!(objects.iter().filter(|name| name.starts_with("ac/")).count(), 5, "{objects:?}");

    // Another machine: every value and the file step come from the remote, nothing runs.
    let b = Machine::new(&remote);
    let first = b.values(1, 3);
    assert_eq!(statuses(&first), ["cached (remote)"; 3]);
    assert_eq!(checksums(&first), checksums(&a.values(1, 3)));
    assert_eq!(statuses(&b.run(&["call", "--arg", "9"])), ["cached (remote)"]);
    assert_eq!(statuses(&b.file_step()), ["cached (remote)"]);
    // The async path reads through the remote too (a third machine, so nothing is local).
    let c = Machine::new(&remote);
    let asynchronous = c.run(&["call", "--arg", "1", "--count", "3", "--size", "5000", "--async"]);
    assert_eq!(statuses(&asynchronous), ["cached (remote)"; 3]);
    assert_eq!(checksums(&asynchronous), checksums(&first));
    assert_eq!(counted(&c.counter()), 0, "machine C computed something");
    assert_eq!(counted(&b.counter()), 0, "machine B computed something");
    assert_eq!(
        std::fs::read(b.out().join("generated.rs")).unwrap(),
        std::fs::read(a.out().join("generated.rs")).unwrap()
    );
    assert!(remote_warnings(&first).is_empty(), "{first:?}");
    assert_eq!(remote.objects(), objects, "hits wrote to the remote");

    // B's own disk tier now serves all of it with the remote off.
    let offline =
        Machine { dir: b.dir, env: vec![("MEMOSHELVE_REMOTE_MODE".into(), "off".into())] };
    std::fs::remove_dir_all(offline.out()).unwrap();
    assert_eq!(statuses(&offline.values(1, 3)), ["cached (disk)"; 3]);
    assert_eq!(statuses(&offline.file_step()), ["cached (disk)"]);
    assert_eq!(
        std::fs::read(offline.out().join("generated.rs")).unwrap(),
        std::fs::read(a.out().join("generated.rs")).unwrap()
    );
    assert_eq!(counted(&offline.counter()), 0);
}

#[test]
fn two_roots_share_one_remote_redis() {
    two_roots_share_one_remote(Kind::Redis);
}

#[test]
fn two_roots_share_one_remote_http() {
    two_roots_share_one_remote(Kind::Http);
}

#[test]
fn two_roots_share_one_remote_s3() {
    two_roots_share_one_remote(Kind::S3);
}

/// Edits a blob, edits an entry, and replays one key's entry under another key: machine B
/// computes all three (the probe checks every value) and warns once.
fn tampered_entries_are_never_served(kind: Kind) {
    let Some(remote) = Remote::new(kind, "tampered") else { return };
    let a = Machine::new(&remote);
    assert_eq!(statuses(&a.values(1, 3)), ["miss"; 3]);
    // A blob: one byte flipped.
    let blob = format!("cas/{}", remote.entry(&a.key(1)).2.blake3);
    let mut bytes = remote.read(&blob);
    bytes[100] ^= 1;
    remote.write(&blob, &bytes);
    // An entry: its record edited (without a signing key, an edit that keeps the record
    // consistent cannot be told from a real entry: that is what MEMOSHELVE_REMOTE_KEY is for).
    let mut entry = remote.entry(&a.key(2));
    entry.2.size = 4000;
    remote.write_entry(&a.key(2), "unsigned", &entry);
    // A replay: key 3's entry stored as the entry of key 4.
    let replayed = remote.read(&format!("ac/{}", a.key(3)));
    remote.write(&format!("ac/{}", a.key(4)), &replayed);

    let b = Machine::new(&remote);
    let lines = b.values(1, 4);
    assert_eq!(statuses(&lines), ["miss", "miss", "cached (remote)", "miss"], "{lines:?}");
    assert_eq!(counted(&b.counter()), 3);
    let warned = remote_warnings(&lines);
    assert_eq!(warned.len(), 1, "{lines:?}");
    assert!(warned[0].contains("does not match"), "{warned:?}");
    // Nothing bad reached B's disk: a second run is all disk hits, with the right values.
    let again = Machine { dir: b.dir, env: vec![("MEMOSHELVE_REMOTE_MODE".into(), "off".into())] };
    assert_eq!(statuses(&again.values(1, 4)), ["cached (disk)"; 4]);
    // The replay alone: another process, so its warning is its own.
    let c = Machine::new(&remote);
    let lines = c.run(&["call", "--arg", "4", "--size", "5000"]);
    assert_eq!(statuses(&lines), ["miss"]);
    let warned = remote_warnings(&lines);
    assert!(warned.len() == 1 && warned[0].contains("another key"), "{lines:?}");
}

#[test]
fn tampered_entries_are_never_served_redis() {
    tampered_entries_are_never_served(Kind::Redis);
}

#[test]
fn tampered_entries_are_never_served_http() {
    tampered_entries_are_never_served(Kind::Http);
}

#[test]
fn tampered_entries_are_never_served_s3() {
    tampered_entries_are_never_served(Kind::S3);
}

/// With `MEMOSHELVE_REMOTE_KEY`, only entries signed with that key are used: unsigned ones,
/// edited ones and replayed ones are rejected, with one warning that says so.
fn signed_entries(kind: Kind) {
    let Some(remote) = Remote::new(kind, "signed") else { return };
    let key = "correct horse battery staple";
    let signer = Machine::new(&remote).with("MEMOSHELVE_REMOTE_KEY", key);
    assert_eq!(statuses(&signer.values(1, 2)), ["miss"; 2]);
    let unsigned = Machine::new(&remote);
    assert_eq!(statuses(&unsigned.values(3, 1)), ["miss"]);
    // An edit that keeps the entry consistent (it points at the blob of another value of the
    // same size): only the signature can tell.
    let body = remote.read(&format!("ac/{}", signer.key(2)));
    let newline = body.iter().position(|&byte| byte == b'\n').unwrap();
    let signature = std::str::from_utf8(&body[..newline]).unwrap();
    assert_ne!(signature, "unsigned");
    let mut entry = remote.entry(&signer.key(2));
    entry.2.blake3 = remote.entry(&signer.key(1)).2.blake3;
    remote.write_entry(&signer.key(2), signature, &entry);
    // A signed entry replayed under another key.
    remote.write(&format!("ac/{}", signer.key(4)), &remote.read(&format!("ac/{}", signer.key(1))));

    let reader = Machine::new(&remote).with("MEMOSHELVE_REMOTE_KEY", key);
    let lines = reader.values(1, 4);
    assert_eq!(statuses(&lines), ["cached (remote)", "miss", "miss", "miss"], "{lines:?}");
    let warned = remote_warnings(&lines);
    assert_eq!(warned.len(), 1, "{lines:?}");
    assert!(warned[0].contains("signature"), "{warned:?}");
    // The unsigned entry alone, in a process of its own: rejected, and said so.
    let lines = Machine::new(&remote).with("MEMOSHELVE_REMOTE_KEY", key).values(3, 1);
    assert_eq!(statuses(&lines), ["miss"]);
    let warned = remote_warnings(&lines);
    assert!(warned.len() == 1 && warned[0].contains("unsigned"), "{lines:?}");
    // A reader with another key trusts none of them.
    let lines = Machine::new(&remote).with("MEMOSHELVE_REMOTE_KEY", "another key").values(1, 1);
    assert_eq!(statuses(&lines), ["miss"]);
    // Without a key, the (unedited) signed entry is still usable.
    assert_eq!(statuses(&Machine::new(&remote).values(1, 1)), ["cached (remote)"]);
}

#[test]
fn signed_entries_redis() {
    signed_entries(Kind::Redis);
}

#[test]
fn signed_entries_http() {
    signed_entries(Kind::Http);
}

#[test]
fn signed_entries_s3() {
    signed_entries(Kind::S3);
}

/// `MEMOSHELVE_REMOTE_MODE=read-only` reads hits and writes nothing (counted on the server).
fn read_only_writes_nothing(kind: Kind) {
    let Some(remote) = Remote::new(kind, "read-only") else { return };
    let reader = Machine::new(&remote).with("MEMOSHELVE_REMOTE_MODE", "read-only");
    assert_eq!(statuses(&reader.values(1, 2)), ["miss"; 2]);
    assert_eq!(statuses(&reader.file_step()), ["miss"]);
    assert_eq!(remote.objects(), Vec::<String>::new());
    // It still reads what a writer put there, and still writes nothing.
    let writer = Machine::new(&remote);
    assert_eq!(statuses(&writer.values(5, 1)), ["miss"]);
    let objects = remote.objects();
    assert_eq!(objects.len(), 2, "{objects:?}");
    let reader = Machine::new(&remote).with("MEMOSHELVE_REMOTE_MODE", "read-only");
    assert_eq!(statuses(&reader.values(5, 2)), ["cached (remote)", "miss"]);
    assert_eq!(remote.objects(), objects);
}

#[test]
fn read_only_writes_nothing_redis() {
    read_only_writes_nothing(Kind::Redis);
}

#[test]
fn read_only_writes_nothing_http() {
    read_only_writes_nothing(Kind::Http);
}

#[test]
fn read_only_writes_nothing_s3() {
    read_only_writes_nothing(Kind::S3);
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server on port {port} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A server process of this test alone, killed when dropped.
struct OwnServer(Child);

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `server`, runs a 40-call build against it, and kills the server once the build has
/// computed 5 values. The build succeeds with every value right and one warning.
fn killed_mid_build(kind: Kind, url: &str, mut server: OwnServer) {
    let remote = Remote { kind, url: url.to_owned(), env: Vec::new(), files: None, redis: None };
    let machine = Machine::new(&remote);
    let mut command = machine.command(&["call", "--count", "40", "--size", "5000"]);
    command
        .env("OUT_DIR", machine.dir.path())
        .env("CARGO_MANIFEST_DIR", machine.dir.path())
        .env("PROBE_SLEEP_MS", "30")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let build = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while counted(&machine.counter()) < 5 {
        assert!(Instant::now() < deadline, "the build did not get going");
        std::thread::sleep(Duration::from_millis(5));
    }
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    let output = build.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<String> = stdout.lines().map(str::to_owned).collect();
    assert_eq!(statuses(&lines), ["miss"; 40]);
    let warned = remote_warnings(&lines);
    assert_eq!(warned.len(), 1, "{lines:?}");
    assert!(warned[0].contains("local cache only"), "{warned:?}");
}

#[test]
fn redis_killed_mid_build() {
    if server_var("MEMOSHELVE_TEST_REDIS").is_none() {
        return;
    }
    let port = free_port();
    let server = Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (installed by .ci/run)");
    wait_for_port(port);
    killed_mid_build(Kind::Redis, &format!("redis://127.0.0.1:{port}/0"), OwnServer(server));
}

#[test]
fn http_killed_mid_build() {
    if server_var("MEMOSHELVE_TEST_HTTP").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("nginx.conf");
    let root = dir.path().display();
    std::fs::write(
        &conf,
        format!(
            "daemon off; master_process off; user root; pid {root}/nginx.pid; error_log {root}/error.log;\n\
             events {{}}\n\
             http {{ access_log off; client_body_temp_path {root}/body;\n\
             server {{ listen 127.0.0.1:{port}; root {root}/dav; client_max_body_size 0;\n\
             location / {{ dav_methods PUT; create_full_put_path on; }} }} }}\n"
        ),
    )
    .unwrap();
    let server = Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx (installed by .ci/run)");
    wait_for_port(port);
    killed_mid_build(Kind::Http, &format!("http://127.0.0.1:{port}/cache"), OwnServer(server));
}

/// A remote that is not there at all: every call computes, one warning, and the breaker keeps
/// the build from asking again and again.
#[test]
fn a_dead_remote_is_one_warning() {
    let remote = Remote {
        kind: Kind::Http,
        url: format!("http://127.0.0.1:{}/nothing", free_port()),
        env: Vec::new(),
        files: None,
        redis: None,
    };
    let machine = Machine::new(&remote);
    let lines = machine.values(1, 20);
    assert_eq!(statuses(&lines), ["miss"; 20]);
    let warned = remote_warnings(&lines);
    assert_eq!(warned.len(), 1, "{lines:?}");
    assert!(warned[0].contains("http://127.0.0.1:") && warned[0].contains("local cache only"));
}

/// Secrets never appear in warnings: a Redis password in the URL, an HTTP token.
#[test]
fn secrets_are_not_printed() {
    let port = free_port();
    let remote = Remote {
        kind: Kind::Redis,
        url: format!("redis://:hunter2secret@127.0.0.1:{port}/0"),
        env: vec![("MEMOSHELVE_REMOTE_TOKEN".into(), "tokensecret".into())],
        files: None,
        redis: None,
    };
    let lines = Machine::new(&remote).values(1, 1);
    let warned = remote_warnings(&lines);
    assert_eq!(warned.len(), 1, "{lines:?}");
    assert!(warned[0].contains("redis://***@127.0.0.1"), "{warned:?}");
    assert!(!lines.iter().any(|line| line.contains("hunter2secret")), "{lines:?}");
}

/// `cargo-memoshelve` with a machine's root and remote settings (and nothing inherited).
fn cli(machine: &Machine, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(crate::cli_binary());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MEMOSHELVE_") {
            command.env_remove(name);
        }
    }
    command
        .arg("memoshelve")
        .arg("--dir")
        .arg(machine.root())
        .args(args)
        .envs(machine.env.iter().map(|(name, value)| (name, value)))
        .current_dir(machine.dir.path())
        .output()
        .unwrap()
}

fn cli_json(machine: &Machine, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend(args);
    let output = cli(machine, &all);
    assert!(
        output.status.success(),
        "{args:?}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `remote status`, `remote push` (refused read-only), `remote pull --name`, and `stats`
/// counting remote hits apart.
fn cli_status_push_pull_stats(kind: Kind) {
    let Some(remote) = Remote::new(kind, "cli") else { return };
    let local = Machine::new(&remote).with("MEMOSHELVE_REMOTE_MODE", "off");
    assert_eq!(statuses(&local.values(1, 3)), ["miss"; 3]);
    assert_eq!(statuses(&local.file_step()), ["miss"]);
    assert_eq!(remote.objects(), Vec::<String>::new());

    let a = Machine { dir: local.dir, env: Machine::new(&remote).env };
    let status = cli_json(&a, &["remote", "status"]);
    assert_eq!(status["reachable"], true, "{status}");
    assert_eq!(status["url"], remote.url.as_str());
    assert_eq!(status["mode"], "read-write");
    let refused = cli(
        &Machine { dir: tempfile::tempdir().unwrap(), env: a.env.clone() }
            .with("MEMOSHELVE_REMOTE_MODE", "read-only"),
        &["remote", "push"],
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("read-only"));
    let pushed = cli_json(&a, &["remote", "push"]);
    assert_eq!(
        (pushed["uploaded"].as_u64(), pushed["present"].as_u64()),
        (Some(4), Some(0)),
        "{pushed}"
    );
    let objects = remote.objects();
    assert_eq!(objects.iter().filter(|name| name.starts_with("ac/")).count(), 4, "{objects:?}");
    let again = cli_json(&a, &["remote", "push", "--used-since", "1d"]);
    assert_eq!((again["uploaded"].as_u64(), again["present"].as_u64()), (Some(0), Some(4)));
    assert_eq!(remote.objects(), objects);

    let b = Machine::new(&remote);
    let other = cli_json(&b, &["remote", "pull", "--name", "another"]);
    assert_eq!((other["fetched"].as_u64(), other["other_names"].as_u64()), (Some(0), Some(4)));
    let pulled = cli_json(&b, &["remote", "pull", "--name", "probe"]);
    assert_eq!(
        (pulled["listed"].as_u64(), pulled["fetched"].as_u64()),
        (Some(4), Some(4)),
        "{pulled}"
    );
    let offline =
        Machine { dir: b.dir, env: vec![("MEMOSHELVE_REMOTE_MODE".into(), "off".into())] };
    assert_eq!(statuses(&offline.values(1, 3)), ["cached (disk)"; 3]);
    assert_eq!(statuses(&offline.file_step()), ["cached (disk)"]);
    assert_eq!(counted(&offline.counter()), 0);

    let c = Machine::new(&remote);
    assert_eq!(statuses(&c.values(1, 2)), ["cached (remote)"; 2]);
    assert_eq!(statuses(&c.values(1, 2)), ["cached (disk)"; 2]);
    let stats = cli_json(&c, &["stats"]);
    assert_eq!(
        (stats["remote_hits"].as_u64(), stats["hits"].as_u64()),
        (Some(2), Some(2)),
        "{stats}"
    );
    let text = cli(&c, &["stats"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("remote hits: 2"));
}

/// Transparent mode's entries (`build-script.<package>`) stay on their machine unless opted in
/// (`MEMOSHELVE_BUILD_SCRIPTS_REMOTE=1`) and signed (`MEMOSHELVE_REMOTE_KEY`): neither a
/// probe's write-through (as a build script with that name) nor `remote push` sends one, and
/// `remote pull` takes a signed one only opted in.
fn build_script_entries_travel_only_opted_in_and_signed(kind: Kind) {
    let Some(remote) = Remote::new(kind, "bs") else { return };
    let a = Machine::new(&remote);
    let written = a.run(&["call", "--name", "build-script.fake", "--arg", "1", "--size", "5000"]);
    assert_eq!(statuses(&written), ["miss"]);
    assert_eq!(statuses(&a.values(1, 1)), ["miss"]);
    let pushed = cli_json(&a, &["remote", "push"]);
    assert_eq!(
        (pushed["uploaded"].as_u64(), pushed["present"].as_u64(), pushed["kept_local"].as_u64()),
        (Some(0), Some(1), Some(1)),
        "{pushed}"
    );

    let b = Machine::new(&remote);
    let pulled = cli_json(&b, &["remote", "pull"]);
    assert_eq!(
        (pulled["listed"].as_u64(), pulled["fetched"].as_u64(), pulled["other_names"].as_u64()),
        (Some(1), Some(1), Some(0)),
        "the probe's write-through kept it back too: {pulled}"
    );
    let listed = cli_json(&b, &["list"]);
    let names_b: Vec<&str> =
        listed.as_array().unwrap().iter().filter_map(|entry| entry["name"].as_str()).collect();
    assert_eq!(names_b, ["probe"]);

    // Opted in and signed, they travel; a reader takes them only opted in, and signed.
    let Some(signed_remote) = Remote::new(kind, "bs-signed") else { return };
    let signed = |machine: Machine| {
        machine
            .with("MEMOSHELVE_REMOTE", &signed_remote.url)
            .with("MEMOSHELVE_REMOTE_KEY", "k")
            .with("MEMOSHELVE_BUILD_SCRIPTS_REMOTE", "1")
    };
    let pushed = cli_json(&signed(a), &["remote", "push"]);
    assert_eq!(
        (pushed["uploaded"].as_u64(), pushed["kept_local"].as_u64()),
        (Some(2), Some(0)),
        "{pushed}"
    );
    let names = |machine: &Machine| -> Vec<String> {
        let listed = cli_json(machine, &["list"]);
        let mut names: Vec<String> = listed
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|entry| entry["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    };
    let keyed = Machine::new(&signed_remote).with("MEMOSHELVE_REMOTE_KEY", "k");
    let pulled = cli_json(&keyed, &["remote", "pull"]);
    assert_eq!((pulled["fetched"].as_u64(), pulled["other_names"].as_u64()), (Some(1), Some(1)));
    assert_eq!(names(&keyed), ["probe"], "not opted in: not taken");
    let opted = signed(Machine::new(&signed_remote));
    let pulled = cli_json(&opted, &["remote", "pull"]);
    assert_eq!(pulled["fetched"].as_u64(), Some(2), "{pulled}");
    assert_eq!(names(&opted), ["build-script.fake", "probe"]);
}

#[test]
fn build_script_entries_travel_only_opted_in_and_signed_http() {
    build_script_entries_travel_only_opted_in_and_signed(Kind::Http);
}

#[test]
fn cli_status_push_pull_stats_redis() {
    cli_status_push_pull_stats(Kind::Redis);
}

#[test]
fn cli_status_push_pull_stats_http() {
    cli_status_push_pull_stats(Kind::Http);
}

#[test]
fn cli_status_push_pull_stats_s3() {
    cli_status_push_pull_stats(Kind::S3);
}

/// s3s-fs checks signatures: a wrong secret is refused (so the passing S3 tests mean the
/// client signs correctly), and the secret is not printed.
#[test]
fn s3_with_a_wrong_secret_is_refused() {
    let Some(mut remote) = Remote::new(Kind::S3, "wrong-secret") else { return };
    for (name, value) in &mut remote.env {
        if name == "AWS_SECRET_ACCESS_KEY" {
            *value = "not-the-secret-key".into();
        }
    }
    let lines = Machine::new(&remote).values(1, 2);
    assert_eq!(statuses(&lines), ["miss"; 2]);
    let warned = remote_warnings(&lines);
    assert!(warned.len() == 1 && warned[0].contains("SignatureDoesNotMatch"), "{lines:?}");
    assert!(!lines.iter().any(|line| line.contains("not-the-secret-key")));
    assert_eq!(remote.objects(), Vec::<String>::new());
}

/// `warm --push`: warm runs the build command (a script standing in for cargo that runs the
/// probe with the remote off, so nothing reaches the remote but through warm), then pushes the
/// entries that command added, and a second machine hits them.
#[test]
fn warm_push_uploads_what_the_command_added() {
    let Some(remote) = Remote::new(Kind::Redis, "warm-push") else { return };
    let machine = Machine::new(&remote);
    let fake_cargo = machine.dir.path().join("fake-cargo");
    std::fs::write(
        &fake_cargo,
        format!(
            "#!/bin/sh\nMEMOSHELVE_REMOTE_MODE=off exec '{}' \"$@\"\n",
            env!("CARGO_BIN_EXE_memoshelve-probe")
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&fake_cargo).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&fake_cargo, perms).unwrap();
    let machine = machine.with("CARGO", fake_cargo.to_str().unwrap());
    let args = ["warm", "--push", "--", "call", "--arg", "1", "--count", "2", "--size", "5000"];
    let output = cli(&machine, &args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("2 entries added"), "{stderr}");
    let objects = remote.objects();
    assert_eq!(objects.iter().filter(|name| name.starts_with("ac/")).count(), 2, "{objects:?}");

    // Outside a build script, as warm ran it (a build script's key also has its target).
    let other = Machine::new(&remote);
    let hits =
        crate::lines(other.command(&["call", "--arg", "1", "--count", "2", "--size", "5000"]));
    assert_eq!(statuses(&hits), ["cached (remote)"; 2]);
    assert_eq!(counted(&other.counter()), 0, "the other machine computed something");
}
