//! The remote tier's client: the backends, the checks of what they return, the circuit breaker,
//! and the read and write paths of a build (see the module above for the layout and the rules).

// The backends (one feature each), and the signatures of entries and S3 requests.
#[cfg(feature = "remote-http")]
mod http;
#[cfg(feature = "remote-redis")]
mod redis;
#[cfg(feature = "remote-s3")]
mod s3;
mod sign;

use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{BUILD_SCRIPTS_REMOTE, Mode, Scheme, Settings, env_value};
use crate::cargo;
use crate::key::Key;
use crate::project::config::Project;
use crate::tier::disk::manifest::OutputManifest;
use crate::tier::disk::manifest::is_file_step;
use crate::tier::disk::{Disk, EntryRecord, FORMAT_VERSION};

/// Consecutive failures after which a build stops asking the remote.
pub const BREAKER_FAILURES: u32 = 3;
/// How long connecting may take.
#[cfg(feature = "_remote-backend")]
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one read or write may wait for the remote.
#[cfg(feature = "_remote-backend")]
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(feature = "remote-redis")]
fn open_redis(url: &str) -> Result<Box<dyn Backend>, String> {
    Ok(Box::new(redis::Redis::open(url)?))
}

#[cfg(not(feature = "remote-redis"))]
fn open_redis(url: &str) -> Result<Box<dyn Backend>, String> {
    Err(super::without_feature(url, Scheme::Redis.feature()))
}

#[cfg(feature = "remote-http")]
fn open_http(url: &str, token: Option<String>) -> Result<Box<dyn Backend>, String> {
    Ok(Box::new(http::Http::open(url, token)?))
}

#[cfg(not(feature = "remote-http"))]
fn open_http(url: &str, _token: Option<String>) -> Result<Box<dyn Backend>, String> {
    Err(super::without_feature(url, Scheme::Http.feature()))
}

#[cfg(feature = "remote-s3")]
fn open_s3(url: &str) -> Result<Box<dyn Backend>, String> {
    Ok(Box::new(s3::S3::open(url)?))
}

#[cfg(not(feature = "remote-s3"))]
fn open_s3(url: &str) -> Result<Box<dyn Backend>, String> {
    Err(super::without_feature(url, Scheme::S3.feature()))
}

/// Where a remote keeps a thing: `ac/<hex key>` or `cas/<blake3 hex>`.
pub(crate) fn ac_path(key: &Key) -> String {
    format!("ac/{key}")
}

pub(crate) fn cas_path(blake3_hex: &str) -> String {
    format!("cas/{blake3_hex}")
}

/// What is uploaded.
pub(crate) enum Source<'a> {
    Bytes(&'a [u8]),
    File(&'a Path),
}

/// A storage engine holding `ac/` entries and `cas/` blobs: the interface every remote backend
/// implements (the tiers above it hold the same two things: index records and blobs).
pub(crate) trait Backend: Send + Sync {
    /// Writes the object at `path` into `sink`; `false` when there is none.
    fn get(&self, path: &str, sink: &mut dyn Write) -> io::Result<bool>;
    /// Whether the object at `path` exists.
    fn exists(&self, path: &str) -> io::Result<bool>;
    /// Stores an object. Entries and blobs are written once: a backend that can refuse to
    /// overwrite (Redis `SET NX`) does.
    fn put(&self, path: &str, source: Source<'_>) -> io::Result<()>;
    /// The hex keys of every entry (`ac/`), for `cargo memoshelve remote pull`.
    fn entry_keys(&self) -> io::Result<Vec<String>>;
    /// A round trip that proves the remote answers (and, where it can tell, lets us in).
    fn ping(&self) -> io::Result<()>;
}

/// An entry as the remote holds it (after the signature line).
#[derive(Serialize, Deserialize)]
struct Payload {
    format: u32,
    key: String,
    record: EntryRecord,
}

const UNSIGNED: &str = "unsigned";

/// Why a remote lookup gave nothing.
#[derive(Debug)]
enum Problem {
    /// The remote failed (connection, timeout, refused): counts towards the breaker.
    Remote(io::Error),
    /// The remote's entry or blob is not right: never served.
    Rejected { trust: bool, reason: String },
    /// The local root could not take the entry.
    Local(crate::Error),
}

impl From<io::Error> for Problem {
    fn from(err: io::Error) -> Problem {
        Problem::Remote(err)
    }
}

fn rejected(reason: impl Into<String>) -> Problem {
    Problem::Rejected { trust: false, reason: reason.into() }
}

/// What pushing one entry did (`Remote::push`, with the `maintenance` feature; the
/// write-through of a miss too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pushed {
    /// Uploaded: the entry, and the blobs the remote did not have.
    Uploaded {
        /// Blobs uploaded.
        blobs: u64,
        /// Their bytes.
        bytes: u64,
    },
    /// The remote already had the entry.
    Present,
}

/// What [`Remote::pull`] did with one remote entry.
#[cfg(feature = "maintenance")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pulled {
    /// Checked and written into the local root.
    Fetched,
    /// The local root has it already.
    Present,
    /// Another cache name than the one asked for.
    OtherName,
    /// Gone from the remote since it was listed.
    Missing,
}

/// An opened remote: a backend, the settings, and the circuit breaker of this process.
pub struct Remote {
    settings: Settings,
    backend: Box<dyn Backend>,
    failures: AtomicU32,
    broken: AtomicBool,
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Remote {
    /// Connects nothing yet: checks the URL and picks the backend.
    ///
    /// # Errors
    /// An unknown scheme, a malformed URL, missing credentials, or a backend this build of
    /// memoshelve-build does not have (each has a cargo feature: `remote-redis`, `remote-http`,
    /// `remote-s3`).
    pub fn open(settings: Settings) -> crate::Result<Remote> {
        let url = settings.url.as_str();
        let backend = match Scheme::of(url) {
            Ok(Scheme::Redis) => open_redis(url),
            Ok(Scheme::Http) => open_http(url, settings.token.clone()),
            Ok(Scheme::S3) => open_s3(url),
            Err(message) => Err(message),
        }
        .map_err(|message| crate::Error::Remote { message })?;
        Ok(Remote {
            settings,
            backend,
            failures: AtomicU32::new(0),
            broken: AtomicBool::new(false),
        })
    }

    /// The settings it was opened with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// One round trip; how long it took.
    ///
    /// # Errors
    /// What the remote or the connection said (secrets removed).
    pub fn ping(&self) -> crate::Result<Duration> {
        let started = Instant::now();
        self.backend.ping().map_err(|err| self.failed(&err.to_string()))?;
        Ok(started.elapsed())
    }

    /// Uploads a local entry of `disk` (see `Remote::push` in `crate::store`).
    #[cfg(feature = "maintenance")]
    pub(crate) fn push_entry(&self, disk: &Disk, record: &EntryRecord) -> crate::Result<Pushed> {
        self.push_record(disk, record).map_err(|problem| self.failed(&self.describe(&problem)))
    }

    /// The hex keys of every entry on the remote.
    ///
    /// # Errors
    /// The remote failed, or cannot list (a plain HTTP cache without WebDAV `PROPFIND`).
    pub fn entry_keys(&self) -> crate::Result<Vec<Key>> {
        let keys = self.backend.entry_keys().map_err(|err| self.failed(&err.to_string()))?;
        Ok(keys.iter().filter_map(|hex| Key::from_hex(hex)).collect())
    }

    /// Fetches one remote entry into `disk` (see `Remote::pull` in `crate::store`).
    #[cfg(feature = "maintenance")]
    pub(crate) fn pull_entry(
        &self,
        disk: &Disk,
        key: &Key,
        name: Option<&str>,
    ) -> crate::Result<Pulled> {
        let found = self.entry(key).map_err(|problem| self.failed(&self.describe(&problem)))?;
        let Some(payload) = found else {
            return Ok(Pulled::Missing);
        };
        // Transparent mode's entries come only signed and opted into (`Settings::carries`).
        if name.is_some_and(|name| payload.record.name != name)
            || !self.settings.carries(&payload.record.name)
        {
            return Ok(Pulled::OtherName);
        }
        if disk.find(&payload.record.name, key).ok().flatten().is_some() {
            return Ok(Pulled::Present);
        }
        self.backfill(disk, key, payload.record)
            .map_err(|problem| self.failed(&self.describe(&problem)))?;
        Ok(Pulled::Fetched)
    }

    /// A message as this crate's error, its secrets removed.
    fn failed(&self, message: &str) -> crate::Error {
        crate::Error::Remote { message: self.scrub(message) }
    }

    fn describe(&self, problem: &Problem) -> String {
        let text = match problem {
            Problem::Remote(err) => format!("remote {}: {err}", self.settings.redacted_url()),
            Problem::Rejected { reason, .. } => {
                format!("remote {}: {reason}", self.settings.redacted_url())
            }
            Problem::Local(err) => err.to_string(),
        };
        self.scrub(&text)
    }

    /// Removes every secret this remote knows from a message.
    fn scrub(&self, text: &str) -> String {
        let mut secrets: Vec<String> = Vec::new();
        secrets.extend(self.settings.token.clone());
        secrets.extend(self.settings.signing_key.clone());
        if let Some((_, rest)) = self.settings.url.split_once("://") {
            let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
            if let Some((userinfo, _)) = authority.rsplit_once('@') {
                secrets.extend(userinfo.split(':').map(str::to_owned));
            }
        }
        secrets.extend(env_value("AWS_SECRET_ACCESS_KEY"));
        secrets.extend(env_value("AWS_SESSION_TOKEN"));
        let mut text = text.replace(&self.settings.url, &self.settings.redacted_url());
        for secret in secrets.iter().filter(|secret| secret.len() >= 3) {
            text = text.replace(secret.as_str(), "***");
        }
        text
    }

    /// The remote's entry of `key`, checked: signature (when this process has a key), format,
    /// and that it is the entry of this key.
    fn entry(&self, key: &Key) -> Result<Option<Payload>, Problem> {
        let mut body = Vec::new();
        if !self.backend.get(&ac_path(key), &mut body)? {
            return Ok(None);
        }
        let newline = body
            .iter()
            .position(|&byte| byte == b'\n')
            .ok_or_else(|| rejected(format!("entry {} is not an entry", key.short())))?;
        let (signature, payload) = (&body[..newline], &body[newline + 1..]);
        let signature = String::from_utf8_lossy(signature);
        if let Some(secret) = &self.settings.signing_key {
            let distrust = |reason: String| Problem::Rejected { trust: true, reason };
            if signature == UNSIGNED {
                return Err(distrust(format!(
                    "entry {} is unsigned and MEMOSHELVE_REMOTE_KEY is set: ignoring it",
                    key.short()
                )));
            }
            if !sign::same(&signature, &entry_signature(secret, key, payload)) {
                return Err(distrust(format!(
                    "entry {} does not carry a valid signature for MEMOSHELVE_REMOTE_KEY: ignoring it",
                    key.short()
                )));
            }
        }
        let payload: Payload = postcard::from_bytes(payload)
            .map_err(|err| rejected(format!("entry {} is unreadable: {err}", key.short())))?;
        if payload.format != FORMAT_VERSION || payload.record.format != FORMAT_VERSION {
            return Err(rejected(format!(
                "entry {} has format {}, not {FORMAT_VERSION}",
                key.short(),
                payload.record.format
            )));
        }
        if payload.key != key.to_hex() || payload.record.key != key.to_hex() {
            return Err(rejected(format!(
                "entry {} holds the entry of another key ({}): ignoring it",
                key.short(),
                payload.record.key.chars().take(12).collect::<String>()
            )));
        }
        Ok(Some(payload))
    }

    /// Writes a checked remote entry into the local root: its value and, for a file step, every
    /// file blob the root does not have, each checked by size and blake3 before it is kept.
    fn backfill(&self, disk: &Disk, key: &Key, record: EntryRecord) -> Result<(), Problem> {
        let short = key.short();
        let value = match &record.inline {
            Some(inline) => inline.clone(),
            None => {
                let mut value = Vec::new();
                if !self.backend.get(&cas_path(&record.blake3), &mut value)? {
                    return Err(rejected(format!("entry {short}: its value's blob is missing")));
                }
                value
            }
        };
        if value.len() as u64 != record.size
            || blake3::hash(&value).to_hex().as_str() != record.blake3
        {
            return Err(rejected(format!(
                "entry {short}: its value does not match its size and blake3 hash"
            )));
        }
        let _guard = disk.write_guard();
        if is_file_step(&record.type_name) {
            let manifest: OutputManifest = postcard::from_bytes(&value)
                .map_err(|err| rejected(format!("entry {short}: unreadable manifest: {err}")))?;
            for file in &manifest.files {
                if crate::tier::disk::manifest::safe_relative(&file.path).is_none() {
                    return Err(rejected(format!(
                        "entry {short}: unsafe path {:?} in its manifest",
                        file.display_path()
                    )));
                }
                if disk.existing_blob(&file.blake3).is_none() {
                    self.fetch_blob(disk, &file.blake3, file.size).map_err(
                        |problem| match problem {
                            Problem::Rejected { trust, reason } => Problem::Rejected {
                                trust,
                                reason: format!("entry {short}: {}: {reason}", file.display_path()),
                            },
                            other => other,
                        },
                    )?;
                }
            }
        }
        disk.store(record, &value).map_err(Problem::Local)
    }

    /// Streams a blob into the local blob area: written to a temporary file while hashed, kept
    /// only when its size and blake3 hash are right.
    fn fetch_blob(&self, disk: &Disk, blake3_hex: &str, size: u64) -> Result<(), Problem> {
        let tmp = disk.temporary_file("remote").map_err(Problem::Local)?;
        let fetched = (|| -> Result<(), Problem> {
            let file = std::fs::File::create(&tmp).map_err(|source| {
                Problem::Local(crate::Error::Io { action: "create", path: tmp.clone(), source })
            })?;
            let mut sink = HashingSink { file, hasher: blake3::Hasher::new(), local: None };
            let found = self.backend.get(&cas_path(blake3_hex), &mut sink);
            if let Some(source) = sink.local.take() {
                return Err(Problem::Local(crate::Error::Io {
                    action: "write",
                    path: tmp.clone(),
                    source,
                }));
            }
            if !found? {
                return Err(rejected("its blob is missing from the remote"));
            }
            if sink.hasher.count() != size || sink.hasher.finalize().to_hex().as_str() != blake3_hex
            {
                return Err(rejected("its blob does not match its size and blake3 hash"));
            }
            disk.adopt_blob(&tmp, blake3_hex).map_err(Problem::Local)
        })();
        // Adopted, it is gone from here; kept (the blob was already there) or failed, it goes.
        let _ = std::fs::remove_file(&tmp);
        fetched
    }

    /// Uploads a local entry (see [`Remote::push`]).
    fn push_record(&self, disk: &Disk, record: &EntryRecord) -> Result<Pushed, Problem> {
        let key = Key::from_hex(&record.key).ok_or_else(|| rejected("malformed key"))?;
        if !self.settings.carries(&record.name) {
            return Err(rejected(format!(
                "entry {} of {:?} stays local: it travels only with {BUILD_SCRIPTS_REMOTE}=1 \
                 and MEMOSHELVE_REMOTE_KEY set",
                key.short(),
                record.name
            )));
        }
        if self.backend.exists(&ac_path(&key))? {
            return Ok(Pushed::Present);
        }
        let value = disk.load(record, &key).map_err(Problem::Local)?;
        let (mut blobs, mut bytes) = (0, 0);
        let mut upload = |blake3_hex: &str, size: u64| -> Result<(), Problem> {
            if self.backend.exists(&cas_path(blake3_hex))? {
                return Ok(());
            }
            let path = disk.existing_blob(blake3_hex).ok_or_else(|| {
                Problem::Local(disk.corrupt(
                    &record.name,
                    &key,
                    format!("blob {blake3_hex} is missing"),
                ))
            })?;
            self.backend.put(&cas_path(blake3_hex), Source::File(&path))?;
            blobs += 1;
            bytes += size;
            Ok(())
        };
        if is_file_step(&record.type_name) {
            let manifest: OutputManifest = postcard::from_bytes(&value).map_err(|err| {
                Problem::Local(disk.corrupt(
                    &record.name,
                    &key,
                    format!("unreadable manifest: {err}"),
                ))
            })?;
            for file in &manifest.files {
                upload(&file.blake3, file.size)?;
            }
        }
        if record.inline.is_none() {
            upload(&record.blake3, record.size)?;
        }
        let payload = Payload { format: FORMAT_VERSION, key: key.to_hex(), record: record.clone() };
        let payload = postcard::to_allocvec(&payload).expect("an entry always serializes");
        let signature = match &self.settings.signing_key {
            Some(secret) => entry_signature(secret, &key, &payload),
            None => UNSIGNED.to_owned(),
        };
        let mut body = signature.into_bytes();
        body.push(b'\n');
        body.extend_from_slice(&payload);
        self.backend.put(&ac_path(&key), Source::Bytes(&body))?;
        Ok(Pushed::Uploaded { blobs, bytes })
    }

    /// Runs `work` unless the breaker is open; a failure of the remote is counted (and warned
    /// about once), a rejected entry is warned about once and is a miss.
    fn guarded<R>(&self, work: impl FnOnce() -> Result<R, Problem>) -> Option<R> {
        if self.broken.load(Ordering::Relaxed) {
            return None;
        }
        match work() {
            Ok(found) => {
                self.failures.store(0, Ordering::Relaxed);
                Some(found)
            }
            Err(problem) => {
                match &problem {
                    Problem::Remote(_) => {
                        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                        if failures >= BREAKER_FAILURES {
                            self.broken.store(true, Ordering::Relaxed);
                        }
                        cargo::warn_once(
                            "remote failed",
                            &format!(
                                "{}; building with the local cache only (after {BREAKER_FAILURES} \
                                 failures in a row the remote is skipped for the rest of this process)",
                                self.describe(&problem)
                            ),
                        );
                    }
                    Problem::Rejected { trust: true, .. } => {
                        cargo::warn_once("remote trust", &self.describe(&problem));
                    }
                    Problem::Rejected { trust: false, .. } => {
                        cargo::warn_once(
                            "remote rejected",
                            &format!("{}; recomputing", self.describe(&problem)),
                        );
                    }
                    Problem::Local(_) => {
                        cargo::warn_once(
                            "remote local",
                            &format!("{}; the remote's entry is not used", self.describe(&problem)),
                        );
                    }
                }
                None
            }
        }
    }
}

/// The signature of an entry: a blake3 MAC over the entry's key and its payload, so a signed
/// entry cannot be replayed under another key.
fn entry_signature(secret: &str, key: &Key, payload: &[u8]) -> String {
    sign::hex(&sign::entry_mac(secret, key.as_bytes(), payload))
}

/// A sink that hashes what it writes; a local write error is kept apart from remote errors.
struct HashingSink {
    file: std::fs::File,
    hasher: blake3::Hasher,
    local: Option<io::Error>,
}

impl Write for HashingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.file.write(buf) {
            Ok(written) => {
                self.hasher.update(&buf[..written]);
                Ok(written)
            }
            Err(err) => {
                let message = err.to_string();
                self.local = Some(err);
                Err(io::Error::other(message))
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Reads a whole source into memory (for backends that cannot stream, such as Redis).
#[cfg_attr(not(feature = "remote-redis"), expect(dead_code, reason = "only Redis needs it"))]
pub(crate) fn source_bytes(source: Source<'_>) -> io::Result<std::borrow::Cow<'_, [u8]>> {
    match source {
        Source::Bytes(bytes) => Ok(std::borrow::Cow::Borrowed(bytes)),
        Source::File(path) => {
            let mut bytes = Vec::new();
            std::fs::File::open(path)?.read_to_end(&mut bytes)?;
            Ok(std::borrow::Cow::Owned(bytes))
        }
    }
}

/// The HTTP client of the HTTP and S3 backends: short connect and per-read/per-write timeouts
/// (a large blob may take long, as long as bytes keep flowing), statuses handled by the caller.
#[cfg(any(feature = "remote-http", feature = "remote-s3"))]
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_per_read(Some(IO_TIMEOUT))
        .timeout_per_write(Some(IO_TIMEOUT))
        .timeout_recv_response(Some(IO_TIMEOUT))
        .http_status_as_error(false)
        .allow_non_standard_methods(true)
        .build()
        .new_agent()
}

/// Sends a request with ureq (the HTTP and S3 backends' one way out).
#[cfg(any(feature = "remote-http", feature = "remote-s3"))]
fn send(
    agent: &ureq::Agent,
    request: ureq::http::request::Builder,
    body: impl ureq::AsSendBody,
) -> io::Result<ureq::http::Response<ureq::Body>> {
    let request = request.body(body).map_err(io::Error::other)?;
    agent.run(request).map_err(ureq_error)
}

#[cfg(any(feature = "remote-http", feature = "remote-s3"))]
fn ureq_error(err: ureq::Error) -> io::Error {
    match err {
        ureq::Error::Io(err) => err,
        other => io::Error::other(other.to_string()),
    }
}

#[cfg(any(feature = "remote-http", feature = "remote-s3"))]
fn status_error(method: &str, path: &str, status: u16) -> io::Error {
    let hint = match status {
        401 | 403 => " (check the credentials: MEMOSHELVE_REMOTE_TOKEN, AWS_ACCESS_KEY_ID)",
        405 => " (the server does not allow it: enable WebDAV PUT)",
        _ => "",
    };
    io::Error::other(format!("{method} {path} answered HTTP {status}{hint}"))
}

/// The 64-digit hex names that follow `ac/` in a listing (WebDAV `href`s, S3 `Key`s).
#[cfg(any(feature = "remote-http", feature = "remote-s3"))]
fn entry_names_in(listing: &str) -> Vec<String> {
    let mut names: Vec<String> = listing
        .split("ac/")
        .skip(1)
        .map(|rest| rest.chars().take_while(char::is_ascii_hexdigit).collect::<String>())
        .filter(|name| name.len() == 64)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The remote of this process, opened once from the environment and the project's
/// configuration (a problem is warned about once, and the build goes on without it).
fn active() -> Option<&'static Remote> {
    static ACTIVE: OnceLock<Option<Remote>> = OnceLock::new();
    ACTIVE
        .get_or_init(|| {
            let settings = match Settings::resolve_text(&Project::from_env()) {
                Ok(Some(settings)) if settings.mode != Mode::Off => settings,
                Ok(_) => return None,
                Err(message) => {
                    cargo::warn_once(
                        "remote settings",
                        &format!("{message}; not using the remote"),
                    );
                    return None;
                }
            };
            Remote::open(settings)
                .inspect_err(|message| {
                    cargo::warn_once("remote settings", &format!("{message}; not using the remote"))
                })
                .ok()
        })
        .as_ref()
}

/// The read path's hook: after a disk miss, fetches `name`/`key` from the remote into `disk`.
/// `true` when the disk tier now has it (the caller reads it from there, checked again).
pub(crate) fn fetch(disk: &Disk, name: &str, key: &Key) -> bool {
    let Some(remote) = active().filter(|remote| remote.settings.carries(name)) else {
        return false;
    };
    remote
        .guarded(|| {
            let Some(payload) = remote.entry(key)? else { return Ok(false) };
            if payload.record.name != name {
                return Err(rejected(format!(
                    "entry {} belongs to cache {:?}, not {name:?}: ignoring it",
                    key.short(),
                    payload.record.name
                )));
            }
            remote.backfill(disk, key, payload.record)?;
            Ok(true)
        })
        .unwrap_or(false)
}

/// The write path's hook: after a computed entry was stored on disk, pushes it (read-write mode).
pub(crate) fn write_through(disk: &Disk, name: &str, key: &Key) {
    let Some(remote) = active()
        .filter(|remote| remote.settings.mode == Mode::ReadWrite && remote.settings.carries(name))
    else {
        return;
    };
    let Ok(Some(record)) = disk.find(name, key) else { return };
    remote.guarded(|| remote.push_record(disk, &record));
}

#[cfg(test)]
mod tests {
    #[test]
    fn entry_signatures_depend_on_the_secret_the_key_and_the_payload() {
        let key = crate::Key::from_hex(&"ab".repeat(32)).unwrap();
        let other = crate::Key::from_hex(&"cd".repeat(32)).unwrap();
        let signed = super::entry_signature("secret", &key, b"payload");
        assert_eq!(signed.len(), 64);
        assert_eq!(signed, super::entry_signature("secret", &key, b"payload"));
        assert_ne!(signed, super::entry_signature("secreT", &key, b"payload"));
        assert_ne!(signed, super::entry_signature("secret", &other, b"payload"));
        assert_ne!(signed, super::entry_signature("secret", &key, b"payloaD"));
    }

    #[cfg(feature = "remote-s3")]
    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // Test case 2 of RFC 4231.
        let mac = super::sign::hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            super::sign::hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        let mac = super::sign::hmac_sha256(
            &[0xaa; 131],
            &[b"Test Using Larger Than Block-Size Key - Hash Key First"],
        );
        assert_eq!(
            super::sign::hex(&mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}
